//! The CNI conformance suite. It drives plugin binaries of a directory through env and
//! stdin only: `PODNET_PLUGIN_DIR=/usr/lib/cni` runs it against the reference plugins.
//!
//! `protocol` checks every known plugin present in the directory on the paths that fail
//! before any kernel state is touched; `loopback` checks the full lifecycle.

mod bandwidth;
mod bridge;
mod casing;
mod dhcp;
mod host_device;
mod host_local;
mod ipvlan;
mod localhost;
mod loopback;
mod macvlan;
mod podman_chain;
mod protocol;
mod ptp;
mod sbr;
mod static_ipam;
mod tuning;
mod vlan;
mod vrf;
