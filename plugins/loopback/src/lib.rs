//! `loopback`: brings `lo` up in the container namespace ("none" network mode).
//!
//! ADD answers the reference plugin's result (the interface named `CNI_IFNAME` with an
//! all-zero MAC in the sandbox, and the addresses the kernel put on `lo`), or passes a
//! chained `prevResult` through untouched. DEL brings `lo` down and succeeds when the
//! namespace is already gone. CHECK verifies `lo` is up and holds the addresses of the
//! recorded result.

use cni::skel::{CmdArgs, Plugin};
use cni::{CniError, CniResult, ErrorCode, Interface, IpConfig};
use ipnetwork::IpNetwork;
use netkit::{Netlink, LOOPBACK_IFINDEX};

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Loopback;

const LO: &str = "lo";

impl Plugin for Loopback {
    fn about(&self) -> &'static str {
        concat!("podnet loopback plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let ns = netkit::attach::open_netns(args)?;
        // `lo` is always LOOPBACK_IFINDEX: no lookup round trip on the hot path.
        let addrs = netkit::block_on(async {
            let nl = Netlink::open_in(&ns)?;
            nl.link_set_up(LOOPBACK_IFINDEX).await?;
            nl.addr_list(Some(LOOPBACK_IFINDEX)).await
        })?;
        if let Some(prev) = &args.prev_result {
            return Ok(prev.clone());
        }
        Ok(result(args, addrs.into_iter().map(|(_, a)| a)))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let Some(ns) = netkit::attach::open_netns_if_present(args)? else {
            return Ok(());
        };
        netkit::block_on(async {
            match Netlink::open_in(&ns)?.link_set_down(LOOPBACK_IFINDEX).await {
                Err(e) if e.is_not_found() => Ok(()),
                other => other,
            }
        })
        .map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let ns = netkit::attach::open_netns(args)?;
        let (lo, addrs) = netkit::block_on(async {
            let nl = Netlink::open_in(&ns)?;
            let lo = nl
                .link_by_index(LOOPBACK_IFINDEX)
                .await?
                .filter(|l| l.name == LO);
            let lo = lo.ok_or_else(|| netkit::Error::LinkNotFound(LO.into()))?;
            let addrs = nl.addr_list(Some(lo.index)).await?;
            Ok::<_, netkit::Error>((lo, addrs))
        })?;
        if !lo.up {
            return Err(check_failed("lo is down"));
        }
        let Some(prev) = &args.prev_result else {
            return Ok(());
        };
        for want in expected_addresses(prev, &args.ifname) {
            if !addrs.iter().any(|(_, have)| *have == want) {
                return Err(check_failed(&format!(
                    "lo lacks address {want} of the recorded result"
                )));
            }
        }
        Ok(())
    }
}

fn result(args: &CmdArgs, addrs: impl Iterator<Item = IpNetwork>) -> CniResult {
    let mut ips: Vec<IpConfig> = addrs
        .map(|address| IpConfig {
            interface: Some(0),
            address,
            gateway: None,
        })
        .collect();
    // IPv4 first, as the reference answers.
    ips.sort_by_key(|ip| ip.address.is_ipv6());
    CniResult {
        interfaces: vec![Interface {
            name: args.ifname.clone(),
            mac: Some("00:00:00:00:00:00".into()),
            sandbox: args.netns.as_ref().map(|p| p.display().to_string()),
            ..Default::default()
        }],
        ips,
        ..Default::default()
    }
}

/// The addresses a recorded result puts on the loopback interface `ifname`.
fn expected_addresses(prev: &CniResult, ifname: &str) -> Vec<IpNetwork> {
    prev.ips
        .iter()
        .filter(|ip| {
            ip.interface
                .and_then(|i| prev.interfaces.get(i))
                .is_some_and(|iface| {
                    iface.name == ifname && iface.mac.as_deref() == Some("00:00:00:00:00:00")
                })
        })
        .map(|ip| ip.address)
        .collect()
}

fn check_failed(msg: &str) -> CniError {
    CniError::new(ErrorCode::CHECK_FAILED, msg.to_owned())
}
