//! The `tuning` plugin (chained): sysctls of the container's namespace and settings of
//! its interface — `mac`, `mtu`, `promisc`, `allmulti`, `txQLen` — with the previous
//! values saved in `<dataDir>/<containerID>_<ifname>.json` (the reference's file and
//! fields) and restored on DEL, **sysctls included** (the reference never restores them).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use cni::skel::{CmdArgs, GcArgs, Plugin};
use cni::{CniError, CniResult, ErrorCode};
use netkit::{attach, sysctl, Link, NetNs, Netlink};
use serde::{Deserialize, Serialize};

pub const DEFAULT_DATA_DIR: &str = "/run/cni/tuning";
pub const ALLOWLIST: &str = "/etc/cni/tuning/allowlist.conf";

#[derive(Debug, Clone, Copy, Default)]
pub struct Tuning;

/// The settings, as given in the config, `args.cni` or `runtimeConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    #[serde(default)]
    pub sysctl: BTreeMap<String, String>,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    pub promisc: Option<bool>,
    pub allmulti: Option<bool>,
    #[serde(rename = "txQLen")]
    pub tx_qlen: Option<u32>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfWire {
    data_dir: Option<PathBuf>,
    #[serde(default)]
    args: Option<ArgsWire>,
    #[serde(default)]
    runtime_config: Option<RuntimeWire>,
}

#[derive(Debug, Clone, Deserialize)]
struct ArgsWire {
    cni: Option<Settings>,
}

#[derive(Debug, Clone, Deserialize)]
struct RuntimeWire {
    mac: Option<String>,
}

/// What was there before; the reference's fields plus podnet's `sysctl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backup {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promisc: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allmulti: Option<bool>,
    #[serde(default, rename = "txQLen", skip_serializing_if = "Option::is_none")]
    pub tx_qlen: Option<u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctl: BTreeMap<String, String>,
}

/// The effective settings: `runtimeConfig.mac` over `args.cni.*` over `CNI_ARGS MAC=`
/// over the config, as the reference orders them; `IFNAME` in sysctl keys replaced.
pub fn settings(args: &CmdArgs) -> Result<(Settings, PathBuf), CniError> {
    // Two decodes of the same bytes rather than a flattened struct, so that an error
    // still names the field at fault.
    let wire: ConfWire = args.config()?;
    let mut s: Settings = args.config()?;
    if let Some(mac) = args.args.get("MAC") {
        s.mac = Some(mac.to_owned());
    }
    if let Some(a) = wire.args.and_then(|a| a.cni) {
        s.sysctl.extend(a.sysctl);
        s.mac = a.mac.or(s.mac);
        s.mtu = a.mtu.or(s.mtu);
        s.promisc = a.promisc.or(s.promisc);
        s.allmulti = a.allmulti.or(s.allmulti);
        s.tx_qlen = a.tx_qlen.or(s.tx_qlen);
    }
    if let Some(mac) = wire.runtime_config.and_then(|r| r.mac) {
        s.mac = Some(mac);
    }
    if let Some(mac) = &s.mac {
        netkit::parse_mac(mac)
            .map_err(|_| CniError::invalid_config(format!("mac: invalid MAC address {mac:?}")))?;
    }
    s.sysctl = s
        .sysctl
        .into_iter()
        .map(|(k, v)| {
            let key = k
                .split('.')
                .map(|p| {
                    if p == "IFNAME" {
                        args.ifname.as_str()
                    } else {
                        p
                    }
                })
                .collect::<Vec<_>>()
                .join(".");
            netkit::sysctl::sysctl_path(&key).map_err(|_| {
                CniError::invalid_config(format!(
                    "sysctl: {k:?} is not a net.* key of the container's namespace"
                ))
            })?;
            Ok((key, v))
        })
        .collect::<Result<_, CniError>>()?;
    Ok((
        s,
        cni::config::dir_or(wire.data_dir.as_deref(), DEFAULT_DATA_DIR),
    ))
}

/// `dataDir` (where backups are kept), without reading or validating the settings.
fn data_dir(stdin: &[u8]) -> Result<PathBuf, CniError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Dir {
        data_dir: Option<PathBuf>,
    }
    let d: Dir = cni::config::decode("network config", stdin)?;
    Ok(cni::config::dir_or(d.data_dir.as_deref(), DEFAULT_DATA_DIR))
}

/// With an allowlist file, every sysctl key must match one of its patterns (one regular
/// expression per line; blank lines and `#` comments skipped).
pub fn check_allowlist(
    list: Option<&str>,
    keys: impl IntoIterator<Item = String>,
) -> Result<(), CniError> {
    let Some(list) = list else { return Ok(()) };
    let patterns: Vec<regex::Regex> = list
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            regex::Regex::new(l).map_err(|e| {
                CniError::invalid_config(format!("{ALLOWLIST}: invalid pattern {l:?}: {e}"))
            })
        })
        .collect::<Result<_, _>>()?;
    for key in keys {
        if !patterns.iter().any(|p| p.is_match(&key)) {
            return Err(CniError::invalid_config(format!(
                "sysctl {key:?} is not allowed by {ALLOWLIST}"
            )));
        }
    }
    Ok(())
}

fn backup_path(dir: &Path, args: &CmdArgs) -> PathBuf {
    dir.join(format!("{}_{}.json", args.container_id, args.ifname))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| CniError::from_source(ErrorCode::IO_FAILURE, what, &e)
}

impl Plugin for Tuning {
    fn about(&self) -> &'static str {
        concat!("podnet tuning plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let mut result = args.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "tuning must be called as a chained plugin: prevResult is missing",
            )
        })?;
        let (s, dir) = settings(args)?;
        check_allowlist(
            fs::read_to_string(ALLOWLIST).ok().as_deref(),
            s.sysctl.keys().cloned(),
        )?;
        let ns = attach::open_netns(args)?;
        let path = backup_path(&dir, args);
        let mac = netkit::block_on(async {
            let nl = Netlink::open_in(&ns)?;
            let link = nl.link_get(&args.ifname).await?.ok_or_else(|| {
                CniError::invalid_env(format!(
                    "CNI_IFNAME: no interface {:?} in the container",
                    args.ifname
                ))
            })?;
            // An ADD retry keeps the first backup: it holds the true originals.
            if !path.exists() {
                write_backup(&path, &backup_of(&ns, &link, &s)?)?;
            }
            if let Err(e) = apply(&nl, &ns, &link, &s).await {
                let _ = restore(&nl, &ns, &args.ifname, &path).await;
                return Err(e);
            }
            // The MAC it now has, without another lookup: the configured one, else the old one.
            let mac = match &s.mac {
                Some(m) => netkit::format_mac(&netkit::parse_mac(m)?),
                None => link.mac,
            };
            Ok::<_, CniError>(mac)
        })?;
        for iface in result
            .interfaces
            .iter_mut()
            .filter(|i| i.name == args.ifname && i.sandbox.is_some())
        {
            iface.mac = Some(mac.clone());
        }
        Ok(result)
    }

    /// From the backup alone: the config's settings are not read, so a config that ADD
    /// would refuse (a bad sysctl key) still DELs, with nothing to undo.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let dir = data_dir(&args.stdin)?;
        let path = backup_path(&dir, args);
        if !path.exists() {
            return Ok(());
        }
        if let Some(ns) = attach::open_netns_if_present(args)? {
            netkit::block_on(async {
                restore(&Netlink::open_in(&ns)?, &ns, &args.ifname, &path).await
            })?;
        }
        remove(&path)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let (s, _) = settings(args)?;
        let ns = attach::open_netns(args)?;
        let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
        let link = netkit::block_on(async { Netlink::open_in(&ns)?.link_get(&args.ifname).await })?
            .ok_or_else(|| failed(format!("{:?} is missing", args.ifname)))?;
        for (k, v) in &s.sysctl {
            let have = sysctl::get(&ns, k)?;
            if have != v.trim() {
                return Err(failed(format!("sysctl {k} is {have:?}, not {v:?}")));
            }
        }
        let mismatch = [
            s.mac
                .as_ref()
                .is_some_and(|m| {
                    netkit::parse_mac(m).map(|m| netkit::format_mac(&m)).ok()
                        != Some(link.mac.clone())
                })
                .then_some("mac"),
            s.mtu.is_some_and(|m| m != link.mtu).then_some("mtu"),
            s.promisc
                .is_some_and(|p| p != link.promisc)
                .then_some("promisc"),
            s.allmulti
                .is_some_and(|a| a != link.allmulti)
                .then_some("allmulti"),
            s.tx_qlen
                .is_some_and(|q| q != link.txqlen)
                .then_some("txQLen"),
        ];
        match mismatch.into_iter().flatten().next() {
            Some(key) => Err(failed(format!(
                "{key} of {:?} differs from the config",
                args.ifname
            ))),
            None => Ok(()),
        }
    }

    /// Drops the backups of attachments that are no longer valid.
    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let dir = data_dir(&args.stdin)?;
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        let valid: Vec<String> = args
            .valid_attachments
            .iter()
            .map(|a| format!("{}_{}.json", a.container_id, a.ifname))
            .collect();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !valid.contains(&name) {
                remove(&e.path())?;
            }
        }
        Ok(())
    }
}

fn backup_of(ns: &NetNs, link: &Link, s: &Settings) -> Result<Backup, CniError> {
    let mut b = Backup {
        mac: s.mac.as_ref().map(|_| link.mac.clone()),
        promisc: s.promisc.map(|_| link.promisc),
        mtu: s.mtu.map(|_| link.mtu),
        allmulti: s.allmulti.map(|_| link.allmulti),
        tx_qlen: s.tx_qlen.map(|_| link.txqlen),
        sysctl: BTreeMap::new(),
    };
    for k in s.sysctl.keys() {
        b.sysctl.insert(k.clone(), sysctl::get(ns, k)?);
    }
    Ok(b)
}

async fn apply(nl: &Netlink, ns: &NetNs, link: &Link, s: &Settings) -> Result<(), CniError> {
    for (k, v) in &s.sysctl {
        sysctl::set(ns, k, v)?;
    }
    set_link(nl, link.index, &LinkSettings::from(s)).await
}

/// The interface settings tuning manages; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
struct LinkSettings {
    mac: Option<String>,
    mtu: Option<u32>,
    promisc: Option<bool>,
    allmulti: Option<bool>,
    tx_qlen: Option<u32>,
}

impl From<&Settings> for LinkSettings {
    fn from(s: &Settings) -> Self {
        LinkSettings {
            mac: s.mac.clone(),
            mtu: s.mtu,
            promisc: s.promisc,
            allmulti: s.allmulti,
            tx_qlen: s.tx_qlen,
        }
    }
}

impl From<&Backup> for LinkSettings {
    fn from(b: &Backup) -> Self {
        LinkSettings {
            mac: b.mac.clone(),
            mtu: b.mtu,
            promisc: b.promisc,
            allmulti: b.allmulti,
            tx_qlen: b.tx_qlen,
        }
    }
}

async fn set_link(nl: &Netlink, index: u32, l: &LinkSettings) -> Result<(), CniError> {
    if let Some(mac) = &l.mac {
        nl.link_set_mac(index, netkit::parse_mac(mac)?).await?;
    }
    if let Some(mtu) = l.mtu {
        nl.link_set_mtu(index, mtu).await?;
    }
    if let Some(p) = l.promisc {
        nl.link_set_promisc(index, p).await?;
    }
    if let Some(a) = l.allmulti {
        nl.link_set_allmulti(index, a).await?;
    }
    if let Some(q) = l.tx_qlen {
        nl.link_set_txqlen(index, q).await?;
    }
    Ok(())
}

/// Puts back what the backup holds; an interface that is gone has nothing to restore.
async fn restore(nl: &Netlink, ns: &NetNs, ifname: &str, path: &Path) -> Result<(), CniError> {
    let bytes = fs::read(path).map_err(io(format!("reading {}", path.display())))?;
    let b: Backup = cni::config::decode(&format!("tuning backup {}", path.display()), &bytes)?;
    for (k, v) in &b.sysctl {
        sysctl::set(ns, k, v)?;
    }
    let Some(link) = nl.link_get(ifname).await? else {
        return Ok(());
    };
    set_link(nl, link.index, &LinkSettings::from(&b)).await
}

fn write_backup(path: &Path, b: &Backup) -> Result<(), CniError> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(b).expect("serializes"))
        .map_err(io(format!("writing {}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

fn remove(path: &Path) -> Result<(), CniError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist() {
        let list =
            "# podnet\n^net\\.core\\.somaxconn$\n^net\\.ipv4\\.conf\\.[a-z0-9]+\\.arp_filter$\n";
        assert!(check_allowlist(
            Some(list),
            [
                "net.core.somaxconn".to_string(),
                "net.ipv4.conf.eth0.arp_filter".into()
            ]
        )
        .is_ok());
        let e = check_allowlist(Some(list), ["net.ipv4.ip_forward".to_string()]).unwrap_err();
        assert!(e.msg.contains("net.ipv4.ip_forward"), "{}", e.msg);
        assert!(check_allowlist(None, ["net.anything".to_string()]).is_ok());
        assert!(check_allowlist(Some("(unclosed"), ["net.x".to_string()])
            .unwrap_err()
            .msg
            .contains("invalid pattern"));
    }
}
