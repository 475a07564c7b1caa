//! Finding a plugin in `CNI_PATH` and executing it with the protocol's environment,
//! stdin and a timeout; decoding its answer or its error.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

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
    ///
    /// The config is in the plugin's stdin pipe before the plugin starts, so it never
    /// waits for this process to be scheduled again to read it; no thread is started
    /// (one only for a config larger than the pipe holds).
    pub fn start(
        &self,
        plugin: &Path,
        call: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Running, CniError> {
        let name = plugin.display().to_string();
        let io_err = |what: &str, e: &(dyn std::error::Error + 'static)| {
            CniError::from_source(ErrorCode::IO_FAILURE, format!("{what} {name}"), e)
        };
        let (input, feed) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("a stdin pipe for", &e))?;
        let written = prefill(&feed, stdin);
        // All of it in the pipe: the write end closes before the spawn, so the plugin
        // reads its end of file at once instead of waiting for this process to resume.
        let feed = (written < stdin.len()).then_some(feed);
        let child = Process::new(plugin)
            .env("CNI_COMMAND", call.command.as_str())
            .env("CNI_CONTAINERID", call.container_id)
            .env(
                "CNI_NETNS",
                call.netns.map(Path::as_os_str).unwrap_or_default(),
            )
            .env("CNI_IFNAME", call.ifname)
            .env("CNI_ARGS", call.args.to_env())
            .env(CALLER_PID_ENV, std::process::id().to_string())
            .env(
                "CNI_PATH",
                std::env::join_paths(&self.path).unwrap_or_default(),
            )
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| io_err("executing", &e))?;
        if let Some(feed) = feed {
            let rest = stdin[written..].to_vec();
            std::thread::spawn(move || {
                // A plugin may exit without reading stdin (VERSION); a broken pipe is fine.
                let _ = fcntl(&feed, FcntlArg::F_SETFL(OFlag::empty()));
                let _ = std::fs::File::from(feed).write_all(&rest);
            });
        }
        Ok(Running {
            name,
            command: call.command,
            child,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        })
    }
}

/// Writes as much of `data` as the pipe takes without blocking (all of any config that
/// fits its 64 KiB); the count written.
fn prefill(feed: &OwnedFd, data: &[u8]) -> usize {
    if fcntl(feed, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).is_err() {
        return 0;
    }
    let mut done = 0;
    while done < data.len() {
        match nix::unistd::write(feed, &data[done..]) {
            Ok(n) => done += n,
            Err(Errno::EINTR) => continue,
            Err(_) => break, // EAGAIN: the rest goes from a thread
        }
    }
    done
}

/// The variable in which a plugin started here is told its caller's pid (podnet's own,
/// not the spec's): a plugin about to make state that only its caller's DEL undoes
/// (an IPAM lease) first checks, under its lock, that the caller still waits for it. A
/// caller killed mid-ADD leaves its delegate running, re-parented; without the check the
/// orphan could write a lease after the DEL the runtime sent meanwhile.
pub const CALLER_PID_ENV: &str = "PODNET_CALLER_PID";

/// `false` when this process was started by [`PluginExec`] and that caller has exited
/// since (this process was re-parented); `true` otherwise, also when the variable is
/// unset (a runtime that is not podnet's).
pub fn caller_alive() -> bool {
    match std::env::var(CALLER_PID_ENV)
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(pid) => std::os::unix::process::parent_id() == pid,
        None => true,
    }
}

/// A plugin started by [`PluginExec::start`].
#[derive(Debug)]
pub struct Running {
    name: String,
    command: Command,
    child: Child,
    deadline: Instant,
    timeout: Duration,
}

impl Running {
    /// Its stdout on success; its error object (or stderr) on failure; killed on timeout.
    pub fn wait(mut self) -> Result<Vec<u8>, CniError> {
        let (name, cmd) = (&self.name, self.command.as_str());
        let io_err = |e: std::io::Error| {
            CniError::from_source(ErrorCode::IO_FAILURE, format!("waiting for {name}"), &e)
        };
        let Some((stdout, stderr)) = collect(&mut self.child, self.deadline).map_err(io_err)?
        else {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(CniError::new(
                ErrorCode::PLUGIN_TIMEOUT,
                format!("{name} {cmd} did not finish within {:?}", self.timeout),
            ));
        };
        let status = self.child.wait().map_err(io_err)?;
        if status.success() {
            return Ok(stdout);
        }
        Err(match serde_json::from_slice::<CniError>(&stdout) {
            Ok(err) => err,
            Err(_) => CniError::new(
                ErrorCode::PLUGIN_FAILED,
                format!("{name} {cmd} failed ({status})"),
            )
            .with_details(String::from_utf8_lossy(&stderr).trim().to_owned()),
        })
    }
}

/// Reads the child's stdout and stderr to their ends in the calling thread, both at once
/// (neither can fill up while the other is read); `None` when `deadline` passed first.
fn collect(child: &mut Child, deadline: Instant) -> std::io::Result<Option<(Vec<u8>, Vec<u8>)>> {
    let file = |fd: OwnedFd| std::fs::File::from(fd);
    let mut streams = [
        Stream::new(child.stdout.take().map(|s| file(s.into()))),
        Stream::new(child.stderr.take().map(|s| file(s.into()))),
    ];
    let mut chunk = [0u8; 4096];
    while streams.iter().any(|s| s.src.is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd<'_>> = streams
                .iter()
                .filter_map(|s| s.src.as_ref())
                .map(|src| PollFd::new(src.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(
                &mut fds,
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
            ) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            fds.iter().map(|f| f.any().unwrap_or(false)).collect()
        };
        let open = streams.iter_mut().filter(|s| s.src.is_some());
        for (stream, _) in open.zip(ready).filter(|(_, ready)| *ready) {
            stream.read(&mut chunk)?;
        }
    }
    let [out, err] = streams;
    Ok(Some((out.buf, err.buf)))
}

/// One of the child's output pipes and what was read from it; `src` is `None` at its end.
struct Stream {
    src: Option<std::fs::File>,
    buf: Vec<u8>,
}

impl Stream {
    fn new(src: Option<std::fs::File>) -> Self {
        Stream {
            src,
            buf: Vec::new(),
        }
    }

    /// One read of a stream that poll found ready.
    fn read(&mut self, chunk: &mut [u8]) -> std::io::Result<()> {
        let Some(src) = self.src.as_mut() else {
            return Ok(());
        };
        match src.read(chunk) {
            Ok(0) => self.src = None,
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        Ok(())
    }
}
