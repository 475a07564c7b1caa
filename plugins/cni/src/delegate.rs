//! Delegation from a plugin to its IPAM plugin through the exec protocol (`ipam.type`,
//! found in `CNI_PATH`), with the plugin's own arguments and stdin, as the spec says.
//! Any IPAM plugin works; none is a Rust dependency.

use crate::error::CniError;
use crate::result::CniResult;
use crate::runtime::{Invocation, PluginExec};
use crate::skel::{CmdArgs, Command};

fn run(ipam_type: &str, cmd: Command, args: &CmdArgs) -> Result<Vec<u8>, CniError> {
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
    exec.exec(&binary, &call, &args.stdin)
        .map_err(|e| CniError {
            msg: format!("ipam plugin {ipam_type:?} {}: {}", cmd.as_str(), e.msg),
            ..e
        })
}

/// ADD through the IPAM plugin; its result, converted to the model.
pub fn add(ipam_type: &str, args: &CmdArgs) -> Result<CniResult, CniError> {
    let out = run(ipam_type, Command::Add, args)?;
    let value: serde_json::Value =
        crate::config::decode(&format!("result of ipam plugin {ipam_type:?}"), &out)?;
    Ok(CniResult::decode(&value)?.0)
}

pub fn del(ipam_type: &str, args: &CmdArgs) -> Result<(), CniError> {
    run(ipam_type, Command::Del, args).map(drop)
}

pub fn check(ipam_type: &str, args: &CmdArgs) -> Result<(), CniError> {
    run(ipam_type, Command::Check, args).map(drop)
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
