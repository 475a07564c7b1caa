//! The per-container monitor (what conmon is to Podman), so that no daemon is needed.
//!
//! `podnet start` spawns `podnet monitor ID`. The monitor leaves the caller's session,
//! becomes a child subreaper, and runs `runtime run -d` with the container's stdout and
//! stderr going straight to its log file. When the runtime returns the container's init
//! is re-parented to the monitor, which tells the caller on its stdout (one line: `ok`
//! or the error), then waits for the container, writes its exit status to
//! `<runroot>/<id>/exit` and has the runtime forget it.
//!
//! ```text
//! <runroot>/<id>/monitor.pid   the monitor (systemd's PIDFile for generated units)
//! <runroot>/<id>/pid           the container's init, written by the runtime
//! <runroot>/<id>/exit          its exit status (128+N for signal N), once it ended
//! ```

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::oci::Runtime;
use crate::state::{record_dir, write_atomic, Container};

/// Where a container's runtime files are.
#[derive(Debug, Clone)]
pub struct RunFiles {
    pub dir: PathBuf,
}

impl RunFiles {
    pub fn new(config: &Config, id: &str) -> RunFiles {
        RunFiles {
            dir: config.run_dir(id),
        }
    }
    pub fn monitor_pid(&self) -> PathBuf {
        self.dir.join("monitor.pid")
    }
    pub fn pid(&self) -> PathBuf {
        self.dir.join("pid")
    }
    pub fn exit(&self) -> PathBuf {
        self.dir.join("exit")
    }

    fn read_number(path: &Path) -> Option<i32> {
        fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    /// The exit status, once the container ended.
    pub fn exit_code(&self) -> Option<i32> {
        RunFiles::read_number(&self.exit())
    }

    /// The container's init pid while it runs: its monitor is alive, or (a monitor
    /// killed by hand) the init itself still is. Gone at reboot with the run directory.
    pub fn running_pid(&self) -> Option<i32> {
        if self.exit().exists() {
            return None;
        }
        let monitor = RunFiles::read_number(&self.monitor_pid())?;
        let pid = RunFiles::read_number(&self.pid())?;
        (netkit::process_running(monitor) || netkit::process_running(pid)).then_some(pid)
    }
}

pub fn log_path(config: &Config, id: &str) -> PathBuf {
    record_dir::<Container>(config, id).join("ctr.log")
}

/// The monitor's body (`podnet monitor ID`). Returns the process's exit status.
pub fn run(config: &Config, id: &str) -> i32 {
    let _ = nix::unistd::setsid();
    let files = RunFiles::new(config, id);
    match start(config, id, &files) {
        Ok(pid) => {
            println!("ok");
            let _ = std::io::stdout().flush();
            let code = wait_for(pid);
            // The runtime forgets the container before the exit file appears: whoever
            // waits for that file (stop, restart) may start the same id at once.
            let _ = Runtime::new(config).delete(id);
            let _ = write_atomic(&files.exit(), code.to_string().as_bytes());
            0
        }
        Err(e) => {
            println!("{e}");
            let _ = Runtime::new(config).delete(id);
            let _ = write_atomic(&files.exit(), b"-1");
            1
        }
    }
}

fn start(config: &Config, id: &str, files: &RunFiles) -> Result<Pid> {
    fs::create_dir_all(&files.dir).map_err(Error::io(&files.dir))?;
    write_atomic(
        &files.monitor_pid(),
        std::process::id().to_string().as_bytes(),
    )?;
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| Error::io(&files.dir)(e.into()))?;
    let log = log_path(config, id);
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(Error::io(&log))?;
    let from = out.seek(SeekFrom::End(0)).unwrap_or(0);
    let err = out.try_clone().map_err(Error::io(&log))?;
    let bundle = record_dir::<Container>(config, id);
    let status = Runtime::new(config)
        .command("run")
        .arg("--detach")
        .arg("--bundle")
        .arg(&bundle)
        .arg("--pid-file")
        .arg(files.pid())
        .arg(id)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| Error::Runtime {
            runtime: config.runtime.display().to_string(),
            verb: "run",
            msg: e.to_string(),
        })?;
    // The runtime itself is a child: reap it, it is not the container.
    if !status.success() {
        return Err(Error::Runtime {
            runtime: config.runtime_name(),
            verb: "run",
            msg: log_since(&log, from),
        });
    }
    let pid = RunFiles::read_number(&files.pid()).ok_or_else(|| Error::Runtime {
        runtime: config.runtime_name(),
        verb: "run",
        msg: format!("no pid in {}", files.pid().display()),
    })?;
    Ok(Pid::from_raw(pid))
}

/// What the log gained since `from`: the runtime's own complaint.
fn log_since(log: &Path, from: u64) -> String {
    let mut s = String::new();
    if let Ok(mut f) = fs::File::open(log) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut s);
    }
    s.trim().to_owned()
}

/// Reaps children until the container's init is among them; its status as a shell
/// reports it.
fn wait_for(pid: Pid) -> i32 {
    loop {
        match waitpid(None::<Pid>, None) {
            Ok(WaitStatus::Exited(p, code)) if p == pid => return code,
            Ok(WaitStatus::Signaled(p, sig, _)) if p == pid => return 128 + sig as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return -1,
        }
    }
}
