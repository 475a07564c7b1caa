//! One integration binary for the workspace; each module is a suite.

mod bridge;
mod chain;
mod conformance;
mod containerd;
mod deploy;
mod dns;
mod engine;
mod firewalld;
mod ipam_interop;
mod netavark;
mod netctl;
mod netkit;
mod podman5;
mod runtime;
mod tap;
