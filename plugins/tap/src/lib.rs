//! The `tap` plugin: the container's interface is a persistent tap device, which a VM
//! runtime in the pod (Kata, KubeVirt, Firecracker) opens as its NIC.
//!
//! ADD: parse → IPAM started → the tap made in the container's namespace under its
//! final name (`TUNSETIFF` on `/dev/net/tun` opened there; with `selinuxContext`, by a
//! helper process running in that label, as the tap's label is its creator's) → MTU,
//! MAC, a port of `bridge` (in the container) → IPAM collected → addresses, up, routes
//! → result `interfaces = [the tap]`. Without `ipam` the tap is only brought up (L2). A
//! failure removes the tap and gives the lease back.

#![forbid(unsafe_code)]

use std::path::Path;

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, Dns, ErrorCode};
use netkit::{attach, Link, NetNs, Netlink, TapOptions};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default)]
pub struct Tap;

/// The newest reference's keys, with its defaults: single queue, no owner or group (any
/// user with CAP_NET_ADMIN may open it), MTU 1500 and a kernel-chosen MAC.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TapConf {
    pub name: String,
    #[serde(default)]
    pub multi_queue: bool,
    #[serde(default)]
    pub mtu: i64,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub owner: Option<u32>,
    #[serde(default)]
    pub group: Option<u32>,
    #[serde(default)]
    pub selinux_context: String,
    #[serde(default)]
    pub bridge: String,
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

/// The largest MTU a tap takes (the kernel's `maxmtu` for tun devices, 65535 less the
/// Ethernet header and its headroom).
pub const MAX_MTU: i64 = 65521;

impl TapConf {
    /// Decoded only: what DEL needs, which must succeed for a config whose ADD never could.
    fn decode(stdin: &[u8]) -> Result<TapConf, CniError> {
        cni::config::decode("network config", stdin)
    }

    /// Decoded and validated, every refusal naming its key (code 7).
    pub fn parse(stdin: &[u8]) -> Result<TapConf, CniError> {
        let c = TapConf::decode(stdin)?;
        if c.mtu != 0 && !(68..=MAX_MTU).contains(&c.mtu) {
            return Err(CniError::invalid_config(format!(
                "mtu: {} is not a valid tap MTU (68 to {MAX_MTU})",
                c.mtu
            )));
        }
        if !c.bridge.is_empty() && cni::validate::interface_name(&c.bridge).is_err() {
            return Err(CniError::invalid_config(format!(
                "bridge: {:?} is not a valid interface name",
                cni::validate::echo(&c.bridge)
            )));
        }
        if c.selinux_context.contains(['\0', '\n']) {
            return Err(CniError::invalid_config(
                "selinuxContext: a label holds no NUL or newline",
            ));
        }
        if c.ipam.as_ref().is_some_and(|i| i.plugin_type.is_empty()) {
            return Err(CniError::invalid_config("ipam.type is missing"));
        }
        Ok(c)
    }

    /// The tap's MAC: `runtimeConfig.mac` over `CNI_ARGS MAC=` over the `mac` key.
    pub fn container_mac(&self, args: &CmdArgs) -> Result<Option<[u8; 6]>, CniError> {
        let rt = self.runtime_config.as_ref().and_then(|r| r.mac.as_deref());
        attach::chosen_mac(args, rt, &self.mac)
    }

    fn ipam_type(&self) -> Option<&str> {
        self.ipam.as_ref().map(|i| i.plugin_type.as_str())
    }

    fn options(&self) -> TapOptions {
        TapOptions {
            multi_queue: self.multi_queue,
            owner: self.owner,
            group: self.group,
        }
    }
}

/// The kernel's kind for tun and tap links.
const KIND: &str = "tun";

/// The variable that makes the plugin binary the tap-creating helper (`selinuxContext`).
pub const HELPER_ENV: &str = "PODNET_TAP_HELPER";

/// What the helper is asked to create.
#[derive(Debug, Serialize, Deserialize)]
struct HelperSpec {
    name: String,
    multi_queue: bool,
    owner: Option<u32>,
    group: Option<u32>,
}

/// The helper's whole job, in the namespace and SELinux label it was started in:
/// create the tap, report a failure on stderr. Returns the exit status.
pub fn helper_main(spec: &str) -> i32 {
    let spec: HelperSpec = match serde_json::from_str(spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tap helper: bad spec: {e}");
            return 2;
        }
    };
    let opts = TapOptions {
        multi_queue: spec.multi_queue,
        owner: spec.owner,
        group: spec.group,
    };
    let made =
        netkit::tap::open_tun().and_then(|tun| netkit::tap::tap_create_on(&tun, &spec.name, &opts));
    match made {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{}", cni::error::chain(&e));
            1
        }
    }
}

/// Whether the host runs SELinux (its filesystem is mounted).
fn selinux_enabled() -> bool {
    Path::new("/sys/fs/selinux/enforce").exists()
}

/// Creates the tap in label `label`: a thread sets its exec label and enters the
/// container's namespace, and the helper it starts (this binary again) makes the tap.
/// The label stays on that thread, so the IPAM plugin is not run in it.
fn create_labelled(ns: &NetNs, name: &str, opts: &TapOptions, label: &str) -> Result<(), CniError> {
    if !selinux_enabled() {
        return Err(CniError::invalid_config(format!(
            "selinuxContext: {label:?} asks for an SELinux label, and SELinux is not enabled on this host"
        )));
    }
    let spec = serde_json::to_string(&HelperSpec {
        name: name.into(),
        multi_queue: opts.multi_queue,
        owner: opts.owner,
        group: opts.group,
    })
    .map_err(|e| CniError::new(ErrorCode::IO_FAILURE, e.to_string()))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            std::fs::write("/proc/thread-self/attr/exec", label).map_err(|e| {
                CniError::invalid_config(format!(
                    "selinuxContext: setting the exec label {label:?}: {e}"
                ))
            })?;
            let out = ns
                .run(|| {
                    std::process::Command::new("/proc/self/exe")
                        .env(HELPER_ENV, &spec)
                        .stdin(std::process::Stdio::null())
                        .output()
                })?
                .map_err(|e| {
                    CniError::new(
                        ErrorCode::IO_FAILURE,
                        format!("starting the tap helper: {e}"),
                    )
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(CniError::new(
                    ErrorCode::IO_FAILURE,
                    format!(
                        "creating tap {name:?} in label {label:?}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ),
                ))
            }
        })
        .join()
        .unwrap_or_else(|_| {
            Err(CniError::new(
                ErrorCode::IO_FAILURE,
                "the tap helper's thread panicked",
            ))
        })
    })
}

struct Ctx<'a> {
    args: &'a CmdArgs,
    conf: &'a TapConf,
    ns: &'a NetNs,
    ctr: Netlink,
}

impl Plugin for Tap {
    fn about(&self) -> &'static str {
        concat!("podnet tap plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = TapConf::parse(&args.stdin)?;
        let mac = conf.container_mac(args)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let cx = Ctx {
                args,
                conf: &conf,
                ns: &ns,
                ctr: Netlink::open_in(&ns)?,
            };
            attach::ensure_ifname_free(&cx.ctr, args, &ns).await?;
            let bridge = bridge(&cx.ctr, &conf).await?;
            let make = make_tap(&cx, mac, bridge.as_ref());
            attach::add_container_link(
                &cx.ctr,
                args,
                &ns,
                KIND,
                conf.ipam_type(),
                None,
                &conf.dns,
                make,
            )
            .await
        })
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = TapConf::decode(&args.stdin)?;
        attach::del_container_link(args, KIND, conf.ipam_type())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = TapConf::parse(&args.stdin)?;
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
        let conf = TapConf::parse(&args.stdin)?;
        // Unlike the reference, STATUS tells whether ADD can work: the host must have
        // the tun driver's device.
        if !Path::new("/dev/net/tun").exists() {
            return Err(CniError::new(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                "/dev/net/tun is missing: the host has no tun/tap driver",
            ));
        }
        delegate::forward(conf.ipam.as_ref(), Command::Status, &args.path, &args.stdin)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = TapConf::parse(&args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Gc, &args.path, &args.stdin)
    }
}

/// The `bridge` the tap joins, in the container's namespace (code 7 naming the key
/// when it is not there or not a bridge).
async fn bridge(ctr: &Netlink, conf: &TapConf) -> Result<Option<Link>, CniError> {
    if conf.bridge.is_empty() {
        return Ok(None);
    }
    match ctr.link_get(&conf.bridge).await? {
        Some(b) if b.kind.as_deref() == Some("bridge") => Ok(Some(b)),
        Some(_) => Err(CniError::invalid_config(format!(
            "bridge: {:?} in the container's namespace is not a bridge",
            conf.bridge
        ))),
        None => Err(CniError::invalid_config(format!(
            "bridge: no bridge {:?} in the container's namespace",
            conf.bridge
        ))),
    }
}

async fn make_tap(
    cx: &Ctx<'_>,
    mac: Option<[u8; 6]>,
    bridge: Option<&Link>,
) -> Result<Link, CniError> {
    let name = &cx.args.ifname;
    let opts = cx.conf.options();
    let label = cx.conf.selinux_context.as_str();
    if label.is_empty() {
        netkit::tap::tap_create(cx.ns, name, &opts).map_err(|e| {
            let msg = format!("creating tap {name:?}: {}", cni::error::chain(&e));
            CniError {
                msg,
                ..CniError::from(e)
            }
        })?;
    } else {
        create_labelled(cx.ns, name, &opts, label)?;
    }
    let t = cx.ctr.link_require(name).await?;
    if let Ok(mtu) = u32::try_from(cx.conf.mtu) {
        if mtu != 0 {
            cx.ctr.link_set_mtu(t.index, mtu).await.map_err(|e| {
                CniError::invalid_config(format!("mtu: setting {mtu} on tap {name:?}: {e}"))
            })?;
        }
    }
    if let Some(mac) = mac {
        cx.ctr.link_set_mac(t.index, mac).await?;
    }
    if let Some(b) = bridge {
        cx.ctr.link_set_master(t.index, Some(b.index)).await?;
    }
    Ok(cx.ctr.link_require(name).await?)
}

async fn check_kernel(
    args: &CmdArgs,
    conf: &TapConf,
    ns: &NetNs,
    prev: &CniResult,
) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let ctr = Netlink::open_in(ns)?;
    let (ours, t) = attach::check_container_link(&ctr, args, ns, prev, KIND).await?;
    let info = t.tun.unwrap_or_default();
    if !info.tap {
        return Err(failed(format!(
            "interface {:?} is a tun, not a tap",
            args.ifname
        )));
    }
    let want = conf.options();
    let have = TapOptions {
        multi_queue: info.multi_queue,
        owner: info.owner,
        group: info.group,
    };
    if have != want {
        return Err(failed(format!(
            "tap {:?} has {have:?}, the config says {want:?}",
            args.ifname
        )));
    }
    if !conf.bridge.is_empty() {
        let b = ctr.link_get(&conf.bridge).await?;
        if b.is_none() || t.master != b.map(|b| b.index) {
            return Err(failed(format!(
                "tap {:?} is not a port of bridge {:?}",
                args.ifname, conf.bridge
            )));
        }
    }
    let ips = prev
        .ips
        .iter()
        .filter(|i| i.interface.is_none_or(|i| i == ours));
    attach::check_addresses(&ctr, t.index, &args.ifname, ips).await?;
    attach::check_routes(&ctr, &prev.routes).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: serde_json::Value) -> Result<TapConf, CniError> {
        TapConf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn defaults_and_refusals_name_the_key() {
        let c = conf(serde_json::json!({"name": "n", "type": "tap"})).unwrap();
        assert_eq!(c.options(), TapOptions::default());
        let c = conf(
            serde_json::json!({"name": "n", "multiQueue": true, "owner": 1000, "group": null}),
        )
        .unwrap();
        assert_eq!(
            c.options(),
            TapOptions {
                multi_queue: true,
                owner: Some(1000),
                group: None
            }
        );
        for (v, key) in [
            (serde_json::json!({"name": "n", "mtu": 70000}), "mtu:"),
            (serde_json::json!({"name": "n", "mtu": -1}), "mtu:"),
            (serde_json::json!({"name": "n", "bridge": "a/b"}), "bridge:"),
            (
                serde_json::json!({"name": "n", "selinuxContext": "a\nb"}),
                "selinuxContext:",
            ),
            (serde_json::json!({"name": "n", "ipam": {}}), "ipam.type"),
        ] {
            let e = conf(v.clone()).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG, "{v}");
            assert!(e.msg.contains(key), "{v}: {}", e.msg);
        }
    }

    #[test]
    fn an_owner_out_of_range_fails_decoding_naming_it() {
        let e = conf(serde_json::json!({"name": "n", "owner": -1})).unwrap_err();
        assert_eq!(e.code, ErrorCode::DECODING_FAILURE);
        assert!(e.msg.contains("owner"), "{}", e.msg);
    }

    #[test]
    fn the_helper_reports_a_bad_spec() {
        assert_eq!(helper_main("not json"), 2);
    }
}
