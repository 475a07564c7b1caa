//! podnet's netavark backend driven directly with Podman 5's documents (the recorded
//! contract's shapes), where Podman's lock would hide a race: parallel setups on one
//! network without any caller lock.

use std::io::Write;
use std::process::{Command, Stdio};

use hickory_proto::rr::RecordType;
use podnet_tests::dns::{query, serve_upstream};
use podnet_tests::net::{outside, serve_tcp, sh, tcp_hello};
use podnet_tests::privileged_test;
use podnet_tests::sandbox::Sandbox;
use serde_json::{json, Value};

fn netavark(verb: &str, netns: &std::path::Path, doc: &Value) -> (bool, String) {
    netavark_with(&[], verb, netns, doc)
}

/// [`netavark`] with more global flags.
fn netavark_with(
    flags: &[&str],
    verb: &str,
    netns: &std::path::Path,
    doc: &Value,
) -> (bool, String) {
    netavark_at(&ours(), flags, &[], verb, netns, doc)
}

/// The workspace's build of the backend.
fn ours() -> std::path::PathBuf {
    podnet_tests::subject::workspace_bin("netavark")
}

/// [`netavark_with`] with the binary at `bin` and environment variables (`NETAVARK_FW`,
/// `NETAVARK_DNS_PORT`).
fn netavark_at(
    bin: &std::path::Path,
    flags: &[&str],
    env: &[(&str, &str)],
    verb: &str,
    netns: &std::path::Path,
    doc: &Value,
) -> (bool, String) {
    let mut child = Command::new(bin)
        .envs(env.iter().copied())
        .args(["--config", "/run/containers/networks", "--rootless=false"])
        .args(flags)
        .arg("--aardvark-binary=/usr/lib/podman/aardvark-dns")
        .arg(verb)
        .arg(netns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("netavark runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn doc(i: usize) -> Value {
    let id = format!("{:064x}", 0xc0ffee_u64 + i as u64);
    json!({
        "container_id": id,
        "container_name": format!("web{i}"),
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 18000 + i, "range": 1, "protocol": "tcp"}],
        "networks": {"blog": {"static_ips": [format!("10.89.0.{}", 10 + i)], "aliases": [format!("alias{i}"), &id[..12]], "interface_name": "eth0"}},
        "container_hostname": &id[..12],
        "network_info": {"blog": {"name": "blog", "id": "8abd79176f370a655d0e9b30e2e83f3f9f67fd006b043f06f29e9756968eda3d",
            "driver": "bridge", "network_interface": "podman1", "subnets": [{"subnet": "10.89.0.0/24", "gateway": "10.89.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": true, "ipam_options": {"driver": "host-local"}}}
    })
}

privileged_test! {
    fn twenty_parallel_setups_without_a_lock_lose_no_name_or_port() {
        const N: usize = 20;
        let mut sb = Sandbox::new();
        let nss: Vec<_> = (0..N).map(|_| sb.container("nv")).collect();
        let outs: Vec<(bool, String)> = std::thread::scope(|s| {
            let hs: Vec<_> = nss.iter().enumerate()
                .map(|(i, ns)| s.spawn(move || netavark("setup", ns.path(), &doc(i))))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (i, (ok, out)) in outs.iter().enumerate() {
            assert!(ok, "setup {i}: {out}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(v["blog"]["interfaces"]["eth0"]["subnets"][0]["ipnet"], format!("10.89.0.{}/24", 10 + i));
            assert_eq!(v["blog"]["dns_server_ips"], json!(["10.89.0.1"]));
            assert_eq!(v["blog"]["dns_search_domains"], json!(["dns.podman"]));
        }
        // Every name, alias and published port of every container.
        for i in 0..N {
            for name in [format!("web{i}"), format!("alias{i}.dns.podman")] {
                let a = query(&nss[0], "10.89.0.1", &name, RecordType::A, false);
                assert_eq!(a.map(|a| a.data), Some(vec![format!("10.89.0.{}", 10 + i)]), "{name}");
            }
            serve_tcp(&nss[i], "0.0.0.0:80", &format!("web{i}"));
        }
        for i in 0..N {
            let got = tcp_hello(&sb.host(), &format!("127.0.0.1:{}", 18000 + i));
            assert_eq!(got.as_deref(), Some(format!("web{i}").as_str()), "port {}", 18000 + i);
        }
        std::thread::scope(|s| {
            for (i, ns) in nss.iter().enumerate() {
                s.spawn(move || {
                    let (ok, out) = netavark("teardown", ns.path(), &doc(i));
                    assert!(ok && out.trim().is_empty(), "teardown {i}: {out}");
                });
            }
        });
        assert!(query(&nss[0], "10.89.0.1", "web0", RecordType::A, false).is_none(), "names gone");
        let (exists, links) = sh(None, "ip -o link show podman1");
        assert!(!exists, "the last teardown removes the bridge: {links}");
        let rules = sh(None, "nft list ruleset").1;
        assert!(!rules.contains("10.89.0."), "no element left: {rules}");
        // A teardown with nothing left to undo succeeds.
        let (ok, out) = netavark("teardown", nss[0].path(), &doc(0));
        assert!(ok, "{out}");
    }
}

privileged_test! {
    fn errors_are_json_naming_the_field_and_leave_nothing() {
        let mut sb = Sandbox::new();
        let ns = sb.container("bad");
        let mut d = doc(0);
        d["port_mappings"][0]["protocol"] = json!("icmp");
        let (ok, out) = netavark("setup", ns.path(), &d);
        assert!(!ok);
        let v: Value = serde_json::from_str(out.trim()).expect("one JSON object on stdout");
        assert!(v["error"].as_str().unwrap().contains("port_mappings[0].protocol"), "{v}");
        let mut d = doc(0);
        d["networks"]["blog"]["static_ips"] = json!(["10.99.0.5"]);
        let (ok, out) = netavark("setup", ns.path(), &d);
        assert!(!ok && out.contains("networks.blog.static_ips"), "{out}");
        d["networks"]["blog"]["static_ips"] = json!(["10.89.0.10"]);
        d["network_info"]["blog"]["options"] = json!({"vlan": "4095"});
        let (ok, out) = netavark("setup", ns.path(), &d);
        assert!(!ok && out.contains("network_info.blog.options.vlan"), "{out}");
        // A VRF that does not exist (none can on this machine kind's kernel).
        d["network_info"]["blog"]["options"] = json!({"vrf": "nope"});
        let (ok, out) = netavark("setup", ns.path(), &d);
        let v: Value = serde_json::from_str(out.trim()).expect("one JSON object on stdout");
        let e = v["error"].as_str().unwrap_or_default();
        assert!(!ok && e.contains("vrf: no VRF named \"nope\"") && e.contains("(code 7)"), "{out}");
        assert_eq!(e.matches("no VRF named").count(), 1, "said once: {e}");
        assert!(!sh(None, "ip link show podman1").0, "no bridge left");
        let links = sh(Some(&ns), "ip -o link show eth0").0;
        assert!(!links, "no interface left in the container");
        assert!(!sh(None, "nft list ruleset").1.contains("10.89.0."));
    }
}

privileged_test! {
    fn a_networks_metric_and_a_containers_own_dns_servers() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        assert!(sh(Some(&out), "ip addr add 192.0.2.2/24 dev eth0").0);
        serve_upstream(&out, "192.0.2.1", "192.0.2.77");
        serve_upstream(&out, "192.0.2.2", "192.0.2.88");
        let (own, plain) = (sb.container("own"), sb.container("plain"));
        let mut docs = [doc(0), doc(1)];
        for d in &mut docs {
            d["network_info"]["blog"]["options"] = json!({"metric": "250"});
            d["network_info"]["blog"]["network_dns_servers"] = json!(["192.0.2.1"]);
            d["network_info"]["blog"]["routes"] = json!([{"destination": "198.51.100.0/24", "gateway": "10.89.0.1"}]);
        }
        docs[0]["dns_servers"] = json!(["192.0.2.2"]);
        for (ns, d) in [(&own, &docs[0]), (&plain, &docs[1])] {
            let (ok, out) = netavark("setup", ns.path(), d);
            assert!(ok, "{out}");
        }
        let routes = sh(Some(&own), "ip -4 route show").1;
        assert!(routes.contains("default via 10.89.0.1 dev eth0 proto boot metric 250")
            || routes.contains("default via 10.89.0.1 dev eth0 metric 250"), "{routes}");
        // A route of the network without its own metric gets netavark's 100.
        assert!(routes.contains("198.51.100.0/24 via 10.89.0.1 dev eth0") && routes.contains("metric 100"), "{routes}");
        // --dns: that container's forwarded queries go to its own upstream, its
        // neighbour's to the network's; names stay local for both.
        let a = |ns| query(ns, "10.89.0.1", "example.com", RecordType::A, false).map(|a| a.data);
        assert_eq!(a(&own), Some(vec!["192.0.2.88".to_string()]));
        assert_eq!(a(&plain), Some(vec!["192.0.2.77".to_string()]));
        let web1 = query(&own, "10.89.0.1", "web1", RecordType::A, false).map(|a| a.data);
        assert_eq!(web1, Some(vec!["10.89.0.11".to_string()]));
        for (ns, d) in [(&own, &docs[0]), (&plain, &docs[1])] {
            let (ok, out) = netavark("teardown", ns.path(), d);
            assert!(ok, "{out}");
        }
    }
}

privileged_test! {
    /// Podman 5's ipvlan driver on podnet's backend: two containers on one parent reach
    /// each other and the LAN with the parent's MAC. This machine kind has no ipvlan
    /// driver: run under qemu by scripts/vm-test.sh.
    #[ignore = "needs the ipvlan driver: runs under qemu (scripts/vm-test.sh)"]
    fn ipvlan_networks_put_containers_on_the_parents_lan() {
        let mut sb = Sandbox::new();
        let lan = sb.container("lan");
        let parent = podnet_tests::random_name("ivp");
        podnet_tests::net::wire(&lan, &parent, "10.96.0.254/24", "10.96.0.1/24");
        let parent_mac = podnet_tests::link_state(&sb.host(), &parent).0.mac;
        let nss: Vec<_> = (0..2).map(|_| sb.container("ni")).collect();
        let doc = |i: usize| {
            json!({
                "container_id": format!("{:064x}", 0xbeef_u64 + i as u64), "container_name": format!("i{i}"),
                "networks": {"lan": {"static_ips": [format!("10.96.0.{}", 20 + i)], "interface_name": "eth0"}},
                "network_info": {"lan": {"name": "lan", "id": "7abd79176f370a655d0e9b30e2e83f3f9f67fd006b043f06f29e9756968eda3d",
                    "driver": "ipvlan", "network_interface": parent, "options": {"mode": "l2"},
                    "subnets": [{"subnet": "10.96.0.0/24", "gateway": "10.96.0.1"}],
                    "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
            })
        };
        for (i, ns) in nss.iter().enumerate() {
            let (ok, out) = netavark("setup", ns.path(), &doc(i));
            assert!(ok, "setup {i}: {out}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            let eth0 = &v["lan"]["interfaces"]["eth0"];
            assert_eq!(eth0["subnets"][0]["ipnet"], format!("10.96.0.{}/24", 20 + i), "{v}");
            assert_eq!(eth0["mac_address"], parent_mac.as_str(), "the parent's MAC: {v}");
        }
        let details = sh(Some(&nss[0]), "ip -d link show eth0; ip route").1;
        assert!(details.contains("ipvlan  mode l2") && details.contains("default via 10.96.0.1 dev eth0"), "{details}");
        assert!(sh(Some(&nss[0]), "ping -c 1 -W 2 10.96.0.21 && ping -c 1 -W 2 10.96.0.1").0, "to the other container and the LAN");
        assert!(podnet_tests::net::ping(&lan, "10.96.0.20"), "the LAN reaches the container");
        for (i, ns) in nss.iter().enumerate() {
            let (ok, out) = netavark("teardown", ns.path(), &doc(i));
            assert!(ok, "teardown {i}: {out}");
            assert!(!sh(Some(ns), "ip link show eth0").0, "the ipvlan is gone");
        }
        assert!(sh(None, &format!("ip link show {parent}")).0, "the parent stays");
    }
}

privileged_test! {
    fn macvlan_networks_put_containers_on_the_parents_lan() {
        let mut sb = Sandbox::new();
        let lan = sb.container("lan");
        let parent = podnet_tests::random_name("mvp");
        podnet_tests::net::wire(&lan, &parent, "10.96.0.254/24", "10.96.0.1/24");
        let nss: Vec<_> = (0..2).map(|_| sb.container("nm")).collect();
        let doc = |i: usize| {
            let id = format!("{:064x}", 0xfeed_u64 + i as u64);
            json!({
                "container_id": id, "container_name": format!("m{i}"),
                "networks": {"lan": {"static_ips": [format!("10.96.0.{}", 10 + i)], "interface_name": "eth0",
                                     "static_mac": format!("02:42:0a:60:00:{:02x}", 10 + i)}},
                "network_info": {"lan": {"name": "lan", "id": "9abd79176f370a655d0e9b30e2e83f3f9f67fd006b043f06f29e9756968eda3d",
                    "driver": "macvlan", "network_interface": parent, "options": {"mode": "bridge"},
                    "subnets": [{"subnet": "10.96.0.0/24", "gateway": "10.96.0.1"}],
                    "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
            })
        };
        for (i, ns) in nss.iter().enumerate() {
            let (ok, out) = netavark("setup", ns.path(), &doc(i));
            assert!(ok, "setup {i}: {out}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            let eth0 = &v["lan"]["interfaces"]["eth0"];
            assert_eq!(eth0["subnets"][0]["ipnet"], format!("10.96.0.{}/24", 10 + i), "{v}");
            assert_eq!(eth0["mac_address"], format!("02:42:0a:60:00:{:02x}", 10 + i), "{v}");
        }
        let details = sh(Some(&nss[0]), "ip -d link show eth0; ip route").1;
        assert!(details.contains("macvlan mode bridge"), "{details}");
        assert!(details.contains("default via 10.96.0.1 dev eth0") && details.contains("metric 100"), "{details}");
        assert!(sh(Some(&nss[0]), "ping -c 1 -W 2 10.96.0.11 && ping -c 1 -W 2 10.96.0.1").0, "to the other container and the LAN");
        assert!(podnet_tests::net::ping(&lan, "10.96.0.10"), "the LAN reaches the container");
        let (_, tables) = sh(None, "nft list tables");
        assert!(!tables.contains("podnet"), "no NAT or filter for macvlan: {tables}");
        for (i, ns) in nss.iter().enumerate() {
            let (ok, out) = netavark("teardown", ns.path(), &doc(i));
            assert!(ok, "teardown {i}: {out}");
            assert!(!sh(Some(ns), "ip link show eth0").0, "the macvlan is gone");
        }
        assert!(sh(None, &format!("ip link show {parent}")).0, "the parent stays");
        // A DHCP network (Podman assigns nothing): the LAN's dnsmasq leases the address
        // through podnet's dhcp plugin, which starts its daemon; setup answers the lease
        // (what Podman records); teardown releases it.
        let server = podnet_tests::net::Dnsmasq::start(&lan, "10.96.0.100,10.96.0.150");
        let mut dhcp = doc(0);
        let net = &mut dhcp["network_info"]["lan"];
        net["ipam_options"]["driver"] = json!("dhcp");
        net["subnets"] = json!([]);
        dhcp["networks"]["lan"].as_object_mut().unwrap().remove("static_ips");
        let (ok, out) = netavark("setup", nss[0].path(), &dhcp);
        assert!(ok, "dhcp setup: {out}");
        let v: Value = serde_json::from_str(out.trim()).unwrap();
        let lease = v["lan"]["interfaces"]["eth0"]["subnets"][0].clone();
        let ip = lease["ipnet"].as_str().unwrap_or_default().to_owned();
        assert!(ip.starts_with("10.96.0.1") && ip.ends_with("/24") && lease["gateway"] == "10.96.0.1", "{v}");
        assert_eq!(server.leases().len(), 1, "{:?}", server.leases());
        let routes = sh(Some(&nss[0]), "ip route").1;
        assert!(routes.contains("default via 10.96.0.1 dev eth0") && routes.contains("metric 100"), "{routes}");
        assert!(podnet_tests::net::ping(&lan, ip.split('/').next().unwrap()), "the LAN reaches the leased address");
        let (ok, out) = netavark("teardown", nss[0].path(), &dhcp);
        assert!(ok, "dhcp teardown: {out}");
        assert!(server.leases().is_empty(), "released: {:?}", server.leases());
        assert!(!sh(Some(&nss[0]), "ip link show eth0").0);
        // An unknown IPAM driver is refused by name.
        dhcp["network_info"]["lan"]["ipam_options"]["driver"] = json!("magic");
        let (ok, out) = netavark("setup", nss[0].path(), &dhcp);
        assert!(!ok && out.contains("ipam_options") && out.contains("\"error\""), "{out}");
        assert!(!sh(Some(&nss[0]), "ip link show eth0").0);
    }
}

/// The VM's kernel loads no nf_tables modules: its bridge tests run without podnet's
/// firewall (as `--firewall-driver none`).
const NO_FW: &[&str] = &["--firewall-driver", "none"];

/// A bridge network document with `options` (network `name` on bridge `bridge`).
fn vlan_doc(i: usize, name: &str, bridge: &str, options: Value) -> Value {
    let id = format!("{:064x}", 0x7a11_u64 + i as u64);
    json!({
        "container_id": id, "container_name": format!("v{i}"),
        "networks": {name: {"static_ips": [format!("10.97.0.{}", 10 + i)], "interface_name": "eth0"}},
        "network_info": {name: {"name": name, "id": format!("{:064x}", 0xabc_u64 + bridge.len() as u64),
            "driver": "bridge", "network_interface": bridge, "options": options,
            "subnets": [{"subnet": "10.97.0.0/24", "gateway": "10.97.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}}
    })
}

privileged_test! {
    /// `vlan`: the bridge filters VLANs, each port's PVID is the network's VLAN (VLAN 1
    /// kept, as netavark), and two networks on one bridge with different VLANs cannot
    /// reach each other while containers of one VLAN can. This machine kind's bridge has
    /// no VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING): run under qemu by
    /// scripts/vm-test.sh.
    #[ignore = "needs bridge VLAN filtering: runs under qemu (scripts/vm-test.sh)"]
    fn vlan_networks_filter_on_the_bridge() {
        let mut sb = Sandbox::new();
        let nss: Vec<_> = (0..3).map(|_| sb.container("vl")).collect();
        let docs = [
            vlan_doc(0, "v5", "podman7", json!({"vlan": "5"})),
            vlan_doc(1, "v5", "podman7", json!({"vlan": "5"})),
            vlan_doc(2, "v6", "podman7", json!({"vlan": "6"})),
        ];
        for (ns, d) in nss.iter().zip(&docs) {
            let (ok, out) = netavark_with(NO_FW, "setup", ns.path(), d);
            assert!(ok, "setup: {out}");
        }
        let br = sh(None, "ip -d link show podman7").1;
        assert!(br.contains("vlan_filtering 1"), "{br}");
        let vlans = sh(None, "bridge vlan show").1;
        let ports: Vec<&str> = vlans.lines().filter(|l| l.contains("PVID")).collect();
        assert_eq!(ports.iter().filter(|l| l.contains(" 5 PVID Egress Untagged")).count(), 2, "{vlans}");
        assert_eq!(ports.iter().filter(|l| l.contains(" 6 PVID Egress Untagged")).count(), 1, "{vlans}");
        assert!(sh(Some(&nss[0]), "ping -c 1 -W 2 10.97.0.11").0, "same VLAN");
        assert!(!sh(Some(&nss[0]), "ping -c 1 -W 1 10.97.0.12").0, "another VLAN");
        assert!(!sh(Some(&nss[2]), "ping -c 1 -W 1 10.97.0.11").0, "another VLAN");
        for (ns, d) in nss.iter().zip(&docs) {
            let (ok, out) = netavark_with(NO_FW, "teardown", ns.path(), d);
            assert!(ok, "teardown: {out}");
        }
        assert!(!sh(None, "ip link show podman7").0, "the bridge goes with its last container");
    }
}

privileged_test! {
    /// `vrf`: the bridge is made in the VRF, so its subnet's route is in the VRF's
    /// table, and the container reaches its gateway. This machine kind has no vrf
    /// driver: run under qemu by scripts/vm-test.sh.
    #[ignore = "needs the vrf driver: runs under qemu (scripts/vm-test.sh)"]
    fn vrf_networks_put_the_bridge_in_the_vrf() {
        let mut sb = Sandbox::new();
        let ns = sb.container("vr");
        assert!(sh(None, "ip link add blue type vrf table 42 && ip link set blue up").0);
        let d = vlan_doc(0, "red", "podman8", json!({"vrf": "blue"}));
        let (ok, out) = netavark_with(NO_FW, "setup", ns.path(), &d);
        assert!(ok, "setup: {out}");
        let br = sh(None, "ip -d link show podman8").1;
        assert!(br.contains("master blue"), "{br}");
        let table = sh(None, "ip route show vrf blue").1;
        assert!(table.contains("10.97.0.0/24 dev podman8"), "{table}");
        let main = sh(None, "ip route show table main").1;
        assert!(!main.contains("10.97.0.0/24"), "not in the main table: {main}");
        assert!(sh(Some(&ns), "ping -c 1 -W 2 10.97.0.1").0, "the gateway");
        let (ok, out) = netavark_with(NO_FW, "teardown", ns.path(), &d);
        assert!(ok, "teardown: {out}");
        assert!(!sh(None, "ip link show podman8").0, "the bridge goes");
        assert!(sh(None, "ip link show blue").0, "the VRF stays");
        // A link that is not a VRF is refused by name.
        assert!(sh(None, "ip link add notvrf type bridge").0);
        let d = vlan_doc(0, "red", "podman8", json!({"vrf": "notvrf"}));
        let (ok, out) = netavark_with(NO_FW, "setup", ns.path(), &d);
        let v: Value = serde_json::from_str(out.trim()).expect("one JSON object on stdout");
        assert!(!ok && v["error"].as_str().unwrap_or_default().contains("vrf: \"notvrf\" is not a VRF"), "{out}");
    }
}

privileged_test! {
    /// `NETAVARK_DNS_PORT` (containers.conf `dns_bind_port`), for a host whose own
    /// resolver holds port 53 on every address: the responder listens on that port and
    /// the gateway's port 53 is redirected to it, so containers still ask port 53 and
    /// get their names; teardown takes the redirect with the last container.
    fn another_dns_port_redirects_the_gateways_port_53() {
        let mut sb = Sandbox::new();
        let nss: Vec<_> = (0..2).map(|_| sb.container("dp")).collect();
        // The host's own resolver, on port 53 of every address (UDP and TCP).
        let _udp = std::net::UdpSocket::bind("0.0.0.0:53").expect("port 53 is free in the sandbox");
        let _tcp = std::net::TcpListener::bind("0.0.0.0:53").expect("port 53 is free in the sandbox");
        let env = [("NETAVARK_DNS_PORT", "5354")];
        for (i, ns) in nss.iter().enumerate() {
            let (ok, out) = netavark_at(&ours(), &[], &env, "setup", ns.path(), &doc(i));
            assert!(ok, "setup {i}: {out}");
            let v: Value = serde_json::from_str(out.trim()).unwrap();
            assert_eq!(v["blog"]["dns_server_ips"], json!(["10.89.0.1"]), "containers ask the gateway: {v}");
        }
        let listening = sh(None, "ss -Hlnu 'sport = :5354'; ss -Hlnt 'sport = :5354'").1;
        assert!(listening.matches("10.89.0.1:5354").count() >= 2, "the responder on the port, UDP and TCP: {listening}");
        for tcp in [false, true] {
            let a = query(&nss[0], "10.89.0.1", "web1", RecordType::A, tcp).map(|a| a.data);
            assert_eq!(a, Some(vec!["10.89.0.11".to_string()]), "port 53 of the gateway, tcp={tcp}");
        }
        let map = sh(None, "nft list map inet podnet pm4").1;
        for proto in ["udp", "tcp"] {
            let line = map.lines().find(|l| l.contains(&format!("10.89.0.1 . {proto} . 53 "))).unwrap_or_default();
            assert!(line.contains(": 10.89.0.1 . 5354"), "{proto} 53 → 5354: {map}");
        }
        let (ok, out) = netavark_at(&ours(), &[], &env, "teardown", nss[1].path(), &doc(1));
        assert!(ok, "{out}");
        assert!(sh(None, "nft list map inet podnet pm4").1.contains("10.89.0.1 . udp . 53"), "kept while a container is left");
        let (ok, out) = netavark_at(&ours(), &[], &env, "teardown", nss[0].path(), &doc(0));
        assert!(ok, "{out}");
        let (_, rules) = sh(None, "nft list ruleset");
        assert!(!rules.contains("5354"), "no redirect left: {rules}");
        assert!(sh(None, "ss -Hlnu 'sport = :5354'").1.trim().is_empty(), "no listener left");
        // Not a port: refused by name.
        let (ok, out) = netavark_at(&ours(), &[], &[("NETAVARK_DNS_PORT", "99999")], "setup", nss[0].path(), &doc(0));
        assert!(!ok && out.contains("NETAVARK_DNS_PORT"), "{out}");
    }
}

privileged_test! {
    /// The plugins of the chains run in threads of the backend, not as processes: a
    /// copy of the backend beside counting stand-ins for every plugin runs a whole
    /// setup and teardown with none of them executed; `PODNET_EXEC_PLUGINS=1` executes
    /// them, with the same answer.
    fn plugins_run_linked_in_the_backend_unless_asked_to_exec() {
        let mut sb = Sandbox::new();
        let ns = sb.container("ln");
        let real = podnet_tests::subject::default_dir();
        let dir = tempfile::tempdir_in(&real).unwrap();
        let me = dir.path().join("netavark");
        if std::fs::hard_link(real.join("netavark"), &me).is_err() {
            std::fs::copy(real.join("netavark"), &me).unwrap();
        }
        let log = dir.path().join("execs");
        for plugin in ["bridge", "static", "host-local", "portmap", "firewall", "dnsname", "tuning", "loopback", "macvlan", "ipvlan", "dhcp"] {
            let stand_in = dir.path().join(plugin);
            // The responder the dnsname plugin starts (`dnsname serve`) is not a plugin call.
            std::fs::write(&stand_in, format!(
                "#!/bin/sh\n[ \"$1\" = serve ] || echo \"{plugin} $CNI_COMMAND\" >> {}\nexec {} \"$@\"\n",
                log.display(), real.join(plugin).display()))
            .unwrap();
            let exec = std::os::unix::fs::PermissionsExt::from_mode(0o755);
            std::fs::set_permissions(&stand_in, exec).unwrap();
        }
        let execs = || std::fs::read_to_string(&log).unwrap_or_default();
        serve_tcp(&ns, "0.0.0.0:80", "web0");
        let mut answers = Vec::new();
        for env in [&[][..], &[("PODNET_EXEC_PLUGINS", "1")][..]] {
            let (ok, out) = netavark_at(&me, &[], env, "setup", ns.path(), &doc(0));
            assert!(ok, "setup {env:?}: {out}");
            let a = query(&ns, "10.89.0.1", "web0", RecordType::A, false).map(|a| a.data);
            assert_eq!(a, Some(vec!["10.89.0.10".to_string()]), "{env:?}");
            assert_eq!(tcp_hello(&sb.host(), "127.0.0.1:18000").as_deref(), Some("web0"), "{env:?}");
            let (ok, down) = netavark_at(&me, &[], env, "teardown", ns.path(), &doc(0));
            assert!(ok, "teardown {env:?}: {down}");
            answers.push(out);
            if env.is_empty() {
                assert_eq!(execs(), "", "no plugin executed: linked");
            }
        }
        let got = execs();
        for call in ["bridge ADD", "static ADD", "portmap ADD", "firewall ADD", "dnsname ADD", "bridge DEL", "dnsname DEL"] {
            assert!(got.lines().any(|l| l == call), "{call} executed on request: {got}");
        }
        let mac = |out: &str| {
            let mut v: Value = serde_json::from_str(out.trim()).unwrap();
            v["blog"]["interfaces"]["eth0"]["mac_address"] = Value::Null;
            v
        };
        assert_eq!(mac(&answers[0]), mac(&answers[1]), "the same answer either way");
    }
}
