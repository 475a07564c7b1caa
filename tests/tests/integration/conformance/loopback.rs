//! The loopback lifecycle, with kernel state read back: ADD in every version (result
//! shape per version), CHECK after ADD, DEL twice and without a namespace, chained
//! prevResult, STATUS and GC.

use cni::{CniResult, CniVersion};
use netkit::NetNs;
use podnet_tests::{link_state, privileged_test, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

fn conf(version: CniVersion) -> Value {
    json!({"cniVersion": version.as_str(), "name": "lo-net", "type": "loopback"})
}

fn lo_state(ns: &NetNs) -> (bool, Vec<String>) {
    let (lo, addrs) = link_state(ns, "lo");
    (lo.up, addrs)
}

fn call(s: &Subject, cmd: &str, ns: &NetNs, version: CniVersion) -> Call {
    Call::new(&s.plugin("loopback"), cmd, ns.path(), "lo", &conf(version))
}

privileged_test! {
    fn add_brings_lo_up_and_answers_in_each_version() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        for &v in &s.versions("loopback") {
            let ns = sb.container("lo");
            assert!(!lo_state(&ns).0, "a new namespace has lo down");
            let out = call(&s, "ADD", &ns, v).run().ok();
            let (up, addrs) = lo_state(&ns);
            assert!(up, "{v}: lo is up after ADD");
            assert!(addrs.contains(&"127.0.0.1/8".to_string()), "{v}: {addrs:?}");
            assert_eq!(out["cniVersion"], v.as_str());
            if s.deviates(Deviation::ResultShapeIgnoresVersion) && v < CniVersion::V1_0_0 {
                assert_eq!(out["ips"][0]["address"], "127.0.0.1/8", "{v}: {out}");
                assert!(out["ips"][0].get("version").is_none(), "{v}: the reference was fixed: {out}");
                continue;
            }
            match v {
                CniVersion::V0_1_0 | CniVersion::V0_2_0 => {
                    assert_eq!(out["ip4"]["ip"], "127.0.0.1/8", "{out}");
                    assert_eq!(out["ip6"]["ip"], "::1/128", "{out}");
                    assert!(out.get("interfaces").is_none(), "{out}");
                }
                _ => {
                    assert_eq!(out["interfaces"][0], json!({"name":"lo","mac":"00:00:00:00:00:00","sandbox": ns.path().display().to_string()}));
                    assert_eq!(out["ips"][0]["address"], "127.0.0.1/8");
                    assert_eq!(out["ips"][0]["interface"], 0);
                    assert_eq!(out["ips"][1]["address"], "::1/128");
                    let has_version = out["ips"][0].get("version").is_some();
                    assert_eq!(has_version, v < CniVersion::V1_0_0, "{v}: {out}");
                    if v < CniVersion::V1_0_0 {
                        assert_eq!(out["ips"][0]["version"], "4");
                        assert_eq!(out["ips"][1]["version"], "6");
                    }
                }
            }
            // Every answer decodes as a result of its version.
            let (_, decoded) = CniResult::decode(&out).unwrap();
            assert_eq!(decoded, v);
        }
    }
}

privileged_test! {
    fn check_after_add_and_after_del() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("lo");
        let v = s.newest("loopback");
        let result = call(&s, "ADD", &ns, v).run().ok();
        let mut with_prev = conf(v);
        with_prev["prevResult"] = result;
        let check = call(&s, "CHECK", &ns, v).stdin(with_prev.to_string().as_bytes());
        check.run().ok();
        call(&s, "DEL", &ns, v).stdin(with_prev.to_string().as_bytes()).run().ok();
        assert!(!lo_state(&ns).0, "DEL brings lo down");
        let after = check.run();
        let (code, msg, _) = after.err();
        let want = if s.deviates(Deviation::CheckFailureCatchAll) { 999 } else { cni::ErrorCode::CHECK_FAILED.0 as u64 };
        assert_eq!(code, want, "{msg}");
        assert!(msg.contains("down"), "{msg}");
    }
}

privileged_test! {
    fn del_is_idempotent_and_needs_no_namespace() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("lo");
        let v = s.newest("loopback");
        call(&s, "ADD", &ns, v).run().ok();
        let del = call(&s, "DEL", &ns, v);
        assert_eq!(del.run().ok(), Value::Null, "DEL prints nothing");
        del.run().ok();
        let path = ns.path().to_path_buf();
        drop(ns);
        sb.remove(&path);
        del.run().ok(); // the namespace is gone
        del.clone().set("CNI_NETNS", "").run().ok(); // no namespace given
        del.clone().without("CNI_NETNS").run().ok();
        del.clone().set("CNI_NETNS", "/run/netns/never-existed").run().ok();
    }
}

privileged_test! {
    fn add_into_a_missing_namespace_fails_cleanly() {
        let s = Subject::from_env();
        let v = s.newest("loopback");
        let c = Call::new(&s.plugin("loopback"), "ADD", std::path::Path::new("/run/netns/never-existed"), "lo", &conf(v));
        let (code, msg, _) = c.run().err();
        if s.deviates(Deviation::MissingNetnsCatchAll) {
            assert_eq!(code, 999);
        } else {
            assert_eq!(code, cni::ErrorCode::UNKNOWN_CONTAINER.0 as u64, "{msg}");
            assert!(msg.contains("/run/netns/never-existed"), "{msg}");
        }
    }
}

privileged_test! {
    fn chained_prev_result_passes_through() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("lo");
        for v in [CniVersion::V0_4_0, CniVersion::V1_0_0] {
            let prev = CniResult::decode(&json!({"cniVersion":"1.0.0",
                "interfaces":[{"name":"eth0","sandbox":"/x"}],
                "ips":[{"interface":0,"address":"10.1.0.2/24","gateway":"10.1.0.1"}],
                "dns":{"nameservers":["10.1.0.1"]}})).unwrap().0;
            let mut c = conf(v);
            c["prevResult"] = prev.encode(v).unwrap();
            let out = Call::new(&s.plugin("loopback"), "ADD", ns.path(), "lo", &c).run().ok();
            assert_eq!(out, prev.encode(v).unwrap(), "{v}");
            assert!(lo_state(&ns).0, "lo still comes up when chained");
        }
    }
}

privileged_test! {
    fn status_and_gc_answer_in_1_1_0() {
        let s = Subject::from_env();
        if !s.versions("loopback").contains(&CniVersion::V1_1_0) {
            return; // predates 1.1.0
        }
        let c = conf(CniVersion::V1_1_0);
        Call::bare(&s.plugin("loopback"), "STATUS", &c).run().ok();
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([{"containerID":"a","ifname":"lo"}]);
        Call::bare(&s.plugin("loopback"), "GC", &gc).run().ok();
    }
}
