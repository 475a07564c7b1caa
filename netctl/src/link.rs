//! `netctl link A B`: a veth pair born directly in two namespaces, point-to-point
//! addresses with host routes to the peer, recorded so `unlink` and `links` work.
//!
//! Records live in /run/podnet/links/<hash>.json (one per pair of namespaces), created
//! only once every step succeeded; a failed `link` deletes the half-made pair.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use netkit::{Netlink, RouteSpec, VethOptions};
use serde::{Deserialize, Serialize};

use crate::target::{id_of, Target};

pub(crate) const LINKS_DIR: &str = "/run/podnet/links";
/// Where default addresses come from: pairs (.1, .2), (.3, .4), … as /32s.
pub(crate) const DEFAULT_RANGE: &str = "169.254.100.0/24";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct End {
    pub target: String,
    pub path: PathBuf,
    pub ns_id: (u64, u64),
    pub ifname: String,
    pub addr: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LinkRecord {
    pub a: End,
    pub b: End,
    pub mtu: Option<u32>,
}

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
            let r: LinkRecord = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, r))
        })
        .collect()
}

/// The default interface name on one side: `pn-` and a hash of the peer's namespace.
fn default_name(peer: &Target) -> String {
    format!("pn-{:08x}", fnv(&format!("{:?}", peer.id)))
}

/// Addresses present in a namespace.
async fn addrs_in(nl: &Netlink) -> Result<Vec<IpAddr>, String> {
    Ok(nl
        .addr_list(None)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, a)| a.ip())
        .collect())
}

fn host_prefix(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("full-length prefix")
}

/// The first pair of the range free in both namespaces and in every record.
fn free_pair(range: IpNetwork, taken: &[IpAddr]) -> Result<(IpAddr, IpAddr), String> {
    let mut it = range.iter().skip(1);
    loop {
        let (Some(x), Some(y)) = (it.next(), it.next()) else {
            return Err(format!(
                "no free address pair left in the link range {range}"
            ));
        };
        if range.is_ipv4() && (y == range.broadcast()) {
            return Err(format!(
                "no free address pair left in the link range {range}"
            ));
        }
        if !taken.contains(&x) && !taken.contains(&y) {
            return Ok((x, y));
        }
    }
}

/// Creates (or confirms) the link; returns the record and whether it was new.
pub(crate) fn link(a: &Target, b: &Target, o: &LinkOptions) -> Result<(LinkRecord, bool), String> {
    if a.id == b.id {
        return Err(format!(
            "{} and {} are the same network namespace",
            a.spec, b.spec
        ));
    }
    let key = pair_key(a, b);
    let path = record_path(&key);
    let name = o.name.clone().unwrap_or_else(|| default_name(b));
    let peer_name = o.peer_name.clone().unwrap_or_else(|| default_name(a));
    for (what, n) in [("--name", &name), ("--peer-name", &peer_name)] {
        cni::validate::interface_name(n).map_err(|e| format!("{what}: {}", e.msg))?;
    }
    let (na, nb) = (a.open()?, b.open()?);
    netkit::block_on(async {
        let (la, lb) = (
            Netlink::open_in(&na).map_err(|e| e.to_string())?,
            Netlink::open_in(&nb).map_err(|e| e.to_string())?,
        );
        // Already linked: the same command again changes nothing.
        if let Ok(bytes) = std::fs::read(&path) {
            if let Ok(r) = serde_json::from_slice::<LinkRecord>(&bytes) {
                let (ra, rb) = if r.a.ns_id == a.id {
                    (&r.a, &r.b)
                } else {
                    (&r.b, &r.a)
                };
                let same = o.ip.is_none_or(|ip| ip == ra.addr)
                    && o.peer_ip.is_none_or(|ip| ip == rb.addr)
                    && o.name.as_ref().is_none_or(|n| *n == ra.ifname)
                    && o.peer_name.as_ref().is_none_or(|n| *n == rb.ifname);
                let alive = la.link_get(&ra.ifname).await.ok().flatten().is_some()
                    && lb.link_get(&rb.ifname).await.ok().flatten().is_some();
                if alive && same {
                    return Ok((r, false));
                }
                if alive {
                    return Err(format!(
                        "{} and {} are already linked ({} {} <-> {} {}); unlink them first to change it",
                        a.spec, b.spec, ra.ifname, ra.addr, rb.ifname, rb.addr
                    ));
                }
            }
        }
        for (nl, n, t) in [(&la, &name, a), (&lb, &peer_name, b)] {
            if nl.link_get(n).await.map_err(|e| e.to_string())?.is_some() {
                return Err(format!("interface name {n} is already taken in {}", t.spec));
            }
        }
        let (in_a, in_b) = (addrs_in(&la).await?, addrs_in(&lb).await?);
        let mut taken: Vec<IpAddr> = in_a.iter().chain(&in_b).copied().collect();
        for (_, r) in records() {
            taken.extend([r.a.addr, r.b.addr]);
        }
        let (ip, peer_ip) = match (o.ip, o.peer_ip) {
            (Some(x), Some(y)) => (x, y),
            (None, None) => {
                let range = o
                    .range
                    .unwrap_or_else(|| DEFAULT_RANGE.parse().expect("literal"));
                free_pair(range, &taken)?
            }
            _ => return Err("--ip and --peer-ip go together (or neither, for a free pair)".into()),
        };
        if ip.is_ipv4() != peer_ip.is_ipv4() {
            return Err(format!(
                "--ip {ip} and --peer-ip {peer_ip} are of different families"
            ));
        }
        for (addr, t, present) in [
            (ip, a, &in_a),
            (peer_ip, b, &in_b),
            (ip, b, &in_b),
            (peer_ip, a, &in_a),
        ] {
            if present.contains(&addr) {
                return Err(format!("address {addr} is already taken in {}", t.spec));
            }
        }
        la.link_add_veth(
            &name,
            &peer_name,
            &nb,
            &VethOptions {
                mtu: o.mtu,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            format!(
                "creating {name} in {} with its peer {peer_name} in {}: {e}",
                a.spec, b.spec
            )
        })?;
        let wired = async {
            for (nl, ifname, mine, peer) in
                [(&la, &name, ip, peer_ip), (&lb, &peer_name, peer_ip, ip)]
            {
                let l = nl.link_require(ifname).await?;
                nl.addr_add(l.index, host_prefix(mine)).await?;
                nl.link_set_up(l.index).await?;
                nl.route_add(&RouteSpec {
                    dst: host_prefix(peer),
                    gateway: None,
                    oif: Some(l.index),
                    scope: 253,
                })
                .await?;
            }
            Ok::<_, netkit::Error>(())
        };
        if let Err(e) = wired.await {
            if let Ok(Some(l)) = la.link_get(&name).await {
                let _ = la.link_del(l.index).await;
            }
            return Err(format!("configuring the link: {e}"));
        }
        let rec = LinkRecord {
            a: End {
                target: a.spec.clone(),
                path: a.path.clone(),
                ns_id: a.id,
                ifname: name.clone(),
                addr: ip,
            },
            b: End {
                target: b.spec.clone(),
                path: b.path.clone(),
                ns_id: b.id,
                ifname: peer_name.clone(),
                addr: peer_ip,
            },
            mtu: o.mtu,
        };
        let saved = std::fs::create_dir_all(LINKS_DIR).and_then(|()| {
            std::fs::write(&path, serde_json::to_vec_pretty(&rec).expect("serializes"))
        });
        if let Err(e) = saved {
            if let Ok(Some(l)) = la.link_get(&name).await {
                let _ = la.link_del(l.index).await;
            }
            return Err(format!("recording the link in {}: {e}", path.display()));
        }
        Ok((rec, true))
    })
}

/// Whether an end's namespace is still the one recorded.
pub(crate) fn alive(e: &End) -> bool {
    id_of(&e.path) == Some(e.ns_id)
}

/// Removes the link between the namespaces the two targets name (either may be gone, in
/// which case they are matched by the name they were linked with).
pub(crate) fn unlink(a: &str, b: &str) -> Result<LinkRecord, String> {
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
        .ok_or_else(|| format!("{a} and {b} are not linked (see `netctl links`)"))?;
    for end in [&rec.a, &rec.b] {
        if !alive(end) {
            continue;
        }
        let ns = netkit::NetNs::open(&end.path).map_err(|e| e.to_string())?;
        netkit::block_on(async {
            let nl = Netlink::open_in(&ns)?;
            if let Some(l) = nl.link_get(&end.ifname).await? {
                nl.link_del(l.index).await?;
            }
            Ok::<_, netkit::Error>(())
        })
        .map_err(|e| format!("deleting {} in {}: {e}", end.ifname, end.target))?;
    }
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
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
            .contains("no free address pair"));
        let v6: IpNetwork = "fd00:1::/120".parse().unwrap();
        assert_eq!(
            free_pair(v6, &[]).unwrap(),
            (ip("fd00:1::1"), ip("fd00:1::2"))
        );
    }
}
