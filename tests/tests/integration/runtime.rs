//! The runtime side of `cni` with real plugins: a conflist run through ADD, CHECK, DEL
//! and GC against podnet's (or the reference's) loopback, state read back.

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{Attachment, CniArgs, NetConfList};
use podnet_tests::{link_state, privileged_test, Sandbox, Subject};
use serde_json::json;

fn lo_up(ns: &netkit::NetNs) -> bool {
    link_state(ns, "lo").0.up
}

privileged_test! {
    fn conflist_lifecycle_with_the_cache() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let ns = sb.container("rt");
        let version = s.newest("loopback");
        let list = NetConfList::from_bytes(
            json!({"cniVersion": version.as_str(), "name": "none", "plugins": [{"type": "loopback"}]}).to_string().as_bytes(),
        ).unwrap();
        let rt = CniRuntime::new(vec![s.dir.clone()], "/var/lib/cni");
        let conf = RuntimeConf {
            container_id: "ctr1".into(),
            netns: Some(ns.path().to_path_buf()),
            ifname: "lo".into(),
            args: CniArgs::parse("IgnoreUnknown=1").unwrap(),
            capability_args: Default::default(),
        };
        let result = rt.add(&list, &conf).unwrap();
        assert_eq!(result.ips[0].address.to_string(), "127.0.0.1/8");
        assert!(lo_up(&ns));
        let cached: serde_json::Value = serde_json::from_slice(&std::fs::read("/var/lib/cni/results/none-ctr1-lo").unwrap()).unwrap();
        assert_eq!(cached["result"]["ips"][0]["address"], "127.0.0.1/8");
        rt.check(&list, &conf).unwrap();
        rt.del(&list, &conf).unwrap();
        assert!(!lo_up(&ns));
        assert!(!std::path::Path::new("/var/lib/cni/results/none-ctr1-lo").exists());
        rt.del(&list, &conf).unwrap();

        // GC removes what is cached but no longer valid, and keeps what is.
        let keep = RuntimeConf { container_id: "keep".into(), ..conf.clone() };
        rt.add(&list, &conf).unwrap();
        rt.add(&list, &keep).unwrap();
        rt.gc(&list, &[Attachment { container_id: "keep".into(), ifname: "lo".into() }]).unwrap();
        assert!(rt.cache.read("none", "ctr1", "lo").unwrap().is_none());
        assert!(rt.cache.read("none", "keep", "lo").unwrap().is_some());
    }
}
