//! macvlan on the subject's plugins, with one end of a veth pair as the parent
//! (`master`) and its peer in a namespace standing in for the LAN: containers on one
//! parent reach each other and the LAN; modes, MTU, MAC sources, L2 only,
//! `linkInContainer`; CHECK; DEL idempotent; a failed ADD leaves no lease.

use netkit::{NetNs, Netlink, VethOptions};
use podnet_tests::net::{ping, sh, wire};
use podnet_tests::subject::Family;
use podnet_tests::{
    has_link, link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject,
};
use serde_json::{json, Value};

/// The parent `mvp…` on the host (10.98.0.254/24), its peer `eth0` in `lan` (10.98.0.1/24).
fn parent(sb: &mut Sandbox) -> (String, NetNs) {
    let lan = sb.container("lan");
    let name = random_name("mvp");
    wire(&lan, &name, "10.98.0.254/24", "10.98.0.1/24");
    (name, lan)
}

fn conf(s: &Subject, master: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("macvlan").as_str(), "name": "mvnet", "type": "macvlan",
                       "master": master,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.98.0.0/24", "rangeStart": "10.98.0.10"}]],
                                "routes": [{"dst": "10.99.0.0/16", "gw": "10.98.0.1"}]}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, id: &str, c: &Value) -> Call {
    Call::new(&s.plugin("macvlan"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", id)
}

fn leases() -> Vec<String> {
    podnet_tests::host_local_leases("mvnet")
}

privileged_test! {
    fn two_containers_reach_each_other_and_the_lan() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let c = conf(&s, &master, json!({}));
        let (a, b) = (sb.container("ma"), sb.container("mb"));
        let ra = call(&s, "ADD", &a, "ma", &c).run().ok();
        let rb = call(&s, "ADD", &b, "mb", &c).run().ok();
        // The result: the container interface alone, with its MAC and sandbox.
        assert_eq!(ra["interfaces"].as_array().unwrap().len(), 1, "{ra}");
        assert_eq!(ra["interfaces"][0]["name"], "eth0");
        assert_eq!(ra["interfaces"][0]["sandbox"], a.path().display().to_string());
        assert_eq!(ra["ips"][0]["address"], "10.98.0.10/24", "{ra}");
        assert_eq!(ra["ips"][0]["interface"], 0);
        assert_eq!(rb["ips"][0]["address"], "10.98.0.11/24", "{rb}");
        // The kernel: a macvlan in bridge mode on the parent, up, with the address and routes.
        let (l, addrs) = link_state(&a, "eth0");
        assert_eq!(l.kind.as_deref(), Some("macvlan"));
        assert_eq!(l.mac, ra["interfaces"][0]["mac"].as_str().unwrap());
        assert!(l.up && addrs.contains(&"10.98.0.10/24".to_string()), "{addrs:?}");
        let details = sh(Some(&a), "ip -d link show eth0").1;
        assert!(details.contains("macvlan mode bridge"), "{details}");
        let routes = sh(Some(&a), "ip route").1;
        assert!(routes.contains("10.99.0.0/16 via 10.98.0.1 dev eth0"), "{routes}");
        // Real traffic: container to container on one parent, both ways to the LAN.
        assert!(ping(&a, "10.98.0.11"), "a reaches b through the parent");
        assert!(ping(&b, "10.98.0.1"), "b reaches the LAN");
        assert!(ping(&lan, "10.98.0.10"), "the LAN reaches a");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = ra.clone();
        call(&s, "CHECK", &a, "ma", &with_prev).run().ok();
        // CHECK sees an address that went missing.
        sh(Some(&a), "ip addr del 10.98.0.10/24 dev eth0");
        let (code, _, _) = call(&s, "CHECK", &a, "ma", &with_prev).run().err();
        let want = if s.deviates(Deviation::CheckFailureCatchAll) { 999 } else { 120 };
        assert_eq!(code, want);
        call(&s, "DEL", &a, "ma", &with_prev).run().ok();
        assert!(!has_link(&a, "eth0"), "DEL removes the macvlan");
        assert_eq!(leases(), vec!["10.98.0.11".to_string()], "and gives the lease back");
        call(&s, "DEL", &a, "ma", &c).run().ok(); // nothing left to undo
        // DEL after the container's namespace is gone.
        let path = b.path().to_path_buf();
        drop(b);
        sb.remove(&path);
        Call::new(&s.plugin("macvlan"), "DEL", &path, "eth0", &c).set("CNI_CONTAINERID", "mb").run().ok();
        assert!(leases().is_empty());
        assert!(has_link(&sb.host(), &master), "the parent stays");
    }
}

privileged_test! {
    fn modes_mtu_mac_sources_and_the_parents_own_name() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let ns = sb.container("mm");
        for mode in ["private", "vepa", "bridge"] {
            let c = conf(&s, &master, json!({"mode": mode, "mtu": 1400, "mac": "02:11:22:33:44:55"}));
            call(&s, "ADD", &ns, "mm", &c).run().ok();
            let details = sh(Some(&ns), "ip -d link show eth0").1;
            assert!(details.contains(&format!("macvlan mode {mode}")), "{details}");
            let (l, _) = link_state(&ns, "eth0");
            assert_eq!((l.mtu, l.mac.as_str()), (1400, "02:11:22:33:44:55"));
            call(&s, "DEL", &ns, "mm", &c).run().ok();
        }
        // CNI_ARGS MAC over the key, runtimeConfig over both.
        let c = conf(&s, &master, json!({"mac": "02:11:22:33:44:55"}));
        let r = call(&s, "ADD", &ns, "mm", &c).set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:01").run().ok();
        assert_eq!(r["interfaces"][0]["mac"], "02:aa:bb:cc:dd:01");
        call(&s, "DEL", &ns, "mm", &c).run().ok();
        let mut rt = c.clone();
        rt["runtimeConfig"] = json!({"mac": "02:aa:bb:cc:dd:02"});
        let r = call(&s, "ADD", &ns, "mm", &rt).set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:01").run().ok();
        assert_eq!(link_state(&ns, "eth0").0.mac, "02:aa:bb:cc:dd:02", "{r}");
        call(&s, "DEL", &ns, "mm", &rt).run().ok();
        // The container interface may carry the parent's own name: it is born in the
        // container's namespace, so the host's link of that name is no conflict.
        let same = Call::new(&s.plugin("macvlan"), "ADD", ns.path(), &master, &c).set("CNI_CONTAINERID", "mm").run().ok();
        assert_eq!(same["interfaces"][0]["name"], master.as_str());
        assert!(has_link(&ns, &master) && has_link(&sb.host(), &master));
        Call::new(&s.plugin("macvlan"), "DEL", ns.path(), &master, &c).set("CNI_CONTAINERID", "mm").run().ok();
        // An MTU above the parent's, an unknown mode or parent: refused, nothing made.
        for (extra, needle) in [
            (json!({"mtu": 9000}), "MTU"),
            (json!({"mode": "l2"}), "mode"),
            (json!({"master": "nope0"}), "nope0"),
        ] {
            let (code, msg, _) = call(&s, "ADD", &ns, "mm", &conf(&s, &master, extra.clone())).run().err();
            if s.family == Family::Podnet {
                assert_eq!(code, 7, "{extra}: {msg}");
                assert!(msg.contains(needle), "{extra}: {msg}");
            }
            assert!(!has_link(&ns, "eth0"), "{extra}");
        }
        assert!(leases().is_empty());
    }
}

privileged_test! {
    fn without_ipam_the_link_is_only_up() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let ns = sb.container("ml");
        let mut c = conf(&s, &master, json!({}));
        c.as_object_mut().unwrap().remove("ipam");
        let r = call(&s, "ADD", &ns, "ml", &c).run().ok();
        assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
        assert!(r["ips"].as_array().is_none_or(|a| a.is_empty()), "{r}");
        let (l, addrs) = link_state(&ns, "eth0");
        assert!(l.up, "up");
        assert!(addrs.iter().all(|a| a.starts_with("fe80:")), "{addrs:?}");
        call(&s, "DEL", &ns, "ml", &c).run().ok();
        assert!(!has_link(&ns, "eth0"));
    }
}

privileged_test! {
    fn link_in_container_takes_the_parent_there() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("mi");
        let peer = sb.container("mq");
        // The parent lives in the container's namespace: `up0` there, its peer in `mq`.
        netkit::block_on(async {
            let nl = Netlink::open_in(&ns).unwrap();
            nl.link_add_veth("up0", "eth5", &peer, &VethOptions::default()).await.unwrap();
            let l = nl.link_require("up0").await.unwrap();
            nl.link_set_up(l.index).await.unwrap();
            let p = Netlink::open_in(&peer).unwrap();
            let l = p.link_require("eth5").await.unwrap();
            p.addr_add(l.index, "10.98.0.1/24".parse().unwrap()).await.unwrap();
            p.link_set_up(l.index).await.unwrap();
        });
        let c = conf(&s, "up0", json!({"linkInContainer": true}));
        let r = call(&s, "ADD", &ns, "mi", &c).run();
        if s.family == Family::Reference {
            // The reference 1.1.1 predates the key: it looks for up0 on the host and fails.
            assert_ne!(r.status, 0, "the reference now knows linkInContainer: {}", r.stdout);
            return;
        }
        let r = r.ok();
        assert_eq!(r["ips"][0]["address"], "10.98.0.10/24", "{r}");
        assert!(ping(&peer, "10.98.0.10"), "reached through the container's own parent");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r;
        call(&s, "CHECK", &ns, "mi", &with_prev).run().ok();
        call(&s, "DEL", &ns, "mi", &with_prev).run().ok();
        assert!(!has_link(&ns, "eth0") && has_link(&ns, "up0"));
    }
}

privileged_test! {
    fn a_failure_after_ipam_gives_the_lease_back() {
        // A parent takes one passthru macvlan: the second ADD fails creating the link,
        // after IPAM handed out an address.
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let c = conf(&s, &master, json!({"mode": "passthru"}));
        let (a, b) = (sb.container("mp"), sb.container("mr"));
        call(&s, "ADD", &a, "mp", &c).run().ok();
        let r = call(&s, "ADD", &b, "mr", &c).run();
        assert_ne!(r.status, 0, "a second passthru macvlan: {}", r.stdout);
        assert!(!has_link(&b, "eth0"));
        assert_eq!(leases(), vec!["10.98.0.10".to_string()], "only the first container's lease");
        call(&s, "DEL", &b, "mr", &c).run().ok();
        call(&s, "DEL", &a, "mp", &c).run().ok();
        assert!(leases().is_empty());
    }
}

privileged_test! {
    fn del_after_a_refused_add_leaves_another_plugins_interface() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let ns = sb.container("mo");
        let bridge_end = random_name("vbr");
        netkit::block_on(async {
            Netlink::open_current().unwrap().link_add_veth(&bridge_end, "eth0", &ns, &VethOptions::default()).await.unwrap();
        });
        let c = conf(&s, &master, json!({}));
        let r = call(&s, "ADD", &ns, "mo", &c).run();
        assert_ne!(r.status, 0, "eth0 is taken: {}", r.stdout);
        call(&s, "DEL", &ns, "mo", &c).run().ok();
        if s.deviates(Deviation::MacvlanDelRemovesAnyInterface) {
            assert!(!has_link(&ns, "eth0"), "the reference now keeps another plugin's eth0");
        } else {
            assert_eq!(link_state(&ns, "eth0").0.kind.as_deref(), Some("veth"), "the bridge's eth0 stays");
        }
    }
}

privileged_test! {
    fn podnet_status_tells_a_missing_parent() {
        let s = Subject::from_env();
        if s.family != Family::Podnet {
            return; // the reference 1.1.1 predates STATUS
        }
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let mut c = conf(&s, &master, json!({}));
        c["cniVersion"] = json!("1.1.0");
        Call::bare(&s.plugin("macvlan"), "STATUS", &c).run().ok();
        c["master"] = json!("gone0");
        let (code, msg, _) = Call::bare(&s.plugin("macvlan"), "STATUS", &c).run().err();
        assert_eq!(code, 50, "{msg}");
        assert!(msg.contains("gone0"), "{msg}");
        // No master: the default route's interface.
        c.as_object_mut().unwrap().remove("master");
        let (code, _, _) = Call::bare(&s.plugin("macvlan"), "STATUS", &c).run().err();
        assert_eq!(code, 50, "no default route in the sandbox");
        sh(None, &format!("ip route add default via 10.98.0.1 dev {master}"));
        Call::bare(&s.plugin("macvlan"), "STATUS", &c).run().ok();
    }
}
