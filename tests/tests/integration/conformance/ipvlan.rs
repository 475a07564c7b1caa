//! ipvlan on the subject's plugins, with one end of a veth pair as the parent and its
//! peer in a "LAN" namespace. This machine kind's kernel has no ipvlan driver: the tests
//! are ignored here and run by `scripts/vm-test.sh` under qemu with Debian's kernel.

use netkit::NetNs;
use podnet_tests::net::{ping, sh, wire};
use podnet_tests::subject::Family;
use podnet_tests::{
    has_link, link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject,
};
use serde_json::{json, Value};

/// The parent `ivp…` on the host (10.96.0.254/24), its peer `eth0` in `lan` (10.96.0.1/24).
fn parent(sb: &mut Sandbox) -> (String, NetNs) {
    let lan = sb.container("lan");
    let name = random_name("ivp");
    wire(&lan, &name, "10.96.0.254/24", "10.96.0.1/24");
    (name, lan)
}

fn conf(s: &Subject, master: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("ipvlan").as_str(), "name": "ivnet", "type": "ipvlan", "master": master,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.96.0.0/24", "rangeStart": "10.96.0.10"}]],
                                "routes": [{"dst": "10.97.0.0/16", "gw": "10.96.0.1"}]}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, id: &str, c: &Value) -> Call {
    Call::new(&s.plugin("ipvlan"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", id)
}

privileged_test! {
    #[ignore = "needs the ipvlan driver: runs under qemu (scripts/vm-test.sh)"]
    fn two_containers_reach_each_other_and_the_lan() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let parent_mac = link_state(&sb.host(), &master).0.mac;
        let c = conf(&s, &master, json!({}));
        let (a, b) = (sb.container("ia"), sb.container("ib"));
        let ra = call(&s, "ADD", &a, "ia", &c).run().ok();
        call(&s, "ADD", &b, "ib", &c).run().ok();
        assert_eq!(ra["interfaces"].as_array().unwrap().len(), 1, "{ra}");
        assert_eq!(ra["interfaces"][0]["sandbox"], a.path().display().to_string());
        assert_eq!(ra["ips"][0]["address"], "10.96.0.10/24", "{ra}");
        assert_eq!(ra["ips"][0]["interface"], 0);
        // The kernel: an ipvlan in l2 mode sharing the parent's MAC.
        let (l, addrs) = link_state(&a, "eth0");
        assert_eq!(l.kind.as_deref(), Some("ipvlan"));
        assert_eq!(l.mac, parent_mac, "an ipvlan has no MAC of its own");
        assert_eq!(ra["interfaces"][0]["mac"], parent_mac.as_str());
        assert!(l.up && addrs.contains(&"10.96.0.10/24".to_string()), "{addrs:?}");
        assert!(sh(Some(&a), "ip -d link show eth0").1.contains("ipvlan  mode l2"));
        assert!(sh(Some(&a), "ip route").1.contains("10.97.0.0/16 via 10.96.0.1 dev eth0"));
        // Real traffic: container to container on one parent, both ways to the LAN.
        assert!(ping(&a, "10.96.0.11"), "a reaches b");
        assert!(ping(&b, "10.96.0.1"), "b reaches the LAN");
        assert!(ping(&lan, "10.96.0.10"), "the LAN reaches a");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = ra.clone();
        call(&s, "CHECK", &a, "ia", &with_prev).run().ok();
        sh(Some(&a), "ip addr del 10.96.0.10/24 dev eth0");
        let (code, _, _) = call(&s, "CHECK", &a, "ia", &with_prev).run().err();
        assert_eq!(code, if s.deviates(Deviation::CheckFailureCatchAll) { 999 } else { 120 });
        call(&s, "DEL", &a, "ia", &with_prev).run().ok();
        assert!(!has_link(&a, "eth0"), "DEL removes the ipvlan");
        call(&s, "DEL", &a, "ia", &c).run().ok();
        let path = b.path().to_path_buf();
        drop(b);
        sb.remove(&path);
        Call::new(&s.plugin("ipvlan"), "DEL", &path, "eth0", &c).set("CNI_CONTAINERID", "ib").run().ok();
        assert!(has_link(&sb.host(), &master), "the parent stays");
    }
}

privileged_test! {
    #[ignore = "needs the ipvlan driver: runs under qemu (scripts/vm-test.sh)"]
    fn modes_mtu_chaining_and_refusals() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let ns = sb.container("im");
        for mode in ["l3", "l3s", "l2"] {
            let c = conf(&s, &master, json!({"mode": mode, "mtu": 1400}));
            call(&s, "ADD", &ns, "im", &c).run().ok();
            let details = sh(Some(&ns), "ip -d link show eth0").1;
            assert!(details.contains(&format!("ipvlan  mode {mode}")), "{details}");
            assert_eq!(link_state(&ns, "eth0").0.mtu, 1400);
            call(&s, "DEL", &ns, "im", &c).run().ok();
        }
        // Chained: no ipam, the previous result's addresses and its one interface as parent.
        let mut chained = conf(&s, "", json!({}));
        chained.as_object_mut().unwrap().remove("ipam");
        chained.as_object_mut().unwrap().remove("master");
        chained["prevResult"] = json!({"cniVersion": s.newest("ipvlan").as_str(),
            "interfaces": [{"name": master}], "ips": [{"address": "10.96.0.50/24", "interface": 0}]});
        let r = call(&s, "ADD", &ns, "im", &chained).run().ok();
        assert_eq!(r["ips"][0]["address"], "10.96.0.50/24", "{r}");
        assert!(ping(&lan, "10.96.0.50"), "the chained address answers");
        call(&s, "DEL", &ns, "im", &chained).run().ok();
        // Refusals: an unknown mode, an MTU above the parent's, a missing parent, no IPAM.
        let mut no_ipam = conf(&s, &master, json!({}));
        no_ipam.as_object_mut().unwrap().remove("ipam");
        let above = conf(&s, &master, json!({"mtu": 9000}));
        if s.deviates(Deviation::IpvlanMtuAboveParent) {
            call(&s, "ADD", &ns, "im", &above).run().ok();
            call(&s, "DEL", &ns, "im", &above).run().ok();
        } else {
            let (code, msg, _) = call(&s, "ADD", &ns, "im", &above).run().err();
            assert!(code == 7 && msg.contains("MTU"), "{code} {msg}");
        }
        let (code, msg, _) = call(&s, "ADD", &ns, "im", &no_ipam).run().err();
        if s.deviates(Deviation::IpvlanLeavesLinkWithoutIpam) {
            assert!(has_link(&ns, "eth0"), "the reference now cleans up after a missing ipam");
            sh(Some(&ns), "ip link del eth0");
        } else {
            assert!(code == 7 && msg.contains("ipam"), "{code} {msg}");
            assert!(!has_link(&ns, "eth0"));
        }
        for (c, needle) in [
            (conf(&s, &master, json!({"mode": "bridge"})), "mode"),
            (conf(&s, "nope0", json!({})), "nope0"),
        ] {
            let (code, msg, _) = call(&s, "ADD", &ns, "im", &c).run().err();
            if s.family == Family::Podnet {
                assert!(code == 7 && msg.contains(needle), "{needle}: {code} {msg}");
            }
            assert!(!has_link(&ns, "eth0"), "{needle}: nothing made");
        }
    }
}

privileged_test! {
    #[ignore = "needs the ipvlan driver: runs under qemu (scripts/vm-test.sh)"]
    fn del_after_a_refused_add_leaves_another_plugins_interface() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let ns = sb.container("io");
        sh(Some(&ns), "ip link add eth0 type veth peer name other0");
        let c = conf(&s, &master, json!({}));
        assert_ne!(call(&s, "ADD", &ns, "io", &c).run().status, 0, "eth0 is taken");
        call(&s, "DEL", &ns, "io", &c).run().ok();
        if s.deviates(Deviation::SubLinkDelRemovesAnyInterface) {
            assert!(!has_link(&ns, "eth0"), "the reference now keeps another plugin's eth0");
        } else {
            assert_eq!(link_state(&ns, "eth0").0.kind.as_deref(), Some("veth"));
        }
    }
}
