//! nftables: batches built by pure functions (text in nft's own syntax, snapshot-tested
//! without root) and applied in one transaction by [`apply`]; reads go through
//! `nft -j`. podnet owns one table, `inet podnet`; per-container state lives in set
//! elements whose comment names the attachment, so DEL and GC find it by container id
//! alone, and cost does not grow with the number of containers.
//!
//! The podnet table's layout (created on first use, removed when its last element goes):
//!
//! ```text
//! table inet podnet
//!   set masq4   ipv4_addr                  container addresses to masquerade
//!   set masq6   ipv6_addr
//!   set local4  ipv4_addr . ipv4_addr      (container, its subnet): traffic not masqueraded
//!   set local6  ipv6_addr . ipv6_addr
//!   chain postrouting  nat hook: return for local pairs and multicast, masquerade @masq
//! table bridge podnet                      (macspoofchk)
//!   set macs    ifname . ether_addr        (host end of a container's veth, the MAC it may send from)
//!   set checked ifname                     ports whose source MACs are checked
//!   chain prerouting  filter hook: accept @macs, drop the rest of @checked
//! ```

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

fn parse_elements(json: &[u8]) -> Result<Vec<Element>, NftError> {
    let v: Value = serde_json::from_slice(json).map_err(NftError::Parse)?;
    let mut out = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        let Some(set) = item.get("set") else { continue };
        let name = set["name"].as_str().unwrap_or_default();
        let family = set["family"].as_str().unwrap_or_default();
        for e in set["elem"].as_array().into_iter().flatten() {
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

// ---- masquerade ------------------------------------------------------------------------

/// The comment that keys an attachment's elements: `<network> <containerID> <ifname>`.
pub fn attachment_key(network: &str, container_id: &str, ifname: &str) -> String {
    format!("{network} {container_id} {ifname}")
}

/// The table, its sets and its postrouting chain; idempotent (the chain's static rules
/// are flushed and re-added in the same transaction).
pub fn masq_skeleton() -> Batch {
    let mut b = Batch::default();
    b.push(format!("add table inet {TABLE}"));
    b.push(format!("add set inet {TABLE} masq4 {{ type ipv4_addr; }}"));
    b.push(format!("add set inet {TABLE} masq6 {{ type ipv6_addr; }}"));
    b.push(format!(
        "add set inet {TABLE} local4 {{ type ipv4_addr . ipv4_addr; flags interval; }}"
    ));
    b.push(format!(
        "add set inet {TABLE} local6 {{ type ipv6_addr . ipv6_addr; flags interval; }}"
    ));
    b.push(format!("add chain inet {TABLE} postrouting {{ type nat hook postrouting priority srcnat; policy accept; }}"));
    b.push(format!("flush chain inet {TABLE} postrouting"));
    for rule in [
        "ip saddr . ip daddr @local4 return",
        "ip6 saddr . ip6 daddr @local6 return",
        "ip daddr 224.0.0.0/4 return",
        "ip6 daddr ff00::/8 return",
        "ip saddr @masq4 masquerade",
        "ip6 saddr @masq6 masquerade",
    ] {
        b.push(format!("add rule inet {TABLE} postrouting {rule}"));
    }
    b
}

/// Masquerade `addrs` (container addresses with their prefix) of one attachment.
pub fn masq_add(key: &str, addrs: &[IpNetwork]) -> Batch {
    let mut b = masq_skeleton();
    for a in addrs {
        let (fam, ip, net) = (
            if a.is_ipv4() { 4 } else { 6 },
            a.ip(),
            IpNetwork::new(a.network(), a.prefix()).expect("same prefix"),
        );
        b.push(format!(
            "add element inet {TABLE} masq{fam} {{ {ip} comment \"{key}\" }}"
        ));
        b.push(format!(
            "add element inet {TABLE} local{fam} {{ {ip} . {net} comment \"{key}\" }}"
        ));
    }
    b
}

/// Deletes `elements`; removes the table too when nothing else is left in it.
pub fn delete_elements(all: &[Element], doomed: &[&Element]) -> Batch {
    let mut b = Batch::default();
    for family in ["inet", "bridge"] {
        let total = all.iter().filter(|e| e.family == family).count();
        let going: Vec<&&Element> = doomed.iter().filter(|e| e.family == family).collect();
        if going.is_empty() {
            continue;
        }
        if going.len() == total {
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

// ---- MAC spoof check ---------------------------------------------------------------------

/// Only `mac` may enter the bridge from `port` (the host end of a container's veth).
pub fn spoofchk_add(key: &str, port: &str, mac: &str) -> Batch {
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
    b.push(format!(
        "add element bridge {TABLE} macs {{ \"{port}\" . {mac} comment \"{key}\" }}"
    ));
    b.push(format!(
        "add element bridge {TABLE} checked {{ \"{port}\" comment \"{key}\" }}"
    ));
    b
}

/// Removes the elements whose comment `pick` selects, under the table lock.
pub fn remove_where(pick: impl Fn(&str) -> bool) -> Result<usize, NftError> {
    let _lock = lock()?;
    let all = list_elements()?;
    let doomed: Vec<&Element> = all.iter().filter(|e| pick(&e.comment)).collect();
    apply(&delete_elements(&all, &doomed))?;
    Ok(doomed.len())
}

/// Removes every element of one attachment (DEL; no netns or prevResult needed).
pub fn remove_attachment(
    network: &str,
    container_id: &str,
    ifname: &str,
) -> Result<usize, NftError> {
    let key = attachment_key(network, container_id, ifname);
    remove_where(|c| c == key)
}

/// Removes the elements of `network` whose attachment is not in `valid` (GC).
pub fn retain_attachments(network: &str, valid: &[cni::Attachment]) -> Result<usize, NftError> {
    let prefix = format!("{network} ");
    let keep: Vec<String> = valid
        .iter()
        .map(|a| attachment_key(network, &a.container_id, &a.ifname))
        .collect();
    remove_where(|c| c.starts_with(&prefix) && !keep.iter().any(|k| k == c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masq_batch_snapshot() {
        let b = masq_add(
            "net1 c1 eth0",
            &[
                "10.88.0.5/16".parse().unwrap(),
                "fd00::5/64".parse().unwrap(),
            ],
        );
        let text = b.text();
        assert!(text.starts_with("add table inet podnet\n"));
        assert!(
            text.contains("add element inet podnet masq4 { 10.88.0.5 comment \"net1 c1 eth0\" }")
        );
        assert!(text.contains(
            "add element inet podnet local4 { 10.88.0.5 . 10.88.0.0/16 comment \"net1 c1 eth0\" }"
        ));
        assert!(text.contains(
            "add element inet podnet local6 { fd00::5 . fd00::/64 comment \"net1 c1 eth0\" }"
        ));
        assert!(text.contains("flush chain inet podnet postrouting\nadd rule inet podnet postrouting ip saddr . ip daddr @local4 return"));
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
        let every: Vec<&Element> = all.iter().collect();
        assert_eq!(
            delete_elements(&all, &every).0,
            ["delete table inet podnet"]
        );
        let spoof = spoofchk_add("n a eth0", "veth1234", "02:00:00:00:00:01").text();
        assert!(spoof.contains("add element bridge podnet macs { \"veth1234\" . 02:00:00:00:00:01 comment \"n a eth0\" }"), "{spoof}");
    }
}
