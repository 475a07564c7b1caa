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
    let left = std::fs::read_dir(netkit::NETNS_RUN_DIR)?.count();
    println!("namespaces left under {}: {left}", netkit::NETNS_RUN_DIR);
    println!("\ndemo finished: nothing left behind");
    Ok(())
}
