//! `netctl`: namespaces, direct links with real pings, every target form and failure,
//! and the cnitool verbs against the runtime side of `cni`.

use std::path::Path;
use std::process::{Child, Command};

use netkit::NetNs;
use podnet_tests::net::{ping, sh};
use podnet_tests::subject::workspace_bin;
use podnet_tests::{link_state, privileged_test, Sandbox};
use serde_json::{json, Value};

fn netctl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(workspace_bin("netctl"))
        .args(args)
        .output()
        .expect("netctl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str]) -> String {
    let (good, out, err) = netctl(args);
    assert!(good, "netctl {args:?}: {out}{err}");
    out
}

fn fails(args: &[&str]) -> String {
    let (good, out, err) = netctl(args);
    assert!(!good, "netctl {args:?} should fail: {out}");
    err
}

fn links_in(ns: &NetNs) -> Vec<String> {
    netkit::block_on(async {
        let nl = netkit::Netlink::open_in(ns)?;
        Ok::<_, netkit::Error>(nl.link_list().await?.into_iter().map(|l| l.name).collect())
    })
    .unwrap()
}

/// A process sleeping inside `ns` (for `pid:` targets).
/// A process inside `ns`, returned once it is there (nsenter joins the namespace after
/// it started, so its pid is in the caller's namespace for a moment).
fn sleeper(ns: &NetNs) -> Child {
    let child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let want = std::fs::metadata(ns.path())
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        .unwrap();
    let joined = || {
        std::fs::metadata(format!("/proc/{}/ns/net", child.id()))
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == want)
    };
    let t = std::time::Instant::now();
    while !joined() && t.elapsed() < std::time::Duration::from_secs(5) {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(joined(), "the sleeper joined {}", ns.path().display());
    child
}

privileged_test! {
    fn link_pings_is_idempotent_and_unlinks() {
        let _sb = Sandbox::new();
        ok(&["ns", "add", "nca"]);
        ok(&["ns", "add", "ncb"]);
        assert_eq!(ok(&["ns", "ls", "--json"]).parse::<Value>().unwrap(), json!(["nca", "ncb"]));
        let (a, b) = (NetNs::open("/run/netns/nca").unwrap(), NetNs::open("/run/netns/ncb").unwrap());
        let first: Value = ok(&["link", "nca", "ncb", "--json"]).parse().unwrap();
        let (ip_a, ip_b) = (first["a"]["addr"].as_str().unwrap().to_owned(), first["b"]["addr"].as_str().unwrap().to_owned());
        assert_eq!((ip_a.as_str(), ip_b.as_str()), ("169.254.100.1", "169.254.100.2"));
        let ifa = first["a"]["ifname"].as_str().unwrap().to_owned();
        let (la, addrs) = link_state(&a, &ifa);
        assert!(la.up && addrs.contains(&"169.254.100.1/32".to_string()), "{addrs:?}");
        assert!(sh(Some(&a), "ip route").1.contains(&format!("169.254.100.2 dev {ifa} scope link")));
        assert!(ping(&a, &ip_b) && ping(&b, &ip_a), "the two namespaces reach each other over the link");
        // Again: nothing changes.
        let again = ok(&["link", "nca", "ncb"]);
        assert!(again.contains("already linked"), "{again}");
        assert_eq!(links_in(&a).len(), 2, "lo and one link end");
        let listed: Value = ok(&["links", "--json"]).parse().unwrap();
        assert_eq!(listed.as_array().unwrap().len(), 1);
        assert_eq!(listed[0]["state"], "up");
        // Asking for other settings on a live link is refused.
        let e = fails(&["link", "nca", "ncb", "--ip", "10.9.9.1", "--peer-ip", "10.9.9.2"]);
        assert!(e.contains("already linked"), "{e}");
        // show: the link, its address and route, as JSON.
        let shown: Value = ok(&["ns", "show", "nca", "--json"]).parse().unwrap();
        assert!(shown["links"].as_array().unwrap().iter().any(|l| l["name"] == ifa.as_str() && l["addresses"][0] == "169.254.100.1/32"), "{shown}");
        assert!(shown["routes"].as_array().unwrap().iter().any(|r| r["dst"] == "169.254.100.2/32"), "{shown}");
        assert!(shown["neighbours"].as_array().unwrap().iter().any(|n| n["address"] == "169.254.100.2"), "ping left a neighbour: {shown}");
        assert!(ok(&["ns", "show", "nca"]).contains("NEIGHBOURS"));
        ok(&["unlink", "ncb", "nca"]);
        assert_eq!(links_in(&a), ["lo"]);
        assert_eq!(links_in(&b), ["lo"]);
        assert!(!ping(&a, &ip_b));
        assert_eq!(ok(&["links", "--json"]).trim(), "[]");
        ok(&["ns", "rm", "nca"]);
        ok(&["ns", "rm", "ncb"]);
        assert!(!Path::new("/run/netns/nca").exists());
    }
}

privileged_test! {
    fn every_target_form_and_every_failure() {
        let mut sb = Sandbox::new();
        let (a, b) = (sb.container("ta"), sb.container("tb"));
        let mut sleep_b = sleeper(&b);
        let pid_b = format!("pid:{}", sleep_b.id());
        let path_a = a.path().display().to_string();
        let name_a = a.path().file_name().unwrap().to_string_lossy().into_owned();
        // Names, pids and paths resolve to the same namespaces.
        assert_eq!(ok(&["ns", "identify", &pid_b]).trim(), b.path().file_name().unwrap().to_string_lossy());
        assert_eq!(ok(&["ns", "identify", &path_a]).trim(), name_a);
        // Failures name what was tried and leave nothing.
        let e = fails(&["link", "pid:99999999", &path_a]);
        assert!(e.contains("/proc/99999999/ns/net"), "{e}");
        let e = fails(&["link", "nosuchns", &path_a]);
        assert!(e.contains("/run/netns/nosuchns"), "{e}");
        let e = fails(&["link", "/nonexistent/ns", &path_a]);
        assert!(e.contains("/nonexistent/ns"), "{e}");
        let e = fails(&["link", &path_a, &name_a]);
        assert!(e.contains("same network namespace"), "{e}");
        // A taken interface name: refused, nothing left on either side.
        assert!(sh(Some(&b), "ip link add taken type veth peer name taken2").0);
        let e = fails(&["link", &path_a, &pid_b, "--peer-name", "taken"]);
        assert!(e.contains("interface name taken is already taken"), "{e}");
        assert_eq!(links_in(&a), ["lo"]);
        // A taken address: refused; the default pair skips it.
        assert!(sh(Some(&a), "ip addr add 169.254.100.1/32 dev lo").0);
        let e = fails(&["link", &path_a, &pid_b, "--ip", "169.254.100.1", "--peer-ip", "169.254.100.2"]);
        assert!(e.contains("address 169.254.100.1 is already taken"), "{e}");
        assert_eq!(links_in(&a), ["lo"]);
        assert_eq!(ok(&["links", "--json"]).trim(), "[]");
        let made: Value = ok(&["link", &path_a, &pid_b, "--json", "--mtu", "1400"]).parse().unwrap();
        assert_eq!(made["a"]["addr"], "169.254.100.3");
        let (l, _) = link_state(&b, made["b"]["ifname"].as_str().unwrap());
        assert_eq!(l.mtu, 1400);
        assert!(ping(&a, "169.254.100.4"));
        // IPv6 from a range of its own.
        let c = sb.container("tc");
        let v6: Value = ok(&["link", &path_a, &c.path().display().to_string(), "--range", "fd00:77::/120", "--json"]).parse().unwrap();
        assert_eq!(v6["a"]["addr"], "fd00:77::1");
        // A namespace that dies leaves a stale link, which unlink cleans.
        sleep_b.kill().unwrap();
        sleep_b.wait().unwrap();
        sb.remove(b.path());
        drop(b);
        let listed = ok(&["links"]);
        assert!(listed.contains("stale"), "{listed}");
        ok(&["unlink", &path_a, &pid_b]);
        assert_eq!(links_in(&a).len(), 2, "lo and the IPv6 link remain");
    }
}

privileged_test! {
    fn exec_with_etc_overlays() {
        let _sb = Sandbox::new();
        ok(&["ns", "add", "ex"]);
        // /etc/netns lives on a tmpfs of this test's private mount namespace.
        assert!(sh(None, "mkdir -p /etc/netns && mount -t tmpfs tmpfs /etc/netns && mkdir /etc/netns/ex && echo 'nameserver 192.0.2.53' > /etc/netns/ex/resolv.conf").0);
        let out = ok(&["ns", "exec", "ex", "--", "sh", "-c", "cat /etc/resolv.conf; ls /sys/class/net"]);
        assert!(out.contains("nameserver 192.0.2.53"), "{out}");
        assert_eq!(out.lines().filter(|l| *l == "lo").count(), 1, "sysfs of the namespace: {out}");
        let e = fails(&["ns", "exec", "nope", "--", "true"]);
        assert!(e.contains("/run/netns/nope"), "{e}");
        let e = fails(&["ns", "add", "ex"]);
        assert!(e.contains("already exists"), "{e}");
    }
}

privileged_test! {
    fn cnitool_verbs_on_a_bridge_network() {
        let _sb = Sandbox::new();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("10-br.conflist"), json!({"cniVersion": "1.0.0", "name": "brn", "plugins": [
            {"type": "bridge", "bridge": "nbr0", "isGateway": true,
             "ipam": {"type": "host-local", "subnet": "10.77.0.0/24"}},
            {"type": "portmap", "capabilities": {"portMappings": true}}]}).to_string()).unwrap();
        std::fs::write(dir.path().join("20-lo.conf"), json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}).to_string()).unwrap();
        ok(&["ns", "add", "cn"]);
        let bin = workspace_bin("bridge").parent().unwrap().display().to_string();
        let conf = dir.path().display().to_string();
        let env = ["--netconfpath", conf.as_str(), "--cni-path", bin.as_str()];
        let with = |verb: &str, net: &str, extra: &[&str]| {
            let mut v = vec![verb, net];
            if verb != "gc" && verb != "status" {
                v.push("cn");
            }
            v.extend(env);
            v.extend(extra);
            v.into_iter().map(str::to_owned).collect::<Vec<_>>()
        };
        let run = |v: Vec<String>| ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let r: Value = run(with("add", "brn", &["--cap-args", r#"{"portMappings":[{"hostPort":8081,"containerPort":80}]}"#])).parse().unwrap();
        assert_eq!(r["ips"][0]["address"], "10.77.0.2/24", "{r}");
        let ns = NetNs::open("/run/netns/cn").unwrap();
        assert!(link_state(&ns, "eth0").1.contains(&"10.77.0.2/24".to_string()));
        assert!(sh(None, "nft list map inet podnet pm4any").1.contains("tcp . 8081"));
        run(with("check", "brn", &[]));
        run(with("status", "brn", &[]));
        run(with("gc", "brn", &[]));
        assert!(link_state(&ns, "eth0").0.up, "GC keeps an attachment whose namespace lives");
        run(with("del", "brn", &[]));
        assert!(!links_in(&ns).contains(&"eth0".to_string()));
        assert!(!sh(None, "nft list tables").1.contains("podnet"));
        // A single-plugin .conf is a list of one.
        let lo: Value = run(with("add", "lo", &["--ifname", "lo"])).parse().unwrap();
        assert_eq!(lo["ips"][0]["address"], "127.0.0.1/8");
        let e = fails(&with("add", "nonet", &[]).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(e.contains("no network \"nonet\""), "{e}");
        // Completions and man pages come from the same definitions.
        assert!(ok(&["completions", "bash"]).contains("netctl"));
        let man = tempfile::tempdir().unwrap();
        ok(&["man", &man.path().display().to_string()]);
        assert!(man.path().join("netctl.1").is_file() && man.path().join("netctl-link.1").is_file());
    }
}
