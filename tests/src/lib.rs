//! The test harness: throwaway namespaces for privileged tests, plugin invocation, and
//! the subject (the plugin directory) the conformance suite runs against.

#![forbid(unsafe_code)]

pub mod cri;
pub mod dns;
pub mod engine;
pub mod firewalld;
pub mod net;
pub mod plugin;
pub mod sandbox;
pub mod subject;

pub use plugin::{Call, Reply};
pub use sandbox::{find_link, has_link, host_local_leases, link_state, random_name, Sandbox};
pub use subject::{Deviation, Subject};
