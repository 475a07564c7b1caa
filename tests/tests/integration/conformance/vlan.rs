//! vlan on the subject's plugins: the parent is one end of a veth pair whose peer is
//! in a "LAN" namespace that has a sub-interface for the same VLAN id, so traffic flows
//! only when the container's frames are tagged. This machine kind's kernel has no 8021q
//! driver: the tests are ignored here and run by `scripts/vm-test.sh` under qemu.

use netkit::NetNs;
use podnet_tests::net::{ping, sh, wire};
use podnet_tests::subject::Family;
use podnet_tests::{
    has_link, link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject,
};
use serde_json::{json, Value};

/// The parent `vlp…` on the host, its peer `eth0` in `lan` with `eth0.42` (10.95.0.1/24)
/// on VLAN 42 and nothing untagged.
fn parent(sb: &mut Sandbox) -> (String, NetNs) {
    let lan = sb.container("lan");
    let name = random_name("vlp");
    wire(&lan, &name, "192.0.2.254/24", "192.0.2.1/24");
    let (ok, out) = sh(Some(&lan), "ip link add link eth0 name eth0.42 type vlan id 42 && ip addr add 10.95.0.1/24 dev eth0.42 && ip link set eth0.42 up");
    assert!(ok, "{out}");
    (name, lan)
}

fn conf(s: &Subject, master: &str, extra: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("vlan").as_str(), "name": "vlnet", "type": "vlan", "master": master, "vlanId": 42,
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.95.0.0/24", "rangeStart": "10.95.0.10"}]]}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, c: &Value) -> Call {
    Call::new(&s.plugin("vlan"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", "vl1")
}

privileged_test! {
    #[ignore = "needs the 8021q driver: runs under qemu (scripts/vm-test.sh)"]
    fn tagged_traffic_reaches_the_lans_vlan() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let ns = sb.container("vc");
        let c = conf(&s, &master, json!({"mtu": 1400}));
        let r = call(&s, "ADD", &ns, &c).run().ok();
        assert_eq!(r["interfaces"][0]["name"], "eth0", "{r}");
        assert_eq!(r["ips"][0]["address"], "10.95.0.10/24", "{r}");
        let (l, addrs) = link_state(&ns, "eth0");
        assert_eq!((l.kind.as_deref(), l.vlan_id, l.mtu), (Some("vlan"), Some(42), 1400));
        assert!(l.up && addrs.contains(&"10.95.0.10/24".to_string()), "{addrs:?}");
        assert!(sh(Some(&ns), "ip -d link show eth0").1.contains("vlan protocol 802.1Q id 42"));
        // The LAN answers only on VLAN 42: the frames leave the parent tagged, both ways.
        assert!(ping(&ns, "10.95.0.1"), "the container reaches the LAN's VLAN 42");
        assert!(ping(&lan, "10.95.0.10"), "and the LAN reaches it");
        // /proc/net/dev is the reader's namespace's: the LAN's VLAN 42 received them.
        let dev = sh(Some(&lan), "cat /proc/net/dev").1;
        let rx: u64 = dev
            .lines()
            .find_map(|l| l.trim().strip_prefix("eth0.42:"))
            .and_then(|f| f.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0);
        assert!(rx > 0, "frames arrived on the LAN's VLAN 42: {dev}");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        call(&s, "CHECK", &ns, &with_prev).run().ok();
        let (code, _, _) = call(&s, "CHECK", &ns, &conf(&s, &master, json!({"mtu": 1400, "vlanId": 43, "prevResult": r}))).run().err();
        if s.family == Family::Podnet {
            assert_eq!(code, 120, "another id is a failed CHECK");
        }
        call(&s, "DEL", &ns, &c).run().ok();
        assert!(!has_link(&ns, "eth0"));
        call(&s, "DEL", &ns, &c).run().ok();
        assert!(has_link(&sb.host(), &master), "the parent stays");
    }
}

privileged_test! {
    #[ignore = "needs the 8021q driver: runs under qemu (scripts/vm-test.sh)"]
    fn refusals_leave_nothing_and_del_leaves_another_plugins_interface() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        let ns = sb.container("vr");
        let mut no_master = conf(&s, &master, json!({}));
        no_master.as_object_mut().unwrap().remove("master");
        for (c, needle) in [
            (conf(&s, &master, json!({"vlanId": 4095})), "4095"),
            (conf(&s, &master, json!({"mtu": 9000})), "MTU"),
            (no_master, "master"),
            (conf(&s, "nope0", json!({})), "nope0"),
        ] {
            let (code, msg, _) = call(&s, "ADD", &ns, &c).run().err();
            if s.family == Family::Podnet {
                assert!(code == 7 && msg.contains(needle), "{needle}: {code} {msg}");
            }
            assert!(!has_link(&ns, "eth0"), "{needle}: nothing made");
        }
        sh(Some(&ns), "ip link add eth0 type veth peer name other0");
        let c = conf(&s, &master, json!({}));
        assert_ne!(call(&s, "ADD", &ns, &c).run().status, 0, "eth0 is taken");
        call(&s, "DEL", &ns, &c).run().ok();
        if s.deviates(Deviation::SubLinkDelRemovesAnyInterface) {
            assert!(!has_link(&ns, "eth0"), "the reference now keeps another plugin's eth0");
        } else {
            assert_eq!(link_state(&ns, "eth0").0.kind.as_deref(), Some("veth"));
        }
    }
}
