//! `make bench-cri`: what the kubelet waits for, on podnet's plugins and on the
//! reference's, side by side in one run: a containerd of its own per plugin directory
//! (the same config and conflist: bridge + host-local, portmap, bandwidth), and per round
//! `RunPodSandbox` (one hostPort), `StopPodSandbox` and `RemovePodSandbox` through the
//! CRI API, alternating the two. The first pod on a fresh node (bridge and firewall
//! tables created) is timed apart from the steady state.
//!
//! Usage: bench_cri PODNET_DIR REFERENCE_DIR [ROUNDS]; `make bench-cri` runs it inside a
//! private network and mount namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use podnet_tests::cri::{Containerd, Port};
use serde_json::json;

fn conflist(side: usize) -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": format!("benchcri{side}"), "plugins": [
        {"type": "bridge", "bridge": format!("cri{side}"), "isGateway": true, "ipMasq": true, "hairpinMode": true,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.{}.0.0/16", 86 + side)}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true},
        {"type": "bandwidth", "capabilities": {"bandwidth": true}}]})
}

fn round(cd: &mut Containerd, side: usize, i: usize) -> (Duration, Duration) {
    let name = format!("p{side}-{i}");
    let port = Port {
        host: 20000 + (side * 1000 + i % 1000) as u16,
        container: 80,
        host_ip: String::new(),
    };
    let cfg = cd.pod_config(&name, &[port], &[]);
    let start = Instant::now();
    let id = cd
        .run_pod(&cfg)
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}"));
    let run = start.elapsed();
    let start = Instant::now();
    cd.remove_pod(&id).expect("Stop + RemovePodSandbox");
    (run, start.elapsed())
}

const FRESH_NODES: usize = 5;

/// Removes what the first pod of `side` created on the node and the last pod left.
fn fresh_node(side: usize) {
    let run = |args: &[&str]| {
        let _ = std::process::Command::new(args[0])
            .args(&args[1..])
            .status();
    };
    run(&["ip", "link", "del", &format!("cri{side}")]);
    run(&["iptables", "-t", "nat", "-F"]);
    run(&["iptables", "-t", "nat", "-X"]);
    run(&["nft", "delete", "table", "inet", "podnet"]);
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_cri PODNET_DIR REFERENCE_DIR [ROUNDS]";
    let dirs = [
        PathBuf::from(args.get(1).expect(usage)),
        PathBuf::from(args.get(2).expect(usage)),
    ];
    let rounds: usize = args.get(3).map(|s| s.parse().expect(usage)).unwrap_or(30);
    // containerd's streaming server listens on 127.0.0.1.
    let lo = std::process::Command::new("ip")
        .args(["link", "set", "lo", "up"])
        .status();
    assert!(lo.is_ok_and(|s| s.success()), "ip link set lo up");
    // The first pod on a fresh node, five times per side: a new containerd each time, and
    // afterwards nothing of the network left (the bridge deleted, the nat table emptied
    // of what the reference's portmap leaves), so every first pod creates it all again.
    let mut first = [Vec::new(), Vec::new()];
    for k in 0..FRESH_NODES {
        for (side, d) in dirs.iter().enumerate() {
            let dir = format!("/run/bench-cri-fresh{side}-{k}");
            let mut cd = Containerd::start(Path::new(&dir), d, &conflist(side));
            first[side].push(round(&mut cd, side, 0).0);
            drop(cd);
            fresh_node(side);
        }
    }
    let mut cds: Vec<Containerd> = dirs
        .iter()
        .enumerate()
        .map(|(side, d)| {
            Containerd::start(
                Path::new(&format!("/run/bench-cri{side}")),
                d,
                &conflist(side),
            )
        })
        .collect();
    for (side, cd) in cds.iter_mut().enumerate() {
        round(cd, side, 0);
    }
    let mut samples = [
        [Vec::new(), Vec::new(), Vec::new()],
        [Vec::new(), Vec::new(), Vec::new()],
    ];
    for i in 1..=rounds {
        for (side, cd) in cds.iter_mut().enumerate() {
            let (run, rm) = round(cd, side, i);
            samples[side][0].push(run);
            samples[side][1].push(rm);
            samples[side][2].push(run + rm);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    println!(
        "{rounds} rounds per side, alternating; containerd {}; times in ms (medians).\n",
        cds[0]
            .ctr(&["version"])
            .1
            .lines()
            .find_map(|l| l.trim().strip_prefix("Version:"))
            .unwrap_or("")
            .trim()
    );
    println!("| operation | podnet | reference | podnet / reference |");
    println!("|---|---|---|---|");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    let (a, b) = (median(first[0].clone()), median(first[1].clone()));
    println!(
        "| first pod on a fresh node: RunPodSandbox (median of {FRESH_NODES}) | {} | {} | {:.2}× |",
        ms(a),
        ms(b),
        ratio(a, b)
    );
    for (k, what) in [
        "RunPodSandbox",
        "StopPodSandbox + RemovePodSandbox",
        "all three",
    ]
    .iter()
    .enumerate()
    {
        let (a, b) = (median(samples[0][k].clone()), median(samples[1][k].clone()));
        println!("| {what} | {} | {} | {:.2}× |", ms(a), ms(b), ratio(a, b));
    }
}
