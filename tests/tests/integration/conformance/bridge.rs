//! bridge + host-local through the protocol on the subject's plugins: result shape per
//! version, kernel state, CHECK, DEL twice and without a namespace. (No `ipMasq` here:
//! the reference does it with iptables.)

use cni::CniVersion;
use podnet_tests::{link_state, privileged_test, random_name, Call, Sandbox, Subject};
use serde_json::{json, Value};

fn conf(v: CniVersion, br: &str) -> Value {
    json!({"cniVersion": v.as_str(), "name": "confbr", "type": "bridge", "bridge": br, "isGateway": true,
           "ipam": {"type": "host-local", "subnet": "10.90.0.0/24", "routes": [{"dst": "0.0.0.0/0"}]}})
}

privileged_test! {
    fn lifecycle_in_each_version() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let br = random_name("br");
        for (i, &v) in s.versions("bridge").iter().enumerate() {
            let ns = sb.container("c");
            let c = conf(v, &br);
            let id = format!("c{i}");
            let call = |cmd: &str, c: &Value| Call::new(&s.plugin("bridge"), cmd, ns.path(), "eth0", c).set("CNI_CONTAINERID", &id);
            let out = call("ADD", &c).run().ok();
            assert_eq!(out["cniVersion"], v.as_str());
            let addr = if v < CniVersion::V0_3_0 {
                out["ip4"]["ip"].as_str().unwrap().to_owned()
            } else {
                assert_eq!(out["interfaces"][0]["name"], br.as_str(), "{out}");
                assert_eq!(out["interfaces"][2]["name"], "eth0");
                assert_eq!(out["interfaces"][2]["sandbox"], ns.path().display().to_string());
                assert_eq!(out["ips"][0]["interface"], 2);
                assert_eq!(out["ips"][0]["gateway"], "10.90.0.1");
                assert_eq!(out["ips"][0].get("version").is_some(), v < CniVersion::V1_0_0, "{out}");
                out["ips"][0]["address"].as_str().unwrap().to_owned()
            };
            let (l, addrs) = link_state(&ns, "eth0");
            assert!(l.up && addrs.contains(&addr), "{addrs:?}");
            assert!(link_state(&sb.host(), &br).1.contains(&"10.90.0.1/24".to_string()));
            if v.allows_check() {
                let mut with_prev = c.clone();
                with_prev["prevResult"] = out.clone();
                call("CHECK", &with_prev).run().ok();
            }
            call("DEL", &c).run().ok();
            assert!(netkit::block_on(async { netkit::Netlink::open_in(&ns).unwrap().link_get("eth0").await.unwrap().is_none() }));
            call("DEL", &c).run().ok();
            let gone = std::path::PathBuf::from("/run/netns/gone-ns");
            call("DEL", &c).set("CNI_NETNS", gone.to_str().unwrap()).run().ok();
        }
    }
}

privileged_test! {
    fn add_into_a_missing_namespace_creates_nothing() {
        let s = Subject::from_env();
        let br = random_name("br");
        let c = conf(s.newest("bridge"), &br);
        let r = Call::new(&s.plugin("bridge"), "ADD", std::path::Path::new("/run/netns/never"), "eth0", &c).run();
        assert_ne!(r.status, 0);
        let leases = std::fs::read_dir("/var/lib/cni/networks/confbr").map(|d| d.filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with("10.")).count()).unwrap_or(0);
        assert_eq!(leases, 0, "no lease is left");
    }
}

privileged_test! {
    fn null_means_the_default_and_empty_data_dir_is_the_default_dir() {
        // Go's encoding/json leaves a field at its default for `null`, and host-local
        // takes `"dataDir": ""` as its default directory.
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("c");
        let c = json!({"cniVersion": s.newest("bridge").as_str(), "name": "nullbr", "type": "bridge",
            "bridge": null, "isGateway": null, "ipMasq": null, "mtu": null, "hairpinMode": null,
            "ipam": {"type": "host-local", "subnet": "10.91.0.0/24", "dataDir": "", "routes": null}});
        let call = |cmd: &str| Call::new(&s.plugin("bridge"), cmd, ns.path(), "eth0", &c);
        let out = call("ADD").run().ok();
        assert_eq!(out["interfaces"][0]["name"], "cni0", "the default bridge: {out}");
        let addr = out["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_owned();
        let lease = std::path::Path::new("/var/lib/cni/networks/nullbr").join(&addr);
        assert!(lease.is_file(), "the lease is in the default directory: {}", lease.display());
        assert!(link_state(&ns, "eth0").0.up);
        call("DEL").run().ok();
        assert!(!lease.exists(), "DEL released the lease");
    }
}
