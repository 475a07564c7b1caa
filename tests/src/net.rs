//! Traffic between namespaces: shell commands inside one, ping, and small TCP/UDP
//! servers whose sockets live in a container namespace (a socket stays in the namespace
//! it was created in, so the serving thread itself never switches).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netkit::{NetNs, Netlink, VethOptions};

use crate::{random_name, Sandbox};

/// Runs `sh -c cmd`, inside `ns` when given; (success, stdout + stderr).
pub fn sh(ns: Option<&NetNs>, cmd: &str) -> (bool, String) {
    let mut c = Command::new("sh");
    if let Some(ns) = ns {
        c = Command::new("nsenter");
        c.arg(format!("--net={}", ns.path().display())).arg("sh");
    }
    output(c.arg("-c").arg(cmd))
}

/// Runs `cmd` to its end: (success, stdout + stderr).
pub fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// How long until `f` holds, polling every 5 ms for up to `limit`; `None` if it never
/// does.
pub fn time_until(limit: Duration, f: impl Fn() -> bool) -> Option<Duration> {
    let t = Instant::now();
    while t.elapsed() < limit {
        if f() {
            return Some(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

/// One ping from `from` to `to`, answered within 2 s.
pub fn ping(from: &NetNs, to: &str) -> bool {
    sh(Some(from), &format!("ping -c 1 -W 2 {to}")).0
}

/// A namespace standing in for "outside", reached from the host over 192.0.2.0/24
/// (host side 192.0.2.254, outside 192.0.2.1; 2001:db8:99::fe and ::1), with no route
/// back to any container subnet, so only masqueraded traffic is answered.
pub fn outside(sb: &mut Sandbox) -> NetNs {
    let out = sb.container("out");
    wire(&out, &random_name("vo"), "192.0.2.254/24", "192.0.2.1/24");
    out
}

/// A veth from the host (the calling thread's namespace) named `host_end`, holding
/// `host_addr`, to `eth0` in `ns`, holding `ns_addr`; both ends up.
pub fn wire(ns: &NetNs, host_end: &str, host_addr: &str, ns_addr: &str) {
    netkit::block_on(async {
        let h = Netlink::open_current()?;
        h.link_add_veth(host_end, "eth0", ns, &VethOptions::default())
            .await?;
        for (nl, name, addr) in [
            (h, host_end, host_addr),
            (Netlink::open_in(ns)?, "eth0", ns_addr),
        ] {
            let l = nl.link_require(name).await?;
            nl.addr_add(l.index, addr.parse().expect("an address"))
                .await?;
            nl.link_set_up(l.index).await?;
        }
        Ok::<_, netkit::Error>(())
    })
    .unwrap_or_else(|e| panic!("wiring {host_end} to {}: {e}", ns.path().display()));
}

/// Serves TCP on `addr` inside `ns`: every connection gets `reply` and is closed.
pub fn serve_tcp(ns: &NetNs, addr: &str, reply: &str) {
    let listener = {
        let _in = ns.enter().expect("enter");
        TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    };
    let reply = reply.to_owned();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

/// Serves UDP on `addr` inside `ns`: every datagram is answered with `reply`.
pub fn serve_udp(ns: &NetNs, addr: &str, reply: &str) {
    let sock = {
        let _in = ns.enter().expect("enter");
        UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
    };
    let reply = reply.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((_, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(reply.as_bytes(), from);
        }
    });
}

/// What a TCP server at `to` says to a client in `from` (`None`: no answer within 2 s).
pub fn tcp_hello(from: &NetNs, to: &str) -> Option<String> {
    let to: SocketAddr = to.parse().expect("socket address");
    let mut c = {
        let _in = from.enter().expect("enter");
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).ok()?
    };
    c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut s = String::new();
    c.read_to_string(&mut s).ok()?;
    Some(s)
}

/// What a UDP server at `to` answers a datagram from `from`, sent from `src_port`
/// (0: any).
pub fn udp_hello(from: &NetNs, to: &str, src_port: u16) -> Option<String> {
    let to: SocketAddr = to.parse().expect("socket address");
    let bind = if to.is_ipv4() {
        format!("0.0.0.0:{src_port}")
    } else {
        format!("[::]:{src_port}")
    };
    let sock = {
        let _in = from.enter().expect("enter");
        UdpSocket::bind(&bind).ok()?
    };
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .ok()?;
    let mut buf = [0u8; 512];
    for _ in 0..3 {
        sock.send_to(b"hi", to).ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    None
}

/// A runtime attachment of `ns` as `eth0` with container id `id`, publishing `ports`
/// (`runtimeConfig.portMappings`; `Value::Null` for none).
pub fn attachment(ns: &NetNs, id: &str, ports: serde_json::Value) -> cni::runtime::RuntimeConf {
    let mut caps = serde_json::Map::new();
    if !ports.is_null() {
        caps.insert("portMappings".into(), ports);
    }
    cni::runtime::RuntimeConf {
        container_id: id.into(),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: cni::CniArgs::default(),
        capability_args: caps,
    }
}

/// Sends `bytes` over one TCP connection from `from` to a receiver at `to` inside
/// `to_ns`; the receiver's rate in bits per second, from its first byte to the last
/// (a bounded transfer: it ends when the bytes are through, or fails after 30 s).
pub fn tcp_rate(from: &NetNs, to_ns: &NetNs, to: &str, bytes: usize) -> f64 {
    let listener = {
        let _in = to_ns.enter().expect("enter");
        TcpListener::bind(to).unwrap_or_else(|e| panic!("bind {to}: {e}"))
    };
    let receiver = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().expect("accept");
        c.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut buf = vec![0u8; 64 * 1024];
        let (mut got, mut first) = (0usize, None);
        while got < bytes {
            let n = c.read(&mut buf).expect("receiving within 30 s");
            assert!(n > 0, "sender closed after {got} of {bytes} bytes");
            first.get_or_insert_with(std::time::Instant::now);
            got += n;
        }
        let secs = first.expect("bytes arrived").elapsed().as_secs_f64();
        (bytes as f64 * 8.0) / secs
    });
    let to: SocketAddr = to.parse().expect("socket address");
    let mut c = {
        let _in = from.enter().expect("enter");
        TcpStream::connect_timeout(&to, Duration::from_secs(2)).expect("connect")
    };
    c.write_all(&vec![0x5a; bytes]).expect("sending");
    let rate = receiver.join().expect("receiver");
    drop(c);
    rate
}

/// dnsmasq as the DHCP server of a "LAN" namespace: on its `eth0`, addresses from
/// `range` (`FIRST,LAST`), 2-minute leases renewed after 2 s (T1) and rebound after 4 s
/// (T2), its first address as router; killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    child: Child,
    pub leases_file: PathBuf,
}

impl Dnsmasq {
    pub fn start(lan: &NetNs, range: &str) -> Dnsmasq {
        let leases_file = PathBuf::from(format!("/run/{}.leases", random_name("dnsmasq")));
        let child = Command::new("nsenter")
            .arg(format!("--net={}", lan.path().display()))
            .args([
                "dnsmasq",
                "--keep-in-foreground",
                "--no-ping",
                "--port=0",
                "--interface=eth0",
                "--bind-interfaces",
                "--dhcp-option=option:T1,2",
                "--dhcp-option=option:T2,4",
                "--dhcp-authoritative",
                "--log-facility=-",
                "--conf-file=/dev/null",
            ])
            .arg(format!("--dhcp-range={range},2m"))
            .arg(format!("--dhcp-leasefile={}", leases_file.display()))
            .arg(format!("--pid-file=/run/{}.pid", random_name("dnsmasq")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq starts (Debian's dnsmasq-base)");
        // Ready when it has written its (empty) lease file.
        let t = Instant::now();
        while !leases_file.exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Dnsmasq { child, leases_file }
    }

    /// (expiry, address, client id) of each lease in dnsmasq's file.
    pub fn leases(&self) -> Vec<(u64, String, String)> {
        std::fs::read_to_string(&self.leases_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Some((
                    f.first()?.parse().ok()?,
                    f.get(2)?.to_string(),
                    f.get(4)?.to_string(),
                ))
            })
            .collect()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Raw Ethernet frames sent out of one interface of a namespace over an `AF_PACKET`
/// socket, as any host on that link can send them: the kernel's routing of the sender
/// plays no part (a frame to 127.0.0.1 at the host's MAC leaves as written).
#[derive(Debug)]
pub struct Frames {
    sock: std::os::fd::OwnedFd,
    /// The interface's link-layer address as the kernel gave it to the socket.
    dev: nix::sys::socket::LinkAddr,
    /// `eth0`'s MAC and the MAC of the neighbour the frames go to.
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: std::net::Ipv4Addr,
}

impl Frames {
    /// A packet socket on `eth0` of `ns`, aimed at the neighbour `gateway` (its MAC
    /// learnt by ARP). nix has no constructor for a `sockaddr_ll`, so the socket takes
    /// `eth0`'s from the first frame it sees leave there (a datagram to `gateway`).
    pub fn open(ns: &NetNs, gateway: std::net::Ipv4Addr) -> Frames {
        use nix::sys::socket::{
            recvfrom, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockProtocol, SockType,
        };
        use std::os::fd::AsRawFd;
        let _in = ns.enter().expect("enter");
        let sock = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .expect("an AF_PACKET socket");
        setsockopt(
            &sock,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 200_000),
        )
        .expect("SO_RCVTIMEO");
        let index = nix::net::if_::if_nametoindex("eth0").expect("eth0") as usize;
        let probe = UdpSocket::bind("0.0.0.0:0").expect("udp");
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut buf = [0u8; 2048];
        let dev = loop {
            assert!(Instant::now() < deadline, "no frame seen on eth0");
            let _ = probe.send_to(b"probe", (gateway, 9));
            match recvfrom::<nix::sys::socket::LinkAddr>(sock.as_raw_fd(), &mut buf) {
                Ok((_, Some(a))) if a.ifindex() == index => break a,
                _ => continue,
            }
        };
        let (src_mac, dst_mac) = netkit::block_on(async {
            let nl = Netlink::open_current()?;
            let link = nl.link_require("eth0").await?;
            let mac = |s: &str| netkit::parse_mac(s).expect("a MAC");
            loop {
                let known = nl.neigh_list().await?.into_iter().find_map(|n| {
                    (n.address == gateway && n.index == link.index).then_some(n.lladdr)?
                });
                if let Some(m) = known {
                    break Ok::<_, netkit::Error>((mac(&link.mac), mac(&m)));
                }
                assert!(Instant::now() < deadline, "{gateway} never answered ARP");
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .expect("eth0 and its neighbour");
        let src_ip = netkit::block_on(async {
            let nl = Netlink::open_current()?;
            let link = nl.link_require("eth0").await?;
            nl.addr_list(Some(link.index)).await
        })
        .expect("eth0's addresses")
        .into_iter()
        .find_map(|(_, a)| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            _ => None,
        })
        .expect("an IPv4 address on eth0");
        Frames {
            sock,
            dev,
            src_mac,
            dst_mac,
            src_ip,
        }
    }

    /// A TCP SYN from eth0's address to `to`, at the neighbour's MAC.
    pub fn syn(&self, to: SocketAddr) {
        self.send(|b| b.tcp(40000, to.port(), 1, 64240).syn(), to, &[]);
    }

    /// A UDP datagram from eth0's address to `to`, at the neighbour's MAC.
    pub fn datagram(&self, to: SocketAddr, payload: &[u8]) {
        self.send(|b| b.udp(40001, to.port()), to, payload);
    }

    fn send<S>(
        &self,
        transport: impl FnOnce(
            etherparse::PacketBuilderStep<etherparse::IpHeaders>,
        ) -> etherparse::PacketBuilderStep<S>,
        to: SocketAddr,
        payload: &[u8],
    ) where
        etherparse::PacketBuilderStep<S>: WriteFrame,
    {
        let std::net::IpAddr::V4(dst) = to.ip() else {
            panic!("IPv4 only: {to}")
        };
        let b = etherparse::PacketBuilder::ethernet2(self.src_mac, self.dst_mac).ipv4(
            self.src_ip.octets(),
            dst.octets(),
            64,
        );
        let frame = transport(b).frame(payload);
        nix::sys::socket::sendto(
            std::os::fd::AsRawFd::as_raw_fd(&self.sock),
            &frame,
            &self.dev,
            nix::sys::socket::MsgFlags::empty(),
        )
        .expect("sending a frame");
    }
}

/// A finished transport step of etherparse's builder, written out as one frame.
pub trait WriteFrame {
    fn frame(self, payload: &[u8]) -> Vec<u8>;
}

impl WriteFrame for etherparse::PacketBuilderStep<etherparse::TcpHeader> {
    fn frame(self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.size(payload.len()));
        self.write(&mut v, payload).expect("a TCP frame");
        v
    }
}

impl WriteFrame for etherparse::PacketBuilderStep<etherparse::UdpHeader> {
    fn frame(self, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.size(payload.len()));
        self.write(&mut v, payload).expect("a UDP frame");
        v
    }
}
