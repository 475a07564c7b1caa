//! Privileged tests run in their own throwaway namespaces and never touch the host.
//!
//! [`privileged_test!`](crate::privileged_test) declares a test that, when run
//! normally, re-executes the test binary for just that test under `unshare --net
//! --mount --propagation private`, with `PODNET_SANDBOX=1`. Inside, the test gets a
//! fresh network namespace that stands in for the host (`lo` up, nothing else) and a
//! private mount namespace with tmpfs on /run and /var/lib, so namespace pins, leases
//! and caches vanish with it. Everything the test creates dies with the process.
//!
//! Without root the test is skipped with a message, except under `CI=true`, where it
//! fails: CI must never pass a privileged test silently.

use std::path::{Path, PathBuf};
use std::process::Command;

use netkit::NetNs;

const SANDBOX_ENV: &str = "PODNET_SANDBOX";

/// Declares a test that runs in its own network and mount namespaces.
#[macro_export]
macro_rules! privileged_test {
    ($(#[$meta:meta])* fn $name:ident() $body:block) => {
        $(#[$meta])*
        #[test]
        fn $name() {
            $crate::sandbox::run(module_path!(), stringify!($name), || $body);
        }
    };
}

/// The entry point behind [`privileged_test!`](crate::privileged_test).
pub fn run(module: &str, name: &str, body: impl FnOnce()) {
    if std::env::var_os(SANDBOX_ENV).is_some() {
        prepare_inside();
        let _reaper = Reaper;
        body();
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        let msg = format!("{name}: needs root to create network namespaces");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg} (CI=true: privileged tests must run)");
        }
        eprintln!("SKIPPED {msg}");
        return;
    }
    // libtest names a test by its module path without the crate: `a::b::name`.
    let path = match module.split_once("::") {
        Some((_, rest)) => format!("{rest}::{name}"),
        None => name.to_owned(),
    };
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(&exe)
        .args([
            path.as_str(),
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SANDBOX_ENV, "1")
        .output()
        .unwrap_or_else(|e| panic!("running {} under unshare: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("--- sandboxed run of {path} ---\n{stdout}\n{stderr}");
    assert!(
        out.status.success(),
        "{path} failed in its sandbox ({})",
        out.status
    );
    assert!(
        stdout.contains("1 passed"),
        "{path}: the sandboxed run executed no test"
    );
}

/// Kills, when the sandboxed test ends (passed or not), every process still in its
/// mount namespace: what the test started and left running (a DNS responder, the
/// nftables watcher, a containerd), which would otherwise keep the sandbox's
/// namespaces alive after it.
struct Reaper;

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in processes_here() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The other processes of this sandbox: those in its mount namespace (/proc shows every
/// test's, as there is no pid namespace), this one left out.
pub fn processes_here() -> Vec<u32> {
    let me = std::process::id();
    let Ok(ours) = std::fs::read_link("/proc/self/ns/mnt") else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            (pid != me && std::fs::read_link(e.path().join("ns/mnt")).ok()? == ours).then_some(pid)
        })
        .collect()
}

fn prepare_inside() {
    use nix::mount::{mount, MsFlags};
    for dir in ["/run", "/var/lib"] {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .unwrap_or_else(|e| panic!("mounting a private tmpfs on {dir}: {e}"));
    }
    // sysfs shows the network namespace of whoever mounted it: a fresh one makes
    // /sys/class/net show this sandbox's links, as on a real host. The cgroup mounts
    // under it are carried over (the OCI runtime of the engine tests needs them).
    let cgroup_keep = "/run/.sandbox-cgroup";
    let kept = std::fs::create_dir_all(cgroup_keep).is_ok()
        && mount(
            Some("/sys/fs/cgroup"),
            cgroup_keep,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .is_ok();
    mount(
        Some("sysfs"),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap_or_else(|e| panic!("mounting sysfs for the sandbox: {e}"));
    if kept {
        mount(
            Some(cgroup_keep),
            "/sys/fs/cgroup",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .unwrap_or_else(|e| panic!("moving the cgroup mounts under the sandbox's sysfs: {e}"));
    }
    let host = NetNs::current().expect("the sandbox namespace opens");
    netkit::block_on(async {
        let nl = netkit::Netlink::open_in(&host)?;
        let lo = nl.link_require("lo").await?;
        nl.link_set_up(lo.index).await
    })
    .expect("lo comes up in the sandbox");
}

/// A random suffix for interface and namespace names (8 hex digits).
pub fn random_name(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    format!("{prefix}{:08x}", h.finish() as u32)
}

/// Container namespaces created inside a sandbox, removed on drop.
#[derive(Debug, Default)]
pub struct Sandbox {
    pinned: Vec<PathBuf>,
}

impl Sandbox {
    /// Must be called inside a [`privileged_test!`](crate::privileged_test).
    pub fn new() -> Sandbox {
        assert!(
            std::env::var_os(SANDBOX_ENV).is_some(),
            "Sandbox::new outside a privileged_test"
        );
        Sandbox::default()
    }

    /// A new container namespace pinned under /run/netns (the sandbox's tmpfs).
    pub fn container(&mut self, prefix: &str) -> NetNs {
        let name = random_name(prefix);
        let ns =
            NetNs::create_named(&name).unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        self.pinned.push(ns.path().to_path_buf());
        ns
    }

    /// The namespace standing in for the host.
    pub fn host(&self) -> NetNs {
        NetNs::current().expect("the sandbox namespace opens")
    }

    /// Unpins a namespace early (to test a netns that has gone away).
    pub fn remove(&mut self, path: &Path) {
        NetNs::delete_at(path).expect("unpinning a namespace");
        self.pinned.retain(|p| p != path);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // A DNS responder a test started would outlive the sandbox's process.
        if let Some(pid) = crate::dns::responder_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        // So would a dhcp daemon the dhcp plugin started on demand.
        let dhcp = std::fs::read_to_string("/run/cni/dhcp.sock.pid").unwrap_or_default();
        if let Ok(pid) = dhcp.trim().parse::<i32>() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for p in &self.pinned {
            let _ = NetNs::delete_at(p);
        }
    }
}

/// A link of `ns` and its addresses, read back from the kernel (panics when absent).
pub fn link_state(ns: &NetNs, name: &str) -> (netkit::Link, Vec<String>) {
    netkit::block_on(async {
        let nl = netkit::Netlink::open_in(ns)?;
        let link = nl.link_require(name).await?;
        let addrs = nl.addr_list(Some(link.index)).await?;
        Ok::<_, netkit::Error>((link, addrs.iter().map(|(_, a)| a.to_string()).collect()))
    })
    .unwrap_or_else(|e| panic!("reading {name} in {}: {e}", ns.path().display()))
}

/// A link of `ns` read back from the kernel, `None` when there is none.
pub fn find_link(ns: &NetNs, name: &str) -> Option<netkit::Link> {
    netkit::block_on(async { netkit::Netlink::open_in(ns)?.link_get(name).await })
        .unwrap_or_else(|e| panic!("reading link {name}: {e}"))
}

/// Whether `ns` has a link `name`.
pub fn has_link(ns: &NetNs, name: &str) -> bool {
    find_link(ns, name).is_some()
}

/// The addresses host-local holds for `network` in its default data directory, sorted.
pub fn host_local_leases(network: &str) -> Vec<String> {
    let dir = Path::new("/var/lib/cni/networks").join(network);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| n.parse::<std::net::IpAddr>().is_ok());
    names.sort();
    names
}
