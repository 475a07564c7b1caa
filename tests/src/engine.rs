//! Driving the `podnet` CLI from a sandboxed test: a busybox root filesystem (Debian's
//! busybox-static), conflists in the sandbox's /run, the workspace's plugins, and a
//! guard that force-removes every container and pod when the test ends (a container's
//! processes live in their own pid namespace and would otherwise outlive the test).

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::subject::{default_dir, workspace_bin};

/// Where the busybox root filesystem is built (the sandbox's tmpfs).
pub const ROOTFS: &str = "/run/podnet-test/rootfs";
/// Test-only plugins, after the workspace's own on CNI_PATH.
pub const PLUGINS: &str = "/run/podnet-test/plugins";
/// The conflist directory of the tests' networks.
pub const NETCONF: &str = "/run/podnet-test/net.d";

#[derive(Debug)]
pub struct Podnet {
    pub rootfs: PathBuf,
}

impl Podnet {
    /// Must be called inside a privileged test: builds the rootfs.
    pub fn new() -> Podnet {
        let rootfs = PathBuf::from(ROOTFS);
        busybox_rootfs(&rootfs);
        Podnet { rootfs }
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(workspace_bin("podnet"));
        c.env("PODNET_CNI_CONFIG_DIR", NETCONF)
            .env("CNI_PATH", format!("{}:{PLUGINS}", default_dir().display()))
            .env_remove("PODNET_ROOT")
            .env_remove("PODNET_RUNROOT");
        c
    }

    /// Runs `podnet ARGS`; (success, stdout, stderr).
    pub fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command().args(args).output().expect("podnet runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `podnet ARGS`, which must succeed; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let (good, out, err) = self.run(args);
        assert!(good, "podnet {args:?} failed: {out}{err}");
        out
    }

    /// `podnet ARGS`, which must fail; its stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let (good, out, err) = self.run(args);
        assert!(!good, "podnet {args:?} should fail: {out}");
        err
    }

    /// `podnet run -d --rootfs R ARGS…` (ARGS ends with `--` and the command).
    pub fn detached(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "-d", "--rootfs", ROOTFS];
        a.extend_from_slice(args);
        self.ok(&a).trim().to_owned()
    }

    /// `podnet run --rootfs R ARGS…`: the container's output; it must exit 0.
    pub fn attached(&self, args: &[&str]) -> String {
        let mut a = vec!["run", "--rootfs", ROOTFS];
        a.extend_from_slice(args);
        self.ok(&a)
    }

    /// `podnet exec NAME sh -c CMD`: (exit 0, output).
    pub fn exec(&self, name: &str, cmd: &str) -> (bool, String) {
        let (good, out, err) = self.run(&["exec", name, "sh", "-c", cmd]);
        (good, format!("{out}{err}"))
    }

    pub fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).expect("inspect is JSON");
        v[0].clone()
    }

    /// The container's addresses, as `inspect` reports them (`10.89.0.10/24`, …).
    pub fn addresses(&self, name: &str) -> Vec<String> {
        let v = self.inspect(name);
        let net = &v["Record"]["net"];
        net["attachments"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["ips"].as_array().cloned().unwrap_or_default())
            .filter_map(|ip| ip.as_str().map(str::to_owned))
            .collect()
    }

    pub fn ps(&self) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&self.ok(&["ps", "-a", "--json"])).expect("ps is JSON")
    }
}

impl Default for Podnet {
    fn default() -> Self {
        Podnet::new()
    }
}

impl Drop for Podnet {
    fn drop(&mut self) {
        // Joiners before the containers they join.
        let mut rows = serde_json::from_str::<Vec<Value>>(&self.run(&["ps", "-a", "--json"]).1)
            .unwrap_or_default();
        rows.sort_by_key(|r| {
            !r["network"]
                .as_str()
                .unwrap_or_default()
                .starts_with("container:")
        });
        for r in rows {
            let _ = self.run(&["rm", "-f", r["id"].as_str().unwrap_or_default()]);
        }
        let pods = serde_json::from_str::<Vec<Value>>(&self.run(&["pod", "ls", "--json"]).1)
            .unwrap_or_default();
        for p in pods {
            let _ = self.run(&[
                "pod",
                "rm",
                "-f",
                p["pod"]["id"].as_str().unwrap_or_default(),
            ]);
        }
    }
}

/// A root filesystem of busybox-static with every applet linked (relative links, so
/// they resolve inside the container), and an empty /etc.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("rootfs bin");
    std::fs::create_dir_all(dir.join("etc")).expect("rootfs etc");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("busybox-static is installed (make deps)");
    std::fs::copy(busybox, bin.join("busybox")).expect("copying busybox");
    let list = Command::new(bin.join("busybox"))
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" {
            let _ = symlink("busybox", bin.join(applet));
        }
    }
}
