//! nftables: batches built by pure functions (text in nft's own syntax, snapshot-tested
//! without root) and applied in one transaction by [`apply`]; reads go through `nft`.
//! podnet owns one table per family it needs, `inet podnet` and `bridge podnet`; their
//! chains and rules are static ([`skeleton_inet`], [`skeleton_bridge`]) and everything
//! per container lives in set and map elements whose comment names the attachment.
//! Each attachment's elements are also journaled ([`record`]) so that DEL finds them from
//! the container id alone and touches only them: no dump, no cost that grows with the
//! number of containers or published ports.
//!
//! ```text
//! table inet podnet
//!   masq4/6    addr                          container addresses to masquerade (bridge, ptp)
//!   local4/6   addr . subnet                 (container, its subnet): not masqueraded
//!   pm4/6      hostIP . proto . port : addr . port     published ports on one host address
//!   pm4any/6any       proto . port : addr . port       published ports on every local address
//!   pmlocal4/6 addr                          containers whose DNATed flows from localhost
//!                                            or through a hairpin are masqueraded (`snat`)
//!   pmall4/6   addr                          containers whose DNATed flows all are (`masqAll`)
//!   pmhairpin  ifname . ifname               (host interface, itself): flows DNATed back
//!                                            out the way they came in get mark bit 13
//!   fw4/6      addr                          containers the firewall plugin accepts
//!   isolated   ifname                        bridges with ingressPolicy same-bridge
//!   strict     ifname                        bridges with ingressPolicy isolated
//!   samebr     ifname . ifname               (bridge, itself): traffic staying on a bridge
//!   admin      ifname : verdict              bridge -> jump to its admin chain
//!   chain prerouting / output   nat, local destinations -> portmap
//!   chain portmap               jump portmap_cond (conditioned networks), then the maps
//!   chain postrouting           hairpin/localhost masquerade, then ipMasq
//!   chain forward               isolation drops, admin chains, per-container accepts
//! table bridge podnet                        (macspoofchk)
//!   macs       ifname . ether_addr           (host end of a veth, the MAC it may send from)
//!   checked    ifname                        ports whose source MACs are checked
//! ```

pub mod hostfw;
pub mod record;
pub mod watch;
pub mod wire;

pub use record::{
    check, commit, ensure_cond_jumps, find, group, release, restore, verify, Commit, CommitError,
    Conflict, Entry, Record, Released, Restored,
};

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;
use serde_json::Value;

pub const TABLE: &str = "podnet";

/// Where the lock that serializes read-modify-write sequences on the table lives.
pub const LOCK_PATH: &str = "/run/podnet/nft.lock";

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft")]
    Exec(#[source] std::io::Error),
    #[error("nft refused the batch: {stderr}\nbatch:\n{batch}")]
    Refused { stderr: String, batch: String },
    #[error("nft -j output")]
    Parse(#[source] serde_json::Error),
    #[error("locking {LOCK_PATH}")]
    Lock(#[source] std::io::Error),
    #[error("nftables journal {0}")]
    Journal(std::path::PathBuf, #[source] std::io::Error),
}

impl From<NftError> for cni::CniError {
    fn from(e: NftError) -> cni::CniError {
        cni::CniError::from_source(cni::ErrorCode::IO_FAILURE, "nftables", &e)
    }
}

/// A transaction: nft commands, applied all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch(pub Vec<String>);

impl Batch {
    pub fn push(&mut self, line: impl Into<String>) {
        self.0.push(line.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn text(&self) -> String {
        let mut t = self.0.join("\n");
        t.push('\n');
        t
    }
}

/// Applies a batch in one transaction.
pub fn apply(batch: &Batch) -> Result<(), NftError> {
    if batch.is_empty() {
        return Ok(());
    }
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(NftError::Exec)?;
    let text = batch.text();
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(text.as_bytes())
        .map_err(NftError::Exec)?;
    let out = child.wait_with_output().map_err(NftError::Exec)?;
    if !out.status.success() {
        return Err(NftError::Refused {
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
            batch: text,
        });
    }
    Ok(())
}

/// Holds the table lock for as long as it lives.
#[derive(Debug)]
pub struct TableLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

pub fn lock() -> Result<TableLock, NftError> {
    let path = Path::new(LOCK_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(NftError::Lock)?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(NftError::Lock)?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(TableLock)
        .map_err(|(_, e)| NftError::Lock(e.into()))
}

/// One element of a podnet set, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// `inet` or `bridge`.
    pub family: String,
    pub set: String,
    /// In nft syntax, ready to be deleted (`10.88.0.5`, `10.88.0.5 . 10.88.0.0/16`).
    pub key: String,
    pub comment: String,
}

/// Every element of every set of the podnet tables (none when there is no table).
pub fn list_elements() -> Result<Vec<Element>, NftError> {
    let mut all = Vec::new();
    for family in ["inet", "bridge"] {
        let out = Command::new("nft")
            .args(["-j", "list", "table", family, TABLE])
            .output()
            .map_err(NftError::Exec)?;
        if out.status.success() {
            all.extend(parse_elements(&out.stdout)?); // else: no such table yet
        }
    }
    Ok(all)
}

pub(crate) fn parse_elements(json: &[u8]) -> Result<Vec<Element>, NftError> {
    let v: Value = serde_json::from_slice(json).map_err(NftError::Parse)?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set").or_else(|| item.get("map")) else {
            continue;
        };
        let name = set["name"].as_str().unwrap_or_default();
        let family = set["family"].as_str().unwrap_or_default();
        for e in set["elem"].as_array().into_iter().flatten() {
            // A map element is `[key, value]`; the key carries the comment.
            let e = e.get(0).unwrap_or(e);
            let (val, comment) = match e.get("elem") {
                Some(inner) => (&inner["val"], inner["comment"].as_str().unwrap_or_default()),
                None => (e, ""),
            };
            out.push(Element {
                family: family.into(),
                set: name.into(),
                key: render(val),
                comment: comment.into(),
            });
        }
    }
    Ok(out)
}

/// An nft JSON value back in nft's own syntax.
fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Object(o) if o.contains_key("concat") => o["concat"]
            .as_array()
            .into_iter()
            .flatten()
            .map(render)
            .collect::<Vec<_>>()
            .join(" . "),
        Value::Object(o) if o.contains_key("prefix") => {
            format!("{}/{}", render(&o["prefix"]["addr"]), o["prefix"]["len"])
        }
        Value::Object(o) if o.contains_key("range") => {
            let r = o["range"].as_array().cloned().unwrap_or_default();
            format!(
                "{}-{}",
                r.first().map(render).unwrap_or_default(),
                r.get(1).map(render).unwrap_or_default()
            )
        }
        other => other.to_string(),
    }
}

// ---- the tables --------------------------------------------------------------------------

/// The comment that keys an attachment's elements: `<network> <containerID> <ifname>`.
pub fn attachment_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network} {container_id} {ifname}")
}

/// Chains of `inet podnet` whose rules podnet owns; any other chain holding rules
/// (an admin chain a user filled) keeps the table alive when its last element goes.
pub const OWN_CHAINS: &[&str] = &[
    "guard",
    "prerouting",
    "output",
    "portmap",
    "portmap_cond",
    "postrouting",
    "forward",
    "input",
];

/// Prefix of the chains holding a network's `conditionsV4`/`conditionsV6` DNAT rules.
pub const COND_CHAIN_PREFIX: &str = "pmc_";

/// A newer reference release's backend key (`ipMasqBackend` of bridge and ptp, `backend`
/// of portmap): `iptables` or `nftables` name how the reference writes its rules; podnet
/// writes every rule with nftables whichever is named, with the same effect. Any other
/// value is refused, naming the key.
pub fn check_backend(key: &str, value: Option<&str>) -> Result<(), cni::CniError> {
    match value {
        None | Some("iptables" | "nftables") => Ok(()),
        Some(other) => Err(cni::CniError::invalid_config(format!(
            "{key}: {other:?} is not iptables or nftables"
        ))),
    }
}

/// The `inet podnet` table with every set, map and chain; idempotent (each chain's
/// static rules are flushed and re-added in the same transaction; admin and
/// conditioned chains are created elsewhere and never flushed here).
pub fn skeleton_inet() -> Batch {
    let mut b = Batch::default();
    b.push(format!("add table inet {TABLE}"));
    for (name, spec) in [
        ("masq4", "type ipv4_addr;"),
        ("masq6", "type ipv6_addr;"),
        ("local4", "type ipv4_addr . ipv4_addr; flags interval;"),
        ("local6", "type ipv6_addr . ipv6_addr; flags interval;"),
        ("pmlocal4", "type ipv4_addr;"),
        ("pmlocal6", "type ipv6_addr;"),
        ("pmall4", "type ipv4_addr;"),
        ("pmall6", "type ipv6_addr;"),
        ("pmhairpin", "type ifname . ifname;"),
        ("fw4", "type ipv4_addr;"),
        ("fw6", "type ipv6_addr;"),
        ("isolated", "type ifname;"),
        ("strict", "type ifname;"),
        ("samebr", "type ifname . ifname;"),
        ("dns", "type ifname . inet_proto . inet_service;"),
    ] {
        b.push(format!("add set inet {TABLE} {name} {{ {spec} }}"));
    }
    for line in portmap_maps("") {
        b.push(line);
    }
    b.push(format!(
        "add map inet {TABLE} admin {{ type ifname : verdict; }}"
    ));
    let chains: [(&str, &str, &[&str]); 8] = [
        // Packets to 127.0.0.0/8 that did not arrive on `lo` are martians, yet the
        // kernel's check comes after the DNAT in `prerouting` and is lifted by the
        // `route_localnet` that localhost ports need (CVE-2020-8558): they are dropped
        // before conntrack, so no neighbour or LAN host reaches a localhost port or a
        // host service on 127.0.0.1. The host's own localhost traffic is on `lo`.
        (
            "guard",
            "type filter hook prerouting priority raw; policy accept;",
            &["iifname != \"lo\" ip daddr 127.0.0.0/8 drop"],
        ),
        (
            "prerouting",
            "type nat hook prerouting priority dstnat; policy accept;",
            &["fib daddr type local jump portmap"],
        ),
        (
            "output",
            "type nat hook output priority -100; policy accept;",
            &["fib daddr type local jump portmap"],
        ),
        ("portmap_cond", "", &[]),
        (
            "portmap",
            "",
            &[
                "jump portmap_cond",
                "dnat ip to ip daddr . meta l4proto . th dport map @pm4",
                "meta nfproto ipv4 dnat ip to meta l4proto . th dport map @pm4any",
                "dnat ip6 to ip6 daddr . meta l4proto . th dport map @pm6",
                "meta nfproto ipv6 dnat ip6 to meta l4proto . th dport map @pm6any",
            ],
        ),
        (
            "postrouting",
            "type nat hook postrouting priority srcnat; policy accept;",
            &[
                "ct status dnat ip daddr @pmall4 masquerade",
                "ct status dnat ip6 daddr @pmall6 masquerade",
                "ct status dnat ip saddr 127.0.0.0/8 ip daddr @pmlocal4 masquerade",
                "meta mark & 0x00002000 == 0x00002000 masquerade",
                "ip saddr . ip daddr @local4 return",
                "ip6 saddr . ip6 daddr @local6 return",
                "ip daddr 224.0.0.0/4 return",
                "ip6 daddr ff00::/8 return",
                "ip saddr @masq4 masquerade",
                "ip6 saddr @masq6 masquerade",
            ],
        ),
        (
            "forward",
            "type filter hook forward priority filter - 5; policy accept;",
            &[
                "ct status dnat iifname . oifname @pmhairpin ip daddr @pmlocal4 meta mark set meta mark | 0x00002000",
                "ct status dnat iifname . oifname @pmhairpin ip6 daddr @pmlocal6 meta mark set meta mark | 0x00002000",
                "iifname @isolated oifname @isolated iifname . oifname != @samebr drop",
                "oifname @strict iifname . oifname != @samebr ct state new ct status ! dnat drop",
                "iifname vmap @admin",
                "oifname vmap @admin",
                "ip saddr @fw4 accept",
                "ip daddr @fw4 ct state established,related accept",
                "ip6 saddr @fw6 accept",
                "ip6 daddr @fw6 ct state established,related accept",
            ],
        ),
        (
            "input",
            "type filter hook input priority filter - 5; policy accept;",
            &["iifname . meta l4proto . th dport @dns accept"],
        ),
    ];
    // Every chain first: rules jump to chains declared after them.
    for (name, spec, _) in &chains {
        if spec.is_empty() {
            b.push(format!("add chain inet {TABLE} {name}"));
        } else {
            b.push(format!("add chain inet {TABLE} {name} {{ {spec} }}"));
        }
    }
    for (name, _, rules) in chains {
        if name == "portmap_cond" {
            continue; // holds one jump per conditioned network, added once each
        }
        b.push(format!("flush chain inet {TABLE} {name}"));
        for rule in rules {
            b.push(format!("add rule inet {TABLE} {name} {rule}"));
        }
    }
    b
}

/// The four port maps; `suffix` is empty for the plain ones, `_<hash>` for a network's
/// conditioned ones.
pub fn portmap_maps(suffix: &str) -> Vec<String> {
    [
        (
            "pm4",
            "ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service",
        ),
        (
            "pm4any",
            "inet_proto . inet_service : ipv4_addr . inet_service",
        ),
        (
            "pm6",
            "ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service",
        ),
        (
            "pm6any",
            "inet_proto . inet_service : ipv6_addr . inet_service",
        ),
    ]
    .iter()
    .map(|(name, ty)| format!("add map inet {TABLE} {name}{suffix} {{ type {ty}; }}"))
    .collect()
}

/// The `bridge podnet` table (MAC spoof check); idempotent.
pub fn skeleton_bridge() -> Batch {
    let mut b = Batch::default();
    b.push(format!("add table bridge {TABLE}"));
    b.push(format!(
        "add set bridge {TABLE} macs {{ type ifname . ether_addr; }}"
    ));
    b.push(format!("add set bridge {TABLE} checked {{ type ifname; }}"));
    b.push(format!("add chain bridge {TABLE} prerouting {{ type filter hook prerouting priority -300; policy accept; }}"));
    b.push(format!("flush chain bridge {TABLE} prerouting"));
    b.push(format!(
        "add rule bridge {TABLE} prerouting iifname . ether saddr @macs accept"
    ));
    b.push(format!(
        "add rule bridge {TABLE} prerouting iifname @checked drop"
    ));
    b
}

/// Masquerade `addrs` (container addresses with their prefix): the entries.
pub fn masq_entries(addrs: &[IpNetwork]) -> Vec<Entry> {
    let mut out = Vec::new();
    for a in addrs {
        let fam = if a.is_ipv4() { 4 } else { 6 };
        let net = IpNetwork::new(a.network(), a.prefix()).expect("same prefix");
        out.push(Entry::inet(format!("masq{fam}"), a.ip().to_string()));
        out.push(Entry::inet(
            format!("local{fam}"),
            format!("{} . {net}", a.ip()),
        ));
    }
    out
}

/// Only `mac` may enter the bridge from `port` (the host end of a container's veth).
pub fn spoofchk_entries(port: &str, mac: &str) -> Vec<Entry> {
    vec![
        Entry::bridge("macs", format!("\"{port}\" . {mac}")),
        Entry::bridge("checked", format!("\"{port}\"")),
    ]
}

/// Whether a chain of `inet podnet` exists (one small read).
pub fn chain_exists(name: &str) -> Result<bool, NftError> {
    let out = Command::new("nft")
        .args(["list", "chain", "inet", TABLE, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(NftError::Exec)?;
    Ok(out.success())
}

/// Runs `nft <args>` and returns its stdout; `None` when nft refused (no such object).
pub fn query(args: &[&str]) -> Result<Option<String>, NftError> {
    let out = Command::new("nft")
        .args(args)
        .output()
        .map_err(NftError::Exec)?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The objects of kind `kind` (`chain`, `rule`, …) in the JSON answer of `nft -j <args>`;
/// none when nft refused (no such table or chain).
pub fn query_objects(args: &[&str], kind: &str) -> Result<Vec<Value>, NftError> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let Some(json) = query(&full)? else {
        return Ok(Vec::new());
    };
    let mut v: Value = serde_json::from_str(&json).map_err(NftError::Parse)?;
    Ok(match v["nftables"].take() {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|mut item| item.get_mut(kind).map(Value::take))
            .collect(),
        _ => Vec::new(),
    })
}

/// Deletes `elements` (GC sweeps); removes a table too when nothing else is left in it.
pub fn delete_elements(all: &[Element], doomed: &[&Element]) -> Batch {
    let mut b = Batch::default();
    for family in ["inet", "bridge"] {
        let total = all.iter().filter(|e| e.family == family).count();
        let going: Vec<&&Element> = doomed.iter().filter(|e| e.family == family).collect();
        if going.is_empty() {
            continue;
        }
        if going.len() == total && family == "bridge" {
            b.push(format!("delete table {family} {TABLE}"));
            continue;
        }
        for e in going {
            b.push(format!(
                "delete element {family} {TABLE} {} {{ {} }}",
                e.set, e.key
            ));
        }
    }
    b
}

/// GC: releases every journaled attachment of `network` (any owner) not in `valid`,
/// then sweeps elements of the network's stale attachments that have no journal.
/// Returns what it released.
pub fn retain_attachments(
    network: &str,
    valid: &[cni::Attachment],
) -> Result<Vec<Released>, NftError> {
    let keep = |cid: &str, ifname: &str| {
        valid
            .iter()
            .any(|a| a.container_id == cid && a.ifname == ifname)
    };
    let mut gone = Vec::new();
    for rec in record::all()? {
        if rec.network == network && !keep(&rec.container_id, &rec.ifname) {
            gone.extend(release(&rec.owner, &rec.container_id, &rec.ifname)?);
        }
    }
    let prefix = format!("{network} ");
    let keys: Vec<String> = valid
        .iter()
        .map(|a| attachment_key(network, &a.container_id, &a.ifname))
        .collect();
    let _lock = lock()?;
    record::remove_stale_temps();
    let all = list_elements()?;
    let doomed: Vec<&Element> = all
        .iter()
        .filter(|e| e.comment.starts_with(&prefix) && !keys.contains(&e.comment))
        .collect();
    apply(&delete_elements(&all, &doomed))?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skeleton_and_masq_snapshot() {
        let sk = skeleton_inet().text();
        assert!(sk.starts_with("add table inet podnet\n"));
        assert!(sk.contains("flush chain inet podnet postrouting\nadd rule inet podnet postrouting ct status dnat ip daddr @pmall4 masquerade"));
        assert!(!sk.contains("flush chain inet podnet portmap_cond"));
        assert!(sk.contains("add chain inet podnet guard { type filter hook prerouting priority raw; policy accept; }\n"));
        assert!(
            sk.contains("add rule inet podnet guard iifname != \"lo\" ip daddr 127.0.0.0/8 drop\n")
        );
        let mut r = Record::new("bridge", "net1", "c1", "eth0");
        r.entries = masq_entries(&[
            "10.88.0.5/16".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ]);
        let text = r.add_batch(true, true).text();
        assert!(
            text.contains("add element inet podnet masq4 { 10.88.0.5 comment \"net1 c1 eth0\" }")
        );
        assert!(text.contains(
            "add element inet podnet local4 { 10.88.0.5 . 10.88.0.0/16 comment \"net1 c1 eth0\" }"
        ));
        assert!(text.contains(
            "add element inet podnet local6 { fd00::5 . fd00::/64 comment \"net1 c1 eth0\" }"
        ));
    }

    #[test]
    fn parses_listed_elements_and_deletes_them() {
        let json = br#"{"nftables":[{"metainfo":{}},{"table":{"family":"inet","name":"podnet"}},
            {"set":{"family":"inet","name":"masq4","table":"podnet","type":"ipv4_addr","elem":[{"elem":{"val":"10.88.0.5","comment":"n a eth0"}},{"elem":{"val":"10.88.0.6","comment":"n b eth0"}}]}},
            {"set":{"family":"inet","name":"local4","table":"podnet","type":["ipv4_addr","ipv4_addr"],"elem":[{"elem":{"val":{"concat":["10.88.0.5",{"prefix":{"addr":"10.88.0.0","len":16}}]},"comment":"n a eth0"}}]}}]}"#;
        let all = parse_elements(json).unwrap();
        assert_eq!(
            all[2],
            Element {
                family: "inet".into(),
                set: "local4".into(),
                key: "10.88.0.5 . 10.88.0.0/16".into(),
                comment: "n a eth0".into()
            }
        );
        let doomed: Vec<&Element> = all.iter().filter(|e| e.comment == "n a eth0").collect();
        assert_eq!(
            delete_elements(&all, &doomed).0,
            [
                "delete element inet podnet masq4 { 10.88.0.5 }",
                "delete element inet podnet local4 { 10.88.0.5 . 10.88.0.0/16 }"
            ]
        );
        let mut r = Record::new("bridge", "n", "a", "eth0");
        r.entries = spoofchk_entries("veth1234", "02:00:00:00:00:01");
        let spoof = r.add_batch(true, true).text();
        assert!(spoof.contains("add element bridge podnet macs { \"veth1234\" . 02:00:00:00:00:01 comment \"n a eth0\" }"), "{spoof}");
    }
}
