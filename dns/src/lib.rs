//! podnet's DNS: the per-host responder (on hickory-server) that answers container
//! names per network, and the `dnsname` chained CNI plugin that feeds it.
//!
//! - [`zone`]: the names in memory and every answer decision (pure);
//! - [`store`]: the records on disk, the only I/O of names;
//! - [`server`]: the answer decisions and hickory's TCP handler; [`udp`]: the UDP
//!   path; [`forward`]: upstream resolvers;
//! - [`control`]: the plugin ↔ responder protocol; [`responder`]: the process;
//! - [`plugin`]: the `dnsname` plugin.

#![forbid(unsafe_code)]

pub mod control;
pub mod forward;
pub mod plugin;
pub mod responder;
pub mod server;
pub mod store;
pub mod udp;
pub mod zone;

pub use plugin::Dnsname;
