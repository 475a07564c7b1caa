//! Delegation from a plugin to its IPAM plugin through the exec protocol (`ipam.type`,
//! found in `CNI_PATH`), with the plugin's own arguments and stdin, as the spec says.
//! Any IPAM plugin works; none is a Rust dependency.

use crate::error::CniError;
use crate::result::CniResult;
use crate::runtime::exec::Running;
use crate::runtime::{Invocation, PluginExec};
use crate::skel::{CmdArgs, Command};

/// An IPAM call under way.
#[derive(Debug)]
pub struct Pending {
    ipam_type: String,
    command: Command,
    running: Running,
}

impl Pending {
    /// Waits for the IPAM plugin; its stdout.
    fn output(self) -> Result<Vec<u8>, CniError> {
        let (t, cmd) = (self.ipam_type, self.command.as_str());
        self.running.wait().map_err(|e| CniError {
            msg: format!("ipam plugin {t:?} {cmd}: {}", e.msg),
            ..e
        })
    }

    /// Waits for an ADD; its result, converted to the model.
    pub fn result(self) -> Result<CniResult, CniError> {
        let what = format!("result of ipam plugin {:?}", self.ipam_type);
        let out = self.output()?;
        let value: serde_json::Value = crate::config::decode(&what, &out)?;
        Ok(CniResult::decode(&value)?.0)
    }

    /// Waits for a DEL or CHECK.
    pub fn done(self) -> Result<(), CniError> {
        self.output().map(drop)
    }
}

/// Starts the IPAM plugin with the plugin's own arguments and stdin.
pub fn start(ipam_type: &str, cmd: Command, args: &CmdArgs) -> Result<Pending, CniError> {
    let exec = PluginExec::new(args.path.clone());
    let binary = exec.find(ipam_type).map_err(|e| CniError {
        msg: format!("ipam.type: {}", e.msg),
        ..e
    })?;
    let call = Invocation {
        command: cmd,
        container_id: &args.container_id,
        netns: args.netns.as_deref(),
        ifname: &args.ifname,
        args: &args.args,
    };
    let running = exec.start(&binary, &call, &args.stdin)?;
    Ok(Pending {
        ipam_type: ipam_type.to_owned(),
        command: cmd,
        running,
    })
}

/// ADD through the IPAM plugin; its result, converted to the model.
pub fn add(ipam_type: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
    start(ipam_type, Command::Add, args)?.result()
}

pub fn del(ipam_type: &str, args: &CmdArgs) -> Result<(), CniError> {
    start(ipam_type, Command::Del, args)?.done()
}

pub fn check(ipam_type: &str, args: &CmdArgs) -> Result<(), CniError> {
    start(ipam_type, Command::Check, args)?.done()
}

/// STATUS and GC carry no attachment: only `CNI_PATH` and the config.
pub fn status_or_gc(
    ipam_type: &str,
    cmd: Command,
    path: &[std::path::PathBuf],
    stdin: &[u8],
) -> Result<(), CniError> {
    let exec = PluginExec::new(path.to_vec());
    let binary = exec.find(ipam_type)?;
    let none = crate::CniArgs::default();
    let call = Invocation {
        command: cmd,
        container_id: "",
        netns: None,
        ifname: "",
        args: &none,
    };
    exec.exec(&binary, &call, stdin)
        .map(drop)
        .map_err(|e| CniError {
            msg: format!("ipam plugin {ipam_type:?} {}: {}", cmd.as_str(), e.msg),
            ..e
        })
}

/// STATUS or GC forwarded to the IPAM plugin the config names, if any.
pub fn forward(
    ipam: Option<&crate::config::IpamConf>,
    cmd: Command,
    path: &[std::path::PathBuf],
    stdin: &[u8],
) -> Result<(), CniError> {
    match ipam {
        Some(i) => status_or_gc(&i.plugin_type, cmd, path, stdin),
        None => Ok(()),
    }
}
