//! The `dhcp` IPAM plugin and its daemon (`dhcp daemon`), as the reference pairs them:
//! the plugin asks the daemon over a Unix socket (/run/cni/dhcp.sock by default), and
//! the daemon acquires, keeps and releases each attachment's DHCPv4 lease from inside
//! the container's namespace.

#![forbid(unsafe_code)]

pub mod conf;
pub mod daemon;
pub mod plugin;
pub mod proto;
pub mod rpc;

pub use plugin::Dhcp;
