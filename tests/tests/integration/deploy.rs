//! deploy/kubernetes/install-plugins.sh, the DaemonSet's installer, run on directories
//! standing in for the image's plugins and the node's /opt/cni/bin.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn install(src: &Path, dest: &Path, skip: &str) -> (bool, String) {
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/install-plugins.sh");
    podnet_tests::net::output(
        Command::new("sh")
            .arg(script)
            .env("PODNET_SRC", src)
            .env("PODNET_DEST", dest)
            .env("PODNET_SKIP", skip),
    )
}

#[test]
fn installs_every_plugin_and_leaves_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let (src, dest) = (t.path().join("src"), t.path().join("dest"));
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(&dest).unwrap();
    for p in ["bridge", "host-local", "loopback", "portmap", "bandwidth"] {
        fs::write(src.join(p), format!("#!/bin/sh\necho podnet {p}\n")).unwrap();
        fs::set_permissions(src.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(dest.join("flannel"), "other installer's").unwrap();
    fs::write(dest.join("bridge"), "the reference's").unwrap();
    let (ok, out) = install(&src, &dest, "bridge");
    assert!(ok, "{out}");
    assert!(out.contains("4 plugins"), "{out}");
    assert_eq!(
        fs::read_to_string(dest.join("flannel")).unwrap(),
        "other installer's"
    );
    assert_eq!(
        fs::read_to_string(dest.join("bridge")).unwrap(),
        "the reference's",
        "PODNET_SKIP"
    );
    let portmap = dest.join("portmap");
    assert_eq!(
        fs::read_to_string(&portmap).unwrap(),
        "#!/bin/sh\necho podnet portmap\n"
    );
    assert_eq!(
        fs::metadata(&portmap).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let left: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(left.is_empty(), "no temporary file left: {left:?}");
    // Again (a restarted pod): the same result.
    assert!(install(&src, &dest, "").0);
    assert_eq!(
        fs::read_to_string(dest.join("bridge")).unwrap(),
        "#!/bin/sh\necho podnet bridge\n"
    );
    // No node directory mounted: a clear failure.
    let (ok, out) = install(&src, &t.path().join("missing"), "");
    assert!(!ok && out.contains("is not a directory"), "{out}");
}
