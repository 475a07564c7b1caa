//! ptp + host-local on the subject's plugins: the reference's kernel layout, traffic
//! between two containers and to the host side, static address, CHECK, DEL.

use cni::CniVersion;
use podnet_tests::{link_state, privileged_test, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};
use std::process::Command;

fn conf(v: CniVersion) -> Value {
    json!({"cniVersion": v.as_str(), "name": "ptpnet", "type": "ptp", "mtu": 1400,
           "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.95.0.0/24"}], [{"subnet": "fd95::/64"}]],
                    "routes": [{"dst": "10.96.0.0/16"}]}})
}

fn ns_sh(ns: &netkit::NetNs, cmd: &str) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["sh", "-c", cmd])
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

privileged_test! {
    fn layout_traffic_and_lifecycle() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let v = s.newest("ptp");
        let c = conf(v);
        let (a, b) = (sb.container("pa"), sb.container("pb"));
        let call = |cmd: &str, ns: &netkit::NetNs, id: &str, c: &Value| Call::new(&s.plugin("ptp"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", id);
        let ra = call("ADD", &a, "pa", &c).set("CNI_ARGS", "IP=10.95.0.10").run().ok();
        let rb = call("ADD", &b, "pb", &c).run().ok();
        assert_eq!(ra["ips"][0]["address"], "10.95.0.10/24", "static address: {ra}");
        assert_eq!(ra["interfaces"].as_array().unwrap().len(), 2);
        assert!(ra["interfaces"][0]["name"].as_str().unwrap().starts_with("veth"));
        assert_eq!(ra["interfaces"][1]["sandbox"], a.path().display().to_string());
        assert_eq!(ra["ips"][0]["interface"], 1);
        // The kernel layout.
        let (cl, _) = link_state(&a, "eth0");
        assert_eq!(cl.mtu, 1400);
        // Whatever `proto` each implementation tags its routes with.
        let routes = ns_sh(&a, "ip route").1.replace("proto static ", "").replace("proto unspec ", "");
        assert!(routes.contains("10.95.0.1 dev eth0 scope link"), "{routes}");
        assert!(routes.contains("10.95.0.0/24 via 10.95.0.1 dev eth0"), "{routes}");
        assert!(routes.contains("10.96.0.0/16 via 10.95.0.1 dev eth0"), "{routes}");
        // No connected route for the subnet: it goes via the gateway, in both families.
        assert!(!routes.contains("10.95.0.0/24 dev eth0"), "{routes}");
        let routes6 = ns_sh(&a, "ip -6 route").1;
        assert!(!routes6.lines().any(|l| l.starts_with("fd95::/") && !l.contains(" via ")), "{routes6}");
        let hv = ra["interfaces"][0]["name"].as_str().unwrap();
        let host = Command::new("sh").arg("-c").arg(format!("ip addr show dev {hv}; ip route show dev {hv}")).output().unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        assert!(host.contains("inet 10.95.0.1/32"), "{host}");
        assert!(host.contains("10.95.0.10 scope host"), "{host}");
        assert!(host.contains("fd95::1/128"), "{host}");
        // Forwarding on in the host's namespace, for both families.
        for key in ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding"] {
            assert_eq!(netkit::sysctl::get(&sb.host(), key).unwrap(), "1", "{key}");
        }
        // Traffic: container to container (routed through the host), and to the host side.
        let ipb = rb["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
        assert!(ns_sh(&a, &format!("ping -c 1 -W 2 {ipb}")).0, "a reaches b");
        assert!(ns_sh(&b, "ping -c 1 -W 2 10.95.0.10").0, "b reaches a");
        assert!(ns_sh(&a, "ping -c 1 -W 2 10.95.0.1").0, "a reaches the host side");
        // CHECK, DEL, DEL again, DEL without the namespace.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = ra.clone();
        let check = call("CHECK", &a, "pa", &with_prev).run();
        if s.deviates(Deviation::PtpCheckRoutesWithoutGateway) {
            let (code, msg, _) = check.err();
            assert_eq!(code, 999);
            assert!(msg.contains("10.96.0.0") && msg.contains("not found"), "{msg}");
        } else {
            check.ok();
        }
        call("DEL", &a, "pa", &with_prev).run().ok();
        assert!(!ns_sh(&a, "ip link show eth0").0);
        assert!(call("CHECK", &a, "pa", &with_prev).run().status != 0);
        call("DEL", &a, "pa", &c).run().ok();
        let bpath = b.path().to_path_buf();
        drop(b);
        sb.remove(&bpath);
        call("DEL", &a, "pb", &c).set("CNI_NETNS", bpath.to_str().unwrap()).run().ok();
        let leases = std::fs::read_dir("/var/lib/cni/networks/ptpnet").unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().parse::<std::net::IpAddr>().is_ok()).count();
        assert_eq!(leases, 0);
    }
}

privileged_test! {
    fn ipam_is_required() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let a = sb.container("pa");
        let c = json!({"cniVersion": s.newest("ptp").as_str(), "name": "ptpnet", "type": "ptp"});
        let r = Call::new(&s.plugin("ptp"), "ADD", a.path(), "eth0", &c).run();
        assert_ne!(r.status, 0);
        assert!(!ns_sh(&a, "ip link show eth0").0, "nothing is created");
    }
}
