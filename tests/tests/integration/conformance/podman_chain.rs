//! The chain Podman 4's CNI backend generates for its default network (the conflist
//! fixture, unchanged: bridge + host-local, portmap, firewall, tuning) run through the
//! runtime side of `cni` on the subject's plugins, in every spec version both sides
//! serve from 0.4.0: a published port carries traffic, CHECK passes, DEL closes it.

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{CniArgs, CniVersion};
use podnet_tests::net::{serve_tcp, sh, tcp_hello};
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("../../../fixtures/podman4-default.conflist");

privileged_test! {
    fn podman4_default_network_in_every_version() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let host = sb.host();
        let versions: Vec<CniVersion> = ["portmap", "firewall", "tuning", "bridge"]
            .iter()
            .map(|p| s.versions(p))
            .reduce(|a, b| a.into_iter().filter(|v| b.contains(v)).collect())
            .unwrap()
            .into_iter()
            .filter(|v| *v >= CniVersion::V0_4_0)
            .collect();
        assert!(versions.contains(&CniVersion::V1_0_0), "{versions:?}");
        let rt = CniRuntime::new(vec![s.dir.clone()], "/var/lib/cni");
        for (i, v) in versions.iter().enumerate() {
            let mut fixture: Value = serde_json::from_str(FIXTURE).unwrap();
            fixture["cniVersion"] = json!(v.as_str());
            let list = podnet_tests::plugin::conflist(fixture.to_string().as_bytes());
            let ns = sb.container("pod");
            let port = 8080 + i as u16;
            serve_tcp(&ns, "0.0.0.0:80", "podman chain");
            let mut caps = serde_json::Map::new();
            caps.insert("portMappings".into(), json!([{"hostPort": port, "containerPort": 80, "protocol": "tcp"}]));
            let conf = RuntimeConf {
                container_id: format!("ctr{i}"),
                netns: Some(ns.path().to_path_buf()),
                ifname: "eth0".into(),
                args: CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web").unwrap(),
                capability_args: caps,
            };
            let r = rt.add(&list, &conf).unwrap_or_else(|e| panic!("{v}: ADD {e:?}"));
            assert!(r.ips[0].address.to_string().starts_with("10.88."), "{v}: {r:?}");
            assert_eq!(
                tcp_hello(&host, &format!("10.88.0.1:{port}")).as_deref(),
                Some("podman chain"),
                "{v}: the published port carries traffic"
            );
            match rt.check(&list, &conf) {
                Err(e) if s.deviates(Deviation::PortmapCheckWithoutIpv6) => {
                    assert!(e.msg.contains("portmap") && e.msg.contains("ipv6"), "{v}: {e:?}");
                }
                other => other.unwrap_or_else(|e| panic!("{v}: CHECK {e:?}")),
            }
            rt.del(&list, &conf).unwrap_or_else(|e| panic!("{v}: DEL {e:?}"));
            assert_eq!(tcp_hello(&host, &format!("10.88.0.1:{port}")), None, "{v}: closed by DEL");
            rt.del(&list, &conf).unwrap_or_else(|e| panic!("{v}: second DEL {e:?}"));
        }
        if s.family == Family::Podnet {
            let rs = sh(None, "nft list ruleset").1;
            assert!(!rs.contains("podnet"), "nothing left: {rs}");
        }
    }
}
