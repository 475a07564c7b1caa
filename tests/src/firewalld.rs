//! Debian's firewalld (nftables backend) with a D-Bus system bus of its own, running from
//! the Debian 13 root (`scripts/trixie-root.sh`, `make podman5-root`) in the calling
//! test's network namespace. Its process tree lives in a mount and PID namespace of its
//! own (the root's /run a tmpfs, its bus socket bind-mounted from a directory of the
//! root, so the test reaches it from outside at [`Firewalld::bus`]) and dies with the
//! handle (or with the sandbox, by the parent-death signal of `unshare --kill-child`).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::random_name;

/// The root the Podman 5 tests use too.
pub fn root() -> PathBuf {
    let root = PathBuf::from(
        std::env::var_os("PODNET_TRIXIE_ROOT").unwrap_or_else(|| "/var/tmp/podnet-trixie".into()),
    );
    let stamp = std::fs::read_to_string(root.join(".podnet-root")).unwrap_or_default();
    assert!(
        stamp.contains("firewalld"),
        "{} has no firewalld: build it first (make podman5-root)",
        root.display()
    );
    root
}

#[derive(Debug)]
pub struct Firewalld {
    child: Child,
    root: PathBuf,
    /// The bus directory, relative to the root (`tmp/<name>`).
    dir: String,
    /// `unix:path=…` of its system bus, as seen from outside the root.
    pub bus: String,
}

impl Firewalld {
    /// Starts dbus-daemon and firewalld; returns once firewalld answers on the bus and
    /// its table is loaded.
    pub fn start() -> Firewalld {
        let root = root();
        let dir = format!("tmp/{}", random_name("fwd"));
        std::fs::create_dir_all(root.join(&dir)).expect("the bus directory");
        let script = format!(
            "set -e; R={r}; mount -t proc proc $R/proc; mount -t tmpfs tmpfs $R/run; \
             mkdir -p $R/run/dbus; mount --bind $R/{dir} $R/run/dbus; mount --bind /dev $R/dev; \
             exec chroot $R sh -c 'dbus-daemon --system --fork --nopidfile && exec firewalld --nofork --nopid'",
            r = root.display()
        );
        let child = Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--pid",
                "--fork",
                "--kill-child",
            ])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare starts");
        let bus = format!(
            "unix:path={}",
            root.join(&dir).join("system_bus_socket").display()
        );
        let f = Firewalld {
            child,
            root,
            dir,
            bus,
        };
        let t = Instant::now();
        while !(f.cmd(&["--state"]).0 && crate::net::sh(None, "nft list table inet firewalld").0) {
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "firewalld did not start within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        f
    }

    /// `firewall-cmd ARGS` against this firewalld: (success, output).
    pub fn cmd(&self, args: &[&str]) -> (bool, String) {
        crate::net::output(
            Command::new("chroot")
                .arg(&self.root)
                .arg("env")
                .arg(format!(
                    "DBUS_SYSTEM_BUS_ADDRESS=unix:path=/{}/system_bus_socket",
                    self.dir
                ))
                .arg("firewall-cmd")
                .args(args),
        )
    }

    /// The zone firewalld has `interface` in (`None`: none).
    pub fn zone_of(&self, interface: &str) -> Option<String> {
        let (ok, out) = self.cmd(&[&format!("--get-zone-of-interface={interface}")]);
        ok.then(|| out.trim().to_owned())
    }
}

impl Drop for Firewalld {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.root.join(&self.dir));
    }
}
