//! nftables, podnet's own tables over netlink. podnet owns one table per family it
//! needs, `inet podnet` and `bridge podnet`; their sets, chains and rules are typed in
//! [`schema`] and made by [`wire::create_tables`], and everything per container lives in
//! set and map elements ([`wire`]) whose comment names the attachment, so no `nft`
//! process runs and no name is ever pasted into nft text. `nft` is left for what is
//! nft syntax by nature (a network's `conditionsV4`), rules in other tables
//! ([`hostfw`]) and listings. Each attachment's elements are also journaled
//! ([`record`]) so that DEL finds them from the container id alone and touches only
//! them: no dump, no cost that grows with the number of containers or published ports.
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

pub mod firewalld;
pub mod hostfw;
pub mod record;
pub mod schema;
pub mod watch;
pub mod wire;

pub use record::{
    check, commit, ensure_cond_jumps, find, group, release, restore, verify, Commit, CommitError,
    Conflict, Entry, Record, Released, Restored,
};

use std::io::Write;
use std::process::{Command, Stdio};

use ipnetwork::IpNetwork;
use serde_json::Value;

pub const TABLE: &str = "podnet";

/// Where the lock that serializes read-modify-write sequences on the table lives.
/// The table lock, `<run dir>/nft.lock`.
pub fn lock_path() -> std::path::PathBuf {
    crate::run_dir().join("nft.lock")
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft")]
    Exec(#[source] std::io::Error),
    #[error("nft refused the batch: {stderr}\nbatch:\n{batch}")]
    Refused { stderr: String, batch: String },
    #[error("nft -j output")]
    Parse(#[source] serde_json::Error),
    #[error("locking the nft table lock")]
    Lock(#[source] std::io::Error),
    #[error("nftables journal {0}")]
    Journal(std::path::PathBuf, #[source] std::io::Error),
    #[error("nftables over netlink")]
    Netlink(#[from] wire::WireError),
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
    let path = lock_path();
    let path = path.as_path();
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

/// Whether podnet owns the rules of chain `name` of `inet podnet` (the schema's chains
/// and the conditioned networks'); any other chain holding rules (an admin chain a user
/// filled) keeps the table alive when its last element goes.
pub fn own_chain(name: &str) -> bool {
    name.starts_with(COND_CHAIN_PREFIX)
        || schema::chains()
            .iter()
            .any(|c| c.family == schema::Family::Inet && c.name == name)
}

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

/// The four port maps' `add map` commands under `suffix` (`_<hash>`: a conditioned
/// network's own, made by `nft` together with its conditions).
pub fn portmap_maps(suffix: &str) -> Vec<String> {
    schema::PORT_MAPS
        .iter()
        .filter_map(|m| schema::set_def("inet", m))
        .map(|d| d.nft_text(&format!("{}{suffix}", d.name)))
        .collect()
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

/// Deletes `doomed` (GC sweeps) over netlink, in one transaction; `bridge podnet`
/// goes too when nothing else is left in it.
pub fn delete_elements(all: &[Element], doomed: &[&Element]) -> Result<(), NftError> {
    if doomed.is_empty() {
        return Ok(());
    }
    let entries: Vec<Entry> = doomed
        .iter()
        .map(|e| Entry {
            family: e.family.clone(),
            set: e.set.clone(),
            key: e.key.clone(),
            ..Entry::inet("", "")
        })
        .collect();
    let bridge_total = all.iter().filter(|e| e.family == "bridge").count();
    let bridge_going = entries.iter().filter(|e| e.family == "bridge").count();
    let (ops, drop): (Vec<_>, &[&str]) = if bridge_going > 0 && bridge_going == bridge_total {
        let ops = entries.iter().filter(|e| e.family != "bridge");
        (
            ops.map(|e| (wire::Op::Delete, e, None)).collect(),
            &["bridge"],
        )
    } else {
        (
            entries
                .iter()
                .map(|e| (wire::Op::Delete, e, None))
                .collect(),
            &[],
        )
    };
    Ok(wire::apply_and_drop(&ops, drop)?)
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
    delete_elements(&all, &doomed)?;
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masq_entries_and_port_maps() {
        let e = masq_entries(&[
            "10.88.0.5/16".parse().unwrap(),
            "fd00::5/64".parse().unwrap(),
        ]);
        assert_eq!(e[0], Entry::inet("masq4", "10.88.0.5"));
        assert_eq!(e[1], Entry::inet("local4", "10.88.0.5 . 10.88.0.0/16"));
        assert_eq!(e[3], Entry::inet("local6", "fd00::5 . fd00::/64"));
        assert_eq!(
            portmap_maps("_ab")[1],
            "add map inet podnet pm4any_ab { type inet_proto . inet_service : ipv4_addr . inet_service; }"
        );
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
        assert_eq!(all.len(), 3);
        assert_eq!(
            spoofchk_entries("veth1234", "02:00:00:00:00:01")[0],
            Entry::bridge("macs", "\"veth1234\" . 02:00:00:00:00:01")
        );
    }
}
