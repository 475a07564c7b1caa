//! `make demo`: the suite end to end as far as it goes today. A throwaway container
//! namespace is created, podnet's `loopback` plugin runs through the runtime side of
//! `cni` (conflist, result cache) for ADD, CHECK, DEL and GC, and the kernel state is
//! read back after each step. `make demo` runs this inside a private network and mount
//! namespace, so nothing on the machine changes.
//!
//! Usage: demo PLUGIN_DIR

use std::path::PathBuf;

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{Attachment, CniArgs, CniVersion, NetConfList};
use netkit::NetNs;

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn lo_state(ns: &NetNs) -> String {
    let (lo, addrs) = podnet_tests::link_state(ns, "lo");
    format!(
        "lo is {} with [{}]",
        if lo.up { "UP" } else { "DOWN" },
        addrs.join(", ")
    )
}

fn main() {
    if let Err(e) = run() {
        eprintln!("demo failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let plugins = PathBuf::from(std::env::args().nth(1).ok_or("usage: demo PLUGIN_DIR")?);
    let runtime = CniRuntime::new(vec![plugins.clone()], "/var/lib/cni");

    step(
        1,
        "create a throwaway container namespace, pinned like `ip netns add`",
    );
    let ns = NetNs::create_named("podnet-demo")?;
    println!("pinned at {}; {}", ns.path().display(), lo_state(&ns));

    step(
        2,
        "the network: a conflist with the loopback plugin (\"none\" mode)",
    );
    let conflist = serde_json::json!({
        "cniVersion": CniVersion::LATEST.as_str(),
        "name": "none",
        "plugins": [{"type": "loopback"}]
    });
    println!("{}", serde_json::to_string_pretty(&conflist)?);
    let list = NetConfList::from_bytes(conflist.to_string().as_bytes())?;

    let conf = RuntimeConf {
        container_id: "demo-ctr".into(),
        netns: Some(ns.path().to_path_buf()),
        ifname: "lo".into(),
        args: CniArgs::default(),
        capability_args: Default::default(),
    };
    step(
        3,
        "ADD through the runtime side of `cni` (plugins from the build)",
    );
    let result = runtime.add(&list, &conf)?;
    println!(
        "result ({}):\n{}",
        CniVersion::LATEST,
        serde_json::to_string_pretty(&result.encode(CniVersion::LATEST)?)?
    );
    println!(
        "the same result as a 0.2.0 runtime sees it:\n{}",
        result.to_json(CniVersion::V0_2_0)?
    );
    println!("kernel: {}", lo_state(&ns));
    println!(
        "cached at {}",
        runtime.cache.path("none", "demo-ctr", "lo").display()
    );

    step(4, "CHECK against the cached result");
    runtime.check(&list, &conf)?;
    println!("CHECK passed");

    step(5, "DEL (twice: DEL is idempotent)");
    runtime.del(&list, &conf)?;
    runtime.del(&list, &conf)?;
    println!("kernel: {}", lo_state(&ns));

    step(
        6,
        "GC with no valid attachments after an ADD the runtime never deleted",
    );
    runtime.add(&list, &conf)?;
    runtime.gc(&list, &[] as &[Attachment])?;
    println!(
        "cache entries left for network \"none\": {}",
        runtime.cache.list("none")?.len()
    );

    step(7, "remove the namespace");
    drop(ns);
    NetNs::delete_named("podnet-demo")?;

    bridge_network(&runtime)?;

    let left = std::fs::read_dir(netkit::NETNS_RUN_DIR)?.count();
    println!("namespaces left under {}: {left}", netkit::NETNS_RUN_DIR);
    println!("\ndemo finished: nothing left behind");
    Ok(())
}

fn sh(ns: Option<&NetNs>, cmd: &str) -> String {
    let mut c = match ns {
        Some(ns) => {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net={}", ns.path().display())).arg("sh");
            c
        }
        None => std::process::Command::new("sh"),
    };
    let out = c.arg("-c").arg(cmd).output().expect("sh runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The user's first need: a fixed address on a bridge network, no etcd.
fn bridge_network(runtime: &CniRuntime) -> Result<(), Box<dyn std::error::Error>> {
    step(
        8,
        "a Podman-style network: bridge + host-local, portmap, firewall, tuning",
    );
    let conflist = serde_json::json!({
        "cniVersion": "1.0.0", "name": "podnet",
        "plugins": [{"type": "bridge", "bridge": "cni-podnet0", "isGateway": true, "ipMasq": true,
                     "capabilities": {"ips": true},
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "portmap", "capabilities": {"portMappings": true}},
                    {"type": "firewall", "backend": "iptables"},
                    {"type": "tuning"}]
    });
    println!("{}", serde_json::to_string_pretty(&conflist)?);
    let list = NetConfList::from_bytes(conflist.to_string().as_bytes())?;
    // The throwaway namespace standing in for the host starts with `lo` down.
    netkit::block_on(async {
        netkit::Netlink::open_current()?
            .link_set_up(netkit::LOOPBACK_IFINDEX)
            .await
    })?;
    let hugo_ns = NetNs::create_named("hugo")?;
    let web_ns = NetNs::create_named("web")?;
    let attach = |id: &str, ns: &NetNs, caps: serde_json::Value| RuntimeConf {
        container_id: id.into(),
        netns: Some(ns.path().to_path_buf()),
        ifname: "eth0".into(),
        args: CniArgs::default(),
        capability_args: caps.as_object().cloned().unwrap_or_default(),
    };
    let hugo = attach(
        "hugo",
        &hugo_ns,
        serde_json::json!({"ips": ["10.88.0.10/16"],
            "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
    );
    // hugo's "web server": a socket in its namespace answering every connection.
    podnet_tests::net::serve_tcp(&hugo_ns, "0.0.0.0:80", "hello from hugo\n");
    let web = attach("web", &web_ns, serde_json::json!({}));

    step(
        9,
        "ADD hugo with the fixed address 10.88.0.10 publishing 8080->80, and a second container",
    );
    let r = runtime.add(&list, &hugo)?;
    println!("hugo: {}", r.ips[0].address);
    let r = runtime.add(&list, &web)?;
    println!("web:  {}", r.ips[0].address);
    println!(
        "lease file /var/lib/cni/networks/podnet/10.88.0.10: {:?}",
        std::fs::read_to_string("/var/lib/cni/networks/podnet/10.88.0.10")?
    );
    print!("{}", sh(None, "ip -br addr show cni-podnet0"));

    step(10, "web pings hugo over the bridge");
    print!(
        "{}",
        sh(Some(&web_ns), "ping -c 2 -W 2 10.88.0.10 | tail -2")
    );

    let host = NetNs::current()?;
    for (from, ns, to) in [
        ("the host, via localhost", &host, "127.0.0.1:8080"),
        ("the host, via the bridge address", &host, "10.88.0.1:8080"),
        (
            "web, through the published port (hairpin)",
            &web_ns,
            "10.88.0.1:8080",
        ),
    ] {
        println!(
            "{from} -> {to}: {}",
            podnet_tests::net::tcp_hello(ns, to)
                .as_deref()
                .unwrap_or("no answer\n")
                .trim()
        );
    }
    println!(
        "published ports:\n{}",
        sh(None, "nft list map inet podnet pm4any | grep -A2 elements")
    );

    step(
        11,
        "hugo restarts: DEL, then ADD again, and keeps its address and port",
    );
    runtime.del(&list, &hugo)?;
    let r = runtime.add(&list, &hugo)?;
    println!("hugo: {}", r.ips[0].address);
    println!(
        "the host -> 127.0.0.1:8080: {}",
        podnet_tests::net::tcp_hello(&host, "127.0.0.1:8080")
            .as_deref()
            .unwrap_or("no answer\n")
            .trim()
    );
    println!(
        "masquerade elements:\n{}",
        sh(None, "nft list set inet podnet masq4 | grep -A2 elements")
    );

    step(12, "remove both: no lease, port or rule is left");
    runtime.del(&list, &hugo)?;
    runtime.del(&list, &web)?;
    drop((hugo_ns, web_ns));
    NetNs::delete_named("hugo")?;
    NetNs::delete_named("web")?;
    let leases = std::fs::read_dir("/var/lib/cni/networks/podnet")?
        .filter(|e| {
            e.as_ref().is_ok_and(|e| {
                e.file_name()
                    .to_string_lossy()
                    .parse::<std::net::IpAddr>()
                    .is_ok()
            })
        })
        .count();
    println!("leases left: {leases}");
    println!(
        "ports left on cni-podnet0: {}",
        sh(None, "ip -o link show master cni-podnet0 | wc -l").trim()
    );
    println!(
        "podnet nftables tables left: {}",
        sh(None, "nft list tables | grep -c podnet").trim()
    );
    Ok(())
}
