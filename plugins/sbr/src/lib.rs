//! The `sbr` plugin (chained): source-based routing for the interface an earlier plugin
//! made, as the reference builds it. Each of the interface's addresses gets its own
//! routing table (the first id from 100 that no rule or route of the namespace uses) and
//! a rule `from ADDR lookup TABLE`; the table holds a default route through the address's
//! gateway (or the `gateways` key's) and the interface's routes, which leave the main
//! table (with `addSourceHints`, the subnet routes stay there with the address as source
//! hint). With `table` only the rules are added, to that table. Replies from an address
//! then leave by its own interface, whatever the main table's default says.
//!
//! Table selection runs under a lock on the container's namespace file, as the
//! reference's, so parallel ADDs into one namespace never pick the same table.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use cni::skel::{CmdArgs, GcArgs, Plugin, StatusArgs};
use cni::{CniError, CniResult, ErrorCode, IpConfig};
use ipnetwork::IpNetwork;
use netkit::{attach, policy, Netlink, RouteSpec};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Sbr;

/// The first table id the reference hands out.
pub const FIRST_TABLE: u32 = 100;

/// The reference's keys: `table`, `gateways` (one IPv4, one IPv6), `addSourceHints`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SbrConf {
    pub name: String,
    #[serde(default)]
    pub table: Option<u32>,
    #[serde(default)]
    pub gateways: Vec<String>,
    #[serde(default)]
    pub add_source_hints: bool,
}

/// The `gateways` key: at most one address per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gateways {
    pub v4: Option<IpAddr>,
    pub v6: Option<IpAddr>,
}

impl SbrConf {
    fn decode(stdin: &[u8]) -> Result<SbrConf, CniError> {
        cni::config::decode("network config", stdin)
    }

    pub fn gateways(&self) -> Result<Gateways, CniError> {
        let bad = |m: String| CniError::invalid_config(format!("gateways: {m}"));
        if self.gateways.len() > 2 {
            return Err(bad("at most two entries (one IPv4, one IPv6)".into()));
        }
        let mut g = Gateways::default();
        for s in &self.gateways {
            let ip: IpAddr = s
                .parse()
                .map_err(|_| bad(format!("{:?} is not an IP address", cni::validate::echo(s))))?;
            let slot = if ip.is_ipv4() { &mut g.v4 } else { &mut g.v6 };
            if let Some(first) = slot.replace(ip) {
                return Err(bad(format!(
                    "two addresses of one family: {first} and {ip}"
                )));
            }
        }
        Ok(g)
    }
}

/// The previous result's addresses that belong to `ifname` (or to no interface).
pub fn addresses_of<'a>(prev: &'a CniResult, ifname: &str) -> Vec<&'a IpConfig> {
    prev.ips
        .iter()
        .filter(
            |ip| match ip.interface.and_then(|i| prev.interfaces.get(i)) {
                Some(i) => i.name == ifname,
                None => true,
            },
        )
        .collect()
}

impl Plugin for Sbr {
    fn about(&self) -> &'static str {
        concat!("podnet sbr plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = SbrConf::decode(&args.stdin)?;
        let gateways = conf.gateways()?;
        let prev = args.prev_result.as_ref().ok_or_else(|| {
            CniError::invalid_config("prevResult: sbr is a chained plugin and needs one")
        })?;
        if prev.ips.is_empty() {
            return Err(CniError::invalid_config(format!(
                "prevResult: no IP addresses for interface {:?}",
                args.ifname
            )));
        }
        let ips = addresses_of(prev, &args.ifname);
        let ns = attach::open_netns(args)?;
        let _lock = attach::lock_netns(ns.path())?;
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            let made = match conf.table {
                Some(t) => rules_only(&ctr, &ips, t).await,
                None => tables(&ctr, args, &conf, gateways, &ips).await,
            };
            if made.is_err() {
                // What this ADD added: its addresses' rules (and their tables' routes).
                let _ = tidy(&ctr, args, conf.table).await;
            }
            made
        })?;
        Ok(prev.clone())
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = SbrConf::decode(&args.stdin)?;
        let Some(ns) = attach::open_netns_if_present(args)? else {
            return Ok(());
        };
        let _lock = attach::lock_netns(ns.path())?;
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            tidy(&ctr, args, conf.table).await
        })
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = SbrConf::decode(&args.stdin)?;
        conf.gateways()?;
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let ns = attach::open_netns(args)?;
        let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            let rules = ctr.rule_list().await?;
            for ip in addresses_of(prev, &args.ifname) {
                let src = policy::source_of(ip.address.ip());
                let rule = rules.iter().find(|r| r.src == Some(src)).ok_or_else(|| {
                    failed(format!("no rule from {} in the container", ip.address.ip()))
                })?;
                if conf.table.is_some_and(|t| t != rule.table) {
                    return Err(failed(format!(
                        "the rule from {} looks up table {}, the config says {}",
                        ip.address.ip(),
                        rule.table,
                        conf.table.unwrap_or_default()
                    )));
                }
            }
            Ok(())
        })
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        SbrConf::decode(&args.stdin)?.gateways().map(drop)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        // Rules and tables live in the containers' namespaces and go with them.
        SbrConf::decode(&args.stdin).map(drop)
    }
}

async fn rules_only(ctr: &Netlink, ips: &[&IpConfig], table: u32) -> Result<(), CniError> {
    for ip in ips {
        ctr.rule_add_from(ip.address.ip(), table).await?;
    }
    Ok(())
}

/// A table per address: the rule, the default route, the interface's routes moved in.
async fn tables(
    ctr: &Netlink,
    args: &CmdArgs,
    conf: &SbrConf,
    gateways: Gateways,
    ips: &[&IpConfig],
) -> Result<(), CniError> {
    let link = ctr.link_get(&args.ifname).await?.ok_or_else(|| {
        CniError::invalid_env(format!(
            "CNI_IFNAME: no interface {:?} in the container for sbr to route",
            args.ifname
        ))
    })?;
    let mut used = ctr.tables_in_use().await?;
    for ip in ips {
        let table = policy::free_table(&used, FIRST_TABLE);
        used.insert(table);
        let addr = ip.address;
        ctr.rule_add_from(addr.ip(), table).await?;
        let static_gw = if addr.is_ipv4() {
            gateways.v4
        } else {
            gateways.v6
        };
        if let Some(gw) = static_gw.or(ip.gateway) {
            let any = if addr.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
            let route = RouteSpec {
                dst: any.parse().expect("a valid prefix"),
                gateway: Some(gw),
                oif: Some(link.index),
                scope: 0,
                priority: None,
            };
            ctr.route_replace_in_table(&route, table).await?;
        }
        let inside = |a: Option<IpAddr>| a.is_some_and(|a| addr.contains(a));
        ctr.routes_copy_to_table(link.index, table, |src, gw| {
            inside(src) || inside(gw) || (src.is_none() && gw.is_none())
        })
        .await?;
    }
    if conf.add_source_hints {
        for ip in ips {
            let a = ip.address;
            let subnet = IpNetwork::new(a.network(), a.prefix()).expect("the same prefix");
            ctr.route_replace_with_source(link.index, subnet, a.ip())
                .await?;
        }
        // Only the subnet (link-scope) routes stay in the main table.
        ctr.routes_del_from_main(link.index, |scope| scope != 253)
            .await?;
    } else {
        ctr.routes_del_from_main(link.index, |_| true).await?;
    }
    Ok(())
}

/// DEL: the rules from the interface's addresses (to `table` when given) and, for
/// tables sbr chose, the table's routes through the interface (the reference leaves
/// those until the interface goes). Nothing to do when the interface is gone.
async fn tidy(ctr: &Netlink, args: &CmdArgs, table: Option<u32>) -> Result<(), CniError> {
    let Some(link) = ctr.link_get(&args.ifname).await? else {
        return Ok(());
    };
    let addrs: Vec<IpAddr> = ctr
        .addr_list(Some(link.index))
        .await?
        .into_iter()
        .map(|(_, a)| a.ip())
        .collect();
    let mut failures = Vec::new();
    for rule in ctr.rule_list().await? {
        let ours = rule
            .src
            .is_some_and(|s| addrs.iter().any(|a| policy::source_of(*a) == s));
        if !ours || table.is_some_and(|t| t != rule.table) {
            continue;
        }
        if let Err(e) = ctr.rule_del(&rule).await {
            failures.push(CniError::from(e));
        }
        if table.is_none() && rule.table != policy::MAIN_TABLE {
            if let Err(e) = ctr.table_flush_link(rule.table, link.index).await {
                failures.push(CniError::from(e));
            }
        }
    }
    CniError::join(failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateways_one_per_family_named_when_wrong() {
        let conf = |g: serde_json::Value| SbrConf {
            name: "n".into(),
            table: None,
            gateways: serde_json::from_value(g).unwrap(),
            add_source_hints: false,
        };
        let g = conf(serde_json::json!(["10.0.0.1", "fd00::1"]))
            .gateways()
            .unwrap();
        assert_eq!(g.v4.unwrap().to_string(), "10.0.0.1");
        assert_eq!(g.v6.unwrap().to_string(), "fd00::1");
        for bad in [
            serde_json::json!(["10.0.0.1", "10.0.0.2"]),
            serde_json::json!(["nope"]),
            serde_json::json!(["10.0.0.1", "fd00::1", "10.0.0.3"]),
        ] {
            let e = conf(bad.clone()).gateways().unwrap_err();
            assert!(
                e.code == ErrorCode::INVALID_NETWORK_CONFIG && e.msg.starts_with("gateways:"),
                "{bad}: {}",
                e.msg
            );
        }
    }
}
