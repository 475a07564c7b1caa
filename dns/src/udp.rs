//! The UDP path: one task per listening socket answers local names inline.
//!
//! hickory-server's UDP server spawns a task per datagram and sends every answer through
//! a channel to the socket's own task; on a small host that bookkeeping cost as much as
//! the answer. Here the socket's task drains every queued datagram, answers local names
//! from the zone on the spot (hickory-proto parses and encodes), and spawns a task only
//! for a question it forwards upstream. The answers come from [`crate::answer`]; TCP
//! stays with hickory-server ([`crate::tcp`]), which holds connections, idle timeouts and
//! slow clients apart.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, Metadata, OpCode, ResponseCode};
use tokio::net::UdpSocket;

use crate::answer::{edns, refusal, Decision, Handler, EDNS_PAYLOAD, TTL};

/// Datagrams answered in one go before the task yields to the others (control socket,
/// TCP connections, forwarded answers).
const BATCH: usize = 64;

/// The largest answer to a client that did not advertise EDNS.
const PLAIN_MAX: usize = 512;

/// What to do with one datagram.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Ask these upstreams (empty: the host's) and pass their answer back, up to the
    /// client's UDP size.
    Forward(Vec<IpAddr>, usize),
    /// Not a query (a response, or not even a header): no answer, so no reflection.
    Ignore,
}

/// A header-only response: `code` for the message whose first bytes are `query`.
fn error_reply(query: &[u8], code: ResponseCode) -> Outcome {
    let id = u16::from_be_bytes([query[0], query[1]]);
    let op = OpCode::from_u8((query[2] >> 3) & 0x0f);
    let mut m = Message::error_msg(id, op, code);
    m.metadata.recursion_desired = query[2] & 1 == 1;
    m.metadata.recursion_available = true;
    m.to_vec().map_or(Outcome::Ignore, Outcome::Reply)
}

fn answer(handler: &Handler, query: &[u8], src: IpAddr) -> Outcome {
    // Twelve header bytes, QR clear: anything else is not a question to us.
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return Outcome::Ignore;
    }
    let Ok(mut request) = Message::from_vec(query) else {
        return error_reply(query, ResponseCode::FormErr);
    };
    let m = &request.metadata;
    if let Some(code) = refusal(m.op_code, m.message_type, request.queries.len()) {
        return error_reply(query, code);
    }
    let max = request
        .edns
        .as_ref()
        .map_or(PLAIN_MAX, |e| usize::from(e.max_payload()).max(PLAIN_MAX));
    let q = &request.queries[0];
    let decision = handler.decide(src, q.name(), q.query_type());
    if let Decision::Addrs(ips) = &decision {
        if let Some(bytes) = addrs_reply(query, ips, request.edns.is_some(), max) {
            return Outcome::Reply(bytes);
        }
    }
    let (code, answers, authorities) = match decision.into_local(q.name()) {
        Ok(parts) => parts,
        Err(upstreams) => return Outcome::Forward(upstreams, max),
    };
    let mut meta = Metadata::response_from_request(&request.metadata);
    meta.recursion_available = true;
    meta.authoritative = code != ResponseCode::Refused;
    meta.response_code = code;
    let mut response = Message::new(meta.id, MessageType::Response, meta.op_code);
    response.metadata = meta;
    response.queries = std::mem::take(&mut request.queries);
    response.answers = answers;
    response.authorities = authorities;
    response.edns = request.edns.is_some().then(edns);
    match response.to_vec() {
        Ok(bytes) if bytes.len() <= max => Outcome::Reply(bytes),
        // Too big for the client's UDP: the header and question with TC set, so that it
        // asks again over TCP.
        Ok(_) => response
            .truncate()
            .to_vec()
            .map_or(Outcome::Ignore, Outcome::Reply),
        Err(_) => error_reply(query, ResponseCode::ServFail),
    }
}

/// Where the (single, uncompressed) question of a parsed `query` ends; `None` for a name
/// with compression pointers, left to the general path.
fn question_end(query: &[u8]) -> Option<usize> {
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        if len == 0 {
            break;
        }
        if len & 0xc0 != 0 {
            return None;
        }
        i += 1 + len;
    }
    let end = i + 1 + 4;
    (end <= query.len()).then_some(end)
}

/// The hot answer, addresses of a local name, written without building a message: the
/// header, the query's own question bytes, then each record naming the question by a
/// pointer to it (offset 12), and the OPT record when the client sent one. `None` when
/// it does not fit the client's size (the general path truncates). The tests decode
/// it with hickory and compare it with the general path's answer.
fn addrs_reply(query: &[u8], ips: &[IpAddr], edns: bool, max: usize) -> Option<Vec<u8>> {
    let qend = question_end(query)?;
    let size = qend
        + ips
            .iter()
            .map(|ip| if ip.is_ipv4() { 16 } else { 28 })
            .sum::<usize>()
        + if edns { 11 } else { 0 };
    if size > max {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&query[..2]);
    // QR, the query's opcode and RD, AA; RA, the query's CD, NOERROR.
    out.push(0x80 | (query[2] & 0x79) | 0x04);
    out.push(0x80 | (query[3] & 0x10));
    let count = |n: usize| {
        u16::try_from(n)
            .expect("a handful of records")
            .to_be_bytes()
    };
    out.extend_from_slice(&count(1));
    out.extend_from_slice(&count(ips.len()));
    out.extend_from_slice(&count(0));
    out.extend_from_slice(&count(usize::from(edns)));
    out.extend_from_slice(&query[12..qend]);
    for ip in ips {
        out.extend_from_slice(&[0xc0, 0x0c]);
        let (rtype, rdata): (u16, &[u8]) = match ip {
            IpAddr::V4(v4) => (1, &v4.octets()),
            IpAddr::V6(v6) => (28, &v6.octets()),
        };
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&TTL.to_be_bytes());
        out.extend_from_slice(&count(rdata.len()));
        out.extend_from_slice(rdata);
    }
    if edns {
        // Root name, type OPT, our payload size, no extended rcode/version/flags, no data.
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    Some(out)
}

/// The local answer the UDP path sends back for one datagram from `src`, without a
/// socket; `None` when the datagram is ignored or would be forwarded (the fuzzer's
/// entry).
pub fn local_reply(handler: &Handler, query: &[u8], src: IpAddr) -> Option<Vec<u8>> {
    match answer(handler, query, src) {
        Outcome::Reply(bytes) => Some(bytes),
        Outcome::Forward(..) | Outcome::Ignore => None,
    }
}

async fn send(socket: &UdpSocket, bytes: &[u8], to: SocketAddr) {
    match socket.try_send_to(bytes, to) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {
            // The send buffer is full: wait for room rather than drop the answer.
            let _ = socket.send_to(bytes, to).await;
        }
        // A client gone or unreachable: nothing to tell it.
        _ => {}
    }
}

/// Serves `socket` until the task is aborted (the network's listeners are dropped).
pub async fn serve(socket: UdpSocket, handler: Handler) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        for _ in 0..BATCH {
            let (n, peer) = match socket.try_recv_from(&mut buf) {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                // ICMP errors of earlier sends and the like: the next datagram is fine.
                Err(_) => continue,
            };
            let query = &buf[..n];
            match answer(&handler, query, peer.ip()) {
                Outcome::Reply(bytes) => send(&socket, &bytes, peer).await,
                Outcome::Forward(upstreams, max) => {
                    let (socket, handler, query) =
                        (socket.clone(), handler.clone(), query.to_vec());
                    tokio::spawn(async move {
                        let reply = match handler
                            .forwarder
                            .forward(&query, &upstreams, false, max)
                            .await
                        {
                            Some(r) => r,
                            None => match error_reply(&query, ResponseCode::ServFail) {
                                Outcome::Reply(r) => r,
                                _ => return,
                            },
                        };
                        send(&socket, &reply, peer).await;
                    });
                }
                Outcome::Ignore => {}
            }
        }
        tokio::task::yield_now().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::RwLock;

    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RData, RecordType};

    use crate::answer::addr_records;
    use crate::forward::Forwarder;
    use crate::zone::Zone;

    fn handler() -> Handler {
        Handler {
            zone: Arc::new(RwLock::new(Zone::default())),
            forwarder: Arc::new(Forwarder::new(std::path::Path::new("/nonexistent"))),
        }
    }

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn the_written_address_answer_decodes_as_hickory_would_build_it() {
        let ips: Vec<IpAddr> = vec!["10.89.0.10".parse().unwrap(), "fd00::10".parse().unwrap()];
        for with_edns in [false, true] {
            let mut m = Message::query();
            m.metadata.id = 0xbeef;
            m.metadata.recursion_desired = true;
            m.metadata.checking_disabled = true;
            m.add_query(Query::query(
                Name::from_ascii("HuGo.dns.podman.").unwrap(),
                RecordType::A,
            ));
            if with_edns {
                m.set_edns(edns());
            }
            let q = m.to_vec().unwrap();
            let r = addrs_reply(&q, &ips, with_edns, 512).expect("fits");
            let got = Message::from_vec(&r).unwrap();
            assert_eq!(got.metadata.id, 0xbeef);
            assert_eq!(got.metadata.message_type, MessageType::Response);
            assert_eq!(got.metadata.op_code, OpCode::Query);
            assert!(got.metadata.authoritative && got.metadata.recursion_available);
            assert!(got.metadata.recursion_desired && got.metadata.checking_disabled);
            assert!(!got.metadata.truncation);
            assert_eq!(got.metadata.response_code, ResponseCode::NoError);
            assert_eq!(got.queries, m.queries);
            assert_eq!(got.answers, addr_records(m.queries[0].name(), &ips));
            assert!(got.authorities.is_empty() && got.additionals.is_empty());
            assert_eq!(
                got.edns.map(|e| e.max_payload()),
                with_edns.then_some(EDNS_PAYLOAD)
            );
        }
        // Too big for the client: left to the general path, which truncates.
        let q = query("hugo.dns.podman.", RecordType::A);
        assert_eq!(addrs_reply(&q, &ips, false, 40), None);
        // A compressed question name: the general path too.
        let mut c = q[..12].to_vec();
        c.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        assert_eq!(question_end(&c), None);
    }

    #[test]
    fn responses_and_garbage_get_no_answer() {
        let h = handler();
        let src: IpAddr = "10.89.0.5".parse().unwrap();
        assert_eq!(answer(&h, &[0u8; 5], src), Outcome::Ignore);
        let mut response = query("a.dns.podman.", RecordType::A);
        response[2] |= 0x80;
        assert_eq!(answer(&h, &response, src), Outcome::Ignore);
    }

    #[test]
    fn mutated_packets_never_panic_and_questions_always_get_an_answer() {
        let h = handler();
        let src: IpAddr = "10.89.0.5".parse().unwrap();
        let good = query("hugo.dns.podman.", RecordType::A);
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut p = good.clone();
            match i % 3 {
                0 => p.truncate((seed % p.len() as u64) as usize),
                1 => {
                    let k = (seed % p.len() as u64) as usize;
                    p[k] = (seed >> 8) as u8;
                }
                _ => p = seed.to_le_bytes().repeat((seed % 64) as usize),
            }
            let question = p.len() >= 12 && p[2] & 0x80 == 0;
            match answer(&h, &p, src) {
                Outcome::Reply(r) => {
                    let m = Message::from_vec(&r).expect("replies parse");
                    assert_eq!(m.metadata.id, u16::from_be_bytes([p[0], p[1]]));
                }
                Outcome::Ignore => assert!(!question, "{p:?} got no answer"),
                Outcome::Forward(..) => {}
            }
        }
    }

    #[test]
    fn a_malformed_question_gets_formerr_with_its_id() {
        let h = handler();
        let mut q = query("a.dns.podman.", RecordType::A);
        q.truncate(q.len() - 3);
        let Outcome::Reply(r) = answer(&h, &q, "10.89.0.5".parse().unwrap()) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert_eq!(m.metadata.message_type, MessageType::Response);
    }

    #[test]
    fn a_client_of_no_network_is_refused() {
        let h = handler();
        let Outcome::Reply(r) = answer(
            &h,
            &query("a.dns.podman.", RecordType::A),
            "192.0.2.1".parse().unwrap(),
        ) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        assert!(m.metadata.recursion_available);
    }

    #[test]
    fn local_names_are_answered_case_insensitively_keeping_the_asked_case() {
        let h = handler();
        {
            let mut z = h.zone.write().unwrap();
            let subnet: ipnetwork::IpNetwork = "10.89.0.0/24".parse().unwrap();
            z.set_network(crate::store::NetworkConf {
                name: "n".into(),
                domain: "dns.podman".into(),
                gateways: vec!["10.89.0.1".parse().unwrap()],
                subnets: vec![subnet],
                bridge: "n0".into(),
                port: 53,
                upstreams: Vec::new(),
            });
            z.insert(
                "n",
                crate::store::Attachment {
                    container_id: "c1".into(),
                    ifname: "eth0".into(),
                    names: vec!["hugo".into()],
                    ips: vec!["10.89.0.10".parse().unwrap()],
                    upstreams: vec![],
                    seq: 1,
                },
            );
        }
        let src: IpAddr = "10.89.0.5".parse().unwrap();
        let Outcome::Reply(r) = answer(&h, &query("HuGo.Dns.Podman.", RecordType::A), src) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert!(m.metadata.authoritative);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].name.to_ascii(), "HuGo.Dns.Podman.");
        assert_eq!(m.answers[0].data, RData::A("10.89.0.10".parse().unwrap()));
        let Outcome::Reply(r) = answer(&h, &query("nobody.dns.podman.", RecordType::A), src) else {
            panic!("no reply")
        };
        let m = Message::from_vec(&r).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(
            answer(&h, &query("example.org.", RecordType::A), src),
            Outcome::Forward(Vec::new(), PLAIN_MAX)
        );
    }
}
