//! The responder process: `dnsname serve [--state-dir DIR] [--resolv-conf FILE]`.
//!
//! One process per state directory serves every network: it loads every record from
//! disk, listens (UDP and TCP) on each network's gateway addresses only, then opens its
//! control socket — a plugin that can connect knows the responder is ready. Control
//! requests are applied one at a time and answered only once memory and listeners
//! reflect them. It exits when its last network is gone (or on SIGTERM/SIGINT), removing
//! its socket and pidfile; after a crash the next plugin call starts a new one, which
//! finds every record on disk.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_server::Server;
use nix::sys::socket::{
    bind, listen, setsockopt, socket, sockopt, AddressFamily, Backlog, SockFlag, SockType,
    SockaddrStorage,
};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::answer::Handler;
use crate::control::{Reply, Request};
use crate::forward::Forwarder;
use crate::store::{NetworkConf, Store, StoreError};
use crate::zone::Zone;

/// What stops the responder, or one control request.
#[derive(Debug, thiserror::Error)]
pub enum ResponderError {
    #[error("{0} (usage: dnsname serve [--state-dir DIR] [--resolv-conf FILE])")]
    Usage(String),
    #[error("binding {proto} {addr} for network {network}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        network: String,
        #[source]
        source: nix::Error,
    },
    #[error("registering {proto} {addr}: {source}")]
    Register {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("network {0} has no network.json")]
    NoNetwork(String),
    #[error("no record {key} in network {network}")]
    NoRecord { network: String, key: String },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out reading a control request")]
    ControlTimeout,
    #[error("reading a control request: {0}")]
    ControlRead(#[source] std::io::Error),
    #[error("bad control request: {0}")]
    BadRequest(#[source] serde_json::Error),
    #[error("installing the signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

type Result<T, E = ResponderError> = std::result::Result<T, E>;

fn io_at<'a>(
    what: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(std::io::Error) -> ResponderError + 'a {
    move |source| ResponderError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// A TCP connection that sends no query for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Options {
    pub state_dir: PathBuf,
    pub resolv_conf: PathBuf,
}

impl Options {
    /// Parses `serve`'s arguments (after `serve`).
    pub fn parse(args: &[String]) -> Result<Options> {
        let mut o = Options {
            state_dir: crate::store::state_dir(),
            resolv_conf: "/etc/resolv.conf".into(),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| ResponderError::Usage(format!("{name} needs a value")))
            };
            match a.as_str() {
                "--state-dir" => o.state_dir = value(a)?.into(),
                "--resolv-conf" => o.resolv_conf = value(a)?.into(),
                other => return Err(ResponderError::Usage(format!("unknown argument {other:?}"))),
            }
        }
        Ok(o)
    }
}

macro_rules! log {
    ($($t:tt)*) => {
        eprintln!("podnet-dns[{}]: {}", std::process::id(), format_args!($($t)*))
    };
}

/// Closes every descriptor but 0, 1 and 2 (a runtime's leaked ones included).
fn close_inherited() {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .filter(|fd| *fd > 2)
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        // The directory's own descriptor is already closed: EBADF is fine.
        let _ = nix::unistd::close(fd);
    }
}

fn family(addr: &SocketAddr) -> AddressFamily {
    if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// A socket bound to `addr`, with IP_FREEBIND so that an IPv6 gateway still in DAD
/// (or a bridge still down) does not fail the bind.
fn bound(addr: SocketAddr, ty: SockType) -> nix::Result<std::os::fd::OwnedFd> {
    let fd = socket(
        family(&addr),
        ty,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    if addr.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    if ty == SockType::Stream {
        setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(fd)
}

/// One network's listeners: hickory-server for TCP, a [`crate::udp`] task per UDP socket.
struct Listeners {
    addrs: Vec<SocketAddr>,
    tcp: Server<Handler>,
    udp: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Closes every socket before returning, so that the addresses can be bound again.
    async fn close(mut self) {
        for task in &self.udp {
            task.abort();
        }
        for task in self.udp {
            let _ = task.await;
        }
        let _ = self.tcp.shutdown_gracefully().await;
    }
}

/// Listeners on every gateway of one network.
fn listen_on(handler: &Handler, conf: &NetworkConf) -> Result<Listeners> {
    let mut server = Server::new(handler.clone());
    let mut udp_tasks = Vec::new();
    for gw in &conf.gateways {
        let addr = SocketAddr::new(*gw, conf.port);
        let bind = |proto| {
            move |source| ResponderError::Bind {
                proto,
                addr,
                network: conf.name.clone(),
                source,
            }
        };
        let register = |proto| {
            move |source| ResponderError::Register {
                proto,
                addr,
                source,
            }
        };
        let udp = bound(addr, SockType::Datagram).map_err(bind("UDP"))?;
        let udp = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(udp))
            .map_err(register("UDP"))?;
        let tcp = bound(addr, SockType::Stream)
            .and_then(|fd| listen(&fd, Backlog::new(1024)?).map(|()| fd))
            .map_err(bind("TCP"))?;
        let tcp = tokio::net::TcpListener::from_std(std::net::TcpListener::from(tcp))
            .map_err(register("TCP"))?;
        udp_tasks.push(tokio::spawn(crate::udp::serve(udp, handler.clone())));
        server.register_listener(tcp, TCP_IDLE, 64);
    }
    Ok(Listeners {
        addrs: conf
            .gateways
            .iter()
            .map(|g| SocketAddr::new(*g, conf.port))
            .collect(),
        tcp: server,
        udp: udp_tasks,
    })
}

struct Responder {
    store: Store,
    handler: Handler,
    /// network → its listeners.
    servers: HashMap<String, Listeners>,
}

impl Responder {
    fn zone(&self) -> std::sync::RwLockWriteGuard<'_, Zone> {
        self.handler.zone.write().expect("zone lock")
    }

    fn own_addresses(&self) -> Vec<IpAddr> {
        self.servers
            .values()
            .flat_map(|l| l.addrs.iter().map(|s| s.ip()))
            .collect()
    }

    async fn stop_listening(&mut self, network: &str) {
        if let Some(listeners) = self.servers.remove(network) {
            listeners.close().await;
        }
        self.handler.forwarder.set_own(self.own_addresses());
    }

    /// Makes the network's listeners match its gateways.
    async fn ensure_listening(&mut self, conf: &NetworkConf) -> Result<()> {
        let want: Vec<SocketAddr> = conf
            .gateways
            .iter()
            .map(|g| SocketAddr::new(*g, conf.port))
            .collect();
        if self
            .servers
            .get(&conf.name)
            .is_some_and(|l| l.addrs == want)
        {
            return Ok(());
        }
        self.stop_listening(&conf.name).await;
        let listeners = listen_on(&self.handler, conf)?;
        log!("network {}: listening on {want:?}", conf.name);
        self.servers.insert(conf.name.clone(), listeners);
        self.handler.forwarder.set_own(self.own_addresses());
        Ok(())
    }

    /// Re-reads one network (file and records) from disk.
    async fn sync(&mut self, network: &str) -> Result<()> {
        let conf = self.store.network(network)?;
        let atts = self.store.attachments(network)?;
        let Some(conf) = conf.filter(|_| !atts.is_empty()) else {
            self.zone().remove_network(network);
            self.stop_listening(network).await;
            return Ok(());
        };
        {
            let mut z = self.zone();
            z.remove_network(network);
            z.set_network(conf.clone());
            for a in atts {
                z.insert(network, a);
            }
        }
        self.ensure_listening(&conf).await
    }

    fn idle(&self) -> bool {
        self.servers.is_empty()
            && self
                .handler
                .zone
                .read()
                .expect("zone lock")
                .networks()
                .count()
                == 0
            && self.store.network_names().is_ok_and(|n| n.is_empty())
    }

    /// Applies one control request; the reply also carries every network's listeners.
    async fn handle(&mut self, req: Request) -> Reply {
        let done = match req {
            Request::Add { network, key } => self.add(&network, &key).await.map(|()| false),
            Request::Del { network, key } => {
                self.del(&network, &key).await;
                Ok(true)
            }
            Request::Get { network, key } => {
                let attachment = self
                    .handler
                    .zone
                    .read()
                    .expect("zone lock")
                    .attachment(&network, &key);
                return self.status(Reply {
                    attachment,
                    ..Reply::default()
                });
            }
            Request::Sync { network } => self.sync(&network).await.map(|()| true),
            Request::Status => Ok(false),
        };
        let reply = match done {
            // A request that may have removed the last network says whether we exit.
            Ok(may_exit) => Reply {
                exiting: may_exit && self.idle(),
                ..Reply::default()
            },
            Err(e) => Reply::error(e.to_string()),
        };
        self.status(reply)
    }

    /// ADD: the network's listeners, then the record into the zone.
    async fn add(&mut self, network: &str, key: &str) -> Result<()> {
        let conf = self
            .store
            .network(network)?
            .ok_or_else(|| ResponderError::NoNetwork(network.to_owned()))?;
        self.ensure_listening(&conf).await?;
        let a = self
            .store
            .attachment(network, key)?
            .ok_or_else(|| ResponderError::NoRecord {
                network: network.to_owned(),
                key: key.to_owned(),
            })?;
        let mut z = self.zone();
        z.set_network(conf);
        z.insert(network, a);
        Ok(())
    }

    /// DEL: the record out of the zone; the network's listeners close with its last one.
    async fn del(&mut self, network: &str, key: &str) {
        let empty = {
            let mut z = self.zone();
            z.remove(network, key);
            z.is_empty(network)
        };
        if empty && self.store.has_attachments(network).is_ok_and(|has| !has) {
            self.zone().remove_network(network);
            self.stop_listening(network).await;
            log!("network {network}: no container left, not listening");
        }
    }

    /// `reply` with the networks served, their addresses and names, and our pid.
    fn status(&self, mut reply: Reply) -> Reply {
        let z = self.handler.zone.read().expect("zone lock");
        let mut nets: Vec<(String, Vec<IpAddr>, usize)> = z
            .networks()
            .map(|c| {
                let addrs = self
                    .servers
                    .get(&c.name)
                    .map(|l| l.addrs.iter().map(|s| s.ip()).collect())
                    .unwrap_or_default();
                (c.name.clone(), addrs, z.len(&c.name))
            })
            .collect();
        nets.sort();
        reply.networks = nets;
        reply.pid = std::process::id();
        reply
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<Request> {
    let mut line = String::new();
    let mut r = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line))
        .await
        .map_err(|_| ResponderError::ControlTimeout)?
        .map_err(ResponderError::ControlRead)?;
    serde_json::from_str(&line).map_err(ResponderError::BadRequest)
}

async fn run(opts: Options) -> Result<()> {
    let store = Store::new(&opts.state_dir);
    std::fs::create_dir_all(&store.dir).map_err(io_at("creating", &store.dir))?;
    let handler = Handler {
        zone: Arc::new(RwLock::new(Zone::default())),
        forwarder: Arc::new(Forwarder::new(&opts.resolv_conf)),
    };
    let mut r = Responder {
        store,
        handler,
        servers: HashMap::new(),
    };
    let mut names = 0;
    let loaded = {
        let mut z = r.zone();
        r.store.load(|conf, a| {
            z.insert(&conf.name, a);
            names += 1;
        })?
    };
    for conf in loaded {
        r.zone().set_network(conf.clone());
        if let Err(e) = r.ensure_listening(&conf).await {
            // The next ADD on this network retries and reports it.
            log!("{e}");
        }
    }
    let sock_path = r.store.socket_path();
    let pid_path = r.store.pid_path();
    let _ = std::fs::remove_file(&sock_path);
    std::fs::write(&pid_path, format!("{}\n", std::process::id()))
        .map_err(io_at("writing", &pid_path))?;
    let listener = UnixListener::bind(&sock_path).map_err(io_at("binding", &sock_path))?;
    log!(
        "ready: {} networks, {names} attachments, control socket {}",
        r.servers.len(),
        sock_path.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ResponderError::Signals)?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(ResponderError::Signals)?;
    let cleanup = |why: &str| {
        let _ = std::fs::remove_file(&sock_path);
        let ours = std::fs::read_to_string(&pid_path)
            .is_ok_and(|p| p.trim() == std::process::id().to_string());
        if ours {
            let _ = std::fs::remove_file(&pid_path);
        }
        log!("exiting: {why}");
    };
    loop {
        let mut stream = tokio::select! {
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => { log!("control socket: {e}"); continue; }
            },
            _ = term.recv() => { cleanup("SIGTERM"); return Ok(()); }
            _ = int.recv() => { cleanup("SIGINT"); return Ok(()); }
        };
        let reply = match read_request(&mut stream).await {
            Ok(req) => r.handle(req).await,
            Err(e) => Reply::error(e.to_string()),
        };
        if reply.exiting {
            // Gone before the caller (holding the store lock) hears of it: the next
            // plugin starts a new responder.
            cleanup("no network left");
        }
        let mut line = serde_json::to_vec(&reply).expect("replies serialize");
        line.push(b'\n');
        let _ = stream.write_all(&line).await;
        if reply.exiting {
            return Ok(());
        }
    }
}

/// `dnsname serve …`: runs the responder in the foreground until it is done.
pub fn main(args: &[String]) -> std::process::ExitCode {
    close_inherited();
    // Its own session: the runtime's terminal signals do not reach it.
    let _ = nix::unistd::setsid();
    let opts = match Options::parse(args) {
        Ok(o) => o,
        Err(e) => {
            log!("{e}");
            return std::process::ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log!("starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            log!("{e}");
            std::process::ExitCode::FAILURE
        }
    }
}
