//! IPAM plugins: `host-local` (ranges, leases in a flock-guarded directory with the
//! reference's layout, an index that keeps ADD/DEL cost flat, GC and STATUS) and
//! `static`. The allocator (`range`) is pure; the store is the only I/O.

#![forbid(unsafe_code)]

pub mod config;
pub mod host_local;
pub mod range;
pub mod resolv;
pub mod static_ipam;
pub mod store;

pub use host_local::HostLocal;
pub use static_ipam::Static;
