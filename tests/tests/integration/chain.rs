//! The Podman-style chain (bridge + host-local, portmap, firewall, tuning) on podnet's
//! plugins: real traffic through published ports, isolation between bridges, the admin
//! chain, a host firewall with a drop policy, and no leftovers.

use std::path::Path;

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{CniArgs, CniResult, NetConfList};
use netkit::NetNs;
use podnet_tests::net::{
    outside, ping, serve_tcp, serve_udp, sh, tcp_hello, time_until, udp_hello,
};
use podnet_tests::{privileged_test, Call, Sandbox, Subject};
use serde_json::{json, Value};

pub(crate) const PODMAN_FIXTURE: &str = include_str!("../../fixtures/podman4-default.conflist");

/// A conflist: bridge `br` on `subnet` (plus `subnet6` when given) and the given
/// chained plugins after it.
fn list(name: &str, br: &str, subnet: &str, after: Value) -> NetConfList {
    let mut ranges = vec![json!([{ "subnet": subnet }])];
    let mut routes = vec![json!({"dst": "0.0.0.0/0"})];
    if let Some(s6) = after.get("subnet6").and_then(Value::as_str) {
        ranges.push(json!([{ "subnet": s6 }]));
        routes.push(json!({"dst": "::/0"}));
    }
    let mut plugins = vec![
        json!({"type": "bridge", "bridge": br, "isGateway": true, "ipMasq": true,
        "hairpinMode": true, "ipam": {"type": "host-local", "ranges": ranges, "routes": routes}}),
    ];
    plugins.extend(after["plugins"].as_array().cloned().unwrap_or_default());
    let v = json!({"cniVersion": "1.0.0", "name": name, "plugins": plugins});
    podnet_tests::plugin::conflist(v.to_string().as_bytes())
}

fn runtime() -> CniRuntime {
    CniRuntime::new(vec![Subject::from_env().dir], "/var/lib/cni")
}

fn rc(ns: &NetNs, id: &str, ports: Value) -> RuntimeConf {
    podnet_tests::net::attachment(ns, id, ports)
}

fn ip4(r: &CniResult) -> String {
    r.ips
        .iter()
        .find(|i| i.address.is_ipv4())
        .unwrap()
        .address
        .ip()
        .to_string()
}

fn ruleset() -> String {
    sh(None, "nft list ruleset").1
}

fn records(owner: &str) -> usize {
    let dir = Path::new("/run/podnet/nft").join(owner);
    std::fs::read_dir(dir)
        .map(|groups| {
            groups
                .flatten()
                .map(|g| std::fs::read_dir(g.path()).map(|f| f.count()).unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// An answer within a few seconds (IPv6 addresses may still be tentative at first).
fn eventually(f: impl Fn() -> Option<String>) -> Option<String> {
    for _ in 0..10 {
        if let Some(s) = f() {
            return Some(s);
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    None
}

privileged_test! {
    fn published_ports_from_everywhere_then_gone() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let out = outside(&mut sb);
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let rt = runtime();
        let (a, b, c) = (sb.container("a"), sb.container("b"), sb.container("c"));
        serve_tcp(&a, "0.0.0.0:80", "hello from a");
        serve_tcp(&a, "0.0.0.0:81", "a on 81");
        serve_udp(&a, "0.0.0.0:53", "udp from a");
        let ports = json!([
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp"},
            {"hostPort": 9090, "containerPort": 81, "protocol": "tcp", "hostIP": "192.0.2.254"},
            {"hostPort": 7070, "containerPort": 80, "protocol": "sctp"}
        ]);
        let ra = rt.add(&l, &rc(&a, "ctr-a", ports.clone())).unwrap();
        let rb = rt.add(&l, &rc(&b, "ctr-b", Value::Null)).unwrap();
        let hello = Some("hello from a".to_string());
        // From the host's own addresses, from localhost, from outside.
        assert_eq!(tcp_hello(&host, "192.0.2.254:8080"), hello, "host address");
        assert_eq!(tcp_hello(&host, "10.88.0.1:8080"), hello, "bridge address");
        assert_eq!(tcp_hello(&host, "127.0.0.1:8080"), hello, "localhost");
        assert_eq!(netkit::sysctl::get(&host, "net.ipv4.conf.cni-podman0.route_localnet").unwrap(), "1");
        assert_eq!(tcp_hello(&out, "192.0.2.254:8080"), hello, "outside");
        assert_eq!(udp_hello(&out, "192.0.2.254:5353", 0).as_deref(), Some("udp from a"), "UDP");
        assert_eq!(udp_hello(&host, "127.0.0.1:5353", 0).as_deref(), Some("udp from a"), "UDP localhost");
        // hostIP: only on that address.
        assert_eq!(tcp_hello(&out, "192.0.2.254:9090").as_deref(), Some("a on 81"));
        assert_eq!(tcp_hello(&host, "10.88.0.1:9090"), None, "hostIP limits the mapping");
        // Hairpin: another container, and the container itself, through the host port.
        assert_eq!(tcp_hello(&b, "10.88.0.1:8080"), hello, "from a neighbour");
        assert_eq!(tcp_hello(&b, "192.0.2.254:8080"), hello, "from a neighbour, host address");
        assert_eq!(tcp_hello(&a, "192.0.2.254:8080"), hello, "from itself");
        // SCTP is published as an element like the others (no SCTP client here).
        let table = sh(None, "nft list map inet podnet pm4any").1;
        assert!(table.contains("sctp . 7070"), "{table}");
        assert!(table.contains(&format!("tcp . 8080 comment \"podman ctr-a eth0\" : {} . 80", ip4(&ra))), "{table}");
        rt.check(&l, &rc(&a, "ctr-a", ports.clone())).unwrap();

        // A port another container holds: refused, the holder named, nothing left.
        let e = rt.add(&l, &rc(&c, "ctr-c", json!([{"hostPort": 8080, "containerPort": 80}]))).unwrap_err();
        assert_eq!(e.code, cni::ErrorCode::PORT_IN_USE, "{e:?}");
        assert!(e.msg.contains("tcp/8080") && e.msg.contains("ctr-a"), "{}", e.msg);
        assert!(!ruleset().contains("ctr-c eth0\" :"), "no element of ctr-c");
        assert_eq!(records("portmap"), 1);
        rt.del(&l, &rc(&c, "ctr-c", Value::Null)).unwrap();

        // DEL from the container id alone, under a new network name (no netns, no
        // prevResult): the ports close.
        let portmap = Subject::from_env().plugin("portmap");
        let conf = json!({"cniVersion": "1.0.0", "name": "renamed", "type": "portmap"});
        Call::bare(&portmap, "DEL", &conf)
            .set("CNI_CONTAINERID", "ctr-a")
            .set("CNI_IFNAME", "eth0")
            .run()
            .ok();
        assert_eq!(tcp_hello(&out, "192.0.2.254:8080"), None, "closed after DEL");
        assert_eq!(udp_hello(&out, "192.0.2.254:5353", 0), None, "UDP closed after DEL");
        assert_eq!(records("portmap"), 0);
        assert_eq!(
            netkit::sysctl::get(&host, "net.ipv4.conf.cni-podman0.route_localnet").unwrap(),
            "0",
            "given back with the last localhost mapping"
        );
        rt.del(&l, &rc(&a, "ctr-a", ports)).unwrap();
        rt.del(&l, &rc(&b, "ctr-b", Value::Null)).unwrap();
        let rs = ruleset();
        assert!(!rs.contains("podnet"), "the last DEL removes every podnet table: {rs}");
        assert!(!rs.contains(&ip4(&rb)));
    }
}

privileged_test! {
    fn udp_flows_seen_before_the_mapping_are_flushed() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let rt = runtime();
        let (a, b) = (sb.container("a"), sb.container("b"));
        serve_udp(&a, "0.0.0.0:53", "udp from a");
        // A first container turns conntrack on in this namespace (its NAT rules need it).
        rt.add(&l, &rc(&b, "ctr-b", Value::Null)).unwrap();
        // The flow exists (a conntrack entry without NAT) before the port is published.
        assert_eq!(udp_hello(&out, "192.0.2.254:5353", 40000), None);
        let ports = json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp"}]);
        rt.add(&l, &rc(&a, "ctr-a", ports.clone())).unwrap();
        assert_eq!(
            udp_hello(&out, "192.0.2.254:5353", 40000).as_deref(),
            Some("udp from a"),
            "the same 5-tuple reaches the container once ADD flushed its stale entry"
        );
        rt.del(&l, &rc(&a, "ctr-a", ports)).unwrap();
        assert_eq!(udp_hello(&out, "192.0.2.254:5353", 40000), None, "and stops after DEL");
        rt.del(&l, &rc(&b, "ctr-b", Value::Null)).unwrap();
    }
}

privileged_test! {
    fn ipv6_mappings_and_a_thousand_port_range() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let br = podnet_tests::random_name("br");
        let l = list("dual", &br, "10.89.0.0/24", json!({"subnet6": "fd00:89::/64",
            "plugins": [{"type": "portmap", "capabilities": {"portMappings": true}}]}));
        let rt = runtime();
        let a = sb.container("a");
        serve_tcp(&a, "[::]:80", "dual a");
        let mut ports: Vec<Value> = (20000..21000)
            .map(|p| json!({"hostPort": p, "containerPort": 80}))
            .collect();
        ports.push(json!({"hostPort": 8443, "containerPort": 80, "hostIP": "fd00:89::1"}));
        rt.add(&l, &rc(&a, "ctr-a", Value::from(ports.clone()))).unwrap();
        let want = Some("dual a".to_string());
        assert_eq!(eventually(|| tcp_hello(&host, "[fd00:89::1]:20000")), want, "IPv6, any address");
        assert_eq!(eventually(|| tcp_hello(&host, "[fd00:89::1]:8443")), want, "IPv6 hostIP");
        assert_eq!(tcp_hello(&host, "10.89.0.1:20999"), want, "IPv4, last of the range");
        let listed = sh(None, "nft -j list map inet podnet pm4any").1;
        assert_eq!(listed.matches("\"comment\": \"dual ctr-a eth0\"").count(), 1000, "one element per port");
        rt.del(&l, &rc(&a, "ctr-a", Value::from(ports))).unwrap();
        assert_eq!(tcp_hello(&host, "10.89.0.1:20500"), None);
        assert!(!ruleset().contains("podnet"));
    }
}

fn fw_list(name: &str, br: &str, subnet: &str, policy: &str) -> NetConfList {
    list(
        name,
        br,
        subnet,
        json!({"plugins": [{"type": "firewall", "backend": "iptables", "ingressPolicy": policy}]}),
    )
}

privileged_test! {
    fn ingress_policies_and_the_admin_chain() {
        let mut sb = Sandbox::new();
        let rt = runtime();
        let names: Vec<String> = (1..=4).map(|i| podnet_tests::random_name(&format!("b{i}"))).collect();
        let n1 = fw_list("n1", &names[0], "10.91.0.0/24", "same-bridge");
        let n2 = fw_list("n2", &names[1], "10.92.0.0/24", "same-bridge");
        let n3 = fw_list("n3", &names[2], "10.93.0.0/24", "open");
        let n4 = fw_list("n4", &names[3], "10.94.0.0/24", "isolated");
        let (a1, a1b, a2, a3, a4) = (sb.container("a1"), sb.container("a1b"), sb.container("a2"),
            sb.container("a3"), sb.container("a4"));
        let r1 = rt.add(&n1, &rc(&a1, "a1", Value::Null)).unwrap();
        let r1b = rt.add(&n1, &rc(&a1b, "a1b", Value::Null)).unwrap();
        let r2 = rt.add(&n2, &rc(&a2, "a2", Value::Null)).unwrap();
        let r3 = rt.add(&n3, &rc(&a3, "a3", Value::Null)).unwrap();
        let r4 = rt.add(&n4, &rc(&a4, "a4", Value::Null)).unwrap();
        let (ip1, ip1b, ip2, ip3, ip4_) = (ip4(&r1), ip4(&r1b), ip4(&r2), ip4(&r3), ip4(&r4));
        assert!(ping(&a1, &ip1b), "same bridge");
        assert!(!ping(&a1, &ip2), "same-bridge networks do not reach each other");
        assert!(!ping(&a2, &ip1), "either way");
        assert!(ping(&a3, &ip1), "an open network reaches a same-bridge one");
        assert!(ping(&a1, &ip3), "and is reached by it");
        assert!(!ping(&a3, &ip4_), "nothing starts a flow into an isolated network");
        assert!(ping(&a4, &ip3), "an isolated network still reaches out");
        serve_tcp(&a4, "0.0.0.0:80", "a4");
        // The admin chain: the user's rules come first and podnet never touches them.
        assert!(sh(None, &format!("nft add rule inet podnet CNI-ADMIN ip daddr {ip3} drop")).0);
        assert!(!ping(&a1, &ip3), "an admin drop rule is honoured");
        rt.check(&n1, &rc(&a1, "a1", Value::Null)).unwrap();
        rt.del(&n1, &rc(&a1, "a1", Value::Null)).unwrap();
        let rs = ruleset();
        assert!(rs.contains(&format!("ip daddr {ip3} drop")), "admin rule kept: {rs}");
        let isolated = sh(None, "nft list set inet podnet isolated").1;
        assert!(isolated.contains(&names[0]), "a1b still holds its bridge's isolation: {isolated}");
        assert!(sh(None, "nft flush chain inet podnet CNI-ADMIN").0);
        assert!(ping(&a1b, &ip3), "reachable again once the admin chain is empty");
        // CHECK sees a missing element.
        assert!(sh(None, &format!("nft delete element inet podnet fw4 {{ {ip1b} }}")).0);
        let e = rt.check(&n1, &rc(&a1b, "a1b", Value::Null)).unwrap_err();
        assert_eq!(e.code, cni::ErrorCode::CHECK_FAILED, "{e:?}");
        for (l, ns, id) in [(&n1, &a1b, "a1b"), (&n2, &a2, "a2"), (&n3, &a3, "a3"), (&n4, &a4, "a4")] {
            rt.del(l, &rc(ns, id, Value::Null)).unwrap();
        }
        let rs = ruleset();
        assert!(!rs.contains("podnet"), "isolation and admin jumps go with the last container: {rs}");
    }
}

privileged_test! {
    fn the_last_del_keeps_a_table_holding_a_users_admin_rule() {
        let mut sb = Sandbox::new();
        let rt = runtime();
        let br = podnet_tests::random_name("adm");
        let n = fw_list("adm", &br, "10.95.0.0/24", "same-bridge");
        let a = sb.container("a");
        let r = rt.add(&n, &rc(&a, "a", Value::Null)).unwrap();
        let ip = ip4(&r);
        assert!(sh(None, "nft add rule inet podnet CNI-ADMIN ip daddr 192.0.2.1 drop").0);
        rt.del(&n, &rc(&a, "a", Value::Null)).unwrap();
        let rs = ruleset();
        assert!(rs.contains("ip daddr 192.0.2.1 drop"), "the user's rule outlives the last DEL: {rs}");
        assert!(!rs.contains(&ip), "no element of the container is left: {rs}");
        assert!(!rs.contains("table bridge podnet"), "the bridge table goes: {rs}");
        // The next container finds the kept table; with the admin chain emptied, its DEL
        // (the last again) removes everything.
        rt.add(&n, &rc(&a, "a", Value::Null)).unwrap();
        assert!(ruleset().contains("ip daddr 192.0.2.1 drop"), "ADD leaves the admin chain alone");
        assert!(sh(None, "nft flush chain inet podnet CNI-ADMIN").0);
        rt.del(&n, &rc(&a, "a", Value::Null)).unwrap();
        let rs = ruleset();
        assert!(!rs.contains("podnet"), "nothing of podnet is left: {rs}");
    }
}

privileged_test! {
    fn a_host_firewall_with_a_drop_policy() {
        let mut sb = Sandbox::new();
        let _outside = outside(&mut sb);
        let rt = runtime();
        let br = podnet_tests::random_name("br");
        let bridge_only = list("plain", &br, "10.95.0.0/24", json!({}));
        let l = fw_list("plain", &br, "10.95.0.0/24", "open");
        assert!(sh(None, "nft add table inet hostfw && nft add chain inet hostfw forward '{ type filter hook forward priority 0; policy drop; }'").0);
        let a = sb.container("a");
        rt.add(&bridge_only, &rc(&a, "a", Value::Null)).unwrap();
        assert!(!ping(&a, "192.0.2.1"), "the host firewall drops forwarded traffic");
        rt.del(&bridge_only, &rc(&a, "a", Value::Null)).unwrap();
        rt.add(&l, &rc(&a, "a", Value::Null)).unwrap();
        assert!(ping(&a, "192.0.2.1"), "firewall opens the host's drop-policy chain for the bridge");
        let chain = sh(None, "nft list chain inet hostfw forward").1;
        assert_eq!(chain.matches(&format!("podnet bridge:{br}")).count(), 2, "{chain}");
        // Other tables coming and going leave podnet's alone.
        assert!(sh(None, "nft add table inet other && nft add chain inet other c && nft flush table inet other && nft delete table inet other").0);
        assert!(sh(None, "iptables -F 2>/dev/null; true").0);
        assert!(ping(&a, "192.0.2.1"));
        rt.del(&l, &rc(&a, "a", Value::Null)).unwrap();
        let chain = sh(None, "nft list chain inet hostfw forward").1;
        assert!(!chain.contains("podnet"), "the last container's DEL closes it again: {chain}");
        assert!(!sh(None, "nft list tables").1.contains("podnet"));
    }
}

privileged_test! {
    fn a_hundred_containers_come_and_go_in_parallel() {
        let mut sb = Sandbox::new();
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let nss: Vec<NetNs> = (0..100).map(|_| sb.container("p")).collect();
        let run = |add: bool| {
            std::thread::scope(|s| {
                for chunk in nss.chunks(10).enumerate() {
                    let l = &l;
                    s.spawn(move || {
                        let rt = runtime();
                        for (j, ns) in chunk.1.iter().enumerate() {
                            let i = chunk.0 * 10 + j;
                            let conf = rc(ns, &format!("p{i}"), json!([{"hostPort": 30000 + i, "containerPort": 80}]));
                            if add { rt.add(l, &conf).unwrap(); } else { rt.del(l, &conf).unwrap(); }
                        }
                    });
                }
            });
        };
        run(true);
        let listed = sh(None, "nft -j list map inet podnet pm4any").1;
        assert_eq!(listed.matches("\"comment\": \"podman p").count(), 100);
        assert_eq!(records("portmap"), 100);
        run(false);
        let rs = ruleset();
        assert!(!rs.contains("podnet"), "{rs}");
        assert_eq!(records("portmap") + records("firewall") + records("bridge"), 0);
        let leases = std::fs::read_dir("/var/lib/cni/networks/podman").unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("10."))
            .count();
        assert_eq!(leases, 0);
    }
}

privileged_test! {
    fn a_container_restarted_with_its_fixed_address_answers_at_once() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let rt = runtime();
        let hugo = sb.container("hugo");
        serve_tcp(&hugo, "0.0.0.0:80", "hugo");
        let mut conf = rc(&hugo, "hugo", json!([{"hostPort": 8080, "containerPort": 80}]));
        conf.args = CniArgs::parse("IgnoreUnknown=1;IP=10.88.0.10").unwrap();
        let before = rt.add(&l, &conf).unwrap();
        assert_eq!(ip4(&before), "10.88.0.10");
        assert_eq!(tcp_hello(&host, "10.88.0.10:80").as_deref(), Some("hugo"));
        assert_eq!(tcp_hello(&host, "127.0.0.1:8080").as_deref(), Some("hugo"));
        // Restart: the same address on a new veth (new MAC), then traffic straight away.
        rt.del(&l, &conf).unwrap();
        let after = rt.add(&l, &conf).unwrap();
        assert_eq!(ip4(&after), "10.88.0.10");
        assert_ne!(before.interfaces[2].mac, after.interfaces[2].mac);
        assert_eq!(tcp_hello(&host, "10.88.0.10:80").as_deref(), Some("hugo"), "direct, at once");
        assert_eq!(tcp_hello(&host, "127.0.0.1:8080").as_deref(), Some("hugo"), "published, at once");
        rt.del(&l, &conf).unwrap();
    }
}

/// The ruleset with each set's elements sorted (nft lists an interval set's elements in
/// insertion order, which a restore may not repeat).
fn ruleset_sorted() -> String {
    let text = ruleset().replace(",\n\t\t\t     ", ", ");
    text.lines()
        .map(|l| match l.split_once("elements = { ") {
            Some((head, rest)) => {
                let mut elems: Vec<&str> = rest.trim_end_matches(" }").split(", ").collect();
                elems.sort_unstable();
                format!("{head}elements = {{ {} }}", elems.join(", "))
            }
            None => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The pid of this sandbox's nftables watcher, if any.
fn watcher() -> Option<u32> {
    podnet_tests::sandbox::processes_here()
        .into_iter()
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"watch-nftables"))
        })
}

privileged_test! {
    fn a_flushed_ruleset_heals_by_itself_and_reload_puts_it_back_idempotently() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let rt = runtime();
        let (a, b) = (sb.container("a"), sb.container("b"));
        serve_tcp(&a, "0.0.0.0:80", "hello from a");
        serve_tcp(&out, "0.0.0.0:7000", "outside");
        let ports = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        rt.add(&l, &rc(&a, "ctr-a", ports.clone())).unwrap();
        rt.add(&l, &rc(&b, "ctr-b", Value::Null)).unwrap();
        let hello = Some("hello from a".to_string());
        // Published (DNAT) and masqueraded (the outside has no route back) traffic.
        let works = || {
            tcp_hello(&out, "192.0.2.254:8080") == hello
                && tcp_hello(&b, "192.0.2.1:7000").as_deref() == Some("outside")
        };
        assert!(works());
        let watcher_pid = watcher().expect("the first commit started the watcher");
        let healthy = ruleset_sorted();

        let mut recoveries = Vec::new();
        for _ in 0..3 {
            let (ok, e) = sh(None, "nft flush ruleset");
            assert!(ok, "{e}");
            let took = time_until(std::time::Duration::from_secs(5), works).expect("published ports and masquerade come back");
            recoveries.push(took);
        }
        println!("recovery after nft flush ruleset: {recoveries:?}");
        assert!(recoveries.iter().all(|t| *t < std::time::Duration::from_secs(1)), "{recoveries:?}");
        assert_eq!(ruleset_sorted(), healthy, "the same rules and elements as before");
        assert_eq!(watcher(), Some(watcher_pid), "one watcher throughout");

        // By command (no watcher): the same state, and running it again changes nothing.
        let netctl = podnet_tests::subject::workspace_bin("netctl");
        let reload = || {
            let o = std::process::Command::new(&netctl).args(["reload", "--json"]).output().unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            serde_json::from_slice::<Value>(&o.stdout).unwrap()
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(watcher_pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
        assert!(time_until(std::time::Duration::from_secs(5), || watcher().is_none()).is_some());
        sh(None, "nft flush ruleset");
        assert!(!works(), "nothing heals without the watcher");
        let r = reload();
        assert_eq!((r["attachments"].as_u64(), r["tablesCreated"].as_bool()), (Some(5), Some(true)), "{r}");
        assert!(works());
        assert_eq!(ruleset_sorted(), healthy);
        assert_eq!(reload()["tablesCreated"], false);
        assert_eq!(ruleset_sorted(), healthy, "idempotent");

        // The next commit starts a watcher again; it leaves with the last record.
        let c = sb.container("c");
        rt.add(&l, &rc(&c, "ctr-c", Value::Null)).unwrap();
        assert!(watcher().is_some());
        for (ns, id, p) in [(&a, "ctr-a", ports), (&b, "ctr-b", Value::Null), (&c, "ctr-c", Value::Null)] {
            rt.del(&l, &rc(ns, id, p)).unwrap();
        }
        assert!(!ruleset().contains("podnet"));
        assert!(time_until(std::time::Duration::from_secs(5), || watcher().is_none()).is_some(), "the watcher exits with the last record");
    }
}

privileged_test! {
    fn an_interface_name_with_a_quote_is_data_not_nft_syntax() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        let l = podnet_tests::plugin::conflist(PODMAN_FIXTURE.as_bytes());
        let rt = runtime();
        let a = sb.container("a");
        serve_tcp(&a, "0.0.0.0:80", "quoted");
        let ports = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        let mut conf = rc(&a, "ctr-q", ports);
        conf.ifname = "e\"x".into();
        // The first container of the host: the tables are made, the elements (whose
        // comments name the interface) go over netlink, never into nft text.
        rt.add(&l, &conf).unwrap();
        assert_eq!(tcp_hello(&out, "192.0.2.254:8080").as_deref(), Some("quoted"));
        rt.check(&l, &conf).unwrap();
        rt.del(&l, &conf).unwrap();
        assert_eq!(tcp_hello(&out, "192.0.2.254:8080"), None);
        assert!(!ruleset().contains("podnet"), "nothing left");
    }
}

privileged_test! {
    fn the_first_container_of_a_host_runs_no_nft_process() {
        // An `nft` ahead of the real one on PATH (which the plugins inherit) counts
        // every run.
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("runs");
        let real = sh(None, "command -v nft").1.trim().to_owned();
        let wrapper = dir.path().join("nft");
        std::fs::write(&wrapper, format!("#!/bin/sh\necho \"$*\" >> {}\nexec {real} \"$@\"\n", log.display())).unwrap();
        assert!(sh(None, &format!("chmod 755 {}", wrapper.display())).0);
        let path = std::env::var("PATH").unwrap_or_default();
        std::env::set_var("PATH", format!("{}:{path}", dir.path().display()));
        // What ran since the last look.
        let take = || {
            let r = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            r
        };

        let mut sb = Sandbox::new();
        let rt = runtime();
        let dns = podnet_tests::plugin::conflist(include_bytes!("../../fixtures/podman4-dnsname.conflist"));
        let (a, b) = (sb.container("a"), sb.container("b"));
        let ports = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);
        // bridge + host-local, portmap, firewall (its admin chain), tuning, dnsname: the
        // tables, every element and chain over netlink.
        rt.add(&dns, &rc(&a, "a", ports.clone())).unwrap();
        rt.add(&dns, &rc(&b, "b", Value::Null)).unwrap();
        assert_eq!(take(), "", "nft processes run by the ADDs");
        assert!(ruleset().contains("chain CNI-ADMIN"), "the admin chain was made");
        assert_eq!(take(), "list ruleset\n", "the wrapper sees the test's own nft");
        rt.del(&dns, &rc(&b, "b", Value::Null)).unwrap();
        rt.del(&dns, &rc(&a, "a", ports)).unwrap();
        assert_eq!(take(), "", "nft processes run by the DELs");
        assert!(!sh(None, "nft list tables").1.contains("podnet"), "the last DEL dropped the tables");
    }
}
