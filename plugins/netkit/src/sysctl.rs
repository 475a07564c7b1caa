//! Per-namespace sysctls. Only `net.*` keys are accepted: they are the ones a network
//! namespace owns, so a call can never change a host-wide setting.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::ns::NetNs;

/// `/proc/sys/...` for a key in dotted (`net.ipv4.ip_forward`) or slashed
/// (`net/ipv4/conf/eth0.100/forwarding`, for names with dots) form.
pub fn sysctl_path(key: &str) -> Result<PathBuf> {
    let rel = if key.contains('/') {
        key.to_owned()
    } else {
        key.replace('.', "/")
    };
    let ok = rel.starts_with("net/")
        && rel
            .split('/')
            .all(|p| !p.is_empty() && p != "." && p != "..")
        && !rel.contains('\0');
    if !ok {
        return Err(Error::SysctlKey(key.into()));
    }
    Ok(PathBuf::from("/proc/sys").join(rel))
}

/// Reads a sysctl of `ns` (trimmed).
pub fn get(ns: &NetNs, key: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    // /proc/sys/net resolves to the namespace of the thread that opens the file.
    let read = ns.run(|| std::fs::read_to_string(&path))?;
    read.map(|s| s.trim().to_owned())
        .map_err(|source| Error::Sysctl {
            key: key.into(),
            source,
        })
}

/// Writes a sysctl of `ns` and returns the value it had before.
pub fn set(ns: &NetNs, key: &str, value: &str) -> Result<String> {
    let path = sysctl_path(key)?;
    let done = ns.run(|| -> std::io::Result<String> {
        let old = std::fs::read_to_string(&path)?;
        std::fs::write(&path, value)?;
        Ok(old.trim().to_owned())
    })?;
    done.map_err(|source| Error::Sysctl {
        key: key.into(),
        source,
    })
}

/// Turns a sysctl of the calling thread's namespace on (`1`) unless it is on already.
/// /proc/sys/net resolves to the opener's namespace, so no namespace is entered: what a
/// plugin does on the host side on every ADD (forwarding).
pub fn ensure_on_here(key: &str) -> Result<()> {
    let path = sysctl_path(key)?;
    let failed = |source| Error::Sysctl {
        key: key.into(),
        source,
    };
    if std::fs::read_to_string(&path).map_err(failed)?.trim() != "1" {
        std::fs::write(&path, "1").map_err(failed)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.100/forwarding").unwrap(),
            PathBuf::from("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
        );
        for bad in [
            "kernel.hostname",
            "net..x",
            "net/../kernel/x",
            "vm.swappiness",
            "",
        ] {
            assert!(
                matches!(sysctl_path(bad), Err(Error::SysctlKey(_))),
                "{bad}"
            );
        }
    }
}
