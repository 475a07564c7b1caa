//! host-local through the protocol, on the subject's plugin: results per version, the
//! lease files, requested addresses, DEL, CHECK; podnet-only behaviour (idempotent ADD,
//! holder named, STATUS, GC) where the subject is podnet.

use std::fs;
use std::path::Path;

use cni::CniVersion;
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, Call, Subject};
use serde_json::{json, Value};

const DATA: &str = "/var/lib/cni/hl-test";

fn conf(v: CniVersion, ipam: Value) -> Value {
    let mut ipam = ipam;
    ipam["type"] = json!("host-local");
    ipam["dataDir"] = json!(DATA);
    json!({"cniVersion": v.as_str(), "name": "hlnet", "type": "bridge", "ipam": ipam})
}

fn call(s: &Subject, cmd: &str, id: &str, c: &Value) -> Call {
    Call::new(
        &s.plugin("host-local"),
        cmd,
        Path::new("/run/netns/unused"),
        "eth0",
        c,
    )
    .set("CNI_CONTAINERID", id)
}

fn lease(ip: &str) -> Option<String> {
    fs::read_to_string(format!("{DATA}/hlnet/{ip}")).ok()
}

privileged_test! {
    fn add_answers_in_each_version_and_writes_the_lease() {
        let s = Subject::from_env();
        for (i, &v) in s.versions("host-local").iter().enumerate() {
            let c = conf(v, json!({"subnet": "10.50.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}));
            let id = format!("ver{i}");
            let out = call(&s, "ADD", &id, &c).run().ok();
            assert_eq!(out["cniVersion"], v.as_str());
            let addr = if v < CniVersion::V0_3_0 {
                assert_eq!(out["ip4"]["gateway"], "10.50.0.1", "{out}");
                assert_eq!(out["ip4"]["routes"][0]["dst"], "0.0.0.0/0", "{out}");
                out["ip4"]["ip"].as_str().unwrap().to_owned()
            } else {
                assert_eq!(out["ips"][0]["gateway"], "10.50.0.1", "{out}");
                assert!(out["ips"][0].get("interface").is_none(), "IPAM results name no interface: {out}");
                assert_eq!(out["ips"][0].get("version").is_some(), v < CniVersion::V1_0_0, "{out}");
                assert_eq!(out["routes"][0]["dst"], "0.0.0.0/0");
                out["ips"][0]["address"].as_str().unwrap().to_owned()
            };
            assert!(addr.ends_with("/24"), "{addr}");
            let ip = addr.trim_end_matches("/24");
            assert_eq!(lease(ip).as_deref(), Some(format!("{id}\r\neth0").as_str()));
            assert_eq!(fs::read_to_string(format!("{DATA}/hlnet/last_reserved_ip.0")).unwrap(), ip);
            if v.allows_check() {
                call(&s, "CHECK", &id, &c).run().ok();
            }
            call(&s, "DEL", &id, &c).run().ok();
            assert_eq!(lease(ip), None);
            call(&s, "DEL", &id, &c).run().ok();
        }
    }
}

privileged_test! {
    fn addresses_are_handed_out_in_order_skipping_the_gateway() {
        let s = Subject::from_env();
        let v = s.newest("host-local");
        let c = conf(v, json!({"ranges": [[{"subnet": "10.51.0.0/29", "gateway": "10.51.0.3"}]]}));
        let got: Vec<String> = (0..4).map(|i| call(&s, "ADD", &format!("o{i}"), &c).run().ok()["ips"][0]["address"].as_str().unwrap().to_owned()).collect();
        assert_eq!(got, ["10.51.0.1/29", "10.51.0.2/29", "10.51.0.4/29", "10.51.0.5/29"]);
    }
}

privileged_test! {
    fn requested_addresses_from_every_source() {
        let s = Subject::from_env();
        let v = s.newest("host-local");
        let base = json!({"ranges": [[{"subnet": "10.52.0.0/24"}], [{"subnet": "fd52::/64"}]]});
        let out = call(&s, "ADD", "env", &conf(v, base.clone())).set("CNI_ARGS", "IP=10.52.0.10").run().ok();
        assert_eq!(out["ips"][0]["address"], "10.52.0.10/24");
        assert!(out["ips"][1]["address"].as_str().unwrap().starts_with("fd52::"));
        let mut c = conf(v, base.clone());
        c["args"] = json!({"cni": {"ips": ["10.52.0.11", "fd52::11"]}});
        let out = call(&s, "ADD", "args", &c).run().ok();
        assert_eq!((out["ips"][0]["address"].as_str(), out["ips"][1]["address"].as_str()), (Some("10.52.0.11/24"), Some("fd52::11/64")));
        let mut c = conf(v, base.clone());
        c["runtimeConfig"] = json!({"ips": ["10.52.0.12/24"]});
        let out = call(&s, "ADD", "rt", &c).run().ok();
        assert_eq!(out["ips"][0]["address"], "10.52.0.12/24");
        // A taken address is refused, the lease stays its holder's, nothing is left for the loser.
        let r = call(&s, "ADD", "thief", &conf(v, base.clone())).set("CNI_ARGS", "IP=10.52.0.10").run();
        let (code, msg, _) = r.err();
        assert_eq!(lease("10.52.0.10").as_deref(), Some("env\r\neth0"));
        if s.family == Family::Podnet {
            assert_eq!(code, cni::ErrorCode::ADDRESS_IN_USE.0 as u64);
            assert!(msg.contains("10.52.0.10") && msg.contains("\"env\""), "the holder is named: {msg}");
        }
        let held_by_thief = fs::read_dir(format!("{DATA}/hlnet")).unwrap().filter(|e| fs::read_to_string(e.as_ref().unwrap().path()).unwrap_or_default().starts_with("thief")).count();
        assert_eq!(held_by_thief, 0, "a failed ADD leaves no lease (the v6 one is released too)");
        // Out of range, and the gateway.
        let (_, msg, _) = call(&s, "ADD", "far", &conf(v, base.clone())).set("CNI_ARGS", "IP=10.99.0.1").run().err();
        assert!(msg.contains("10.99.0.1"), "{msg}");
        let (_, msg, _) = call(&s, "ADD", "gw", &conf(v, base)).set("CNI_ARGS", "IP=10.52.0.1").run().err();
        assert!(msg.contains("gateway"), "{msg}");
    }
}

privileged_test! {
    fn exhaustion_names_the_range() {
        let s = Subject::from_env();
        let v = s.newest("host-local");
        let c = conf(v, json!({"ranges": [[{"subnet": "10.53.0.0/30"}]]}));
        call(&s, "ADD", "only", &c).run().ok();
        let (code, msg, _) = call(&s, "ADD", "late", &c).run().err();
        assert!(msg.contains("10.53.0.2"), "the range is named: {msg}");
        if s.family == Family::Podnet {
            assert_eq!(code, cni::ErrorCode::RANGE_EXHAUSTED.0 as u64);
            let status = Call::bare(&s.plugin("host-local"), "STATUS", &conf(CniVersion::V1_1_0, json!({"ranges": [[{"subnet": "10.53.0.0/30"}]]}))).run();
            assert_eq!(status.err().0, 50);
            call(&s, "DEL", "only", &c).run().ok();
            Call::bare(&s.plugin("host-local"), "STATUS", &conf(CniVersion::V1_1_0, json!({"ranges": [[{"subnet": "10.53.0.0/30"}]]}))).run().ok();
        }
    }
}

privileged_test! {
    fn podnet_add_retry_returns_the_same_address_and_gc_releases_stale_leases() {
        let s = Subject::from_env();
        if s.family != Family::Podnet {
            return; // the reference refuses a retry ("duplicate allocation") and has no GC
        }
        let c = conf(CniVersion::V1_1_0, json!({"subnet": "10.54.0.0/24"}));
        let first = call(&s, "ADD", "r1", &c).run().ok();
        let again = call(&s, "ADD", "r1", &c).run().ok();
        assert_eq!(first["ips"], again["ips"]);
        call(&s, "ADD", "r2", &c).run().ok();
        call(&s, "ADD", "r3", &c).set("CNI_IFNAME", "net1").run().ok();
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID": "r2", "ifname": "eth0"}]);
        Call::bare(&s.plugin("host-local"), "GC", &gc).run().ok();
        let holders: Vec<String> = fs::read_dir(format!("{DATA}/hlnet")).unwrap().filter_map(|e| {
            let e = e.unwrap();
            e.file_name().to_str().unwrap().parse::<std::net::IpAddr>().ok()?;
            Some(fs::read_to_string(e.path()).unwrap())
        }).collect();
        assert_eq!(holders, ["r2\r\neth0"]);
        let (code, msg, _) = call(&s, "CHECK", "r1", &c).run().err();
        assert_eq!(code, cni::ErrorCode::CHECK_FAILED.0 as u64, "{msg}");
    }
}
