//! The netns toolkit library: [`NetNs`] (open, create pinned, delete, enter with a
//! guard), a [`Netlink`] handle opened inside a namespace and used from outside, links,
//! addresses, routes and per-namespace sysctls, with typed errors that keep the errno.
//!
//! This is the one crate of the workspace allowed `unsafe` (each block documented with
//! `// SAFETY:`); today it needs none, as nix wraps every syscall it makes.

pub mod attach;
pub mod conntrack;
pub mod error;
pub mod netlink;
pub mod nft;
pub mod ns;
pub mod sysctl;

pub use error::{Error, Result};
pub use netlink::{
    format_mac, parse_mac, BridgeOptions, BridgePortOptions, BridgeVlan, Link, Neighbour, Netlink,
    RouteSpec, VethOptions, LOOPBACK_IFINDEX,
};
pub use nix::errno::Errno;
pub use ns::{NetNs, NsGuard, NETNS_RUN_DIR};

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
