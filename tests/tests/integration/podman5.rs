//! Podman 5 (Debian 13's 5.4, in a debootstrapped root cached under /var/tmp) driving
//! podnet's netavark backend through the seed scenario, rootful and rootless, and the
//! same scenario on Podman's own netavark 1.14 as the reference (tests/podman5/).

use std::path::Path;
use std::process::Command;

use podnet_tests::privileged_test;

/// The checks the scenario printed: (name, passed, the whole output).
fn scenario(backend: &str, mode: &str) -> (Vec<(String, bool)>, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("podman5/run.sh");
    let dir = podnet_tests::subject::default_dir();
    assert!(
        dir.join("netavark").is_file(),
        "podnet's netavark is not built in {}",
        dir.display()
    );
    let out = Command::new("bash")
        .arg(script)
        .args([backend, mode])
        .arg(&dir)
        .output()
        .expect("running tests/podman5/run.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let checks: Vec<(String, bool)> = text
        .lines()
        .filter_map(|l| {
            if let Some(n) = l.strip_prefix("ok ") {
                Some((n.to_owned(), true))
            } else {
                l.strip_prefix("FAIL ")
                    .map(|n| (n.split(':').next().unwrap_or(n).to_owned(), false))
            }
        })
        .collect();
    assert!(
        checks.len() > 20,
        "{backend} {mode}: the scenario did not run:\n{text}"
    );
    (checks, text)
}

fn same_results_as_netavark(mode: &str) {
    let (ours, text) = scenario("podnet", mode);
    let failed: Vec<&String> = ours.iter().filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
    assert!(
        failed.is_empty(),
        "podnet backend, {mode}: {failed:?}\n{text}"
    );
    let (reference, ref_text) = scenario("netavark", mode);
    let names = |c: &[(String, bool)]| c.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&ours), names(&reference), "the same checks ran");
    let ref_failed: Vec<&String> = reference
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| n)
        .collect();
    assert!(
        ref_failed.is_empty(),
        "netavark 1.14, {mode}: {ref_failed:?}\n{ref_text}"
    );
    assert!(
        text.contains("podnet"),
        "Podman reports podnet's backend version:\n{text}"
    );
}

privileged_test! {
    fn the_seed_scenario_rootful_on_podnet_and_on_netavark() {
        same_results_as_netavark("rootful");
    }
}

privileged_test! {
    fn the_seed_scenario_rootless_on_podnet_and_on_netavark() {
        same_results_as_netavark("rootless");
    }
}
