//! `static` IPAM through the protocol on the subject's plugin.

use cni::CniVersion;
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, Call, Subject};
use serde_json::{json, Value};

fn conf(v: CniVersion, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("static");
    json!({"cniVersion": v.as_str(), "name": "st", "type": "bridge", "ipam": ipam})
}

fn call(s: &Subject, cmd: &str, c: &Value) -> Call {
    Call::new(
        &s.plugin("static"),
        cmd,
        std::path::Path::new("/run/netns/unused"),
        "eth0",
        c,
    )
}

privileged_test! {
    fn addresses_routes_and_dns_in_each_version() {
        let s = Subject::from_env();
        let ipam = json!({"addresses": [{"address": "10.10.0.5/24", "gateway": "10.10.0.1"}, {"address": "fd10::5/64"}],
                          "routes": [{"dst": "0.0.0.0/0"}], "dns": {"nameservers": ["10.10.0.1"]}});
        for &v in &s.versions("static") {
            if v < CniVersion::V0_3_0 {
                // Two families fit 0.2.0's ip4/ip6.
                let out = call(&s, "ADD", &conf(v, ipam.clone())).run().ok();
                assert_eq!(out["ip4"]["ip"], "10.10.0.5/24", "{v}: {out}");
                assert_eq!(out["ip6"]["ip"], "fd10::5/64");
                continue;
            }
            let out = call(&s, "ADD", &conf(v, ipam.clone())).run().ok();
            assert_eq!(out["cniVersion"], v.as_str());
            assert_eq!(out["ips"][0]["address"], "10.10.0.5/24", "{out}");
            assert_eq!(out["ips"][0]["gateway"], "10.10.0.1");
            assert_eq!(out["ips"][1]["address"], "fd10::5/64");
            assert_eq!(out["routes"][0]["dst"], "0.0.0.0/0");
            assert_eq!(out["dns"]["nameservers"][0], "10.10.0.1");
            call(&s, "DEL", &conf(v, ipam.clone())).run().ok();
        }
    }
}

privileged_test! {
    fn cni_args_and_overrides() {
        let s = Subject::from_env();
        let v = s.newest("static");
        let out = call(&s, "ADD", &conf(v, json!({}))).set("CNI_ARGS", "IP=10.11.0.7/24;GATEWAY=10.11.0.1").run().ok();
        assert_eq!(out["ips"][0]["address"], "10.11.0.7/24", "{out}");
        assert_eq!(out["ips"][0]["gateway"], "10.11.0.1");
        let bad = call(&s, "ADD", &conf(v, json!({"addresses": [{"address": "10.10.0.5"}]}))).run();
        assert_ne!(bad.status, 0, "an address without a prefix length is refused");
        if s.family == Family::Podnet {
            let (code, msg, _) = bad.err();
            assert_eq!(code, 7);
            assert!(msg.contains("ipam.addresses[0].address"), "{msg}");
            let mut c = conf(v, json!({"addresses": [{"address": "10.10.0.5/24"}]}));
            c["runtimeConfig"] = json!({"ips": ["10.12.0.9/16"]});
            let out = call(&s, "ADD", &c).run().ok();
            assert_eq!(out["ips"].as_array().unwrap().len(), 1);
            assert_eq!(out["ips"][0]["address"], "10.12.0.9/16", "runtimeConfig.ips replaces: {out}");
            let (code, _, _) = call(&s, "ADD", &conf(v, json!({}))).run().err();
            assert_eq!(code, 7, "no address at all");
        }
    }
}
