//! The engine's records: one JSON file per container and per pod under the root, written
//! atomically (temporary file, fsync, rename) while holding one flock, so two `podnet`
//! processes never interleave their changes and a crash never leaves a torn record.
//!
//! ```text
//! <root>/lock                          flock(2)ed by every command that changes state
//! <root>/containers/<id>/record.json   the container (Container)
//! <root>/containers/<id>/config.json   its OCI bundle (root.path = the --rootfs)
//! <root>/containers/<id>/{hosts,resolv.conf,hostname}   bound into the container
//! <root>/containers/<id>/ctr.log       stdout and stderr
//! <root>/pods/<id>/record.json         the pod (Pod); <root>/pods/<id>/hosts is shared
//! <runroot>/<id>/{monitor.pid,pid,exit}   the running process, gone at reboot
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use nix::fcntl::{Flock, FlockArg};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::config::Config;
use crate::error::{Error, Result};

/// A published port, in portmap's `runtimeConfig.portMappings` shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "String::is_empty", rename = "hostIP")]
    pub host_ip: String,
}

/// One network attachment as the CNI result gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attached {
    pub network: String,
    pub ifname: String,
    pub ips: Vec<IpNetwork>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gateways: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
}

/// A network namespace the engine owns (a container's own, or a pod's): what was asked
/// and what the CNI chains made of it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NetSandbox {
    /// CNI networks in attachment order (eth0, eth1, …). Empty: loopback only (`none`).
    pub networks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// `--ip` / `--ip6`: requested on the first network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_ips: Vec<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The pin under /run/netns, once created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attached>,
}

/// How a container gets its network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "mode")]
pub enum NetMode {
    /// Its own namespace: on CNI networks, or loopback only.
    Own(NetSandbox),
    /// The host's namespace.
    Host,
    /// Another container's namespace (`container:X`).
    Container { id: String },
    /// Its pod's namespace.
    Pod { id: String },
}

/// Whether the network set-up of a record finished. A record left `Configuring` by an
/// interrupted `create` is cleaned by `rm` and redone by `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Configuring,
    Ready,
}

/// An `--add-host NAME:IP` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    pub name: String,
    pub ip: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Container {
    pub id: String,
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    pub rootfs: PathBuf,
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    pub hostname: String,
    pub net: NetMode,
    #[serde(default)]
    pub add_hosts: Vec<HostEntry>,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pod {
    pub id: String,
    pub name: String,
    pub created: u64,
    pub hostname: String,
    pub net: NetSandbox,
    #[serde(default)]
    pub add_hosts: Vec<HostEntry>,
    #[serde(default)]
    pub dns: Vec<IpAddr>,
    pub phase: Phase,
}

/// Something with an id and a name, kept as `<dir>/<id>/record.json`.
pub trait Record: Serialize + DeserializeOwned {
    const KIND: &'static str;
    fn id(&self) -> &str;
    fn name(&self) -> &str;
    fn dir(config: &Config) -> PathBuf;
}

impl Record for Container {
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn dir(config: &Config) -> PathBuf {
        config.containers_dir()
    }
}

impl Record for Pod {
    const KIND: &'static str = "pod";
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn dir(config: &Config) -> PathBuf {
        config.pods_dir()
    }
}

/// The held state lock. Every read-modify-write of records happens under it.
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

impl Lock {
    pub fn take(config: &Config) -> Result<Lock> {
        let path = config.lock_file();
        fs::create_dir_all(&config.root).map_err(Error::io(&config.root))?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(Error::io(&path))?;
        let flock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io {
            path,
            source: e.into(),
        })?;
        Ok(Lock { _flock: flock })
    }
}

pub fn record_dir<R: Record>(config: &Config, id: &str) -> PathBuf {
    R::dir(config).join(id)
}

pub fn save<R: Record>(config: &Config, _lock: &Lock, record: &R) -> Result<()> {
    let dir = record_dir::<R>(config, record.id());
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let bytes = serde_json::to_vec_pretty(record).expect("records serialize");
    write_atomic(&dir.join("record.json"), &bytes)
}

pub fn load<R: Record>(config: &Config, id: &str) -> Result<R> {
    let path = record_dir::<R>(config, id).join("record.json");
    let bytes = fs::read(&path).map_err(Error::io(&path))?;
    serde_json::from_slice(&bytes).map_err(|source| Error::Json { path, source })
}

/// Every record of a kind, oldest first. Unreadable ones are skipped: one torn file
/// from an older version must not lock the user out of `rm`.
pub fn list<R: Record>(config: &Config) -> Vec<R> {
    let Ok(dir) = fs::read_dir(R::dir(config)) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ids.sort();
    ids.iter()
        .filter_map(|id| load::<R>(config, id).ok())
        .collect()
}

/// The record named `key`, or whose id is `key` or starts with it (at least 3 characters,
/// unambiguous), as Podman resolves names and ids.
pub fn find<R: Record>(config: &Config, key: &str) -> Result<R> {
    let all = list::<R>(config);
    if let Some(r) = all.iter().position(|r| r.name() == key || r.id() == key) {
        return Ok(all.into_iter().nth(r).expect("index is in range"));
    }
    let mut hits: Vec<R> = all
        .into_iter()
        .filter(|r| key.len() >= 3 && r.id().starts_with(key))
        .collect();
    match hits.len() {
        1 => Ok(hits.remove(0)),
        0 => Err(Error::NotFound {
            kind: R::KIND,
            name: key.to_owned(),
        }),
        n => Err(Error::invalid(
            R::KIND,
            format!("{key:?} is the prefix of {n} ids; give more of it"),
        )),
    }
}

/// Refuses a name a record of kind `R` already has.
pub fn ensure_name_free<R: Record>(config: &Config, name: &str) -> Result<()> {
    match list::<R>(config).into_iter().find(|r| r.name() == name) {
        Some(r) => Err(Error::Exists {
            kind: R::KIND,
            name: name.to_owned(),
            id: short_id(r.id()).to_owned(),
        }),
        None => Ok(()),
    }
}

pub fn remove<R: Record>(config: &Config, _lock: &Lock, id: &str) -> Result<()> {
    let dir = record_dir::<R>(config, id);
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir)(e)),
        _ => Ok(()),
    }
}

/// Writes `bytes` to `path` so that readers see the old or the new content, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(Error::io(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(Error::io(&tmp))?;
    fs::rename(&tmp, path).map_err(Error::io(path))
}

/// A new 64-hex-digit id from the kernel's random pool.
pub fn new_id() -> Result<String> {
    let mut buf = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::io("/dev/urandom"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// The 12-digit form of an id, as `ps` shows it and as the DNS responder answers it.
pub fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A container, pod or network name: what Podman accepts.
pub fn validate_name(field: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    match ok {
        true => Ok(()),
        false => Err(Error::invalid(
            field,
            format!("{name:?} is not a valid name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)"),
        )),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        Config {
            root: dir.join("root"),
            runroot: dir.join("run"),
            ..Config::new()
        }
    }

    fn pod(id: &str, name: &str) -> Pod {
        Pod {
            id: id.into(),
            name: name.into(),
            created: 1,
            hostname: name.into(),
            net: NetSandbox::default(),
            add_hosts: vec![],
            dns: vec![],
            phase: Phase::Ready,
        }
    }

    #[test]
    fn records_round_trip_and_resolve_by_name_id_and_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let lock = Lock::take(&c).unwrap();
        save(&c, &lock, &pod("abcdef01", "front")).unwrap();
        save(&c, &lock, &pod("abcdff02", "back")).unwrap();
        assert_eq!(find::<Pod>(&c, "front").unwrap().id, "abcdef01");
        assert_eq!(find::<Pod>(&c, "abcdff02").unwrap().name, "back");
        assert_eq!(find::<Pod>(&c, "abcde").unwrap().name, "front");
        let ambiguous = find::<Pod>(&c, "abcd").unwrap_err().to_string();
        assert!(ambiguous.contains("prefix of 2 ids"), "{ambiguous}");
        let missing = find::<Pod>(&c, "nope").unwrap_err().to_string();
        assert_eq!(missing, "no pod \"nope\"");
        let taken = ensure_name_free::<Pod>(&c, "back").unwrap_err().to_string();
        assert!(taken.contains("already in use by abcdff02"), "{taken}");
        remove::<Pod>(&c, &lock, "abcdef01").unwrap();
        assert_eq!(list::<Pod>(&c).len(), 1);
    }

    #[test]
    fn names_follow_podman_rules() {
        assert!(validate_name("name", "hugo-1.web_x").is_ok());
        for bad in ["", "-x", "a b", "a/b", "ä"] {
            let e = validate_name("--name", bad).unwrap_err().to_string();
            assert!(e.starts_with("--name: "), "{e}");
        }
        let id = new_id().unwrap();
        assert_eq!(id.len(), 64);
        assert_eq!(short_id(&id).len(), 12);
    }
}
