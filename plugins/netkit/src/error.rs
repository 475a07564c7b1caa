//! netkit's errors: each keeps its source and, where the kernel answered, the errno.

use std::path::PathBuf;

use cni::{CniError, ErrorCode};
use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("opening network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a network namespace")]
    NotNetns { path: PathBuf },
    #[error("entering network namespace {what}")]
    Enter {
        what: String,
        #[source]
        source: Errno,
    },
    #[error("creating network namespace {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("deleting network namespace {path}")]
    Delete {
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("netlink: {op}")]
    Netlink {
        op: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("opening netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("link {0:?} not found")]
    LinkNotFound(String),
    #[error("invalid sysctl key {0:?}: only net.* keys of a namespace are allowed")]
    SysctlKey(String),
    #[error("sysctl {key}")]
    Sysctl {
        key: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {what} {value:?}")]
    Invalid { what: &'static str, value: String },
    #[error("{what}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The errno the kernel answered with, when it did.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Enter { source, .. }
            | Error::Create { source, .. }
            | Error::Delete { source, .. } => Some(*source),
            Error::Netlink {
                source: rtnetlink::Error::NetlinkError(msg),
                ..
            } => msg.code.map(|c| Errno::from_raw(-c.get())),
            Error::Open { source, .. }
            | Error::Sysctl { source, .. }
            | Error::Socket(source)
            | Error::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }

    /// Whether the object is simply gone (a DEL treats this as done).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::LinkNotFound(_) | Error::NotNetns { .. })
            || matches!(
                self.errno(),
                Some(Errno::ENOENT | Errno::ENODEV | Errno::ESRCH | Errno::EADDRNOTAVAIL)
            )
    }

    /// Whether the object already exists.
    pub fn is_exists(&self) -> bool {
        self.errno() == Some(Errno::EEXIST)
    }
}

/// The one place netkit failures get their CNI codes.
impl From<Error> for CniError {
    fn from(e: Error) -> CniError {
        let code = match &e {
            // A namespace that is gone, or a pin whose namespace is gone.
            Error::Open { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                ErrorCode::UNKNOWN_CONTAINER
            }
            Error::NotNetns { .. } => ErrorCode::UNKNOWN_CONTAINER,
            Error::Open { .. }
            | Error::Enter { .. }
            | Error::Create { .. }
            | Error::Delete { .. } => ErrorCode::NAMESPACE_FAILURE,
            Error::Netlink { .. } | Error::LinkNotFound(_) => ErrorCode::NETLINK_FAILURE,
            Error::Socket(_) | Error::Sysctl { .. } | Error::Io { .. } => ErrorCode::IO_FAILURE,
            Error::SysctlKey(_) | Error::Invalid { .. } => ErrorCode::INVALID_NETWORK_CONFIG,
        };
        CniError::new(code, e.to_string()).with_details(cni::error::chain(&e))
    }
}
