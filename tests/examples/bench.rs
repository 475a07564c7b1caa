//! `make bench`: podnet's plugins side by side with the reference plugins, in one run.
//!
//! Each plugin process is spawned directly (no shell), with the protocol's environment
//! and stdin, and timed from spawn to exit. Runs alternate between the two
//! implementations so that drift on the machine hits both alike. Prints a Markdown
//! table of medians and p90s with the podnet/reference ratio.
//!
//! Usage: bench PODNET_DIR REFERENCE_DIR [ITERATIONS]
//! `make bench` runs it inside a private network and mount namespace.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// One benchmark row: `make` builds the calls for a plugin dir and iteration; `timed`
/// says which of them is measured (the others set up or tear down).
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
    for i in 0..2 {
        let _ = NetNs::delete_named(&format!("bench-br{i}"));
    }
    vec![add, del]
}

/// ptp + host-local ADD and DEL of one container.
fn ptp_rows(dirs: [&Path; 2], iterations: usize) -> Vec<String> {
    let nss: Vec<NetNs> = (0..2)
        .map(|i| NetNs::create_named(&format!("bench-ptp{i}")).expect("bench namespace"))
        .collect();
    let conf = |side: usize| {
        json!({"cniVersion": "1.0.0", "name": format!("benchptp{side}"), "type": "ptp",
               "ipam": {"type": "host-local", "dataDir": format!("{BENCH_DATA}{side}"),
                        "ranges": [[{"subnet": format!("10.{}.0.0/16", 83 + side)}]]}})
    };
    let call = |d: &Path, cmd: &str| {
        let side = side_of(dirs, d);
        Call::new(&d.join("ptp"), cmd, nss[side].path(), "eth0", &conf(side))
    };
    for d in dirs {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
    }
    let add = row("ptp+host-local ADD", dirs, iterations, |d, _| {
        let took = timed(&call(d, "ADD"));
        timed(&call(d, "DEL"));
        took
    });
    let del = row("ptp+host-local DEL", dirs, iterations, |d, _| {
        timed(&call(d, "ADD"));
        timed(&call(d, "DEL"))
    });
    for i in 0..2 {
        let _ = NetNs::delete_named(&format!("bench-ptp{i}"));
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
    let dirs = [ours.as_path(), reference.as_path()];
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

    for leases in [1usize, 100, 1_000, 10_000] {
        let iterations = n.min(40_000 / leases).max(20);
        let [add, del] = host_local_rows(dirs, leases, iterations);
        rows.push(add);
        rows.push(del);
    }
    for side in 0..2 {
        let _ = std::fs::remove_dir_all(format!("{BENCH_DATA}{side}"));
    }
    rows.extend(bridge_rows(dirs, n));
    rows.extend(ptp_rows(dirs, n));
    let parallel = parallel_row(dirs, 50, 5);

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
}
