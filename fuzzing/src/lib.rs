//! The bodies of podnet's fuzz targets. Each takes any bytes, must never panic, and
//! asserts what must hold whatever the input: a decoded result re-encodes in every
//! version and reads back the same; a DNS answer is a well-formed response to the
//! question asked; a corrupt lease file or index never makes host-local give away or
//! delete someone else's address; a record read back is one its writer could have made.
//!
//! `fuzz/` (cargo-fuzz, `make fuzz`) drives them with libFuzzer; `tests/corpus.rs` replays
//! the seed corpus and every crash kept in `fuzzing/regressions/` under `cargo test`.

#![forbid(unsafe_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock};

use cni::skel::CmdArgs;
use cni::{CniResult, CniVersion};
use hickory_proto::op::{Message, MessageType};

/// A target's body.
pub type Body = fn(&[u8]);

/// The targets, by name (the fuzz/ binaries and the corpus directories).
pub const TARGETS: &[(&str, Body)] = &[
    ("cni_config", cni_config),
    ("dns_udp", dns_udp),
    ("dns_tcp", dns_tcp),
    ("ipam_files", ipam_files),
    ("records", records),
    ("dhcp_reply", dhcp_reply),
];

/// A plugin's stdin: the network config, its `runtimeConfig` (portmap's mappings, the
/// IPAM's ranges) and `prevResult`, and a conflist; results converted across versions.
pub fn cni_config(data: &[u8]) {
    if let Ok(list) = cni::NetConfList::from_bytes(data) {
        let _ = list.version();
    }
    let Ok(args) = CmdArgs::new("fuzz", "eth0", data) else {
        return;
    };
    if let Ok(conf) = portmap::PortmapConf::parse(&args) {
        let _ = conf.mappings();
    }
    let _ = ipam::config::HostLocalConf::parse(data, &args.args, args.version);
    if let Some(prev) = &args.prev_result {
        round_trip(prev);
        let _ = prev.host_interfaces();
    }
}

/// A DHCP server's reply as podnet's dhcp daemon reads it off the wire (any host on the
/// LAN can send one): a lease it grants is an address with a valid prefix whose renewal
/// comes no later than it expires, and its IPAM result survives every CNI version. The
/// same bytes as a dhcp network config: its options are checked or refused, never a panic.
pub fn dhcp_reply(data: &[u8]) {
    if let Some(l) = dhcp::proto::lease_of_reply(data) {
        assert!(l.address.prefix() <= 32);
        let _ = l.expires();
        round_trip(&l.result(i64::from(data.len() as u8)));
    }
    if let Ok(conf) = dhcp::conf::NetConf::parse(data) {
        let _ = conf.socket_path();
        let _ = conf.ipam().wanted(&cni::CniArgs::default());
    }
}

/// A result encoded in every version it can be expressed in reads back as itself, as far
/// as that version carries (the newest shapes carry everything).
fn round_trip(r: &CniResult) {
    for v in CniVersion::ALL {
        let Ok(value) = r.encode(*v) else {
            continue;
        };
        let (back, version) = CniResult::decode(&value)
            .unwrap_or_else(|e| panic!("{v}: our own encoding does not decode: {e:?}\n{value}"));
        assert_eq!(version, *v);
        let again = back
            .encode(*v)
            .unwrap_or_else(|e| panic!("{v}: a decoded result does not re-encode: {e:?}"));
        assert_eq!(again, value, "{v}: encode(decode(x)) != x");
    }
}

/// A zone with two networks and a few names: what the responder holds.
fn handler() -> &'static dns::answer::Handler {
    static H: OnceLock<dns::answer::Handler> = OnceLock::new();
    H.get_or_init(|| {
        let mut zone = dns::zone::Zone::default();
        for (net, subnet, names) in [
            ("podman", "10.88.0.0/16", &["hugo", "web"][..]),
            ("other", "fd00:1::/64", &["db"][..]),
        ] {
            let subnet: ipnetwork::IpNetwork = subnet.parse().expect("a subnet");
            zone.set_network(dns::store::NetworkConf {
                name: net.into(),
                domain: "dns.podman".into(),
                gateways: vec![subnet.network()],
                subnets: vec![subnet],
                bridge: format!("{net}0"),
                port: 53,
                upstreams: Vec::new(),
            });
            for (i, n) in names.iter().enumerate() {
                let host = match subnet {
                    ipnetwork::IpNetwork::V4(s) => {
                        IpAddr::V4(s.nth(10 + i as u32).expect("in range"))
                    }
                    ipnetwork::IpNetwork::V6(s) => IpAddr::V6(std::net::Ipv6Addr::from(
                        u128::from(s.network()) + 10 + i as u128,
                    )),
                };
                zone.insert(
                    net,
                    dns::store::Attachment {
                        container_id: format!("{n}0123456789abcdef"),
                        ifname: "eth0".into(),
                        names: vec![n.to_string(), format!("{n}-alias")],
                        ips: vec![host],
                        upstreams: vec![],
                        seq: i as u128,
                    },
                );
            }
        }
        dns::answer::Handler {
            zone: Arc::new(RwLock::new(zone)),
            forwarder: Arc::new(dns::forward::Forwarder::new(Path::new("/nonexistent"))),
        }
    })
}

/// A well-formed response to `query`: its id, QR set, and (when the query parsed and
/// asked one question) that question echoed.
fn check_response(query: &[u8], reply: &[u8]) {
    let m = Message::from_vec(reply)
        .unwrap_or_else(|e| panic!("our answer does not parse: {e}\n{reply:02x?}"));
    assert_eq!(m.metadata.message_type, MessageType::Response);
    assert_eq!(&reply[..2], &query[..2], "the query's id");
    if let Ok(q) = Message::from_vec(query) {
        if q.queries.len() == 1 && !m.queries.is_empty() {
            assert_eq!(m.queries, q.queries, "the question echoed");
        }
    }
}

/// One datagram through the responder's UDP path, from a client of the first network,
/// one of the second and one of neither.
pub fn dns_udp(data: &[u8]) {
    for src in ["10.88.0.77", "fd00:1::77", "192.0.2.1"] {
        let src: IpAddr = src.parse().expect("an address");
        if let Some(reply) = dns::udp::local_reply(handler(), data, src) {
            assert!(reply.len() <= 65535);
            check_response(data, &reply);
            if data.len() <= 512 && !has_edns(data) {
                assert!(reply.len() <= 512, "a plain UDP answer fits 512 bytes");
            }
        }
    }
}

fn has_edns(query: &[u8]) -> bool {
    Message::from_vec(query).is_ok_and(|m| m.edns.is_some())
}

/// The responder's TCP listener (hickory-server, the handler the responder gives it) on
/// loopback, started once; `make fuzz` runs in a namespace of its own.
fn tcp_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("a loopback listener (lo up?)");
                tx.send(listener.local_addr().expect("an address"))
                    .expect("the caller waits");
                let mut server = hickory_server::Server::new(handler().clone());
                server.register_listener(listener, std::time::Duration::from_secs(2), 64);
                std::future::pending::<()>().await;
            });
        });
        rx.recv().expect("the server starts")
    })
}

/// Bytes written as one TCP stream to the responder's listener (any framing: length
/// prefixes that lie, several messages, a truncated one); every answer read back is a
/// well-formed response.
pub fn dns_tcp(data: &[u8]) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(tcp_server()).expect("the listener accepts");
    s.set_read_timeout(Some(std::time::Duration::from_secs(3)))
        .expect("a timeout");
    let _ = s.write_all(data);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let mut rest = &out[..];
    while rest.len() >= 2 {
        let n = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let Some(frame) = rest.get(2..2 + n) else {
            panic!("a truncated answer frame: {} of {n} bytes", rest.len() - 2);
        };
        let m = Message::from_vec(frame)
            .unwrap_or_else(|e| panic!("our TCP answer does not parse: {e}"));
        assert_eq!(m.metadata.message_type, MessageType::Response);
        rest = &rest[2 + n..];
    }
    assert!(rest.is_empty(), "a stray byte after the last answer frame");
}

/// host-local's files as another writer, a crash or a person left them: `data` split at
/// NUL bytes into a lease file's content, an index bucket and `last_reserved_ip.0`.
/// Whatever they hold, releasing an attachment that holds nothing removes no lease, the
/// lease of a real holder survives every other release, and reading never panics.
pub fn ipam_files(data: &[u8]) {
    let mut parts = data.splitn(3, |b| *b == 0);
    let (lease, bucket, last) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let root = tmp.path();
    let net = root.join("net");
    let mine: IpAddr = "10.0.0.5".parse().expect("an address");
    let theirs: IpAddr = "10.0.0.6".parse().expect("an address");
    {
        let mut s = ipam::store::Store::open(root, "net").expect("open");
        assert!(s.reserve(mine, "c1", "eth0", 0).expect("reserve"));
    }
    // A lease written by someone else (the reference, a person): the index is rebuilt.
    std::fs::write(net.join(theirs.to_string()), lease).expect("write");
    std::fs::write(net.join("last_reserved_ip.0"), last).expect("write");
    let lease_exists = |ip: IpAddr| net.join(ip.to_string()).exists();
    let theirs_is = |s: &ipam::store::Store, id: &str, ifname: &str| {
        s.holder(theirs)
            .expect("a lease reads")
            .is_some_and(|h| h.matches(id, ifname))
    };
    let nobodys;
    {
        let mut s = ipam::store::Store::open(root, "net").expect("open");
        let mut held = s.leases_of("c1", "eth0").expect("leases");
        held.sort();
        let mut want = vec![mine];
        if theirs_is(&s, "c1", "eth0") {
            want.push(theirs); // the written lease names c1/eth0 itself
        }
        assert_eq!(held, want, "what c1/eth0 holds, as the lease files say");
        let _ = s.scan();
        let _ = s.last_reserved(0);
        nobodys = theirs_is(&s, "nobody", "eth9");
        s.release("nobody", "eth9").expect("release");
    }
    assert!(
        lease_exists(mine),
        "a release of nothing removed c1's lease"
    );
    assert_eq!(
        lease_exists(theirs),
        !nobodys,
        "a release took a lease it does not hold"
    );
    // The index itself corrupted in place (its stamp still current): every bucket.
    let buckets = root.join(".podnet-index/net/buckets");
    for b in 0..=255u8 {
        std::fs::write(buckets.join(format!("{b:02x}")), bucket).expect("write");
    }
    {
        let mut s = ipam::store::Store::open(root, "net").expect("open");
        let _ = s.leases_of("c1", "eth0");
        for (id, ifname) in [("nobody", "eth9"), ("c1", "eth1")] {
            let _ = s.release(id, ifname);
        }
    }
    assert!(
        lease_exists(mine),
        "c1/eth0's lease removed by another attachment's release (index: {:?})",
        String::from_utf8_lossy(bucket)
    );
    {
        let mut s = ipam::store::Store::open(root, "net").expect("open");
        let _ = s.release("c1", "eth0");
        let _ = s.retain(|_| true);
    }
}

/// The JSON records podnet reads back from disk: netctl's links, the engine's
/// containers, pods and networks' attachments, the nftables journal and the DNS store.
/// What decodes re-encodes to something that decodes the same.
pub fn records(data: &[u8]) {
    if let Some(r) = netctl::record::LinkRecord::decode(data) {
        assert_eq!(netctl::record::LinkRecord::decode(&r.encode()), Some(r));
    }
    fn again<T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        data: &[u8],
    ) {
        if let Ok(r) = serde_json::from_slice::<T>(data) {
            let bytes = serde_json::to_vec(&r).expect("records serialize");
            let back: T = serde_json::from_slice(&bytes).expect("our own record decodes");
            assert_eq!(back, r);
        }
    }
    again::<engine_glue::state::Container>(data);
    again::<engine_glue::state::Pod>(data);
    again::<netkit::nft::Record>(data);
    again::<dns::store::Attachment>(data);
    again::<dns::store::NetworkConf>(data);
}
