//! `dhcp daemon`: holds every attachment's lease. ADD acquires one in the container's
//! namespace and a thread per lease keeps it (renewing at T1 unicast, rebinding at T2
//! broadcast, acquiring again if it expires); DEL stops that thread, which releases
//! the lease; GC releases the leases of attachments no longer valid. A lease whose
//! interface is gone is dropped when it can no longer be kept.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cni::{CniError, ErrorCode};
use netkit::{NetNs, Netlink};

use crate::conf::client_id;
use crate::proto::{self, Client, Failure, Lease};
use crate::rpc::{Attachment, Reply, Request};

macro_rules! log {
    ($($t:tt)*) => { eprintln!("dhcp daemon: {}", format!($($t)*)) };
}

/// The daemon's flags, named as the reference's (`-socketpath` and `--socketpath` alike).
#[derive(Debug, Clone)]
pub struct Options {
    pub socket: PathBuf,
    pub pidfile: Option<PathBuf>,
    /// Prefixed to every namespace path (a daemon running in a container with the
    /// host's root mounted there).
    pub host_prefix: String,
    /// How long ADD waits for a lease.
    pub timeout: Duration,
    /// The longest wait between two sends of one message.
    pub resend_max: Duration,
    /// Exit once no lease has been held for this long (the daemon the plugin starts on
    /// demand); `None`: run until SIGTERM.
    pub exit_when_idle: Option<Duration>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            socket: crate::conf::DEFAULT_SOCKET.into(),
            pidfile: None,
            host_prefix: String::new(),
            timeout: Duration::from_secs(10),
            resend_max: Duration::from_secs(62),
            exit_when_idle: None,
        }
    }
}

/// A Go duration as the reference's flags take it: `10s`, `500ms`, `1m30s`, `2h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(n * scale).ok()?;
    }
    Some(total)
}

impl Options {
    /// Where the leases held are kept across daemons: beside the socket.
    pub fn state_file(&self) -> PathBuf {
        let mut p = self.socket.as_os_str().to_owned();
        p.push(".leases");
        p.into()
    }

    /// `-flag value`, `--flag value`, `-flag=value`, as Go's flag package takes them.
    pub fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let flag = a.trim_start_matches('-');
            if flag.len() == a.len() {
                return Err(format!("unexpected argument {a:?}"));
            }
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            if name == "broadcast" {
                // Replies are always asked broadcast (proto.rs); accepted for compatibility.
                continue;
            }
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("-{name} needs a value"))
            };
            let duration = |v: String| {
                parse_duration(&v)
                    .ok_or_else(|| format!("-{name}: {v:?} is not a duration (10s, 500ms, 1m)"))
            };
            match name {
                "socketpath" => o.socket = value()?.into(),
                "pidfile" => o.pidfile = Some(value()?.into()),
                "hostprefix" => o.host_prefix = value()?,
                "timeout" => o.timeout = duration(value()?)?,
                "resendmax" => o.resend_max = duration(value()?)?,
                // The reference's overall cap on resends; ADD's `-timeout` bounds them here.
                "resendtimeout" => drop(duration(value()?)?),
                "exit-when-idle" => o.exit_when_idle = Some(duration(value()?)?),
                _ => return Err(format!("unknown flag -{name}")),
            }
        }
        if o.pidfile.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err("-pidfile: the path must be absolute".into());
        }
        Ok(o)
    }
}

/// A lease as the state file keeps it (its times against the wall clock).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Saved {
    attachment: Attachment,
    address: ipnetwork::Ipv4Network,
    router: Option<std::net::Ipv4Addr>,
    server: std::net::Ipv4Addr,
    routes: Vec<(ipnetwork::Ipv4Network, Option<std::net::Ipv4Addr>)>,
    lease_secs: u64,
    renew_secs: u64,
    rebind_secs: u64,
    /// When the lease was granted, in milliseconds since the Unix epoch.
    granted_ms: u64,
}

impl Saved {
    fn of(a: &Attachment, l: &Lease) -> Saved {
        let granted = std::time::SystemTime::now() - l.granted.elapsed();
        Saved {
            attachment: a.clone(),
            address: l.address,
            router: l.router,
            server: l.server,
            routes: l.routes.clone(),
            lease_secs: l.lease_time.as_secs(),
            renew_secs: l.renew_after.as_secs(),
            rebind_secs: l.rebind_after.as_secs(),
            granted_ms: granted
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
        }
    }

    fn lease(&self) -> Lease {
        let granted = std::time::UNIX_EPOCH + Duration::from_millis(self.granted_ms);
        let ago = std::time::SystemTime::now()
            .duration_since(granted)
            .unwrap_or_default();
        Lease {
            address: self.address,
            router: self.router,
            server: self.server,
            routes: self.routes.clone(),
            lease_time: Duration::from_secs(self.lease_secs),
            renew_after: Duration::from_secs(self.renew_secs),
            rebind_after: Duration::from_secs(self.rebind_secs),
            granted: Instant::now().checked_sub(ago).unwrap_or_else(Instant::now),
        }
    }
}

/// A lease held and the thread keeping it.
struct Held {
    attachment: Attachment,
    lease: Arc<Mutex<Lease>>,
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

struct Daemon {
    opts: Options,
    held: Mutex<HashMap<Vec<u8>, Held>>,
    last_active: Mutex<Instant>,
    /// Why the daemon is exiting, once it is.
    exiting: Mutex<Option<String>>,
}

fn key(a: &Attachment) -> Vec<u8> {
    client_id(&a.container_id, &a.network, &a.ifname)
}

fn err(code: ErrorCode, msg: String) -> CniError {
    CniError::new(code, msg)
}

impl Daemon {
    /// Marks the daemon exiting and wakes the accept loop, which then returns.
    fn exit(&self, why: String) {
        *self.exiting.lock().unwrap() = Some(why);
        let _ = UnixStream::connect(&self.opts.socket);
    }

    fn handle(self: &Arc<Self>, req: Request) -> Reply {
        *self.last_active.lock().unwrap() = Instant::now();
        let out = match req {
            Request::Ping => Ok(None),
            Request::Add(a) => self.add(a).map(Some),
            Request::Check(a) => self.check(&a).map(|()| None),
            Request::Del(a) => {
                self.release(&key(&a));
                Ok(None)
            }
            Request::Gc { network, valid } => {
                let stale: Vec<Vec<u8>> = self
                    .held
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|(_, h)| {
                        h.attachment.network == network
                            && !valid.iter().any(|v| {
                                v.container_id == h.attachment.container_id
                                    && v.ifname == h.attachment.ifname
                            })
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    self.release(&k);
                }
                Ok(None)
            }
        };
        match out {
            Ok(result) => Reply {
                result,
                error: None,
            },
            Err(e) => Reply {
                result: None,
                error: Some(e),
            },
        }
    }

    fn add(self: &Arc<Self>, a: Attachment) -> Result<cni::CniResult, CniError> {
        let k = key(&a);
        if let Some(h) = self.held.lock().unwrap().get(&k) {
            return Ok(h.lease.lock().unwrap().result(a.priority));
        }
        let netns = a
            .netns
            .clone()
            .ok_or_else(|| CniError::invalid_env("CNI_NETNS is required for ADD"))?;
        let path = format!("{}{netns}", self.opts.host_prefix);
        let ns = NetNs::open(&path)?;
        let deadline = Instant::now() + self.opts.timeout;
        let mac = link_ready(&ns, &a.ifname, deadline)?;
        let sock = ns.run(|| proto::socket(&a.ifname))?.map_err(|e| {
            err(
                ErrorCode::IO_FAILURE,
                format!("dhcp: opening port 68 on {:?} in {path}: {e}", a.ifname),
            )
        })?;
        let mut client = Client::new(sock, mac, k.clone(), a.wanted.clone());
        client.resend_max = self.opts.resend_max;
        let left = deadline.saturating_duration_since(Instant::now());
        let lease = client.acquire(left, None).map_err(|f| {
            let code = match f {
                Failure::Io(_) => ErrorCode::IO_FAILURE,
                _ => ErrorCode::TRY_AGAIN_LATER,
            };
            let f = match f {
                Failure::NoAnswer(_) => Failure::NoAnswer(self.opts.timeout),
                other => other,
            };
            err(code, format!("dhcp: {f} on {:?} in {path}", a.ifname))
        })?;
        log!(
            "{}: leased {} from {} for {:?}",
            String::from_utf8_lossy(&k),
            lease.address,
            lease.server,
            lease.lease_time
        );
        let result = lease.result(a.priority);
        let mut held = self.held.lock().unwrap();
        if let Some(h) = held.get(&k) {
            // The same attachment's ADD raced this one and won: keep its lease, give
            // this one back.
            let _ = client.release(&lease);
            return Ok(h.lease.lock().unwrap().result(a.priority));
        }
        self.hold(&mut held, k, a, client, lease, ns, path);
        drop(held);
        self.save();
        Ok(result)
    }

    /// Keeps `lease` from now on: its thread, and its place among the leases held.
    #[allow(clippy::too_many_arguments)]
    fn hold(
        self: &Arc<Self>,
        held: &mut HashMap<Vec<u8>, Held>,
        k: Vec<u8>,
        a: Attachment,
        client: Client,
        lease: Lease,
        ns: NetNs,
        path: String,
    ) {
        let lease = Arc::new(Mutex::new(lease));
        let (stop, stopped) = mpsc::channel();
        let me = Arc::clone(self);
        let kept = Arc::clone(&lease);
        let thread_key = k.clone();
        let thread =
            std::thread::spawn(move || me.keep(&thread_key, &client, &kept, &stopped, &ns, &path));
        held.insert(
            k,
            Held {
                attachment: a,
                lease,
                stop,
                thread,
            },
        );
    }

    /// Writes the leases held to the state file (atomically), so that a daemon started
    /// after this one keeps and releases them.
    fn save(&self) {
        let saved: Vec<Saved> = self
            .held
            .lock()
            .unwrap()
            .values()
            .map(|h| Saved::of(&h.attachment, &h.lease.lock().unwrap()))
            .collect();
        let path = self.opts.state_file();
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec(&saved).expect("leases encode");
        if let Err(e) = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path)) {
            log!("writing {}: {e}", path.display());
        }
    }

    /// Takes up the leases a previous daemon left in the state file: those not expired
    /// whose namespace and interface are still there.
    fn resume(self: &Arc<Self>) {
        let path = self.opts.state_file();
        let Ok(bytes) = std::fs::read(&path) else {
            return;
        };
        let saved: Vec<Saved> = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                log!(
                    "{}: unreadable ({e}); starting without its leases",
                    path.display()
                );
                return;
            }
        };
        let mut held = self.held.lock().unwrap();
        for s in saved {
            let k = key(&s.attachment);
            let name = String::from_utf8_lossy(&k).into_owned();
            let lease = s.lease();
            if Instant::now() >= lease.expires() {
                log!("{name}: the saved lease of {} has expired", lease.address);
                continue;
            }
            let Some(netns) = s.attachment.netns.clone() else {
                continue;
            };
            let ns_path = format!("{}{netns}", self.opts.host_prefix);
            let ready = NetNs::open(&ns_path)
                .map_err(CniError::from)
                .and_then(|ns| {
                    let mac = link_ready(&ns, &s.attachment.ifname, Instant::now())?;
                    let sock = ns
                        .run(|| proto::socket(&s.attachment.ifname))?
                        .map_err(|e| CniError::io(e.to_string()))?;
                    Ok((ns, mac, sock))
                });
            match ready {
                Ok((ns, mac, sock)) => {
                    let mut client = Client::new(sock, mac, k.clone(), s.attachment.wanted.clone());
                    client.resend_max = self.opts.resend_max;
                    log!("{name}: keeping {} (a previous daemon's)", lease.address);
                    self.hold(&mut held, k, s.attachment, client, lease, ns, ns_path);
                }
                Err(e) => log!("{name}: not kept: {}", e.msg),
            }
        }
    }

    fn check(&self, a: &Attachment) -> Result<(), CniError> {
        let held = self.held.lock().unwrap();
        let h = held.get(&key(a)).ok_or_else(|| {
            err(
                ErrorCode::CHECK_FAILED,
                format!(
                    "dhcp: no lease is held for {}/{}/{}",
                    a.container_id, a.network, a.ifname
                ),
            )
        })?;
        let l = h.lease.lock().unwrap();
        if Instant::now() >= l.expires() {
            return Err(err(
                ErrorCode::CHECK_FAILED,
                format!("dhcp: the lease of {} has expired", l.address),
            ));
        }
        Ok(())
    }

    /// Stops keeping a lease; its thread releases it before this returns.
    fn release(&self, k: &[u8]) {
        let h = self.held.lock().unwrap().remove(k);
        if let Some(h) = h {
            let _ = h.stop.send(());
            let _ = h.thread.join();
            self.save();
        }
    }

    /// The thread of one lease, until it is stopped (then the lease is released) or can
    /// no longer be kept.
    fn keep(
        &self,
        k: &[u8],
        client: &Client,
        lease: &Mutex<Lease>,
        stop: &mpsc::Receiver<()>,
        ns: &NetNs,
        path: &str,
    ) {
        let name = String::from_utf8_lossy(k).into_owned();
        // A message, or the sender dropped: stop.
        let stopped = |until: Instant| {
            let wait = until.saturating_duration_since(Instant::now());
            !matches!(stop.recv_timeout(wait), Err(RecvTimeoutError::Timeout))
        };
        loop {
            let l = lease.lock().unwrap().clone();
            let (t1, t2, end) = (
                l.granted + l.renew_after,
                l.granted + l.rebind_after,
                l.expires(),
            );
            if stopped(t1.max(Instant::now())) {
                break;
            }
            let now = Instant::now();
            let outcome = if now >= end {
                log!(
                    "{name}: the lease of {} expired; acquiring again",
                    l.address
                );
                client.acquire(self.opts.timeout, Some(stop)).map(Some)
            } else {
                let attempt = now + Duration::from_secs(4).min(end - now);
                client.extend(&l, now >= t2, attempt, stop)
            };
            match outcome {
                Ok(Some(new)) => {
                    if new.address != l.address {
                        log!("{name}: the server moved {} to {}", l.address, new.address);
                    } else {
                        log!("{name}: renewed {} for {:?}", new.address, new.lease_time);
                    }
                    *lease.lock().unwrap() = new;
                    self.save();
                }
                Ok(None) => {
                    // No answer: try again after half the time left to the next boundary
                    // (RFC 2131 4.4.5), at least a second later.
                    let boundary = if now >= t2 { end } else { t2 };
                    let half = boundary.saturating_duration_since(now) / 2;
                    if stopped(now + half.max(Duration::from_secs(1))) {
                        break;
                    }
                }
                Err(Failure::Stopped) => break,
                Err(Failure::Refused) => {
                    log!("{name}: the server refused {}; acquiring again", l.address);
                    match client.acquire(self.opts.timeout, Some(stop)) {
                        Ok(new) => *lease.lock().unwrap() = new,
                        Err(Failure::Stopped) => break,
                        Err(e) => log!("{name}: {e}"),
                    }
                }
                Err(e) => {
                    if !link_exists(ns, &client_ifname(k)) {
                        log!("{name}: the interface is gone from {path}; dropping the lease");
                        self.held.lock().unwrap().remove(k);
                        self.save();
                        return;
                    }
                    log!("{name}: {e}");
                    if stopped(Instant::now() + Duration::from_secs(1)) {
                        break;
                    }
                }
            }
        }
        let l = lease.lock().unwrap().clone();
        match client.release(&l) {
            Ok(()) => log!("{name}: released {}", l.address),
            Err(e) => log!("{name}: releasing {}: {e}", l.address),
        }
    }
}

/// The interface name at the end of a client id (`ID/NETWORK/IFNAME`).
fn client_ifname(k: &[u8]) -> String {
    let s = String::from_utf8_lossy(k);
    s.rsplit('/').next().unwrap_or_default().to_owned()
}

fn link_exists(ns: &NetNs, ifname: &str) -> bool {
    netkit::block_on(async {
        let nl = Netlink::open_in(ns).ok()?;
        nl.link_get(ifname).await.ok()?
    })
    .is_some()
}

/// Waits (until `deadline`) for `ifname` to exist in `ns` — the plugin that makes it may
/// ask for the lease while making it — brings it up, and returns its MAC.
fn link_ready(ns: &NetNs, ifname: &str, deadline: Instant) -> Result<[u8; 6], CniError> {
    netkit::block_on(async {
        let nl = Netlink::open_in(ns)?;
        loop {
            if let Some(l) = nl.link_get(ifname).await? {
                if !l.up {
                    nl.link_set_up(l.index).await?;
                }
                return netkit::parse_mac(&l.mac).map_err(|_| {
                    err(
                        ErrorCode::INVALID_NETWORK_CONFIG,
                        format!("dhcp: interface {ifname:?} has no Ethernet address for DHCP"),
                    )
                });
            }
            if Instant::now() >= deadline {
                return Err(err(
                    ErrorCode::INVALID_ENVIRONMENT,
                    format!("dhcp: no interface {ifname:?} in {}", ns.path().display()),
                ));
            }
            // This thread serves one request: a short blocking sleep is fine here.
            std::thread::sleep(Duration::from_millis(5));
        }
    })
}

fn serve(d: &Arc<Daemon>, stream: UnixStream) {
    if d.exiting.lock().unwrap().is_some() {
        return; // unanswered: the plugin starts a new daemon
    }
    let mut line = String::new();
    let mut reader = BufReader::new(&stream);
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => d.handle(req),
        Err(e) => Reply {
            result: None,
            error: Some(CniError::decoding(format!(
                "dhcp daemon: a bad request: {e}"
            ))),
        },
    };
    let mut out = serde_json::to_vec(&reply).expect("replies serialize");
    out.push(b'\n');
    let _ = (&stream).write_all(&out);
}

/// Runs the daemon in the foreground until SIGTERM/SIGINT (or, with
/// `exit_when_idle`, until it has held no lease for that long).
pub fn run(opts: Options) -> Result<(), String> {
    if let Some(dir) = opts.socket.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    let socket = opts.socket.clone();
    if UnixStream::connect(&socket).is_ok() {
        return Err(format!("a daemon already answers on {}", socket.display()));
    }
    let _ = std::fs::remove_file(&socket);
    let listener =
        UnixListener::bind(&socket).map_err(|e| format!("binding {}: {e}", socket.display()))?;
    if let Some(p) = &opts.pidfile {
        std::fs::write(p, format!("{}\n", std::process::id()))
            .map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    let d = Arc::new(Daemon {
        opts: opts.clone(),
        held: Mutex::new(HashMap::new()),
        last_active: Mutex::new(Instant::now()),
        exiting: Mutex::new(None),
    });
    d.resume();
    let signals = nix::sys::signal::SigSet::from_iter([
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ]);
    signals
        .thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    {
        let d = Arc::clone(&d);
        std::thread::spawn(move || {
            if let Ok(sig) = signals.wait() {
                d.exit(format!("{sig:?}"));
            }
        });
    }
    if let Some(idle) = opts.exit_when_idle {
        let d = Arc::clone(&d);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(500));
            let held = d.held.lock().unwrap();
            if held.is_empty() && d.last_active.lock().unwrap().elapsed() >= idle {
                // Still under the lock: a request from now on is turned away unanswered,
                // and the plugin starts a new daemon.
                d.exit("idle".into());
                return;
            }
        });
    }
    log!(
        "ready on {} (ADD waits up to {:?} for a lease)",
        socket.display(),
        opts.timeout
    );
    for stream in listener.incoming() {
        if let Some(why) = d.exiting.lock().unwrap().clone() {
            // Leases stay with the server until they expire, as the reference's: a
            // daemon started again does not know them.
            let _ = std::fs::remove_file(&socket);
            if let Some(p) = &opts.pidfile {
                let _ = std::fs::remove_file(p);
            }
            log!("exiting: {why}");
            return Ok(());
        }
        match stream {
            Ok(s) => {
                let d = Arc::clone(&d);
                std::thread::spawn(move || serve(&d, s));
            }
            Err(e) => log!("accepting: {e}"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_and_flags() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("10"), None);
        assert_eq!(parse_duration(""), None);
        let args: Vec<String> = [
            "-socketpath",
            "/tmp/d.sock",
            "--timeout=3s",
            "-broadcast",
            "-hostprefix",
            "/host",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let o = Options::parse(&args).unwrap();
        assert_eq!(o.socket, PathBuf::from("/tmp/d.sock"));
        assert_eq!(
            (o.timeout, o.host_prefix.as_str()),
            (Duration::from_secs(3), "/host")
        );
        assert!(Options::parse(&["-nope".to_string()])
            .unwrap_err()
            .contains("-nope"));
        assert!(Options::parse(&["-pidfile".into(), "rel".into()]).is_err());
        assert!(Options::parse(&["-timeout".into(), "soon".into()])
            .unwrap_err()
            .contains("-timeout"));
    }
}
