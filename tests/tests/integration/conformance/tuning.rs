//! tuning on the subject's plugin: every setting read back from the kernel, CHECK, and
//! DEL putting everything back.

use netkit::{sysctl, NetNs, Netlink, VethOptions};
use podnet_tests::subject::Family;
use podnet_tests::{link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

fn container_with_eth0(sb: &mut Sandbox) -> NetNs {
    let ns = sb.container("t");
    netkit::block_on(async {
        let h = Netlink::open_current().unwrap();
        h.link_add_veth(&random_name("vt"), "eth0", &ns, &VethOptions::default())
            .await
            .unwrap();
    });
    ns
}

fn conf(s: &Subject, ns: &NetNs, settings: Value) -> Value {
    let mut c = json!({"cniVersion": s.newest("tuning").as_str(), "name": "tun", "type": "tuning",
        "prevResult": {"cniVersion": s.newest("tuning").as_str(),
            "interfaces": [{"name": "eth0", "sandbox": ns.path().display().to_string()}],
            "ips": [{"address": "10.98.0.2/24", "interface": 0}]}});
    for (k, v) in settings.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

privileged_test! {
    fn settings_apply_check_and_restore() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = container_with_eth0(&mut sb);
        let (before, _) = link_state(&ns, "eth0");
        let arp_before = sysctl::get(&ns, "net.ipv4.conf.eth0.arp_filter").unwrap();
        let somax_before = sysctl::get(&ns, "net.core.somaxconn").unwrap();
        let c = conf(&s, &ns, json!({"mac": "02:00:00:00:77:01", "mtu": 1300, "promisc": true, "allmulti": true, "txQLen": 2000,
            "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1", "net.core.somaxconn": "512"}}));
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("tuning"), cmd, ns.path(), "eth0", c);
        let out = call("ADD", &c).run().ok();
        assert_eq!(out["interfaces"][0]["mac"], "02:00:00:00:77:01", "the result carries the new MAC: {out}");
        let (l, _) = link_state(&ns, "eth0");
        let txq = if s.deviates(Deviation::TuningWithoutTxQLen) { before.txqlen } else { 2000 };
        assert_eq!((l.mac.as_str(), l.mtu, l.promisc, l.allmulti, l.txqlen), ("02:00:00:00:77:01", 1300, true, true, txq));
        assert_eq!(sysctl::get(&ns, "net.ipv4.conf.eth0.arp_filter").unwrap(), "1");
        assert_eq!(sysctl::get(&ns, "net.core.somaxconn").unwrap(), "512");
        let mut with_prev = c.clone();
        with_prev["prevResult"] = out;
        call("CHECK", &with_prev).run().ok();
        call("DEL", &with_prev).run().ok();
        let (l, _) = link_state(&ns, "eth0");
        assert_eq!((l.mac.as_str(), l.mtu, l.promisc, l.allmulti, l.txqlen), (before.mac.as_str(), before.mtu, before.promisc, before.allmulti, before.txqlen));
        if s.deviates(Deviation::TuningKeepsSysctls) {
            assert_eq!(sysctl::get(&ns, "net.core.somaxconn").unwrap(), "512", "the reference now restores sysctls");
        } else {
            assert_eq!(sysctl::get(&ns, "net.ipv4.conf.eth0.arp_filter").unwrap(), arp_before);
            assert_eq!(sysctl::get(&ns, "net.core.somaxconn").unwrap(), somax_before);
        }
        call("DEL", &c).run().ok(); // twice
    }
}

privileged_test! {
    fn chained_only_and_podnet_extras() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = container_with_eth0(&mut sb);
        let mut bare = conf(&s, &ns, json!({"mtu": 1400}));
        bare.as_object_mut().unwrap().remove("prevResult");
        let r = Call::new(&s.plugin("tuning"), "ADD", ns.path(), "eth0", &bare).run();
        assert_ne!(r.status, 0, "tuning needs prevResult");
        if s.family != Family::Podnet {
            return;
        }
        assert!(r.err().1.contains("prevResult"));
        // IFNAME placeholder, args.cni and runtimeConfig.mac precedence, a non-net key refused.
        let mut c = conf(&s, &ns, json!({"sysctl": {"net.ipv6.conf.IFNAME.disable_ipv6": "1"}, "mac": "02:00:00:00:77:02"}));
        c["args"] = json!({"cni": {"mtu": 1280, "mac": "02:00:00:00:77:03"}});
        c["runtimeConfig"] = json!({"mac": "02:00:00:00:77:04"});
        Call::new(&s.plugin("tuning"), "ADD", ns.path(), "eth0", &c).run().ok();
        let (l, _) = link_state(&ns, "eth0");
        assert_eq!((l.mac.as_str(), l.mtu), ("02:00:00:00:77:04", 1280));
        assert_eq!(sysctl::get(&ns, "net.ipv6.conf.eth0.disable_ipv6").unwrap(), "1");
        Call::new(&s.plugin("tuning"), "DEL", ns.path(), "eth0", &c).run().ok();
        assert_eq!(sysctl::get(&ns, "net.ipv6.conf.eth0.disable_ipv6").unwrap(), "0");
        let bad = conf(&s, &ns, json!({"sysctl": {"kernel.hostname": "x"}}));
        let (code, msg, _) = Call::new(&s.plugin("tuning"), "ADD", ns.path(), "eth0", &bad).run().err();
        assert_eq!(code, 7);
        assert!(msg.contains("kernel.hostname"), "{msg}");
        // The DEL the runtime sends after that refused ADD has nothing to undo.
        Call::new(&s.plugin("tuning"), "DEL", ns.path(), "eth0", &bad).run().ok();
    }
}
