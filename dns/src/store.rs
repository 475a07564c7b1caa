//! The responder's state on disk: the only I/O of the records.
//!
//! ```text
//! <state>/lock                     flock: plugins hold it while they change files and
//!                                  talk to the responder (one start, ordered updates)
//! <state>/control.sock             the responder's control socket
//! <state>/responder.pid            its pid
//! <state>/responder.log            its stderr when a plugin started it
//! <state>/nets/<network>/network.json   the network: domain, gateways, subnets, …
//! <state>/nets/<network>/<cid>.<ifname> one attachment's names and addresses
//! ```
//!
//! Files are written whole to a temporary name and renamed, so a reader (the responder,
//! or a restarted one) never sees a torn record. `/run` starts empty at boot, as the
//! kernel's links do, so records never outlive the containers they describe.

use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

/// The default state directory, `<run dir>/dns` ([`netkit::run_dir`]).
pub fn state_dir() -> PathBuf {
    netkit::run_dir().join("dns")
}

/// One network as the responder serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConf {
    pub name: String,
    /// `dns.podman`, lowercase, without the trailing dot.
    pub domain: String,
    /// The addresses the responder listens on (the network's gateways).
    pub gateways: Vec<IpAddr>,
    /// Clients from these subnets see this network's names.
    pub subnets: Vec<IpNetwork>,
    /// The host-side interface holding the gateways (port 53 is opened on it).
    pub bridge: String,
    pub port: u16,
    /// Upstream resolvers for this network; empty: the host's /etc/resolv.conf.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<IpAddr>,
}

/// One attachment's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    /// Lowercase names: the container name, its aliases, the short id.
    pub names: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// This container's own upstream resolvers (Podman's `--dns`, the `dns` capability):
    /// what it asks that is not ours goes there instead of to the network's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<IpAddr>,
    /// Registration order (nanoseconds since the epoch): of two attachments holding one
    /// name (a container being replaced), the newer answers.
    pub seq: u128,
}

impl Attachment {
    /// The file name: `<containerID>.<ifname>`.
    pub fn key(&self) -> String {
        key(&self.container_id, &self.ifname)
    }
}

pub fn key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}.{ifname}")
}

/// The state directory and its layout.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct StoreError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl From<StoreError> for cni::CniError {
    fn from(e: StoreError) -> cni::CniError {
        cni::CniError::io(e.to_string())
    }
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError {
        what,
        path: path.to_owned(),
        source,
    }
}

impl Default for Store {
    fn default() -> Self {
        Store::new(state_dir())
    }
}

impl Store {
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    pub fn lock_path(&self) -> PathBuf {
        self.dir.join("lock")
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    pub fn pid_path(&self) -> PathBuf {
        self.dir.join("responder.pid")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("responder.log")
    }

    fn nets(&self) -> PathBuf {
        self.dir.join("nets")
    }

    pub fn net_dir(&self, network: &str) -> PathBuf {
        self.nets().join(network)
    }

    /// Takes the store's lock (blocking), creating the directory.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<File>, StoreError> {
        fs::create_dir_all(&self.dir).map_err(err("creating", &self.dir))?;
        let path = self.lock_path();
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(err("opening", &path))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StoreError {
                what: "locking",
                path,
                source: e.into(),
            }
        })
    }

    /// Every network with its attachments, handed to `f` one at a time as they are read
    /// (a starting responder loads 50,000 without holding them twice).
    pub fn load(
        &self,
        mut f: impl FnMut(&NetworkConf, Attachment),
    ) -> Result<Vec<NetworkConf>, StoreError> {
        let mut out = Vec::new();
        let mut names = self.network_names()?;
        names.sort();
        for name in names {
            let Some(conf) = self.network(&name)? else {
                continue;
            };
            self.each_attachment(&name, |a| f(&conf, a))?;
            out.push(conf);
        }
        Ok(out)
    }

    pub fn network(&self, network: &str) -> Result<Option<NetworkConf>, StoreError> {
        read_json(&self.net_dir(network).join("network.json"))
    }

    /// The attachment files of `network` (not their contents).
    fn attachment_files(&self, network: &str) -> Result<Vec<fs::DirEntry>, StoreError> {
        let dir = self.net_dir(network);
        match fs::read_dir(&dir) {
            Ok(entries) => Ok(entries
                .flatten()
                .filter(|e| {
                    let name = e.file_name();
                    let name = name.as_encoded_bytes();
                    name != b"network.json" && !name.starts_with(b".")
                })
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(err("listing", &dir)(e)),
        }
    }

    /// Whether `network` has an attachment, without reading any.
    pub fn has_attachments(&self, network: &str) -> Result<bool, StoreError> {
        Ok(!self.attachment_files(network)?.is_empty())
    }

    /// Calls `f` with every attachment of `network`, one at a time.
    pub fn each_attachment(
        &self,
        network: &str,
        mut f: impl FnMut(Attachment),
    ) -> Result<(), StoreError> {
        for e in self.attachment_files(network)? {
            // A file that does not decode (not ours: ours are renamed into place whole)
            // must not hide every other name: it is reported and skipped.
            match read_json::<Attachment>(&e.path()) {
                Ok(Some(a)) => f(a),
                Ok(None) => {}
                Err(e) => eprintln!("podnet-dns: skipping {e}"),
            }
        }
        Ok(())
    }

    pub fn attachments(&self, network: &str) -> Result<Vec<Attachment>, StoreError> {
        let mut out = Vec::new();
        self.each_attachment(network, |a| out.push(a))?;
        Ok(out)
    }

    pub fn attachment(&self, network: &str, key: &str) -> Result<Option<Attachment>, StoreError> {
        read_json(&self.net_dir(network).join(key))
    }

    /// Writes the network's file when it changed.
    pub fn put_network(&self, conf: &NetworkConf) -> Result<(), StoreError> {
        if self.network(&conf.name)?.as_ref() == Some(conf) {
            return Ok(());
        }
        write_json(&self.net_dir(&conf.name).join("network.json"), conf)
    }

    pub fn put_attachment(&self, network: &str, a: &Attachment) -> Result<(), StoreError> {
        write_json(&self.net_dir(network).join(a.key()), a)
    }

    /// Removes one attachment; `true` when it existed.
    pub fn remove_attachment(&self, network: &str, key: &str) -> Result<bool, StoreError> {
        let path = self.net_dir(network).join(key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(err("removing", &path)(e)),
        }
    }

    /// Removes a network that has no attachment left; `true` when it went.
    pub fn remove_network_if_empty(&self, network: &str) -> Result<bool, StoreError> {
        if self.has_attachments(network)? {
            return Ok(false);
        }
        let dir = self.net_dir(network);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(true),
            Err(e) => Err(err("removing", &dir)(e)),
        }
    }

    /// The networks that have a directory.
    pub fn network_names(&self) -> Result<Vec<String>, StoreError> {
        let nets = self.nets();
        match fs::read_dir(&nets) {
            Ok(e) => Ok(e
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(err("listing", &nets)(e)),
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StoreError> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError {
                what: "decoding",
                path: path.to_owned(),
                source: std::io::Error::new(ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err("reading", path)(e)),
    }
}

/// Writes `value` to a temporary file beside `path` and renames it into place.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let dir = path.parent().expect("store paths have a parent");
    fs::create_dir_all(dir).map_err(err("creating", dir))?;
    let name = path.file_name().expect("store paths name a file");
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let body = serde_json::to_vec(value).expect("records serialize");
    let mut f = File::create(&tmp).map_err(err("creating", &tmp))?;
    f.write_all(&body).map_err(err("writing", &tmp))?;
    drop(f);
    fs::rename(&tmp, path).map_err(err("renaming into", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn att(cid: &str, name: &str, ip: &str) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            names: vec![name.into()],
            ips: vec![ip.parse().unwrap()],
            upstreams: vec![],
            seq: 1,
        }
    }

    #[test]
    fn round_trips_networks_and_attachments() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::new(d.path());
        let conf = NetworkConf {
            name: "podman".into(),
            domain: "dns.podman".into(),
            gateways: vec!["10.88.0.1".parse().unwrap()],
            subnets: vec!["10.88.0.0/16".parse().unwrap()],
            bridge: "podman0".into(),
            port: 53,
            upstreams: vec![],
        };
        s.put_network(&conf).unwrap();
        s.put_attachment("podman", &att("abc", "hugo", "10.88.0.10"))
            .unwrap();
        s.put_attachment("podman", &att("def", "proxy", "10.88.0.11"))
            .unwrap();
        let mut loaded = Vec::new();
        let all = s.load(|c, a| loaded.push((c.name.clone(), a))).unwrap();
        assert_eq!(all, [conf]);
        assert_eq!(loaded.len(), 2);
        assert!(s.has_attachments("podman").unwrap());
        assert!(!s.remove_network_if_empty("podman").unwrap());
        assert!(s.remove_attachment("podman", "abc.eth0").unwrap());
        assert!(!s.remove_attachment("podman", "abc.eth0").unwrap());
        assert!(s.remove_attachment("podman", "def.eth0").unwrap());
        assert!(s.remove_network_if_empty("podman").unwrap());
        assert!(!s.has_attachments("podman").unwrap());
        assert!(s
            .load(|_, _| panic!("no attachment left"))
            .unwrap()
            .is_empty());
    }
}
