//! The hickory-server request handler: the zone's decision turned into DNS messages.
//!
//! hickory-server owns the sockets: UDP, and TCP with many queries per connection, one
//! task per connection and an idle timeout (one slow client stalls only itself). The
//! handler reads the zone under a read lock held for the lookup alone, so updates never
//! wait for a query in flight upstream and no query waits for more than an insert.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, Message, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use crate::forward::Forwarder;
use crate::zone::{Answer, QType, Zone};

/// TTL of local answers, in seconds: short, as addresses change with restarts.
pub const TTL: u32 = 10;

/// The UDP payload size podnet advertises with EDNS.
pub const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, Clone)]
pub struct Handler {
    pub zone: Arc<RwLock<Zone>>,
    pub forwarder: Arc<Forwarder>,
}

fn qtype(t: RecordType) -> QType {
    match t {
        RecordType::A => QType::A,
        RecordType::AAAA => QType::Aaaa,
        RecordType::PTR => QType::Ptr,
        RecordType::ANY => QType::Any,
        _ => QType::Other,
    }
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

fn soa(domain: &str) -> Option<Record> {
    let zone = fqdn(domain)?;
    let rdata = SOA::new(
        fqdn(&format!("ns.{domain}"))?,
        fqdn(&format!("hostmaster.{domain}"))?,
        1,
        3600,
        600,
        86400,
        TTL,
    );
    Some(Record::from_rdata(zone, TTL, RData::SOA(rdata)))
}

/// The query name as the zone keys it: its labels, lowercased, joined by dots,
/// without the root's. A plain byte copy: `Display` escapes character by character and
/// was a visible share of a local answer's cost. Bytes outside ASCII map to distinct
/// characters, so they never match a (validated, ASCII) container name.
fn zone_key(name: &Name) -> String {
    let mut key = String::with_capacity(64);
    for (i, label) in name.iter().enumerate() {
        if i > 0 {
            key.push('.');
        }
        key.extend(label.iter().map(|&b| char::from(b.to_ascii_lowercase())));
    }
    key
}

/// An unmapped IPv4 address for views (a v4 client on a dual-stack socket).
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The zone's decision for one question, whatever the transport.
#[derive(Debug)]
pub enum Decision {
    /// The asked name's addresses of the asked type (authoritative, NOERROR, never empty).
    Addrs(Vec<IpAddr>),
    /// Any other authoritative answer: the response code and its records.
    Local {
        code: ResponseCode,
        answers: Vec<Record>,
        authorities: Vec<Record>,
    },
    /// The client is on none of our networks.
    Refused,
    /// Not ours: ask these upstreams (empty: the host's resolvers).
    Forward(Vec<IpAddr>),
}

impl Decision {
    /// A local decision as its response code, answers and authorities (addresses as
    /// records of `asked`); a forwarded one as `Err(upstreams)`.
    pub fn into_local(
        self,
        asked: &Name,
    ) -> Result<(ResponseCode, Vec<Record>, Vec<Record>), Vec<IpAddr>> {
        match self {
            Decision::Addrs(ips) => Ok((ResponseCode::NoError, addr_records(asked, &ips), vec![])),
            Decision::Local {
                code,
                answers,
                authorities,
            } => Ok((code, answers, authorities)),
            Decision::Refused => Ok((ResponseCode::Refused, vec![], vec![])),
            Decision::Forward(upstreams) => Err(upstreams),
        }
    }
}

impl Handler {
    /// Answers the question `asked`/`qtype` of a client at `src` from the zone, under a
    /// read lock held for the lookup alone.
    pub fn decide(&self, src: IpAddr, asked: &Name, qtype_: RecordType) -> Decision {
        let key = zone_key(asked);
        let answer =
            self.zone
                .read()
                .expect("zone lock")
                .lookup(canonical(src), &key, qtype(qtype_));
        let local = |code, answers, authorities| Decision::Local {
            code,
            answers,
            authorities,
        };
        match answer {
            Answer::Addrs(ips) => Decision::Addrs(ips),
            Answer::Ptr(names) => {
                let records = names
                    .iter()
                    .filter_map(|n| fqdn(n))
                    .map(|n| Record::from_rdata(asked.clone(), TTL, RData::PTR(PTR(n))))
                    .collect();
                local(ResponseCode::NoError, records, Vec::new())
            }
            Answer::NoData { domain } => local(
                ResponseCode::NoError,
                Vec::new(),
                soa(&domain).into_iter().collect(),
            ),
            Answer::NxDomain { domain } => local(
                ResponseCode::NXDomain,
                Vec::new(),
                soa(&domain).into_iter().collect(),
            ),
            Answer::Refused => Decision::Refused,
            Answer::Forward { upstreams } => Decision::Forward(upstreams),
        }
    }

    /// The TCP path (hickory-server's): the same decisions as [`crate::udp`]'s.
    async fn respond<R: ResponseHandler>(
        &self,
        request: &Request,
        mut rh: R,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let edns = request.edns.as_ref().map(|_| edns());
        let mut builder = MessageResponseBuilder::new(&request.queries, None);
        if let Some(e) = &edns {
            builder.edns(e);
        }
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        if request.metadata.op_code != OpCode::Query
            || request.metadata.message_type != MessageType::Query
        {
            meta.response_code = ResponseCode::NotImp;
            return rh.send_response(builder.build_no_records(meta)).await;
        }
        let Ok(info) = request.request_info() else {
            meta.response_code = ResponseCode::FormErr;
            return rh.send_response(builder.build_no_records(meta)).await;
        };
        let asked = info.query.original();
        match self
            .decide(request.src().ip(), asked.name(), asked.query_type())
            .into_local(asked.name())
        {
            Ok((code, answers, authorities)) => {
                meta.authoritative = code != ResponseCode::Refused;
                meta.response_code = code;
                rh.send_response(builder.build(meta, &answers, &[], &authorities, &[]))
                    .await
            }
            Err(upstreams) => {
                let tcp = request.protocol() == Protocol::Tcp;
                let max = usize::from(request.max_payload().max(512));
                let reply = self
                    .forwarder
                    .forward(request.as_slice(), &upstreams, tcp, max)
                    .await
                    .and_then(|r| Message::from_vec(&r).ok());
                match reply {
                    Some(m) => {
                        let mut meta = m.metadata;
                        meta.id = request.metadata.id;
                        rh.send_response(builder.build(
                            meta,
                            &m.answers,
                            &m.authorities,
                            &[],
                            &m.additionals,
                        ))
                        .await
                    }
                    None => {
                        meta.response_code = ResponseCode::ServFail;
                        rh.send_response(builder.build_no_records(meta)).await
                    }
                }
            }
        }
    }
}

/// Address records of `asked`.
pub fn addr_records(asked: &Name, ips: &[IpAddr]) -> Vec<Record> {
    ips.iter()
        .map(|ip| {
            let rdata = match *ip {
                IpAddr::V4(v4) => RData::A(A(v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
            };
            Record::from_rdata(asked.clone(), TTL, rdata)
        })
        .collect()
}

/// The EDNS record of podnet's responses.
pub fn edns() -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(EDNS_PAYLOAD);
    e
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        match self.respond(request, response_handle).await {
            Ok(info) => info,
            Err(_) => {
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{LowerName, Name};

    #[test]
    fn zone_keys_are_lowercase_dotted_without_the_root() {
        let n = LowerName::new(&Name::from_ascii("Hugo.DNS.podman.").unwrap());
        assert_eq!(zone_key(&n), "hugo.dns.podman");
        let ptr = LowerName::new(&Name::from_ascii("10.0.89.10.in-addr.arpa.").unwrap());
        assert_eq!(zone_key(&ptr), "10.0.89.10.in-addr.arpa");
        assert_eq!(zone_key(&LowerName::new(&Name::root())), "");
    }
}
