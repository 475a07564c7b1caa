//! The answer logic, whatever the transport: the zone's decision for one question
//! ([`Handler::decide`], [`Decision`]), the checks every query passes first
//! ([`refusal`]), and the records and EDNS of podnet's answers. [`crate::udp`] and
//! [`crate::tcp`] only carry messages to and from it.
//!
//! The zone is read under a read lock held for the lookup alone, so updates never wait
//! for a query in flight upstream and no query waits for more than an insert.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use hickory_proto::op::{Edns, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

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
}

/// The answer to a message before its question is looked at: NOTIMP for anything but a
/// standard query, FORMERR unless it asks exactly one question; `None` to go on.
pub fn refusal(
    op_code: OpCode,
    message_type: MessageType,
    questions: usize,
) -> Option<ResponseCode> {
    if op_code != OpCode::Query || message_type != MessageType::Query {
        return Some(ResponseCode::NotImp);
    }
    (questions != 1).then_some(ResponseCode::FormErr)
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

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{LowerName, Name};

    #[test]
    fn refusals_before_the_question() {
        assert_eq!(refusal(OpCode::Query, MessageType::Query, 1), None);
        assert_eq!(
            refusal(OpCode::Update, MessageType::Query, 1),
            Some(ResponseCode::NotImp)
        );
        assert_eq!(
            refusal(OpCode::Query, MessageType::Response, 1),
            Some(ResponseCode::NotImp)
        );
        assert_eq!(
            refusal(OpCode::Query, MessageType::Query, 0),
            Some(ResponseCode::FormErr)
        );
        assert_eq!(
            refusal(OpCode::Query, MessageType::Query, 2),
            Some(ResponseCode::FormErr)
        );
    }

    #[test]
    fn zone_keys_are_lowercase_dotted_without_the_root() {
        let n = LowerName::new(&Name::from_ascii("Hugo.DNS.podman.").unwrap());
        assert_eq!(zone_key(&n), "hugo.dns.podman");
        let ptr = LowerName::new(&Name::from_ascii("10.0.89.10.in-addr.arpa.").unwrap());
        assert_eq!(zone_key(&ptr), "10.0.89.10.in-addr.arpa");
        assert_eq!(zone_key(&LowerName::new(&Name::root())), "");
    }
}
