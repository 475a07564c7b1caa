//! The `dhcp` IPAM plugin: each command is a request to the daemon, which it starts
//! on demand (under a lock, exiting by itself a minute after its last lease) when
//! none answers on the socket: for ADD and STATUS always, for DEL, CHECK and GC when a
//! previous daemon left leases in its state file.

use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::time::{Duration, Instant};

use cni::skel::{CmdArgs, GcArgs, Plugin, StatusArgs};
use cni::{CniError, CniResult, ErrorCode};

use crate::conf::NetConf;
use crate::rpc::{self, Attachment, CallError, Request};

#[derive(Debug, Clone, Copy, Default)]
pub struct Dhcp;

/// How long a request may take: the daemon's ADD waits up to its `-timeout` (10 s by
/// default) for a server.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a daemon started on demand has to answer.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a daemon started on demand stays without a lease.
pub const IDLE_EXIT: &str = "60s";

fn attachment(args: &CmdArgs, conf: &NetConf) -> Result<Attachment, CniError> {
    let ipam = conf.ipam();
    let netns = match &args.netns {
        Some(p) if p.is_absolute() => Some(p.display().to_string()),
        Some(p) => Some(
            std::env::current_dir()
                .map_err(|e| CniError::io(format!("CNI_NETNS {}: {e}", p.display())))?
                .join(p)
                .display()
                .to_string(),
        ),
        None => None,
    };
    Ok(Attachment {
        container_id: args.container_id.clone(),
        network: conf.name.clone(),
        ifname: args.ifname.clone(),
        netns,
        wanted: ipam.wanted(&args.args)?,
        priority: ipam.priority,
    })
}

fn daemon_err(socket: &Path, e: impl std::fmt::Display) -> CniError {
    CniError::new(
        ErrorCode::IO_FAILURE,
        format!("dhcp daemon at {}: {e}", socket.display()),
    )
}

/// Sends `req`; the daemon's error is the plugin's.
fn ask(socket: &Path, req: &Request) -> Result<Option<CniResult>, CniError> {
    match rpc::call(socket, req, CALL_TIMEOUT) {
        Ok(r) => match r.error {
            Some(e) => Err(e),
            None => Ok(r.result),
        },
        Err(CallError::NotRunning(e)) => Err(daemon_err(socket, e)),
        Err(CallError::Broken(e)) => Err(daemon_err(socket, e)),
    }
}

/// Whether a daemon answers on `socket`.
fn answers(socket: &Path) -> bool {
    rpc::call(socket, &Request::Ping, Duration::from_secs(2)).is_ok()
}

/// Starts a daemon on `socket` unless one answers. The start runs under a lock next
/// to the socket, so concurrent ADDs start one daemon.
fn ensure_daemon(socket: &Path) -> Result<(), CniError> {
    if answers(socket) {
        return Ok(());
    }
    let dir = socket.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)
        .map_err(|e| daemon_err(socket, format!("creating {}: {e}", dir.display())))?;
    let with = |ext: &str| -> PathBuf {
        let mut p = socket.as_os_str().to_owned();
        p.push(ext);
        p.into()
    };
    let lock = std::fs::File::create(with(".lock")).map_err(|e| daemon_err(socket, e))?;
    let _held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| daemon_err(socket, format!("locking: {e}")))?;
    if answers(socket) {
        return Ok(());
    }
    let exe = std::env::current_exe().map_err(|e| daemon_err(socket, e))?;
    let log_path = with(".log");
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::remove_file(&log_path);
    }
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| daemon_err(socket, format!("opening {}: {e}", log_path.display())))?;
    let mut child = Process::new(&exe)
        .arg("daemon")
        .arg("-socketpath")
        .arg(socket)
        .arg("-pidfile")
        .arg(with(".pid"))
        .arg("-exit-when-idle")
        .arg(IDLE_EXIT)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .env_clear()
        .spawn()
        .map_err(|e| daemon_err(socket, format!("starting {}: {e}", exe.display())))?;
    let started = Instant::now();
    loop {
        if answers(socket) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail = log.lines().last().unwrap_or_default().to_owned();
            return Err(daemon_err(
                socket,
                format!("it exited at start ({status}): {tail}"),
            ));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            return Err(daemon_err(
                socket,
                format!("not ready after {START_TIMEOUT:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `req` to a daemon started on demand; a daemon that exited (idle) between the
/// start and the request is started again once.
fn ask_started(socket: &Path, req: &Request) -> Result<Option<CniResult>, CniError> {
    ensure_daemon(socket)?;
    match rpc::call(socket, req, CALL_TIMEOUT) {
        // Gone, or exiting as the request came (requests are idempotent): once more.
        Err(CallError::NotRunning(_) | CallError::Broken(_)) => {
            std::thread::sleep(Duration::from_millis(20));
            ensure_daemon(socket)?;
            ask(socket, req)
        }
        Ok(r) => match r.error {
            Some(e) => Err(e),
            None => Ok(r.result),
        },
    }
}

/// Whether a daemon that is not running left leases in its state file (a new daemon
/// takes them up).
fn leases_left(socket: &Path) -> bool {
    let mut p = socket.as_os_str().to_owned();
    p.push(".leases");
    std::fs::read(PathBuf::from(p)).is_ok_and(|b| {
        serde_json::from_slice::<Vec<serde_json::Value>>(&b).is_ok_and(|v| !v.is_empty())
    })
}

/// DEL, CHECK and GC: a daemon that is not running holds nothing, unless a previous one
/// left leases, which a daemon started now takes up and answers for.
fn ask_holder(socket: &Path, req: &Request) -> Result<Option<Option<CniResult>>, CniError> {
    match rpc::call(socket, req, CALL_TIMEOUT) {
        Err(CallError::NotRunning(_)) if leases_left(socket) => ask_started(socket, req).map(Some),
        Err(CallError::NotRunning(_)) => Ok(None),
        Err(CallError::Broken(e)) => Err(daemon_err(socket, e)),
        Ok(r) => match r.error {
            Some(e) => Err(e),
            None => Ok(Some(r.result)),
        },
    }
}

impl Plugin for Dhcp {
    fn about(&self) -> &'static str {
        concat!("podnet dhcp plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = NetConf::parse(&args.stdin)?;
        let a = attachment(args, &conf)?;
        if a.netns.is_none() {
            return Err(CniError::invalid_env(
                "required env variables [CNI_NETNS] missing",
            ));
        }
        let result = ask_started(&conf.socket_path()?, &Request::Add(a))?;
        result.ok_or_else(|| CniError::io("dhcp daemon: ADD answered without a result"))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = NetConf::parse(&args.stdin)?;
        let Ok(socket) = conf.socket_path() else {
            return Ok(()); // an ADD with that path could not have leased
        };
        // No daemon: it holds no lease, nothing to release. A config whose options
        // are invalid could never have leased either.
        let Ok(a) = attachment(args, &conf) else {
            return Ok(());
        };
        ask_holder(&socket, &Request::Del(a)).map(drop)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = NetConf::parse(&args.stdin)?;
        let a = attachment(args, &conf)?;
        let socket = conf.socket_path()?;
        match ask_holder(&socket, &Request::Check(a))? {
            Some(_) => Ok(()),
            None => Err(CniError::new(
                ErrorCode::CHECK_FAILED,
                format!(
                    "dhcp: no daemon at {} holds this attachment's lease",
                    socket.display()
                ),
            )),
        }
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = NetConf::parse(&args.stdin)?;
        conf.ipam().wanted(&cni::CniArgs::default())?;
        // Ready when a daemon answers or can be started.
        ensure_daemon(&conf.socket_path()?).map_err(|e| CniError {
            code: ErrorCode::PLUGIN_NOT_AVAILABLE,
            ..e
        })
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = NetConf::parse(&args.stdin)?;
        let socket = conf.socket_path()?;
        let req = Request::Gc {
            network: conf.name.clone(),
            valid: args.valid_attachments.clone(),
        };
        ask_holder(&socket, &req).map(drop)
    }
}
