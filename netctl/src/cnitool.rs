//! `netctl add|check|del|gc|status NETWORK [TARGET]`: the cnitool equivalent, on the
//! runtime side of `cni` (result cache included, so DEL and CHECK get `prevResult`).

use std::path::{Path, PathBuf};

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{Attachment, CniArgs, NetConfList};
use serde_json::{Map, Value};

use crate::error::{Error, Result, Verb};
use crate::target::Target;

pub(crate) const DEFAULT_NETCONFPATH: &str = "/etc/cni/net.d";
pub(crate) const DEFAULT_CNI_PATH: &str = "/opt/cni/bin";
pub(crate) const CACHE_DIR: &str = "/var/lib/cni";

/// The network named `name` among the `.conflist`, `.conf` and `.json` files of `dir`
/// (a single-plugin `.conf` counts as a list of one, as libcni reads it).
pub(crate) fn find_network(dir: &Path, name: &str) -> Result<NetConfList> {
    Ok(cni::runtime::find_network(dir, name)?.0)
}

pub(crate) struct Invocation {
    pub netconfpath: PathBuf,
    pub cni_path: String,
    pub cni_args: String,
    pub capability_args: Option<String>,
    pub ifname: String,
    pub container_id: Option<String>,
}

impl Invocation {
    fn runtime(&self) -> CniRuntime {
        CniRuntime::new(cni::runtime::split_path(&self.cni_path), CACHE_DIR)
    }

    fn conf(&self, target: &Target) -> Result<RuntimeConf> {
        let caps: Map<String, Value> = match &self.capability_args {
            Some(s) => serde_json::from_str(s).map_err(|e| {
                Error::invalid("CAP_ARGS / --cap-args", format!("not a JSON object: {e}"))
            })?,
            None => Map::new(),
        };
        // As cnitool: a container id derived from the namespace path unless given.
        let id = self.container_id.clone().unwrap_or_else(|| {
            let h = target
                .path
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                });
            format!("netctl-{h:016x}")
        });
        Ok(RuntimeConf {
            container_id: id,
            netns: Some(target.path.clone()),
            ifname: self.ifname.clone(),
            args: CniArgs::parse(&self.cni_args).map_err(|e| Error::invalid("CNI_ARGS", e.msg))?,
            capability_args: caps,
        })
    }

    /// One CNI verb of the runtime on `network` (ADD, CHECK and DEL on `target`); the
    /// result of an ADD.
    pub(crate) fn run(
        &self,
        verb: Verb,
        network: &str,
        target: Option<&str>,
    ) -> Result<Option<Value>> {
        let list = find_network(&self.netconfpath, network)?;
        let rt = self.runtime();
        let err = Error::cni(verb, network);
        let conf = || -> Result<RuntimeConf> {
            let spec = target.ok_or_else(|| Error::invalid(verb.as_str(), "needs a TARGET"))?;
            self.conf(&Target::resolve(spec)?)
        };
        match verb {
            Verb::Status => rt.status(&list).map(|()| None).map_err(err),
            Verb::Gc => {
                // Valid: every cached attachment of the network whose namespace still exists.
                let valid: Vec<Attachment> = rt
                    .cache
                    .list(network)
                    .map_err(&err)?
                    .into_iter()
                    .filter(|c| c.netns.as_deref().is_some_and(|p| Path::new(p).exists()))
                    .map(|c| Attachment {
                        container_id: c.container_id,
                        ifname: c.if_name,
                    })
                    .collect();
                rt.gc(&list, &valid).map(|()| None).map_err(err)
            }
            Verb::Add => {
                let r = rt.add(&list, &conf()?).map_err(&err)?;
                Ok(Some(r.encode(list.version().map_err(&err)?).map_err(&err)?))
            }
            Verb::Check => rt.check(&list, &conf()?).map(|()| None).map_err(err),
            Verb::Del => rt.del(&list, &conf()?).map(|()| None).map_err(err),
        }
    }
}
