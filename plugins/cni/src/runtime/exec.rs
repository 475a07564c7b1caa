//! Finding a plugin in `CNI_PATH` and executing it with the protocol's environment,
//! stdin and a timeout; decoding its answer or its error.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::args::CniArgs;
use crate::error::{CniError, ErrorCode};
use crate::skel::Command;

/// How plugins are found and run.
#[derive(Debug, Clone)]
pub struct PluginExec {
    /// Directories searched for plugin binaries, in order (`CNI_PATH`).
    pub path: Vec<PathBuf>,
    /// How long one plugin call may take before it is killed.
    pub timeout: Duration,
}

/// Default time one plugin call may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The `CNI_*` values of one call.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub command: Command,
    pub container_id: &'a str,
    pub netns: Option<&'a Path>,
    pub ifname: &'a str,
    pub args: &'a CniArgs,
}

impl PluginExec {
    pub fn new(path: Vec<PathBuf>) -> Self {
        PluginExec {
            path,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The first executable named `plugin_type` in the search path.
    pub fn find(&self, plugin_type: &str) -> Result<PathBuf, CniError> {
        if plugin_type.is_empty() || plugin_type.contains('/') {
            return Err(CniError::invalid_config(format!(
                "invalid plugin type {plugin_type:?}"
            )));
        }
        self.path
            .iter()
            .map(|dir| dir.join(plugin_type))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                let dirs: Vec<String> = self.path.iter().map(|p| p.display().to_string()).collect();
                CniError::new(
                    ErrorCode::PLUGIN_NOT_FOUND,
                    format!(
                        "failed to find plugin {plugin_type:?} in path [{}]",
                        dirs.join(" ")
                    ),
                )
            })
    }

    /// Runs `plugin` and returns its stdout on success; on failure returns its error
    /// object, or a [`ErrorCode::PLUGIN_FAILED`] error carrying its stderr when it
    /// printed none.
    pub fn exec(
        &self,
        plugin: &Path,
        call: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Vec<u8>, CniError> {
        self.start(plugin, call, stdin)?.wait()
    }

    /// Starts `plugin` and returns at once; [`Running::wait`] collects its answer. Lets a
    /// plugin overlap its delegate's work (IPAM) with its own.
    pub fn start(
        &self,
        plugin: &Path,
        call: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Running, CniError> {
        let name = plugin.display().to_string();
        let mut child = Process::new(plugin)
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", call.container_id)
            .env(
                "CNI_NETNS",
                call.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_ARGS", call.args.to_env())
            .env(
                "CNI_PATH",
                std::env::join_paths(&self.path).unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                CniError::from_source(ErrorCode::IO_FAILURE, format!("executing {name}"), &e)
            })?;
        if let Some(mut input) = child.stdin.take() {
            // A plugin may exit without reading stdin (VERSION); a broken pipe is fine.
            let _ = input.write_all(stdin);
        }
        let pid = Pid::from_raw(child.id() as i32);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        Ok(Running {
            name,
            command: call.command,
            pid,
            rx,
            timeout: self.timeout,
        })
    }
}

/// A plugin started by [`PluginExec::start`].
#[derive(Debug)]
pub struct Running {
    name: String,
    command: Command,
    pid: Pid,
    rx: mpsc::Receiver<std::io::Result<std::process::Output>>,
    timeout: Duration,
}

impl Running {
    /// Its stdout on success; its error object (or stderr) on failure; killed on timeout.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let (name, cmd) = (&self.name, self.command.as_str());
        let output = match self.rx.recv_timeout(self.timeout) {
            Ok(out) => out.map_err(|e| {
                CniError::from_source(ErrorCode::IO_FAILURE, format!("waiting for {name}"), &e)
            })?,
            Err(_) => {
                let _ = kill(self.pid, Signal::SIGKILL);
                return Err(CniError::new(
                    ErrorCode::PLUGIN_TIMEOUT,
                    format!("{name} {cmd} did not finish within {:?}", self.timeout),
                ));
            }
        };
        if output.status.success() {
            return Ok(output.stdout);
        }
        Err(match serde_json::from_slice::<CniError>(&output.stdout) {
            Ok(err) => err,
            Err(_) => CniError::new(
                ErrorCode::PLUGIN_FAILED,
                format!("{name} {cmd} failed ({})", output.status),
            )
            .with_details(String::from_utf8_lossy(&output.stderr).trim().to_owned()),
        })
    }
}
