//! The tap plugin on its own (the reference 1.1.1 in /usr/lib/cni predates it): every
//! key read back from the kernel, a frame exchanged through the tap as a VM would, L2
//! only, a bridge in the container, CHECK, DEL idempotent and never another plugin's
//! interface, no partial state after a failure.

use std::io::{Read, Write};
use std::os::fd::AsFd;

use netkit::NetNs;
use podnet_tests::net::sh;
use podnet_tests::{find_link as link, link_state, privileged_test, Call, Sandbox, Subject};
use serde_json::{json, Value};

fn conf(s: &Subject, extra: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("tap").as_str(), "name": "tapnet", "type": "tap",
                       "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.96.7.0/24", "rangeStart": "10.96.7.10"}]],
                                "routes": [{"dst": "10.96.8.0/24", "gw": "10.96.7.1"}]}});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, c: &Value) -> Call {
    Call::new(&s.plugin("tap"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", "tapc")
}

fn leases() -> Vec<String> {
    podnet_tests::host_local_leases("tapnet")
}

/// "Who has `target`, tell 10.96.7.2 at 02:00:00:00:00:02", as an Ethernet frame.
fn arp_request(target: [u8; 4]) -> Vec<u8> {
    let me = [2, 0, 0, 0, 0, 2];
    let mut f = vec![0xff; 6];
    f.extend(me);
    f.extend([0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend(me);
    f.extend([10, 96, 7, 2]);
    f.extend([0; 6]);
    f.extend(target);
    f
}

/// Writes `frame` into the tap as a VM would and returns the MAC of the first ARP
/// reply the kernel sends back out of it within five seconds. The frame is sent again
/// every 200 ms: the tap's carrier comes on when the queue attaches, and until the
/// kernel's link watcher has seen it (up to a second) replies are dropped.
fn arp_reply_through(tap: &mut std::fs::File, frame: &[u8]) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut buf = [0u8; 2048];
    while std::time::Instant::now() < deadline {
        let mut fds = [nix::poll::PollFd::new(
            tap.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        if nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(200u16)).unwrap() == 0 {
            tap.write_all(frame).unwrap();
            continue;
        }
        let n = tap.read(&mut buf).unwrap();
        // An ARP reply (ethertype 0x0806, op 2) for 10.96.7.2.
        if n >= 42
            && buf[12..14] == [0x08, 0x06]
            && buf[20..22] == [0, 2]
            && buf[38..42] == [10, 96, 7, 2]
        {
            return Some(netkit::format_mac(&buf[22..28]));
        }
    }
    None
}

privileged_test! {
    fn every_key_reads_back_and_a_frame_crosses_the_tap() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("tp");
        let c = conf(&s, json!({"multiQueue": true, "mtu": 9000, "mac": "02:11:22:33:44:66", "owner": 1000, "group": 100}));
        let r = call(&s, "ADD", &ns, &c).run().ok();
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][0]["mac"], "02:11:22:33:44:66");
        assert_eq!(r["interfaces"][0]["sandbox"], ns.path().display().to_string());
        assert_eq!(r["ips"][0]["address"], "10.96.7.10/24", "{r}");
        assert_eq!(r["ips"][0]["interface"], 0);
        // The kernel: a persistent multi-queue tap owned by 1000:100, no PI header, up,
        // with the MTU, MAC, address and route.
        let (l, addrs) = link_state(&ns, "eth0");
        assert_eq!(l.kind.as_deref(), Some("tun"));
        let t = l.tun.expect("tun attributes");
        assert!(t.tap && t.persist && t.multi_queue && !t.pi, "{t:?}");
        assert_eq!((t.owner, t.group), (Some(1000), Some(100)));
        assert_eq!((l.mtu, l.mac.as_str(), l.up), (9000, "02:11:22:33:44:66", true));
        assert!(addrs.contains(&"10.96.7.10/24".to_string()), "{addrs:?}");
        let routes = sh(Some(&ns), "ip route").1;
        assert!(routes.contains("10.96.8.0/24 via 10.96.7.1 dev eth0"), "{routes}");
        // Real traffic: a "VM" attaches a queue and asks for the container's address; the
        // kernel answers through the tap with the tap's MAC.
        let mut q = netkit::tap::tap_open(&ns, "eth0", true).unwrap();
        assert_eq!(arp_reply_through(&mut q, &arp_request([10, 96, 7, 10])).as_deref(), Some("02:11:22:33:44:66"));
        drop(q);
        // CHECK passes, and sees a tap that differs from the config.
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r.clone();
        call(&s, "CHECK", &ns, &with_prev).run().ok();
        let mut other = with_prev.clone();
        other["owner"] = json!(1001);
        let (code, msg, _) = call(&s, "CHECK", &ns, &other).run().err();
        assert_eq!(code, 120, "{msg}");
        sh(Some(&ns), "ip addr del 10.96.7.10/24 dev eth0");
        let (code, msg, _) = call(&s, "CHECK", &ns, &with_prev).run().err();
        assert!(code == 120 && msg.contains("10.96.7.10"), "{code} {msg}");
        // DEL removes the tap and the lease; again, and after the namespace is gone.
        call(&s, "DEL", &ns, &with_prev).run().ok();
        assert!(link(&ns, "eth0").is_none(), "DEL removes the tap");
        assert!(leases().is_empty(), "and gives the lease back");
        call(&s, "DEL", &ns, &c).run().ok();
        let path = ns.path().to_path_buf();
        drop(ns);
        sb.remove(&path);
        Call::new(&s.plugin("tap"), "DEL", &path, "eth0", &c).set("CNI_CONTAINERID", "tapc").run().ok();
    }
}

privileged_test! {
    fn layer_two_only_a_bridge_in_the_container_and_the_mac_sources() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("tb");
        sh(Some(&ns), "ip link add br0 type bridge && ip link set br0 up");
        let mut c = conf(&s, json!({"bridge": "br0", "mac": "02:11:22:33:44:55"}));
        c.as_object_mut().unwrap().remove("ipam");
        let r = call(&s, "ADD", &ns, &c).set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:01").run().ok();
        assert!(r.get("ips").is_none_or(|i| i.as_array().unwrap().is_empty()), "L2 only: {r}");
        assert_eq!(r["interfaces"][0]["mac"], "02:aa:bb:cc:dd:01", "CNI_ARGS MAC over the key");
        let (l, addrs) = link_state(&ns, "eth0");
        let br = link(&ns, "br0").unwrap();
        assert_eq!(l.master, Some(br.index), "a port of br0");
        assert!(l.up && !addrs.iter().any(|a| a.starts_with("10.")), "{addrs:?}");
        let t = l.tun.unwrap();
        assert!(!t.multi_queue && t.owner.is_none() && t.group.is_none(), "the defaults: {t:?}");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = r;
        call(&s, "CHECK", &ns, &with_prev).run().ok();
        sh(Some(&ns), "ip link set eth0 nomaster");
        let (code, msg, _) = call(&s, "CHECK", &ns, &with_prev).run().err();
        assert!(code == 120 && msg.contains("br0"), "{code} {msg}");
        call(&s, "DEL", &ns, &c).run().ok();
        assert!(link(&ns, "eth0").is_none() && link(&ns, "br0").is_some(), "the bridge stays");
        // runtimeConfig.mac over CNI_ARGS; a missing bridge refused naming the key, nothing made.
        c["runtimeConfig"] = json!({"mac": "02:aa:bb:cc:dd:02"});
        call(&s, "ADD", &ns, &c).set("CNI_ARGS", "IgnoreUnknown=1;MAC=02:aa:bb:cc:dd:01").run().ok();
        assert_eq!(link_state(&ns, "eth0").0.mac, "02:aa:bb:cc:dd:02");
        call(&s, "DEL", &ns, &c).run().ok();
        c["bridge"] = json!("br9");
        let (code, msg, _) = call(&s, "ADD", &ns, &c).run().err();
        assert!(code == 7 && msg.contains("bridge:"), "{code} {msg}");
        assert!(link(&ns, "eth0").is_none());
    }
}

privileged_test! {
    fn failures_leave_nothing_and_del_leaves_another_plugins_interface() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("tf");
        // An IPAM that fails: no tap is left.
        let mut bad = conf(&s, json!({}));
        bad["ipam"]["ranges"] = json!([[{"subnet": "10.96.7.0/24", "rangeStart": "10.96.7.300"}]]);
        call(&s, "ADD", &ns, &bad).run().err();
        assert!(link(&ns, "eth0").is_none(), "no tap after a refused IPAM");
        // An MTU out of range, and an SELinux label on a host without SELinux: refused
        // naming the key, with no tap and no lease left.
        let (code, msg, _) = call(&s, "ADD", &ns, &conf(&s, json!({"mtu": 70000}))).run().err();
        assert!(code == 7 && msg.contains("mtu:"), "{code} {msg}");
        if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            let c = conf(&s, json!({"selinuxContext": "system_u:system_r:container_t:s0"}));
            let (code, msg, _) = call(&s, "ADD", &ns, &c).run().err();
            assert!(code == 7 && msg.contains("selinuxContext:"), "{code} {msg}");
        }
        assert!(link(&ns, "eth0").is_none() && leases().is_empty(), "nothing left: {:?}", leases());
        // The name is taken by another plugin's link: ADD refuses, and the DEL the
        // runtime then sends leaves that link alone.
        sh(Some(&ns), "ip link add eth0 type veth peer name peer0");
        let c = conf(&s, json!({}));
        let (code, msg, _) = call(&s, "ADD", &ns, &c).run().err();
        assert!(code == 4 && msg.contains("eth0"), "{code} {msg}");
        call(&s, "DEL", &ns, &c).run().ok();
        assert_eq!(link(&ns, "eth0").and_then(|l| l.kind).as_deref(), Some("veth"));
        // The helper that creates labelled taps (selinuxContext) makes the tap it is
        // asked for in the namespace it runs in, and reports a taken name.
        let helper = |spec: &str| {
            std::process::Command::new("nsenter")
                .arg(format!("--net={}", ns.path().display()))
                .arg(s.plugin("tap"))
                .env("PODNET_TAP_HELPER", spec)
                .output()
                .unwrap()
        };
        let out = helper(r#"{"name": "vm0", "multi_queue": true, "owner": 7, "group": null}"#);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let t = link(&ns, "vm0").and_then(|l| l.tun).expect("the helper's tap");
        assert!(t.tap && t.persist && t.multi_queue && t.owner == Some(7) && t.group.is_none(), "{t:?}");
        let out = helper(r#"{"name": "vm0", "multi_queue": false, "owner": null, "group": null}"#);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("exists"), "{out:?}");
        // STATUS: the tun driver's device is there.
        Call::bare(&s.plugin("tap"), "STATUS", &c).run().ok();
    }
}
