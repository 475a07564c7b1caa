//! The CNI contract, both sides: config and result types for every spec version
//! (0.1.0 to 1.1.0) and the conversions between them, error codes, the plugin
//! skeleton, and the runtime side (exec, conflist chains, result cache, GC).

#![forbid(unsafe_code)]

pub mod args;
pub mod config;
pub mod delegate;
pub mod error;
pub mod gojson;
pub mod result;
pub mod runtime;
pub mod skel;
pub mod validate;
pub mod version;

pub use args::CniArgs;
pub use config::{NetConf, NetConfList};
pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{Attachment, CmdArgs, GcArgs, Plugin, StatusArgs};
pub use version::CniVersion;
