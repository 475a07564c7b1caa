//! The `host-local` plugin: addresses from range sets, leases in a locked directory.
//!
//! ADD: parse → open the store (lock) → per range set: the address the attachment
//! already holds (an ADD retry), else the one requested, else the next free one → result.
//! Addresses reserved by a failing ADD are released before the error is returned.

use std::net::IpAddr;

use cni::skel::{CmdArgs, GcArgs, Plugin, StatusArgs};
use cni::{CniArgs, CniError, CniResult, ErrorCode, IpConfig};
use ipnetwork::IpNetwork;

use crate::config::HostLocalConf;
use crate::range::RangeSet;
use crate::store::Store;

#[derive(Debug, Clone, Copy, Default)]
pub struct HostLocal;

impl Plugin for HostLocal {
    fn about(&self) -> &'static str {
        concat!("podnet host-local IPAM plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = HostLocalConf::parse(&args.stdin, &args.args, args.version)?;
        let dns = match &conf.resolv_conf {
            Some(path) => crate::resolv::parse_file(path)?,
            None => Default::default(),
        };
        let mut store = Store::open(&conf.data_dir, &conf.network)?;
        // Under the lock: a caller killed before this point may already have sent its
        // DEL, so a lease written now would never be released.
        if !cni::runtime::exec::caller_alive() {
            return Err(CniError::new(
                ErrorCode::TRY_AGAIN_LATER,
                "the calling plugin exited before an address was reserved; nothing was reserved",
            ));
        }
        let mut reserved = Vec::new();
        let ips = allocate_all(&conf, &mut store, args, &mut reserved);
        let ips = match ips {
            Ok(ips) => ips,
            Err(e) => {
                undo(&mut store, args, &reserved);
                return Err(e);
            }
        };
        Ok(CniResult {
            ips,
            routes: conf.routes,
            dns,
            ..Default::default()
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = HostLocalConf::parse(&args.stdin, &CniArgs::default(), args.version)?;
        let mut store = Store::open(&conf.data_dir, &conf.network)?;
        store.release(&args.container_id, &args.ifname)?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = HostLocalConf::parse(&args.stdin, &CniArgs::default(), args.version)?;
        let store = Store::open(&conf.data_dir, &conf.network)?;
        let held = store.leases_of(&args.container_id, &args.ifname)?;
        if held.is_empty() {
            return Err(check_failed(format!(
                "no address is leased to container {:?} interface {:?} on network {:?}",
                args.container_id, args.ifname, conf.network
            )));
        }
        let recorded = args
            .prev_result
            .iter()
            .flat_map(|r| r.ips.iter())
            .map(|ip| ip.address.ip());
        for ip in recorded.filter(|ip| conf.range_sets.iter().any(|s| s.range_for(*ip).is_some())) {
            if !held.contains(&ip) {
                return Err(check_failed(format!(
                    "address {ip} of the recorded result is not leased to container {:?}",
                    args.container_id
                )));
            }
        }
        Ok(())
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = HostLocalConf::parse(&args.stdin, &CniArgs::default(), args.version)?;
        let store = Store::open(&conf.data_dir, &conf.network)?;
        for (n, set) in conf.range_sets.iter().enumerate() {
            if !set
                .candidates(store.last_reserved(n))
                .any(|(ip, _)| !store.is_taken(ip))
            {
                return Err(CniError::new(
                    ErrorCode::PLUGIN_NOT_AVAILABLE,
                    format!(
                        "range set {n} ({}) of network {:?} is exhausted",
                        describe(set),
                        conf.network
                    ),
                ));
            }
        }
        Ok(())
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = HostLocalConf::parse(&args.stdin, &CniArgs::default(), args.version)?;
        let mut store = Store::open(&conf.data_dir, &conf.network)?;
        let valid = &args.valid_attachments;
        store.retain(|h| valid.iter().any(|a| h.matches(&a.container_id, &a.ifname)))?;
        Ok(())
    }
}

/// One address per range set, recording every fresh reservation in `reserved`.
fn allocate_all(
    conf: &HostLocalConf,
    store: &mut Store,
    args: &CmdArgs,
    reserved: &mut Vec<IpAddr>,
) -> Result<Vec<IpConfig>, CniError> {
    let held = store.leases_of(&args.container_id, &args.ifname)?;
    let mut requested = conf.requested.clone();
    let mut ips = Vec::new();
    for (n, set) in conf.range_sets.iter().enumerate() {
        let wanted = requested
            .iter()
            .position(|ip| set.range_for(*ip).is_some())
            .map(|i| requested.remove(i));
        let holding = held.iter().copied().find(|ip| set.range_for(*ip).is_some());
        let ip = match (wanted, holding) {
            (Some(w), Some(h)) if w != h => {
                return Err(CniError::new(
                    ErrorCode::ADDRESS_NOT_AVAILABLE,
                    format!("container {:?} interface {:?} already holds {h} in range set {n}; requested {w}", args.container_id, args.ifname),
                ))
            }
            (_, Some(h)) => h,
            (Some(w), None) => reserve_requested(store, set, n, w, args)?,
            (None, None) => reserve_next(store, set, n, args, &conf.network)?,
        };
        if holding.is_none() {
            reserved.push(ip);
        }
        let range = set.range_for(ip).expect("chosen from this set");
        let address = IpNetwork::new(ip, range.subnet.prefix()).expect("the subnet's prefix fits");
        ips.push(IpConfig {
            interface: None,
            address,
            gateway: Some(range.gateway),
        });
    }
    if !requested.is_empty() {
        let list: Vec<String> = requested.iter().map(IpAddr::to_string).collect();
        return Err(CniError::new(
            ErrorCode::ADDRESS_NOT_AVAILABLE,
            format!(
                "requested addresses in no range set of network {:?}: {}",
                conf.network,
                list.join(", ")
            ),
        ));
    }
    Ok(ips)
}

fn reserve_requested(
    store: &mut Store,
    set: &RangeSet,
    n: usize,
    ip: IpAddr,
    args: &CmdArgs,
) -> Result<IpAddr, CniError> {
    let range = set.range_for(ip).expect("chosen because the set has it");
    if ip == range.gateway {
        return Err(CniError::new(
            ErrorCode::ADDRESS_NOT_AVAILABLE,
            format!("requested address {ip} is the gateway of {}", range.subnet),
        ));
    }
    if store.reserve(ip, &args.container_id, &args.ifname, n)? {
        return Ok(ip);
    }
    let holder = store.holder(ip)?;
    let who = holder.map_or("an unreadable lease".to_owned(), |h| match h.ifname {
        Some(i) => format!("container {:?} interface {i:?}", h.id),
        None => format!("container {:?}", h.id),
    });
    Err(CniError::new(
        ErrorCode::ADDRESS_IN_USE,
        format!("requested address {ip} is already in use by {who}"),
    )
    .with_details(store.dir().join(ip.to_string()).display().to_string()))
}

fn reserve_next(
    store: &mut Store,
    set: &RangeSet,
    n: usize,
    args: &CmdArgs,
    network: &str,
) -> Result<IpAddr, CniError> {
    for (ip, _) in set.candidates(store.last_reserved(n)) {
        if store.reserve(ip, &args.container_id, &args.ifname, n)? {
            return Ok(ip);
        }
    }
    Err(CniError::new(
        ErrorCode::RANGE_EXHAUSTED,
        format!(
            "no free address in range set {n} ({}) of network {network:?}",
            describe(set)
        ),
    ))
}

/// Releases what a failing ADD reserved (best effort: the error being returned matters more).
fn undo(store: &mut Store, args: &CmdArgs, reserved: &[IpAddr]) {
    if !reserved.is_empty() {
        let _ = store.release_only(&args.container_id, &args.ifname, reserved);
    }
}

fn describe(set: &RangeSet) -> String {
    set.0
        .iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_failed(msg: String) -> CniError {
    CniError::new(ErrorCode::CHECK_FAILED, msg)
}
