//! What every plugin that wires a container needs from the toolkit, with CNI's error
//! codes: the container's namespace, its interface removed on DEL, host-side names.

use cni::skel::CmdArgs;
use cni::{CniError, ErrorCode};

use crate::{NetNs, Netlink};

/// `CNI_NETNS`, opened; a namespace that does not exist is an unknown container (3).
pub fn open_netns(args: &CmdArgs) -> Result<NetNs, CniError> {
    let path = args
        .netns
        .as_ref()
        .ok_or_else(|| CniError::invalid_env("required env variables [CNI_NETNS] missing"))?;
    NetNs::open(path).map_err(|e| {
        let e = CniError::from(e);
        CniError {
            msg: format!("CNI_NETNS {}: {}", path.display(), e.msg),
            ..e
        }
    })
}

/// `CNI_NETNS` for DEL: `None` when none was given or it is gone (nothing to undo there).
pub fn open_netns_if_present(args: &CmdArgs) -> Result<Option<NetNs>, CniError> {
    let Some(path) = &args.netns else {
        return Ok(None);
    };
    match NetNs::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `CNI_IFNAME` in the container (a veth takes its host end with it) and
/// returns once the kernel has unregistered both ends, without waiting in its memory
/// clean-up ([`crate::unlink`]). No netns given, a namespace that is gone, or an
/// interface that is gone: nothing to do.
pub fn remove_container_link(args: &CmdArgs) -> Result<(), CniError> {
    let Some(ns) = open_netns_if_present(args)? else {
        return Ok(());
    };
    let found = crate::block_on(async {
        let ctr = Netlink::open_in(&ns)?;
        type Found = crate::Result<Option<(u32, Option<u32>)>>;
        let Some(c) = ctr.link_get(&args.ifname).await? else {
            return Found::Ok(None);
        };
        // The veth's host end, when it lives in this (the plugin's) namespace: its index
        // there points back at the container end.
        let peer = match (c.kind.as_deref(), c.peer) {
            (Some("veth"), Some(p)) => Netlink::open_current()?
                .link_by_index(p)
                .await?
                .filter(|h| h.kind.as_deref() == Some("veth") && h.peer == Some(c.index))
                .map(|h| h.index),
            _ => None,
        };
        Found::Ok(Some((c.index, peer)))
    })?;
    match found {
        Some((index, peer)) => crate::unlink::link_del_unwaited(&ns, index, peer),
        None => Ok(()),
    }
    .map_err(CniError::from)
}

/// DEL's kernel work for a container link that has nftables elements (`owner`'s record):
/// deleting the link (the kernel waits for RCU grace periods, ~20 ms) and releasing the
/// elements (another grace period) are independent, so they run at once on two threads
/// and the waits overlap. Every failure is returned.
pub fn remove_link_and_elements(args: &CmdArgs, owner: &str) -> Vec<CniError> {
    std::thread::scope(|s| {
        let elements = s.spawn(|| crate::nft::release(owner, &args.container_id, &args.ifname));
        let link = remove_container_link(args);
        let elements = match elements.join() {
            Ok(r) => r.map(drop).map_err(CniError::from),
            Err(_) => Err(CniError::new(
                ErrorCode::IO_FAILURE,
                format!("releasing the nftables elements of {owner}: the thread panicked"),
            )),
        };
        link.err().into_iter().chain(elements.err()).collect()
    })
}

/// One end of a point-to-point link: `mine/32` (`/128`) on the link, the link up, and
/// a route to `peer/32` through it (`scope link`): what `netctl link` puts on each end.
pub async fn point_to_point(
    nl: &Netlink,
    index: u32,
    mine: std::net::IpAddr,
    peer: std::net::IpAddr,
) -> crate::Result<()> {
    nl.addr_add(index, crate::host_prefix(mine)).await?;
    nl.link_set_up(index).await?;
    nl.route_add(&crate::RouteSpec {
        dst: crate::host_prefix(peer),
        gateway: None,
        oif: Some(index),
        scope: 253,
        priority: None,
    })
    .await
}

/// The host end of a container's veth, as ADD reports it.
#[derive(Debug, Clone)]
pub struct HostEnd {
    pub index: u32,
    pub name: String,
    pub mac: String,
}

/// Creates the container's veth: the host end, with a fresh `vethXXXXXXXX` name and MAC,
/// in the plugin's namespace and up (and enslaved when `opts.master` says so) by the
/// creating request itself; the container end `CNI_IFNAME` born down in the container's
/// namespace. One request and one read-back of the container end, whose `IFLA_LINK` is
/// the host end's index. Choosing the host end's MAC also keeps it fixed: udev's
/// `MACAddressPolicy` rewrites only kernel-chosen (random) addresses.
pub async fn add_veth(
    host: &Netlink,
    ctr: &Netlink,
    args: &CmdArgs,
    ns: &NetNs,
    opts: crate::VethOptions,
) -> Result<(HostEnd, crate::Link), CniError> {
    let mac = random_mac();
    let name = veth_name();
    let opts = crate::VethOptions {
        mac: Some(mac),
        up: true,
        ..opts
    };
    host.link_add_veth(&name, &args.ifname, ns, &opts).await?;
    let c = ctr.link_require(&args.ifname).await?;
    let index = c.peer.ok_or_else(|| {
        CniError::new(
            ErrorCode::NETLINK_FAILURE,
            format!(
                "the new veth {:?} does not name its peer {name:?}",
                args.ifname
            ),
        )
    })?;
    let end = HostEnd {
        index,
        name,
        mac: crate::format_mac(&mac),
    };
    Ok((end, c))
}

/// `veth` and 8 hex digits, as the reference plugins name host ends.
pub fn veth_name() -> String {
    format!("veth{:08x}", crate::random_u64() as u32)
}

/// A random locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let b = crate::random_u64().to_be_bytes();
    [(b[0] & 0xfe) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

/// Turns forwarding on in the calling thread's (the host's) namespace for a family.
pub fn enable_forwarding(ipv4: bool) -> Result<(), CniError> {
    let key = if ipv4 {
        "net.ipv4.ip_forward"
    } else {
        "net.ipv6.conf.all.forwarding"
    };
    Ok(crate::sysctl::ensure_on_here(key)?)
}

/// The result's addresses on interface `index` (through `nl`, the container's socket).
pub async fn add_addresses(nl: &Netlink, index: u32, result: &cni::CniResult) -> crate::Result<()> {
    for ip in &result.ips {
        nl.addr_add(index, ip.address).await?;
    }
    Ok(())
}

/// The result's routes via interface `index`; a route without `gw` goes through the
/// gateway of the result's first address of its family.
pub async fn add_routes(nl: &Netlink, index: u32, result: &cni::CniResult) -> crate::Result<()> {
    for r in &result.routes {
        let gateway = r.gw.or_else(|| {
            result
                .ips
                .iter()
                .find(|i| i.address.is_ipv4() == r.dst.is_ipv4())
                .and_then(|i| i.gateway)
        });
        nl.route_add(&crate::RouteSpec {
            dst: r.dst,
            gateway,
            oif: Some(index),
            scope: r.scope.unwrap_or(0),
            priority: r.priority,
        })
        .await?;
    }
    Ok(())
}

/// ADD never touches an interface it did not make: `CNI_IFNAME` must be free in the
/// container (code 4, naming it).
pub async fn ensure_ifname_free(ctr: &Netlink, args: &CmdArgs, ns: &NetNs) -> Result<(), CniError> {
    if ctr.link_get(&args.ifname).await?.is_some() {
        return Err(CniError::invalid_env(format!(
            "CNI_IFNAME: interface {:?} already exists in {}",
            args.ifname,
            ns.path().display()
        )));
    }
    Ok(())
}

/// An interface that carries the result's addresses itself (macvlan and the other
/// links made on a parent): IPv6 enabled on it where the result has IPv6 addresses,
/// with optimistic DAD (RFC 4429: the address is usable at once and a duplicate on the
/// LAN is still detected, where the reference waits up to 5 s for DAD to settle) and
/// the addresses kept across down/up; gratuitous ARP and unsolicited NA when it comes
/// up; the addresses; up; the result's routes.
pub async fn configure_interface(
    ctr: &Netlink,
    ns: &NetNs,
    index: u32,
    ifname: &str,
    result: &cni::CniResult,
) -> Result<(), CniError> {
    if result.ips.iter().any(|i| i.address.is_ipv6()) {
        let conf = |k: &str| format!("net/ipv6/conf/{ifname}/{k}");
        crate::sysctl::set(ns, &conf("disable_ipv6"), "0")?;
        crate::sysctl::set(ns, &conf("keep_addr_on_down"), "1")?;
        crate::sysctl::set(ns, &conf("ndisc_notify"), "1")?;
        // Kernels built without CONFIG_IPV6_OPTIMISTIC_DAD lack the keys: DAD runs as usual.
        for k in ["optimistic_dad", "use_optimistic"] {
            let _ = crate::sysctl::set(ns, &conf(k), "1");
        }
    }
    if result.ips.iter().any(|i| i.address.is_ipv4()) {
        ctr.link_set_arp_notify(index).await?;
    }
    add_addresses(ctr, index, result).await?;
    ctr.link_set_up(index).await?;
    add_routes(ctr, index, result).await?;
    Ok(())
}

/// Deletes `CNI_IFNAME` in the container only when it is a link of `kind`: a DEL never
/// removes an interface another plugin made (the runtime sends DEL after an ADD that
/// was refused because the name was taken). No netns, a namespace or a link that is
/// gone: nothing to do.
pub fn remove_container_link_of_kind(args: &CmdArgs, kind: &str) -> Result<(), CniError> {
    let Some(ns) = open_netns_if_present(args)? else {
        return Ok(());
    };
    let index: crate::Result<Option<u32>> = crate::block_on(async {
        let ctr = Netlink::open_in(&ns)?;
        let link = ctr.link_get(&args.ifname).await?;
        Ok(link
            .filter(|l| l.kind.as_deref() == Some(kind))
            .map(|l| l.index))
    });
    match index? {
        Some(i) => crate::unlink::link_del_unwaited(&ns, i, None).map_err(CniError::from),
        None => Ok(()),
    }
}

/// CHECK's read-back of the addresses: each of `ips` must be on link `index` (code 120
/// naming the one missing).
pub async fn check_addresses<'a>(
    ctr: &Netlink,
    index: u32,
    ifname: &str,
    ips: impl IntoIterator<Item = &'a cni::IpConfig>,
) -> Result<(), CniError> {
    let have: Vec<ipnetwork::IpNetwork> = ctr
        .addr_list(Some(index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    match ips.into_iter().find(|ip| !have.contains(&ip.address)) {
        Some(ip) => Err(CniError::new(
            ErrorCode::CHECK_FAILED,
            format!("address {} is missing on {ifname:?}", ip.address),
        )),
        None => Ok(()),
    }
}

/// CHECK's read-back of the routes: a route to each destination of `routes` must be in
/// the container (code 120 naming the one missing).
pub async fn check_routes(ctr: &Netlink, routes: &[cni::Route]) -> Result<(), CniError> {
    let have = ctr.route_list().await?;
    match routes.iter().find(|r| !have.iter().any(|h| h.dst == r.dst)) {
        Some(r) => Err(CniError::new(
            ErrorCode::CHECK_FAILED,
            format!("route to {} is missing in the container", r.dst),
        )),
        None => Ok(()),
    }
}

/// The result of a plugin whose only interface is the container's (`c`, named
/// `CNI_IFNAME` in `ns`): that interface first, every address on it, the config's
/// `dns` when it has one.
pub fn container_result(
    mut result: cni::CniResult,
    ifname: &str,
    c: &crate::Link,
    ns: &NetNs,
    dns: &cni::Dns,
) -> cni::CniResult {
    result.interfaces = vec![cni::Interface {
        name: ifname.to_owned(),
        mac: Some(c.mac.clone()),
        sandbox: Some(ns.path().display().to_string()),
        ..Default::default()
    }];
    for ip in &mut result.ips {
        ip.interface = Some(0);
    }
    if !dns.is_empty() {
        result.dns = dns.clone();
    }
    result
}

/// The container's MAC as the reference plugins that take one pick it:
/// `runtimeConfig.mac` (the `mac` capability) over `CNI_ARGS MAC=` over the config's
/// `mac` key. An invalid one is refused naming where it came from (code 7).
pub fn chosen_mac(
    args: &CmdArgs,
    runtime: Option<&str>,
    conf: &str,
) -> Result<Option<[u8; 6]>, CniError> {
    let from_rt = runtime
        .filter(|m| !m.is_empty())
        .map(|m| ("runtimeConfig.mac", m));
    let from_env = args
        .args
        .get("MAC")
        .filter(|m| !m.is_empty())
        .map(|m| ("CNI_ARGS MAC", m));
    let from_conf = (!conf.is_empty()).then_some(("mac", conf));
    match from_rt.or(from_env).or(from_conf) {
        None => Ok(None),
        Some((key, m)) => crate::parse_mac(m)
            .map(Some)
            .map_err(|_| CniError::invalid_config(format!("{key}: invalid MAC address {m:?}"))),
    }
}

/// The end of ADD for a plugin whose link `c` (`CNI_IFNAME`) was made in the
/// container with an optional IPAM: with IPAM's result (`ipam_type`'s, which must hold
/// an address) the link is configured as [`configure_interface`] does; without, it is
/// only brought up (L2). The result as [`container_result`] shapes it.
pub async fn finish_container_link(
    ctr: &Netlink,
    ns: &NetNs,
    c: &crate::Link,
    ifname: &str,
    ipam: Option<(&str, cni::CniResult)>,
    dns: &cni::Dns,
) -> Result<cni::CniResult, CniError> {
    let result = match ipam {
        Some((ipam_type, r)) => {
            if r.ips.is_empty() {
                return Err(CniError::invalid_config(format!(
                    "ipam: plugin {ipam_type:?} returned no addresses"
                )));
            }
            configure_interface(ctr, ns, c.index, ifname, &r).await?;
            r
        }
        None => {
            ctr.link_set_up(c.index).await?;
            cni::CniResult::default()
        }
    };
    Ok(container_result(result, ifname, c, ns, dns))
}

/// ADD's core for a plugin that makes one link of `kind` in the container (macvlan,
/// ipvlan, vlan, tap): the IPAM (`ipam_type`; without one, `chained`, an earlier
/// plugin's result, or nothing) runs while `make` makes the link; then
/// [`finish_container_link`]. A failure of either undoes both ([`undo_container_link`]).
#[allow(clippy::too_many_arguments)]
pub async fn add_container_link(
    ctr: &Netlink,
    args: &CmdArgs,
    ns: &NetNs,
    kind: &str,
    ipam_type: Option<&str>,
    chained: Option<cni::CniResult>,
    dns: &cni::Dns,
    make: impl std::future::Future<Output = Result<crate::Link, CniError>>,
) -> Result<cni::CniResult, CniError> {
    let pending = match ipam_type {
        Some(t) => Some(cni::delegate::start(t, cni::skel::Command::Add, args)?),
        None => None,
    };
    let link = make.await;
    let ipam = match pending {
        Some(p) => p.result().map(Some),
        None => Ok(chained),
    };
    let outcome = match (link, ipam) {
        (Ok(c), Ok(ipam)) => {
            let ipam = ipam.map(|r| (ipam_type.unwrap_or("prevResult"), r));
            finish_container_link(ctr, ns, &c, &args.ifname, ipam, dns).await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    if outcome.is_err() {
        undo_container_link(ctr, args, kind, ipam_type).await;
    }
    outcome
}

/// Undoes a failed ADD of a plugin that makes a link of `kind` in the container: the
/// link (only when it is one of `kind`: the name may be another plugin's) and the lease.
pub async fn undo_container_link(
    ctr: &Netlink,
    args: &CmdArgs,
    kind: &str,
    ipam_type: Option<&str>,
) {
    if let Ok(Some(c)) = ctr.link_get(&args.ifname).await {
        if c.kind.as_deref() == Some(kind) {
            let _ = ctr.link_del(c.index).await;
        }
    }
    if let Some(t) = ipam_type {
        let _ = cni::delegate::del(t, args);
    }
}

/// IPAM plugins that speak on the container's link (a DHCP release leaves by it): their
/// DEL must finish before the link goes.
pub const IPAM_ON_THE_LINK: &[&str] = &["dhcp"];

/// DEL for a plugin that makes a link of `kind` in the container: the IPAM's DEL
/// (started first, so it runs while the link goes; finished first for
/// [`IPAM_ON_THE_LINK`]) and the link when it is one of `kind`; every failure is
/// returned.
pub fn del_container_link(
    args: &CmdArgs,
    kind: &str,
    ipam_type: Option<&str>,
) -> Result<(), CniError> {
    let mut pending = ipam_type
        .filter(|t| !t.is_empty())
        .map(|t| cni::delegate::start(t, cni::skel::Command::Del, args));
    if ipam_type.is_some_and(|t| IPAM_ON_THE_LINK.contains(&t)) {
        if let Some(p) = pending.take() {
            let first = p.and_then(cni::delegate::Pending::done);
            let link = remove_container_link_of_kind(args, kind);
            return CniError::join(first.err().into_iter().chain(link.err()).collect());
        }
    }
    let mut failures: Vec<CniError> = remove_container_link_of_kind(args, kind)
        .err()
        .into_iter()
        .collect();
    if let Some(p) = pending {
        failures.extend(p.and_then(cni::delegate::Pending::done).err());
    }
    CniError::join(failures)
}

/// CHECK's common part for a plugin whose interface is `CNI_IFNAME` in `ns`: its index
/// in `prev.interfaces` (which must name it in that sandbox), and the link itself, which
/// must be there, be of `kind`, and have the MAC `prevResult` gives (code 120).
pub async fn check_container_link(
    ctr: &Netlink,
    args: &CmdArgs,
    ns: &NetNs,
    prev: &cni::CniResult,
    kind: &str,
) -> Result<(usize, crate::Link), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let sandbox = ns.path().display().to_string();
    let ours = prev
        .interfaces
        .iter()
        .position(|i| i.name == args.ifname && i.sandbox.as_deref() == Some(sandbox.as_str()))
        .ok_or_else(|| {
            failed(format!(
                "prevResult has no interface {:?} in sandbox {sandbox}",
                args.ifname
            ))
        })?;
    let c = ctr.link_get(&args.ifname).await?.ok_or_else(|| {
        failed(format!(
            "interface {:?} is missing in the container",
            args.ifname
        ))
    })?;
    if c.kind.as_deref() != Some(kind) {
        return Err(failed(format!(
            "interface {:?} is not a {kind}",
            args.ifname
        )));
    }
    if let Some(mac) = prev.interfaces[ours]
        .mac
        .as_deref()
        .filter(|m| !m.is_empty())
    {
        if !mac.eq_ignore_ascii_case(&c.mac) {
            return Err(failed(format!(
                "interface {:?} has MAC {}, prevResult says {mac}",
                args.ifname, c.mac
            )));
        }
    }
    Ok((ours, c))
}

/// Holds the lock on a container's namespace file (see [`lock_netns`]).
#[derive(Debug)]
pub struct NsLock(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

/// Locks the container's namespace file, as the reference's sbr and vrf do: chained
/// plugins choosing a routing table in one namespace take turns.
pub fn lock_netns(path: &std::path::Path) -> Result<NsLock, CniError> {
    let io = |e: String| {
        CniError::new(
            ErrorCode::IO_FAILURE,
            format!("locking {}: {e}", path.display()),
        )
    };
    let f = std::fs::File::open(path).map_err(|e| io(e.to_string()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
        .map(NsLock)
        .map_err(|(_, e)| io(e.to_string()))
}
