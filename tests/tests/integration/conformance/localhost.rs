//! Ports published on 127.0.0.1 against hosts that address 127.0.0.1 to the host from
//! outside (CVE-2020-8558): a LAN neighbour on the uplink and a container on the bridge
//! send crafted frames (an `AF_PACKET` socket: a TCP SYN and a UDP datagram to 127.0.0.1 at
//! the host's MAC). Counters in the target namespaces say what arrived. podnet drops it; the reference DNATs it to the container and lets the
//! neighbour reach a host service bound to 127.0.0.1 (asserted as its deviation).

use std::net::SocketAddr;
use std::time::Duration;

use cni::runtime::CniRuntime;
use netkit::NetNs;
use podnet_tests::net::{
    attachment, outside, serve_tcp, serve_udp, sh, tcp_hello, udp_hello, Frames,
};
use podnet_tests::{privileged_test, Deviation, Sandbox, Subject};
use serde_json::json;

const FIXTURE: &str = include_str!("../../../fixtures/podman4-default.conflist");
const BRIDGE: &str = "cni-podman0";

/// Named counters, in a table of `ns`'s own, of what reaches it at `hook`.
fn count(ns: Option<&NetNs>, hook: &str, counters: &[(&str, &str)]) {
    let mut script = format!(
        "add table ip probe\nadd chain ip probe c {{ type filter hook {hook} priority -300; }}\n"
    );
    for (name, rule) in counters {
        script.push_str(&format!(
            "add counter ip probe {name}\nadd rule ip probe c {rule} counter name {name}\n"
        ));
    }
    let (ok, out) = sh(ns, &format!("printf '{script}' | nft -f -"));
    assert!(ok, "{out}");
}

fn packets(ns: Option<&NetNs>, name: &str) -> u64 {
    let (ok, out) = sh(ns, &format!("nft list counter ip probe {name}"));
    assert!(ok, "{out}");
    let words: Vec<&str> = out.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| *w == "packets")
        .expect("a counter");
    words[i + 1].parse().unwrap()
}

/// A crafted TCP SYN and UDP datagram to 127.0.0.1:`tcp` and :`udp`, leaving `from`'s
/// `eth0` at the MAC of its neighbour `at` (the host's end of that link).
fn knock(from: &NetNs, at: &str, tcp: u16, udp: u16) {
    let frames = Frames::open(from, at.parse().unwrap());
    let to = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
    frames.syn(to(tcp));
    frames.datagram(to(udp), b"knock");
    std::thread::sleep(Duration::from_millis(100));
}

privileged_test! {
    fn localhost_ports_are_closed_to_the_lan_and_to_neighbours() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let host = sb.host();
        let lan = outside(&mut sb);
        let list = podnet_tests::plugin::conflist(FIXTURE.as_bytes());
        let rt = CniRuntime::new(vec![s.dir.clone()], "/var/lib/cni");
        let (a, b, c) = (sb.container("a"), sb.container("b"), sb.container("c"));
        serve_tcp(&a, "0.0.0.0:80", "a");
        serve_udp(&a, "0.0.0.0:53", "a over udp");
        serve_tcp(&host, "127.0.0.1:2222", "host only");
        let localnet = || netkit::sysctl::get(&host, &format!("net.ipv4.conf.{BRIDGE}.route_localnet")).unwrap();

        // A container published on a host address only: no localhost flow to route.
        let c_ports = json!([{"hostPort": 9090, "containerPort": 80, "protocol": "tcp", "hostIP": "192.0.2.254"}]);
        rt.add(&list, &attachment(&c, "ctr-c", c_ports.clone())).unwrap();
        let only_where_needed = localnet();
        if s.deviates(Deviation::RouteLocalnetForEveryMapping) {
            assert_eq!(only_where_needed, "1");
        } else {
            assert_eq!(only_where_needed, "0", "no mapping reached from 127.0.0.1");
        }

        let ports = json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"},
            {"hostPort": 8081, "containerPort": 80, "protocol": "tcp"}
        ]);
        let ra = rt.add(&list, &attachment(&a, "ctr-a", ports.clone())).unwrap();
        let rb = rt.add(&list, &attachment(&b, "ctr-b", serde_json::Value::Null)).unwrap();
        let a_ip = ra.ips[0].address.ip().to_string();
        assert_eq!(localnet(), "1", "localhost mappings need route_localnet");

        // What must keep working: the host's own localhost, hairpin, the bridge.
        assert_eq!(tcp_hello(&host, "127.0.0.1:8080").as_deref(), Some("a"), "from the host");
        assert_eq!(udp_hello(&host, "127.0.0.1:5353", 0).as_deref(), Some("a over udp"));
        assert_eq!(tcp_hello(&b, "10.88.0.1:8081").as_deref(), Some("a"), "hairpin");
        assert_eq!(tcp_hello(&b, &format!("{a_ip}:80")).as_deref(), Some("a"), "bridge-local");
        assert_eq!(tcp_hello(&lan, "192.0.2.254:8081").as_deref(), Some("a"), "a port on every address");

        count(Some(&a), "prerouting", &[("syn", "tcp dport 80 tcp flags syn"), ("dgram", "udp dport 53")]);
        count(None, "input", &[("hostsvc", "iifname != \"lo\" tcp dport 2222")]);
        let b_gw = rb.ips[0].gateway.unwrap().to_string();

        knock(&lan, "192.0.2.254", 8080, 5353);
        let from_lan = (packets(Some(&a), "syn"), packets(Some(&a), "dgram"));
        knock(&b, &b_gw, 8080, 5353);
        let from_neighbour = (packets(Some(&a), "syn") - from_lan.0, packets(Some(&a), "dgram") - from_lan.1);
        knock(&b, &b_gw, 2222, 9);
        let host_service = packets(None, "hostsvc");
        if s.deviates(Deviation::LocalhostPortsReachableFromOutside) {
            assert!(from_lan.0 > 0 && from_lan.1 > 0, "the reference's exposure (LAN): {from_lan:?}");
            assert!(from_neighbour.0 > 0 && from_neighbour.1 > 0, "(neighbour): {from_neighbour:?}");
            assert!(host_service > 0, "(host service on 127.0.0.1)");
        } else {
            assert_eq!(from_lan, (0, 0), "TCP and UDP to 127.0.0.1 from the LAN reach the container");
            assert_eq!(from_neighbour, (0, 0), "from a neighbour container");
            assert_eq!(host_service, 0, "a neighbour reaches a host service on 127.0.0.1");
        }
        // The published localhost port still works from the host after all that.
        assert_eq!(tcp_hello(&host, "127.0.0.1:8080").as_deref(), Some("a"));

        // The last mapping reached from 127.0.0.1 goes: route_localnet as it was.
        rt.del(&list, &attachment(&a, "ctr-a", ports)).unwrap();
        let after = localnet();
        if s.deviates(Deviation::RouteLocalnetForEveryMapping) {
            assert_eq!(after, "1");
        } else {
            assert_eq!(after, "0", "restored with the last localhost mapping");
        }
        rt.del(&list, &attachment(&b, "ctr-b", serde_json::Value::Null)).unwrap();
        rt.del(&list, &attachment(&c, "ctr-c", c_ports)).unwrap();
    }
}
