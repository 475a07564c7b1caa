//! The dhcp IPAM plugin and its daemon against a real DHCP server: dnsmasq in a "LAN"
//! namespace on the far end of a veth pair whose near end is the macvlan parent.
//! Leases acquired (the daemon started on demand), renewed before expiry (T1 of 2 s),
//! released on DEL (dnsmasq's lease file shows it gone) and by GC; no server is a
//! clear error within the timeout, with nothing left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netkit::NetNs;
use podnet_tests::net::{ping, sh, wire, Dnsmasq};
use podnet_tests::{link_state, privileged_test, random_name, Call, Sandbox, Subject};
use serde_json::{json, Value};

/// The client id the daemon sends for an attachment, as dnsmasq prints it.
fn client_id_hex(id: &str, ifname: &str) -> String {
    std::iter::once(0u8)
        .chain(format!("{id}/dhcpnet/{ifname}").bytes())
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A parent `dhp…` on the host whose peer `eth0` (10.98.0.1/24) is in `lan`.
fn parent(sb: &mut Sandbox) -> (String, NetNs) {
    let lan = sb.container("lan");
    let name = random_name("dhp");
    wire(&lan, &name, "10.98.0.254/24", "10.98.0.1/24");
    (name, lan)
}

fn conf(s: &Subject, master: &str, ipam: Value) -> Value {
    json!({"cniVersion": s.newest("macvlan").as_str(), "name": "dhcpnet", "type": "macvlan", "master": master, "ipam": ipam})
}

fn call(s: &Subject, cmd: &str, ns: &Path, id: &str, c: &Value) -> Call {
    Call::new(&s.plugin("macvlan"), cmd, ns, "eth0", c).set("CNI_CONTAINERID", id)
}

privileged_test! {
    fn leases_from_dnsmasq_renewed_and_released() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let server = Dnsmasq::start(&lan, "10.98.0.50,10.98.0.99");
        let c = conf(&s, &master, json!({"type": "dhcp"}));
        let (a, b) = (sb.container("da"), sb.container("db"));
        // The first ADD starts the daemon; both get an address from dnsmasq's range.
        let ra = call(&s, "ADD", a.path(), "da", &c).run().ok();
        let rb = call(&s, "ADD", b.path(), "db", &c).run().ok();
        let addr = |r: &Value| r["ips"][0]["address"].as_str().unwrap().to_string();
        for r in [&ra, &rb] {
            assert!(addr(r).starts_with("10.98.0.") && addr(r).ends_with("/24"), "{r}");
            assert_eq!(r["ips"][0]["gateway"], "10.98.0.1", "{r}");
            assert!(r["routes"].as_array().unwrap().iter().any(|x| x["dst"] == "0.0.0.0/0" && x["gw"] == "10.98.0.1"), "{r}");
        }
        assert_ne!(addr(&ra), addr(&rb));
        assert!(link_state(&a, "eth0").1.contains(&addr(&ra)), "the macvlan carries the lease");
        let ip_b = addr(&rb).split('/').next().unwrap().to_string();
        assert!(ping(&a, &ip_b) && ping(&a, "10.98.0.1"), "a reaches b and the LAN");
        // dnsmasq holds both, under the reference's client ids.
        let held = server.leases();
        assert_eq!(held.len(), 2, "{held:?}");
        assert!(held.iter().any(|(_, ip, id)| format!("{ip}/24") == addr(&ra) && *id == client_id_hex("da", "eth0")), "{held:?}");
        // Renewed before expiry: T1 is 2 s, so within a few seconds the expiry moves on.
        let first = held.iter().map(|l| l.0).max().unwrap();
        let t = Instant::now();
        while server.leases().iter().map(|l| l.0).min().unwrap_or(0) <= first && t.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(server.leases().iter().all(|l| l.0 > first), "both renewed: {:?} after {first}", server.leases());
        // CHECK: the lease is held (and the macvlan carries it).
        let mut with_prev = c.clone();
        with_prev["prevResult"] = ra.clone();
        call(&s, "CHECK", a.path(), "da", &with_prev).run().ok();
        // A second ADD of one attachment returns the lease held.
        let again = Call::new(&s.plugin("dhcp"), "ADD", a.path(), "eth0", &c).set("CNI_CONTAINERID", "da").run().ok();
        assert_eq!(addr(&again), addr(&ra));
        // DEL releases: dnsmasq forgets the lease; again, nothing to undo.
        call(&s, "DEL", a.path(), "da", &c).run().ok();
        let gone = |ip: &str| server.leases().iter().all(|(_, l, _)| format!("{l}/24") != ip);
        let t = Instant::now();
        while !gone(&addr(&ra)) && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(&addr(&ra)), "released: {:?}", server.leases());
        call(&s, "DEL", a.path(), "da", &c).run().ok();
        let (code, _, _) = call(&s, "CHECK", a.path(), "da", &with_prev).run().err();
        assert!(code == 120 || code == 3, "CHECK after DEL fails: {code}");
        // GC with b no longer valid releases b's lease.
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        gc["cniVersion"] = json!("1.1.0");
        Call::bare(&s.plugin("dhcp"), "GC", &gc).run().ok();
        let t = Instant::now();
        while !gone(&addr(&rb)) && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone(&addr(&rb)), "GC released: {:?}", server.leases());
        call(&s, "DEL", b.path(), "db", &c).run().ok();
        // DEL after the namespace is gone.
        let path = b.path().to_path_buf();
        drop(b);
        sb.remove(&path);
        call(&s, "DEL", &path, "db", &c).run().ok();
        assert!(sh(None, "test -S /run/cni/dhcp.sock").0, "the daemon serves on the reference's socket");
    }
}

privileged_test! {
    fn no_server_is_a_clear_error_and_bad_keys_name_themselves() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        // A daemon of the test's own, with a 2 s timeout, on a socket the config names.
        let sock = format!("/run/{}.sock", random_name("dhcpd"));
        let mut daemon = Command::new(s.plugin("dhcp"))
            .args(["daemon", "-socketpath", &sock, "-timeout", "2s"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !Path::new(&sock).exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let c = conf(&s, &master, json!({"type": "dhcp", "daemonSocketPath": sock}));
        let ns = sb.container("dn");
        let t = Instant::now();
        let (code, msg, _) = call(&s, "ADD", ns.path(), "dn", &c).run().err();
        let took = t.elapsed();
        assert_eq!(code, 11, "{msg}");
        assert!(msg.contains("no DHCP server answered within 2s") && msg.contains("eth0"), "{msg}");
        assert!(took < Duration::from_secs(4), "{took:?}");
        assert!(!sh(Some(&ns), "ip link show eth0").0, "no macvlan left");
        call(&s, "DEL", ns.path(), "dn", &c).run().ok();
        // Keys at fault are named, before any daemon is asked.
        for (ipam, key) in [
            (json!({"type": "dhcp", "provide": [{"option": "nope", "value": "x"}]}), "ipam.provide[0].option"),
            (json!({"type": "dhcp", "daemonSocketPath": "rel/d.sock"}), "ipam.daemonSocketPath"),
        ] {
            let c = conf(&s, &master, ipam);
            let (code, msg, _) = Call::new(&s.plugin("dhcp"), "ADD", ns.path(), "eth0", &c).set("CNI_CONTAINERID", "dn").run().err();
            assert!(code == 7 && msg.contains(key), "{code} {msg}");
            // DEL of a config whose ADD could never succeed succeeds.
            Call::new(&s.plugin("dhcp"), "DEL", ns.path(), "eth0", &c).set("CNI_CONTAINERID", "dn").run().ok();
        }
        let _ = daemon.kill();
        let _ = daemon.wait();
    }
}
