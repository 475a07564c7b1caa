//! Set and map elements of podnet's own sets over nfnetlink, without the `nft` binary.
//!
//! Starting `nft` costs ~3–4 ms per call (library and cache set-up) against ~0.1 ms for
//! one netlink batch, and three chained plugins pay it on every ADD and DEL. podnet knows
//! the type of each of its sets (they are static: [`super::schema`]), so it encodes
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
    ChainAttribute, ChainMessage, DataAttribute, Hook, HookNumber, ListAttribute, NfTablesMessage,
    RuleAttribute, RuleMessage, SetAttribute, SetElementAttribute, SetElementList,
    SetElementMessage, SetFlags, SetMessage, TableAttribute, TableMessage, Verdict,
    VerdictAttribute,
};
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::schema::{self, Field};
use super::{Entry, TABLE};
use crate::release;

const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// Below the kernel's default socket send buffer (`wmem_default`, 208 KiB).
const DEFAULT_SNDBUF: usize = 160 * 1024;
const NFTA_DATA_VALUE: u16 = 1;
/// nft's user-data type for an element comment (libnftnl `NFTNL_UDATA_SET_ELEM_COMMENT`).
const UDATA_COMMENT: u8 = 0;

/// The key fields and data fields of a podnet set, from the schema (`None` for a set
/// podnet does not declare).
fn shape(family: &str, set: &str) -> Option<(&'static [Field], &'static [Field])> {
    let def = schema::set_def(family, set)?;
    Some(match def.data {
        schema::Data::Fields(d) => (def.key, d),
        // The admin verdict map's data is a verdict, encoded apart.
        schema::Data::None | schema::Data::Verdict => (def.key, &[]),
    })
}

fn pad4(mut v: Vec<u8>) -> Vec<u8> {
    while !v.len().is_multiple_of(4) {
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
    batch(&[], ops, drop)
}

/// Creates regular chains `chains` of `inet podnet` where missing (as
/// [`create_chains`]) and applies `ops`, in one transaction: an element jumping to a
/// chain made by the same transaction is valid.
pub fn apply_creating(
    chains: &[&str],
    ops: &[(Op, &Entry, Option<&str>)],
) -> Result<(), WireError> {
    batch(chains, ops, &[])
}

fn batch(
    chains: &[&str],
    ops: &[(Op, &Entry, Option<&str>)],
    drop: &[&str],
) -> Result<(), WireError> {
    let mut msgs = Vec::with_capacity(chains.len() + ops.len() + 2 * drop.len());
    msgs.extend(chain_msgs(chains)?);
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
        msgs.push((family, NfTablesMessage::NewTable(table_msg()), NLM_F_CREATE));
        msgs.push((family, NfTablesMessage::DeleteTable(table_msg()), 0));
    }
    let deletes = !drop.is_empty() || ops.iter().any(|(op, ..)| *op == Op::Delete);
    transaction(msgs, deletes)
}

fn table_msg() -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(TABLE.to_owned())],
    }
}

/// `NLM_F_APPEND`: a new rule goes after the chain's last (`nft add rule`).
const NLM_F_APPEND: u16 = 0x800;

/// Creates podnet's tables of `families` from [`schema`], in one transaction and
/// idempotently, as `nft`'s `add table`, `add set`, `add chain`, `flush chain` and `add
/// rule` would: what exists is kept (with its elements), the chains' rules are
/// rewritten. Nothing in it comes from input.
pub fn create_tables(families: &[schema::Family]) -> Result<(), WireError> {
    let mut msgs = Vec::new();
    let mut set_id = 0u32;
    for &fam in families {
        let family = proto_family(fam.name())?;
        msgs.push((family, NfTablesMessage::NewTable(table_msg()), NLM_F_CREATE));
        for def in schema::SETS.iter().filter(|d| d.family == fam) {
            set_id += 1;
            msgs.push((
                family,
                NfTablesMessage::NewSet(set_msg(def, def.name, set_id)),
                NLM_F_CREATE,
            ));
        }
        let chains: Vec<schema::ChainDef> = schema::chains()
            .into_iter()
            .filter(|c| c.family == fam)
            .collect();
        for c in &chains {
            msgs.push((
                family,
                NfTablesMessage::NewChain(chain_msg(c)),
                NLM_F_CREATE,
            ));
        }
        for c in &chains {
            let Some(rules) = &c.rules else { continue };
            let in_chain = || {
                vec![
                    RuleAttribute::Table(TABLE.to_owned()),
                    RuleAttribute::Chain(c.name.to_owned()),
                ]
            };
            // Flush, then the rules in order.
            msgs.push((
                family,
                NfTablesMessage::DeleteRule(RuleMessage {
                    attributes: in_chain(),
                }),
                0,
            ));
            for r in rules {
                let mut attributes = in_chain();
                attributes.push(RuleAttribute::Other(DefaultNla::new(
                    NFTA_RULE_EXPRESSIONS | schema::NLA_F_NESTED,
                    schema::encode_rule(r),
                )));
                msgs.push((
                    family,
                    NfTablesMessage::NewRule(RuleMessage { attributes }),
                    NLM_F_CREATE | NLM_F_APPEND,
                ));
            }
        }
    }
    // Flushed rules are deletions: their memory goes after a grace period.
    transaction(msgs, true)
}

const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_SET_DESC: u16 = 9;

fn set_msg(def: &schema::SetDef, name: &str, id: u32) -> SetMessage {
    let mut flags = SetFlags::empty();
    if def.interval {
        flags |= SetFlags::Interval;
        if def.key.len() > 1 {
            flags |= SetFlags::Concat;
        }
    }
    let mut attributes = vec![
        SetAttribute::Table(TABLE.to_owned()),
        SetAttribute::Name(name.to_owned()),
    ];
    let data = match def.data {
        schema::Data::None => None,
        schema::Data::Fields(d) => Some((schema::concat_type(d), schema::concat_len(d))),
        // NFT_DATA_VERDICT; a verdict has no length.
        schema::Data::Verdict => Some((0xffff_ff00, 0)),
    };
    if data.is_some() {
        flags |= SetFlags::Map;
    }
    attributes.extend([
        SetAttribute::Flags(flags),
        SetAttribute::KeyType(schema::concat_type(def.key)),
        SetAttribute::KeyLen(schema::concat_len(def.key)),
    ]);
    if let Some((ty, len)) = data {
        attributes.extend([SetAttribute::DataType(ty), SetAttribute::DataLen(len)]);
    }
    attributes.push(SetAttribute::Id(id));
    if flags.contains(SetFlags::Concat) {
        attributes.push(SetAttribute::Other(DefaultNla::new(
            NFTA_SET_DESC | schema::NLA_F_NESTED,
            schema::encode_concat_desc(def.key),
        )));
    }
    attributes.push(SetAttribute::UserData(set_userdata(def)));
    SetMessage { attributes }
}

/// nft's user data of a set: the key's (and a map's data's) byte order, which `nft
/// list` needs to print elements (`NFTNL_UDATA_SET_KEYBYTEORDER`, `…DATABYTEORDER`: 1
/// host, 2 big endian; a concatenation has none of its own).
fn set_userdata(def: &schema::SetDef) -> Vec<u8> {
    let order = |fields: &[Field]| -> u32 {
        match fields {
            [Field::Ifname | Field::Proto] => 1,
            [_] => 2,
            _ => 0,
        }
    };
    let mut ud = Vec::new();
    let mut tlv = |kind: u8, v: u32| {
        ud.extend([kind, 4]);
        ud.extend(v.to_ne_bytes());
    };
    tlv(0, order(def.key));
    if let schema::Data::Fields(d) = def.data {
        tlv(1, order(d));
    }
    ud
}

fn chain_msg(c: &schema::ChainDef) -> ChainMessage {
    let mut attributes = vec![
        ChainAttribute::Table(TABLE.to_owned()),
        ChainAttribute::Name(c.name.to_owned()),
    ];
    if let Some((kind, hook, priority)) = c.base {
        attributes.extend([
            ChainAttribute::Hook(vec![
                Hook::Number(HookNumber::Other(hook)),
                // Two's complement, as the kernel reads it (a signed 32-bit value).
                Hook::Priority(priority as u32),
            ]),
            ChainAttribute::Policy(1), // NF_ACCEPT
            ChainAttribute::Type(kind.to_owned()),
        ]);
    }
    ChainMessage { attributes }
}

/// Creates regular chains `names` of `inet podnet` (an admin chain) where missing, in
/// one transaction, as `nft add chain` does: an existing chain keeps its rules.
pub fn create_chains(names: &[&str]) -> Result<(), WireError> {
    if names.is_empty() {
        return Ok(());
    }
    transaction(chain_msgs(names)?, false)
}

/// The `add chain` messages of regular chains of `inet podnet`.
fn chain_msgs(
    names: &[&str],
) -> Result<Vec<(NetfilterProtoFamily, NfTablesMessage, u16)>, WireError> {
    let family = proto_family(schema::Family::Inet.name())?;
    Ok(names
        .iter()
        .map(|name| {
            let msg = ChainMessage {
                attributes: vec![
                    ChainAttribute::Table(TABLE.to_owned()),
                    ChainAttribute::Name((*name).to_owned()),
                ],
            };
            (family, NfTablesMessage::NewChain(msg), NLM_F_CREATE)
        })
        .collect())
}

/// Whether podnet's table of `family` exists.
pub fn table_exists(family: schema::Family) -> Result<bool, WireError> {
    let mut found = false;
    let get = NfTablesMessage::GetTable(TableMessage { attributes: vec![] });
    dump(proto_family(family.name())?, get, |_, m| {
        if let NfTablesMessage::NewTable(t) = m {
            found |= t
                .attributes
                .iter()
                .any(|a| matches!(a, TableAttribute::Name(n) if n == TABLE));
        }
    })?;
    Ok(found)
}

/// Sends `msgs` as one nf_tables batch and waits for every ack: all or nothing.
/// `deletes`: something is deleted (its memory is freed after the socket closes).
fn transaction(
    msgs: Vec<(NetfilterProtoFamily, NfTablesMessage, u16)>,
    deletes: bool,
) -> Result<(), WireError> {
    let mut body = Vec::new();
    let mut seq = 1u32;
    body.extend(message(
        NetfilterProtoFamily::Unspec,
        NFNL_SUBSYS_NFTABLES,
        NLM_F_REQUEST,
        seq,
        ControlMessage::BatchBegin,
    ));
    // Only the last message asks for an ack: the kernel reports every failing message
    // anyway, and a thousand acks would overflow the receive buffer (ENOBUFS).
    let count = msgs.len();
    let mut last = None;
    for (i, (family, inner, flags)) in msgs.into_iter().enumerate() {
        seq += 1;
        let ack = if i + 1 == count { NLM_F_ACK } else { 0 };
        body.extend(message(family, 0, NLM_F_REQUEST | ack | flags, seq, inner));
        last = Some(seq);
    }
    seq += 1;
    body.extend(message(
        NetfilterProtoFamily::Unspec,
        NFNL_SUBSYS_NFTABLES,
        NLM_F_REQUEST,
        seq,
        ControlMessage::BatchEnd,
    ));
    let Some(last) = last else {
        return Ok(());
    };

    let sock = socket()?;
    // A batch is one datagram: a big one (a thousand published ports) needs a send
    // buffer that holds it, as nft sets one (forced past the system's cap when allowed).
    if body.len() > DEFAULT_SNDBUF {
        let want = body.len() * 2;
        let forced =
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBufForce, &want);
        if forced.is_err() {
            nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::SndBuf, &want)
                .map_err(std::io::Error::from)?;
        }
    }
    // The kernel runs the batch within this send: every reply is queued when it returns.
    sock.send(&body, 0)?;
    let mut buf = vec![0u8; 1 << 16];
    'replies: loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        for msg in messages(&buf[..n])? {
            if let NetlinkPayload::Error(e) = msg.payload {
                if e.code.is_some() {
                    // Any failure aborts the whole batch.
                    return Err(WireError::Kernel(e.to_io()));
                }
                if msg.header.sequence_number == last {
                    break 'replies;
                }
            }
        }
    }
    if deletes {
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
    // Acks without a copy of the request.
    sock.set_cap_ack(true)?;
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

    /// Every set and map of the schema (and a conditioned port map) has a shape, so
    /// every element of podnet's encodes.
    #[test]
    fn every_schema_set_has_a_wire_shape() {
        for d in schema::SETS {
            assert!(shape(d.family.name(), d.name).is_some(), "{}", d.name);
        }
        assert!(shape("inet", "pm6any_0123abcd").is_some());
        assert!(schema::SETS.len() >= 20);
    }
}
