//! The `vrf` plugin (chained): the interface an earlier plugin made (`CNI_IFNAME`) is
//! enslaved to the VRF `vrfname` of the container's namespace, made (up, with `table`
//! or the first free table id) when it is not there yet. The interface's routes follow
//! it into the VRF's table: the kernel moves its connected and local routes, the plugin
//! its other routes (saved before, restored after) and its IPv6 addresses, which the
//! enslaving cycle removes. The last DEL of a VRF's interfaces removes the VRF.
//!
//! Table choice and VRF creation run under a lock on the namespace file, so parallel
//! ADDs into one namespace agree on one VRF and table.

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, GcArgs, Plugin, StatusArgs};
use cni::{CniError, CniResult, ErrorCode};
use netkit::{attach, policy, Link, Netlink};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Vrf;

/// The reference's keys.
#[derive(Debug, Clone, Deserialize)]
pub struct VrfConf {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub vrfname: String,
    #[serde(default)]
    pub table: u32,
}

/// Table ids the kernel reserves (default, main, local) and 0 (unspecified).
const RESERVED: &[u32] = &[0, 253, 254, 255];

impl VrfConf {
    pub fn parse(stdin: &[u8]) -> Result<VrfConf, CniError> {
        let c: VrfConf = cni::config::decode("network config", stdin)?;
        if c.vrfname.is_empty() {
            return Err(CniError::invalid_config(
                "vrfname: required, the VRF to join",
            ));
        }
        if cni::validate::interface_name(&c.vrfname).is_err() {
            return Err(CniError::invalid_config(format!(
                "vrfname: {:?} is not a valid interface name",
                cni::validate::echo(&c.vrfname)
            )));
        }
        if c.table != 0 && RESERVED.contains(&c.table) {
            return Err(CniError::invalid_config(format!(
                "table: {} is a table the kernel reserves",
                c.table
            )));
        }
        Ok(c)
    }
}

/// The VRF `name` in the namespace `nl` is bound to: `Ok(None)` when there is none,
/// an error when a link of that name is not a VRF.
async fn find_vrf(nl: &Netlink, name: &str) -> Result<Option<Link>, CniError> {
    match nl.link_get(name).await? {
        Some(l) if l.kind.as_deref() == Some("vrf") => Ok(Some(l)),
        Some(_) => Err(CniError::invalid_config(format!(
            "vrfname: {name:?} exists in the container and is not a VRF"
        ))),
        None => Ok(None),
    }
}

/// The VRF to join: the one there (whose table must be `table` when given), or a new
/// one, up, with `table` or the first id from 1 that no route, rule or VRF of the
/// namespace uses.
async fn vrf_for(nl: &Netlink, conf: &VrfConf) -> Result<Link, CniError> {
    if let Some(v) = find_vrf(nl, &conf.vrfname).await? {
        if conf.table != 0 && v.vrf_table != Some(conf.table) {
            return Err(CniError::invalid_config(format!(
                "table: VRF {:?} already exists with table {}, not {}",
                conf.vrfname,
                v.vrf_table.unwrap_or_default(),
                conf.table
            )));
        }
        return Ok(v);
    }
    let table = if conf.table != 0 {
        conf.table
    } else {
        let mut used = nl.tables_in_use().await?;
        used.extend(nl.link_list().await?.iter().filter_map(|l| l.vrf_table));
        used.extend(RESERVED);
        policy::free_table(&used, 1)
    };
    nl.link_add_vrf(&conf.vrfname, table).await?;
    let v = nl.link_require(&conf.vrfname).await?;
    nl.link_set_up(v.index).await?;
    Ok(nl.link_require(&conf.vrfname).await?)
}

impl Plugin for Vrf {
    fn about(&self) -> &'static str {
        concat!("podnet vrf plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = VrfConf::parse(&args.stdin)?;
        let prev = args.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config("prevResult: vrf is a chained plugin and needs one")
        })?;
        let ns = attach::open_netns(args)?;
        let _lock = attach::lock_netns(ns.path())?;
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            let link = ctr.link_get(&args.ifname).await?.ok_or_else(|| {
                CniError::invalid_env(format!(
                    "CNI_IFNAME: no interface {:?} in the container to put into VRF {:?}",
                    args.ifname, conf.vrfname
                ))
            })?;
            if let Some(m) = link.master {
                let name = ctr
                    .link_by_index(m)
                    .await?
                    .map(|l| l.name)
                    .unwrap_or_default();
                return Err(CniError::invalid_config(format!(
                    "CNI_IFNAME: {:?} already has a master ({name:?})",
                    args.ifname
                )));
            }
            let vrf = vrf_for(&ctr, &conf).await?;
            let table = vrf.vrf_table.unwrap_or_default();
            // What enslaving takes away: the routes through the link other than its
            // connected and local ones (scope universe), and its IPv6 addresses.
            let routes = ctr
                .routes_save(link.index, |scope, _, _| scope == 0)
                .await?;
            let before: Vec<_> = ctr
                .addr_list(Some(link.index))
                .await?
                .into_iter()
                .map(|(_, a)| a)
                .filter(|a| a.is_ipv6() && !is_link_local(a))
                .collect();
            ctr.link_set_master(link.index, Some(vrf.index)).await?;
            let after: Vec<_> = ctr
                .addr_list(Some(link.index))
                .await?
                .into_iter()
                .map(|(_, a)| a)
                .collect();
            for a in before.into_iter().filter(|a| !after.contains(a)) {
                ctr.addr_add(link.index, a).await?;
            }
            restore_routes(&ctr, &routes, table).await?;
            Ok(prev)
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf: VrfConf = cni::config::decode("network config", &args.stdin)?;
        if conf.vrfname.is_empty() || cni::validate::interface_name(&conf.vrfname).is_err() {
            return Ok(()); // an ADD with this config could not have made anything
        }
        let Some(ns) = attach::open_netns_if_present(args)? else {
            return Ok(());
        };
        let _lock = attach::lock_netns(ns.path())?;
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            let Some(vrf) = find_vrf(&ctr, &conf.vrfname).await.ok().flatten() else {
                return Ok(());
            };
            if let Some(l) = ctr.link_get(&args.ifname).await? {
                if l.master == Some(vrf.index) {
                    ctr.link_set_master(l.index, None).await?;
                }
            }
            let members = ctr
                .link_list()
                .await?
                .into_iter()
                .filter(|l| l.master == Some(vrf.index))
                .count();
            if members == 0 {
                match ctr.link_del(vrf.index).await {
                    Err(e) if !e.is_not_found() => return Err(e.into()),
                    _ => {}
                }
            }
            Ok(())
        })
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = VrfConf::parse(&args.stdin)?;
        if args.prev_result.is_none() {
            return Err(CniError::invalid_config("CHECK needs prevResult"));
        }
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
            let ctr = Netlink::open_in(&ns)?;
            let vrf = find_vrf(&ctr, &conf.vrfname)
                .await?
                .ok_or_else(|| failed(format!("VRF {:?} is missing", conf.vrfname)))?;
            if conf.table != 0 && vrf.vrf_table != Some(conf.table) {
                return Err(failed(format!(
                    "VRF {:?} has table {:?}, the config says {}",
                    conf.vrfname, vrf.vrf_table, conf.table
                )));
            }
            let l = ctr.link_get(&args.ifname).await?;
            if l.and_then(|l| l.master) != Some(vrf.index) {
                return Err(failed(format!(
                    "{:?} is not in VRF {:?}",
                    args.ifname, conf.vrfname
                )));
            }
            Ok(())
        })
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        VrfConf::parse(&args.stdin).map(drop)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        // The VRFs live in the containers' namespaces and go with them.
        VrfConf::parse(&args.stdin).map(drop)
    }
}

fn is_link_local(a: &ipnetwork::IpNetwork) -> bool {
    matches!(a.ip(), std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// The saved routes into the VRF's table. A route through a gateway reachable only by
/// an IPv6 address just restored waits for its connected route (the kernel adds it a
/// moment later), up to about a second, as the reference's.
async fn restore_routes(
    ctr: &Netlink,
    routes: &policy::SavedRoutes,
    table: u32,
) -> Result<(), CniError> {
    let mut wait = std::time::Duration::from_millis(5);
    loop {
        match ctr.routes_restore_in_table(routes, table).await {
            Err(e) if e.errno() == Some(netkit::Errno::ENETUNREACH) && wait.as_millis() < 700 => {
                std::thread::sleep(wait);
                wait *= 2;
            }
            other => return other.map_err(CniError::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_at_fault_are_named() {
        for (v, key) in [
            (serde_json::json!({"name": "n"}), "vrfname:"),
            (
                serde_json::json!({"name": "n", "vrfname": "a/b"}),
                "vrfname:",
            ),
            (
                serde_json::json!({"name": "n", "vrfname": "red", "table": 254}),
                "table:",
            ),
        ] {
            let e = VrfConf::parse(v.to_string().as_bytes()).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG, "{v}");
            assert!(e.msg.contains(key), "{v}: {}", e.msg);
        }
        let c = VrfConf::parse(br#"{"name": "n", "vrfname": "red", "table": 1001}"#).unwrap();
        assert_eq!((c.vrfname.as_str(), c.table), ("red", 1001));
    }
}
