//! The `bridge` plugin: containers on a Linux bridge, one veth pair each.
//!
//! ADD reads like the spec: parse → ensure the bridge → IPAM (exec, `ipam.type`) →
//! create the veth (the container end born inside the container's namespace) → wire the
//! host end (bridge port flags, VLANs) → configure the container end through a netlink
//! socket opened in its namespace → gateway addresses on the bridge → masquerade →
//! result. A failure after IPAM undoes the veth, the masquerade elements and the lease.

#![forbid(unsafe_code)]

pub mod config;

use std::net::IpAddr;

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, ErrorCode, Interface, Route};
use ipnetwork::IpNetwork;
use netkit::attach::HostEnd;
use netkit::{
    attach, nft, sysctl, BridgeOptions, BridgePortOptions, BridgeVlan, Link, NetNs, Netlink,
    VethOptions,
};

use config::BridgeConf;

#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

/// Everything one ADD works with.
struct Ctx<'a> {
    args: &'a CmdArgs,
    conf: &'a BridgeConf,
    ns: &'a NetNs,
    host: Netlink,
    ctr: Netlink,
    /// Set when this ADD created the bridge, so that a failed ADD removes it again.
    created_bridge: std::cell::Cell<bool>,
}

impl Plugin for Bridge {
    fn about(&self) -> &'static str {
        concat!("podnet bridge plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = BridgeConf::parse(args)?;
        let mac = conf.mac(args)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let cx = Ctx {
                args,
                conf: &conf,
                ns: &ns,
                host: Netlink::open_current()?,
                ctr: Netlink::open_in(&ns)?,
                created_bridge: std::cell::Cell::new(false),
            };
            attach::ensure_ifname_free(&cx.ctr, args, &ns).await?;
            // IPAM runs while the bridge and the veth are made.
            let pending = match &conf.ipam {
                Some(i) => Some(delegate::start(&i.plugin_type, Command::Add, args)?),
                None => None,
            };
            match build(&cx, mac, pending).await {
                Ok(result) => Ok(result),
                Err(e) => {
                    undo(&cx).await;
                    Err(e)
                }
            }
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(args)?;
        let mut failures = Vec::new();
        // IPAM's DEL runs while the link (the slow part: the kernel unregisters it) goes.
        let pending = conf
            .ipam
            .as_ref()
            .map(|i| delegate::start(&i.plugin_type, Command::Del, args));
        failures.extend(attach::remove_link_and_elements(args, "bridge"));
        if let Some(p) = pending {
            failures.extend(p.and_then(delegate::Pending::done).err());
        }
        CniError::join(failures)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = BridgeConf::parse(args)?;
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        if let Some(ipam) = &conf.ipam {
            delegate::check(&ipam.plugin_type, args)?;
        }
        let ns = attach::open_netns(args)?;
        netkit::block_on(check_kernel(args, &conf, &ns, prev))?;
        if conf.ip_masq {
            nft::check("bridge", &args.container_id, &args.ifname)?;
        }
        Ok(())
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf: BridgeConf = cni::config::decode("network config", &args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Status, &args.path, &args.stdin)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf: BridgeConf = cni::config::decode("network config", &args.stdin)?;
        let result = delegate::forward(conf.ipam.as_ref(), Command::Gc, &args.path, &args.stdin);
        if conf.ip_masq || conf.macspoofchk {
            nft::retain_attachments(&conf.name, &args.valid_attachments)?;
        }
        result
    }
}

/// The bridge, created (MAC pinned, VLAN filtering as needed) when missing, and up.
async fn ensure_bridge(cx: &Ctx<'_>) -> Result<Link, CniError> {
    let c = cx.conf;
    let filtering = c.vlan_filtering()?;
    // One lookup when the bridge exists; a second only after creating it.
    let (br, created) = match cx.host.link_get(&c.bridge).await? {
        Some(l) => (l, false),
        None => {
            let vrf = match c.vrf.as_deref() {
                Some(v) => Some(vrf_index(cx, v).await?),
                None => None,
            };
            let opts = BridgeOptions {
                mtu: c.mtu(),
                vlan_filtering: filtering,
                mac: Some(attach::random_mac()),
            };
            match cx.host.link_add_bridge(&c.bridge, &opts).await {
                Err(e) if filtering && is_unsupported(&e) => return Err(no_vlan_filtering(c)),
                Err(e) if !e.is_exists() => return Err(e.into()), // EEXIST: a parallel ADD made it
                _ => {}
            }
            let br = cx.host.link_require(&c.bridge).await?;
            cx.created_bridge.set(true);
            if vrf.is_some() && br.master != vrf {
                cx.host.link_set_master(br.index, vrf).await?;
            }
            (br, true)
        }
    };
    if br.kind.as_deref() != Some("bridge") {
        return Err(CniError::invalid_config(format!(
            "bridge: {:?} exists and is not a bridge (it is {:?})",
            c.bridge, br.kind
        )));
    }
    if !created && filtering {
        cx.host
            .bridge_set_vlan_filtering(br.index, true)
            .await
            .map_err(|e| match is_unsupported(&e) {
                true => no_vlan_filtering(c),
                false => e.into(),
            })?;
    }
    if !br.up {
        cx.host.link_set_up(br.index).await?;
    }
    if c.promisc_mode && !br.promisc {
        cx.host.link_set_promisc(br.index, true).await?;
    }
    Ok(br)
}

/// The index of VRF `name`, which must exist and be a `vrf` link (code 7 naming `vrf`
/// otherwise: this machine kind's kernel has no vrf driver, so no VRF can exist).
async fn vrf_index(cx: &Ctx<'_>, name: &str) -> Result<u32, CniError> {
    match cx.host.link_get(name).await? {
        Some(l) if l.kind.as_deref() == Some("vrf") => Ok(l.index),
        Some(l) => Err(CniError::invalid_config(format!(
            "vrf: {name:?} is not a VRF (it is {:?})",
            l.kind
        ))),
        None => Err(CniError::invalid_config(format!(
            "vrf: no VRF named {name:?} (make it first: ip link add {name} type vrf table N)"
        ))),
    }
}

fn is_unsupported(e: &netkit::Error) -> bool {
    e.errno() == Some(netkit::Errno::EOPNOTSUPP)
}

/// `vlan`/`vlanTrunk` on a kernel built without CONFIG_BRIDGE_VLAN_FILTERING.
fn no_vlan_filtering(c: &BridgeConf) -> CniError {
    let key = if c.vlan != 0 {
        format!("vlan: {}", c.vlan)
    } else {
        "vlanTrunk".to_owned()
    };
    CniError::new(
        ErrorCode::UNSUPPORTED_FIELD,
        format!("{key}: this kernel does not support bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)"),
    )
}

/// Links, then the IPAM result, then configuration; on error the caller undoes it.
async fn build(
    cx: &Ctx<'_>,
    mac: Option<[u8; 6]>,
    pending: Option<delegate::Pending>,
) -> Result<CniResult, CniError> {
    let links = make_links(cx, mac).await;
    // Collected even when the links failed, so that undo never races a running IPAM.
    let ipam = match pending {
        Some(p) => p.result(),
        None => Ok(CniResult::default()),
    };
    let (bridge, hv, c) = links?;
    finish(cx, &bridge, &hv, &c, ipam?).await
}

/// The bridge and the veth pair, the host end a port of the bridge.
async fn make_links(cx: &Ctx<'_>, mac: Option<[u8; 6]>) -> Result<(Link, HostEnd, Link), CniError> {
    let bridge = ensure_bridge(cx).await?;
    let opts = VethOptions {
        mtu: cx.conf.mtu(),
        peer_mac: mac,
        master: Some(bridge.index),
        ..Default::default()
    };
    let (hv, c) = attach::add_veth(&cx.host, &cx.ctr, cx.args, cx.ns, opts).await?;
    configure_port(cx, &hv).await?;
    Ok((bridge, hv, c))
}

/// The container end, gateway addresses, rules, and the result.
async fn finish(
    cx: &Ctx<'_>,
    bridge: &Link,
    hv: &HostEnd,
    c: &Link,
    ipam: CniResult,
) -> Result<CniResult, CniError> {
    let (args, conf) = (cx.args, cx.conf);
    let mut result = ipam;
    fill_gateways(conf, &mut result);
    configure_container(cx, c, &result).await?;
    if conf.is_gateway {
        set_gateway_addresses(cx, bridge, &result).await?;
    }
    // A container restarted with the same address has a new MAC: the host's neighbour
    // entry for the old one would blackhole its traffic until it times out (seconds).
    for ip in &result.ips {
        cx.host.neigh_del(bridge.index, ip.address.ip()).await?;
    }
    apply_rules(cx, &hv.name, &c.mac, &result)?;
    announce(cx, hv, c, &result).await?;
    // The MAC read when the bridge was ensured: pinned when podnet made the bridge.
    let bridge_mac = bridge.mac.clone();
    result.interfaces = vec![
        Interface {
            name: conf.bridge.clone(),
            mac: Some(bridge_mac),
            ..Default::default()
        },
        Interface {
            name: hv.name.clone(),
            mac: Some(hv.mac.clone()),
            ..Default::default()
        },
        Interface {
            name: args.ifname.clone(),
            mac: Some(c.mac.clone()),
            sandbox: Some(cx.ns.path().display().to_string()),
            ..Default::default()
        },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(2);
    }
    if !conf.dns.is_empty() {
        result.dns = conf.dns.clone();
    }
    Ok(result)
}

/// Masquerade and the MAC spoof check: one nft transaction.
fn apply_rules(cx: &Ctx<'_>, port: &str, mac: &str, result: &CniResult) -> Result<(), CniError> {
    let (args, conf) = (cx.args, cx.conf);
    if !conf.ip_masq && !conf.macspoofchk {
        return Ok(());
    }
    let mut rec = nft::Record::new("bridge", &conf.name, &args.container_id, &args.ifname);
    if conf.ip_masq {
        let addrs: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
        rec.entries.extend(nft::masq_entries(&addrs));
    }
    if conf.macspoofchk {
        rec.entries.extend(nft::spoofchk_entries(port, mac));
    }
    nft::commit(&rec)?;
    Ok(())
}

/// The port's flags and VLANs. The host end is up and enslaved already; no traffic
/// passes before the container end comes up, after this.
async fn configure_port(cx: &Ctx<'_>, hv: &HostEnd) -> Result<(), CniError> {
    let conf = cx.conf;
    if conf.hairpin_mode || conf.port_isolation {
        let port = BridgePortOptions {
            hairpin: conf.hairpin_mode,
            isolated: conf.port_isolation,
        };
        cx.host.bridge_port_set(hv.index, &port).await?;
    }
    let mut vlans: Vec<BridgeVlan> = conf
        .trunk()?
        .into_iter()
        .map(|(first, last)| BridgeVlan {
            first,
            last,
            pvid_untagged: false,
        })
        .collect();
    if conf.vlan != 0 {
        vlans.push(BridgeVlan {
            first: conf.vlan,
            last: conf.vlan,
            pvid_untagged: true,
        });
    }
    if !vlans.is_empty() {
        cx.host.bridge_vlan_add(hv.index, &vlans).await?;
        if !conf.preserve_default_vlan && conf.vlan != 1 {
            cx.host.bridge_vlan_del(hv.index, 1).await?;
        }
    }
    Ok(())
}

/// As the reference: with `isGateway`, an address without a gateway gets its subnet's
/// first address; with `isDefaultGateway`, a default route via it per family.
fn fill_gateways(conf: &BridgeConf, result: &mut CniResult) {
    if !conf.is_gateway {
        return;
    }
    for ip in &mut result.ips {
        if ip.gateway.is_none() {
            ip.gateway = nth(ip.address.network(), 1);
        }
    }
    if conf.is_default_gateway {
        for v4 in [true, false] {
            let Some(gw) = result
                .ips
                .iter()
                .filter(|i| i.address.is_ipv4() == v4)
                .find_map(|i| i.gateway)
            else {
                continue;
            };
            let dst: IpNetwork = if v4 {
                "0.0.0.0/0".parse().expect("valid")
            } else {
                "::/0".parse().expect("valid")
            };
            if !result.routes.iter().any(|r| r.dst == dst) {
                result.routes.push(Route::new(dst, Some(gw)));
            }
        }
    }
}

fn nth(base: IpAddr, n: u128) -> Option<IpAddr> {
    match base {
        IpAddr::V4(v4) => Some(IpAddr::V4((u32::from(v4).checked_add(n as u32)?).into())),
        IpAddr::V6(v6) => Some(IpAddr::V6((u128::from(v6).checked_add(n)?).into())),
    }
}

/// The other containers of the bridge may cache the address with an old MAC (a
/// container back with its static address after a restart): a gratuitous ARP tells
/// them. The one `arp_notify` makes when the link comes up is lost, since the bridge
/// forwards through the new port only once the kernel's link watcher has seen its
/// carrier, a moment later; so wait for that, then set the MAC to itself, which makes
/// the kernel announce it again. Without this, such a peer stalls until its neighbour
/// entry times out (~60 s here).
async fn announce(
    cx: &Ctx<'_>,
    hv: &HostEnd,
    c: &Link,
    result: &CniResult,
) -> Result<(), CniError> {
    let v4 = result.ips.iter().any(|i| i.address.is_ipv4());
    if !v4 || cx.conf.disable_container_interface || c.mac.is_empty() {
        return Ok(());
    }
    let forwarding = cx
        .host
        .link_wait_running(hv.index, std::time::Duration::from_secs(1))
        .await?;
    if forwarding {
        cx.ctr
            .link_set_mac(c.index, netkit::parse_mac(&c.mac)?)
            .await?;
    }
    Ok(())
}

/// The container end: DAD, ARP notification, addresses, up, routes.
async fn configure_container(cx: &Ctx<'_>, c: &Link, result: &CniResult) -> Result<(), CniError> {
    let (args, conf) = (cx.args, cx.conf);
    if !conf.enabledad && result.ips.iter().any(|i| i.address.is_ipv6()) {
        let key = format!("net/ipv6/conf/{}/accept_dad", args.ifname);
        sysctl::set(cx.ns, &key, "0")?;
    }
    if result.ips.iter().any(|i| i.address.is_ipv4()) {
        // A gratuitous ARP when the link comes up: a container restarted with the same
        // address (and a new MAC) is reachable at once, not after the host's neighbour
        // entry for the old MAC times out (as the reference does).
        cx.ctr.link_set_arp_notify(c.index).await?;
    }
    attach::add_addresses(&cx.ctr, c.index, result).await?;
    if conf.disable_container_interface {
        return Ok(()); // left down: routes through it cannot be added
    }
    cx.ctr.link_set_up(c.index).await?;
    attach::add_routes(&cx.ctr, c.index, result).await?;
    Ok(())
}

/// Gateway addresses on the bridge (one per subnet), and forwarding on.
///
/// Every ADD after a network's first finds the gateway there: the exclusive add answers
/// `EEXIST` and nothing is read. Only an ADD that did add it reads the bridge's
/// addresses, for another one in the same subnet, which it replaces (`forceAddress`) or
/// refuses, leaving the bridge as it was, as the reference does.
async fn set_gateway_addresses(
    cx: &Ctx<'_>,
    bridge: &Link,
    result: &CniResult,
) -> Result<(), CniError> {
    for ip in &result.ips {
        let Some(gw) = ip.gateway else { continue };
        let want =
            IpNetwork::new(gw, ip.address.prefix()).expect("the address's prefix fits its gateway");
        match cx.host.addr_add_exclusive(bridge.index, want).await {
            Err(e) if e.is_exists() => continue,
            Err(e) => return Err(e.into()),
            Ok(()) => {}
        }
        if let Some(old) = other_address_in_subnet(cx, bridge, want).await? {
            // Taken off again before the old one goes: deleting a primary IPv4 address
            // also deletes the secondaries of its subnet, ours among them.
            cx.host.addr_del(bridge.index, want).await?;
            if !cx.conf.force_address {
                return Err(CniError::invalid_config(format!(
                    "bridge {:?} already has address {old}, different from {want} (set forceAddress to replace it)",
                    cx.conf.bridge
                )));
            }
            cx.host.addr_del(bridge.index, old).await?;
            cx.host.addr_add(bridge.index, want).await?;
        }
        attach::enable_forwarding(want.is_ipv4())?;
    }
    Ok(())
}

/// An address of the bridge other than `want` in `want`'s subnet (not loopback or
/// link-local).
async fn other_address_in_subnet(
    cx: &Ctx<'_>,
    bridge: &Link,
    want: IpNetwork,
) -> Result<Option<IpNetwork>, CniError> {
    let existing = cx.host.addr_list(Some(bridge.index)).await?;
    Ok(existing.into_iter().map(|(_, a)| a).find(|a| {
        *a != want
            && a.is_ipv4() == want.is_ipv4()
            && a.contains(want.ip())
            && !a.ip().is_loopback()
            && !is_link_local(a.ip())
    }))
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

/// Best-effort removal of what a failed ADD made after IPAM.
async fn undo(cx: &Ctx<'_>) {
    if let Ok(Some(c)) = cx.ctr.link_get(&cx.args.ifname).await {
        let _ = cx.ctr.link_del(c.index).await;
    }
    let _ = nft::release("bridge", &cx.args.container_id, &cx.args.ifname);
    if let Some(ipam) = &cx.conf.ipam {
        let _ = delegate::del(&ipam.plugin_type, cx.args);
    }
    // A bridge this ADD created goes too, unless a parallel ADD has a port on it by now.
    if cx.created_bridge.get() {
        if let Ok(Some(br)) = cx.host.link_get(&cx.conf.bridge).await {
            let ports = cx.host.link_list().await.unwrap_or_default();
            if !ports.iter().any(|l| l.master == Some(br.index)) {
                let _ = cx.host.link_del(br.index).await;
            }
        }
    }
}

async fn check_kernel(
    args: &CmdArgs,
    conf: &BridgeConf,
    ns: &NetNs,
    prev: &CniResult,
) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let host = Netlink::open_current()?;
    let ctr = Netlink::open_in(ns)?;
    let br = host
        .link_get(&conf.bridge)
        .await?
        .filter(|b| b.kind.as_deref() == Some("bridge"));
    let br = br.ok_or_else(|| failed(format!("bridge {:?} is missing", conf.bridge)))?;
    let c = ctr.link_get(&args.ifname).await?.ok_or_else(|| {
        failed(format!(
            "interface {:?} is missing in the container",
            args.ifname
        ))
    })?;
    if c.kind.as_deref() != Some("veth") {
        return Err(failed(format!("interface {:?} is not a veth", args.ifname)));
    }
    let peer = match c.peer {
        Some(p) => host.link_by_index(p).await?,
        None => None,
    };
    if peer.as_ref().and_then(|p| p.master) != Some(br.index) {
        return Err(failed(format!(
            "the host end of {:?} is not a port of bridge {:?}",
            args.ifname, conf.bridge
        )));
    }
    let ours = prev.ips.iter().filter(|ip| {
        ip.interface
            .and_then(|i| prev.interfaces.get(i))
            .is_some_and(|i| i.name == args.ifname && i.sandbox.is_some())
    });
    attach::check_addresses(&ctr, c.index, &args.ifname, ours).await?;
    if !conf.disable_container_interface {
        attach::check_routes(&ctr, &prev.routes).await?;
    }
    Ok(())
}
