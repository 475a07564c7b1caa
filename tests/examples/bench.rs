//! `make bench`: podnet's plugins side by side with the reference plugins, in one run.
//!
//! Each plugin process is spawned directly (no shell), with the protocol's environment
//! and stdin, and timed from spawn to exit. Runs alternate between the two
//! implementations so that drift on the machine hits both alike. Prints a Markdown
//! table of medians and p90s with the podnet/reference ratio.
//!
//! Usage: bench PODNET_DIR REFERENCE_DIR [ITERATIONS [podman]]
//! `make bench` runs it inside a private network and mount namespace.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::NetConfList;
use netkit::NetNs;
use podnet_tests::Call;
use serde_json::json;

struct Stats {
    median: Duration,
    p90: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    Stats {
        median: at(0.5),
        p90: at(0.9),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn timed(call: &Call) -> Duration {
    let start = Instant::now();
    let reply = call.run();
    let took = start.elapsed();
    assert_eq!(
        reply.status,
        0,
        "{}: {}{}",
        call.binary.display(),
        reply.stdout,
        reply.stderr
    );
    took
}

/// The CPU time (user + system) that `f`'s children used, the plugin and the processes
/// it ran (IPAM), once reaped: a measure this machine's steal time and scheduling
/// delays do not move, beside the wall time.
fn cpu_of(f: impl FnOnce() -> Duration) -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let used = || {
        let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
        let t = |tv: nix::sys::time::TimeVal| {
            Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000)
        };
        t(u.user_time()) + t(u.system_time())
    };
    let before = used();
    f();
    used() - before
}

/// One benchmark row: `make` builds the calls for a plugin dir and iteration; `timed`
/// says which of them is measured (the others set up or tear down).
/// The pause between two timed calls: longer than the kernel's clean-up after a link or
/// an nftables element deletion here (10–30 ms).
const SETTLE: Duration = Duration::from_millis(40);

fn row(
    name: &str,
    dirs: [&Path; 2],
    iterations: usize,
    mut run: impl FnMut(&Path, usize) -> Duration,
) -> String {
    let mut samples = [Vec::new(), Vec::new()];
    for i in 0..iterations {
        for (side, dir) in dirs.iter().enumerate() {
            samples[side].push(run(dir, i));
            // Every timed call starts from the same state: the kernel's clean-up of the
            // previous DEL finished (podnet's DEL returns before it, the reference's
            // after it), the CPUs idle for the same time whichever side ran last.
            std::thread::sleep(SETTLE);
        }
    }
    let [ours, theirs] = samples.map(stats);
    let ratio = ours.median.as_secs_f64() / theirs.median.as_secs_f64();
    format!(
        "| {name} | {} | {} | {} | {} | {ratio:.2}× |",
        ms(ours.median),
        ms(ours.p90),
        ms(theirs.median),
        ms(theirs.p90)
    )
}

/// Leases live on the real disk (under /var/tmp, which `make bench` leaves on disk), as
/// /var/lib/cni/networks does in production.
const BENCH_DATA: &str = "/var/tmp/podnet-bench";

/// A host-local config on its own data directory per implementation.
fn host_local_conf(side: usize) -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": "scale", "type": "bridge",
           "ipam": {"type": "host-local", "dataDir": format!("{BENCH_DATA}{side}"),
                    "ranges": [[{"subnet": "10.80.0.0/16"}]]}})
}

/// The host-local rows at 1, 100, 1,000 and 10,000 leases (fewer iterations when the
/// reference's call grows long).
fn host_local_scale_rows(dirs: [&Path; 2], n: usize) -> Vec<String> {
    [1usize, 100, 1_000, 10_000]
        .into_iter()
        .flat_map(|leases| host_local_rows(dirs, leases, n.min(40_000 / leases).max(20)))
        .collect()
}

/// ADD and DEL of one more container on a network that already has `leases` leases,
/// written in the reference layout.
fn host_local_rows(dirs: [&Path; 2], leases: usize, iterations: usize) -> [String; 2] {
    for side in 0..2 {
        let dir = PathBuf::from(format!("{BENCH_DATA}{side}/scale"));
        let _ = std::fs::remove_dir_all(dir.parent().unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..leases {
            let ip = format!("10.80.{}.{}", (i + 2) / 256, (i + 2) % 256);
            std::fs::write(dir.join(ip), format!("fill{i}\r\neth0")).unwrap();
        }
    }
    // The fill's writeback belongs to no timed call.
    nix::unistd::sync();
    let call = |d: &Path, cmd: &str| {
        let side = usize::from(d != dirs[0]);
        Call::new(
            &d.join("host-local"),
            cmd,
            Path::new("/run/netns/unused"),
            "eth0",
            &host_local_conf(side),
        )
    };
    // One untimed round each: podnet indexes the leases written behind its back here.
    for d in dirs {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
    }
    let add = row(
        &format!("host-local ADD, {leases} leases"),
        dirs,
        iterations,
        |d, _| {
            let took = timed(&call(d, "ADD"));
            timed(&call(d, "DEL"));
            took
        },
    );
    let del = row(
        &format!("host-local DEL, {leases} leases"),
        dirs,
        iterations,
        |d, _| {
            timed(&call(d, "ADD"));
            timed(&call(d, "DEL"))
        },
    );
    [add, del]
}

/// A bridge + host-local network per implementation (own bridge, subnet, data dir).
fn bridge_conf(side: usize) -> serde_json::Value {
    json!({"cniVersion": "1.0.0", "name": format!("benchbr{side}"), "type": "bridge", "bridge": format!("bbr{side}"),
           "isGateway": true,
           "ipam": {"type": "host-local", "dataDir": format!("{BENCH_DATA}{side}"),
                    "ranges": [[{"subnet": format!("10.{}.0.0/16", 81 + side)}]], "routes": [{"dst": "0.0.0.0/0"}]}})
}

fn side_of(dirs: [&Path; 2], d: &Path) -> usize {
    usize::from(d != dirs[0])
}

/// bridge + host-local ADD and DEL of one container.
fn bridge_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    let nss: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&format!("bench-br{i}")).expect("bench namespace"))
        .collect();
    let call = |d: &Path, cmd: &str| {
        let side = side_of(dirs, d);
        Call::new(
            &d.join("bridge"),
            cmd,
            nss[side].path(),
            "eth0",
            &bridge_conf(side),
        )
    };
    for d in dirs {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
    }
    let add = row("bridge+host-local ADD", dirs, iterations, |d, _| {
        let took = timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
        took
    });
    let del = row("bridge+host-local DEL", dirs, iterations, |d, _| {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"))
    });
    let cpu = row(
        "bridge+host-local ADD, CPU time",
        dirs,
        iterations,
        |d, _| {
            let used = cpu_of(|| timed(&call(d, "ADD")));
            timed(&call(d, "DEL"));
            used
        },
    );
    for i in 0..2 {
        let _ = NetNs::delete_named(&format!("bench-br{i}"));
    }
    vec![add, del, cpu]
}

/// ptp + host-local ADD and DEL of one container.
fn ptp_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    one_container_rows(dirs, iterations, "ptp", 83, json!({}))
}

/// macvlan + host-local ADD and DEL of one container, on a veth whose peer is in a
/// namespace of its own (the "LAN").
fn macvlan_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    parent_link_rows(dirs, iterations, "macvlan", 91)
}

/// ipvlan + host-local, as [`macvlan_rows`]: only where the kernel has the ipvlan
/// driver (`scripts/vm-test.sh` with `VM_BENCH` runs it under qemu).
fn ipvlan_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    parent_link_rows(dirs, iterations, "ipvlan", 95)
}

/// `plugin` + host-local ADD and DEL of one container on a parent veth `bench-<plugin>`
/// whose peer is in a "LAN" namespace.
fn parent_link_rows(dirs: [&Path; 2], iterations: usize, plugin: &str, net: usize) -> Vec<String> {
    let lan_name = format!("bench-{plugin}-lan");
    let parent = format!("bench-{plugin}p");
    let lan = NetNs::create_named(&lan_name).expect("bench namespace");
    netkit::block_on(async {
        let nl = netkit::Netlink::open_current()?;
        nl.link_add_veth(&parent, "eth0", &lan, &netkit::VethOptions::default())
            .await?;
        let p = nl.link_require(&parent).await?;
        nl.link_set_up(p.index).await
    })
    .expect("the parent link");
    let rows = one_container_rows(dirs, iterations, plugin, net, json!({"master": parent}));
    drop(lan);
    let _ = NetNs::delete_named(&lan_name);
    rows
}

/// macvlan + dhcp ADD and DEL of one container, each implementation with its own
/// daemon, against one dnsmasq (no ping check) in a "LAN" namespace on the parent's far
/// end; and podnet's first ADD, which starts its daemon.
fn dhcp_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    let lan = NetNs::create_named("bench-dhlan").expect("bench namespace");
    podnet_tests::net::wire(&lan, "bench-dhp", "10.93.0.254/24", "10.93.0.1/24");
    let server = podnet_tests::net::Dnsmasq::start(&lan, "10.93.0.10,10.93.0.250");
    let sock = |side: usize| format!("/run/bench-dhcp{side}.sock");
    let nss: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&format!("bench-dhcp{i}")).expect("bench namespace"))
        .collect();
    let conf = |side: usize| {
        json!({"cniVersion": "1.0.0", "name": format!("benchdhcp{side}"), "type": "macvlan", "master": "bench-dhp",
               "ipam": {"type": "dhcp", "daemonSocketPath": sock(side)}})
    };
    let call = |d: &Path, cmd: &str| {
        let side = side_of(dirs, d);
        Call::new(
            &d.join("macvlan"),
            cmd,
            nss[side].path(),
            "eth0",
            &conf(side),
        )
    };
    // podnet's first ADD on a host: no daemon yet, the plugin starts it.
    let first = timed(&call(dirs[0], "ADD"));
    timed(&call(dirs[0], "DEL"));
    // The reference's daemon runs only when started (a systemd unit, usually).
    let mut reference = Command::new(dirs[1].join("dhcp"))
        .args(["daemon", "-socketpath", &sock(1)])
        .stderr(Stdio::null())
        .spawn()
        .expect("the reference's dhcp daemon");
    let t = Instant::now();
    while !Path::new(&sock(1)).exists() && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    timed(&call(dirs[1], "ADD"));
    timed(&call(dirs[1], "DEL"));
    let add = row("macvlan+dhcp ADD (dnsmasq)", dirs, iterations, |d, _| {
        let took = timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
        took
    });
    let del = row("macvlan+dhcp DEL (dnsmasq)", dirs, iterations, |d, _| {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"))
    });
    let _ = reference.kill();
    let _ = reference.wait();
    if let Ok(pid) = std::fs::read_to_string(format!("{}.pid", sock(0))) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
    drop(server);
    drop(nss);
    for n in ["bench-dhcp0", "bench-dhcp1", "bench-dhlan"] {
        let _ = NetNs::delete_named(n);
    }
    vec![
        add,
        del,
        format!(
            "| macvlan+dhcp first ADD on a host (podnet starts its daemon; the reference needs one running) | {} | — | — | — | — |",
            ms(first)
        ),
    ]
}

/// `plugin` + host-local (10.`net`.0.0/16 and the next /16 for the reference) ADD, DEL
/// and ADD's CPU time, one container at a time; `extra` keys go into the config.
fn one_container_rows(
    dirs: [&Path; 2],
    iterations: usize,
    plugin: &str,
    net: usize,
    extra: serde_json::Value,
) -> Vec<String> {
    let ns_name = |i: usize| format!("bench-{plugin}{i}");
    let nss: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&ns_name(i)).expect("bench namespace"))
        .collect();
    let conf = |side: usize| {
        let mut c = json!({"cniVersion": "1.0.0", "name": format!("bench{plugin}{side}"), "type": plugin,
               "ipam": {"type": "host-local", "dataDir": format!("{BENCH_DATA}{side}"),
                        "ranges": [[{"subnet": format!("10.{}.0.0/16", net + side)}]]}});
        for (k, v) in extra.as_object().expect("an object") {
            c[k] = v.clone();
        }
        c
    };
    let call = |d: &Path, cmd: &str| {
        let side = side_of(dirs, d);
        Call::new(&d.join(plugin), cmd, nss[side].path(), "eth0", &conf(side))
    };
    for d in dirs {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
    }
    let add = row(
        &format!("{plugin}+host-local ADD"),
        dirs,
        iterations,
        |d, _| {
            let took = timed(&call(d, "ADD"));
            timed(&call(d, "DEL"));
            took
        },
    );
    let del = row(
        &format!("{plugin}+host-local DEL"),
        dirs,
        iterations,
        |d, _| {
            timed(&call(d, "ADD"));
            timed(&call(d, "DEL"))
        },
    );
    let cpu = row(
        &format!("{plugin}+host-local ADD, CPU time"),
        dirs,
        iterations,
        |d, _| {
            let used = cpu_of(|| timed(&call(d, "ADD")));
            timed(&call(d, "DEL"));
            used
        },
    );
    for i in 0..2 {
        let _ = NetNs::delete_named(&ns_name(i));
    }
    vec![add, del, cpu]
}

/// bandwidth ADD (a bucket each way: tbf on the veth, an ifb with its bucket and the
/// redirect) and DEL, chained after a veth that exists already.
fn bandwidth_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    let wired: Vec<(NetNs, String)> = (0..2)
        .map(|i| {
            let ns = NetNs::create_named(&format!("bench-bw{i}")).expect("bench namespace");
            let host = format!("vbw{i}");
            netkit::block_on(async {
                let h = netkit::Netlink::open_current()?;
                h.link_add_veth(&host, "eth0", &ns, &netkit::VethOptions::default())
                    .await?;
                let l = h.link_require(&host).await?;
                h.link_set_up(l.index).await
            })
            .expect("bench veth");
            (ns, host)
        })
        .collect();
    let call = |d: &Path, cmd: &str| {
        let (ns, host) = &wired[side_of(dirs, d)];
        let conf = json!({"cniVersion": "1.0.0", "name": "benchbw", "type": "bandwidth",
            "ingressRate": 100_000_000, "ingressBurst": 1_000_000, "egressRate": 100_000_000, "egressBurst": 1_000_000,
            "prevResult": {"cniVersion": "1.0.0",
                "interfaces": [{"name": host}, {"name": "eth0", "sandbox": ns.path().display().to_string()}],
                "ips": [{"address": "10.97.0.2/24", "interface": 1}]}});
        Call::new(&d.join("bandwidth"), cmd, ns.path(), "eth0", &conf)
    };
    // The veth's bucket goes with the veth; between rounds it is removed by hand.
    let clear = |d: &Path| {
        let host = &wired[side_of(dirs, d)].1;
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", host, "root"])
            .status();
        let _ = Command::new("tc")
            .args(["qdisc", "del", "dev", host, "ingress"])
            .status();
    };
    for d in dirs {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
        clear(d);
    }
    let add = row(
        "bandwidth ADD (both directions)",
        dirs,
        iterations,
        |d, _| {
            let took = timed(&call(d, "ADD"));
            timed(&call(d, "DEL"));
            clear(d);
            took
        },
    );
    let del = row("bandwidth DEL", dirs, iterations, |d, _| {
        timed(&call(d, "ADD"));
        let took = timed(&call(d, "DEL"));
        clear(d);
        took
    });
    for i in 0..2 {
        let _ = NetNs::delete_named(&format!("bench-bw{i}"));
    }
    vec![add, del]
}

/// Wall time of `n` bridge+host-local ADDs started at once, median of `rounds`.
fn parallel_row(dirs: [&Path; 2], n: usize, rounds: usize) -> String {
    let mut walls = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (side, d) in dirs.iter().enumerate() {
            let nss: Vec<NetNs> = (0..n)
                .map(|i| NetNs::create_named(&format!("par{side}-{round}-{i}")).expect("namespace"))
                .collect();
            let calls: Vec<Call> = nss
                .iter()
                .enumerate()
                .map(|(i, ns)| {
                    Call::new(
                        &d.join("bridge"),
                        "ADD",
                        ns.path(),
                        "eth0",
                        &bridge_conf(side),
                    )
                    .set("CNI_CONTAINERID", &format!("par{i}"))
                })
                .collect();
            let start = Instant::now();
            std::thread::scope(|s| {
                for c in &calls {
                    s.spawn(move || timed(c));
                }
            });
            walls[side].push(start.elapsed());
            std::thread::scope(|s| {
                for c in &calls {
                    s.spawn(move || timed(&c.clone().set("CNI_COMMAND", "DEL")));
                }
            });
            for i in 0..n {
                let _ = NetNs::delete_named(&format!("par{side}-{round}-{i}"));
            }
            // The kernel destroys 50 namespaces and veths in the background: let that
            // finish before the other side's timed round, whichever side caused it.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    let [ours, theirs] = walls.map(stats);
    format!(
        "{n} parallel bridge+host-local ADDs, wall time (median of {rounds}): podnet {} ms, reference {} ms, {:.2}×",
        ms(ours.median),
        ms(theirs.median),
        ours.median.as_secs_f64() / theirs.median.as_secs_f64()
    )
}

/// The conflist Podman 4 generates (tests/fixtures), on a bridge, subnet and data
/// directory of its own per implementation.
fn podman_list(side: usize) -> NetConfList {
    let mut v: serde_json::Value =
        serde_json::from_str(include_str!("../fixtures/podman4-default.conflist")).unwrap();
    v["cniVersion"] = json!("1.0.0");
    v["name"] = json!(format!("podman{side}"));
    let br = &mut v["plugins"][0];
    br["bridge"] = json!(format!("cni-podman{side}"));
    br["ipam"]["dataDir"] = json!(format!("{BENCH_DATA}{side}"));
    br["ipam"]["ranges"] = json!([[{"subnet": format!("10.{}.0.0/16", 85 + side)}]]);
    NetConfList::from_bytes(v.to_string().as_bytes()).unwrap()
}

fn podman_conf(ns: &NetNs, id: &str, host_port: u16) -> RuntimeConf {
    podnet_tests::net::attachment(
        ns,
        id,
        json!([{"hostPort": host_port, "containerPort": 80, "protocol": "tcp"}]),
    )
}

fn timed_ok<T, E: std::fmt::Debug>(what: &str, f: impl FnOnce() -> Result<T, E>) -> Duration {
    let start = Instant::now();
    let r = f();
    let took = start.elapsed();
    if let Err(e) = r {
        panic!("{what}: {e:?}");
    }
    took
}

/// Portmap alone for `n` stand-in containers (one mapping each, host ports from
/// 40000): what fills the host with published ports before a measurement.
fn portmap_fill(d: &Path, side: usize, ns: &NetNs, n: usize, cmd: &str) {
    for i in 0..n {
        let ip = format!("10.{}.{}.{}/16", 85 + side, 100 + i / 250, 1 + i % 250);
        let conf = json!({"cniVersion": "1.0.0", "name": format!("podman{side}"), "type": "portmap",
            "runtimeConfig": {"portMappings": [{"hostPort": 40000 + i, "containerPort": 80, "protocol": "tcp"}]},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": format!("cni-podman{side}")}, {"name": "eth0", "sandbox": ns.path().display().to_string()}],
                "ips": [{"address": ip, "interface": 1}]}});
        let call = Call::new(&d.join("portmap"), cmd, ns.path(), "eth0", &conf)
            .set("CNI_CONTAINERID", &format!("fill{i}"));
        timed(&call);
    }
}

/// The Podman chain ADD and DEL of one container with one mapping; then the same ADD
/// with 1,000 containers' mappings on the host; then a 1,000-port range.
fn podman_rows(dirs: [&Path; 2], iterations: usize) -> (Vec<String>, [Duration; 2]) {
    let nss: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&format!("bench-pod{i}")).expect("bench namespace"))
        .collect();
    let rts: Vec<CniRuntime> = dirs
        .iter()
        .map(|d| CniRuntime::new(vec![d.to_path_buf()], "/var/lib/cni"))
        .collect();
    let lists: Vec<NetConfList> = (0..2).map(podman_list).collect();
    let add = |side: usize| {
        timed_ok("podman chain ADD", || {
            rts[side].add(&lists[side], &podman_conf(&nss[side], "bench", 8080))
        })
    };
    let del = |side: usize| {
        timed_ok("podman chain DEL", || {
            rts[side].del(&lists[side], &podman_conf(&nss[side], "bench", 8080))
        })
    };
    for side in 0..2 {
        add(side);
        del(side);
    }
    let mut rows = Vec::new();
    // The first container of a host creates podnet's tables and its DEL removes them.
    rows.push(row(
        "Podman chain ADD, 1 mapping, first container on the host",
        dirs,
        iterations,
        |d, _| {
            let side = side_of(dirs, d);
            let took = add(side);
            del(side);
            took
        },
    ));
    rows.push(row(
        "Podman chain DEL, 1 mapping, last container on the host",
        dirs,
        iterations,
        |d, _| {
            let side = side_of(dirs, d);
            add(side);
            del(side)
        },
    ));
    // Steady state: another container (with its own mapping) lives on the network.
    let residents: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&format!("bench-res{i}")).expect("bench namespace"))
        .collect();
    for side in 0..2 {
        timed_ok("resident ADD", || {
            rts[side].add(
                &lists[side],
                &podman_conf(&residents[side], "resident", 8079),
            )
        });
    }
    let mut medians = [Duration::ZERO; 2];
    let mut samples = [Vec::new(), Vec::new()];
    rows.push(row(
        "Podman chain ADD, 1 mapping, another container present",
        dirs,
        iterations,
        |d, _| {
            let side = side_of(dirs, d);
            let took = add(side);
            del(side);
            samples[side].push(took);
            took
        },
    ));
    for (side, s) in samples.into_iter().enumerate() {
        medians[side] = stats(s).median;
    }
    rows.push(row(
        "Podman chain DEL, 1 mapping, another container present",
        dirs,
        iterations,
        |d, _| {
            let side = side_of(dirs, d);
            add(side);
            del(side)
        },
    ));
    // With 1,000 containers publishing one port each.
    for (side, d) in dirs.iter().enumerate() {
        portmap_fill(d, side, &nss[side], 1000, "ADD");
    }
    rows.push(row(
        "Podman chain ADD, 1,000 mappings already on the host",
        dirs,
        iterations.min(100),
        |d, _| {
            let side = side_of(dirs, d);
            let took = add(side);
            del(side);
            took
        },
    ));
    for (side, d) in dirs.iter().enumerate() {
        portmap_fill(d, side, &nss[side], 1000, "DEL");
    }
    // One container publishing 1,000 ports (portmap alone, prevResult given).
    let range = |side: usize, cmd: &str, d: &Path| {
        let ports: Vec<serde_json::Value> = (20000..21000)
            .map(|p| json!({"hostPort": p, "containerPort": 80, "protocol": "tcp"}))
            .collect();
        let conf = json!({"cniVersion": "1.0.0", "name": format!("podman{side}"), "type": "portmap",
            "runtimeConfig": {"portMappings": ports},
            "prevResult": {"cniVersion": "1.0.0", "interfaces": [{"name": "eth0", "sandbox": nss[side].path().display().to_string()}],
                "ips": [{"address": format!("10.{}.0.9/16", 85 + side), "interface": 0}]}});
        timed(
            &Call::new(&d.join("portmap"), cmd, nss[side].path(), "eth0", &conf)
                .set("CNI_CONTAINERID", "range"),
        )
    };
    // The reference spends minutes per call here (iptables commands per port): one
    // sample of each, ADD then DEL.
    let mut once = [[Duration::ZERO; 2]; 2];
    for (side, d) in dirs.iter().enumerate() {
        once[0][side] = range(side, "ADD", d);
        once[1][side] = range(side, "DEL", d);
    }
    for (name, [ours, theirs]) in [
        ("portmap ADD, 1,000-port range (1 sample)", once[0]),
        ("portmap DEL, 1,000-port range (1 sample)", once[1]),
    ] {
        rows.push(format!(
            "| {name} | {} | – | {} | – | {:.3}× |",
            ms(ours),
            ms(theirs),
            ours.as_secs_f64() / theirs.as_secs_f64()
        ));
    }
    for side in 0..2 {
        timed_ok("resident DEL", || {
            rts[side].del(
                &lists[side],
                &podman_conf(&residents[side], "resident", 8079),
            )
        });
    }
    for i in 0..2 {
        let _ = NetNs::delete_named(&format!("bench-pod{i}"));
        let _ = NetNs::delete_named(&format!("bench-res{i}"));
    }
    (rows, medians)
}

const NETAVARK: &str = "/usr/lib/podman/netavark";

/// netavark 1.4 `setup` and `teardown` of one container with one mapping on the same
/// kind of network (Debian's netavark; the anchor Podman 4 uses without CNI).
fn netavark_rows(iterations: usize, podnet: Duration) -> Vec<String> {
    if !Path::new(NETAVARK).is_file() {
        return vec![format!("netavark not found at {NETAVARK}: anchor skipped")];
    }
    let ns = NetNs::create_named("bench-nv").expect("bench namespace");
    let opts = json!({
        "container_id": "6f0c7b5a2e1d4c3b9a8f7e6d5c4b3a2910fedcba9876543210fedcba98765432",
        "container_name": "bench",
        "networks": {"podman": {"interface_name": "eth0", "static_ips": ["10.87.0.10"]}},
        "network_info": {"podman": {"name": "podman", "id": "2f259bab93aaaaa2542ba43ef33eb990d0999ee1b9924b557b7be53c0b7a1bb9",
            "driver": "bridge", "network_interface": "podman9",
            "subnets": [{"subnet": "10.87.0.0/16", "gateway": "10.87.0.1"}],
            "ipv6_enabled": false, "internal": false, "dns_enabled": false, "ipam_options": {"driver": "host-local"}}},
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 8090, "range": 1, "protocol": "tcp"}]
    })
    .to_string();
    let run = |cmd: &str| {
        let start = Instant::now();
        let mut child = Command::new(NETAVARK)
            .args(["--config", "/run/podnet-bench-nv", cmd])
            .arg(ns.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("netavark runs");
        use std::io::Write as _;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(opts.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "netavark {cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        start.elapsed()
    };
    run("setup");
    run("teardown");
    let mut setup = Vec::new();
    let mut teardown = Vec::new();
    for _ in 0..iterations {
        setup.push(run("setup"));
        teardown.push(run("teardown"));
    }
    drop(ns);
    let _ = NetNs::delete_named("bench-nv");
    let (s, t) = (stats(setup), stats(teardown));
    vec![
        format!(
            "| netavark 1.4 `setup`, 1 mapping | {} | {} | podnet chain ADD / netavark setup: {:.2}× |",
            ms(s.median),
            ms(s.p90),
            podnet.as_secs_f64() / s.median.as_secs_f64()
        ),
        format!(
            "| netavark 1.4 `teardown`, 1 mapping | {} | {} | |",
            ms(t.median),
            ms(t.p90)
        ),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ours = PathBuf::from(
        args.get(1)
            .expect("usage: bench PODNET_DIR REFERENCE_DIR [ITERATIONS]"),
    );
    let reference = PathBuf::from(
        args.get(2)
            .expect("usage: bench PODNET_DIR REFERENCE_DIR [ITERATIONS]"),
    );
    let n: usize = args
        .get(3)
        .map(|s| s.parse().expect("ITERATIONS is a number"))
        .unwrap_or(300);
    // An optional section name runs only that part: `podman`, `bridge` (bridge, ptp, macvlan),
    // `host-local` (the N-th lease rows), `parallel` (50 ADDs at once), `bandwidth`, `dhcp`,
    // `parent-links` (macvlan and ipvlan: where the kernel has ipvlan, under qemu).
    let only = args.get(4).map(String::as_str);
    let dirs = [ours.as_path(), reference.as_path()];
    // Leases of an interrupted run would refuse this run's container ids.
    for side in 0..2 {
        let _ = std::fs::remove_dir_all(format!("{BENCH_DATA}{side}"));
    }
    let conf = json!({"cniVersion": "1.0.0", "name": "bench", "type": "loopback"});

    // Warm the page cache for both binaries.
    for d in dirs {
        timed(&Call::bare(&d.join("loopback"), "VERSION", &conf));
    }

    // The floor: what spawning any process costs this driver.
    let floor = stats(
        (0..n)
            .map(|_| timed(&Call::bare(Path::new("/bin/true"), "VERSION", &conf)))
            .collect(),
    );

    let mut rows = Vec::new();
    if only == Some("podman") {
        let (podman, chain_add) = podman_rows(dirs, n.min(200));
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in podman {
            println!("{r}");
        }
        println!("\n| anchor | median | p90 | ratio |\n|---|---|---|---|");
        for r in netavark_rows(n.min(100), chain_add[0]) {
            println!("{r}");
        }
        return;
    }
    if only == Some("host-local") {
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in host_local_scale_rows(dirs, n) {
            println!("{r}");
        }
        return;
    }
    if only == Some("parallel") {
        println!("{}", parallel_row(dirs, 50, 5));
        return;
    }
    if only == Some("bandwidth") {
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in bandwidth_rows(dirs, n) {
            println!("{r}");
        }
        return;
    }
    if only == Some("parent-links") {
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in macvlan_rows(dirs, n)
            .into_iter()
            .chain(ipvlan_rows(dirs, n))
        {
            println!("{r}");
        }
        return;
    }
    if only == Some("dhcp") {
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in dhcp_rows(dirs, n.min(200)) {
            println!("{r}");
        }
        return;
    }
    if only == Some("bridge") {
        println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
        println!("|---|---|---|---|---|---|");
        for r in bridge_rows(dirs, n)
            .into_iter()
            .chain(ptp_rows(dirs, n))
            .chain(macvlan_rows(dirs, n))
        {
            println!("{r}");
        }
        return;
    }
    rows.push(row("process start (`VERSION`)", dirs, n, |d, _| {
        timed(&Call::bare(&d.join("loopback"), "VERSION", &conf))
    }));

    let ns = NetNs::create_named("bench-lo").expect("creating the bench namespace");
    let add = |d: &Path| Call::new(&d.join("loopback"), "ADD", ns.path(), "lo", &conf);
    let del = |d: &Path| Call::new(&d.join("loopback"), "DEL", ns.path(), "lo", &conf);
    rows.push(row("loopback ADD", dirs, n, |d, _| {
        let took = timed(&add(d));
        timed(&del(d));
        took
    }));
    rows.push(row("loopback DEL", dirs, n, |d, _| {
        timed(&add(d));
        timed(&del(d))
    }));
    drop(ns);
    NetNs::delete_named("bench-lo").expect("removing the bench namespace");

    rows.extend(host_local_scale_rows(dirs, n));
    for side in 0..2 {
        let _ = std::fs::remove_dir_all(format!("{BENCH_DATA}{side}"));
    }
    rows.extend(bridge_rows(dirs, n));
    rows.extend(ptp_rows(dirs, n));
    rows.extend(macvlan_rows(dirs, n));
    rows.extend(dhcp_rows(dirs, n.min(200)));
    rows.extend(bandwidth_rows(dirs, n));
    let parallel = parallel_row(dirs, 50, 5);
    let (podman, chain_add) = podman_rows(dirs, n.min(200));
    rows.extend(podman);
    let anchors = netavark_rows(n.min(100), chain_add[0]);

    println!("{n} iterations per row, alternating implementations; times in ms.");
    println!(
        "Spawn floor (/bin/true from the same driver): median {} ms, p90 {} ms.\n",
        ms(floor.median),
        ms(floor.p90)
    );
    println!("| operation | podnet median | podnet p90 | reference median | reference p90 | podnet / reference |");
    println!("|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    println!("\n{parallel}");
    println!("\n| anchor | median | p90 | ratio |\n|---|---|---|---|");
    for r in anchors {
        println!("{r}");
    }
}
