//! The dhcp IPAM plugin and its daemon against a real DHCP server: dnsmasq in a "LAN"
//! namespace on the far end of a veth pair whose near end is the macvlan parent.
//! Leases acquired (podnet's daemon started on demand, the reference's by the test),
//! renewed before expiry (T1 of 2 s), released on DEL (dnsmasq's lease file shows it
//! gone) and by GC; no server is a clear error within the timeout, with nothing left.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use netkit::NetNs;
use podnet_tests::net::{ping, sh, wire, Dnsmasq};
use podnet_tests::subject::Family;
use podnet_tests::{link_state, privileged_test, random_name, Call, Deviation, Sandbox, Subject};
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

/// The reference's daemon, which nothing starts on demand, on `socket` (killed on drop).
struct Daemon(Option<std::process::Child>);

impl Daemon {
    fn start(s: &Subject, socket: &str, args: &[&str]) -> Daemon {
        let child = Command::new(s.plugin("dhcp"))
            .args(["daemon", "-socketpath", socket])
            .args(args)
            .stderr(Stdio::null())
            .spawn()
            .expect("dhcp daemon starts");
        let t = Instant::now();
        while !Path::new(socket).exists() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        Daemon(Some(child))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
        // podnet's plugin starts its daemon on the first ADD; the reference needs one.
        let _daemon = (s.family == Family::Reference).then(|| Daemon::start(&s, "/run/cni/dhcp.sock", &[]));
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
        // The IPAM's DEL alone releases: dnsmasq forgets the lease (the macvlan stays).
        let dhcp = |cmd: &str, conf: &Value| Call::new(&s.plugin("dhcp"), cmd, a.path(), "eth0", conf).set("CNI_CONTAINERID", "da");
        dhcp("DEL", &c).run().ok();
        let gone = |ip: &str| server.leases().iter().all(|(_, l, _)| format!("{l}/24") != ip);
        let wait_gone = |ip: &str| {
            let t = Instant::now();
            while !gone(ip) && t.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
            }
            gone(ip)
        };
        assert!(wait_gone(&addr(&ra)), "released: {:?}", server.leases());
        // CHECK with no lease held.
        let check = dhcp("CHECK", &with_prev).run();
        if s.deviates(Deviation::DhcpCheckAcquires) {
            assert_eq!(check.status, 0, "the reference's CHECK no longer acquires: {}", check.stdout);
            assert!(!gone(&addr(&ra)), "the reference's CHECK took a lease again");
            dhcp("DEL", &c).run().ok();
            assert!(wait_gone(&addr(&ra)));
        } else {
            assert_eq!(check.err().0, 120, "CHECK: no lease is held");
        }
        // The plugin's DEL, again: nothing left to undo.
        call(&s, "DEL", a.path(), "da", &c).run().ok();
        call(&s, "DEL", a.path(), "da", &c).run().ok();
        assert!(!sh(Some(&a), "ip link show eth0").0, "the macvlan is gone");
        // GC with b no longer valid releases b's lease (the reference has no GC: DEL).
        let mut gc = c.clone();
        gc["cni.dev/valid-attachments"] = json!([]);
        gc["cniVersion"] = json!("1.1.0");
        let gc_run = Call::bare(&s.plugin("dhcp"), "GC", &gc).run();
        if s.deviates(Deviation::DhcpWithoutGc) {
            assert_ne!(gc_run.status, 0, "the reference now has GC");
            call(&s, "DEL", b.path(), "db", &c).run().ok();
        } else {
            assert_eq!(gc_run.status, 0, "{}", gc_run.stdout);
        }
        assert!(wait_gone(&addr(&rb)), "GC released: {:?}", server.leases());
        call(&s, "DEL", b.path(), "db", &c).run().ok();
        // DEL after the namespace is gone.
        let path = b.path().to_path_buf();
        drop(b);
        sb.remove(&path);
        call(&s, "DEL", &path, "db", &c).run().ok();
        assert!(sh(None, "test -S /run/cni/dhcp.sock").0, "the daemon serves on the reference's socket");
        drop(server);
    }
}

privileged_test! {
    fn no_server_is_a_clear_error_and_bad_keys_name_themselves() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (master, _lan) = parent(&mut sb);
        // A daemon of the test's own, with a 2 s timeout, on a socket the config names.
        let sock = format!("/run/{}.sock", random_name("dhcpd"));
        let _daemon = Daemon::start(&s, &sock, &["-timeout", "2s"]);
        let c = conf(&s, &master, json!({"type": "dhcp", "daemonSocketPath": sock}));
        let ns = sb.container("dn");
        if s.deviates(Deviation::DhcpRetriesLong) {
            // The reference keeps resending (for up to 208 s by default) whatever
            // `-timeout` says: still no answer after 5 s.
            let mut add = Command::new(s.plugin("macvlan"))
                .envs([("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "dn"), ("CNI_IFNAME", "eth0"), ("CNI_PATH", "/usr/lib/cni")])
                .env("CNI_NETNS", ns.path())
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
                .unwrap();
            use std::io::Write;
            add.stdin.take().unwrap().write_all(c.to_string().as_bytes()).unwrap();
            std::thread::sleep(Duration::from_secs(5));
            assert!(add.try_wait().unwrap().is_none(), "the reference now gives up within its timeout");
            let _ = add.kill();
            let _ = add.wait();
            return;
        }
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
    }
}

privileged_test! {
    fn podnet_a_daemon_started_again_keeps_and_releases_the_leases() {
        let s = Subject::from_env();
        if s.family != Family::Podnet {
            return; // the reference's leases live and die with its daemon's memory
        }
        let mut sb = Sandbox::new();
        let (master, lan) = parent(&mut sb);
        let server = Dnsmasq::start(&lan, "10.98.0.50,10.98.0.99");
        let c = conf(&s, &master, json!({"type": "dhcp"}));
        let a = sb.container("dk");
        let first = call(&s, "ADD", a.path(), "dk", &c).run().ok();
        let kill = || {
            let pid: i32 = std::fs::read_to_string("/run/cni/dhcp.sock.pid").unwrap().trim().parse().unwrap();
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
            let t = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        kill();
        // The next ADD of the attachment starts a daemon that takes the lease up: the
        // same address, and it is renewed again (T1 of 2 s).
        let before = server.leases()[0].0;
        let again = Call::new(&s.plugin("dhcp"), "ADD", a.path(), "eth0", &c).set("CNI_CONTAINERID", "dk").run().ok();
        assert_eq!(again["ips"][0]["address"], first["ips"][0]["address"], "{again}");
        let t = Instant::now();
        while server.leases().first().map(|l| l.0).unwrap_or(0) <= before && t.elapsed() < Duration::from_secs(8) {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(server.leases()[0].0 > before, "renewed by the new daemon: {:?}", server.leases());
        let log = std::fs::read_to_string("/run/cni/dhcp.sock.log").unwrap_or_default();
        assert!(log.contains("a previous daemon's"), "{log}");
        // Killed again: DEL starts a daemon for the lease the state file names and
        // releases it.
        kill();
        call(&s, "DEL", a.path(), "dk", &c).run().ok();
        assert!(server.leases().is_empty(), "released after a restart: {:?}", server.leases());
        assert!(!sh(Some(&a), "ip link show eth0").0);
    }
}
