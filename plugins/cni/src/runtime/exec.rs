//! Finding a plugin in `CNI_PATH` and executing it with the protocol's environment,
//! stdin and a timeout; decoding its answer or its error.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;

use crate::args::CniArgs;
use crate::error::{CniError, ErrorCode};
use crate::skel::{Command, Outcome};

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

/// A plugin linked into the calling program: the skeleton's protocol (environment lookup
/// and stdin in, what to print out) as [`crate::skel::dispatch`] answers it.
pub type Linked = fn(&dyn Fn(&str) -> Option<String>, &[u8]) -> Outcome;

/// The plugins linked into this program and the directory their binaries are installed
/// in (this program's own).
struct LinkedPlugins {
    dir: PathBuf,
    plugins: &'static [(&'static str, Linked)],
}

static LINKED: OnceLock<LinkedPlugins> = OnceLock::new();

/// Declares plugins linked into this program (the same build as the binaries installed
/// beside it): from then on a plugin found by [`PluginExec::find`] in this program's own
/// directory under one of these names runs in a thread of this process instead of a
/// process of its own, with the same environment, stdin and answer. A plugin found
/// anywhere else is executed as always. Set once; `false` when already set or when this
/// program's directory is unknown.
pub fn link_plugins(plugins: &'static [(&'static str, Linked)]) -> bool {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    else {
        return false;
    };
    LINKED.set(LinkedPlugins { dir, plugins }).is_ok()
}

/// The linked plugin a found binary stands for.
fn linked(binary: &Path) -> Option<Linked> {
    let reg = LINKED.get()?;
    if binary.parent() != Some(reg.dir.as_path()) {
        return None;
    }
    let name = binary.file_name()?.to_str()?;
    reg.plugins
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, f)| *f)
}

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
        if let Some(run) = linked(plugin) {
            return self.start_linked(name, run, call, stdin);
        }
        let io_err = |what: &str, e: &(dyn std::error::Error + 'static)| {
            CniError::from_source(ErrorCode::IO_FAILURE, format!("{what} {name}"), e)
        };
        let (input, feed) = pipe2(OFlag::O_CLOEXEC).map_err(|e| io_err("a stdin pipe for", &e))?;
        let written = prefill(&feed, stdin);
        // All of it in the pipe: the write end closes before the spawn, so the plugin
        // reads its end of file at once instead of waiting for this process to resume.
        let feed = (written < stdin.len()).then_some(feed);
        let child = Process::new(plugin)
            .envs(self.cni_env(call))
            .env(CALLER_PID_ENV, std::process::id().to_string())
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
            job: Job::Process(child),
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
        })
    }

    /// The spec's `CNI_*` variables of one call.
    fn cni_env(&self, call: &Invocation<'_>) -> [(&'static str, OsString); 6] {
        [
            ("CNI_COMMAND", call.command.as_str().into()),
            ("CNI_CONTAINERID", call.container_id.into()),
            (
                "CNI_NETNS",
                call.netns.map(Path::as_os_str).unwrap_or_default().into(),
            ),
            ("CNI_IFNAME", call.ifname.into()),
            ("CNI_ARGS", call.args.to_env().into()),
            (
                "CNI_PATH",
                std::env::join_paths(&self.path).unwrap_or_default(),
            ),
        ]
    }

    /// A linked plugin started in a thread of its own: it begins in the calling thread's
    /// network namespace and with no async runtime of the caller's around it, as a
    /// process would, and the caller goes on meanwhile (a plugin overlapping its IPAM).
    fn start_linked(
        &self,
        name: String,
        run: Linked,
        call: &Invocation<'_>,
        stdin: &[u8],
    ) -> Result<Running, CniError> {
        let env = self.cni_env(call);
        let stdin = stdin.to_vec();
        let (tx, rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("cni {}", call.command.as_str()))
            .spawn(move || {
                // The CNI_* values are the call's; anything else (PODNET_RUN_DIR) is
                // this process's environment, which a plugin process would inherit.
                let lookup = |k: &str| match env.iter().find(|(n, _)| *n == k) {
                    Some((_, v)) => Some(v.to_string_lossy().into_owned()),
                    None => std::env::var(k).ok(),
                };
                let _ = tx.send(run(&lookup, &stdin));
            })
            .map_err(|e| {
                CniError::from_source(
                    ErrorCode::IO_FAILURE,
                    format!("starting a thread for {name}"),
                    &e,
                )
            })?;
        Ok(Running {
            name,
            command: call.command,
            job: Job::Thread(rx),
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
    job: Job,
    deadline: Instant,
    timeout: Duration,
}

/// What runs the plugin.
#[derive(Debug)]
enum Job {
    Process(Child),
    /// A linked plugin: its outcome comes over the channel (none when it panicked).
    Thread(mpsc::Receiver<Outcome>),
}

impl Running {
    /// Its stdout on success; its error object (or stderr) on failure; killed on timeout.
    pub fn wait(self) -> Result<Vec<u8>, CniError> {
        let (name, cmd, timeout) = (self.name.as_str(), self.command.as_str(), self.timeout);
        let timed_out = || {
            CniError::new(
                ErrorCode::PLUGIN_TIMEOUT,
                format!("{name} {cmd} did not finish within {timeout:?}"),
            )
        };
        let mut child = match self.job {
            Job::Process(child) => child,
            Job::Thread(rx) => {
                let left = self.deadline.saturating_duration_since(Instant::now());
                return match rx.recv_timeout(left) {
                    Ok(out) if out.status == 0 => Ok(out.stdout.into_bytes()),
                    Ok(out) => Err(answer_error(
                        name,
                        cmd,
                        &out.stdout,
                        &out.stderr,
                        format_args!("exit status: {}", out.status),
                    )),
                    // Its thread goes on; the call is answered.
                    Err(mpsc::RecvTimeoutError::Timeout) => Err(timed_out()),
                    Err(mpsc::RecvTimeoutError::Disconnected) => Err(CniError::new(
                        ErrorCode::PLUGIN_FAILED,
                        format!("{name} {cmd} failed (it panicked)"),
                    )),
                };
            }
        };
        let io_err = |e: std::io::Error| {
            CniError::from_source(ErrorCode::IO_FAILURE, format!("waiting for {name}"), &e)
        };
        let Some((stdout, stderr)) = collect(&mut child, self.deadline).map_err(io_err)? else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(timed_out());
        };
        let status = child.wait().map_err(io_err)?;
        if status.success() {
            return Ok(stdout);
        }
        Err(answer_error(name, cmd, &stdout, &stderr, status))
    }
}

/// A failed plugin's error object, or a [`ErrorCode::PLUGIN_FAILED`] error carrying its
/// stderr when it printed none.
fn answer_error(
    name: &str,
    cmd: &str,
    stdout: impl AsRef<[u8]>,
    stderr: impl AsRef<[u8]>,
    status: impl std::fmt::Display,
) -> CniError {
    match serde_json::from_slice::<CniError>(stdout.as_ref()) {
        Ok(err) => err,
        Err(_) => CniError::new(
            ErrorCode::PLUGIN_FAILED,
            format!("{name} {cmd} failed ({status})"),
        )
        .with_details(String::from_utf8_lossy(stderr.as_ref()).trim().to_owned()),
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
