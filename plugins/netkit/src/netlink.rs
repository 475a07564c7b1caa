//! An rtnetlink handle bound to one namespace, behind verbs that speak `ip`:
//! `link_*`, `addr_*`, `route_*`.
//!
//! [`Netlink::open_in`] enters the namespace only long enough to create the socket;
//! the socket stays bound there, so every later call configures that namespace from
//! wherever the caller is. One handle serves all operations of a plugin call.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_core::Nla;
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecUnspec, InetDevConf, InfoData, InfoIpVlan, InfoKind, InfoMacVlan, InfoVeth,
    InfoVlan, InfoVrf, IpVlanMode, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope,
};
use netlink_packet_route::AddressFamily;
use rtnetlink::{
    Handle, LinkBridge, LinkIpVlan, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    LinkVlan, LinkVrf, RouteMessageBuilder,
};

use crate::error::{Error, Result};
use crate::ns::NetNs;

/// The loopback device's index: the kernel gives `lo` index 1 in every network
/// namespace (`LOOPBACK_IFINDEX`), so it can be addressed without a lookup.
pub const LOOPBACK_IFINDEX: u32 = 1;

/// What netkit reads back about a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`; empty for links without one.
    pub mac: String,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// Operationally up (`IFF_RUNNING`): the kernel's link watcher has seen the carrier,
    /// and for a bridge port, the bridge has been told.
    pub running: bool,
    /// The bridge (or other controller) the link is enslaved to.
    pub master: Option<u32>,
    /// `veth`, `bridge`, …; `None` for links without a kind (`lo`, physical).
    pub kind: Option<String>,
    /// IFLA_LINK: for a veth, its peer's index (in the peer's namespace).
    pub peer: Option<u32>,
    /// IFLA_IFALIAS (`ip link set dev X alias …`).
    pub alias: Option<String>,
    pub promisc: bool,
    pub allmulti: bool,
    pub txqlen: u32,
    /// A macvlan's or ipvlan's mode as `ip -d link` names it (`bridge`, `private`,
    /// `vepa`, `passthru`, `source`; `l2`, `l3`, `l3s`); `None` for other kinds.
    pub mode: Option<String>,
    /// A vlan link's id.
    pub vlan_id: Option<u16>,
    /// A VRF device's routing table.
    pub vrf_table: Option<u32>,
    /// A tun/tap link's settings; `None` for other kinds.
    pub tun: Option<crate::tap::TunInfo>,
}

/// A route as read back or to be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    /// `RT_SCOPE_*`: 0 universe, 253 link, 254 host.
    pub scope: u8,
    /// The metric (`ip route … metric N`); `None`: the kernel's default, 0 for IPv4 and
    /// 1024 for IPv6.
    pub priority: Option<u32>,
}

/// `IP/32` (`IP/128`): the prefix naming one address.
pub fn host_prefix(ip: IpAddr) -> IpNetwork {
    IpNetwork::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("a full-length prefix is valid")
}

/// A neighbour (ARP / NDP) entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub index: u32,
    pub address: IpAddr,
    pub lladdr: Option<String>,
    /// `REACHABLE`, `STALE`, … as `ip neigh` prints them.
    pub state: String,
}

/// Options for a new bridge.
#[derive(Debug, Clone, Default)]
pub struct BridgeOptions {
    pub mtu: Option<u32>,
    pub vlan_filtering: bool,
    /// Set explicitly so the bridge's MAC stays put as ports come and go (a bridge
    /// otherwise takes the lowest MAC of its ports).
    pub mac: Option<[u8; 6]>,
}

/// Per-port bridge flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgePortOptions {
    pub hairpin: bool,
    pub isolated: bool,
}

/// A VLAN (or range) on a bridge port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub first: u16,
    pub last: u16,
    /// Access VLAN: PVID and egress untagged (`vlan`); else tagged (`vlanTrunk`).
    pub pvid_untagged: bool,
}

/// Options for a veth pair. `master` and `up` apply to the end in the caller's
/// namespace and go with the creation request itself (`ip link add … master BR up`), so
/// the end needs no further request.
#[derive(Debug, Clone, Default)]
pub struct VethOptions {
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub peer_mac: Option<[u8; 6]>,
    pub master: Option<u32>,
    pub up: bool,
}

/// A macvlan to create: its mode and, where set, MTU, MAC, broadcast queue length and
/// the namespace it is born in (by default the socket's own).
#[derive(Debug, Clone, Default)]
pub struct MacvlanOptions<'a> {
    /// `bridge`, `private`, `vepa`, `passthru` or `source` ([`macvlan_mode`]).
    pub mode: &'a str,
    pub mtu: Option<u32>,
    pub mac: Option<[u8; 6]>,
    pub bc_queue_len: Option<u32>,
    pub netns: Option<&'a NetNs>,
}

/// A link made on a parent other than a macvlan: an ipvlan in a mode (`l2`, `l3`,
/// `l3s`), or an 802.1Q vlan with an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubLink<'a> {
    Ipvlan { mode: &'a str },
    Vlan { id: u16 },
}

/// The ipvlan mode `name` (as `ip link … type ipvlan mode NAME` takes it).
pub fn ipvlan_mode(name: &str) -> Option<IpVlanMode> {
    Some(match name {
        "l2" => IpVlanMode::L2,
        "l3" => IpVlanMode::L3,
        "l3s" => IpVlanMode::L3S,
        _ => return None,
    })
}

/// The macvlan mode `name` (as `ip link … type macvlan mode NAME` takes it).
pub fn macvlan_mode(name: &str) -> Option<MacVlanMode> {
    Some(match name {
        "bridge" => MacVlanMode::Bridge,
        "private" => MacVlanMode::Private,
        "vepa" => MacVlanMode::Vepa,
        "passthru" => MacVlanMode::Passthrough,
        "source" => MacVlanMode::Source,
        _ => return None,
    })
}

/// How [`Netlink::addr_request`] adds an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrAdd {
    Replace,
    ReplaceNoPrefixRoute,
    Exclusive,
}

/// A netlink socket bound to one namespace.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: Handle,
}

pub(crate) fn nl(op: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let op = op.into();
    move |source| Error::Netlink { op, source }
}

impl Netlink {
    /// Opens a socket inside `ns`. Must be called from within a tokio runtime (the
    /// socket's driver is spawned on it).
    pub fn open_in(ns: &NetNs) -> Result<Netlink> {
        let _guard = ns.enter()?;
        Netlink::open_current()
    }

    /// The rtnetlink handle, for the requests of the sibling modules ([`crate::tc`]).
    pub(crate) fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// Opens a socket in the calling thread's namespace.
    pub fn open_current() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().map_err(Error::Socket)?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    // ---- link ---------------------------------------------------------------------

    /// `ip link show NAME`; `None` when there is no such link.
    pub async fn link_get(&self, name: &str) -> Result<Option<Link>> {
        let req = self.handle.link().get().match_name(name.to_owned());
        self.link_query(req, format!("link show {name}")).await
    }

    /// Like [`Netlink::link_get`], failing with [`Error::LinkNotFound`].
    pub async fn link_require(&self, name: &str) -> Result<Link> {
        self.link_get(name)
            .await?
            .ok_or_else(|| Error::LinkNotFound(name.into()))
    }

    /// `ip link show` by index; `None` when there is no such link.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<Link>> {
        let req = self.handle.link().get().match_index(index);
        self.link_query(req, format!("link show index {index}"))
            .await
    }

    /// Waits (polling every millisecond, at most `limit`) until the link is
    /// operationally up; whether it became so.
    pub async fn link_wait_running(&self, index: u32, limit: std::time::Duration) -> Result<bool> {
        let start = std::time::Instant::now();
        loop {
            let running = self.link_by_index(index).await?.is_some_and(|l| l.running);
            if running || start.elapsed() >= limit {
                return Ok(running);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }

    /// One link by a filter; "no such device" is `None`.
    async fn link_query(&self, req: rtnetlink::LinkGetRequest, op: String) -> Result<Option<Link>> {
        match req.execute().try_collect::<Vec<_>>().await {
            Ok(msgs) => Ok(msgs.first().map(link_from)),
            Err(e) if is_nodev(&e) => Ok(None),
            Err(e) => Err(nl(op)(e)),
        }
    }

    /// `ip link show`.
    pub async fn link_list(&self) -> Result<Vec<Link>> {
        let msgs: Vec<LinkMessage> = self
            .handle
            .link()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("link show"))?;
        Ok(msgs.iter().map(link_from).collect())
    }

    /// `ip link add NAME numtxqueues 1 numrxqueues 1 [master M] [up] type veth peer name
    /// PEER netns PEER_NS numtxqueues 1 numrxqueues 1`: the peer is born in `peer_ns`,
    /// never moved there.
    ///
    /// Both ends are created with one queue each way, the number of queues the kernel
    /// leaves a veth using anyway. Without the attributes it allocates one per possible
    /// CPU and then cuts the real count down to one on each end, and each cut waits for
    /// an expedited RCU grace period under the RTNL lock (`veth_init_queues` →
    /// `netif_set_real_num_tx_queues` → `synchronize_net`): two grace periods per veth,
    /// serialising every parallel ADD of the host (docs/benchmarks.md).
    pub async fn link_add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: &NetNs,
        opts: &VethOptions,
    ) -> Result<()> {
        let mut peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer.to_owned())
            .setns_by_fd(peer_ns.as_fd().as_raw_fd())
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1));
        if let Some(mtu) = opts.mtu {
            peer_msg = peer_msg.mtu(mtu);
        }
        if let Some(mac) = opts.peer_mac {
            peer_msg = peer_msg.address(mac.to_vec());
        }
        let mut msg = LinkVeth::new(name, peer)
            .append_extra_attribute(LinkAttribute::NumTxQueues(1))
            .append_extra_attribute(LinkAttribute::NumRxQueues(1))
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())));
        if let Some(mtu) = opts.mtu {
            msg = msg.mtu(mtu);
        }
        if let Some(mac) = opts.mac {
            msg = msg.address(mac.to_vec());
        }
        if let Some(master) = opts.master {
            msg = msg.controller(master);
        }
        if opts.up {
            msg = msg.up();
        }
        // `peer_ns` is borrowed for the whole request, so the fd in the message stays valid.
        self.link_add(
            msg.build(),
            format!("link add {name} type veth peer name {peer}"),
        )
        .await
    }

    /// `ip link add NAME link PARENT [netns NS] [mtu N] [address MAC] type macvlan mode
    /// MODE [bcqueuelen N]`: born down, in `opts.netns` when given (the parent is looked
    /// up in this socket's namespace), so its name is checked only there.
    pub async fn link_add_macvlan(
        &self,
        name: &str,
        parent: u32,
        opts: &MacvlanOptions<'_>,
    ) -> Result<()> {
        let mode = macvlan_mode(opts.mode).ok_or_else(|| Error::Invalid {
            what: "macvlan mode",
            value: opts.mode.into(),
        })?;
        let mut msg = LinkMacVlan::new(name, parent, mode);
        if let Some(len) = opts.bc_queue_len {
            msg = msg.append_info_data(InfoMacVlan::BcQueueLen(len));
        }
        if let Some(mtu) = opts.mtu {
            msg = msg.mtu(mtu);
        }
        if let Some(mac) = opts.mac {
            msg = msg.address(mac.to_vec());
        }
        if let Some(ns) = opts.netns {
            msg = msg.setns_by_fd(ns.as_fd().as_raw_fd());
        }
        self.link_add(
            msg.build(),
            format!(
                "link add {name} link index {parent} type macvlan mode {}",
                opts.mode
            ),
        )
        .await
    }

    /// `ip link add NAME link PARENT [netns NS] [mtu N] type ipvlan mode MODE` or `type
    /// vlan id ID`: born down, in `netns` when given (the parent is looked up in this
    /// socket's namespace), so its name is checked only there.
    pub async fn link_add_sub(
        &self,
        name: &str,
        parent: u32,
        kind: SubLink<'_>,
        mtu: Option<u32>,
        netns: Option<&NetNs>,
    ) -> Result<()> {
        let (mut msg, op) = match kind {
            SubLink::Ipvlan { mode } => {
                let m = ipvlan_mode(mode).ok_or_else(|| Error::Invalid {
                    what: "ipvlan mode",
                    value: mode.into(),
                })?;
                (
                    LinkIpVlan::new(name, parent, m).build(),
                    format!("link add {name} link index {parent} type ipvlan mode {mode}"),
                )
            }
            SubLink::Vlan { id } => (
                LinkVlan::new(name, parent, id).build(),
                format!("link add {name} link index {parent} type vlan id {id}"),
            ),
        };
        if let Some(mtu) = mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(ns) = netns {
            msg.attributes
                .push(LinkAttribute::NetNsFd(ns.as_fd().as_raw_fd()));
        }
        self.link_add(msg, op).await
    }

    /// `ip link add NAME type vrf table TABLE`.
    pub async fn link_add_vrf(&self, name: &str, table: u32) -> Result<()> {
        self.link_add(
            LinkVrf::new(name, table).build(),
            format!("link add {name} type vrf table {table}"),
        )
        .await
    }

    /// The link of the first default route of the main table (IPv4 first), as the
    /// reference plugins pick a `master` that is not given.
    pub async fn default_route_link(&self) -> Result<Option<Link>> {
        let routes = self.route_list().await?;
        let oif = routes
            .iter()
            .find(|r| r.dst.prefix() == 0)
            .and_then(|r| r.oif);
        match oif {
            Some(i) => self.link_by_index(i).await,
            None => Ok(None),
        }
    }

    /// `ip link add NAME type bridge [mtu N] [vlan_filtering 1] [address MAC]`.
    pub async fn link_add_bridge(&self, name: &str, opts: &BridgeOptions) -> Result<()> {
        let mut msg = LinkBridge::new(name);
        if let Some(mtu) = opts.mtu {
            msg = msg.mtu(mtu);
        }
        if opts.vlan_filtering {
            msg = msg.vlan_filtering(true);
        }
        if let Some(mac) = opts.mac {
            msg = msg.address(mac.to_vec());
        }
        self.link_add(msg.build(), format!("link add {name} type bridge"))
            .await
    }

    pub(crate) async fn link_add(&self, msg: LinkMessage, op: String) -> Result<()> {
        self.handle.link().add(msg).execute().await.map_err(nl(op))
    }

    pub(crate) async fn link_set(
        &self,
        index: u32,
        op: &str,
        f: impl FnOnce(LinkMessageBuilder<LinkUnspec>) -> LinkMessageBuilder<LinkUnspec>,
    ) -> Result<()> {
        let msg = f(LinkUnspec::new_with_index(index)).build();
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!("link set index {index} {op}")))
    }

    /// `ip link set dev up`.
    pub async fn link_set_up(&self, index: u32) -> Result<()> {
        self.link_set(index, "up", |m| m.up()).await
    }

    /// `sysctl net.ipv4.conf.DEV.arp_notify=1`, as a netlink request on the socket's
    /// namespace (`IFLA_AF_SPEC` → `AF_INET` → `IFLA_INET_CONF`, carrying that one
    /// value): no switch into the namespace and no /proc/sys lookup.
    pub async fn link_set_arp_notify(&self, index: u32) -> Result<()> {
        let mut conf = InetDevConf::default();
        conf.arp_notify = 1;
        let spec = AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)]);
        self.link_set(index, "inet arp_notify 1", |m| {
            m.append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![spec]))
        })
        .await
    }

    /// `ip link set dev down`.
    pub async fn link_set_down(&self, index: u32) -> Result<()> {
        self.link_set(index, "down", |m| m.down()).await
    }

    /// `ip link set dev mtu N`.
    pub async fn link_set_mtu(&self, index: u32, mtu: u32) -> Result<()> {
        self.link_set(index, &format!("mtu {mtu}"), |m| m.mtu(mtu))
            .await
    }

    /// `ip link set dev address MAC`.
    pub async fn link_set_mac(&self, index: u32, mac: [u8; 6]) -> Result<()> {
        self.link_set(index, &format!("address {}", format_mac(&mac)), |m| {
            m.address(mac.to_vec())
        })
        .await
    }

    /// `ip link set dev promisc on|off`.
    pub async fn link_set_promisc(&self, index: u32, on: bool) -> Result<()> {
        self.link_set(index, &format!("promisc {on}"), |m| m.promiscuous(on))
            .await
    }

    /// `ip link set dev allmulticast on|off`.
    pub async fn link_set_allmulti(&self, index: u32, on: bool) -> Result<()> {
        self.link_set(index, &format!("allmulticast {on}"), |m| m.allmulticast(on))
            .await
    }

    /// `ip link set dev txqueuelen N`.
    pub async fn link_set_txqlen(&self, index: u32, len: u32) -> Result<()> {
        self.link_set(index, &format!("txqueuelen {len}"), |m| m.txqueuelen(len))
            .await
    }

    /// `ip link set dev type bridge vlan_filtering 0|1` on an existing bridge.
    pub async fn bridge_set_vlan_filtering(&self, index: u32, on: bool) -> Result<()> {
        let mut msg = LinkBridge::new("").index(index).vlan_filtering(on).build();
        // Addressed by index: drop the (empty) name the builder insists on.
        msg.attributes
            .retain(|a| !matches!(a, LinkAttribute::IfName(_)));
        self.handle
            .link()
            .set(msg)
            .execute()
            .await
            .map_err(nl(format!(
                "link set index {index} type bridge vlan_filtering {on}"
            )))
    }

    /// `ip link set dev type bridge_slave hairpin on|off isolated on|off`.
    pub async fn bridge_port_set(&self, index: u32, port: &BridgePortOptions) -> Result<()> {
        let msg = rtnetlink::LinkBridgePort::new(index)
            .hairpin(port.hairpin)
            .isolated(port.isolated)
            .build();
        self.handle
            .link()
            .set_port(msg)
            .execute()
            .await
            .map_err(nl(format!("link set index {index} type bridge_slave")))
    }

    /// `bridge vlan add dev PORT vid V [pvid untagged]` for each VLAN.
    pub async fn bridge_vlan_add(&self, port: u32, vlans: &[BridgeVlan]) -> Result<()> {
        use netlink_packet_route::link::BridgeVlanInfoFlags as F;
        let mut msg = rtnetlink::LinkBridgeVlan::new(port);
        for v in vlans {
            let flags = if v.pvid_untagged {
                F::Pvid | F::Untagged
            } else {
                F::empty()
            };
            msg = if v.first == v.last {
                msg.vlan(v.first, flags)
            } else {
                msg.vlan_range_start(v.first, flags)
                    .vlan_range_end(v.last, flags)
            };
        }
        self.handle
            .link()
            .set(msg.build())
            .execute()
            .await
            .map_err(nl(format!("bridge vlan add dev index {port}")))
    }

    /// `bridge vlan del dev PORT vid V`; a VLAN that is not there is fine.
    pub async fn bridge_vlan_del(&self, port: u32, vid: u16) -> Result<()> {
        use netlink_packet_route::link::BridgeVlanInfoFlags as F;
        let msg = rtnetlink::LinkBridgeVlan::new(port)
            .vlan(vid, F::empty())
            .build();
        match self.handle.link().del_with_message(msg).execute().await {
            Err(e) if is_nodev(&e) => Ok(()),
            other => other.map_err(nl(format!("bridge vlan del dev index {port} vid {vid}"))),
        }
    }

    /// `ip link set dev master BRIDGE` (`None`: `nomaster`).
    pub async fn link_set_master(&self, index: u32, master: Option<u32>) -> Result<()> {
        match master {
            Some(m) => {
                self.link_set(index, &format!("master {m}"), |b| b.controller(m))
                    .await
            }
            None => self.link_set(index, "nomaster", |b| b.nocontroller()).await,
        }
    }

    /// `ip link set dev name NEW` (the link must be down).
    pub async fn link_set_name(&self, index: u32, name: &str) -> Result<()> {
        self.link_set(index, &format!("name {name}"), |m| m.name(name.to_owned()))
            .await
    }

    /// `ip link set dev alias TEXT`.
    pub async fn link_set_alias(&self, index: u32, alias: &str) -> Result<()> {
        self.link_set(index, &format!("alias {alias}"), |m| {
            m.alias(alias.to_owned())
        })
        .await
    }

    /// `ip link set dev netns NS`.
    pub async fn link_set_netns(&self, index: u32, ns: &NetNs) -> Result<()> {
        let fd = ns.as_fd().as_raw_fd();
        self.link_set(index, &format!("netns {}", ns.path().display()), |m| {
            m.setns_by_fd(fd)
        })
        .await
    }

    /// `ip link del`; a link that is already gone is fine.
    pub async fn link_del(&self, index: u32) -> Result<()> {
        match self.handle.link().del(index).execute().await {
            Err(e) if is_nodev(&e) => Ok(()),
            other => other.map_err(nl(format!("link del index {index}"))),
        }
    }

    // ---- addr ---------------------------------------------------------------------

    /// `ip addr add ADDR/PREFIX dev`; `replace` makes it idempotent.
    pub async fn addr_add(&self, index: u32, addr: IpNetwork) -> Result<()> {
        self.addr_request(index, addr, AddrAdd::Replace).await
    }

    /// `ip addr replace ADDR dev X noprefixroute`: the address without the connected
    /// route the kernel would add for its subnet (for a layout that routes the subnet
    /// otherwise: no route made only to be deleted).
    pub async fn addr_add_no_prefix_route(&self, index: u32, addr: IpNetwork) -> Result<()> {
        self.addr_request(index, addr, AddrAdd::ReplaceNoPrefixRoute)
            .await
    }

    /// `ip addr add` proper: `EEXIST` when the link has the address already (unlike
    /// [`Netlink::addr_add`], which replaces).
    pub async fn addr_add_exclusive(&self, index: u32, addr: IpNetwork) -> Result<()> {
        self.addr_request(index, addr, AddrAdd::Exclusive).await
    }

    async fn addr_request(&self, index: u32, addr: IpNetwork, how: AddrAdd) -> Result<()> {
        let mut req = self.handle.address().add(index, addr.ip(), addr.prefix());
        let mut op = format!("addr add {addr} dev index {index}");
        if how != AddrAdd::Exclusive {
            req = req.replace();
        }
        if how == AddrAdd::ReplaceNoPrefixRoute {
            req.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
            op.push_str(" noprefixroute");
        }
        req.execute().await.map_err(nl(op))
    }

    /// `ip addr del`; an address that is not there is fine.
    pub async fn addr_del(&self, index: u32, addr: IpNetwork) -> Result<()> {
        let Some(msg) = self
            .addr_messages(Some(index))
            .await?
            .into_iter()
            .find(|m| addr_of(m) == Some(addr))
        else {
            return Ok(());
        };
        match self.handle.address().del(msg).execute().await {
            Err(e) if is_nodev(&e) => Ok(()),
            other => other.map_err(nl(format!("addr del {addr} dev index {index}"))),
        }
    }

    /// `ip addr show [dev]`: (link index, address with prefix).
    pub async fn addr_list(&self, index: Option<u32>) -> Result<Vec<(u32, IpNetwork)>> {
        Ok(self
            .addr_messages(index)
            .await?
            .iter()
            .filter_map(|m| addr_of(m).map(|a| (m.header.index, a)))
            .collect())
    }

    async fn addr_messages(&self, index: Option<u32>) -> Result<Vec<AddressMessage>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        req.execute().try_collect().await.map_err(nl("addr show"))
    }

    // ---- route --------------------------------------------------------------------

    /// `ip route replace DST [via GW] [dev] [scope]` in the main table.
    pub async fn route_add(&self, route: &RouteSpec) -> Result<()> {
        let msg = route_message(route)?;
        self.handle
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route add {}", route.dst)))
    }

    /// `ip route del`; a route that is not there is fine.
    pub async fn route_del(&self, route: &RouteSpec) -> Result<()> {
        let msg = route_message(route)?;
        match self.handle.route().del(msg).execute().await {
            Err(e) if is_nodev(&e) => Ok(()),
            other => other.map_err(nl(format!("route del {}", route.dst))),
        }
    }

    /// `ip neigh show` (both families), skipping entries with no address state.
    pub async fn neigh_list(&self) -> Result<Vec<Neighbour>> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourState,
        };
        let msgs: Vec<_> = self
            .handle
            .neighbours()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(nl("neigh show"))?;
        Ok(msgs
            .iter()
            .filter_map(|m| {
                let address = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => {
                        Some(IpAddr::V4(*v4))
                    }
                    NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => {
                        Some(IpAddr::V6(*v6))
                    }
                    _ => None,
                })?;
                let lladdr = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) if !l.is_empty() => Some(format_mac(l)),
                    _ => None,
                });
                let state = match m.header.state {
                    NeighbourState::Incomplete => "INCOMPLETE",
                    NeighbourState::Reachable => "REACHABLE",
                    NeighbourState::Stale => "STALE",
                    NeighbourState::Delay => "DELAY",
                    NeighbourState::Probe => "PROBE",
                    NeighbourState::Failed => "FAILED",
                    NeighbourState::Noarp => "NOARP",
                    NeighbourState::Permanent => "PERMANENT",
                    _ => "NONE",
                };
                Some(Neighbour {
                    index: m.header.ifindex,
                    address,
                    lladdr,
                    state: state.into(),
                })
            })
            .collect())
    }

    /// `ip neigh del ADDR dev INDEX`; `false` when there was no such entry.
    pub async fn neigh_del(&self, index: u32, addr: IpAddr) -> Result<bool> {
        use netlink_packet_route::neighbour::{
            NeighbourAddress, NeighbourAttribute, NeighbourMessage,
        };
        let mut m = NeighbourMessage::default();
        m.header.ifindex = index;
        m.header.family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.attributes
            .push(NeighbourAttribute::Destination(match addr {
                IpAddr::V4(a) => NeighbourAddress::Inet(a),
                IpAddr::V6(a) => NeighbourAddress::Inet6(a),
            }));
        match self.handle.neighbours().del(m).execute().await {
            Ok(()) => Ok(true),
            Err(e) => {
                let err = nl(format!("neigh del {addr}"))(e);
                if err.is_not_found() {
                    Ok(false)
                } else {
                    Err(err)
                }
            }
        }
    }

    /// `ip route show` (main table, both families).
    pub async fn route_list(&self) -> Result<Vec<RouteSpec>> {
        Ok(self
            .route_messages_all_tables()
            .await?
            .iter()
            .filter(|m| m.header.table == 254 || table_of(m) == Some(254))
            .filter_map(route_from)
            .collect())
    }
}

pub(crate) fn route_message(route: &RouteSpec) -> Result<RouteMessage> {
    let invalid = |_| Error::Invalid {
        what: "route",
        value: format!("{:?}", route),
    };
    let mut b = RouteMessageBuilder::<IpAddr>::new()
        .destination_prefix(route.dst.network(), route.dst.prefix())
        .map_err(invalid)?;
    if let Some(gw) = route.gateway {
        b = b.gateway(gw).map_err(invalid)?;
    }
    if let Some(oif) = route.oif {
        b = b.output_interface(oif);
    }
    if let Some(p) = route.priority {
        b = b.priority(p);
    }
    // `boot`, as `ip route add` marks routes it adds.
    Ok(b.scope(RouteScope::from(route.scope))
        .protocol(RouteProtocol::Boot)
        .build())
}

fn table_of(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Table(t) => Some(*t),
        _ => None,
    })
}

pub(crate) fn route_from(m: &RouteMessage) -> Option<RouteSpec> {
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    };
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    let mut priority = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(d) => dst = ip(d),
            RouteAttribute::Gateway(g) => gateway = ip(g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => priority = Some(*p),
            _ => {}
        }
    }
    let dst = match (dst, m.header.address_family) {
        (Some(d), _) => d,
        (None, AddressFamily::Inet) => IpAddr::V4(0.into()),
        (None, AddressFamily::Inet6) => IpAddr::V6(0u128.into()),
        _ => return None,
    };
    Some(RouteSpec {
        dst: IpNetwork::new(dst, m.header.destination_prefix_length).ok()?,
        gateway,
        oif,
        scope: u8::from(m.header.scope),
        priority,
    })
}

fn addr_of(m: &AddressMessage) -> Option<IpNetwork> {
    m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => IpNetwork::new(*ip, m.header.prefix_len).ok(),
        _ => None,
    })
}

fn link_from(m: &LinkMessage) -> Link {
    let mut link = Link {
        index: m.header.index,
        name: String::new(),
        mac: String::new(),
        mtu: 0,
        up: m.header.flags.contains(LinkFlags::Up),
        running: m.header.flags.contains(LinkFlags::Running),
        master: None,
        kind: None,
        peer: None,
        alias: None,
        promisc: m.header.flags.contains(LinkFlags::Promisc),
        allmulti: m.header.flags.contains(LinkFlags::Allmulti),
        txqlen: 0,
        mode: None,
        vlan_id: None,
        vrf_table: None,
        tun: None,
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Address(mac) => link.mac = format_mac(mac),
            LinkAttribute::Mtu(mtu) => link.mtu = *mtu,
            LinkAttribute::Controller(c) => link.master = Some(*c),
            LinkAttribute::Link(p) => link.peer = Some(*p),
            LinkAttribute::IfAlias(a) => link.alias = Some(a.clone()),
            LinkAttribute::TxQueueLen(q) => link.txqlen = *q,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => link.kind = Some(kind_name(k)),
                        LinkInfo::Data(InfoData::Tun(data)) => {
                            let attrs: Vec<(u16, Vec<u8>)> = data
                                .iter()
                                .map(|a| {
                                    let mut v = vec![0; a.value_len()];
                                    a.emit_value(&mut v);
                                    (a.kind(), v)
                                })
                                .collect();
                            link.tun = Some(crate::tap::tun_info(
                                attrs.iter().map(|(k, v)| (*k, v.as_slice())),
                            ));
                        }
                        LinkInfo::Data(InfoData::IpVlan(data)) => {
                            link.mode = data.iter().find_map(|d| match d {
                                InfoIpVlan::Mode(m) => Some(m.to_string()),
                                _ => None,
                            });
                        }
                        LinkInfo::Data(InfoData::Vlan(data)) => {
                            link.vlan_id = data.iter().find_map(|d| match d {
                                InfoVlan::Id(id) => Some(*id),
                                _ => None,
                            });
                        }
                        LinkInfo::Data(InfoData::Vrf(data)) => {
                            link.vrf_table = data.iter().find_map(|d| match d {
                                InfoVrf::TableId(t) => Some(*t),
                                _ => None,
                            });
                        }
                        LinkInfo::Data(InfoData::MacVlan(data)) => {
                            link.mode = data.iter().find_map(|d| match d {
                                InfoMacVlan::Mode(m) => Some(m.to_string()),
                                _ => None,
                            });
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn kind_name(k: &InfoKind) -> String {
    match k {
        InfoKind::Veth => "veth".into(),
        InfoKind::Bridge => "bridge".into(),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parses `aa:bb:cc:dd:ee:ff` (case-insensitive).
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || Error::Invalid {
        what: "MAC address",
        value: s.into(),
    };
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (byte, part) in mac.iter_mut().zip(parts) {
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    Ok(mac)
}

pub(crate) fn is_nodev(e: &rtnetlink::Error) -> bool {
    use nix::errno::Errno;
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if m.code.map(|c| Errno::from_raw(-c.get())).is_some_and(|c| matches!(c, Errno::ENODEV | Errno::ENOENT | Errno::ESRCH | Errno::EADDRNOTAVAIL)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("AA:bb:0c:dd:ee:0F").unwrap(),
            [0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]
        );
        assert_eq!(
            format_mac(&[0xaa, 0xbb, 0x0c, 0xdd, 0xee, 0x0f]),
            "aa:bb:0c:dd:ee:0f"
        );
        for bad in ["", "aa:bb", "aa:bb:cc:dd:ee:fg", "aaa:bb:cc:dd:ee:f"] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn route_messages_carry_scope_and_gateway() {
        let r = RouteSpec {
            dst: "10.1.0.0/16".parse().unwrap(),
            gateway: Some("10.0.0.1".parse().unwrap()),
            oif: Some(3),
            scope: 0,
            priority: None,
        };
        let back = route_from(&route_message(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        let host = RouteSpec {
            dst: "fd00::5/128".parse().unwrap(),
            gateway: None,
            oif: Some(4),
            scope: 253,
            priority: None,
        };
        assert_eq!(route_from(&route_message(&host).unwrap()).unwrap(), host);
    }
}
