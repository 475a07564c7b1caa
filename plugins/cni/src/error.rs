//! CNI errors: the spec's error codes and the `{cniVersion, code, msg, details}` object.
//!
//! Every failure a plugin reports goes through [`CniError`]; modules keep their own
//! `thiserror` types and convert into it in one place (their `From` impl), so the
//! code chosen for each failure is visible and reviewable.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::version::CniVersion;

/// A CNI error code. The well-known values are associated constants; plugin-specific
/// codes are 100 and above and documented by each plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ErrorCode(pub u32);

impl ErrorCode {
    /// The config's version is not one the plugin serves, or the command is not
    /// allowed in that version.
    pub const INCOMPATIBLE_VERSION: ErrorCode = ErrorCode(1);
    /// A config field the plugin does not support; the message names key and value.
    pub const UNSUPPORTED_FIELD: ErrorCode = ErrorCode(2);
    /// The container (its namespace) is unknown or does not exist.
    pub const UNKNOWN_CONTAINER: ErrorCode = ErrorCode(3);
    /// A `CNI_*` environment variable is missing or invalid; the message names it.
    pub const INVALID_ENVIRONMENT: ErrorCode = ErrorCode(4);
    /// An I/O failure (files, sockets, netlink).
    pub const IO_FAILURE: ErrorCode = ErrorCode(5);
    /// The config or result could not be decoded.
    pub const DECODING_FAILURE: ErrorCode = ErrorCode(6);
    /// The config decoded but is invalid.
    pub const INVALID_NETWORK_CONFIG: ErrorCode = ErrorCode(7);
    /// A transient condition: the runtime should retry.
    pub const TRY_AGAIN_LATER: ErrorCode = ErrorCode(11);
    /// STATUS: the plugin cannot serve ADD now.
    pub const PLUGIN_NOT_AVAILABLE: ErrorCode = ErrorCode(50);
    /// STATUS: not available, and existing containers may have limited connectivity.
    pub const LIMITED_CONNECTIVITY: ErrorCode = ErrorCode(51);
    /// Runtime side: a plugin binary was not found in `CNI_PATH` (libcni's wording).
    pub const PLUGIN_NOT_FOUND: ErrorCode = ErrorCode(100);
    /// Runtime side: a plugin did not answer within the timeout.
    pub const PLUGIN_TIMEOUT: ErrorCode = ErrorCode(101);
    /// Runtime side: a plugin failed without a decodable error object.
    pub const PLUGIN_FAILED: ErrorCode = ErrorCode(102);
    /// A link, address or route operation failed in the kernel.
    pub const NETLINK_FAILURE: ErrorCode = ErrorCode(110);
    /// A namespace could not be entered or is not a network namespace.
    pub const NAMESPACE_FAILURE: ErrorCode = ErrorCode(111);
    /// CHECK found the kernel state differs from the recorded result.
    pub const CHECK_FAILED: ErrorCode = ErrorCode(120);
    /// IPAM: a requested address is held by another attachment (the holder is named).
    pub const ADDRESS_IN_USE: ErrorCode = ErrorCode(130);
    /// IPAM: no free address is left in a range set (the set is named).
    pub const RANGE_EXHAUSTED: ErrorCode = ErrorCode(131);
    /// IPAM: a requested address is in no range set, or is a gateway.
    pub const ADDRESS_NOT_AVAILABLE: ErrorCode = ErrorCode(132);
    /// portmap: a host port is already published by another container (the holder is named).
    pub const PORT_IN_USE: ErrorCode = ErrorCode(133);
    /// dnsname: the DNS responder could not start, bind its addresses or apply a change.
    pub const DNS_RESPONDER: ErrorCode = ErrorCode(140);
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The error object of the spec. Printed on stdout with a non-zero exit status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "camelCase")]
pub struct CniError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cni_version: Option<String>,
    pub code: ErrorCode,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {})", self.msg, self.code)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>) -> Self {
        CniError {
            cni_version: None,
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    pub fn with_details(mut self, details: impl Into<String>) -> Self {
        self.details = details.into();
        self
    }

    /// Every failure of a best-effort operation (a DEL, a GC) as one error: the first's
    /// code, all messages and details joined; `Ok` when there was none.
    pub fn join(mut failures: Vec<CniError>) -> Result<(), CniError> {
        match failures.len() {
            0 => Ok(()),
            1 => Err(failures.remove(0)),
            _ => {
                let joined = |f: fn(&CniError) -> &str| {
                    failures
                        .iter()
                        .map(f)
                        .filter(|s| !s.is_empty())
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                let (msg, details) = (joined(|e| &e.msg), joined(|e| &e.details));
                Err(CniError::new(failures[0].code, msg).with_details(details))
            }
        }
    }

    /// Stamps the version the answer is given in (the skeleton does this for every error).
    pub fn in_version(mut self, version: CniVersion) -> Self {
        self.cni_version = Some(version.to_string());
        self
    }

    /// Wraps any error with a code, keeping its whole source chain in `details`.
    pub fn from_source(
        code: ErrorCode,
        msg: impl Into<String>,
        err: &(dyn std::error::Error + 'static),
    ) -> Self {
        CniError::new(code, msg).with_details(chain(err))
    }

    pub fn incompatible_version(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::INCOMPATIBLE_VERSION, msg)
    }
    pub fn invalid_env(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::INVALID_ENVIRONMENT, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::INVALID_NETWORK_CONFIG, msg)
    }
    pub fn decoding(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::DECODING_FAILURE, msg)
    }
    pub fn io(msg: impl Into<String>) -> Self {
        CniError::new(ErrorCode::IO_FAILURE, msg)
    }
}

/// Renders an error and its sources as `a: b: c`.
pub fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_every_failure() {
        assert!(CniError::join(Vec::new()).is_ok());
        let one = CniError::io("a");
        assert_eq!(CniError::join(vec![one.clone()]).unwrap_err(), one);
        let e = CniError::join(vec![
            CniError::io("deleting eth0").with_details("EBUSY"),
            CniError::invalid_config("ipam plugin \"host-local\" DEL: bad"),
        ])
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::IO_FAILURE);
        assert_eq!(e.msg, "deleting eth0; ipam plugin \"host-local\" DEL: bad");
        assert_eq!(e.details, "EBUSY");
    }

    #[test]
    fn serializes_in_spec_shape() {
        let e = CniError::invalid_env("required env variables [CNI_NETNS] missing")
            .in_version(CniVersion::V1_0_0);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cniVersion": "1.0.0", "code": 4,
                "msg": "required env variables [CNI_NETNS] missing"})
        );
        let back: CniError = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }
}
