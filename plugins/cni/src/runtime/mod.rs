//! The runtime side of CNI, used by engine-glue, netctl and the tests: find and exec
//! plugins, run conflist chains, keep the result cache, GC.

pub mod cache;
pub mod chain;
pub mod exec;

pub use cache::{CachedAttachment, ResultCache, DEFAULT_CACHE_DIR};
pub use chain::{plugin_config, CniRuntime, RuntimeConf};
pub use exec::{Invocation, PluginExec, DEFAULT_TIMEOUT};
