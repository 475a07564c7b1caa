//! vrf (chained) on the subject's plugins: a container interface (a veth to a "LAN"
//! namespace, configured as an earlier plugin would) enslaved to a VRF, its routes read
//! back from the VRF's table, traffic through the VRF, the VRF shared and removed with
//! its last interface. This machine kind's kernel has no vrf driver: the tests are
//! ignored here and run by `scripts/vm-test.sh` under qemu.

use netkit::NetNs;
use podnet_tests::net::sh;
use podnet_tests::subject::Family;
use podnet_tests::{link_state, privileged_test, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

/// `ifname` in `ctr`, a veth to `peer` in `lan`: 10.94.N.10/24 and fd94:N::10/64 in the
/// container, .1 in the LAN, and a route to 10.94.8N.0/24 via the LAN: what an earlier
/// plugin would have set up. Its prevResult.
fn wired(ctr: &NetNs, lan: &NetNs, ifname: &str, peer: &str, n: u8) -> Value {
    let cmd = format!(
        "ip link add {ifname} type veth peer name {peer} netns {lan} && ip addr add 10.94.{n}.10/24 dev {ifname} && \
         ip addr add fd94:{n}::10/64 dev {ifname} nodad && ip link set {ifname} up && \
         ip route add 10.94.8{n}.0/24 via 10.94.{n}.1 dev {ifname}",
        lan = lan.path().file_name().unwrap().to_string_lossy()
    );
    let (ok, out) = sh(Some(ctr), &cmd);
    assert!(ok, "{out}");
    let (ok, out) = sh(Some(lan), &format!("ip addr add 10.94.{n}.1/24 dev {peer} && ip link set {peer} up && ip addr add 10.94.8{n}.1/32 dev lo && ip link set lo up"));
    assert!(ok, "{out}");
    json!({"interfaces": [{"name": ifname, "sandbox": ctr.path().display().to_string()}],
           "ips": [{"address": format!("10.94.{n}.10/24"), "interface": 0}, {"address": format!("fd94:{n}::10/64"), "interface": 0}],
           "routes": [{"dst": format!("10.94.8{n}.0/24"), "gw": format!("10.94.{n}.1")}]})
}

fn conf(s: &Subject, extra: Value, prev: &Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("vrf").as_str(), "name": "vrfnet", "type": "vrf", "vrfname": "red"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let mut p = prev.clone();
    p["cniVersion"] = c["cniVersion"].clone();
    c["prevResult"] = p;
    c
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, ifname: &str, c: &Value) -> Call {
    Call::new(&s.plugin("vrf"), cmd, ns.path(), ifname, c).set("CNI_CONTAINERID", "vrf1")
}

privileged_test! {
    #[ignore = "needs the vrf driver: runs under qemu (scripts/vm-test.sh)"]
    fn the_interface_and_its_routes_move_into_the_vrf() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (ctr, lan) = (sb.container("vc"), sb.container("vl"));
        let p0 = wired(&ctr, &lan, "eth0", "p0", 1);
        let p1 = wired(&ctr, &lan, "eth1", "p1", 2);
        let c0 = conf(&s, json!({"table": 1001}), &p0);
        let r = call(&s, "ADD", &ctr, "eth0", &c0).run().ok();
        assert_eq!(r["ips"], p0["ips"], "the result is prevResult's: {r}");
        // The kernel: VRF red with table 1001, up; eth0 its port; the routes in 1001, not main.
        let (vrf, _) = link_state(&ctr, "red");
        assert_eq!((vrf.kind.as_deref(), vrf.vrf_table, vrf.up), (Some("vrf"), Some(1001), true));
        assert_eq!(link_state(&ctr, "eth0").0.master, Some(vrf.index));
        let table = sh(Some(&ctr), "ip route show table 1001").1;
        assert!(table.contains("10.94.1.0/24 dev eth0"), "{table}");
        let main = sh(Some(&ctr), "ip route show table main").1;
        assert!(!main.contains("10.94.81.0/24") && !main.contains("10.94.1.0/24"), "{main}");
        assert!(sh(Some(&ctr), "ping -c 1 -W 2 -I red 10.94.1.1").0, "the LAN through the VRF");
        if s.deviates(Deviation::VrfDropsRoutes) {
            assert!(!table.contains("10.94.81.0/24"), "the reference now keeps the routes: {table}");
        } else {
            // The route through the LAN's router followed the interface, and the IPv6
            // address the enslaving removed is back.
            assert!(table.contains("10.94.81.0/24 via 10.94.1.1 dev eth0"), "{table}");
            assert!(link_state(&ctr, "eth0").1.contains(&"fd94:1::10/64".to_string()), "IPv6 kept");
            assert!(sh(Some(&ctr), "ping -c 1 -W 2 -I red 10.94.81.1").0, "through the VRF's table");
        }
        // A second interface joins the same VRF; a mismatching table is refused.
        let (code, msg, _) = call(&s, "ADD", &ctr, "eth1", &conf(&s, json!({"table": 1002}), &p1)).run().err();
        if s.family == Family::Podnet {
            assert!(code == 7 && msg.contains("1001"), "{code} {msg}");
        }
        call(&s, "ADD", &ctr, "eth1", &conf(&s, json!({}), &p1)).run().ok();
        assert_eq!(link_state(&ctr, "eth1").0.master, Some(vrf.index));
        call(&s, "CHECK", &ctr, "eth0", &c0).run().ok();
        // DEL of one leaves the VRF to the other; the last DEL removes it.
        call(&s, "DEL", &ctr, "eth0", &c0).run().ok();
        assert_eq!(link_state(&ctr, "eth0").0.master, None, "eth0 leaves the VRF");
        assert_eq!(link_state(&ctr, "red").0.index, vrf.index, "the VRF stays for eth1");
        let after = call(&s, "CHECK", &ctr, "eth0", &c0).run();
        if s.deviates(Deviation::VrfCheckChecksNothing) {
            assert_eq!(after.status, 0, "the reference's CHECK now looks: {}", after.stdout);
        } else {
            assert_eq!(after.err().0, 120, "CHECK of an interface no longer in the VRF");
        }
        call(&s, "DEL", &ctr, "eth1", &conf(&s, json!({}), &p1)).run().ok();
        assert!(!sh(Some(&ctr), "ip link show red").0, "the last DEL removes the VRF");
        call(&s, "DEL", &ctr, "eth1", &conf(&s, json!({}), &p1)).run().ok();
    }
}

privileged_test! {
    #[ignore = "needs the vrf driver: runs under qemu (scripts/vm-test.sh)"]
    fn a_new_vrfs_table_is_one_nothing_uses() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (ctr, lan) = (sb.container("vt"), sb.container("vu"));
        let p0 = wired(&ctr, &lan, "eth0", "p0", 3);
        // Table 1 already holds a route (another tool's, or sbr's with `table`).
        assert!(sh(Some(&ctr), "ip route add 10.94.99.0/24 dev eth0 table 1").0);
        let c = conf(&s, json!({}), &p0);
        call(&s, "ADD", &ctr, "eth0", &c).run().ok();
        let table = link_state(&ctr, "red").0.vrf_table;
        if s.deviates(Deviation::VrfTableInUseByRoutes) {
            assert_eq!(table, Some(1), "the reference now skips tables in use");
        } else {
            assert_eq!(table, Some(2), "table 1 is in use");
        }
        call(&s, "DEL", &ctr, "eth0", &c).run().ok();
        // DEL after the namespace is gone.
        let path = ctr.path().to_path_buf();
        drop(ctr);
        sb.remove(&path);
        Call::new(&s.plugin("vrf"), "DEL", &path, "eth0", &c).set("CNI_CONTAINERID", "vrf1").run().ok();
    }
}
