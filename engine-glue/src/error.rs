//! The engine's errors. Each names the object at fault (container, pod, network, flag or
//! file) and keeps its source; the CLI prints them and picks the exit status.

use std::path::PathBuf;

/// What went wrong, by kind.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("restoring podnet's nftables rules: {0}")]
    Reload(#[from] netkit::nft::NftError),
    #[error("no {kind} {name:?}")]
    NotFound { kind: &'static str, name: String },
    #[error("{kind} name {name:?} is already in use by {id}")]
    Exists {
        kind: &'static str,
        name: String,
        id: String,
    },
    #[error("{what} is in use by {by}")]
    InUse { what: String, by: String },
    #[error("{field}: {msg}")]
    Invalid { field: String, msg: String },
    #[error("{what}: {msg}")]
    State { what: String, msg: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("network {network:?}: {source}")]
    Cni {
        network: String,
        #[source]
        source: cni::CniError,
    },
    #[error("network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        #[source]
        source: netkit::Error,
    },
    #[error("OCI runtime {runtime} {verb}: {msg}")]
    Runtime {
        runtime: String,
        verb: &'static str,
        msg: String,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(field: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            msg: msg.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub fn state(what: impl Into<String>, msg: impl Into<String>) -> Error {
        Error::State {
            what: what.into(),
            msg: msg.into(),
        }
    }

    /// The CLI's exit status: 125 for the engine's own failures, as Podman does; 2 for
    /// bad input.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } => 2,
            _ => 125,
        }
    }

    /// Ok when `errors` is empty, the one error, or all of them joined: best-effort
    /// teardown reports everything that failed.
    pub fn collect(mut errors: Vec<Error>) -> Result<()> {
        match errors.len() {
            0 => Ok(()),
            1 => Err(errors.remove(0)),
            _ => Err(Error::Many(errors)),
        }
    }
}
