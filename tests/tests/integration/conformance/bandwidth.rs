//! bandwidth on the subject's plugin: the buckets read back from the kernel, real
//! shaping measured with a bounded TCP transfer each way, the ifb device in the result,
//! CHECK, DEL (twice) and GC.

use netkit::tc::Tbf;
use netkit::{NetNs, Netlink};
use podnet_tests::net::tcp_rate;
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, random_name, Call, Sandbox, Subject};
use serde_json::{json, Value};

/// 8 Mbit/s each way with a 256 kbit burst.
const RATE: u64 = 8_000_000;
const BURST: u64 = 262_144;

/// A container wired to the host by a veth (10.97.0.1/24 on the host end, .2 inside);
/// the host end's name.
fn wired(sb: &mut Sandbox) -> (NetNs, String) {
    let ns = sb.container("bw");
    let host = random_name("vb");
    podnet_tests::net::wire(&ns, &host, "10.97.0.1/24", "10.97.0.2/24");
    (ns, host)
}

fn conf(s: &Subject, ns: &NetNs, host: &str, limits: Value) -> Value {
    let v = s.newest("bandwidth").as_str();
    let mut c = json!({"cniVersion": v, "name": "bwnet", "type": "bandwidth",
        "prevResult": {"cniVersion": v,
            "interfaces": [{"name": host}, {"name": "eth0", "sandbox": ns.path().display().to_string()}],
            "ips": [{"address": "10.97.0.2/24", "interface": 1}]}});
    for (k, v) in limits.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn root_tbf(index: u32) -> Option<Tbf> {
    netkit::block_on(async { Netlink::open_current()?.qdisc_root_tbf(index).await }).unwrap()
}

fn link(name: &str) -> Option<netkit::Link> {
    netkit::block_on(async { Netlink::open_current()?.link_get(name).await }).unwrap()
}

fn within_20_percent(what: &str, measured: f64) {
    let ratio = measured / RATE as f64;
    assert!(
        (0.8..=1.2).contains(&ratio),
        "{what}: {measured:.0} bit/s is {ratio:.2}x the configured {RATE}"
    );
}

privileged_test! {
    fn shapes_both_ways_check_and_del() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (ns, host) = wired(&mut sb);
        let limits = json!({"ingressRate": RATE, "ingressBurst": BURST, "egressRate": RATE, "egressBurst": BURST});
        let c = conf(&s, &ns, &host, limits);
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("bandwidth"), cmd, ns.path(), "eth0", c);
        let out = call("ADD", &c).run().ok();
        let ifb = out["interfaces"][2]["name"].as_str().unwrap_or_else(|| panic!("no ifb in {out}")).to_owned();
        assert!(ifb.starts_with("bwp") && ifb.len() == 15, "{ifb}");
        let dev = link(&ifb).expect("the ifb exists");
        assert_eq!(dev.kind.as_deref(), Some("ifb"));
        assert!(dev.up);
        assert_eq!(out["interfaces"][2]["mac"].as_str(), Some(dev.mac.as_str()));
        let want = Tbf::from_bits(RATE, BURST);
        let h = link(&host).unwrap();
        assert_eq!(root_tbf(h.index), Some(want), "the host end's bucket");
        assert_eq!(root_tbf(dev.index), Some(want), "the ifb's bucket");

        // Real shaping: 2.5 MB each way, the receiver's rate within 20 % of 8 Mbit/s.
        let hostns = sb.host();
        within_20_percent("to the container", tcp_rate(&hostns, &ns, "10.97.0.2:5201", 2_500_000));
        within_20_percent("from the container", tcp_rate(&ns, &hostns, "10.97.0.1:5202", 2_500_000));

        let mut with_prev = c.clone();
        with_prev["prevResult"] = out;
        call("CHECK", &with_prev).run().ok();
        let mut other = with_prev.clone();
        other["egressRate"] = json!(RATE * 2);
        let r = call("CHECK", &other).run();
        assert_ne!(r.status, 0, "CHECK with another rate must fail: {}", r.stdout);

        call("DEL", &with_prev).run().ok();
        assert!(link(&ifb).is_none(), "DEL removes the ifb");
        call("DEL", &with_prev).run().ok(); // twice
    }
}

privileged_test! {
    fn capability_from_runtime_config_and_unchanged_without_limits() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (ns, host) = wired(&mut sb);
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("bandwidth"), cmd, ns.path(), "eth0", c);
        // Nothing to shape: prevResult comes back as it was, and nothing is created.
        let plain = conf(&s, &ns, &host, json!({}));
        let out = call("ADD", &plain).run().ok();
        assert_eq!(out["interfaces"].as_array().map(Vec::len), Some(2), "{out}");
        let h = link(&host).unwrap();
        assert_eq!(root_tbf(h.index), None);
        // Kubernetes' annotations arrive as runtimeConfig.bandwidth, in go-cni's spelling.
        let rc = conf(&s, &ns, &host, json!({"capabilities": {"bandwidth": true},
            "runtimeConfig": {"bandwidth": {"IngressRate": RATE, "IngressBurst": BURST}}}));
        let out = call("ADD", &rc).run().ok();
        assert_eq!(out["interfaces"].as_array().map(Vec::len), Some(2), "ingress only: no ifb: {out}");
        assert_eq!(root_tbf(h.index), Some(Tbf::from_bits(RATE, BURST)));
        let mut with_prev = rc.clone();
        with_prev["prevResult"] = out;
        call("CHECK", &with_prev).run().ok();
        call("DEL", &with_prev).run().ok();
    }
}

privileged_test! {
    fn bad_limits_and_missing_prev_result_leave_nothing() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (ns, host) = wired(&mut sb);
        let call = |cmd: &str, c: &Value| Call::new(&s.plugin("bandwidth"), cmd, ns.path(), "eth0", c);
        let h = link(&host).unwrap();
        for bad in [json!({"ingressRate": RATE}), json!({"egressBurst": BURST})] {
            let r = call("ADD", &conf(&s, &ns, &host, bad)).run();
            assert_ne!(r.status, 0);
            if s.family == Family::Podnet {
                let (code, msg, _) = r.err();
                assert_eq!(code, 7, "{msg}");
                assert!(msg.contains("Burst") || msg.contains("Rate"), "{msg}");
            }
        }
        let mut bare = conf(&s, &ns, &host, json!({"egressRate": RATE, "egressBurst": BURST}));
        bare.as_object_mut().unwrap().remove("prevResult");
        let r = call("ADD", &bare).run();
        assert_ne!(r.status, 0, "shaping needs prevResult");
        assert_eq!(root_tbf(h.index), None);
        assert!(link(&bandwidth_ifb("bwnet", "podnet-test-ctr")).is_none());
    }
}

privileged_test! {
    fn gc_removes_ifbs_of_gone_containers() {
        let s = Subject::from_env();
        if s.family != Family::Podnet {
            return; // The reference has no GC.
        }
        let mut sb = Sandbox::new();
        let (ns, host) = wired(&mut sb);
        let c = conf(&s, &ns, &host, json!({"egressRate": RATE, "egressBurst": BURST}));
        Call::new(&s.plugin("bandwidth"), "ADD", ns.path(), "eth0", &c).run().ok();
        let ifb = bandwidth_ifb("bwnet", "podnet-test-ctr");
        assert!(link(&ifb).is_some());
        let gc = |valid: Value| {
            let mut g = c.clone();
            g["cniVersion"] = json!("1.1.0");
            g["cni.dev/valid-attachments"] = valid;
            Call::bare(&s.plugin("bandwidth"), "GC", &g).run().ok();
        };
        gc(json!([{"containerID": "podnet-test-ctr", "ifname": "eth0"}]));
        assert!(link(&ifb).is_some(), "GC keeps a valid attachment's ifb");
        gc(json!([]));
        assert!(link(&ifb).is_none(), "GC removes the ifb of a gone container");
    }
}

/// The ifb name both implementations derive for a network and a container.
fn bandwidth_ifb(network: &str, container: &str) -> String {
    // bwp + the first 12 hex digits of SHA-512(network + container), computed by sha512sum.
    let (ok, out) = podnet_tests::net::sh(
        None,
        &format!("printf '%s' '{network}{container}' | sha512sum | cut -c1-12"),
    );
    assert!(ok, "{out}");
    format!("bwp{}", out.trim())
}
