//! Between the plugin and the daemon: one JSON request line over the daemon's Unix
//! socket, one JSON reply line back. Only podnet's own plugin speaks it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use cni::{CniError, CniResult};
use serde::{Deserialize, Serialize};

use crate::conf::Wanted;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "UPPERCASE")]
pub enum Request {
    /// Acquire (or return the lease already held for) an attachment.
    Add(Attachment),
    /// Release an attachment's lease.
    Del(Attachment),
    /// Whether an attachment's lease is held and current.
    Check(Attachment),
    /// Release the leases of `network` whose attachments are not in `valid`.
    Gc {
        network: String,
        valid: Vec<cni::skel::Attachment>,
    },
    /// Whether the daemon answers.
    Ping,
}

/// What identifies and shapes one lease.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub network: String,
    pub ifname: String,
    /// Absolute; `None` for a DEL without a namespace.
    pub netns: Option<String>,
    pub wanted: Wanted,
    pub priority: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<CniResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<CniError>,
}

/// Why a call did not get a reply.
#[derive(Debug)]
pub enum CallError {
    /// Nothing listens on the socket (or it is gone).
    NotRunning(std::io::Error),
    /// The daemon took the request and did not answer properly.
    Broken(String),
}

/// Sends `req` and waits up to `timeout` for the reply.
pub fn call(socket: &Path, req: &Request, timeout: Duration) -> Result<Reply, CallError> {
    let mut s = UnixStream::connect(socket).map_err(CallError::NotRunning)?;
    let broken = |e: std::io::Error| CallError::Broken(format!("{}: {e}", socket.display()));
    s.set_read_timeout(Some(timeout)).map_err(broken)?;
    let mut line = serde_json::to_vec(req).expect("requests serialize");
    line.push(b'\n');
    s.write_all(&line).map_err(broken)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply).map_err(broken)?;
    if reply.is_empty() {
        return Err(CallError::Broken(format!(
            "{}: the daemon closed the connection without a reply",
            socket.display()
        )));
    }
    serde_json::from_str(&reply)
        .map_err(|e| CallError::Broken(format!("{}: a bad reply: {e}", socket.display())))
}
