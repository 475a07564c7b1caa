//! The `bandwidth` plugin (chained): shapes what a container receives with a token bucket
//! (`tbf`) on its veth's host end, and what it sends by redirecting the host end's
//! ingress into an `ifb` device that carries a second bucket. Drop-in for the reference:
//! the same keys (`ingressRate`/`ingressBurst`/`egressRate`/`egressBurst` in bits per
//! second and bits), the `bandwidth` capability (`runtimeConfig.bandwidth`, used only
//! when the config itself sets none of the four keys), the same bucket arithmetic and
//! the same ifb name (`bwp` + SHA-512 of network name and container id), so either
//! implementation's CHECK and DEL work on the other's state. All of it over netlink.
//!
//! Unlike the reference, the ifb carries an alias naming its network and container, so
//! that GC can tell this network's devices from another's, and an ADD that fails half
//! way removes what it added.

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, GcArgs, Plugin};
use cni::{CniError, CniResult, ErrorCode, Interface};
use netkit::tc::Tbf;
use netkit::Netlink;
use serde::Deserialize;
use sha2::{Digest, Sha512};

#[derive(Debug, Clone, Copy, Default)]
pub struct Bandwidth;

/// The reference's ifb names: `bwp` and the hash, 15 bytes in all.
const IFB_PREFIX: &str = "bwp";
const IFNAMSIZ_MAX: usize = 15;
/// The alias podnet writes on its ifb devices: `podnet-bandwidth <network> <container>`.
const ALIAS_PREFIX: &str = "podnet-bandwidth ";

/// One direction's limits as given: rate in bits per second, burst in bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(default)]
    pub ingress_rate: Option<u64>,
    #[serde(default)]
    pub ingress_burst: Option<u64>,
    #[serde(default)]
    pub egress_rate: Option<u64>,
    #[serde(default)]
    pub egress_burst: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfig {
    #[serde(default)]
    bandwidth: Option<Entry>,
}

/// The config's other keys; its own limits are an [`Entry`] decoded from the same bytes
/// (two decodes rather than a flattened struct, whose keys serde would match exactly).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    #[serde(default)]
    name: String,
    /// Newer reference releases' subnet filters: refused, never silently ignored.
    #[serde(default)]
    unshaped_subnets: Option<Vec<String>>,
    #[serde(default)]
    shaped_subnets: Option<Vec<String>>,
    #[serde(default)]
    runtime_config: RuntimeConfig,
}

/// The validated limits of one attachment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shaping {
    /// Traffic to the container: a bucket on the host end of its veth.
    pub ingress: Option<Tbf>,
    /// Traffic from the container: a bucket on the ifb its veth's ingress is sent to.
    pub egress: Option<Tbf>,
}

impl Shaping {
    pub fn is_empty(&self) -> bool {
        self.ingress.is_none() && self.egress.is_none()
    }
}

/// The network name and the limits of a config.
pub fn parse(stdin: &[u8]) -> Result<(String, Shaping), CniError> {
    let w: Wire = cni::config::decode("network config", stdin)?;
    for (key, v) in [
        ("unshapedSubnets", &w.unshaped_subnets),
        ("shapedSubnets", &w.shaped_subnets),
    ] {
        if v.as_ref().is_some_and(|s| !s.is_empty()) {
            return Err(CniError::new(
                ErrorCode::UNSUPPORTED_FIELD,
                format!(
                    "{key}: subnet-selective shaping is not supported; shape all traffic or none"
                ),
            ));
        }
    }
    let own: Entry = cni::config::decode("network config", stdin)?;
    let (entry, at) = match w.runtime_config.bandwidth {
        Some(rc) if own == Entry::default() => (rc, "runtimeConfig.bandwidth."),
        _ => (own, ""),
    };
    let bucket = |dir: &str, rate: Option<u64>, burst: Option<u64>| {
        let (rate, burst) = (rate.unwrap_or(0), burst.unwrap_or(0));
        let field = |k: &str| format!("{at}{dir}{k}");
        match (rate, burst) {
            (0, 0) => Ok(None),
            (_, 0) => Err(CniError::invalid_config(format!(
                "{}: must be set when {} is",
                field("Burst"),
                field("Rate")
            ))),
            (0, _) => Err(CniError::invalid_config(format!(
                "{}: must be set when {} is",
                field("Rate"),
                field("Burst")
            ))),
            (r, _) if r < 8 => Err(CniError::invalid_config(format!(
                "{}: {r} bits per second is less than a byte per second",
                field("Rate")
            ))),
            (_, b) if b / 8 >= u64::from(u32::MAX) => Err(CniError::invalid_config(format!(
                "{}: {b} bits is more than 4 GiB",
                field("Burst")
            ))),
            (r, b) => Ok(Some(Tbf::from_bits(r, b))),
        }
    };
    let shaping = Shaping {
        ingress: bucket("ingress", entry.ingress_rate, entry.ingress_burst)?,
        egress: bucket("egress", entry.egress_rate, entry.egress_burst)?,
    };
    Ok((w.name, shaping))
}

/// The reference's ifb name for a network and a container.
pub fn ifb_name(network: &str, container_id: &str) -> String {
    let digest = Sha512::digest(format!("{network}{container_id}").as_bytes());
    let mut name = String::from(IFB_PREFIX);
    for b in digest {
        if name.len() >= IFNAMSIZ_MAX {
            break;
        }
        name.push_str(&format!("{b:02x}"));
    }
    name.truncate(IFNAMSIZ_MAX);
    name
}

fn alias(network: &str, container_id: &str) -> String {
    format!("{ALIAS_PREFIX}{network} {container_id}")
}

/// The host end of the container's veth, as named in `prevResult`.
async fn host_end(
    nl: &Netlink,
    args: &CmdArgs,
    prev: &CniResult,
) -> Result<netkit::Link, CniError> {
    let ns = netkit::attach::open_netns(args)?;
    let ctr = Netlink::open_in(&ns)?
        .link_get(&args.ifname)
        .await?
        .ok_or_else(|| {
            CniError::invalid_config(format!(
                "CNI_IFNAME {:?}: no such interface in the container",
                args.ifname
            ))
        })?;
    let no_peer = || {
        CniError::invalid_config(format!(
            "CNI_IFNAME {:?}: not a veth with its peer in the host namespace",
            args.ifname
        ))
    };
    let peer = ctr
        .peer
        .filter(|_| ctr.kind.as_deref() == Some("veth"))
        .ok_or_else(no_peer)?;
    let host = nl
        .link_by_index(peer)
        .await?
        .filter(|h| h.kind.as_deref() == Some("veth") && h.peer == Some(ctr.index))
        .ok_or_else(no_peer)?;
    if !prev.host_interfaces()?.iter().any(|i| i.name == host.name) {
        return Err(CniError::invalid_config(format!(
            "prevResult.interfaces: the container's veth peer {:?} is not among the host interfaces",
            host.name
        )));
    }
    Ok(host)
}

/// Deletes the ifb named `name` if it is there, returning once the kernel has
/// unregistered it (not once it has freed it: [`netkit::unlink`]).
async fn remove_ifb(nl: &Netlink, name: &str) -> Result<(), CniError> {
    if let Some(l) = nl.link_get(name).await? {
        if l.kind.as_deref() == Some("ifb") {
            netkit::unlink::link_del_unwaited(&netkit::NetNs::current()?, l.index, None)?;
        }
    }
    Ok(())
}

/// Everything ADD puts in place for one attachment; on failure, what it had added is
/// removed again.
async fn shape(
    nl: &Netlink,
    args: &CmdArgs,
    network: &str,
    shaping: &Shaping,
    host: &netkit::Link,
) -> Result<Option<Interface>, CniError> {
    let ifb = ifb_name(network, &args.container_id);
    let run = async {
        if let Some(tbf) = &shaping.ingress {
            nl.qdisc_add_tbf(host.index, tbf).await?;
        }
        let Some(tbf) = &shaping.egress else {
            return Ok::<_, CniError>(None);
        };
        if let Err(e) = nl.link_add_ifb(&ifb, host.mtu).await {
            if !e.is_exists() {
                return Err(e.into());
            }
            // A device of this name is this attachment's, left by an ADD that died.
            remove_ifb(nl, &ifb).await?;
            nl.link_add_ifb(&ifb, host.mtu).await?;
        }
        let dev = nl.link_require(&ifb).await?;
        nl.qdisc_add_tbf(dev.index, tbf).await?;
        nl.ifb_activate(dev.index, &alias(network, &args.container_id))
            .await?;
        nl.qdisc_add_ingress(host.index).await?;
        nl.filter_add_redirect(host.index, dev.index).await?;
        Ok(Some(Interface {
            name: ifb.clone(),
            mac: Some(dev.mac),
            ..Interface::default()
        }))
    };
    match run.await {
        Ok(i) => Ok(i),
        Err(e) => {
            let _ = nl.qdisc_del(host.index, true).await;
            if shaping.ingress.is_some() {
                let _ = nl.qdisc_del(host.index, false).await;
            }
            let _ = remove_ifb(nl, &ifb).await;
            Err(e)
        }
    }
}

fn check_bucket(what: &str, have: Option<Tbf>, want: &Tbf) -> Result<(), CniError> {
    let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
    let have = have.ok_or_else(|| failed(format!("{what}: no tbf root qdisc")))?;
    for (field, h, w) in [
        ("rate", have.rate, want.rate),
        ("limit", u64::from(have.limit), u64::from(want.limit)),
        ("buffer", u64::from(have.buffer), u64::from(want.buffer)),
    ] {
        if h != w {
            return Err(failed(format!("{what}: tbf {field} is {h}, want {w}")));
        }
    }
    Ok(())
}

impl Plugin for Bandwidth {
    fn about(&self) -> &'static str {
        concat!("podnet bandwidth plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let (network, shaping) = parse(&args.stdin)?;
        let prev = args.prev_result.clone();
        if shaping.is_empty() {
            return Ok(prev.unwrap_or_default());
        }
        let mut result = prev.ok_or_else(|| {
            CniError::invalid_config(
                "bandwidth must be called as a chained plugin: prevResult is missing",
            )
        })?;
        netkit::block_on(async {
            let nl = Netlink::open_current()?;
            let host = host_end(&nl, args, &result).await?;
            if let Some(ifb) = shape(&nl, args, &network, &shaping, &host).await? {
                result.interfaces.push(ifb);
            }
            Ok(result)
        })
    }

    /// Removes the ifb; the bucket on the veth goes with the veth. From the network name
    /// and container id alone: no netns or prevResult needed.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let network = cni::config::decode::<Name>("network config", &args.stdin)?.name;
        let ifb = ifb_name(&network, &args.container_id);
        netkit::block_on(async { remove_ifb(&Netlink::open_current()?, &ifb).await })?;
        Ok(())
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (network, shaping) = parse(&args.stdin)?;
        let prev = args.prev_result.as_ref().ok_or_else(|| {
            CniError::invalid_config(
                "bandwidth must be called as a chained plugin: prevResult is missing",
            )
        })?;
        if shaping.is_empty() {
            return Ok(());
        }
        netkit::block_on(async {
            let nl = Netlink::open_current()?;
            let host = host_end(&nl, args, prev).await?;
            if let Some(want) = &shaping.ingress {
                let have = nl.qdisc_root_tbf(host.index).await?;
                check_bucket(&format!("host interface {:?}", host.name), have, want)?;
            }
            if let Some(want) = &shaping.egress {
                let ifb = ifb_name(&network, &args.container_id);
                let dev = nl.link_get(&ifb).await?.ok_or_else(|| {
                    CniError::new(ErrorCode::CHECK_FAILED, format!("ifb {ifb:?} is missing"))
                })?;
                let have = nl.qdisc_root_tbf(dev.index).await?;
                check_bucket(&format!("ifb {ifb:?}"), have, want)?;
            }
            Ok(())
        })
    }

    /// Removes this network's ifb devices whose container is not among the valid
    /// attachments (recognised by the alias podnet gives them).
    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let network = cni::config::decode::<Name>("network config", &args.stdin)?.name;
        let ours = format!("{ALIAS_PREFIX}{network} ");
        netkit::block_on(async {
            let nl = Netlink::open_current()?;
            for link in nl.link_list().await? {
                let Some(container) = link.alias.as_deref().and_then(|a| a.strip_prefix(&ours))
                else {
                    continue;
                };
                let valid = args
                    .valid_attachments
                    .iter()
                    .any(|a| a.container_id == container);
                if !valid && link.kind.as_deref() == Some("ifb") {
                    remove_ifb(&nl, &link.name).await?;
                }
            }
            Ok(())
        })
    }
}

#[derive(Deserialize)]
struct Name {
    #[serde(default)]
    name: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parsed(v: serde_json::Value) -> Result<Shaping, CniError> {
        parse(v.to_string().as_bytes()).map(|(_, s)| s)
    }

    #[test]
    fn ifb_name_is_the_references() {
        // printf 'mynetctr1' | sha512sum | cut -c1-12 → bwp + those 12.
        let n = ifb_name("mynet", "ctr1");
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("bwp"));
        let hex: String = Sha512::digest(b"mynetctr1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(&n[3..], &hex[..12]);
    }

    #[test]
    fn own_keys_win_over_the_capability() {
        let s = parsed(
            json!({"name": "n", "ingressRate": 8000, "ingressBurst": 800,
            "runtimeConfig": {"bandwidth": {"egressRate": 16000, "egressBurst": 1600}}}),
        )
        .unwrap();
        assert!(s.ingress.is_some() && s.egress.is_none());
        // go-cni's spelling of the capability.
        let s = parsed(json!({"name": "n", "runtimeConfig": {"bandwidth":
            {"IngressRate": 8000, "IngressBurst": 800, "EgressRate": 16000, "EgressBurst": 1600}}}))
        .unwrap();
        assert_eq!(s.egress, Some(Tbf::from_bits(16000, 1600)));
        assert!(parsed(json!({"name": "n"})).unwrap().is_empty());
    }

    #[test]
    fn bad_limits_name_the_field() {
        for (conf, needle, code) in [
            (json!({"ingressRate": 8000}), "ingressBurst: must be set", 7),
            (json!({"egressBurst": 8000}), "egressRate: must be set", 7),
            (
                json!({"runtimeConfig": {"bandwidth": {"ingressRate": 8000}}}),
                "runtimeConfig.bandwidth.ingressBurst",
                7,
            ),
            (
                json!({"ingressRate": 8000, "ingressBurst": 40_000_000_000u64}),
                "more than 4 GiB",
                7,
            ),
            (json!({"ingressRate": -1}), "ingressRate", 6),
            (
                json!({"unshapedSubnets": ["10.0.0.0/8"]}),
                "unshapedSubnets",
                2,
            ),
        ] {
            let e = parsed(conf).unwrap_err();
            assert!(e.msg.contains(needle), "{} lacks {needle}", e.msg);
            assert_eq!(e.code.0, code, "{}", e.msg);
        }
    }
}
