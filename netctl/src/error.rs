//! netctl's errors: what went wrong, naming the target, flag or object at fault, with
//! the underlying error kept as the source. `main` prints one line of it.

use std::net::IpAddr;

use cni::CniError;
use ipnetwork::IpNetwork;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// A target that names no network namespace (every form tried is in the message).
    #[error("target {spec:?}: {why}")]
    Target { spec: String, why: String },
    /// A flag or argument that cannot be used as given.
    #[error("{flag}: {why}")]
    Invalid { flag: String, why: String },
    #[error("{0} and {1} are the same network namespace")]
    SameNamespace(String, String),
    #[error("{a} and {b} are already linked ({ends}); unlink them first to change it")]
    AlreadyLinked { a: String, b: String, ends: String },
    #[error("interface name {name} is already taken in {target}")]
    NameTaken { name: String, target: String },
    #[error("address {addr} is already taken in {target}")]
    AddressTaken { addr: IpAddr, target: String },
    #[error("no free address pair left in the link range {0}")]
    RangeExhausted(IpNetwork),
    #[error("{0} and {1} are not linked (see `netctl links`)")]
    NotLinked(String, String),
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    #[error("no namespace {0} under {dir}", dir = netkit::NETNS_RUN_DIR)]
    NoNamespace(String),
    /// A kernel operation, named.
    #[error("{what}: {source}")]
    Netkit {
        what: String,
        #[source]
        source: netkit::Error,
    },
    /// A system call or file operation, named.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("restoring podnet's nftables rules: {0}")]
    Reload(#[source] netkit::nft::NftError),
    #[error(transparent)]
    Discovery(#[from] cni::runtime::DiscoveryError),
    /// A CNI operation of the runtime, with its code.
    #[error("{verb} {network}: {} [CNI code {}]{}", source.msg, source.code.0, details(source))]
    Cni {
        verb: &'static str,
        network: String,
        #[source]
        source: CniError,
    },
}

fn details(e: &CniError) -> String {
    if e.details.is_empty() {
        String::new()
    } else {
        format!(" ({})", e.details)
    }
}

pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn invalid(flag: impl Into<String>, why: impl Into<String>) -> Error {
        Error::Invalid {
            flag: flag.into(),
            why: why.into(),
        }
    }

    /// `netkit` failed at `what`.
    pub(crate) fn netkit(what: impl Into<String>) -> impl FnOnce(netkit::Error) -> Error {
        let what = what.into();
        move |source| Error::Netkit { what, source }
    }

    /// An I/O operation failed at `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// A system call failed at `what`.
    pub(crate) fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> Error {
        let what = what.into();
        move |source| Error::Sys { what, source }
    }

    /// The runtime's CNI `verb` failed on `network`.
    pub(crate) fn cni(verb: Verb, network: &str) -> impl Fn(CniError) -> Error + '_ {
        move |source| Error::Cni {
            verb: verb.as_str(),
            network: network.to_owned(),
            source,
        }
    }
}

/// The runtime's verbs netctl runs, as its command line spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    Add,
    Check,
    Del,
    Gc,
    Status,
}

impl Verb {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Verb::Add => "add",
            Verb::Check => "check",
            Verb::Del => "del",
            Verb::Gc => "gc",
            Verb::Status => "status",
        }
    }
}
