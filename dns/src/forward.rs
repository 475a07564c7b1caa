//! Forwarding what is not ours to upstream resolvers.
//!
//! A UDP query goes out on one of a small pool of connected sockets per upstream (each
//! bound to its own random source port when first used, as dnsmasq keeps its
//! sockets), with a fresh random id; one reader task per socket hands each answer to the
//! query waiting on its id, and the client's id is put back. The query is sent to every
//! live upstream at once; the first answer wins. An upstream that fails or stays silent
//! past the timeout is remembered as dead for [`DEAD_FOR`] and skipped while another one
//! lives. A truncated UDP answer is asked again over TCP and passed on whole when it fits
//! the client's UDP size (otherwise the truncated one goes back and the client retries
//! over TCP, which we forward over TCP, a connection per query). Upstreams are the
//! network's own when configured, else the nameservers of the host's /etc/resolv.conf,
//! re-read when the file changes.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

/// How long one upstream gets to answer.
pub const TIMEOUT: Duration = Duration::from_millis(2000);
/// How long a failed upstream is skipped.
pub const DEAD_FOR: Duration = Duration::from_secs(30);
/// At most this many upstreams are asked at once (as glibc uses three).
const MAX_UPSTREAMS: usize = 3;
/// Sockets per upstream: queries spread over this many source ports.
const POOL_SIZE: usize = 8;

#[derive(Debug, Default)]
struct HostResolvers {
    servers: Vec<SocketAddr>,
    mtime: Option<SystemTime>,
    checked: Option<Instant>,
}

#[derive(Debug)]
pub struct Forwarder {
    resolv_conf: PathBuf,
    host: Mutex<HostResolvers>,
    dead: Mutex<HashMap<SocketAddr, Instant>>,
    /// Addresses never forwarded to (our own listeners: no loops).
    own: Mutex<Vec<IpAddr>>,
    /// The UDP sockets of each upstream, made on first use.
    pools: Mutex<HashMap<SocketAddr, Vec<Arc<Upstream>>>>,
    next: AtomicUsize,
    /// Forwarded queries waiting for an answer now ([`MAX_IN_FLIGHT`] at most).
    in_flight: Arc<AtomicUsize>,
}

/// At most this many forwarded queries wait for upstreams at once (dnsmasq's
/// `dns-forward-max` default); past it a query is answered SERVFAIL at once, so a flood
/// towards a silent upstream cannot grow the responder's memory.
pub const MAX_IN_FLIGHT: usize = 150;

/// One forwarded query's place among the [`MAX_IN_FLIGHT`]; given back on drop.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One connected UDP socket to an upstream and the queries waiting on it, by id.
#[derive(Debug)]
struct Upstream {
    sock: UdpSocket,
    waiting: Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>,
}

impl Upstream {
    /// Binds a random port, connects, and starts the socket's reader.
    fn open(server: SocketAddr) -> std::io::Result<Arc<Upstream>> {
        let local: SocketAddr = match server {
            SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let std_sock = std::net::UdpSocket::bind(local)?;
        std_sock.connect(server)?;
        std_sock.set_nonblocking(true)?;
        let up = Arc::new(Upstream {
            sock: UdpSocket::from_std(std_sock)?,
            waiting: Mutex::default(),
        });
        tokio::spawn(Upstream::read(Arc::downgrade(&up)));
        Ok(up)
    }

    /// Hands each answer to the query waiting on its id. An error (an ICMP refusal on
    /// the connected socket) fails every waiting query at once: the upstream is down.
    async fn read(me: std::sync::Weak<Upstream>) {
        let mut buf = vec![0u8; 65535];
        loop {
            let Some(up) = me.upgrade() else { return };
            match up.sock.recv(&mut buf).await {
                Ok(n) if n >= 12 => {
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    let waiter = up.waiting.lock().expect("waiting lock").remove(&id);
                    if let Some(tx) = waiter {
                        let _ = tx.send(buf[..n].to_vec());
                    }
                }
                Ok(_) => {}
                Err(_) => up.waiting.lock().expect("waiting lock").clear(),
            }
        }
    }

    /// Sends `query` under a free random id; the answer with the query's own id.
    async fn ask(&self, query: &[u8]) -> std::io::Result<Vec<u8>> {
        if query.len() < 12 {
            return Err(std::io::Error::other("short query"));
        }
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut waiting = self.waiting.lock().expect("waiting lock");
            let mut id = random_id();
            while waiting.contains_key(&id) {
                id = random_id();
            }
            waiting.insert(id, tx);
            id
        };
        // Forgets the id however this ends (answer, error, the caller's timeout).
        let _forget = Forget { up: self, id };
        let mut q = query.to_vec();
        q[..2].copy_from_slice(&id.to_be_bytes());
        self.sock.send(&q).await?;
        let mut answer = rx
            .await
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
        answer[..2].copy_from_slice(&query[..2]);
        Ok(answer)
    }
}

struct Forget<'a> {
    up: &'a Upstream,
    id: u16,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.up
            .waiting
            .lock()
            .expect("waiting lock")
            .remove(&self.id);
    }
}

/// A query id no off-path sender can guess.
fn random_id() -> u16 {
    netkit::random_u64() as u16
}

/// The nameservers of a resolv.conf (pure).
pub fn parse_resolv_conf(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next())
                .flatten()
                .and_then(|a| a.split('%').next())
                .and_then(|a| a.parse().ok())
        })
        .collect()
}

/// The TC bit of a DNS message.
fn truncated(msg: &[u8]) -> bool {
    msg.len() > 2 && msg[2] & 0x02 != 0
}

fn same_id(q: &[u8], r: &[u8]) -> bool {
    q.len() >= 2 && r.len() >= 12 && q[..2] == r[..2]
}

impl Forwarder {
    pub fn new(resolv_conf: impl Into<PathBuf>) -> Forwarder {
        Forwarder {
            resolv_conf: resolv_conf.into(),
            host: Mutex::default(),
            dead: Mutex::default(),
            own: Mutex::default(),
            pools: Mutex::default(),
            next: AtomicUsize::new(0),
            in_flight: Arc::default(),
        }
    }

    /// One of the upstream's sockets, round robin, opening it on first use.
    fn socket(&self, server: SocketAddr) -> std::io::Result<Arc<Upstream>> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % POOL_SIZE;
        let mut pools = self.pools.lock().expect("pools lock");
        let pool = pools.entry(server).or_default();
        if let Some(up) = pool.get(turn) {
            return Ok(up.clone());
        }
        let up = Upstream::open(server)?;
        pool.push(up.clone());
        Ok(up)
    }

    pub fn set_own(&self, addrs: Vec<IpAddr>) {
        *self.own.lock().expect("own lock") = addrs;
    }

    /// The host's resolvers, re-reading the file at most once a second and only when
    /// its modification time changed.
    fn host_servers(&self) -> Vec<SocketAddr> {
        let mut h = self.host.lock().expect("host lock");
        let stale = h
            .checked
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if stale {
            h.checked = Some(Instant::now());
            let mtime = std::fs::metadata(&self.resolv_conf)
                .and_then(|m| m.modified())
                .ok();
            if mtime != h.mtime || h.mtime.is_none() {
                h.mtime = mtime;
                let text = std::fs::read_to_string(&self.resolv_conf).unwrap_or_default();
                h.servers = parse_resolv_conf(&text)
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, 53))
                    .collect();
            }
        }
        h.servers.clone()
    }

    /// The upstreams to ask, live ones first.
    fn pick(&self, configured: &[IpAddr]) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = if configured.is_empty() {
            self.host_servers()
        } else {
            configured
                .iter()
                .map(|ip| SocketAddr::new(*ip, 53))
                .collect()
        };
        {
            let own = self.own.lock().expect("own lock");
            all.retain(|s| !own.contains(&s.ip()));
        }
        all.truncate(MAX_UPSTREAMS);
        let dead = self.dead.lock().expect("dead lock");
        let alive = |s: &SocketAddr| dead.get(s).is_none_or(|t| t.elapsed() >= DEAD_FOR);
        let (mut live, down): (Vec<_>, Vec<_>) = all.into_iter().partition(alive);
        if live.is_empty() {
            live = down;
        }
        live
    }

    fn mark(&self, server: SocketAddr, ok: bool) {
        let mut dead = self.dead.lock().expect("dead lock");
        if ok {
            dead.remove(&server);
        } else {
            dead.insert(server, Instant::now());
        }
    }

    /// A place among the queries in flight; `None` when [`MAX_IN_FLIGHT`] are.
    fn begin(&self) -> Option<InFlight> {
        let n = self.in_flight.fetch_add(1, Ordering::Relaxed);
        let slot = InFlight(self.in_flight.clone());
        (n < MAX_IN_FLIGHT).then_some(slot)
    }

    /// Forwards `query` (a whole DNS message); `None` when no upstream answered, or when
    /// [`MAX_IN_FLIGHT`] queries are already waiting (the caller answers SERVFAIL).
    pub async fn forward(
        self: &Arc<Self>,
        query: &[u8],
        configured: &[IpAddr],
        tcp: bool,
        client_max: usize,
    ) -> Option<Vec<u8>> {
        let _slot = self.begin()?;
        let servers = self.pick(configured);
        if servers.is_empty() {
            return None;
        }
        if let [s] = servers[..] {
            // One upstream: no race to run.
            return match self.ask(s, query, tcp).await {
                Some(r) if !tcp && truncated(&r) => {
                    Some(self.refetch(s, query, client_max, r).await)
                }
                r => r,
            };
        }
        // Every upstream is asked at once; each task records its upstream's health
        // itself, so a silent one is remembered as dead even after another answered.
        let q: Arc<[u8]> = Arc::from(query);
        let (tx, mut rx) = tokio::sync::mpsc::channel(servers.len());
        for s in servers {
            let (q, tx, me) = (q.clone(), tx.clone(), self.clone());
            tokio::spawn(async move {
                let r = me.ask(s, &q, tcp).await;
                let _ = tx.send((s, r)).await;
            });
        }
        drop(tx);
        while let Some((s, r)) = rx.recv().await {
            let Some(r) = r else { continue };
            if !tcp && truncated(&r) {
                return Some(self.refetch(s, query, client_max, r).await);
            }
            return Some(r);
        }
        None
    }

    /// One upstream's answer within [`TIMEOUT`] (its id checked), recording its health.
    async fn ask(&self, s: SocketAddr, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let r = if tcp {
            tokio::time::timeout(TIMEOUT, tcp_query(s, query)).await
        } else {
            let up = match self.socket(s) {
                Ok(up) => up,
                Err(_) => {
                    self.mark(s, false);
                    return None;
                }
            };
            tokio::time::timeout(TIMEOUT, up.ask(query)).await
        };
        let r = r.ok().and_then(|r| r.ok()).filter(|r| same_id(query, r));
        self.mark(s, r.is_some());
        r
    }

    /// A truncated UDP answer, asked again over TCP: the whole answer when it fits the
    /// client's UDP size, else the truncated one (the client retries over TCP).
    async fn refetch(
        &self,
        s: SocketAddr,
        query: &[u8],
        client_max: usize,
        truncated: Vec<u8>,
    ) -> Vec<u8> {
        match tokio::time::timeout(TIMEOUT, tcp_query(s, query)).await {
            Ok(Ok(full)) if same_id(query, &full) && full.len() <= client_max => full,
            _ => truncated,
        }
    }
}

async fn tcp_query(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    let len =
        u16::try_from(query.len()).map_err(|_| std::io::Error::other("query too long for TCP"))?;
    let mut out = Vec::with_capacity(query.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(query);
    s.write_all(&out).await?;
    let n = s.read_u16().await? as usize;
    let mut buf = vec![0u8; n];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_in_flight_are_capped() {
        let f = Forwarder::new("/nonexistent");
        let held: Vec<InFlight> = (0..MAX_IN_FLIGHT).map(|_| f.begin().unwrap()).collect();
        assert!(f.begin().is_none(), "the next query is refused");
        assert_eq!(
            f.in_flight.load(Ordering::Relaxed),
            MAX_IN_FLIGHT,
            "a refusal holds no place"
        );
        drop(held);
        assert!(f.begin().is_some(), "places come back when queries end");
        assert_eq!(f.in_flight.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn resolv_conf_nameservers() {
        let t = "# x\nnameserver 10.0.0.1\nsearch a b\nnameserver fe80::1%eth0\nnameserver bad\n";
        assert_eq!(
            parse_resolv_conf(t),
            vec![
                "10.0.0.1".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
    }

    #[test]
    fn tc_bit() {
        assert!(truncated(&[0, 1, 0x82, 0]));
        assert!(!truncated(&[0, 1, 0x80, 0]));
    }
}
