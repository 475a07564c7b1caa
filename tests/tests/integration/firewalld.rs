//! The Podman chain (with dnsname) on a host whose firewall is firewalld (nftables
//! backend, Debian's package from the Debian 13 root, with a D-Bus system bus of its
//! own): firewalld's table rejects what no zone allows and admits no other process's
//! rules, so podnet puts the bridge into firewalld's `trusted` zone for as long as it has
//! containers; a firewalld reload forgets that and the nftables watcher says it again.

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::CniArgs;
use hickory_proto::rr::RecordType;
use netkit::NetNs;
use podnet_tests::firewalld::Firewalld;
use podnet_tests::net::{outside, serve_tcp, tcp_hello, time_until};
use podnet_tests::{privileged_test, Sandbox, Subject};
use serde_json::{json, Value};

const FIXTURE: &str = include_str!("../../fixtures/podman4-dnsname.conflist");
const BRIDGE: &str = "cni-podman1";

fn attachment(ns: &NetNs, name: &str, ports: Value) -> RuntimeConf {
    let mut rc = podnet_tests::net::attachment(ns, name, ports);
    rc.args = CniArgs::parse(&format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={name};K8S_POD_NAME={name}"
    ))
    .unwrap();
    rc
}

privileged_test! {
    fn firewalld_trusts_the_bridge_while_it_has_containers_and_after_a_reload() {
        let mut sb = Sandbox::new();
        let out = outside(&mut sb);
        let fw = Firewalld::start();
        // The plugins (and the watcher they start) reach this firewalld's bus.
        std::env::set_var("DBUS_SYSTEM_BUS_ADDRESS", &fw.bus);
        let rt = CniRuntime::new(vec![Subject::from_env().dir], "/var/lib/cni");
        let full = podnet_tests::plugin::conflist(FIXTURE.as_bytes());
        // The same network without firewall and dnsname: podnet tells firewalld nothing.
        let mut v: Value = serde_json::from_str(FIXTURE).unwrap();
        v["plugins"].as_array_mut().unwrap().retain(|p| p["type"] == "bridge" || p["type"] == "portmap");
        let bare = podnet_tests::plugin::conflist(v.to_string().as_bytes());
        let (a, b) = (sb.container("a"), sb.container("b"));
        serve_tcp(&a, "0.0.0.0:80", "hello from a");
        serve_tcp(&out, "0.0.0.0:7000", "outside");
        let ports = json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]);

        // What firewalld does to a bridge in no zone: forwarded traffic rejected (a
        // published port still works: firewalld accepts DNATed flows).
        rt.add(&bare, &attachment(&b, "b", Value::Null)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE), None, "the bridge is in no zone");
        assert_eq!(tcp_hello(&b, "192.0.2.1:7000"), None, "firewalld rejects the bridge's forwarded traffic");
        rt.del(&bare, &attachment(&b, "b", Value::Null)).unwrap();

        rt.add(&full, &attachment(&a, "a", ports.clone())).unwrap();
        rt.add(&full, &attachment(&b, "b", Value::Null)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE).as_deref(), Some("trusted"));
        let a_ip = || {
            podnet_tests::dns::query(&b, "10.89.0.1", "a.dns.podman", RecordType::A, false)
                .filter(|r| r.ok())
                .map(|r| r.data)
        };
        let works = || {
            tcp_hello(&out, "192.0.2.254:8080").as_deref() == Some("hello from a")
                && tcp_hello(&b, "192.0.2.1:7000").as_deref() == Some("outside")
                && a_ip().is_some_and(|d| d.len() == 1)
        };
        assert!(works(), "published, masqueraded and DNS traffic through firewalld");

        // A reload forgets runtime zone bindings; the watcher binds the bridge again.
        let (ok, e) = fw.cmd(&["--reload"]);
        assert!(ok, "{e}");
        let took = time_until(std::time::Duration::from_secs(10), works).expect("traffic comes back after firewalld's reload");
        println!("recovery after firewall-cmd --reload: {took:?}");
        assert_eq!(fw.zone_of(BRIDGE).as_deref(), Some("trusted"));

        // The last container gives the bridge back to no zone.
        rt.del(&full, &attachment(&a, "a", ports)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE).as_deref(), Some("trusted"), "b is still there");
        rt.del(&full, &attachment(&b, "b", Value::Null)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE), None, "back where it was");
        assert!(std::fs::read_dir("/run/podnet/firewalld").map_or(true, |mut d| d.next().is_none()));

        // A bridge an administrator put into a zone is given back to it.
        let (ok, e) = fw.cmd(&["--zone=internal", &format!("--add-interface={BRIDGE}")]);
        assert!(ok, "{e}");
        rt.add(&full, &attachment(&a, "a", Value::Null)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE).as_deref(), Some("trusted"));
        rt.del(&full, &attachment(&a, "a", Value::Null)).unwrap();
        assert_eq!(fw.zone_of(BRIDGE).as_deref(), Some("internal"));
    }
}
