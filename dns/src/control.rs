//! The control protocol between the plugin and the responder: one JSON line each way
//! over the Unix socket `<state>/control.sock`. The plugin's request returns only when
//! the responder's memory (and its listeners) already reflect the change, which is what
//! makes a name resolvable the moment ADD returns.

use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::store::Attachment;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// Re-read the network's file (binding its gateways) and the attachment `key`.
    Add {
        network: String,
        key: String,
    },
    /// Forget the attachment; the network goes with its last attachment, the responder
    /// with its last network.
    Del {
        network: String,
        key: String,
    },
    /// What the responder holds for one attachment.
    Get {
        network: String,
        key: String,
    },
    /// Re-read one network entirely (after GC).
    Sync {
        network: String,
    },
    Status,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The responder exits after this reply (its last network went).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exiting: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Attachment>,
    /// `network: [listening addresses]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<(String, Vec<IpAddr>, usize)>,
    #[serde(default)]
    pub pid: u32,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply {
            error: Some(msg.into()),
            ..Reply::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Nobody listens (no responder, or a dead one's socket).
    #[error("the DNS responder is not running ({0})")]
    NotRunning(std::io::Error),
    #[error("talking to the DNS responder: {0}")]
    Io(#[from] std::io::Error),
    #[error("the DNS responder sent a bad reply: {0}")]
    Decode(#[from] serde_json::Error),
}

/// Sends one request and waits for the reply (up to `timeout`).
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, ControlError> {
    // Only "no socket" and "nobody accepts" mean no responder; any other failure (a
    // signal, a full backlog) is reported, never taken for an absent responder (a DEL
    // would then leave the record served).
    let mut s = UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            ControlError::NotRunning(e)
        }
        _ => ControlError::Io(e),
    })?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    if reply.is_empty() {
        return Err(ControlError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the responder closed the connection without a reply",
        )));
    }
    Ok(serde_json::from_str(&reply)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json_lines() {
        let r = Request::Add {
            network: "podman".into(),
            key: "abc.eth0".into(),
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"op":"add","network":"podman","key":"abc.eth0"}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        assert_eq!(
            serde_json::to_string(&Reply::default()).unwrap(),
            r#"{"pid":0}"#
        );
    }
}
