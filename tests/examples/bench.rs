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
}
