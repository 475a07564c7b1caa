//! The result cache, in libcni's on-disk format so that tools of either family read it:
//! `<cacheDir>/results/<network>-<containerID>-<ifname>`, a JSON object of `kind:
//! cniCacheV1` holding the config (base64), the runtime arguments and the result.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{CniError, ErrorCode};

/// The kind tag libcni writes and accepts.
pub const CACHE_KIND: &str = "cniCacheV1";
/// libcni's default cache directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/cni";

/// One attachment as cached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedAttachment {
    pub kind: String,
    pub container_id: String,
    #[serde(with = "b64")]
    pub config: Vec<u8>,
    pub if_name: String,
    pub network_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_args: Vec<[String; 2]>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capability_args: Map<String, Value>,
    /// Absent while ADD is under way (podnet writes the entry before the first plugin
    /// runs, so that an interrupted ADD is still found by GC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(serde::de::Error::custom)
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ResultCache {
    dir: PathBuf,
}

fn io_err(what: String, e: &std::io::Error) -> CniError {
    CniError::from_source(ErrorCode::IO_FAILURE, what, e)
}

impl ResultCache {
    pub fn new(cache_dir: impl Into<PathBuf>) -> Self {
        ResultCache {
            dir: cache_dir.into(),
        }
    }

    fn results_dir(&self) -> PathBuf {
        self.dir.join("results")
    }

    /// The file of one attachment (names were validated by the caller).
    pub fn path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.results_dir()
            .join(format!("{network}-{container_id}-{ifname}"))
    }

    /// Writes atomically (temp file, fsync, rename): a crash leaves the old or the new
    /// entry, never a torn one.
    pub fn write(&self, entry: &CachedAttachment) -> Result<(), CniError> {
        let dir = self.results_dir();
        create_private_dir(&dir)?;
        let path = self.path(&entry.network_name, &entry.container_id, &entry.if_name);
        let bytes = serde_json::to_vec(entry).expect("cache entries serialize");
        let mut tmp = tempfile_in(&dir)?;
        tmp.1
            .write_all(&bytes)
            .and_then(|()| tmp.1.sync_all())
            .map_err(|e| io_err(format!("writing {}", tmp.0.display()), &e))?;
        fs::rename(&tmp.0, &path).map_err(|e| {
            let _ = fs::remove_file(&tmp.0);
            io_err(format!("renaming into {}", path.display()), &e)
        })
    }

    pub fn read(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<CachedAttachment>, CniError> {
        read_entry(&self.path(network, container_id, ifname))
    }

    /// Removes an entry; a missing one is fine.
    pub fn remove(&self, network: &str, container_id: &str, ifname: &str) -> Result<(), CniError> {
        let path = self.path(network, container_id, ifname);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(io_err(format!("removing {}", path.display()), &e))
            }
            _ => Ok(()),
        }
    }

    /// Every cached attachment of `network` (entries that fail to parse are skipped:
    /// they belong to no network we can name).
    pub fn list(&self, network: &str) -> Result<Vec<CachedAttachment>, CniError> {
        let dir = self.results_dir();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(format!("listing {}", dir.display()), &e)),
        };
        let prefix = format!("{network}-");
        let mut out = Vec::new();
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&prefix) {
                continue;
            }
            if let Ok(Some(att)) = read_entry(&entry.path()) {
                if att.network_name == network {
                    out.push(att);
                }
            }
        }
        Ok(out)
    }
}

fn read_entry(path: &Path) -> Result<Option<CachedAttachment>, CniError> {
    match fs::read(path) {
        Ok(bytes) => crate::config::decode::<CachedAttachment>(
            &format!("cache entry {}", path.display()),
            &bytes,
        )
        .map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()), &e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), CniError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_err(format!("creating {}", dir.display()), &e))
}

fn tempfile_in(dir: &Path) -> Result<(PathBuf, fs::File), CniError> {
    use std::os::unix::fs::OpenOptionsExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nonce = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = dir.join(format!(".tmp-{}-{nonce}", std::process::id()));
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map(|f| (path.clone(), f))
        .map_err(|e| io_err(format!("creating {}", path.display()), &e))
}
