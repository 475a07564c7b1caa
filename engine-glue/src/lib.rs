//! engine-glue: a minimal daemonless engine on podnet, library first. Networks are
//! conflists ([`network`]); containers and pods own or share a pinned network namespace
//! attached through the runtime side of `cni` ([`sandbox`]); an OCI runtime runs the
//! process ([`oci`]) under a small per-container [`monitor`]. Records live under the root
//! ([`state`]), guarded by one lock. The `podnet` binary is a thin clap front end.

#![forbid(unsafe_code)]

pub mod config;
pub mod container;
pub mod error;
pub mod files;
pub mod monitor;
pub mod network;
pub mod oci;
pub mod options;
pub mod pod;
pub mod sandbox;
pub mod state;
pub mod systemd;

pub use config::Config;
pub use container::{ContainerView, Status};
pub use error::{Error, Result};
pub use network::{NetworkInfo, NetworkSpec};
pub use options::{CreateOptions, NetOptions, NetworkChoice, PodOptions};
pub use state::{Container, NetMode, Pod};

use std::path::PathBuf;

use crate::state::{find, list, NetSandbox};

/// The engine: a configuration and the operations on it. Cheap to build; holds no
/// state in memory (every command reads the records under the lock).
#[derive(Debug, Clone)]
pub struct Engine {
    pub config: Config,
}

impl Engine {
    pub fn new(config: Config) -> Engine {
        Engine { config }
    }

    /// The pinned network namespace of a container or pod (name, id or id prefix):
    /// what `netctl` targets resolve through.
    pub fn netns_of(&self, key: &str) -> Result<PathBuf> {
        let owner = match find::<Container>(&self.config, key) {
            Ok(c) => match c.net {
                NetMode::Own(_) => c.id,
                NetMode::Container { id } | NetMode::Pod { id } => id,
                NetMode::Host => {
                    return Err(Error::state(
                        format!("container {}", c.name),
                        "uses the host's network namespace",
                    ))
                }
            },
            Err(Error::NotFound { .. }) => {
                find::<Pod>(&self.config, key)
                    .map_err(|_| Error::NotFound {
                        kind: "container or pod",
                        name: key.to_owned(),
                    })?
                    .id
            }
            Err(e) => return Err(e),
        };
        Ok(sandbox::netns_path(&owner))
    }

    /// The networks used by containers and pods, with who uses them.
    fn network_users(&self, network: &str) -> Vec<String> {
        let uses = |n: &NetSandbox| n.networks.iter().any(|x| x == network);
        let containers = list::<Container>(&self.config)
            .into_iter()
            .filter(|c| matches!(&c.net, NetMode::Own(n) if uses(n)))
            .map(|c| format!("container {}", c.name));
        let pods = list::<Pod>(&self.config)
            .into_iter()
            .filter(|p| uses(&p.net))
            .map(|p| format!("pod {}", p.name));
        containers.chain(pods).collect()
    }

    pub fn network_create(&self, spec: NetworkSpec) -> Result<NetworkInfo> {
        let _lock = state::Lock::take(&self.config)?;
        network::create(&self.config, spec)
    }

    pub fn network_list(&self) -> Result<Vec<NetworkInfo>> {
        network::list(&self.config)
    }

    /// The network and who is on it.
    pub fn network_inspect(&self, name: &str) -> Result<(NetworkInfo, Vec<String>)> {
        let (_, info) = network::find(&self.config, name)?;
        Ok((info, self.network_users(name)))
    }

    /// Removes a network nobody uses: conflist, bridge, lease directory.
    pub fn network_remove(&self, name: &str) -> Result<()> {
        let _lock = state::Lock::take(&self.config)?;
        let (_, info) = network::find(&self.config, name)?;
        let users = self.network_users(name);
        if !users.is_empty() {
            return Err(Error::InUse {
                what: format!("network {name}"),
                by: users.join(", "),
            });
        }
        network::remove(&self.config, &info)
    }
}

impl Engine {
    /// `generate systemd`: the unit of a container, `podnet` being at `podnet`.
    pub fn generate_systemd(
        &self,
        key: &str,
        podnet: &std::path::Path,
        stop_timeout: u64,
    ) -> Result<String> {
        let c = find::<Container>(&self.config, key)?;
        let requires = match &c.net {
            NetMode::Container { id } => state::load::<Container>(&self.config, id)
                .ok()
                .map(|o| o.name),
            _ => None,
        };
        Ok(systemd::unit(
            &self.config,
            podnet,
            &c,
            requires.as_deref(),
            stop_timeout,
        ))
    }
}
