//! Set and map elements of podnet's own sets over nfnetlink, without the `nft` binary.
//!
//! Starting `nft` costs ~3–4 ms per call (library and cache set-up) against ~0.1 ms for
//! one netlink batch, and three chained plugins pay it on every ADD and DEL. podnet knows
//! the type of each of its sets (they are static: [`super::skeleton_inet`]), so it encodes
//! the elements itself: each field of a concatenation in its own 4-byte-aligned register,
//! ranges as `KEY`/`KEY_END`, the comment as nft's user-data TLV (so `nft list` shows it).
//! A set it does not know, or a missing table, is left to the `nft` path.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::IpNetwork;
use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, DataAttribute, Hook, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage, SetElementAttribute, SetElementList, SetElementMessage,
    TableAttribute, TableMessage, Verdict, VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::{Entry, TABLE};
use crate::release;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFTA_DATA_VALUE: u16 = 1;
/// nft's user-data type for an element comment (libnftnl `NFTNL_UDATA_SET_ELEM_COMMENT`).
const UDATA_COMMENT: u8 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    V4,
    V6,
    /// An address or prefix in a range field (`10.88.0.0/16`).
    Net4,
    Net6,
    Proto,
    Port,
    Ifname,
    Ether,
}

/// The key fields, data fields and whether the set holds ranges, of a podnet set.
fn shape(family: &str, set: &str) -> Option<(&'static [Field], &'static [Field])> {
    use Field::*;
    if family == "bridge" {
        return match set {
            "macs" => Some((&[Ifname, Ether], &[])),
            "checked" => Some((&[Ifname], &[])),
            _ => None,
        };
    }
    // Conditioned port maps (`pm4any_<hash>`) have the plain ones' types.
    let base = set.split('_').next().unwrap_or(set);
    Some(match base {
        "masq4" | "fw4" => (&[V4], &[]),
        "masq6" | "fw6" => (&[V6], &[]),
        "local4" => (&[V4, Net4], &[]),
        "local6" => (&[V6, Net6], &[]),
        "pmlocal4" | "pmall4" => (&[V4], &[]),
        "pmlocal6" | "pmall6" => (&[V6], &[]),
        "pmhairpin" => (&[Ifname, Ifname], &[]),
        "pm4" => (&[V4, Proto, Port], &[V4, Port]),
        "pm4any" => (&[Proto, Port], &[V4, Port]),
        "pm6" => (&[V6, Proto, Port], &[V6, Port]),
        "pm6any" => (&[Proto, Port], &[V6, Port]),
        "isolated" | "strict" => (&[Ifname], &[]),
        "dns" => (&[Ifname, Proto, Port], &[]),
        "samebr" => (&[Ifname, Ifname], &[]),
        // The admin verdict map's data is a verdict, encoded apart.
        "admin" => (&[Ifname], &[]),
        _ => return None,
    })
}

fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

/// One field as (start, end) register bytes.
fn field(f: Field, text: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let same = |v: Vec<u8>| Some((v.clone(), v));
    match f {
        Field::V4 => same(text.parse::<Ipv4Addr>().ok()?.octets().to_vec()),
        Field::V6 => same(text.parse::<Ipv6Addr>().ok()?.octets().to_vec()),
        Field::Net4 | Field::Net6 => {
            let net: IpNetwork = text.parse().ok()?;
            if net.is_ipv4() != (f == Field::Net4) {
                return None;
            }
            let bytes = |ip: std::net::IpAddr| match ip {
                std::net::IpAddr::V4(a) => a.octets().to_vec(),
                std::net::IpAddr::V6(a) => a.octets().to_vec(),
            };
            let last = match net {
                IpNetwork::V4(n) => std::net::IpAddr::V4(n.broadcast()),
                IpNetwork::V6(n) => {
                    let host = if n.prefix() == 128 {
                        0
                    } else {
                        u128::MAX >> n.prefix()
                    };
                    std::net::IpAddr::V6(Ipv6Addr::from(u128::from(n.network()) | host))
                }
            };
            Some((bytes(net.network()), bytes(last)))
        }
        Field::Proto => {
            let p: u8 = match text {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                other => other.parse().ok()?,
            };
            same(pad4(vec![p]))
        }
        Field::Port => same(pad4(text.parse::<u16>().ok()?.to_be_bytes().to_vec())),
        Field::Ifname => {
            let name = text.trim_matches('"');
            if name.is_empty() || name.len() >= 16 {
                return None;
            }
            let mut v = name.as_bytes().to_vec();
            v.resize(16, 0);
            same(v)
        }
        Field::Ether => same(pad4(crate::parse_mac(text).ok()?.to_vec())),
    }
}

/// A concatenation's (start, end) bytes and whether any field was a real range.
fn concat(fields: &[Field], text: &str) -> Option<(Vec<u8>, Vec<u8>, bool)> {
    let parts: Vec<&str> = text.split(" . ").collect();
    if parts.len() != fields.len() {
        return None;
    }
    let (mut start, mut end, mut ranged) = (Vec::new(), Vec::new(), false);
    for (f, p) in fields.iter().zip(parts) {
        let (s, e) = field(*f, p.trim())?;
        ranged |= matches!(f, Field::Net4 | Field::Net6);
        start.extend(s);
        end.extend(e);
    }
    Some((start, end, ranged))
}

/// The netlink attributes of one element (`None`: not a set podnet can encode).
fn element(e: &Entry, comment: Option<&str>) -> Option<Vec<SetElementAttribute>> {
    let (key_fields, data_fields) = shape(&e.family, &e.set)?;
    let (start, end, ranged) = concat(key_fields, &e.key)?;
    let mut attrs = vec![SetElementAttribute::Key(DataAttribute::Value(start))];
    if ranged {
        attrs.push(SetElementAttribute::KeyEnd(vec![DefaultNla::new(
            NFTA_DATA_VALUE,
            end,
        )]));
    }
    match (&e.value, e.set.as_str()) {
        (Some(v), "admin") => {
            let chain = v.strip_prefix("jump ")?;
            attrs.push(SetElementAttribute::Data(DataAttribute::Verdict(vec![
                VerdictAttribute::Code(Verdict::Jump),
                VerdictAttribute::Chain(chain.to_owned()),
            ])));
        }
        (Some(v), _) if !data_fields.is_empty() => {
            let (data, _, _) = concat(data_fields, v)?;
            attrs.push(SetElementAttribute::Data(DataAttribute::Value(data)));
        }
        (None, _) if data_fields.is_empty() && e.set != "admin" => {}
        _ => return None,
    }
    if let Some(c) = comment {
        let mut ud = vec![UDATA_COMMENT, u8::try_from(c.len() + 1).ok()?];
        ud.extend(c.as_bytes());
        ud.push(0);
        attrs.push(SetElementAttribute::UserData(ud));
    }
    Some(attrs)
}

/// What one batch does to one element.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `add element` (no error when it exists).
    Add,
    /// `create element`: fails with EEXIST when the key exists.
    Create,
    Delete,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// A set podnet cannot encode: use the `nft` path.
    #[error("not encodable")]
    Unsupported,
    /// The kernel refused the batch (nothing of it was applied).
    #[error("nf_tables: {0}")]
    Kernel(std::io::Error),
    #[error("nfnetlink: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            WireError::Kernel(e) => e.raw_os_error(),
            _ => None,
        }
    }
}

fn message(
    family: NetfilterProtoFamily,
    res: u16,
    flags: u16,
    seq: u32,
    inner: impl Into<netlink_packet_netfilter::NetfilterMessageInner>,
) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    hdr.sequence_number = seq;
    let mut m = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, res),
            inner,
        )),
    );
    m.finalize();
    let mut buf = vec![0; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

/// Applies `ops` in one nf_tables transaction: all or nothing.
pub fn apply(ops: &[(Op, &Entry, Option<&str>)]) -> Result<(), WireError> {
    apply_and_drop(ops, &[])
}

/// Applies `ops` and then removes podnet's table of each family in `drop` (`inet`,
/// `bridge`; created first if missing, as `nft`'s `add table` + `delete table` does), in
/// one transaction.
pub fn apply_and_drop(ops: &[(Op, &Entry, Option<&str>)], drop: &[&str]) -> Result<(), WireError> {
    let mut body = Vec::new();
    let mut seq = 1u32;
    body.extend(message(
        NetfilterProtoFamily::Unspec,
        NFNL_SUBSYS_NFTABLES,
        NLM_F_REQUEST,
        seq,
        ControlMessage::BatchBegin,
    ));
    let first = seq + 1;
    let mut msgs = Vec::with_capacity(ops.len() + 2 * drop.len());
    for (op, e, comment) in ops {
        let attrs = element(e, if *op == Op::Delete { None } else { *comment })
            .ok_or(WireError::Unsupported)?;
        let family = proto_family(&e.family)?;
        let msg = SetElementMessage {
            attributes: vec![
                SetElementList::Table(TABLE.to_owned()),
                SetElementList::Set(e.set.clone()),
                SetElementList::Elements(vec![ListAttribute::Element(attrs)]),
            ],
        };
        msgs.push(match op {
            Op::Add => (family, NfTablesMessage::NewSetElement(msg), NLM_F_CREATE),
            Op::Create => (
                family,
                NfTablesMessage::NewSetElement(msg),
                NLM_F_CREATE | NLM_F_EXCL,
            ),
            Op::Delete => (family, NfTablesMessage::DeleteSetElement(msg), 0),
        });
    }
    for family in drop {
        let family = proto_family(family)?;
        let table = || TableMessage {
            attributes: vec![TableAttribute::Name(TABLE.to_owned())],
        };
        msgs.push((family, NfTablesMessage::NewTable(table()), NLM_F_CREATE));
        msgs.push((family, NfTablesMessage::DeleteTable(table()), 0));
    }
    for (family, inner, flags) in msgs {
        seq += 1;
        body.extend(message(
            family,
            0,
            NLM_F_REQUEST | NLM_F_ACK | flags,
            seq,
            inner,
        ));
    }
    seq += 1;
    body.extend(message(
        NetfilterProtoFamily::Unspec,
        NFNL_SUBSYS_NFTABLES,
        NLM_F_REQUEST,
        seq,
        ControlMessage::BatchEnd,
    ));
    let want = seq - first; // acks expected: one per message between begin and end

    let sock = socket()?;
    sock.send(&body, 0)?;
    let mut acked = 0;
    let mut buf = vec![0u8; 1 << 16];
    while acked < want {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        for msg in messages(&buf[..n])? {
            if let NetlinkPayload::Error(e) = msg.payload {
                match e.code {
                    None => acked += 1,
                    Some(_) => return Err(WireError::Kernel(e.to_io())),
                }
            }
        }
    }
    if !drop.is_empty() || ops.iter().any(|(op, ..)| *op == Op::Delete) {
        // What was deleted is gone; closing would wait for the kernel to free it.
        release::note_deletion();
    }
    release::close_netfilter(sock);
    Ok(())
}

fn proto_family(family: &str) -> Result<NetfilterProtoFamily, WireError> {
    match family {
        "inet" => Ok(NetfilterProtoFamily::Inet),
        "bridge" => Ok(NetfilterProtoFamily::Bridge),
        _ => Err(WireError::Unsupported),
    }
}

/// Whether table `inet podnet` holds a rule in a chain for which `own` is false (a
/// user's rule in an admin chain); false when the table does not exist.
pub fn inet_has_rules_outside(own: impl Fn(&str) -> bool) -> Result<bool, WireError> {
    let get = RuleMessage {
        attributes: vec![RuleAttribute::Table(TABLE.to_owned())],
    };
    let mut outside = false;
    let done = dump(
        NetfilterProtoFamily::Inet,
        NfTablesMessage::GetRule(get),
        |_, m| {
            if let NfTablesMessage::NewRule(rule) = m {
                outside |= rule
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RuleAttribute::Chain(c) if !own(c)));
            }
        },
    );
    match done {
        Ok(()) => Ok(outside),
        Err(e) if e.errno() == Some(nix::libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A base chain, as [`base_chains`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseChain {
    /// `ip`, `ip6`, `inet`, … as nft names them.
    pub family: &'static str,
    pub table: String,
    pub name: String,
    /// `NF_INET_*` hook number.
    pub hook: u32,
    /// The policy's verdict (`NF_DROP` 0, `NF_ACCEPT` 1).
    pub policy: u32,
}

/// Every base chain of every table, of every family (one dump; regular chains left out).
pub fn base_chains() -> Result<Vec<BaseChain>, WireError> {
    let mut out = Vec::new();
    let get = NfTablesMessage::GetChain(ChainMessage { attributes: vec![] });
    dump(NetfilterProtoFamily::Unspec, get, |family, m| {
        let NfTablesMessage::NewChain(chain) = m else {
            return;
        };
        let (mut table, mut name, mut hook, mut policy) = (None, None, None, None);
        for a in chain.attributes {
            match a {
                ChainAttribute::Table(t) => table = Some(t),
                ChainAttribute::Name(c) => name = Some(c),
                ChainAttribute::Policy(p) => policy = Some(p),
                ChainAttribute::Hook(h) => {
                    hook = h.into_iter().find_map(|h| match h {
                        Hook::Number(n) => Some(u32::from(n)),
                        _ => None,
                    })
                }
                _ => {}
            }
        }
        let family = match family {
            NetfilterProtoFamily::IPv4 => "ip",
            NetfilterProtoFamily::IPv6 => "ip6",
            NetfilterProtoFamily::Inet => "inet",
            NetfilterProtoFamily::Bridge => "bridge",
            NetfilterProtoFamily::ARP => "arp",
            NetfilterProtoFamily::NetDev => "netdev",
            _ => "",
        };
        if let (Some(table), Some(name), Some(hook), Some(policy)) = (table, name, hook, policy) {
            out.push(BaseChain {
                family,
                table,
                name,
                hook,
                policy,
            });
        }
    })?;
    Ok(out)
}

/// Runs one nf_tables dump request, handing each object and its family to `each`.
fn dump(
    family: NetfilterProtoFamily,
    request: NfTablesMessage,
    mut each: impl FnMut(NetfilterProtoFamily, NfTablesMessage),
) -> Result<(), WireError> {
    let sock = socket()?;
    sock.send(
        &message(family, 0, NLM_F_REQUEST | NLM_F_DUMP, 1, request),
        0,
    )?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        for msg in messages(&buf[..n])? {
            match msg.payload {
                NetlinkPayload::Done(_) => {
                    release::close_netfilter(sock);
                    return Ok(());
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    return Err(WireError::Kernel(e.to_io()))
                }
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    header,
                    inner: NetfilterMessageInner::NfTables(m),
                    ..
                }) => each(header.family, m),
                _ => {}
            }
        }
    }
}

/// A netfilter netlink socket, bound, talking to the kernel, with a receive timeout: a
/// reply always comes (an ack per message, a dump's end, or the error); the timeout only
/// guards against a kernel that would stay silent.
fn socket() -> Result<Socket, WireError> {
    let mut sock = Socket::new(NETLINK_NETFILTER)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    sock.set_rx_buf_sz(1 << 20)?;
    set_timeout(&sock, Duration::from_secs(5))?;
    Ok(sock)
}

/// The netlink messages of one datagram.
fn messages(mut buf: &[u8]) -> Result<Vec<NetlinkMessage<NetfilterMessage>>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let msg = NetlinkMessage::<NetfilterMessage>::deserialize(buf)
            .map_err(|e| WireError::Io(std::io::Error::other(e.to_string())))?;
        let len = (msg.header.length as usize).min(buf.len());
        out.push(msg);
        if len == 0 {
            break;
        }
        buf = &buf[len..];
    }
    Ok(out)
}

fn set_timeout(sock: &Socket, d: Duration) -> std::io::Result<()> {
    let tv = nix::sys::time::TimeVal::new(d.as_secs() as _, 0);
    nix::sys::socket::setsockopt(sock, nix::sys::socket::sockopt::ReceiveTimeout, &tv)
        .map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_podnet_elements() {
        let pm = Entry::inet("pm4any", "tcp . 8080").with_value("10.88.0.5 . 80");
        let a = element(&pm, Some("n c eth0")).unwrap();
        assert_eq!(
            a[0],
            SetElementAttribute::Key(DataAttribute::Value(vec![6, 0, 0, 0, 0x1f, 0x90, 0, 0]))
        );
        assert_eq!(
            a[1],
            SetElementAttribute::Data(DataAttribute::Value(vec![10, 88, 0, 5, 0, 80, 0, 0]))
        );
        assert_eq!(
            a[2],
            SetElementAttribute::UserData([&[0u8, 9][..], b"n c eth0\0"].concat())
        );
        let local = Entry::inet("local4", "10.88.0.5 . 10.88.0.0/16");
        let a = element(&local, None).unwrap();
        assert_eq!(
            a[0],
            SetElementAttribute::Key(DataAttribute::Value(vec![10, 88, 0, 5, 10, 88, 0, 0]))
        );
        assert_eq!(
            a[1],
            SetElementAttribute::KeyEnd(vec![DefaultNla::new(
                1,
                vec![10, 88, 0, 5, 10, 88, 255, 255]
            )])
        );
        let br = Entry::inet("samebr", "\"cni0\" . \"cni0\"");
        let a = element(&br, None).unwrap();
        let SetElementAttribute::Key(DataAttribute::Value(k)) = &a[0] else {
            panic!()
        };
        assert_eq!((k.len(), &k[..4], k[16]), (32, &b"cni0"[..], b'c'));
        let admin = Entry::inet("admin", "\"cni0\"").with_value("jump CNI-ADMIN");
        assert!(matches!(
            element(&admin, None).unwrap()[1],
            SetElementAttribute::Data(DataAttribute::Verdict(_))
        ));
        let v6 = Entry::inet("local6", "fd00::5 . fd00::/64");
        assert!(element(&v6, None).is_some());
        assert!(element(&Entry::inet("nosuchset", "1.2.3.4"), None).is_none());
        assert!(
            element(&Entry::inet("pm4any", "tcp . 8080"), None).is_none(),
            "a map element needs its value"
        );
        let dns = Entry::inet("dns", "\"podman1\" . udp . 53");
        let SetElementAttribute::Key(DataAttribute::Value(k)) = &element(&dns, None).unwrap()[0]
        else {
            panic!()
        };
        assert_eq!(
            (k.len(), &k[..7], k[16], &k[20..22]),
            (24, &b"podman1"[..], 17, &[0, 53][..])
        );
    }

    /// Every set and map the skeletons declare has a shape here, so no element of
    /// podnet's ever falls back to spawning `nft`.
    #[test]
    fn every_skeleton_set_has_a_wire_shape() {
        let text = format!(
            "{}\n{}\n{}",
            super::super::skeleton_inet().text(),
            super::super::skeleton_bridge().text(),
            super::super::portmap_maps("_0123abcd").join("\n")
        );
        let mut sets = 0;
        for line in text.lines() {
            for (kind, family) in [("set", "inet"), ("map", "inet"), ("set", "bridge")] {
                let prefix = format!("add {kind} {family} {TABLE} ");
                if let Some(rest) = line.strip_prefix(&prefix) {
                    let name = rest.split_whitespace().next().unwrap();
                    assert!(
                        shape(family, name).is_some(),
                        "{family} {name} has no wire shape"
                    );
                    sets += 1;
                }
            }
        }
        assert!(sets >= 20, "{sets} sets found in the skeletons");
    }
}
