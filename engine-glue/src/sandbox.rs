//! A network sandbox: the namespace pinned at `/run/netns/podnet-<short id>` for a
//! container or a pod, and its CNI attachments (eth0, eth1, … one per network, through
//! the runtime side of `cni`, result cache included).
//!
//! The pin path is a function of the id, so a record written before anything was
//! created already names what `rm` must undo. [`setup`] undoes its own work when it
//! fails; [`teardown`] is best effort and succeeds when there is nothing left.

use std::path::{Path, PathBuf};

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{CniArgs, CniResult, NetConfList};
use netkit::{NetNs, Netlink, LOOPBACK_IFINDEX, NETNS_RUN_DIR};
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::network;
use crate::state::{short_id, Attached, NetSandbox};

/// Where the namespace of the container or pod `id` is pinned.
pub fn netns_path(id: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(format!("podnet-{}", short_id(id)))
}

/// Who the attachments are for: the CNI container id and the name the DNS responder
/// serves (`K8S_POD_NAME`, as Podman passes it).
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub name: &'a str,
}

pub fn runtime(config: &Config) -> CniRuntime {
    CniRuntime::new(config.cni_plugin_dirs.clone(), &config.cni_cache_dir)
}

/// The runtime arguments of one attachment, as Podman 4.3 passes them: CNI_ARGS
/// (`IgnoreUnknown`, the `K8S_POD_*` names) and capability args (`portMappings`,
/// `aliases`, and `ips` for static addresses). A conflist whose plugins do not declare
/// the `ips` capability gets static addresses as `CNI_ARGS IP=` instead, which every
/// host-local reads.
fn runtime_conf(
    owner: Owner<'_>,
    net: &NetSandbox,
    index: usize,
    network: &str,
    ips_capability: bool,
) -> RuntimeConf {
    let mut args = vec![
        ("IgnoreUnknown".to_owned(), "1".to_owned()),
        ("K8S_POD_NAMESPACE".to_owned(), owner.name.to_owned()),
        ("K8S_POD_NAME".to_owned(), owner.name.to_owned()),
        ("K8S_POD_INFRA_CONTAINER_ID".to_owned(), owner.id.to_owned()),
    ];
    let mut caps = Map::new();
    // Static addresses and published ports belong to the first network, as Podman's
    // `--ip` does; publishing one host port on two networks would map it twice.
    if index == 0 {
        if !net.static_ips.is_empty() {
            let ips: Vec<String> = net.static_ips.iter().map(ToString::to_string).collect();
            match ips_capability {
                true => drop(caps.insert("ips".into(), json!(ips))),
                false => args.push(("IP".to_owned(), ips.join(","))),
            }
        }
        if !net.ports.is_empty() {
            caps.insert("portMappings".into(), json!(net.ports));
        }
    }
    if !net.aliases.is_empty() {
        caps.insert("aliases".into(), json!({ network: net.aliases }));
    }
    RuntimeConf {
        container_id: owner.id.to_owned(),
        netns: Some(netns_path(owner.id)),
        ifname: ifname(index),
        args: CniArgs::from_pairs(args),
        capability_args: caps,
    }
}

/// Pins a fresh namespace (a stale pin of the same id is replaced), brings loopback up
/// and ADDs every network. On failure it tears down what it did and returns the error.
pub fn setup(config: &Config, owner: Owner<'_>, net: &mut NetSandbox) -> Result<()> {
    let path = netns_path(owner.id);
    let ns_err = |source| Error::Netns {
        path: path.clone(),
        source,
    };
    NetNs::delete_at(&path).map_err(ns_err)?;
    let ns = NetNs::create_at(&path).map_err(ns_err)?;
    net.netns = Some(path.clone());
    net.attachments.clear();
    let result = loopback_up(&ns)
        .map_err(ns_err)
        .and_then(|()| attach_all(config, owner, net));
    if let Err(e) = result {
        let _ = teardown(config, owner, net);
        net.attachments.clear();
        net.netns = None;
        return Err(e);
    }
    Ok(())
}

fn loopback_up(ns: &NetNs) -> netkit::Result<()> {
    netkit::block_on(async { Netlink::open_in(ns)?.link_set_up(LOOPBACK_IFINDEX).await })
}

fn attach_all(config: &Config, owner: Owner<'_>, net: &mut NetSandbox) -> Result<()> {
    let rt = runtime(config);
    for (i, name) in net.networks.clone().iter().enumerate() {
        let (list, _) = network::find(config, name)?;
        let conf = runtime_conf(owner, net, i, name, declares_ips(&list));
        let result = rt.add(&list, &conf).map_err(|source| Error::Cni {
            network: name.clone(),
            source,
        })?;
        net.attachments.push(attached(name, &conf.ifname, &result));
    }
    Ok(())
}

/// The container interface of the `index`-th network.
fn ifname(index: usize) -> String {
    format!("eth{index}")
}

/// Whether a plugin of the list takes static addresses as `runtimeConfig.ips`.
fn declares_ips(list: &NetConfList) -> bool {
    list.plugins
        .iter()
        .any(|p| p.get("capabilities").and_then(|c| c.get("ips")) == Some(&Value::Bool(true)))
}

/// The container side of a CNI result.
fn attached(network: &str, ifname: &str, r: &CniResult) -> Attached {
    let inside = |i: &Option<usize>| {
        i.and_then(|i| r.interfaces.get(i))
            .is_none_or(|iface| iface.sandbox.is_some())
    };
    Attached {
        network: network.to_owned(),
        ifname: ifname.to_owned(),
        ips: r
            .ips
            .iter()
            .filter(|c| inside(&c.interface))
            .map(|c| c.address)
            .collect(),
        mac: r
            .interfaces
            .iter()
            .find(|i| i.sandbox.is_some() && i.name == ifname)
            .and_then(|i| i.mac.clone()),
        gateways: r.ips.iter().filter_map(|c| c.gateway).collect(),
        nameservers: r.dns.nameservers.clone(),
        search: r.dns.search.clone(),
    }
}

/// DELs every network (newest attachment first, the conflist as it was ADDed when the
/// cache has it: a network edited or removed since still cleans up) and unpins the
/// namespace. Every step runs; the failures are returned together.
pub fn teardown(config: &Config, owner: Owner<'_>, net: &NetSandbox) -> Result<()> {
    let rt = runtime(config);
    let mut errors = Vec::new();
    for (i, name) in net.networks.iter().enumerate().rev() {
        let list = match conflist_for_del(config, &rt, owner.id, name, &ifname(i)) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let conf = runtime_conf(owner, net, i, name, declares_ips(&list));
        if let Err(source) = rt.del(&list, &conf) {
            errors.push(Error::Cni {
                network: name.clone(),
                source,
            });
        }
    }
    let path = netns_path(owner.id);
    if let Err(source) = NetNs::delete_at(&path) {
        errors.push(Error::Netns { path, source });
    }
    Error::collect(errors)
}

/// The conflist to DEL with: the cached one, else the current file, else nothing to do
/// (never ADDed, network gone).
fn conflist_for_del(
    config: &Config,
    rt: &CniRuntime,
    container_id: &str,
    name: &str,
    ifname: &str,
) -> Result<Option<NetConfList>> {
    let cached = rt
        .cache
        .read(name, container_id, ifname)
        .ok()
        .flatten()
        .and_then(|c| NetConfList::from_bytes(&c.config).ok());
    if cached.is_some() {
        return Ok(cached);
    }
    match network::find(config, name) {
        Ok((list, _)) => Ok(Some(list)),
        Err(Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The result JSON of each attachment, from the cache (for `inspect`).
pub fn results(config: &Config, owner: Owner<'_>, net: &NetSandbox) -> Value {
    let rt = runtime(config);
    let mut out = Map::new();
    for (i, name) in net.networks.iter().enumerate() {
        let v = rt
            .cache
            .read(name, owner.id, &ifname(i))
            .ok()
            .flatten()
            .and_then(|c| c.result)
            .unwrap_or(Value::Null);
        out.insert(name.clone(), v);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::PortMapping;

    #[test]
    fn podman_args_and_first_network_extras() {
        let net = NetSandbox {
            networks: vec!["web".into(), "db".into()],
            static_ips: vec!["10.89.0.10".parse().unwrap(), "fd00::a".parse().unwrap()],
            ports: vec![PortMapping {
                host_port: 8080,
                container_port: 80,
                protocol: "tcp".into(),
                host_ip: String::new(),
            }],
            aliases: vec!["blog".into()],
            ..NetSandbox::default()
        };
        let owner = Owner {
            id: "0123456789abcdef",
            name: "hugo",
        };
        let first = runtime_conf(owner, &net, 0, "web", true);
        assert_eq!(
            first.args.to_env(),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=hugo;K8S_POD_NAME=hugo;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef"
        );
        assert_eq!(
            first.capability_args["ips"],
            json!(["10.89.0.10", "fd00::a"])
        );
        let legacy = runtime_conf(owner, &net, 0, "web", false);
        assert!(legacy.args.to_env().ends_with(";IP=10.89.0.10,fd00::a"));
        assert!(legacy.capability_args.get("ips").is_none());
        assert_eq!(first.capability_args["portMappings"][0]["hostPort"], 8080);
        assert_eq!(first.capability_args["aliases"], json!({"web": ["blog"]}));
        assert_eq!(
            first.netns.as_deref(),
            Some(Path::new("/run/netns/podnet-0123456789ab"))
        );
        let second = runtime_conf(owner, &net, 1, "db", true);
        assert_eq!(second.ifname, "eth1");
        assert!(second.args.get("IP").is_none() && second.capability_args.get("ips").is_none());
        assert!(second.capability_args.get("portMappings").is_none());
        assert_eq!(second.capability_args["aliases"], json!({"db": ["blog"]}));
    }
}
