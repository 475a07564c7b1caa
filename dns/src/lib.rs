//! podnet's DNS: the per-host responder (on hickory-server) that answers container
//! names per network, and the `dnsname` chained CNI plugin that feeds it.
//!
//! - [`zone`]: the names in memory and every answer decision (pure);
//! - [`store`]: the records on disk, the only I/O of names;
//! - [`answer`]: every answer decision, whatever the transport; [`udp`] (podnet's own
//!   loop) and [`tcp`] (hickory-server's connections) carry the messages; [`forward`]:
//!   upstream resolvers;
//! - [`control`]: the plugin ↔ responder protocol; [`responder`]: the process;
//! - [`plugin`]: the `dnsname` plugin.

#![forbid(unsafe_code)]

pub mod answer;
pub mod control;
pub mod forward;
pub mod plugin;
pub mod responder;
pub mod store;
pub mod tcp;
pub mod udp;
pub mod zone;

pub use plugin::Dnsname;
