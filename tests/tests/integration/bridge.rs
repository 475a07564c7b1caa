//! bridge + host-local with real traffic between namespaces and kernel state read back.

use std::path::Path;
use std::process::Command;

use netkit::{NetNs, Netlink};
use podnet_tests::net::{outside, ping, sh};
use podnet_tests::{link_state, privileged_test, random_name, Call, Sandbox, Subject};
use serde_json::{json, Value};

fn conf(br: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": "1.0.0", "name": "brnet", "type": "bridge", "bridge": br,
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.70.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn bridge_call(cmd: &str, ns: &NetNs, id: &str, c: &Value) -> Call {
    let s = Subject::from_env();
    Call::new(&s.plugin("bridge"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", id)
}

fn addr_of(result: &Value) -> String {
    result["ips"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

privileged_test! {
    fn two_containers_ping_each_other_the_gateway_and_outside() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({}));
        let (a, b) = (sb.container("a"), sb.container("b"));
        let ra = bridge_call("ADD", &a, "ctr-a", &c).run().ok();
        let rb = bridge_call("ADD", &b, "ctr-b", &c).run().ok();
        let (ipa, ipb) = (addr_of(&ra), addr_of(&rb));
        assert_ne!(ipa, ipb);
        // Result shape: bridge, host veth, container; the address on interface 2.
        assert_eq!(ra["interfaces"][0]["name"], br.as_str());
        assert!(ra["interfaces"][1]["name"].as_str().unwrap().starts_with("veth"));
        assert_eq!(ra["interfaces"][2]["name"], "eth0");
        assert_eq!(ra["interfaces"][2]["sandbox"], a.path().display().to_string());
        assert_eq!(ra["ips"][0]["interface"], 2);
        assert_eq!(ra["ips"][0]["gateway"], "10.70.0.1");
        // Kernel state.
        let (bl, baddrs) = link_state(&sb.host(), &br);
        assert!(bl.up && bl.kind.as_deref() == Some("bridge"));
        assert!(baddrs.contains(&"10.70.0.1/24".to_string()), "{baddrs:?}");
        assert_eq!(ra["interfaces"][0]["mac"], bl.mac.as_str());
        assert_eq!(netkit::sysctl::get(&sb.host(), "net.ipv4.ip_forward").unwrap(), "1");
        let (cl, caddrs) = link_state(&a, "eth0");
        assert!(cl.up && caddrs.contains(&format!("{ipa}/24")));
        assert!(sh(Some(&a), "ip route").1.contains("default via 10.70.0.1 dev eth0"));
        assert_eq!(netkit::sysctl::get(&a, "net.ipv4.conf.eth0.arp_notify").unwrap(), "1");
        // The host end: up, a port of the bridge, with the MAC the result reports.
        let host_end = ra["interfaces"][1]["name"].as_str().unwrap();
        let (hl, _) = link_state(&sb.host(), host_end);
        assert_eq!((hl.up, hl.master), (true, Some(bl.index)));
        assert_eq!(ra["interfaces"][1]["mac"], hl.mac.as_str());
        // Traffic.
        assert!(ping(&a, &ipb), "a reaches b");
        assert!(ping(&b, &ipa), "b reaches a");
        assert!(ping(&a, "10.70.0.1"), "a reaches the gateway");
        let out = outside(&mut sb);
        assert!(ping(&a, "192.0.2.1"), "a reaches outside through masquerade");
        let ruleset = sh(None, "nft list table inet podnet").1;
        assert!(ruleset.contains(&ipa) && ruleset.contains("masquerade"), "{ruleset}");
        // CHECK, then DEL: the link, the lease and the masquerade element go.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = ra.clone();
        bridge_call("CHECK", &a, "ctr-a", &with_prev).run().ok();
        bridge_call("DEL", &a, "ctr-a", &with_prev).run().ok();
        assert!(!sh(Some(&a), "ip link show eth0").0, "the container end is gone");
        assert!(!sh(None, "nft list table inet podnet").1.contains(&ipa));
        assert!(!Path::new(&format!("/var/lib/cni/networks/brnet/{ipa}")).exists());
        assert!(!ping(&b, &ipa));
        let (code, _, _) = bridge_call("CHECK", &a, "ctr-a", &with_prev).run().err();
        assert_ne!(code, 0);
        bridge_call("DEL", &a, "ctr-a", &c).run().ok(); // again
        // DEL of the last container without prevResult and without its namespace.
        let bpath = b.path().to_path_buf();
        drop(b);
        sb.remove(&bpath);
        bridge_call("DEL", &out, "ctr-b", &c).set("CNI_NETNS", bpath.to_str().unwrap()).run().ok();
        assert!(!sh(None, "nft list tables").1.contains("podnet"), "the last DEL removes the table");
        let leases: Vec<_> = std::fs::read_dir("/var/lib/cni/networks/brnet").unwrap().filter_map(|e| e.unwrap().file_name().into_string().ok()).filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect();
        assert!(leases.is_empty(), "{leases:?}");
        drop(out);
    }
}

privileged_test! {
    fn static_address_and_conflict() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({}));
        let a = sb.container("a");
        let r = bridge_call("ADD", &a, "hugo", &c).set("CNI_ARGS", "IP=10.70.0.10").run().ok();
        assert_eq!(r["ips"][0]["address"], "10.70.0.10/24");
        let b = sb.container("b");
        let (code, msg, _) = bridge_call("ADD", &b, "other", &c).set("CNI_ARGS", "IP=10.70.0.10").run().err();
        assert_eq!(code, cni::ErrorCode::ADDRESS_IN_USE.0 as u64, "{msg}");
        assert!(msg.contains("\"hugo\""), "{msg}");
        assert!(!sh(Some(&b), "ip link show eth0").0, "nothing left in the loser's namespace");
        let veths = sh(None, &format!("ip -o link show master {br}")).1;
        assert_eq!(veths.lines().count(), 1, "only hugo's port is on the bridge: {veths}");
    }
}

privileged_test! {
    /// A container back with its static address (and a new MAC) is reachable from its
    /// peers at once: they learn the new MAC from a gratuitous ARP instead of sending to
    /// the old one until their neighbour entry times out (~60 s).
    fn a_restarted_static_address_is_reachable_by_peers_at_once() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({}));
        let peer = sb.container("peer");
        bridge_call("ADD", &peer, "peer", &c).run().ok();
        let first = sb.container("hugo");
        bridge_call("ADD", &first, "hugo", &c).set("CNI_ARGS", "IP=10.70.0.10").run().ok();
        assert!(ping(&peer, "10.70.0.10"));
        bridge_call("DEL", &first, "hugo", &c).run().ok();
        let again = sb.container("hugo");
        bridge_call("ADD", &again, "hugo", &c).set("CNI_ARGS", "IP=10.70.0.10").run().ok();
        let (new_mac, _) = link_state(&again, "eth0");
        let neigh = sh(Some(&peer), "ip neigh show 10.70.0.10").1;
        assert!(neigh.contains(&new_mac.mac), "the peer learnt the new MAC {}: {neigh}", new_mac.mac);
        assert!(sh(Some(&peer), "ping -c 1 -W 1 10.70.0.10").0, "reachable at once");
    }
}

privileged_test! {
    fn every_key_reads_back_from_the_kernel() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let a = sb.container("a");
        let c = conf(&br, json!({"mtu": 1400, "hairpinMode": true, "promiscMode": true, "portIsolation": true,
            "ipMasq": false, "isDefaultGateway": true, "runtimeConfig": {"mac": "02:42:ac:11:00:09"},
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.71.0.0/24"}], [{"subnet": "fd71::/64"}]]}}));
        let r = bridge_call("ADD", &a, "keys", &c).run().ok();
        let hv = r["interfaces"][1]["name"].as_str().unwrap().to_owned();
        let (cl, caddrs) = link_state(&a, "eth0");
        assert_eq!((cl.mtu, cl.mac.as_str()), (1400, "02:42:ac:11:00:09"));
        assert!(caddrs.iter().any(|x| x.starts_with("fd71::")), "{caddrs:?}");
        assert_eq!(netkit::sysctl::get(&a, "net/ipv6/conf/eth0/accept_dad").unwrap(), "0", "no DAD by default");
        let routes = sh(Some(&a), "ip route; ip -6 route").1;
        assert!(routes.contains("default via 10.71.0.1") && routes.contains("default via fd71::1"), "{routes}");
        let link = sh(None, &format!("ip -d link show {hv}")).1;
        assert!(link.contains("hairpin on") && link.contains("isolated on"), "{link}");
        assert!(sh(None, &format!("ip link show {br}")).1.contains("PROMISC"));
        // The bridge keeps its MAC as ports come and go.
        let before = link_state(&sb.host(), &br).0.mac;
        let b = sb.container("b");
        bridge_call("ADD", &b, "keys2", &c).set("CNI_ARGS", "IgnoreUnknown=1").run().ok();
        bridge_call("DEL", &b, "keys2", &c).run().ok();
        assert_eq!(link_state(&sb.host(), &br).0.mac, before);
    }
}

privileged_test! {
    fn disabled_container_interface_and_existing_address() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let a = sb.container("a");
        let c = conf(&br, json!({"disableContainerInterface": true, "ipMasq": false}));
        bridge_call("ADD", &a, "down", &c).run().ok();
        assert!(!link_state(&a, "eth0").0.up);
        // Another address in the subnet on the bridge: refused without forceAddress.
        let br2 = random_name("br");
        netkit::block_on(async {
            let h = Netlink::open_current().unwrap();
            h.link_add_bridge(&br2, &Default::default()).await.unwrap();
            let l = h.link_require(&br2).await.unwrap();
            h.addr_add(l.index, "10.72.0.99/24".parse().unwrap()).await.unwrap();
        });
        let c2 = json!({"cniVersion": "1.0.0", "name": "n2", "type": "bridge", "bridge": br2, "isGateway": true,
            "ipam": {"type": "host-local", "subnet": "10.72.0.0/24"}});
        let b = sb.container("b");
        let (_, msg, _) = bridge_call("ADD", &b, "x", &c2).run().err();
        assert!(msg.contains("forceAddress"), "{msg}");
        assert!(!sh(Some(&b), "ip link show eth0").0, "undone");
        let kept: Vec<String> = link_state(&sb.host(), &br2).1.into_iter().filter(|a| !a.starts_with("fe80:")).collect();
        assert_eq!(kept, ["10.72.0.99/24"], "the bridge keeps its address and gains none");
        let mut forced = c2.clone();
        forced["forceAddress"] = json!(true);
        bridge_call("ADD", &b, "x", &forced).run().ok();
        let addrs = link_state(&sb.host(), &br2).1;
        assert!(addrs.contains(&"10.72.0.1/24".to_string()) && !addrs.contains(&"10.72.0.99/24".to_string()), "{addrs:?}");
    }
}

privileged_test! {
    fn vlan_keys_or_a_clear_refusal() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let a = sb.container("a");
        let c = conf(&br, json!({"vlan": 100, "vlanTrunk": [{"id": 200}, {"minID": 300, "maxID": 302}],
            "preserveDefaultVlan": false, "ipMasq": false}));
        // Does this kernel filter VLANs on bridges (CONFIG_BRIDGE_VLAN_FILTERING)?
        let probe = random_name("bp");
        let supported = sh(None, &format!("ip link add {probe} type bridge vlan_filtering 1")).0;
        let reply = bridge_call("ADD", &a, "vlans", &c).run();
        if !supported {
            let (code, msg, _) = reply.err();
            assert_eq!(code, cni::ErrorCode::UNSUPPORTED_FIELD.0 as u64);
            assert!(msg.starts_with("vlan: 100") && msg.contains("CONFIG_BRIDGE_VLAN_FILTERING"), "{msg}");
            assert!(!sh(None, &format!("ip link show {br}")).0, "no bridge is left behind");
            assert!(!sh(Some(&a), "ip link show eth0").0);
            let leases = std::fs::read_dir("/var/lib/cni/networks/brnet")
                .map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok()).count())
                .unwrap_or(0);
            assert_eq!(leases, 0, "the lease IPAM took meanwhile is released");
            return;
        }
        let r = reply.ok();
        let hv = r["interfaces"][1]["name"].as_str().unwrap().to_owned();
        assert!(sh(None, &format!("ip -d link show {br}")).1.contains("vlan_filtering 1"));
        let vlans = sh(None, &format!("bridge vlan show dev {hv}")).1;
        assert!(vlans.contains("100 PVID Egress Untagged"), "{vlans}");
        assert!(vlans.contains("200") && vlans.contains("300") && vlans.contains("302"), "{vlans}");
        assert!(!vlans.lines().any(|l| l.split_whitespace().any(|w| w == "1")), "vid 1 removed: {vlans}");
    }
}

privileged_test! {
    fn macspoofchk_drops_frames_from_another_mac() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let (a, b) = (sb.container("a"), sb.container("b"));
        let c = conf(&br, json!({"macspoofchk": true, "ipMasq": false}));
        let ra = bridge_call("ADD", &a, "spoof-a", &c).run().ok();
        let rb = bridge_call("ADD", &b, "spoof-b", &c).run().ok();
        let ipb = addr_of(&rb);
        assert!(ping(&a, &ipb), "the real MAC passes");
        let rules = sh(None, "nft list table bridge podnet").1;
        let port = ra["interfaces"][1]["name"].as_str().unwrap();
        assert!(rules.contains(port), "{rules}");
        // Change a's MAC behind the plugin's back: its frames are dropped at the bridge.
        assert!(sh(Some(&a), "ip link set eth0 address 02:de:ad:be:ef:01 && ip neigh flush all").0);
        assert!(!ping(&a, &ipb), "a spoofed source MAC is dropped");
        bridge_call("DEL", &a, "spoof-a", &c).run().ok();
        bridge_call("DEL", &b, "spoof-b", &c).run().ok();
        let left = sh(None, "nft list ruleset").1;
        assert!(!left.contains("table bridge podnet"), "the last DEL removes the table: {left}");
    }
}

fn no_leftovers(br: &str) {
    let ports = sh(None, &format!("ip -o link show master {br}")).1;
    assert!(ports.trim().is_empty(), "ports left on {br}: {ports}");
    let leases: Vec<String> = std::fs::read_dir("/var/lib/cni/networks/brnet")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
                .collect()
        })
        .unwrap_or_default();
    assert!(leases.is_empty(), "leases left: {leases:?}");
    let ruleset = sh(None, "nft list ruleset").1;
    assert!(!ruleset.contains("podnet"), "rules left: {ruleset}");
}

privileged_test! {
    fn a_hundred_parallel_adds_then_dels() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({"macspoofchk": true}));
        let nss: Vec<NetNs> = (0..100).map(|_| sb.container("p")).collect();
        let results: Vec<Value> = std::thread::scope(|scope| {
            let hs: Vec<_> = nss.iter().enumerate().map(|(i, ns)| {
                let c = c.clone();
                scope.spawn(move || bridge_call("ADD", ns, &format!("par{i}"), &c).run().ok())
            }).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let addrs: std::collections::HashSet<String> = results.iter().map(addr_of).collect();
        assert_eq!(addrs.len(), 100, "distinct addresses");
        assert_eq!(sh(None, &format!("ip -o link show master {br}")).1.lines().count(), 100);
        assert!(ping(&nss[0], &addr_of(&results[99])));
        std::thread::scope(|scope| {
            for (i, ns) in nss.iter().enumerate() {
                let c = c.clone();
                scope.spawn(move || bridge_call("DEL", ns, &format!("par{i}"), &c).run().ok());
            }
        });
        no_leftovers(&br);
    }
}

privileged_test! {
    fn a_kill_at_any_point_of_add_is_undone_by_del() {
        use std::io::Write;
        use std::process::Stdio;
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({"macspoofchk": true}));
        let mut killed = 0;
        for i in 0..40u64 {
            let ns = sb.container("k");
            let call = bridge_call("ADD", &ns, &format!("kill{i}"), &c);
            let mut child = Command::new(&call.binary).env_clear().envs(call.env.iter().map(|(k, v)| (k, v)))
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(&call.stdin).unwrap();
            // Spread the kill over the whole ADD (a few ms, host-local and nft included).
            std::thread::sleep(std::time::Duration::from_micros(i * 150));
            if child.try_wait().unwrap().is_none() {
                killed += 1;
            }
            let _ = child.kill();
            let _ = child.wait();
            bridge_call("DEL", &ns, &format!("kill{i}"), &c).run().ok();
            let leftovers = sh(Some(&ns), "ip -o link show eth0").0;
            assert!(!leftovers, "kill{i}: the container end survived DEL");
        }
        assert!(killed > 5, "ADDs were killed mid-way ({killed})");
        no_leftovers(&br);
    }
}

privileged_test! {
    fn gc_mac_sources_and_dad() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let c = conf(&br, json!({"enabledad": true, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.73.0.0/24"}], [{"subnet": "fd73::/64"}]]}}));
        let (a, b) = (sb.container("a"), sb.container("b"));
        bridge_call("ADD", &a, "keep", &c).set("CNI_ARGS", "MAC=02:00:00:00:0a:01").run().ok();
        let mut with_args = c.clone();
        with_args["args"] = json!({"cni": {"mac": "02:00:00:00:0b:01"}});
        bridge_call("ADD", &b, "stale", &with_args).set("CNI_ARGS", "MAC=02:00:00:00:0b:99").run().ok();
        assert_eq!(link_state(&a, "eth0").0.mac, "02:00:00:00:0a:01", "CNI_ARGS MAC");
        assert_eq!(link_state(&b, "eth0").0.mac, "02:00:00:00:0b:01", "args.cni.mac wins over CNI_ARGS");
        assert_ne!(netkit::sysctl::get(&a, "net/ipv6/conf/eth0/accept_dad").unwrap(), "0", "enabledad keeps DAD on");
        let bad = bridge_call("ADD", &sb.container("x"), "badmac", &c).set("CNI_ARGS", "MAC=zz").run();
        assert!(bad.err().1.contains("CNI_ARGS MAC"));
        // GC with only "keep" valid: stale's lease and masquerade go, keep's stay.
        let mut gc = c.clone();
        gc["cniVersion"] = json!("1.1.0");
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "keep", "ifname": "eth0"}]);
        let s = Subject::from_env();
        Call::bare(&s.plugin("bridge"), "GC", &gc).run().ok();
        let rules = sh(None, "nft list table inet podnet").1;
        assert!(rules.contains("brnet keep eth0") && !rules.contains("brnet stale eth0"), "{rules}");
        let holders: Vec<String> = std::fs::read_dir("/var/lib/cni/networks/brnet").unwrap()
            .filter_map(|e| { let e = e.unwrap(); e.file_name().to_str()?.parse::<std::net::IpAddr>().ok()?; std::fs::read_to_string(e.path()).ok() })
            .collect();
        assert!(holders.iter().all(|h| h.starts_with("keep")) && holders.len() == 2, "{holders:?}");
        let mut status = c.clone();
        status["cniVersion"] = json!("1.1.0");
        Call::bare(&s.plugin("bridge"), "STATUS", &status).run().ok();
    }
}

privileged_test! {
    fn ptp_masquerades_to_outside_and_gc_removes_stale_rules() {
        let mut sb = Sandbox::new();
        let s = Subject::from_env();
        let a = sb.container("a");
        let c = json!({"cniVersion": "1.1.0", "name": "ptpm", "type": "ptp", "ipMasq": true,
                       "ipam": {"type": "host-local", "subnet": "10.97.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}});
        let r = Call::new(&s.plugin("ptp"), "ADD", a.path(), "eth0", &c).set("CNI_CONTAINERID", "m1").run().ok();
        let out = outside(&mut sb);
        assert!(ping(&a, "192.0.2.1"), "ptp container reaches outside through masquerade");
        let ip = addr_of(&r);
        assert!(sh(None, "nft list set inet podnet masq4").1.contains(&ip));
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        Call::bare(&s.plugin("ptp"), "GC", &gc).run().ok();
        assert!(!sh(None, "nft list tables").1.contains("podnet"), "GC removed the stale rules");
        drop(out);
    }
}

privileged_test! {
    fn a_failed_add_leaves_no_bridge_it_created() {
        let mut sb = Sandbox::new();
        let br = random_name("br");
        let a = sb.container("a");
        let c = conf(&br, json!({"ipam": {"type": "host-local", "subnet": "10.74.0.5/24"}}));
        let (code, msg, _) = bridge_call("ADD", &a, "bad", &c).run().err();
        assert_eq!(code, 7, "{msg}");
        assert!(msg.contains("host bits"), "the IPAM error names the fault: {msg}");
        assert!(!sh(None, &format!("ip link show {br}")).0, "the bridge made by the failed ADD is gone");
        assert!(!sh(Some(&a), "ip link show eth0").0, "no interface is left in the container");
        assert!(!sh(None, "nft list tables").1.contains("podnet"), "no rule is left");
    }
}
