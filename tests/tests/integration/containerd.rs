//! Kubernetes' path, for real: a containerd of the test's own (Debian's package) drives
//! pods through the CRI API as the kubelet does, on the plugin directory under test
//! (`PODNET_PLUGIN_DIR`; the same tests pass on the reference plugins), with a
//! bridge + host-local + portmap + bandwidth conflist as k3s and Calico chain them.
//! Also `ctr run --cni`.

use std::path::Path;

use netkit::tc::Tbf;
use netkit::Netlink;
use podnet_tests::cri::{Containerd, Port, PAGE};
use podnet_tests::net::{outside, sh};
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, Sandbox, Subject};
use serde_json::{json, Value};

const NETWORK: &str = "k8spod";
const BRIDGE: &str = "cni-k8s0";
const SUBNET_PREFIX: &str = "10.244.7.";
const HOST_IP: &str = "192.0.2.254";
/// A second host address, where a mapping bound to [`HOST_IP`] must not answer.
const OTHER_HOST_IP: &str = "198.51.100.254";

fn conflist() -> Value {
    json!({"cniVersion": "1.0.0", "name": NETWORK, "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.244.7.0/24"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}}]})
}

/// `curl` from the host (`ns` None) or a namespace: the page, if one came within 2 s.
fn curl(ns: Option<&netkit::NetNs>, url: &str) -> Option<String> {
    let (ok, out) = sh(ns, &format!("curl -s --max-time 2 {url}"));
    ok.then_some(out)
}

fn host_veths() -> Vec<netkit::Link> {
    netkit::block_on(async { Netlink::open_current()?.link_list().await })
        .unwrap()
        .into_iter()
        .filter(|l| matches!(l.kind.as_deref(), Some("veth" | "ifb")) && !l.name.starts_with("vo"))
        .collect()
}

/// The names in `dir` starting with `prefix` (none when `dir` does not exist).
fn names_in(dir: impl AsRef<Path>, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect()
}

/// host-local's leases of the network.
fn leases() -> Vec<String> {
    names_in(
        Path::new("/var/lib/cni/networks").join(NETWORK),
        SUBNET_PREFIX,
    )
}

privileged_test! {
    fn pods_with_host_ports_through_cri() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let lan = outside(&mut sb);
        assert!(sh(None, &format!("ip addr add {OTHER_HOST_IP}/32 dev lo")).0);
        let mut cd = Containerd::start(Path::new("/run/podnet-cri"), &s.dir, &conflist());

        let web_cfg = cd.pod_config("web", &[
            Port { host: 18080, container: 8080, host_ip: String::new() },
            Port { host: 18081, container: 8080, host_ip: HOST_IP.into() },
        ], &[("kubernetes.io/ingress-bandwidth", "100M"), ("kubernetes.io/egress-bandwidth", "100M")]);
        let web = cd.run_pod(&web_cfg).unwrap_or_else(|e| panic!("RunPodSandbox web: {e}\n{}", cd.log()));
        let web_ip = cd.pod_ip(&web);
        assert!(web_ip.starts_with(SUBNET_PREFIX), "pod address {web_ip:?} from host-local's range");
        assert!(leases().contains(&web_ip), "host-local's lease for {web_ip}: {:?}", leases());
        let httpd = cd.run_container(&web, &web_cfg, "httpd", &["/bin/httpd", "-f", "-p", "8080", "-h", "/www"]);

        let client_cfg = cd.pod_config("client", &[], &[]);
        let client = cd.run_pod(&client_cfg).unwrap_or_else(|e| panic!("RunPodSandbox client: {e}\n{}", cd.log()));
        let sleeper = cd.run_container(&client, &client_cfg, "sleeper", &["/bin/sleep", "3600"]);

        let page = Some(PAGE.to_owned());
        assert_eq!(cd.fetch_from(&sleeper, &format!("http://{web_ip}:8080/")), page, "pod to pod");
        assert_eq!(curl(None, &format!("http://{HOST_IP}:18080/")), page, "hostPort from the host's address");
        assert_eq!(curl(None, "http://127.0.0.1:18080/"), page, "hostPort from 127.0.0.1");
        assert_eq!(curl(Some(&lan), &format!("http://{HOST_IP}:18080/")), page, "hostPort from the LAN");
        assert_eq!(cd.fetch_from(&sleeper, &format!("http://{HOST_IP}:18080/")), page, "hostPort from another pod");
        assert_eq!(cd.fetch_from(&httpd, &format!("http://{HOST_IP}:18080/")), page, "hairpin");
        assert_eq!(curl(None, &format!("http://{HOST_IP}:18081/")), page, "hostIP-bound mapping on its address");
        assert_eq!(curl(None, &format!("http://{OTHER_HOST_IP}:18081/")), None, "hostIP-bound mapping on another address");
        assert_eq!(curl(None, "http://127.0.0.1:18081/"), None, "hostIP-bound mapping on 127.0.0.1");

        // The bandwidth annotations arrive as runtimeConfig.bandwidth (burst: containerd's
        // maximum), shaping the web pod's veth and its ifb.
        let want = Tbf::from_bits(100_000_000, u64::from(u32::MAX));
        let shaped: Vec<_> = host_veths().into_iter().filter(|l| {
            netkit::block_on(async { Netlink::open_current()?.qdisc_root_tbf(l.index).await }).unwrap() == Some(want)
        }).map(|l| l.kind.unwrap_or_default()).collect();
        assert_eq!(shaped.len(), 2, "the web pod's veth and ifb carry the bucket: {shaped:?}");

        cd.remove_pod(&client).unwrap();
        cd.remove_pod(&web).unwrap();
        assert_eq!(host_veths().iter().map(|l| l.name.clone()).collect::<Vec<_>>(), Vec::<String>::new(), "no veth or ifb left");
        assert_eq!(leases(), Vec::<String>::new(), "no lease left");
        assert_eq!(names_in("/var/lib/cni/results", NETWORK), Vec::<String>::new(), "no cached result left");
        assert_eq!(names_in("/run/netns", "cni-"), Vec::<String>::new(), "no netns left");
        assert_eq!(curl(None, &format!("http://{HOST_IP}:18080/")), None, "the port is closed");
        match s.family {
            Family::Podnet => {
                let left = netkit::nft::list_elements().unwrap();
                assert!(left.is_empty(), "no nftables element left: {left:?}");
                let (_, tables) = sh(None, "nft list tables");
                assert!(!tables.contains("podnet"), "the last DEL drops podnet's tables: {tables}");
            }
            Family::Reference => {
                // A documented deviation: the reference portmap leaves its shared chains
                // and the jumps to them (docs/cni-support.md).
                let (_, rules) = sh(None, "iptables-save -t nat");
                assert!(!rules.contains("18080"), "no DNAT rule left: {rules}");
                assert!(rules.contains("-j CNI-HOSTPORT-DNAT"), "the reference now removes its chains: {rules}");
            }
        }
    }
}

privileged_test! {
    fn ctr_run_with_cni() {
        let s = Subject::from_env();
        let _sb = Sandbox::new();
        let cd = Containerd::start(Path::new("/run/podnet-ctr"), &s.dir, &conflist());
        // Debian's ctr reads /etc/cni/net.d and runs plugins from /usr/lib/cni: both are
        // bind-mounted over inside this test's private mount namespace only.
        let conf = cd.dir.join("net.d");
        assert!(Path::new("/etc/cni/net.d").is_dir(), "/etc/cni/net.d must exist to mount over it");
        assert!(sh(None, &format!("mount --bind {} /etc/cni/net.d", conf.display())).0);
        if s.dir != Path::new("/usr/lib/cni") {
            assert!(sh(None, &format!("mount --bind {} /usr/lib/cni", s.dir.display())).0);
        }
        let (ok, out) = cd.ctr(&["-n", "default", "images", "import", cd.dir.join("image/image.tar").to_str().unwrap()]);
        assert!(ok, "{out}");
        let (ok, out) = cd.ctr(&["-n", "default", "run", "--rm", "--cni", podnet_tests::cri::IMAGE, "cni-run", "/bin/ip", "-4", "addr", "show", "eth0"]);
        assert!(ok, "ctr run --cni: {out}\n{}", cd.log());
        assert!(out.contains(&format!("inet {SUBNET_PREFIX}")), "eth0 has an address of the range: {out}");
        assert_eq!(leases(), Vec::<String>::new(), "--rm released the lease");
        assert_eq!(host_veths().len(), 0, "--rm removed the veth");
        drop(cd.ctr(&["-n", "default", "images", "rm", podnet_tests::cri::IMAGE]));
    }
}
