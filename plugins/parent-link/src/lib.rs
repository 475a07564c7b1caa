//! The plugins whose container interface is a link made on a parent (`master`)
//! interface, which puts the container on the parent's LAN:
//! - `macvlan`: a MAC of its own (modes bridge, private, vepa, passthru, source);
//! - `ipvlan`: the parent's MAC, addresses of its own (modes l2, l3, l3s);
//! - `vlan`: an 802.1Q sub-interface, its frames tagged with `vlanId` on the parent.
//!
//! ADD: parse → the parent (`master`; for macvlan and ipvlan by default the interface
//! of the default route, for a chained ipvlan the previous result's interface; in the
//! container's namespace with `linkInContainer`) → IPAM started → the link made by one
//! request, born in the container's namespace under its final name (the parent is
//! looked up where the request is sent, the name is checked only where the link is
//! born, so no temporary name is needed) → IPAM collected → addresses, up, routes →
//! result `interfaces = [the container interface]`. A macvlan without `ipam` is only
//! brought up (L2). A failure removes the link and gives the lease back.

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, Dns, ErrorCode};
use netkit::{attach, Link, MacvlanOptions, NetNs, Netlink, SubLink};
use serde::Deserialize;

/// Which of the three plugins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Macvlan,
    Ipvlan,
    Vlan,
}

impl Kind {
    /// The plugin's type, also the kernel's link kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Macvlan => "macvlan",
            Kind::Ipvlan => "ipvlan",
            Kind::Vlan => "vlan",
        }
    }

    /// The modes `mode` takes, the first the default (none for vlan).
    pub fn modes(self) -> &'static [&'static str] {
        match self {
            Kind::Macvlan => MACVLAN_MODES,
            Kind::Ipvlan => IPVLAN_MODES,
            Kind::Vlan => &[],
        }
    }
}

pub const MACVLAN_MODES: &[&str] = &["bridge", "private", "vepa", "passthru", "source"];
pub const IPVLAN_MODES: &[&str] = &["l2", "l3", "l3s"];

/// One of the plugins.
#[derive(Debug, Clone, Copy)]
pub struct ParentLink(pub Kind);

/// The reference's keys of the three (1.1.1 and newer: `linkInContainer`,
/// `bcqueuelen`); a key another kind has is ignored, as Go's decoding ignores it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conf {
    pub name: String,
    #[serde(default)]
    pub master: String,
    #[serde(default)]
    pub mode: String,
    #[serde(default)]
    pub mtu: i64,
    /// macvlan.
    #[serde(default)]
    pub mac: String,
    /// vlan.
    #[serde(default)]
    pub vlan_id: i64,
    #[serde(default)]
    pub link_in_container: bool,
    /// macvlan.
    #[serde(default, rename = "bcqueuelen")]
    pub bc_queue_len: u32,
    #[serde(default)]
    pub ipam: Option<cni::config::IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub runtime_config: Option<RuntimeWire>,
}

/// The `mac` capability (macvlan).
#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeWire {
    pub mac: Option<String>,
}

impl Conf {
    /// Decoded only: what DEL needs, which must succeed for a config whose ADD never could.
    fn decode(stdin: &[u8]) -> Result<Conf, CniError> {
        cni::config::decode("network config", stdin)
    }

    /// Decoded and validated for `kind`, every refusal naming its key (code 7).
    pub fn parse(kind: Kind, stdin: &[u8]) -> Result<Conf, CniError> {
        let mut c = Conf::decode(stdin)?;
        let modes = kind.modes();
        if kind == Kind::Vlan {
            c.mode.clear();
            if c.master.is_empty() {
                return Err(CniError::invalid_config(
                    "master: required, the interface to make the VLAN on",
                ));
            }
            if !(0..=4094).contains(&c.vlan_id) {
                return Err(CniError::invalid_config(format!(
                    "vlanId: {} is not a VLAN id (0 to 4094)",
                    c.vlan_id
                )));
            }
        } else {
            if c.mode.is_empty() {
                c.mode = modes[0].into();
            }
            if !modes.contains(&c.mode.as_str()) {
                return Err(CniError::invalid_config(format!(
                    "mode: unknown {} mode {:?} (one of {})",
                    kind.name(),
                    c.mode,
                    modes.join(", ")
                )));
            }
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

    /// The container's MAC (macvlan), as the reference picks it: `runtimeConfig.mac`
    /// over `CNI_ARGS MAC=` over the `mac` key.
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

    fn where_(&self) -> &'static str {
        if self.link_in_container {
            "the container's namespace (linkInContainer)"
        } else {
            "the host"
        }
    }
}

/// The parent link: `master`, or the default route's interface, in the namespace
/// `nl` is bound to; `where_` names that namespace in errors. A missing parent is a
/// configuration the host cannot serve (code 7, naming `master`).
pub async fn parent(nl: &Netlink, conf: &Conf, where_: &str) -> Result<Link, CniError> {
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

/// A chained ipvlan (no `ipam`, a `prevResult` with addresses): those addresses, and,
/// without `master`, the previous result's one interface as the parent, as the
/// reference.
fn chained(kind: Kind, conf: &mut Conf, args: &CmdArgs) -> Result<Option<CniResult>, CniError> {
    if kind != Kind::Ipvlan || conf.ipam.is_some() {
        return Ok(None);
    }
    let Some(prev) = args.prev_result.clone().filter(|p| !p.ips.is_empty()) else {
        return Ok(None);
    };
    if conf.master.is_empty() {
        match prev.interfaces.as_slice() {
            [one] if !one.name.is_empty() => conf.master = one.name.clone(),
            _ => return Err(CniError::invalid_config(
                "master: not given, and prevResult has no single named interface to take it from",
            )),
        }
    }
    Ok(Some(CniResult {
        interfaces: Vec::new(),
        ..prev
    }))
}

struct Ctx<'a> {
    kind: Kind,
    args: &'a CmdArgs,
    conf: &'a Conf,
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

impl Plugin for ParentLink {
    fn about(&self) -> &'static str {
        match self.0 {
            Kind::Macvlan => concat!("podnet macvlan plugin v", env!("CARGO_PKG_VERSION")),
            Kind::Ipvlan => concat!("podnet ipvlan plugin v", env!("CARGO_PKG_VERSION")),
            Kind::Vlan => concat!("podnet vlan plugin v", env!("CARGO_PKG_VERSION")),
        }
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let kind = self.0;
        let mut conf = Conf::parse(kind, &args.stdin)?;
        let prev = chained(kind, &mut conf, args)?;
        if kind != Kind::Macvlan && conf.ipam.is_none() && prev.is_none() {
            return Err(CniError::invalid_config(format!(
                "ipam: {} needs an IPAM plugin{}",
                kind.name(),
                if kind == Kind::Ipvlan {
                    " (or, chained, a prevResult with addresses)"
                } else {
                    ""
                }
            )));
        }
        let mac = match kind {
            Kind::Macvlan => conf.container_mac(args)?,
            _ => None,
        };
        let ns = attach::open_netns(args)?;
        let conf = &conf;
        netkit::block_on(async {
            let cx = Ctx {
                kind,
                args,
                conf,
                ns: &ns,
                host: Netlink::open_current()?,
                ctr: Netlink::open_in(&ns)?,
            };
            attach::ensure_ifname_free(&cx.ctr, args, &ns).await?;
            let master = parent(cx.parent_nl(), conf, conf.where_()).await?;
            if let Some(mtu) = conf.mtu().filter(|m| *m > master.mtu) {
                return Err(CniError::invalid_config(format!(
                    "mtu: {mtu} is above the MTU {} of master {:?}",
                    master.mtu, master.name
                )));
            }
            let make = make_link(&cx, &master, mac);
            attach::add_container_link(
                &cx.ctr,
                args,
                &ns,
                kind.name(),
                conf.ipam_type(),
                prev,
                &conf.dns,
                make,
            )
            .await
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = Conf::decode(&args.stdin)?;
        attach::del_container_link(args, self.0.name(), conf.ipam_type())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = Conf::parse(self.0, &args.stdin)?;
        if let Some(t) = conf.ipam_type() {
            delegate::check(t, args)?;
        }
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(check_kernel(self.0, args, &conf, &ns, prev))
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = Conf::parse(self.0, &args.stdin)?;
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
        let conf = Conf::parse(self.0, &args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Gc, &args.path, &args.stdin)
    }
}

async fn make_link(cx: &Ctx<'_>, master: &Link, mac: Option<[u8; 6]>) -> Result<Link, CniError> {
    let netns = (!cx.conf.link_in_container).then_some(cx.ns);
    let name = &cx.args.ifname;
    let made = match cx.kind {
        Kind::Macvlan => {
            let opts = MacvlanOptions {
                mode: &cx.conf.mode,
                mtu: cx.conf.mtu(),
                mac,
                bc_queue_len: (cx.conf.bc_queue_len != 0).then_some(cx.conf.bc_queue_len),
                netns,
            };
            cx.parent_nl()
                .link_add_macvlan(name, master.index, &opts)
                .await
        }
        Kind::Ipvlan => {
            let kind = SubLink::Ipvlan {
                mode: &cx.conf.mode,
            };
            cx.parent_nl()
                .link_add_sub(name, master.index, kind, cx.conf.mtu(), netns)
                .await
        }
        Kind::Vlan => {
            let id = u16::try_from(cx.conf.vlan_id).expect("vlanId checked by parse");
            cx.parent_nl()
                .link_add_sub(
                    name,
                    master.index,
                    SubLink::Vlan { id },
                    cx.conf.mtu(),
                    netns,
                )
                .await
        }
    };
    made.map_err(|e| {
        let e = CniError::from(e);
        CniError {
            msg: format!(
                "creating {} {name:?} on {:?}: {}",
                cx.kind.name(),
                master.name,
                e.msg
            ),
            ..e
        }
    })?;
    Ok(cx.ctr.link_require(name).await?)
}

async fn check_kernel(
    kind: Kind,
    args: &CmdArgs,
    conf: &Conf,
    ns: &NetNs,
    prev: &CniResult,
) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let ctr = Netlink::open_in(ns)?;
    let (ours, c) = attach::check_container_link(&ctr, args, ns, prev, kind.name()).await?;
    // A chained ipvlan without `master` took the previous plugin's interface, which its
    // own result no longer names: its parent is not checked.
    let chained = kind == Kind::Ipvlan && conf.ipam.is_none() && conf.master.is_empty();
    if !chained {
        let parent_nl = if conf.link_in_container {
            ctr.clone()
        } else {
            Netlink::open_current()?
        };
        parent(&parent_nl, conf, conf.where_())
            .await
            .map_err(|e| failed(e.msg))?;
    }
    if kind == Kind::Vlan {
        let want = u16::try_from(conf.vlan_id).ok();
        if c.vlan_id != want {
            return Err(failed(format!(
                "vlan {:?} has id {:?}, the config says {}",
                args.ifname, c.vlan_id, conf.vlan_id
            )));
        }
    } else if c.mode.as_deref() != Some(conf.mode.as_str()) {
        return Err(failed(format!(
            "{} {:?} is in mode {}, the config says {}",
            kind.name(),
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
    attach::check_routes(&ctr, &prev.routes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(kind: Kind, v: serde_json::Value) -> Result<Conf, CniError> {
        Conf::parse(kind, v.to_string().as_bytes())
    }

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let c = conf(
            Kind::Macvlan,
            serde_json::json!({"name": "n", "type": "macvlan"}),
        )
        .unwrap();
        assert_eq!(
            (c.mode.as_str(), c.master.as_str(), c.mtu()),
            ("bridge", "", None)
        );
        let c = conf(Kind::Ipvlan, serde_json::json!({"name": "n"})).unwrap();
        assert_eq!(c.mode, "l2");
        for (kind, v, key) in [
            (
                Kind::Macvlan,
                serde_json::json!({"name": "n", "mode": "l2"}),
                "mode:",
            ),
            (
                Kind::Ipvlan,
                serde_json::json!({"name": "n", "mode": "bridge"}),
                "mode:",
            ),
            (
                Kind::Macvlan,
                serde_json::json!({"name": "n", "mtu": -1}),
                "mtu:",
            ),
            (
                Kind::Macvlan,
                serde_json::json!({"name": "n", "master": "a/b"}),
                "master:",
            ),
            (
                Kind::Macvlan,
                serde_json::json!({"name": "n", "ipam": {}}),
                "ipam.type",
            ),
            (
                Kind::Vlan,
                serde_json::json!({"name": "n", "vlanId": 5}),
                "master:",
            ),
            (
                Kind::Vlan,
                serde_json::json!({"name": "n", "master": "eth0", "vlanId": 4095}),
                "vlanId:",
            ),
            (
                Kind::Vlan,
                serde_json::json!({"name": "n", "master": "eth0", "vlanId": -1}),
                "vlanId:",
            ),
        ] {
            let e = conf(kind, v.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG, "{v}");
            assert!(e.msg.contains(key), "{v}: {}", e.msg);
        }
        for m in MACVLAN_MODES {
            assert!(netkit::macvlan_mode(m).is_some(), "{m}");
        }
        for m in IPVLAN_MODES {
            assert!(netkit::ipvlan_mode(m).is_some(), "{m}");
        }
    }
}
