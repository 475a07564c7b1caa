//! podnet as Podman 5's network backend: the `netavark` command line and JSON contract
//! (recorded from Podman 5.4 in the project's shared netavark-contract) answered with
//! podnet's own plugins, nft tables and DNS responder.
//!
//! `setup` turns each network of Podman's document into a conflist of podnet's plugins
//! ([`chain`]) and runs it through `cni::runtime` (exec, result cache); `teardown` runs
//! the same chains' DEL with the cached results. Podman has done the IPAM, so nothing
//! here allocates. Rootless Podman calls this as uid 0 of its user namespace inside its
//! rootless-netns: every piece of state then lives under the `--config` directory
//! (`PODNET_RUN_DIR` for the plugins), never in the host's /run.

pub mod chain;
pub mod create;
pub mod types;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{CniArgs, CniError, NetConfList};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use types::{NetAddress, NetInterface, NetworkOptions, StatusBlock};

/// The version of the netavark contract this backend answers.
pub const CONTRACT_VERSION: &str = "1.14.0";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input at fault, the field named.
    #[error("{0}")]
    Invalid(String),
    /// A valid request podnet's backend does not carry out.
    #[error("{0}")]
    Unsupported(String),
    #[error("network {network}: {source}")]
    Cni {
        network: String,
        #[source]
        source: CniError,
    },
    #[error("{0}")]
    Io(String),
    /// Every failure of a teardown, or of a setup and the teardown that undid it.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
}

impl Error {
    /// The message with every source, as Podman shows it after `netavark: `.
    pub fn message(&self) -> String {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            // A source the message already quotes (`Cni` shows its own) is not repeated.
            let text = s.to_string();
            if !msg.ends_with(&text) {
                msg.push_str(": ");
                msg.push_str(&text);
            }
            src = s.source();
        }
        msg
    }
}

/// The global flags and variables of one call.
#[derive(Debug, Clone)]
pub struct Backend {
    /// `--config`: Podman's network run directory (aardvark's config lives below it
    /// for netavark; podnet keeps its result cache there and, rootless, all its state).
    pub config: PathBuf,
    pub rootless: bool,
    /// `--plugin-directory` and the directories the plugins are searched in after it.
    pub plugin_path: Vec<PathBuf>,
    /// `--firewall-driver` / `NETAVARK_FW` is `none`.
    pub no_firewall: bool,
    /// `NETAVARK_DNS_PORT` (containers.conf `dns_bind_port`): the port the responder
    /// listens on, the gateway's port 53 redirected to it.
    pub dns_port: u16,
}

impl Backend {
    /// The directories podnet's plugins are searched in: `--plugin-directory`, this
    /// binary's own directory (`make install` puts both there), then /opt/cni/bin.
    pub fn plugin_path(extra: &[PathBuf]) -> Vec<PathBuf> {
        let mut path: Vec<PathBuf> = extra.to_vec();
        if let Some(dir) = std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(Path::to_path_buf))
        {
            path.push(dir);
        }
        path.push("/usr/local/libexec/podnet".into());
        path.push("/opt/cni/bin".into());
        path
    }

    /// The rootless run directory every plugin is pointed at (`PODNET_RUN_DIR`).
    pub fn run_dir(&self) -> Option<PathBuf> {
        self.rootless.then(|| self.config.join("podnet"))
    }

    fn runtime(&self) -> CniRuntime {
        CniRuntime::new(self.plugin_path.clone(), self.config.join("podnet-cache"))
    }

    /// Makes the state directories and points this process's plugins at them.
    pub fn prepare(&self) -> Result<(), Error> {
        if let Some(dir) = self.run_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::Io(format!("creating {}: {e}", dir.display())))?;
            // Read by the plugins this process executes (and by netkit in this one).
            std::env::set_var(netkit::RUN_DIR_ENV, &dir);
        }
        Ok(())
    }

    /// `setup NETNS`: every network attached; on failure every network is torn down
    /// again and the error returned.
    pub fn setup(
        &self,
        netns: &Path,
        opts: &NetworkOptions,
    ) -> Result<BTreeMap<String, StatusBlock>, Error> {
        let plans = self.plans(netns, opts)?;
        let rt = self.runtime();
        // Shared: parallel setups run together, a teardown's bridge removal waits.
        let _bridges = self.bridge_lock(FlockArg::LockShared)?;
        loopback_up(netns)?;
        let mut out = BTreeMap::new();
        for (i, plan) in plans.iter().enumerate() {
            match rt.add(&plan.list, &plan.conf) {
                Ok(result) => {
                    out.insert(plan.network.clone(), status(plan, &result));
                }
                Err(source) => {
                    let mut errors = vec![Error::Cni {
                        network: plan.network.clone(),
                        source,
                    }];
                    for p in plans[..=i].iter().rev() {
                        if let Err(e) = del(&rt, p) {
                            errors.push(e);
                        }
                    }
                    return Err(one(errors));
                }
            }
        }
        Ok(out)
    }

    /// `teardown NETNS`: every network's chain DELed (with its cached result), every
    /// failure reported together; nothing left to undo is success.
    pub fn teardown(&self, netns: &Path, opts: &NetworkOptions) -> Result<(), Error> {
        let plans = self.plans(netns, opts)?;
        let rt = self.runtime();
        let mut errors: Vec<Error> = plans
            .iter()
            .rev()
            .filter_map(|p| del(&rt, p).err())
            .collect();
        if errors.is_empty() {
            for p in &plans {
                if let Err(e) = self.remove_bridge_if_unused(p) {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(one(errors))
        }
    }

    fn plans(&self, netns: &Path, opts: &NetworkOptions) -> Result<Vec<Plan>, Error> {
        if opts.networks.is_empty() {
            return Err(Error::Invalid("networks: no network to set up".into()));
        }
        let ports = opts.port_mappings.as_deref().unwrap_or_default();
        let dns_servers = opts.dns_servers.as_deref().unwrap_or_default();
        let mut args = Vec::new();
        if !opts.container_name.is_empty() {
            args.push(("K8S_POD_NAME".to_string(), opts.container_name.clone()));
        }
        opts.networks
            .iter()
            .map(|n| {
                let net = opts.network_info.get(&n.name).ok_or_else(|| {
                    Error::Invalid(format!("network_info: no entry for network {:?}", n.name))
                })?;
                if net.name != n.name {
                    return Err(Error::Invalid(format!(
                        "network_info.{}.name: {:?} differs from its key",
                        n.name, net.name
                    )));
                }
                let (list, capability_args) = chain::conflist(
                    net,
                    chain::Wiring {
                        opts: &n.opts,
                        ports,
                        dns_servers,
                        no_firewall: self.no_firewall,
                        dns_port: self.dns_port,
                    },
                )?;
                let bytes = serde_json::to_vec(&list).expect("JSON values encode");
                let list = NetConfList::from_bytes(&bytes).map_err(|source| Error::Cni {
                    network: n.name.clone(),
                    source,
                })?;
                // Only a bridge network's own bridge is the backend's to remove.
                let managed =
                    net.driver == "bridge" && !matches!(net.option("mode"), Some("unmanaged"));
                Ok(Plan {
                    network: n.name.clone(),
                    bridge: net.network_interface.clone().filter(|_| managed),
                    list,
                    conf: RuntimeConf {
                        container_id: opts.container_id.clone(),
                        netns: Some(netns.to_path_buf()),
                        ifname: n.opts.interface_name.clone(),
                        args: CniArgs::from_pairs(args.clone()),
                        capability_args,
                    },
                })
            })
            .collect()
    }

    fn bridge_lock(&self, how: FlockArg) -> Result<Flock<std::fs::File>, Error> {
        let path = self.config.join("podnet-bridges.lock");
        let io = |e: &dyn std::fmt::Display| Error::Io(format!("locking {}: {e}", path.display()));
        std::fs::create_dir_all(&self.config).map_err(|e| io(&e))?;
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(&e))?;
        Flock::lock(f, how).map_err(|(_, e)| io(&e))
    }

    /// As netavark does, a managed network's bridge goes with its last container (the
    /// bridge plugin, like the reference's, leaves it).
    fn remove_bridge_if_unused(&self, p: &Plan) -> Result<(), Error> {
        let Some(name) = p.bridge.as_deref() else {
            return Ok(());
        };
        let _bridges = self.bridge_lock(FlockArg::LockExclusive)?;
        let io = |e: netkit::Error| Error::Io(format!("removing bridge {name}: {e}"));
        let unused = netkit::block_on(async {
            let links = netkit::Netlink::open_current()?.link_list().await?;
            let bridge = links
                .iter()
                .find(|l| l.name == name && l.kind.as_deref() == Some("bridge"))
                .map(|b| b.index);
            Ok::<_, netkit::Error>(bridge.filter(|b| !links.iter().any(|l| l.master == Some(*b))))
        })
        .map_err(io)?;
        let Some(index) = unused else {
            return Ok(());
        };
        // Unregistered, without waiting in the kernel's memory clean-up.
        match netkit::NetNs::current()
            .and_then(|ns| netkit::unlink::link_del_unwaited(&ns, index, None))
        {
            Err(e) if e.errno() == Some(netkit::Errno::ENODEV) => Ok(()),
            r => r.map_err(io),
        }
    }

    /// `update NAME --network-dns-servers …`: the network's upstreams, for the chains
    /// of its next setups and for the running responder.
    pub fn update(&self, network: &str, servers: &[String]) -> Result<(), Error> {
        let mut ips = Vec::new();
        for s in servers
            .iter()
            .flat_map(|s| s.split(','))
            .filter(|s| !s.is_empty())
        {
            ips.push(s.parse::<std::net::IpAddr>().map_err(|_| {
                Error::Invalid(format!("--network-dns-servers: {s:?} is not an IP address"))
            })?);
        }
        let io =
            |e: &dyn std::fmt::Display| Error::Io(format!("updating network {network:?}: {e}"));
        let store = dns::store::Store::default();
        let _lock = store.lock().map_err(|e| io(&e))?;
        // A network without a running container has no record: its next setup brings
        // the servers from Podman's network file, which `podman network update` wrote.
        let Some(mut conf) = store.network(network).map_err(|e| io(&e))? else {
            return Ok(());
        };
        conf.upstreams = ips;
        store.put_network(&conf).map_err(|e| io(&e))?;
        let req = dns::control::Request::Sync {
            network: network.to_owned(),
        };
        match dns::control::call(
            &store.socket_path(),
            &req,
            std::time::Duration::from_secs(10),
        ) {
            Ok(reply) => match reply.error {
                Some(e) => Err(io(&e)),
                None => Ok(()),
            },
            Err(e) => Err(io(&e)),
        }
    }

    /// `firewalld-reload` / `firewall-reload`: every journal's elements and podnet's
    /// tables put back (podnet's watcher does this by itself on every table flush; the
    /// command is for a caller that asks).
    pub fn reload(&self) -> Result<(), Error> {
        netkit::nft::restore()
            .map(|_| ())
            .map_err(|e| Error::Io(format!("restoring podnet's nft tables: {e}")))
    }
}

/// One network of a call: its chain and runtime arguments.
#[derive(Debug)]
struct Plan {
    network: String,
    /// The bridge this backend manages (none for `mode=unmanaged`).
    bridge: Option<String>,
    list: NetConfList,
    conf: RuntimeConf,
}

/// `lo` up in the container's namespace, as netavark does (Podman 5 sends no loopback
/// plugin): a sidecar reaches its partner on 127.0.0.1.
fn loopback_up(netns: &Path) -> Result<(), Error> {
    let io = |e: netkit::Error| Error::Io(format!("{}: lo up: {e}", netns.display()));
    let ns = netkit::NetNs::open(netns).map_err(io)?;
    netkit::block_on(async {
        netkit::Netlink::open_in(&ns)?
            .link_set_up(netkit::LOOPBACK_IFINDEX)
            .await
    })
    .map_err(io)
}

fn del(rt: &CniRuntime, p: &Plan) -> Result<(), Error> {
    rt.del(&p.list, &p.conf).map_err(|source| Error::Cni {
        network: p.network.clone(),
        source,
    })
}

fn one(mut errors: Vec<Error>) -> Error {
    if errors.len() == 1 {
        errors.remove(0)
    } else {
        Error::Many(errors)
    }
}

/// setup's answer for one network, from the chain's result.
fn status(plan: &Plan, r: &cni::CniResult) -> StatusBlock {
    let ifname = &plan.conf.ifname;
    let index = r
        .interfaces
        .iter()
        .position(|i| i.sandbox.is_some() && &i.name == ifname);
    let subnets = r
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == index)
        .map(|ip| NetAddress {
            gateway: ip.gateway,
            ipnet: ip.address,
        })
        .collect();
    let mac = index
        .and_then(|i| r.interfaces[i].mac.clone())
        .unwrap_or_default();
    let mut interfaces = BTreeMap::new();
    interfaces.insert(
        ifname.clone(),
        NetInterface {
            mac_address: mac,
            subnets,
        },
    );
    let dns = !r.dns.nameservers.is_empty();
    StatusBlock {
        dns_search_domains: if dns {
            r.dns.search.clone()
        } else {
            Vec::new()
        },
        dns_server_ips: r
            .dns
            .nameservers
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect(),
        interfaces,
    }
}

/// Decodes JSON of any type, naming the field at fault.
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Error> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de)
        .map_err(|e| Error::Invalid(format!("{what}: {}: {}", e.path(), e.inner())))
}

/// The JSON of an error as Podman decodes it.
pub fn error_json(e: &Error) -> Value {
    serde_json::json!({ "error": e.message() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugins_error_is_quoted_once() {
        let e = Error::Cni {
            network: "blog".into(),
            source: CniError::invalid_config("vrf: no VRF named \"x\""),
        };
        let m = error_json(&e)["error"].as_str().unwrap().to_owned();
        assert_eq!(m.matches("no VRF named").count(), 1, "{m}");
        assert!(m.starts_with("network blog: "), "{m}");
    }
}
