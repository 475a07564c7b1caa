//! A DNS client and a scriptable upstream server for the responder's tests, both with
//! their sockets in a given namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netkit::NetNs;

/// What a query got: the response code, the answers' data as text, and the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub code: ResponseCode,
    pub data: Vec<String>,
    pub authoritative: bool,
    pub truncated: bool,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.code == ResponseCode::NoError && !self.data.is_empty()
    }
}

fn query_bytes(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = rand_id();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(
        Name::from_ascii(name).expect("a valid name"),
        qtype,
    ));
    m.to_vec().expect("a query encodes")
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u16
}

fn answer(bytes: &[u8]) -> Option<Answer> {
    let m = Message::from_vec(bytes).ok()?;
    Some(Answer {
        code: m.metadata.response_code,
        data: m.answers.iter().map(|r| r.data.to_string()).collect(),
        authoritative: m.metadata.authoritative,
        truncated: m.metadata.truncation,
    })
}

/// Asks `server` (port 53) for `name` from inside `from`, over UDP or TCP; `None` when
/// nothing came back within 2 s or the exchange failed ([`try_query`] says why).
pub fn query(
    from: &NetNs,
    server: &str,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Option<Answer> {
    try_query(from, server, name, qtype, tcp).ok()
}

/// Why a query got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAnswer {
    /// Nothing within 2 s.
    Timeout,
    /// The client's own socket failed (bind, send, a receive other than the timeout):
    /// nothing about the server is known.
    Socket(String),
    /// An answer that does not decode.
    Undecodable(Vec<u8>),
}

/// [`query`] with the reason when there is no answer.
pub fn try_query(
    from: &NetNs,
    server: &str,
    name: &str,
    qtype: RecordType,
    tcp: bool,
) -> Result<Answer, NoAnswer> {
    let to: SocketAddr = SocketAddr::new(server.parse().expect("server address"), 53);
    let q = query_bytes(name, qtype);
    let _in = from.enter().expect("enter");
    let io = |what: &'static str| {
        move |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NoAnswer::Timeout,
            _ => NoAnswer::Socket(format!("{what}: {e}")),
        }
    };
    let decoded = |bytes: &[u8]| answer(bytes).ok_or_else(|| NoAnswer::Undecodable(bytes.to_vec()));
    if tcp {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(io("connect"))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io("timeout"))?;
        let mut out = (q.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&q);
        s.write_all(&out).map_err(io("write"))?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).map_err(io("read"))?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).map_err(io("read"))?;
        return decoded(&buf);
    }
    let bind = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sock = UdpSocket::bind(bind).map_err(io("bind"))?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(io("timeout"))?;
    sock.send_to(&q, to).map_err(io("send"))?;
    // As a resolver does: only the answer to this query (its id, from the server) counts.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 4096];
    loop {
        let (n, from) = match sock.recv_from(&mut buf) {
            // A signal is no answer: wait on for the rest of the 2 s.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(NoAnswer::Timeout);
                }
                sock.set_read_timeout(Some(left)).map_err(io("timeout"))?;
                continue;
            }
            r => r.map_err(io("receive"))?,
        };
        if from == to && n >= 2 && buf[..2] == q[..2] {
            return decoded(&buf[..n]);
        }
    }
}

/// Sends raw bytes to `server`:53 over UDP from `from` (for malformed packets).
pub fn send_raw(from: &NetNs, server: &str, bytes: &[u8]) {
    let to: SocketAddr = SocketAddr::new(server.parse().expect("server address"), 53);
    let _in = from.enter().expect("enter");
    let sock = UdpSocket::bind("0.0.0.0:0").expect("udp socket");
    let _ = sock.send_to(bytes, to);
}

fn reply_to(q: &[u8], ip: &str, truncate: bool) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_available = true;
    m.metadata.response_code = ResponseCode::NoError;
    let query = req.queries.first()?.clone();
    if truncate {
        m.metadata.truncation = true;
    } else if query.query_type() == RecordType::A {
        m.add_answer(Record::from_rdata(
            query.name().clone(),
            30,
            RData::A(A(ip.parse().ok()?)),
        ));
    }
    m.add_query(query);
    m.to_vec().ok()
}

/// An upstream resolver on `addr`:53 inside `ns` answering every A query with `ip`.
/// Names starting with `big` get a truncated answer over UDP and the full one over
/// TCP (to exercise the TCP fallback).
pub fn serve_upstream(ns: &NetNs, addr: &str, ip: &str) {
    let (udp, tcp) = {
        let _in = ns.enter().expect("enter");
        let a = format!("{addr}:53");
        (
            UdpSocket::bind(&a).unwrap_or_else(|e| panic!("bind {a}: {e}")),
            TcpListener::bind(&a).unwrap_or_else(|e| panic!("bind {a}: {e}")),
        )
    };
    let ip1 = ip.to_owned();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let big = Message::from_vec(&buf[..n])
                .ok()
                .and_then(|m| m.queries.first().map(|q| q.name().to_string()))
                .is_some_and(|n| n.starts_with("big"));
            if let Some(r) = reply_to(&buf[..n], &ip1, big) {
                let _ = udp.send_to(&r, from);
            }
        }
    });
    let ip2 = ip.to_owned();
    std::thread::spawn(move || {
        for mut c in tcp.incoming().flatten() {
            let mut len = [0u8; 2];
            if c.read_exact(&mut len).is_err() {
                continue;
            }
            let mut q = vec![0u8; u16::from_be_bytes(len) as usize];
            if c.read_exact(&mut q).is_err() {
                continue;
            }
            if let Some(r) = reply_to(&q, &ip2, false) {
                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                out.extend_from_slice(&r);
                let _ = c.write_all(&out);
            }
        }
    });
}

/// The responder's pid, from its pidfile.
pub fn responder_pid() -> Option<i32> {
    std::fs::read_to_string("/run/podnet/dns/responder.pid")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
pub fn alive(pid: i32) -> bool {
    netkit::process_running(pid)
}
