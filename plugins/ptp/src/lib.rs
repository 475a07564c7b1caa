//! The `ptp` plugin: a veth pair per container, routed rather than bridged.
//!
//! Kernel layout, as the reference's: the container end holds the IPAM address with a
//! route `GW/32 dev eth0 scope link` and the subnet and IPAM routes via GW; the host end
//! holds the gateway address(es) as /32 (/128) and a route `IP/32 dev vethX scope host`
//! per container address. ADD: parse → IPAM (started, collected after the veth exists) →
//! veth with the container end born in its namespace → container addresses and routes →
//! host addresses and routes → forwarding → masquerade → result
//! `interfaces = [host veth, container interface]`.

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, Dns, ErrorCode, Interface};
use ipnetwork::IpNetwork;
use netkit::attach::HostEnd;
use netkit::{attach, host_prefix, nft, sysctl, Link, NetNs, Netlink, RouteSpec, VethOptions};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Ptp;

/// The reference's keys: `ipMasq`, `mtu`, `ipam` (required), `dns`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PtpConf {
    pub name: String,
    #[serde(default)]
    pub ip_masq: bool,
    /// Newer references' masquerade backend; see [`netkit::nft::check_backend`].
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    #[serde(default)]
    pub mtu: u32,
    pub ipam: Option<cni::config::IpamConf>,
    #[serde(default)]
    pub dns: Dns,
}

impl PtpConf {
    fn parse(stdin: &[u8]) -> Result<PtpConf, CniError> {
        let c: PtpConf = cni::config::decode("network config", stdin)?;
        netkit::nft::check_backend("ipMasqBackend", c.ip_masq_backend.as_deref())?;
        match &c.ipam {
            Some(i) if !i.plugin_type.is_empty() => Ok(c),
            _ => Err(CniError::invalid_config(
                "ipam: ptp needs an IPAM plugin (\"ipam\": {\"type\": …})",
            )),
        }
    }

    fn ipam_type(&self) -> &str {
        self.ipam
            .as_ref()
            .map(|i| i.plugin_type.as_str())
            .unwrap_or_default()
    }
}

struct Ctx<'a> {
    args: &'a CmdArgs,
    conf: &'a PtpConf,
    ns: &'a NetNs,
    host: Netlink,
    ctr: Netlink,
}

impl Plugin for Ptp {
    fn about(&self) -> &'static str {
        concat!("podnet ptp plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = PtpConf::parse(&args.stdin)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let cx = Ctx {
                args,
                conf: &conf,
                ns: &ns,
                host: Netlink::open_current()?,
                ctr: Netlink::open_in(&ns)?,
            };
            attach::ensure_ifname_free(&cx.ctr, args, &ns).await?;
            let pending = delegate::start(conf.ipam_type(), Command::Add, args)?;
            let links = make_veth(&cx).await;
            let ipam = pending.result();
            let outcome = match (links, ipam) {
                (Ok((hv, c)), Ok(ipam)) => finish(&cx, &hv, &c, ipam).await,
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if outcome.is_err() {
                undo(&cx).await;
            }
            outcome
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = PtpConf::parse(&args.stdin)?;
        let pending = delegate::start(conf.ipam_type(), Command::Del, args);
        let mut failures = attach::remove_link_and_elements(args, "ptp");
        failures.extend(pending.and_then(delegate::Pending::done).err());
        CniError::join(failures)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = PtpConf::parse(&args.stdin)?;
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        delegate::check(conf.ipam_type(), args)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(check_kernel(args, &ns, prev))?;
        if conf.ip_masq {
            nft::check("ptp", &args.container_id, &args.ifname)?;
        }
        Ok(())
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = PtpConf::parse(&args.stdin)?;
        delegate::status_or_gc(conf.ipam_type(), Command::Status, &args.path, &args.stdin)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = PtpConf::parse(&args.stdin)?;
        let ipam = delegate::status_or_gc(conf.ipam_type(), Command::Gc, &args.path, &args.stdin);
        if conf.ip_masq {
            nft::retain_attachments(&conf.name, &args.valid_attachments)?;
        }
        ipam
    }
}

async fn make_veth(cx: &Ctx<'_>) -> Result<(HostEnd, Link), CniError> {
    let opts = VethOptions {
        mtu: (cx.conf.mtu != 0).then_some(cx.conf.mtu),
        ..Default::default()
    };
    attach::add_veth(&cx.host, &cx.ctr, cx.args, cx.ns, opts).await
}

async fn finish(
    cx: &Ctx<'_>,
    hv: &HostEnd,
    c: &Link,
    ipam: CniResult,
) -> Result<CniResult, CniError> {
    let mut result = ipam;
    for ip in &mut result.ips {
        if ip.gateway.is_none() {
            return Err(CniError::invalid_config(format!(
                "ipam: address {} has no gateway; ptp routes through it",
                ip.address
            )));
        }
    }
    configure_container(cx, c, &result).await?;
    for ip in &result.ips {
        let gw = ip.gateway.expect("checked above");
        cx.host.addr_add(hv.index, host_prefix(gw)).await?;
        let route = RouteSpec {
            dst: host_prefix(ip.address.ip()),
            gateway: None,
            oif: Some(hv.index),
            scope: 254,
            priority: None,
        };
        cx.host.route_add(&route).await?;
        attach::enable_forwarding(ip.address.is_ipv4())?;
    }
    if cx.conf.ip_masq {
        let addrs: Vec<IpNetwork> = result.ips.iter().map(|i| i.address).collect();
        let mut rec =
            nft::Record::new("ptp", &cx.conf.name, &cx.args.container_id, &cx.args.ifname);
        rec.entries = nft::masq_entries(&addrs);
        nft::commit(&rec)?;
    }
    result.interfaces = vec![
        Interface {
            name: hv.name.clone(),
            mac: Some(hv.mac.clone()),
            ..Default::default()
        },
        Interface {
            name: cx.args.ifname.clone(),
            mac: Some(c.mac.clone()),
            sandbox: Some(cx.ns.path().display().to_string()),
            ..Default::default()
        },
    ];
    for ip in &mut result.ips {
        ip.interface = Some(1);
    }
    if !cx.conf.dns.is_empty() {
        result.dns = cx.conf.dns.clone();
    }
    Ok(result)
}

/// Up, the address (without the kernel's connected route for its subnet), then `GW/32
/// scope link` and the subnet and everything else via GW.
async fn configure_container(cx: &Ctx<'_>, c: &Link, result: &CniResult) -> Result<(), CniError> {
    if result.ips.iter().any(|i| i.address.is_ipv6()) {
        sysctl::set(
            cx.ns,
            &format!("net/ipv6/conf/{}/accept_dad", cx.args.ifname),
            "0",
        )?;
    }
    cx.ctr.link_set_up(c.index).await?;
    for ip in &result.ips {
        let gw = ip.gateway.expect("checked by the caller");
        // Without the kernel's connected route: the subnet goes via the gateway.
        cx.ctr.addr_add_no_prefix_route(c.index, ip.address).await?;
        let subnet =
            IpNetwork::new(ip.address.network(), ip.address.prefix()).expect("same prefix");
        cx.ctr
            .route_add(&RouteSpec {
                dst: host_prefix(gw),
                gateway: None,
                oif: Some(c.index),
                scope: 253,
                priority: None,
            })
            .await?;
        cx.ctr
            .route_add(&RouteSpec {
                dst: subnet,
                gateway: Some(gw),
                oif: Some(c.index),
                scope: 0,
                priority: None,
            })
            .await?;
    }
    attach::add_routes(&cx.ctr, c.index, result).await?;
    Ok(())
}

async fn undo(cx: &Ctx<'_>) {
    if let Ok(Some(c)) = cx.ctr.link_get(&cx.args.ifname).await {
        let _ = cx.ctr.link_del(c.index).await;
    }
    let _ = nft::release("ptp", &cx.args.container_id, &cx.args.ifname);
    let _ = delegate::del(cx.conf.ipam_type(), cx.args);
}

async fn check_kernel(args: &CmdArgs, ns: &NetNs, prev: &CniResult) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let host = Netlink::open_current()?;
    let ctr = Netlink::open_in(ns)?;
    let c = ctr
        .link_get(&args.ifname)
        .await?
        .filter(|l| l.kind.as_deref() == Some("veth"));
    let c = c.ok_or_else(|| {
        failed(format!(
            "veth {:?} is missing in the container",
            args.ifname
        ))
    })?;
    let hv = match c.peer {
        Some(p) => host.link_by_index(p).await?,
        None => None,
    };
    let hv = hv.ok_or_else(|| failed(format!("the host end of {:?} is missing", args.ifname)))?;
    let host_have: Vec<IpNetwork> = host
        .addr_list(Some(hv.index))
        .await?
        .into_iter()
        .map(|(_, a)| a)
        .collect();
    let routes = ctr.route_list().await?;
    attach::check_addresses(&ctr, c.index, &args.ifname, &prev.ips).await?;
    for ip in &prev.ips {
        if let Some(gw) = ip.gateway {
            if !host_have.contains(&host_prefix(gw)) {
                return Err(failed(format!(
                    "gateway {gw} is missing on host veth {:?}",
                    hv.name
                )));
            }
            // IPv6 routes have no scope in the kernel: only IPv4 ones are checked for it.
            if !routes
                .iter()
                .any(|r| r.dst == host_prefix(gw) && (gw.is_ipv6() || r.scope == 253))
            {
                return Err(failed(format!(
                    "route {gw} scope link is missing in the container"
                )));
            }
        }
    }
    attach::check_routes(&ctr, &prev.routes).await
}
