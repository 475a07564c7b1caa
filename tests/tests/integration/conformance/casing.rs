//! Go's `encoding/json` matches keys case-insensitively, so the same config with its
//! keys upper-, lower- or randomly cased must give the same answer, byte for byte, and
//! the same kernel state. (`make conformance` also runs every suite re-cased through
//! `PODNET_KEY_CASE`; this test compares the answers themselves.)

use netkit::{NetNs, Netlink, VethOptions};
use podnet_tests::plugin::recase;
use podnet_tests::{link_state, privileged_test, random_name, Call, Sandbox, Subject};
use serde_json::{json, Value};

const MODES: [&str; 3] = ["upper", "lower", "random"];

/// The answer to `cmd` for `conf` as built and in every re-cased form: all equal.
fn same_answer(
    plugin: &str,
    what: &str,
    mut run: impl FnMut(&Value) -> String,
    conf: &Value,
) -> String {
    let plain = run(conf);
    for mode in MODES {
        let got = run(&recase(conf, mode));
        assert_eq!(got, plain, "{plugin} {what} with {mode}-cased keys");
    }
    plain
}

/// `conf` with `ipam.dataDir` (however its keys are cased) set to a fresh directory, so
/// that host-local hands out the same first address every time.
fn fresh_leases(conf: &Value, n: usize) -> Value {
    let mut c = conf.clone();
    let ipam = c
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("ipam"))
        .unwrap()
        .1;
    let dir = ipam
        .as_object_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.eq_ignore_ascii_case("datadir"))
        .unwrap()
        .1;
    *dir = json!(format!("/run/casing-leases-{n}"));
    c
}

/// `value` with the fields that differ on every ADD (MACs, a random host-side name)
/// blanked.
fn masked(mut v: Value) -> Value {
    for i in v["interfaces"].as_array_mut().into_iter().flatten() {
        i["mac"] = json!("");
        if i.get("sandbox").is_none() && i["name"].as_str().is_some_and(|n| n.starts_with("veth")) {
            i["name"] = json!("veth");
        }
    }
    v
}

privileged_test! {
    fn answers_and_kernel_state_do_not_depend_on_key_case() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("case");
        let v = |p: &str| s.newest(p).as_str().to_owned();

        // loopback: the same namespace each time.
        let lo = json!({"cniVersion": v("loopback"), "name": "casing", "type": "loopback"});
        same_answer("loopback", "ADD", |c| Call::new(&s.plugin("loopback"), "ADD", ns.path(), "lo", c).run().ok().to_string(), &lo);

        // host-local and static: a fresh lease directory each time, so the same address.
        let mut n = 0;
        let hl = |dir: String| json!({"cniVersion": v("host-local"), "name": "casing", "type": "bridge",
            "ipam": {"type": "host-local", "dataDir": dir, "ranges": [[{"subnet": "10.93.0.0/24", "gateway": "10.93.0.254"}]],
                     "routes": [{"dst": "0.0.0.0/0", "gw": "10.93.0.254"}]}});
        let template = hl("DIR".into());
        same_answer("host-local", "ADD", |c| {
            n += 1;
            let c = fresh_leases(c, n);
            Call::new(&s.plugin("host-local"), "ADD", ns.path(), "eth0", &c).run().ok().to_string()
        }, &template);
        let st = json!({"cniVersion": v("static"), "name": "casing", "type": "bridge",
            "ipam": {"type": "static", "addresses": [{"address": "10.93.1.5/24", "gateway": "10.93.1.1"}],
                     "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.93.1.1"]}}});
        same_answer("static", "ADD", |c| Call::new(&s.plugin("static"), "ADD", ns.path(), "eth0", c).run().ok().to_string(), &st);

        // tuning on one veth: the same settings, restored by DEL between the calls.
        netkit::block_on(async {
            Netlink::open_current()?.link_add_veth(&random_name("vc"), "eth0", &ns, &VethOptions::default()).await
        }).unwrap();
        let tu = json!({"cniVersion": v("tuning"), "name": "casing", "type": "tuning", "mac": "02:00:00:00:93:01", "mtu": 1400,
            "prevResult": {"cniVersion": v("tuning"), "interfaces": [{"name": "eth0", "sandbox": ns.path().display().to_string()}],
                           "ips": [{"address": "10.93.2.2/24", "interface": 0}]}});
        same_answer("tuning", "ADD", |c| {
            let out = Call::new(&s.plugin("tuning"), "ADD", ns.path(), "eth0", c).run().ok().to_string();
            let (l, _) = link_state(&ns, "eth0");
            assert_eq!((l.mac.as_str(), l.mtu), ("02:00:00:00:93:01", 1400));
            Call::new(&s.plugin("tuning"), "DEL", ns.path(), "eth0", c).run().ok();
            out
        }, &tu);

        // bridge + host-local: a fresh container each time; the answer (MACs and the
        // random host-side name aside) and the container's addresses are the same.
        let mut k = 0;
        let br_name = random_name("brc");
        let br = json!({"cniVersion": v("bridge"), "name": "casingbr", "type": "bridge", "bridge": br_name,
            "isGateway": true, "mtu": 1400,
            "ipam": {"type": "host-local", "dataDir": "DIR", "ranges": [[{"subnet": "10.93.3.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}});
        let pinned: Vec<NetNs> = (0..=MODES.len()).map(|_| sb.container("cb")).collect();
        same_answer("bridge", "ADD", |c| {
            let ns = &pinned[k];
            k += 1;
            let c = &fresh_leases(c, 100 + k);
            let call = |cmd: &str| Call::new(&s.plugin("bridge"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", "same-id");
            let mut out = masked(call("ADD").run().ok());
            let (l, mut addrs) = link_state(ns, "eth0");
            addrs.retain(|a| !a.starts_with("fe80:")); // from the random MAC
            assert_eq!(l.mtu, 1400);
            call("DEL").run().ok();
            out["interfaces"][2]["sandbox"] = json!("");
            format!("{out} {addrs:?}")
        }, &br);
    }
}
