//! The record `netctl link` keeps of a pair (`/run/podnet/links/<hash>.json`), and the
//! one way to read it back: [`LinkRecord::decode`], which takes only a record whose
//! interface names and namespace paths could have come from `link` (a torn or edited
//! file is treated as no record, never as names to delete).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One end of a link: the namespace it was made in and its interface there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct End {
    /// The namespace as the user named it (`pid:123`, `/run/netns/x`, a container).
    pub target: String,
    pub path: PathBuf,
    /// (device, inode) of the namespace when the link was made.
    pub ns_id: (u64, u64),
    pub ifname: String,
    pub addr: IpAddr,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub a: End,
    pub b: End,
    pub mtu: Option<u32>,
}

impl End {
    fn plausible(&self) -> bool {
        let path = self.path.as_os_str().as_encoded_bytes();
        cni::validate::interface_name(&self.ifname).is_ok()
            && self.path.is_absolute()
            && !path.contains(&0)
    }
}

impl LinkRecord {
    /// The record in `bytes`, or `None` when it is not one `link` could have written.
    pub fn decode(bytes: &[u8]) -> Option<LinkRecord> {
        let r: LinkRecord = serde_json::from_slice(bytes).ok()?;
        (r.a.plausible() && r.b.plausible()).then_some(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("records serialize")
    }
}
