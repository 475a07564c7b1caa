//! `netctl link A B`: a veth pair born directly in two namespaces, point-to-point
//! addresses with host routes to the peer, recorded so `unlink` and `links` work.
//!
//! Records live in /run/podnet/links/<hash>.json (one per pair of namespaces), written
//! (temp file + rename) only once every step succeeded; a failed `link` deletes the
//! half-made pair. `link` is a short orchestration: an existing link, the addresses, the
//! pair made and wired point to point by netkit, the record.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
pub(crate) use netctl::record::{End, LinkRecord};
use netkit::{Netlink, VethOptions};

use crate::error::{Error, Result};
use crate::target::{id_of, Target};

pub(crate) const LINKS_DIR: &str = "/run/podnet/links";
/// Where default addresses come from: pairs (.1, .2), (.3, .4), … as /32s.
pub(crate) const DEFAULT_RANGE: &str = "169.254.100.0/24";

#[derive(Debug, Clone, Default)]
pub(crate) struct LinkOptions {
    pub ip: Option<IpAddr>,
    pub peer_ip: Option<IpAddr>,
    pub name: Option<String>,
    pub peer_name: Option<String>,
    pub mtu: Option<u32>,
    pub range: Option<IpNetwork>,
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

fn pair_key(a: &Target, b: &Target) -> String {
    let (x, y) = if a.id <= b.id {
        (a.id, b.id)
    } else {
        (b.id, a.id)
    };
    format!("{:x}-{:x}-{:x}-{:x}", x.0, x.1, y.0, y.1)
}

fn record_path(key: &str) -> PathBuf {
    PathBuf::from(LINKS_DIR).join(format!("{key}.json"))
}

/// Every recorded link.
pub(crate) fn records() -> Vec<(PathBuf, LinkRecord)> {
    let Ok(dir) = std::fs::read_dir(LINKS_DIR) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let p = e.path();
            let r = LinkRecord::decode(&std::fs::read(&p).ok()?)?;
            Some((p, r))
        })
        .collect()
}

/// The default interface name on one side: `pn-` and a hash of the peer's namespace.
fn default_name(peer: &Target) -> String {
    format!("pn-{:08x}", fnv(&format!("{:?}", peer.id)))
}

/// Addresses present in a namespace.
async fn addrs_in(nl: &Netlink, t: &Target) -> Result<Vec<IpAddr>> {
    let addrs = nl.addr_list(None).await.map_err(Error::netkit(format!(
        "reading the addresses of {}",
        t.spec
    )))?;
    Ok(addrs.into_iter().map(|(_, a)| a.ip()).collect())
}

/// The first pair of the range free in both namespaces and in every record.
fn free_pair(range: IpNetwork, taken: &[IpAddr]) -> Result<(IpAddr, IpAddr)> {
    let mut it = range.iter().skip(1);
    loop {
        let (Some(x), Some(y)) = (it.next(), it.next()) else {
            return Err(Error::RangeExhausted(range));
        };
        if range.is_ipv4() && (y == range.broadcast()) {
            return Err(Error::RangeExhausted(range));
        }
        if !taken.contains(&x) && !taken.contains(&y) {
            return Ok((x, y));
        }
    }
}

/// One side of a link being made: its target, netlink handle, interface and address.
struct Side<'a> {
    target: &'a Target,
    nl: Netlink,
    ifname: String,
}

/// Creates (or confirms) the link; returns the record and whether it was new.
pub(crate) fn link(a: &Target, b: &Target, o: &LinkOptions) -> Result<(LinkRecord, bool)> {
    if a.id == b.id {
        return Err(Error::SameNamespace(a.spec.clone(), b.spec.clone()));
    }
    let name = o.name.clone().unwrap_or_else(|| default_name(b));
    let peer_name = o.peer_name.clone().unwrap_or_else(|| default_name(a));
    for (flag, n) in [("--name", &name), ("--peer-name", &peer_name)] {
        cni::validate::interface_name(n).map_err(|e| Error::invalid(flag, e.msg))?;
    }
    let path = record_path(&pair_key(a, b));
    let (na, nb) = (a.open()?, b.open()?);
    netkit::block_on(async {
        let open = |ns: &netkit::NetNs, t: &Target| {
            Netlink::open_in(ns).map_err(Error::netkit(format!("opening netlink in {}", t.spec)))
        };
        let sa = Side {
            target: a,
            nl: open(&na, a)?,
            ifname: name,
        };
        let sb = Side {
            target: b,
            nl: open(&nb, b)?,
            ifname: peer_name,
        };
        if let Some(r) = existing(&path, &sa, &sb, o).await? {
            return Ok((r, false));
        }
        let (ip, peer_ip) = addresses(&sa, &sb, o).await?;
        create(&sa, &sb, &nb, (ip, peer_ip), o.mtu).await?;
        let end = |s: &Side<'_>, addr| End {
            target: s.target.spec.clone(),
            path: s.target.path.clone(),
            ns_id: s.target.id,
            ifname: s.ifname.clone(),
            addr,
        };
        let rec = LinkRecord {
            a: end(&sa, ip),
            b: end(&sb, peer_ip),
            mtu: o.mtu,
        };
        if let Err(e) = save(&path, &rec) {
            delete(&sa).await;
            return Err(e);
        }
        Ok((rec, true))
    })
}

/// The recorded link between the two namespaces, when both ends are still there: the
/// same command again changes nothing; different options are refused.
async fn existing(
    path: &std::path::Path,
    a: &Side<'_>,
    b: &Side<'_>,
    o: &LinkOptions,
) -> Result<Option<LinkRecord>> {
    let Some(r) = std::fs::read(path)
        .ok()
        .and_then(|bytes| LinkRecord::decode(&bytes))
    else {
        return Ok(None);
    };
    let (ra, rb) = if r.a.ns_id == a.target.id {
        (&r.a, &r.b)
    } else {
        (&r.b, &r.a)
    };
    let alive = a.nl.link_get(&ra.ifname).await.ok().flatten().is_some()
        && b.nl.link_get(&rb.ifname).await.ok().flatten().is_some();
    if !alive {
        return Ok(None);
    }
    let same = o.ip.is_none_or(|ip| ip == ra.addr)
        && o.peer_ip.is_none_or(|ip| ip == rb.addr)
        && o.name.as_ref().is_none_or(|n| *n == ra.ifname)
        && o.peer_name.as_ref().is_none_or(|n| *n == rb.ifname);
    if !same {
        return Err(Error::AlreadyLinked {
            a: a.target.spec.clone(),
            b: b.target.spec.clone(),
            ends: format!("{} {} <-> {} {}", ra.ifname, ra.addr, rb.ifname, rb.addr),
        });
    }
    Ok(Some(r))
}

/// The two addresses: as given, or the first free pair of the range; refused when an
/// interface name or an address is taken on either side.
async fn addresses(a: &Side<'_>, b: &Side<'_>, o: &LinkOptions) -> Result<(IpAddr, IpAddr)> {
    for s in [a, b] {
        let taken =
            s.nl.link_get(&s.ifname)
                .await
                .map_err(Error::netkit(format!(
                    "reading the links of {}",
                    s.target.spec
                )))?;
        if taken.is_some() {
            return Err(Error::NameTaken {
                name: s.ifname.clone(),
                target: s.target.spec.clone(),
            });
        }
    }
    let (in_a, in_b) = (
        addrs_in(&a.nl, a.target).await?,
        addrs_in(&b.nl, b.target).await?,
    );
    let (ip, peer_ip) = match (o.ip, o.peer_ip) {
        (Some(x), Some(y)) => (x, y),
        (None, None) => {
            let mut taken: Vec<IpAddr> = in_a.iter().chain(&in_b).copied().collect();
            taken.extend(
                records()
                    .into_iter()
                    .flat_map(|(_, r)| [r.a.addr, r.b.addr]),
            );
            let range = o
                .range
                .unwrap_or_else(|| DEFAULT_RANGE.parse().expect("literal"));
            free_pair(range, &taken)?
        }
        _ => {
            return Err(Error::invalid(
                "--ip",
                "--ip and --peer-ip go together (or neither, for a free pair)",
            ))
        }
    };
    if ip.is_ipv4() != peer_ip.is_ipv4() {
        return Err(Error::invalid(
            "--peer-ip",
            format!("--ip {ip} and --peer-ip {peer_ip} are of different families"),
        ));
    }
    for addr in [ip, peer_ip] {
        for (s, present) in [(a, &in_a), (b, &in_b)] {
            if present.contains(&addr) {
                return Err(Error::AddressTaken {
                    addr,
                    target: s.target.spec.clone(),
                });
            }
        }
    }
    Ok((ip, peer_ip))
}

/// The veth pair born in both namespaces, each end wired point to point
/// ([`netkit::attach::point_to_point`]); on failure the pair is deleted again.
async fn create(
    a: &Side<'_>,
    b: &Side<'_>,
    nb: &netkit::NetNs,
    (ip, peer_ip): (IpAddr, IpAddr),
    mtu: Option<u32>,
) -> Result<()> {
    let opts = VethOptions {
        mtu,
        ..Default::default()
    };
    a.nl.link_add_veth(&a.ifname, &b.ifname, nb, &opts)
        .await
        .map_err(Error::netkit(format!(
            "creating {} in {} with its peer {} in {}",
            a.ifname, a.target.spec, b.ifname, b.target.spec
        )))?;
    let wired = async {
        for (s, mine, peer) in [(a, ip, peer_ip), (b, peer_ip, ip)] {
            let l = s.nl.link_require(&s.ifname).await?;
            netkit::attach::point_to_point(&s.nl, l.index, mine, peer).await?;
        }
        Ok::<_, netkit::Error>(())
    };
    if let Err(e) = wired.await {
        delete(a).await;
        return Err(Error::netkit("configuring the link")(e));
    }
    Ok(())
}

/// Deletes side `a`'s end (its peer goes with it).
async fn delete(a: &Side<'_>) {
    if let Ok(Some(l)) = a.nl.link_get(&a.ifname).await {
        let _ = a.nl.link_del(l.index).await;
    }
}

/// Writes the record beside its final name and renames it into place, so a reader
/// (`links`, `unlink`, another `link`) never sees half of it.
fn save(path: &std::path::Path, rec: &LinkRecord) -> Result<()> {
    let fail = Error::io(format!("recording the link in {}", path.display()));
    let tmp = path.with_extension("json.tmp");
    std::fs::create_dir_all(LINKS_DIR)
        .and_then(|()| std::fs::write(&tmp, rec.encode()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e)
        })
}

/// Whether an end's namespace is still the one recorded.
pub(crate) fn alive(e: &End) -> bool {
    id_of(&e.path) == Some(e.ns_id)
}

/// Removes the link between the namespaces the two targets name (either may be gone, in
/// which case they are matched by the name they were linked with).
pub(crate) fn unlink(a: &str, b: &str) -> Result<LinkRecord> {
    let ta = Target::resolve(a).ok();
    let tb = Target::resolve(b).ok();
    let matches = |e: &End, spec: &str, t: &Option<Target>| {
        e.target == spec || t.as_ref().is_some_and(|t| t.id == e.ns_id && alive(e))
    };
    let (path, rec) = records()
        .into_iter()
        .find(|(_, r)| {
            (matches(&r.a, a, &ta) && matches(&r.b, b, &tb))
                || (matches(&r.a, b, &tb) && matches(&r.b, a, &ta))
        })
        .ok_or_else(|| Error::NotLinked(a.to_owned(), b.to_owned()))?;
    for end in [&rec.a, &rec.b] {
        if !alive(end) {
            continue;
        }
        let what = format!("deleting {} in {}", end.ifname, end.target);
        let ns = netkit::NetNs::open(&end.path).map_err(Error::netkit(what.clone()))?;
        netkit::block_on(async {
            let nl = Netlink::open_in(&ns)?;
            if let Some(l) = nl.link_get(&end.ifname).await? {
                nl.link_del(l.index).await?;
            }
            Ok::<_, netkit::Error>(())
        })
        .map_err(Error::netkit(what))?;
    }
    std::fs::remove_file(&path).map_err(Error::io(path.display().to_string()))?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_pairs_skip_what_is_taken() {
        let r: IpNetwork = "169.254.100.0/24".parse().unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            free_pair(r, &[]).unwrap(),
            (ip("169.254.100.1"), ip("169.254.100.2"))
        );
        assert_eq!(
            free_pair(r, &[ip("169.254.100.2")]).unwrap(),
            (ip("169.254.100.3"), ip("169.254.100.4"))
        );
        let tiny: IpNetwork = "10.0.0.0/30".parse().unwrap();
        assert!(free_pair(tiny, &[ip("10.0.0.1")])
            .unwrap_err()
            .to_string()
            .contains("no free address pair"));
        let v6: IpNetwork = "fd00:1::/120".parse().unwrap();
        assert_eq!(
            free_pair(v6, &[]).unwrap(),
            (ip("fd00:1::1"), ip("fd00:1::2"))
        );
    }
}
