//! The netns toolkit library: [`NetNs`] (open, create pinned, delete, enter with a
//! guard), a [`Netlink`] handle opened inside a namespace and used from outside, links,
//! addresses, routes and per-namespace sysctls, with typed errors that keep the errno.
//!
//! This is the one crate of the workspace allowed `unsafe` (each block documented with
//! `// SAFETY:`); it needs it only in [`release`], to fork, and in [`tap`], for the tun
//! ioctls.

pub mod attach;
pub mod conntrack;
pub mod error;
pub mod netlink;
pub mod nft;
pub mod ns;
pub mod policy;
pub mod release;
pub mod sysctl;
#[allow(unsafe_code)]
pub mod tap;
pub mod tc;
pub mod unlink;

pub use error::{Error, Result};
pub use netlink::{
    format_mac, host_prefix, ipvlan_mode, macvlan_mode, parse_mac, BridgeOptions,
    BridgePortOptions, BridgeVlan, Link, MacvlanOptions, Neighbour, Netlink, RouteSpec, SubLink,
    VethOptions, LOOPBACK_IFINDEX,
};
pub use nix::errno::Errno;
pub use ns::{NetNs, NsGuard, NETNS_RUN_DIR};
pub use tap::{TapOptions, TunInfo};

/// The variable that moves podnet's runtime state (nft journals and locks, the DNS
/// responder's state, portmap's saved sysctls) away from `/run/podnet`: podnet's
/// netavark backend sets it under Podman's `--config` directory for rootless Podman,
/// whose user namespace cannot write the host's /run. Only an absolute path counts.
pub const RUN_DIR_ENV: &str = "PODNET_RUN_DIR";

/// Where podnet keeps its runtime state: `$PODNET_RUN_DIR`, else `/run/podnet`.
pub fn run_dir() -> std::path::PathBuf {
    std::env::var_os(RUN_DIR_ENV)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| "/run/podnet".into())
}

/// Runs a future to completion on a fresh single-threaded runtime: what a plugin
/// process needs (one netlink conversation, no thread pool to start).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(fut)
}

/// Whether process `pid` is running: it exists and is not a zombie. A zombie counts as
/// gone: an exited child whose parent died waits for whatever reaps orphans (init, a
/// subreaper), which may take seconds, and `kill(pid, 0)` still succeeds on it.
pub fn process_running(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command, which is in parentheses and may hold spaces.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    state.is_some_and(|s| s != 'Z')
}

/// 64 bits no other process predicts: SipHash of the time and the pid, under keys the
/// standard library seeds from the kernel once per thread and changes on every call.
/// For names, MACs and DNS query ids; not key material.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    h.finish()
}
