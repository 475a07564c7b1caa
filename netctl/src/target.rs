//! Targets: what a command names a network namespace by.
//!
//! `pid:1234` (that process's namespace), a path (`/proc/1234/ns/net`, any bind mount), a
//! container or pod of the engine (name, id or id prefix, through engine-glue's records
//! under `PODNET_ROOT`), a name pinned under /run/netns. A failure names every form that
//! was tried.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use engine_glue::{Config, Engine, Error as EngineError};
use netkit::{NetNs, NETNS_RUN_DIR};

use crate::error::{Error, Result};

/// A resolved target.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// As the user wrote it.
    pub spec: String,
    pub path: PathBuf,
    /// The namespace's identity (device, inode of its nsfs file).
    pub id: (u64, u64),
}

impl Target {
    pub(crate) fn resolve(spec: &str) -> Result<Target> {
        let fail = |why: String| Error::Target {
            spec: spec.to_owned(),
            why,
        };
        let path = if let Some(pid) = spec.strip_prefix("pid:") {
            let n: u32 = pid
                .parse()
                .map_err(|_| fail(format!("{pid:?} is not a process id")))?;
            let p = PathBuf::from(format!("/proc/{n}/ns/net"));
            if !p.exists() {
                return Err(fail(format!("no process {n} (tried {})", p.display())));
            }
            p
        } else if spec.contains('/') {
            let p = PathBuf::from(spec);
            if !p.exists() {
                return Err(fail(format!("nothing at the path {spec}")));
            }
            p
        } else {
            let engine = Engine::new(Config::from_env());
            match engine.netns_of(spec) {
                Ok(p) => p,
                Err(EngineError::NotFound { .. }) => {
                    let p = Path::new(NETNS_RUN_DIR).join(spec);
                    if !p.exists() {
                        return Err(fail(format!(
                            "no container or pod of that name or id (in {}), no namespace {}, and not pid:N or a path",
                            engine.config.root.display(),
                            p.display()
                        )));
                    }
                    p
                }
                Err(e) => return Err(fail(e.to_string())),
            }
        };
        // Opening checks it is a network namespace (not just any file).
        NetNs::open(&path).map_err(|e| fail(e.to_string()))?;
        let meta = std::fs::metadata(&path).map_err(|e| fail(e.to_string()))?;
        Ok(Target {
            spec: spec.to_owned(),
            path,
            id: (meta.dev(), meta.ino()),
        })
    }

    pub(crate) fn open(&self) -> Result<NetNs> {
        NetNs::open(&self.path).map_err(|e| Error::Target {
            spec: self.spec.clone(),
            why: e.to_string(),
        })
    }
}

/// The identity of the namespace at `path`, if it is still there.
pub(crate) fn id_of(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}
