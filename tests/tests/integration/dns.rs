//! The DNS responder and `dnsname`: real queries (UDP and TCP) from container
//! namespaces, through the chain Podman 4 generates for a network with DNS.

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{CniArgs, CniResult, NetConfList};
use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use netkit::NetNs;
use podnet_tests::dns::{
    alive, query, responder_pid, send_raw, serve_upstream, try_query, NoAnswer,
};
use podnet_tests::net::{outside, sh};
use podnet_tests::{privileged_test, Sandbox, Subject};
use serde_json::{json, Value};

const DNSNAME_FIXTURE: &str = include_str!("../../fixtures/podman4-dnsname.conflist");

fn runtime() -> CniRuntime {
    CniRuntime::new(vec![Subject::from_env().dir], "/var/lib/cni")
}

/// bridge + host-local (`subnet`, and `subnet6` when given) + dnsname with `dns` keys,
/// in CNI 1.1.
fn net(name: &str, br: &str, subnet: &str, subnet6: Option<&str>, dns: Value) -> NetConfList {
    let mut ranges = vec![json!([{ "subnet": subnet }])];
    if let Some(s6) = subnet6 {
        ranges.push(json!([{ "subnet": s6 }]));
    }
    let mut dnsname =
        json!({"type": "dnsname", "domainName": "dns.podman", "capabilities": {"aliases": true}});
    for (k, v) in dns.as_object().cloned().unwrap_or_default() {
        dnsname[k] = v;
    }
    let v = json!({"cniVersion": "1.1.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true,
         "ipam": {"type": "host-local", "ranges": ranges, "routes": [{"dst": "0.0.0.0/0"}]}},
        dnsname
    ]});
    podnet_tests::plugin::conflist(v.to_string().as_bytes())
}

/// An attachment named `name` (K8S_POD_NAME, as Podman passes it) with `aliases` on
/// `network`.
fn ctr(
    ns: &NetNs,
    id: &str,
    ifname: &str,
    name: &str,
    network: &str,
    aliases: &[&str],
) -> RuntimeConf {
    let mut caps = serde_json::Map::new();
    caps.insert("aliases".into(), json!({ network: aliases }));
    RuntimeConf {
        container_id: id.into(),
        netns: Some(ns.path().to_path_buf()),
        ifname: ifname.into(),
        args: CniArgs::parse(&format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={name};K8S_POD_NAME={name}"
        ))
        .unwrap(),
        capability_args: caps,
    }
}

fn ip_of(r: &CniResult, v4: bool) -> String {
    r.ips
        .iter()
        .find(|i| i.address.is_ipv4() == v4)
        .unwrap()
        .address
        .ip()
        .to_string()
}

fn a(ns: &NetNs, server: &str, name: &str) -> Vec<String> {
    query(ns, server, name, RecordType::A, false)
        .map(|a| a.data)
        .unwrap_or_default()
}

/// `a`, retried for a few seconds (a backlog of junk may still be draining).
fn eventually_a(ns: &NetNs, server: &str, name: &str) -> Vec<String> {
    for _ in 0..5 {
        let got = a(ns, server, name);
        if !got.is_empty() {
            return got;
        }
    }
    Vec::new()
}

fn code(ns: &NetNs, server: &str, name: &str, t: RecordType) -> Option<ResponseCode> {
    query(ns, server, name, t, false).map(|a| a.code)
}

privileged_test! {
    fn names_aliases_ptr_nodata_nxdomain_and_forwarding_over_udp_and_tcp() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        serve_upstream(&out, "192.0.2.1", "192.0.2.77");
        let l = net("web", "pn-web0", "10.90.0.0/24", Some("fd90::/64"),
            json!({"upstreams": ["192.0.2.2", "192.0.2.1"]}));
        let rt = runtime();
        let (hugo, proxy) = (sb.container("hugo"), sb.container("proxy"));
        let rh = rt.add(&l, &ctr(&hugo, "0123456789abcdef", "eth0", "hugo", "web", &["blog"])).unwrap();
        let rp = rt.add(&l, &ctr(&proxy, "fedcba9876543210", "eth0", "proxy", "web", &[])).unwrap();
        // The result points the container at the responder.
        assert_eq!(rp.dns.nameservers, ["10.90.0.1", "fd90::1"]);
        assert_eq!(rp.dns.search, ["dns.podman"]);
        let (h4, h6) = (ip_of(&rh, true), ip_of(&rh, false));
        let gw = "10.90.0.1";
        for tcp in [false, true] {
            for name in ["hugo", "hugo.dns.podman", "HUGO.Dns.Podman", "blog", "blog.dns.podman", "0123456789ab"] {
                let got = query(&proxy, gw, name, RecordType::A, tcp).unwrap();
                assert_eq!(got.data, [h4.as_str()], "{name} over {}", if tcp { "TCP" } else { "UDP" });
                assert!(got.authoritative);
            }
        }
        assert_eq!(query(&proxy, gw, "hugo", RecordType::AAAA, false).unwrap().data, [h6.as_str()]);
        // Over the IPv6 gateway too (once DAD is done).
        let mut v6 = None;
        for _ in 0..20 {
            v6 = query(&proxy, "fd90::1", "hugo", RecordType::A, false);
            if v6.is_some() { break; }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        assert_eq!(v6.unwrap().data, [h4.as_str()]);
        // PTR, both families.
        let rev4 = format!("{}.in-addr.arpa", h4.split('.').rev().collect::<Vec<_>>().join("."));
        assert_eq!(query(&proxy, gw, &rev4, RecordType::PTR, false).unwrap().data, ["hugo.dns.podman."]);
        let nibbles: String = h6.parse::<std::net::Ipv6Addr>().unwrap().octets().iter()
            .map(|b| format!("{b:02x}")).collect();
        let rev6 = format!("{}.ip6.arpa", nibbles.chars().rev().map(String::from).collect::<Vec<_>>().join("."));
        assert_eq!(query(&proxy, gw, &rev6, RecordType::PTR, false).unwrap().data, ["hugo.dns.podman."]);
        // NODATA for other types of a known name, NXDOMAIN for unknown ones.
        let mx = query(&proxy, gw, "hugo.dns.podman", RecordType::MX, false).unwrap();
        assert_eq!((mx.code, mx.data.len()), (ResponseCode::NoError, 0));
        assert_eq!(code(&proxy, gw, "nobody.dns.podman", RecordType::A), Some(ResponseCode::NXDomain));
        assert_eq!(code(&proxy, gw, "nobody", RecordType::A), Some(ResponseCode::NXDomain));
        // Forwarded, with a dead upstream listed first; a truncated upstream answer is
        // fetched again over TCP.
        assert_eq!(a(&proxy, gw, "example.com"), ["192.0.2.77"]);
        assert_eq!(query(&proxy, gw, "example.org", RecordType::A, true).unwrap().data, ["192.0.2.77"]);
        assert_eq!(a(&proxy, gw, "big.example.com"), ["192.0.2.77"]);
        // A client on no network is refused (no open resolver), and nothing listens on
        // the host's other addresses.
        sh(Some(&out), "ip route add 10.90.0.0/24 via 192.0.2.254");
        assert_eq!(code(&out, gw, "example.com", RecordType::A), Some(ResponseCode::Refused));
        assert_eq!(query(&out, "192.0.2.254", "hugo", RecordType::A, false), None);
        // CHECK really checks; port 53 is open on the bridge in podnet's table.
        rt.check(&l, &ctr(&proxy, "fedcba9876543210", "eth0", "proxy", "web", &[])).unwrap();
        let set = sh(None, "nft list set inet podnet dns").1;
        assert!(set.contains("\"pn-web0\" . udp . 53") && set.contains("\"pn-web0\" . tcp . 53"), "{set}");
        rt.status(&l).unwrap();

        // Malformed packets (truncated, random, a response, a bad label) crash nothing.
        let good = {
            let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
            q.extend_from_slice(b"\x04hugo\x00\x00\x01\x00\x01");
            q
        };
        let mut seed = 0x2545F4914F6CDD1Du64;
        for i in 0..3000 {
            seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
            let mut p = good.clone();
            match i % 4 {
                0 => p.truncate((seed % p.len() as u64) as usize),
                1 => { let k = (seed % p.len() as u64) as usize; p[k] = (seed >> 8) as u8; }
                2 => p = seed.to_le_bytes().repeat((seed % 64) as usize),
                _ => { p[2] |= 0x80; }
            }
            send_raw(&proxy, gw, &p);
        }
        let after = eventually_a(&proxy, gw, "hugo");
        assert_eq!(after, [h4.as_str()], "still answering after the fuzzing: {}",
            std::fs::read_to_string("/run/podnet/dns/responder.log").unwrap_or_default());

        // DEL removes exactly that container's names; the last one closes everything.
        rt.del(&l, &ctr(&hugo, "0123456789abcdef", "eth0", "hugo", "web", &["blog"])).unwrap();
        assert_eq!(code(&proxy, gw, "hugo", RecordType::A), Some(ResponseCode::NXDomain));
        assert_eq!(a(&proxy, gw, "proxy"), [ip_of(&rp, true)]);
        let pid = responder_pid().unwrap();
        rt.del(&l, &ctr(&proxy, "fedcba9876543210", "eth0", "proxy", "web", &[])).unwrap();
        assert!(!alive(pid), "the responder exits with its last network");
        assert!(!sh(None, "nft list tables").1.contains("podnet"));
        assert!(std::fs::read_dir("/run/podnet/dns/nets").unwrap().next().is_none());
    }
}

privileged_test! {
    fn networks_are_isolated_and_a_multi_network_container_sees_both() {
        let mut sb = Sandbox::new();
        let la = net("neta", "pn-a0", "10.91.0.0/24", None, json!({}));
        let lb = net("netb", "pn-b0", "10.92.0.0/24", None, json!({}));
        let rt = runtime();
        let (x, y, both) = (sb.container("x"), sb.container("y"), sb.container("xy"));
        let rx = rt.add(&la, &ctr(&x, "aaaa0000000001", "eth0", "x", "neta", &[])).unwrap();
        let ry = rt.add(&lb, &ctr(&y, "bbbb0000000001", "eth0", "y", "netb", &[])).unwrap();
        rt.add(&la, &ctr(&both, "cccc0000000001", "eth0", "both", "neta", &[])).unwrap();
        rt.add(&lb, &ctr(&both, "cccc0000000001", "eth1", "both", "netb", &[])).unwrap();
        let (ga, gb) = ("10.91.0.1", "10.92.0.1");
        // x sees neta only, whichever gateway it asks.
        assert_eq!(code(&x, ga, "y", RecordType::A), Some(ResponseCode::NXDomain));
        assert_eq!(code(&x, gb, "y.dns.podman", RecordType::A), Some(ResponseCode::NXDomain));
        assert_eq!(a(&x, ga, "both").len(), 1);
        assert_eq!(code(&y, gb, "x", RecordType::A), Some(ResponseCode::NXDomain));
        // The container on both networks sees both.
        assert_eq!(a(&both, ga, "x"), [ip_of(&rx, true)]);
        assert_eq!(a(&both, ga, "y"), [ip_of(&ry, true)]);
        assert_eq!(a(&both, gb, "x.dns.podman"), [ip_of(&rx, true)]);
        for (l, ns, id, ifname, name, n) in [
            (&la, &x, "aaaa0000000001", "eth0", "x", "neta"),
            (&lb, &y, "bbbb0000000001", "eth0", "y", "netb"),
            (&la, &both, "cccc0000000001", "eth0", "both", "neta"),
            (&lb, &both, "cccc0000000001", "eth1", "both", "netb"),
        ] {
            rt.del(l, &ctr(ns, id, ifname, name, n, &[])).unwrap();
        }
        assert!(responder_pid().is_none(), "pidfile removed with the last network");
    }
}

/// The first answer to `name` from the probe, as a resolver gets it: a failure of the
/// client's own socket (not of the server) is tried once more and reported with the
/// outcome; a timeout or an undecodable answer is not retried.
fn first_answer(probe: &NetNs, name: &str) -> Result<podnet_tests::dns::Answer, String> {
    match try_query(probe, "10.89.0.1", name, RecordType::A, false) {
        Ok(a) => Ok(a),
        Err(NoAnswer::Socket(why)) => try_query(probe, "10.89.0.1", name, RecordType::A, false)
            .map_err(|e| format!("{why}, then {e:?}")),
        Err(e) => Err(format!("{e:?}")),
    }
}

privileged_test! {
    fn fifty_parallel_adds_resolve_at_once_and_dels_vanish_at_once() {
        let mut sb = Sandbox::new();
        let l = podnet_tests::plugin::conflist(DNSNAME_FIXTURE.as_bytes());
        let probe = sb.container("probe");
        let rt = runtime();
        rt.add(&l, &ctr(&probe, "probe00000001", "eth0", "probe", "web", &[])).unwrap();
        let nss: Vec<NetNs> = (0..50).map(|_| sb.container("p")).collect();
        let failures = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for (i, ns) in nss.iter().enumerate() {
                let (l, failures, probe) = (&l, &failures, &probe);
                s.spawn(move || {
                    let rt = runtime();
                    let name = format!("svc{i}");
                    let c = ctr(ns, &format!("par{i:010}"), "eth0", &name, "web", &[]);
                    let r = rt.add(l, &c).unwrap();
                    // The very first query after ADD returns.
                    let got = first_answer(probe, &name);
                    if got.as_ref().map(|g| &g.data[..]) != Ok(&[ip_of(&r, true)][..]) {
                        failures.lock().unwrap().push(format!("{name} after ADD: {got:?}"));
                    }
                    rt.del(l, &c).unwrap();
                    let got = first_answer(probe, &name);
                    if got.as_ref().map(|g| g.code) != Ok(ResponseCode::NXDomain) {
                        failures.lock().unwrap().push(format!("{name} after DEL: {got:?}"));
                    }
                });
            }
        });
        let failures = failures.into_inner().unwrap();
        if !failures.is_empty() {
            // What the kernel and the responder held when it went wrong.
            for cmd in ["ip -br addr", "ip route", "ip neigh"] {
                eprintln!("probe: {cmd}\n{}", sh(Some(&probe), cmd).1);
            }
            let log = std::fs::read_to_string("/run/podnet/dns/responder.log").unwrap_or_default();
            eprintln!("responder log:\n{log}");
        }
        assert_eq!(failures, Vec::<String>::new());
        rt.del(&l, &ctr(&probe, "probe00000001", "eth0", "probe", "web", &[])).unwrap();
    }
}

privileged_test! {
    fn a_killed_responder_is_restarted_by_the_next_add_with_every_record() {
        let mut sb = Sandbox::new();
        // CNI 1.1 for STATUS and GC.
        let l = net("web", "cni-podman1", "10.89.0.0/24", None, json!({}));
        let rt = runtime();
        let (c1, c2, c3) = (sb.container("c"), sb.container("c"), sb.container("c"));
        let r1 = rt.add(&l, &ctr(&c1, "kill000000001", "eth0", "one", "web", &[])).unwrap();
        rt.add(&l, &ctr(&c2, "kill000000002", "eth0", "two", "web", &[])).unwrap();
        let pid = responder_pid().unwrap();
        sh(None, &format!("kill -9 {pid}"));
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(query(&c2, "10.89.0.1", "one", RecordType::A, false), None, "down");
        let st = rt.status(&l).unwrap_err();
        assert_eq!(st.code, cni::ErrorCode::PLUGIN_NOT_AVAILABLE, "{st:?}");
        let r3 = rt.add(&l, &ctr(&c3, "kill000000003", "eth0", "three", "web", &[])).unwrap();
        assert_ne!(responder_pid().unwrap(), pid);
        assert_eq!(a(&c3, "10.89.0.1", "one"), [ip_of(&r1, true)]);
        assert_eq!(a(&c1, "10.89.0.1", "three"), [ip_of(&r3, true)]);
        assert!(!a(&c1, "10.89.0.1", "two").is_empty());
        rt.status(&l).unwrap();
        // GC drops the records of attachments no longer valid. The runtime's GC DELs
        // the attachments it has cached (three); two's cache entry is gone, so only the
        // plugin's own GC can drop its record.
        std::fs::remove_file("/var/lib/cni/results/web-kill000000002-eth0").unwrap();
        rt.gc(&l, &[cni::Attachment { container_id: "kill000000001".into(), ifname: "eth0".into() }]).unwrap();
        assert!(!std::path::Path::new("/run/podnet/dns/nets/web/kill000000002.eth0").exists());
        assert_eq!(code(&c1, "10.89.0.1", "two", RecordType::A), Some(ResponseCode::NXDomain));
        assert_eq!(a(&c1, "10.89.0.1", "one"), [ip_of(&r1, true)]);
        for (ns, id, n) in [(&c1, "kill000000001", "one"), (&c2, "kill000000002", "two"), (&c3, "kill000000003", "three")] {
            rt.del(&l, &ctr(ns, id, "eth0", n, "web", &[])).unwrap();
        }
    }
}

privileged_test! {
    fn a_taken_port_53_fails_the_add_and_leaves_nothing() {
        let mut sb = Sandbox::new();
        let l = podnet_tests::plugin::conflist(DNSNAME_FIXTURE.as_bytes());
        let rt = runtime();
        // Someone else (a dnsmasq) holds the gateway's port 53: bind it before the
        // first ADD, on an address that exists only once the bridge does.
        sh(None, "ip link add cni-podman1 type bridge && ip addr add 10.89.0.1/24 dev cni-podman1 && ip link set cni-podman1 up");
        let squatter = std::net::UdpSocket::bind("10.89.0.1:53").unwrap();
        let c = sb.container("c");
        let e = rt.add(&l, &ctr(&c, "taken00000001", "eth0", "one", "web", &[])).unwrap_err();
        assert_eq!(e.code, cni::ErrorCode::DNS_RESPONDER, "{e:?}");
        assert!(e.msg.contains("10.89.0.1:53"), "{}", e.msg);
        assert!(std::fs::read_dir("/run/podnet/dns/nets").map(|mut d| d.next().is_none()).unwrap_or(true));
        assert!(!sh(None, "nft list ruleset").1.contains("udp . 53"));
        drop(squatter);
        // The runtime undoes the rest of the chain, as Podman does after a failed ADD.
        rt.del(&l, &ctr(&c, "taken00000001", "eth0", "one", "web", &[])).unwrap();
        rt.add(&l, &ctr(&c, "taken00000001", "eth0", "one", "web", &[])).unwrap();
        assert!(!a(&c, "10.89.0.1", "one").is_empty());
        rt.del(&l, &ctr(&c, "taken00000001", "eth0", "one", "web", &[])).unwrap();
    }
}

privileged_test! {
    fn a_host_input_chain_with_a_drop_policy_lets_dns_through_while_needed() {
        let mut sb = Sandbox::new();
        sh(None, "nft add table inet hostfw && nft 'add chain inet hostfw input { type filter hook input priority 0; policy drop; }'");
        let l = podnet_tests::plugin::conflist(DNSNAME_FIXTURE.as_bytes());
        let rt = runtime();
        let c = sb.container("c");
        let r = rt.add(&l, &ctr(&c, "drop000000001", "eth0", "one", "web", &[])).unwrap();
        assert_eq!(a(&c, "10.89.0.1", "one"), [ip_of(&r, true)], "UDP through the host's drop policy");
        assert_eq!(query(&c, "10.89.0.1", "one", RecordType::A, true).unwrap().data, [ip_of(&r, true)], "TCP too");
        let chain = sh(None, "nft list chain inet hostfw input").1;
        assert_eq!(chain.matches("podnet dns:cni-podman1").count(), 2, "{chain}");
        rt.del(&l, &ctr(&c, "drop000000001", "eth0", "one", "web", &[])).unwrap();
        let chain = sh(None, "nft list chain inet hostfw input").1;
        assert!(!chain.contains("podnet"), "closed with the last container: {chain}");
    }
}

privileged_test! {
    fn an_uncreatable_state_dir_leaves_nothing_and_del_succeeds() {
        // dnsname ADD fails when its stateDir cannot be created; the chain is rolled back
        // and the port-53 elements are gone; DEL of the same config (and of one whose
        // domainName ADD refuses) succeeds: there is nothing to undo.
        let mut sb = Sandbox::new();
        let ns = sb.container("c");
        std::fs::write("/run/not-a-dir", "").unwrap();
        let l = net("badstate", "cni-badst0", "10.94.0.0/24", None, json!({"stateDir": "/run/not-a-dir/dns"}));
        let rt = runtime();
        let c = ctr(&ns, "bad-state", "eth0", "web", "badstate", &[]);
        let e = rt.add(&l, &c).unwrap_err();
        assert!(e.msg.contains("not-a-dir"), "{}", e.msg);
        let left: Vec<_> = netkit::nft::list_elements().unwrap().into_iter().filter(|e| e.set == "dns").collect();
        assert!(left.is_empty(), "no port-53 element left: {left:?}");
        rt.del(&l, &c).expect("DEL of the same config succeeds");
        let bad_domain = net("baddom", "cni-baddo0", "10.94.1.0/24", None, json!({"domainName": "not a domain!"}));
        let d = ctr(&ns, "bad-domain", "eth0", "web", "baddom", &[]);
        assert!(rt.add(&bad_domain, &d).is_err(), "ADD refuses the domain");
        rt.del(&bad_domain, &d).expect("DEL with a domainName ADD refuses succeeds");
    }
}
