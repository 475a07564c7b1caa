//! host-device on the subject's plugin, with one end of a veth pair as the "host device"
//! (this kernel has no dummy links) and its peer in a namespace standing in for the LAN.

use std::process::Command;

use netkit::{NetNs, Netlink, VethOptions};
use podnet_tests::subject::Family;
use podnet_tests::{link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

/// `hd…` on the host (MTU 1400, 192.0.2.5/24, up), its peer `eth9` (10.99.0.1/24) in `lan`.
fn device(sb: &mut Sandbox) -> (String, NetNs) {
    let lan = sb.container("lan");
    let name = random_name("hd");
    netkit::block_on(async {
        let h = Netlink::open_current().unwrap();
        h.link_add_veth(
            &name,
            "eth9",
            &lan,
            &VethOptions {
                mtu: Some(1400),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let d = h.link_require(&name).await.unwrap();
        h.addr_add(d.index, "192.0.2.5/24".parse().unwrap())
            .await
            .unwrap();
        h.link_set_up(d.index).await.unwrap();
        let l = Netlink::open_in(&lan).unwrap();
        let p = l.link_require("eth9").await.unwrap();
        l.addr_add(p.index, "10.99.0.1/24".parse().unwrap())
            .await
            .unwrap();
        l.link_set_up(p.index).await.unwrap();
    });
    (name, lan)
}

fn conf(s: &Subject, dev: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("host-device").as_str(), "name": "hdnet", "type": "host-device",
                       "ipam": {"type": "static", "addresses": [{"address": "10.99.0.2/24"}]}});
    for (k, v) in dev.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn on_host(name: &str) -> Option<(netkit::Link, Vec<String>)> {
    let exists = netkit::block_on(async {
        Netlink::open_current()
            .unwrap()
            .link_get(name)
            .await
            .unwrap()
            .is_some()
    });
    exists.then(|| link_state(&NetNs::current().unwrap(), name))
}

fn ping(from: &NetNs, to: &str) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", from.path().display()))
        .args(["ping", "-c", "1", "-W", "2", to])
        .status()
        .unwrap()
        .success()
}

privileged_test! {
    fn moved_in_renamed_reachable_and_given_back() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (dev, lan) = device(&mut sb);
        let ctr = sb.container("c");
        let c = conf(&s, json!({"device": dev}));
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("host-device"), cmd, ctr.path(), "eth0", c);
        let out = call("ADD", &c).run().ok();
        assert_eq!(out["interfaces"][0]["name"], "eth0", "{out}");
        assert!(on_host(&dev).is_none(), "the device left the host");
        let (l, addrs) = link_state(&ctr, "eth0");
        assert!(l.up && addrs.contains(&"10.99.0.2/24".to_string()), "{addrs:?}");
        assert_eq!(l.mtu, 1400);
        assert!(ping(&lan, "10.99.0.2"), "the LAN reaches the container through the device");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = out;
        call("CHECK", &with_prev).run().ok();
        call("DEL", &with_prev).run().ok();
        let (back, addrs) = on_host(&dev).expect("the device is back on the host under its name");
        assert_eq!(back.mtu, 1400);
        if s.deviates(Deviation::HostDeviceLosesAddresses) {
            assert!(!addrs.contains(&"192.0.2.5/24".to_string()), "the reference now keeps addresses: {addrs:?}");
        } else {
            assert!(back.up, "up again");
            assert!(addrs.contains(&"192.0.2.5/24".to_string()), "its address is back: {addrs:?}");
        }
        let again = call("DEL", &c).run();
        if s.deviates(Deviation::HostDeviceDelNotIdempotent) {
            assert_ne!(again.status, 0, "the reference's DEL is now idempotent");
        } else {
            again.ok();
        }
    }
}

privileged_test! {
    fn del_after_the_namespace_is_gone() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (dev, _lan) = device(&mut sb);
        let ctr = sb.container("c");
        let path = ctr.path().to_path_buf();
        let c = conf(&s, json!({"device": dev}));
        Call::new(&s.plugin("host-device"), "ADD", &path, "eth0", &c).run().ok();
        drop(ctr);
        sb.remove(&path); // the namespace dies (and a veth with it)
        let r = Call::new(&s.plugin("host-device"), "DEL", &path, "eth0", &c).run();
        if s.deviates(Deviation::HostDeviceDelNotIdempotent) {
            assert_ne!(r.status, 0, "the reference now succeeds: {}", r.stdout);
        } else {
            r.ok();
        }
    }
}

privileged_test! {
    fn podnet_selectors_refusals_and_no_partial_state() {
        let s = Subject::from_env();
        if s.family != Family::Podnet {
            return; // hwaddr/kernelpath on virtual devices, allowDefaultRoute: podnet's behaviour
        }
        let mut sb = Sandbox::new();
        let (dev, _lan) = device(&mut sb);
        let mac = on_host(&dev).unwrap().0.mac;
        let ctr = sb.container("c");
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("host-device"), cmd, ctr.path(), "eth0", c);
        for sel in [json!({"hwaddr": mac.to_uppercase()}), json!({"kernelpath": format!("/sys/devices/virtual/net/{dev}")})] {
            let c = conf(&s, sel.clone());
            call("ADD", &c).run().ok();
            assert!(on_host(&dev).is_none(), "{sel}");
            call("DEL", &c).run().ok();
            assert!(on_host(&dev).is_some(), "{sel}");
        }
        // The host's default-route device is refused unless allowed; nothing moves.
        assert!(Command::new("ip").args(["route", "add", "default", "dev", &dev]).status().unwrap().success());
        let (code, msg, _) = call("ADD", &conf(&s, json!({"device": dev}))).run().err();
        assert_eq!(code, 7);
        assert!(msg.contains("default route") && msg.contains("allowDefaultRoute"), "{msg}");
        assert!(on_host(&dev).is_some());
        let allowed = conf(&s, json!({"device": dev, "allowDefaultRoute": true}));
        call("ADD", &allowed).run().ok();
        call("DEL", &allowed).run().ok();
        // A missing device, or two selectors: clear errors, nothing created.
        let (code, msg, _) = call("ADD", &conf(&s, json!({"device": "nope0"}))).run().err();
        assert_eq!(code, 7);
        assert!(msg.contains("\"nope0\""), "{msg}");
        let (_, msg, _) = call("ADD", &conf(&s, json!({"device": dev, "hwaddr": mac}))).run().err();
        assert!(msg.contains("exclude"), "{msg}");
        assert!(netkit::block_on(async { Netlink::open_in(&ctr).unwrap().link_get("eth0").await.unwrap().is_none() }));
    }
}

privileged_test! {
    fn del_after_a_refused_add_leaves_another_plugins_interface() {
        // The container already has eth0 (a bridge's veth): ADD is refused, and the DEL the
        // runtime then sends must not take that eth0 out to the host.
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (dev, _lan) = device(&mut sb);
        let ns = sb.container("c");
        let bridge_end = random_name("vbr");
        netkit::block_on(async {
            Netlink::open_current().unwrap().link_add_veth(&bridge_end, "eth0", &ns, &VethOptions::default()).await.unwrap();
        });
        let c = conf(&s, json!({"device": dev}));
        let call = |cmd: &str| Call::new(&s.plugin("host-device"), cmd, ns.path(), "eth0", &c);
        let r = call("ADD").run();
        assert_ne!(r.status, 0, "eth0 is taken: {}", r.stdout);
        let del = call("DEL").run();
        let (l, _) = link_state(&ns, "eth0");
        if s.family == Family::Podnet {
            assert_eq!(del.status, 0, "{}", del.stdout);
            assert_eq!(l.kind.as_deref(), Some("veth"), "the bridge's eth0 stays in the container");
            assert!(on_host(&dev).is_some(), "the device never left the host");
        }
    }
}
