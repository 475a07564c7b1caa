//! The `macvlan` plugin: the container's interface is a macvlan of a parent (`master`)
//! interface, so the container sits on the parent's LAN with a MAC of its own.
//!
//! ADD: parse → the parent (`master`, by default the interface of the default route; in
//! the container's namespace with `linkInContainer`) → IPAM started → the macvlan made
//! by one request, born in the container's namespace under its final name (the parent
//! is looked up where the request is sent, the name is checked only where the link is
//! born, so no temporary name is needed) → IPAM collected → addresses, up, routes →
//! result `interfaces = [the container interface]`. Without `ipam` the link is only
//! brought up (L2). A failure removes the link and gives the lease back.

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, Dns, ErrorCode};
use netkit::{attach, Link, MacvlanOptions, NetNs, Netlink};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Macvlan;

/// The reference's keys (1.1.1 and newer: `linkInContainer`, `bcqueuelen`), with its
/// defaults: mode `bridge`, the parent's MTU, a kernel-chosen MAC.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MacvlanConf {
    pub name: String,
    #[serde(default)]
    pub master: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub mtu: i64,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub link_in_container: bool,
    #[serde(default, rename = "bcqueuelen")]
    pub bc_queue_len: u32,
    #[serde(default)]
    pub ipam: Option<cni::config::IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub runtime_config: Option<RuntimeWire>,
}

/// The `mac` capability.
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeWire {
    pub mac: Option<String>,
}

pub const MODES: &[&str] = &["bridge", "private", "vepa", "passthru", "source"];

impl MacvlanConf {
    /// Decoded only: what DEL needs, which must succeed for a config whose ADD never could.
    fn decode(stdin: &[u8]) -> Result<MacvlanConf, CniError> {
        cni::config::decode("network config", stdin)
    }

    /// Decoded and validated, every refusal naming its key (code 7).
    pub fn parse(stdin: &[u8]) -> Result<MacvlanConf, CniError> {
        let mut c = MacvlanConf::decode(stdin)?;
        if c.mode.is_empty() {
            c.mode = "bridge".into();
        }
        if !MODES.contains(&c.mode.as_str()) {
            return Err(CniError::invalid_config(format!(
                "mode: unknown macvlan mode {:?} (one of {})",
                c.mode,
                MODES.join(", ")
            )));
        }
        if c.mtu < 0 || c.mtu > i64::from(u32::MAX) {
            return Err(CniError::invalid_config(format!(
                "mtu: {} is not a valid MTU",
                c.mtu
            )));
        }
        if !c.master.is_empty() && cni::validate::interface_name(&c.master).is_err() {
            return Err(CniError::invalid_config(format!(
                "master: {:?} is not a valid interface name",
                cni::validate::echo(&c.master)
            )));
        }
        if c.ipam.as_ref().is_some_and(|i| i.plugin_type.is_empty()) {
            return Err(CniError::invalid_config("ipam.type is missing"));
        }
        Ok(c)
    }

    /// The container's MAC, as the reference picks it: `runtimeConfig.mac` over
    /// `CNI_ARGS MAC=` over the `mac` key.
    pub fn container_mac(&self, args: &CmdArgs) -> Result<Option<[u8; 6]>, CniError> {
        let rt = self.runtime_config.as_ref().and_then(|r| r.mac.as_deref());
        attach::chosen_mac(args, rt, &self.mac)
    }

    fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref().map(|i| i.plugin_type.as_str())
    }

    fn mtu(&self) -> Option<u32> {
        u32::try_from(self.mtu).ok().filter(|m| *m != 0)
    }
}

/// The parent link: `master`, or the default route's interface, in the namespace
/// `nl` is bound to; `where_` names that namespace in errors. A missing parent is a
/// configuration the host cannot serve (code 7, naming `master`).
pub async fn parent(nl: &Netlink, conf: &MacvlanConf, where_: &str) -> Result<Link, CniError> {
    if conf.master.is_empty() {
        return nl.default_route_link().await?.ok_or_else(|| {
            CniError::invalid_config(format!(
                "master: not given, and {where_} has no default route to take it from"
            ))
        });
    }
    nl.link_get(&conf.master).await?.ok_or_else(|| {
        CniError::invalid_config(format!(
            "master: no interface {:?} in {where_}",
            conf.master
        ))
    })
}

fn where_(conf: &MacvlanConf) -> &'static str {
    if conf.link_in_container {
        "the container's namespace (linkInContainer)"
    } else {
        "the host"
    }
}

struct Ctx<'a> {
    args: &'a CmdArgs,
    conf: &'a MacvlanConf,
    ns: &'a NetNs,
    host: Netlink,
    ctr: Netlink,
}

impl Ctx<'_> {
    /// The socket bound where the parent lives.
    fn parent_nl(&self) -> &Netlink {
        if self.conf.link_in_container {
            &self.ctr
        } else {
            &self.host
        }
    }
}

impl Plugin for Macvlan {
    fn about(&self) -> &'static str {
        concat!("podnet macvlan plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = MacvlanConf::parse(&args.stdin)?;
        let mac = conf.container_mac(args)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let cx = Ctx {
                args,
                conf: &conf,
                ns: &ns,
                host: Netlink::open_current()?,
                ctr: Netlink::open_in(&ns)?,
            };
            attach::ensure_ifname_free(&cx.ctr, args, &ns).await?;
            let master = parent(cx.parent_nl(), &conf, where_(&conf)).await?;
            if let Some(mtu) = conf.mtu().filter(|m| *m > master.mtu) {
                return Err(CniError::invalid_config(format!(
                    "mtu: {mtu} is above the MTU {} of master {:?}",
                    master.mtu, master.name
                )));
            }
            let pending = match conf.ipam_type() {
                Some(t) => Some(delegate::start(t, Command::Add, args)?),
                None => None,
            };
            let link = make_link(&cx, &master, mac).await;
            let ipam = pending.map(delegate::Pending::result).transpose();
            let outcome = match (link, ipam) {
                (Ok(c), Ok(ipam)) => {
                    let ipam = ipam.map(|r| (conf.ipam_type().unwrap_or_default(), r));
                    attach::finish_container_link(&cx.ctr, &ns, &c, &args.ifname, ipam, &conf.dns)
                        .await
                }
                (Err(e), _) | (_, Err(e)) => Err(e),
            };
            if outcome.is_err() {
                attach::undo_container_link(&cx.ctr, args, "macvlan", conf.ipam_type()).await;
            }
            outcome
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = MacvlanConf::decode(&args.stdin)?;
        attach::del_container_link(args, "macvlan", conf.ipam_type())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = MacvlanConf::parse(&args.stdin)?;
        if let Some(t) = conf.ipam_type() {
            delegate::check(t, args)?;
        }
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(check_kernel(args, &conf, &ns, prev))
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = MacvlanConf::parse(&args.stdin)?;
        // Unlike the reference, STATUS tells whether ADD can work: the parent (when it is
        // on the host) must exist.
        if !conf.link_in_container {
            netkit::block_on(async {
                let host = Netlink::open_current()?;
                parent(&host, &conf, "the host").await.map(drop)
            })
            .map_err(|e| CniError {
                code: ErrorCode::PLUGIN_NOT_AVAILABLE,
                ..e
            })?;
        }
        delegate::forward(conf.ipam.as_ref(), Command::Status, &args.path, &args.stdin)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = MacvlanConf::parse(&args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Gc, &args.path, &args.stdin)
    }
}

async fn make_link(cx: &Ctx<'_>, master: &Link, mac: Option<[u8; 6]>) -> Result<Link, CniError> {
    let opts = MacvlanOptions {
        mode: &cx.conf.mode,
        mtu: cx.conf.mtu(),
        mac,
        bc_queue_len: (cx.conf.bc_queue_len != 0).then_some(cx.conf.bc_queue_len),
        netns: (!cx.conf.link_in_container).then_some(cx.ns),
    };
    cx.parent_nl()
        .link_add_macvlan(&cx.args.ifname, master.index, &opts)
        .await
        .map_err(|e| {
            let e = CniError::from(e);
            CniError {
                msg: format!(
                    "creating macvlan {:?} on {:?}: {}",
                    cx.args.ifname, master.name, e.msg
                ),
                ..e
            }
        })?;
    Ok(cx.ctr.link_require(&cx.args.ifname).await?)
}

async fn check_kernel(
    args: &CmdArgs,
    conf: &MacvlanConf,
    ns: &NetNs,
    prev: &CniResult,
) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let ctr = Netlink::open_in(ns)?;
    let (ours, c) = attach::check_container_link(&ctr, args, ns, prev, "macvlan").await?;
    let parent_nl = if conf.link_in_container {
        ctr.clone()
    } else {
        Netlink::open_current()?
    };
    parent(&parent_nl, conf, where_(conf))
        .await
        .map_err(|e| failed(e.msg))?;
    if c.mode.as_deref() != Some(conf.mode.as_str()) {
        return Err(failed(format!(
            "macvlan {:?} is in mode {}, the config says {}",
            args.ifname,
            c.mode.as_deref().unwrap_or("unknown"),
            conf.mode
        )));
    }
    let ips = prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|i| i == ours));
    attach::check_addresses(&ctr, c.index, &args.ifname, ips).await?;
    attach::check_routes(&ctr, &prev.routes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: serde_json::Value) -> Result<MacvlanConf, CniError> {
        MacvlanConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let c = conf(serde_json::json!({"name": "n", "type": "macvlan"})).unwrap();
        assert_eq!(
            (c.mode.as_str(), c.master.as_str(), c.mtu()),
            ("bridge", "", None)
        );
        for (v, key) in [
            (serde_json::json!({"name": "n", "mode": "l2"}), "mode:"),
            (serde_json::json!({"name": "n", "mtu": -1}), "mtu:"),
            (serde_json::json!({"name": "n", "master": "a/b"}), "master:"),
            (serde_json::json!({"name": "n", "ipam": {}}), "ipam.type"),
        ] {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG, "{v}");
            assert!(e.msg.contains(key), "{v}: {}", e.msg);
        }
        for m in MODES {
            assert!(netkit::macvlan_mode(m).is_some(), "{m}");
        }
    }
}
