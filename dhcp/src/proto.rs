//! The DHCPv4 client (RFC 2131): DISCOVER/OFFER/REQUEST/ACK to acquire, REQUEST to
//! renew (unicast to the server) and rebind (broadcast), RELEASE. Messages are
//! dhcproto's; the transport is a UDP socket on port 68 in the container's namespace,
//! bound to the interface. Until the interface has its address, the server's replies
//! can only reach that socket broadcast, so every message sent without an address asks
//! for broadcast replies (the `BROADCAST` flag, which servers must honour).

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use ipnetwork::{IpNetwork, Ipv4Network};

use crate::conf::Wanted;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

/// A lease as the server granted it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Network,
    pub router: Option<Ipv4Addr>,
    pub server: Ipv4Addr,
    /// Destination and gateway (`None`: on the link).
    pub routes: Vec<(Ipv4Network, Option<Ipv4Addr>)>,
    pub lease_time: Duration,
    pub renew_after: Duration,
    pub rebind_after: Duration,
    pub granted: Instant,
}

/// A lease time when the server gives none (the reference's default).
const DEFAULT_LEASE: Duration = Duration::from_secs(3600);

impl Lease {
    /// The lease an ACK grants; `None` when it has no usable address.
    fn from_ack(ack: &Message, granted: Instant) -> Option<Lease> {
        let yiaddr = ack.yiaddr();
        if yiaddr.is_unspecified() {
            return None;
        }
        let opts = ack.opts();
        let mask = match opts.get(OptionCode::SubnetMask) {
            Some(DhcpOption::SubnetMask(m)) => *m,
            _ => classful_mask(yiaddr),
        };
        let prefix = u32::from(mask).leading_ones() as u8;
        let address = Ipv4Network::new(yiaddr, prefix).ok()?;
        let router = match opts.get(OptionCode::Router) {
            Some(DhcpOption::Router(r)) => r.first().copied(),
            _ => None,
        };
        let server = match opts.get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(s)) => *s,
            _ => ack.siaddr(),
        };
        let secs = |code, default: Duration| match opts.get(code) {
            Some(DhcpOption::AddressLeaseTime(s))
            | Some(DhcpOption::Renewal(s))
            | Some(DhcpOption::Rebinding(s)) => Duration::from_secs(u64::from(*s)),
            _ => default,
        };
        let lease_time = secs(OptionCode::AddressLeaseTime, DEFAULT_LEASE);
        let renew_after = secs(OptionCode::Renewal, lease_time / 2);
        let rebind_after = secs(OptionCode::Rebinding, lease_time * 7 / 8);
        // RFC 3442: with classless static routes, the router and static routes are ignored.
        let routes = match opts.get(OptionCode::ClasslessStaticRoute) {
            Some(DhcpOption::ClasslessStaticRoute(r)) if !r.is_empty() => r
                .iter()
                .filter_map(|(net, gw)| {
                    let dst = Ipv4Network::new(net.network(), net.prefix_len()).ok()?;
                    Some((dst, Some(*gw).filter(|g| !g.is_unspecified())))
                })
                .collect(),
            _ => {
                let mut routes: Vec<(Ipv4Network, Option<Ipv4Addr>)> =
                    match opts.get(OptionCode::StaticRoutingTable) {
                        Some(DhcpOption::StaticRoutingTable(r)) => r
                            .iter()
                            .filter_map(|(dst, gw)| {
                                let prefix = u32::from(classful_mask(*dst)).leading_ones() as u8;
                                Some((Ipv4Network::new(*dst, prefix).ok()?, Some(*gw)))
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                if let Some(gw) = router {
                    let default = Ipv4Network::new(Ipv4Addr::UNSPECIFIED, 0).expect("0/0");
                    routes.push((default, Some(gw)));
                }
                routes
            }
        };
        Some(Lease {
            address,
            router,
            server,
            routes,
            lease_time,
            renew_after,
            rebind_after,
            granted,
        })
    }

    pub fn expires(&self) -> Instant {
        self.granted + self.lease_time
    }

    /// The IPAM result: the address with the router as gateway, the routes at `priority`
    /// (0: none given).
    pub fn result(&self, priority: i64) -> cni::CniResult {
        let priority = u32::try_from(priority).ok().filter(|p| *p != 0);
        cni::CniResult {
            ips: vec![cni::IpConfig {
                address: IpNetwork::V4(self.address),
                gateway: self.router.map(Into::into),
                interface: None,
            }],
            routes: self
                .routes
                .iter()
                .map(|(dst, gw)| cni::Route {
                    dst: IpNetwork::V4(*dst),
                    gw: gw.map(Into::into),
                    mtu: None,
                    advmss: None,
                    priority,
                    table: None,
                    scope: None,
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// The lease a server's reply grants, as the client reads one off the wire: `None` for
/// anything but a well-formed DHCPACK with an address.
pub fn lease_of_reply(bytes: &[u8]) -> Option<Lease> {
    let m = decode(bytes)?;
    if m.opcode() != Opcode::BootReply || !m.opts().has_msg_type(MessageType::Ack) {
        return None;
    }
    Lease::from_ack(&m, Instant::now())
}

/// A message off the wire. dhcproto asserts on some malformed options (a panic under
/// debug assertions, found by the `dhcp_reply` fuzz target): any host of the LAN can
/// send such a packet, so a panic in decoding is a packet that is not a reply.
fn decode(bytes: &[u8]) -> Option<Message> {
    std::panic::catch_unwind(|| Message::from_bytes(bytes).ok()).ok()?
}

/// The mask of an address's class, for servers that send none (as the reference).
fn classful_mask(a: Ipv4Addr) -> Ipv4Addr {
    match a.octets()[0] {
        0..=127 => Ipv4Addr::new(255, 0, 0, 0),
        128..=191 => Ipv4Addr::new(255, 255, 0, 0),
        _ => Ipv4Addr::new(255, 255, 255, 0),
    }
}

/// Why no lease came.
#[derive(Debug)]
pub enum Failure {
    /// No server answered in time.
    NoAnswer(Duration),
    /// The server refused (DHCPNAK) the address.
    Refused,
    /// The lease's keeper was told to stop while waiting.
    Stopped,
    Io(std::io::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::NoAnswer(t) => write!(f, "no DHCP server answered within {t:?}"),
            Failure::Refused => f.write_str("the DHCP server refused the request (DHCPNAK)"),
            Failure::Stopped => f.write_str("stopped"),
            Failure::Io(e) => write!(f, "{e}"),
        }
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Failure {
        Failure::Io(e)
    }
}

/// One attachment's DHCP client: its socket, MAC and identity.
#[derive(Debug)]
pub struct Client {
    sock: UdpSocket,
    mac: [u8; 6],
    client_id: Vec<u8>,
    wanted: Wanted,
    /// The longest wait between two sends of one message.
    pub resend_max: Duration,
}

/// Port 68 on `ifname`, opened in the calling thread's namespace.
pub fn socket(ifname: &str) -> std::io::Result<UdpSocket> {
    use nix::sys::socket::{self as s, sockopt};
    let fd = s::socket(
        s::AddressFamily::Inet,
        s::SockType::Datagram,
        s::SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    s::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    s::setsockopt(&fd, sockopt::Broadcast, &true)?;
    s::setsockopt(
        &fd,
        sockopt::BindToDevice,
        &std::ffi::OsString::from(ifname),
    )?;
    s::bind(
        fd.as_raw_fd(),
        &s::SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)),
    )?;
    Ok(UdpSocket::from(fd))
}

impl Client {
    pub fn new(sock: UdpSocket, mac: [u8; 6], client_id: Vec<u8>, wanted: Wanted) -> Client {
        Client {
            sock,
            mac,
            client_id,
            wanted,
            resend_max: Duration::from_secs(8),
        }
    }

    fn message(&self, kind: MessageType, ciaddr: Ipv4Addr, broadcast: bool) -> Message {
        let mut m = Message::new(
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &self.mac,
        );
        if broadcast {
            m.set_flags(Flags::default().set_broadcast());
        }
        let opts = m.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        let mut id = vec![0u8];
        id.extend(&self.client_id);
        opts.insert(DhcpOption::ClientIdentifier(id));
        if kind != MessageType::Release {
            for o in self.wanted.options() {
                opts.insert(o);
            }
        }
        m
    }

    /// Sends `m` to `to` until a reply of one of `kinds` with its transaction id comes,
    /// waiting 1 s, 2 s, 4 s … (at most `resend_max`) between sends, until `deadline`.
    fn exchange(
        &self,
        m: &Message,
        to: SocketAddrV4,
        kinds: &[MessageType],
        deadline: Instant,
        stop: Option<&Receiver<()>>,
    ) -> Result<Option<Message>, Failure> {
        let bytes = m
            .to_vec()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        let mut wait = Duration::from_secs(1);
        let mut buf = [0u8; 1500];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.sock.send_to(&bytes, to)?;
            let resend = (now + wait).min(deadline);
            while let Some(left) = resend.checked_duration_since(Instant::now()) {
                if left.is_zero() {
                    break;
                }
                if stop.is_some_and(|s| !matches!(s.try_recv(), Err(TryRecvError::Empty))) {
                    return Err(Failure::Stopped);
                }
                // Short waits while a keeper may be told to stop.
                let left = if stop.is_some() {
                    left.min(Duration::from_millis(100))
                } else {
                    left
                };
                self.sock.set_read_timeout(Some(left))?;
                let n = match self.sock.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        break
                    }
                    Err(e) => return Err(e.into()),
                };
                let Some(reply) = decode(&buf[..n]) else {
                    continue;
                };
                let ours = reply.opcode() == Opcode::BootReply
                    && reply.xid() == m.xid()
                    && reply.chaddr().get(..6) == Some(&self.mac[..]);
                if ours && reply.opts().msg_type().is_some_and(|k| kinds.contains(&k)) {
                    return Ok(Some(reply));
                }
            }
            wait = (wait * 2).min(self.resend_max);
        }
    }

    /// DISCOVER, then REQUEST the address offered, until an ACK or `timeout` (or a
    /// message on `stop`).
    pub fn acquire(
        &self,
        timeout: Duration,
        stop: Option<&Receiver<()>>,
    ) -> Result<Lease, Failure> {
        let deadline = Instant::now() + timeout;
        let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT);
        loop {
            let discover = self.message(MessageType::Discover, Ipv4Addr::UNSPECIFIED, true);
            let Some(offer) =
                self.exchange(&discover, broadcast, &[MessageType::Offer], deadline, stop)?
            else {
                return Err(Failure::NoAnswer(timeout));
            };
            let server = match offer.opts().get(OptionCode::ServerIdentifier) {
                Some(DhcpOption::ServerIdentifier(s)) => *s,
                _ => offer.siaddr(),
            };
            let mut request = self.message(MessageType::Request, Ipv4Addr::UNSPECIFIED, true);
            request.set_xid(offer.xid());
            let opts = request.opts_mut();
            opts.insert(DhcpOption::RequestedIpAddress(offer.yiaddr()));
            opts.insert(DhcpOption::ServerIdentifier(server));
            let kinds = [MessageType::Ack, MessageType::Nak];
            match self.exchange(&request, broadcast, &kinds, deadline, stop)? {
                None => return Err(Failure::NoAnswer(timeout)),
                Some(r) if r.opts().has_msg_type(MessageType::Ack) => {
                    return Lease::from_ack(&r, Instant::now()).ok_or(Failure::Refused)
                }
                // A NAK: start again with a new DISCOVER.
                Some(_) => continue,
            }
        }
    }

    /// Extends `lease`: REQUEST from its address, unicast to its server (renewing) or
    /// broadcast (rebinding, `rebind`), until an answer or `deadline`. `Ok(None)`: no
    /// answer; `Err(Refused)`: the server took the lease back.
    pub fn extend(
        &self,
        lease: &Lease,
        rebind: bool,
        deadline: Instant,
        stop: &Receiver<()>,
    ) -> Result<Option<Lease>, Failure> {
        let to = if rebind {
            SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT)
        } else {
            SocketAddrV4::new(lease.server, SERVER_PORT)
        };
        let request = self.message(MessageType::Request, lease.address.ip(), false);
        let kinds = [MessageType::Ack, MessageType::Nak];
        match self.exchange(&request, to, &kinds, deadline, Some(stop))? {
            None => Ok(None),
            Some(r) if r.opts().has_msg_type(MessageType::Ack) => Ok(Some(
                Lease::from_ack(&r, Instant::now()).ok_or(Failure::Refused)?,
            )),
            Some(_) => Err(Failure::Refused),
        }
    }

    /// RELEASE, unicast to the lease's server (no answer comes).
    pub fn release(&self, lease: &Lease) -> std::io::Result<()> {
        let mut m = self.message(MessageType::Release, lease.address.ip(), false);
        m.opts_mut()
            .insert(DhcpOption::ServerIdentifier(lease.server));
        let bytes = m
            .to_vec()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        self.sock
            .send_to(&bytes, SocketAddrV4::new(lease.server, SERVER_PORT))
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(opts: Vec<DhcpOption>) -> Message {
        let mut m = Message::new(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 98, 0, 50),
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[2, 0, 0, 0, 0, 1],
        );
        m.set_opcode(Opcode::BootReply);
        m.opts_mut()
            .insert(DhcpOption::MessageType(MessageType::Ack));
        for o in opts {
            m.opts_mut().insert(o);
        }
        m
    }

    #[test]
    fn the_fuzz_seeds_are_replies_the_client_reads() {
        let l = lease_of_reply(include_bytes!("../../fuzz/corpus/dhcp_reply/ack")).unwrap();
        assert_eq!(l.address.to_string(), "10.98.0.50/24");
        assert_eq!(
            (l.renew_after, l.lease_time),
            (Duration::from_secs(2), Duration::from_secs(120))
        );
        let l = lease_of_reply(include_bytes!(
            "../../fuzz/corpus/dhcp_reply/classless-routes"
        ))
        .unwrap();
        assert_eq!(
            l.routes.len(),
            2,
            "classless routes replace the others: {:?}",
            l.routes
        );
        assert!(lease_of_reply(include_bytes!("../../fuzz/corpus/dhcp_reply/offer")).is_none());
    }

    #[test]
    fn an_ack_becomes_the_references_result() {
        let now = Instant::now();
        let l = Lease::from_ack(
            &ack(vec![
                DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
                DhcpOption::Router(vec![Ipv4Addr::new(10, 98, 0, 1)]),
                DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 98, 0, 1)),
                DhcpOption::AddressLeaseTime(120),
                DhcpOption::StaticRoutingTable(vec![(
                    Ipv4Addr::new(172, 16, 0, 0),
                    Ipv4Addr::new(10, 98, 0, 2),
                )]),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(l.address.to_string(), "10.98.0.50/24");
        assert_eq!(
            (l.renew_after, l.rebind_after),
            (Duration::from_secs(60), Duration::from_secs(105))
        );
        let r = serde_json::to_value(l.result(0)).unwrap();
        assert_eq!(r["ips"][0]["address"], "10.98.0.50/24");
        assert_eq!(r["ips"][0]["gateway"], "10.98.0.1");
        assert_eq!(
            r["routes"][0]["dst"], "172.16.0.0/16",
            "a classful static route"
        );
        assert_eq!(r["routes"][1]["dst"], "0.0.0.0/0");
        assert_eq!(r["routes"][1]["gw"], "10.98.0.1");
        // Classless routes replace both (RFC 3442); a priority reaches every route.
        let l = Lease::from_ack(
            &ack(vec![
                DhcpOption::Router(vec![Ipv4Addr::new(10, 98, 0, 1)]),
                DhcpOption::ClasslessStaticRoute(vec![
                    ("10.99.0.0/16".parse().unwrap(), Ipv4Addr::new(10, 98, 0, 1)),
                    ("10.100.0.0/24".parse().unwrap(), Ipv4Addr::UNSPECIFIED),
                ]),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(l.address.prefix(), 8, "a classful mask without option 1");
        let r = serde_json::to_value(l.result(7)).unwrap();
        assert_eq!(r["routes"].as_array().unwrap().len(), 2, "{r}");
        assert_eq!(r["routes"][1]["dst"], "10.100.0.0/24");
        assert!(r["routes"][1].get("gw").is_none(), "on the link: {r}");
        assert_eq!(r["routes"][0]["priority"], 7);
    }
}
