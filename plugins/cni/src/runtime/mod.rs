//! The runtime side of CNI, used by engine-glue, netctl and the tests: find and exec
//! plugins, find networks in a config directory, run conflist chains, keep the result
//! cache, GC.

pub mod cache;
pub mod chain;
pub mod discovery;
pub mod exec;

pub use cache::{CachedAttachment, ResultCache, DEFAULT_CACHE_DIR};
pub use chain::{plugin_config, CniRuntime, RuntimeConf};
pub use discovery::{find_network, split_path, DiscoveryError};
pub use exec::{Invocation, PluginExec, DEFAULT_TIMEOUT};
