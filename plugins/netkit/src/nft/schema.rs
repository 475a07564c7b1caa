//! podnet's tables, typed, in one place: every set and map (its key and data fields),
//! every chain (hook, priority) and every rule (as the nf_tables expressions the kernel
//! runs). Both table creation ([`super::wire::create_tables`]) and the element encoding
//! ([`super::wire`]) are generated from it, over netlink: no `nft` process and no text.
//!
//! The rules are written as nft compiles them (`nft --debug=netlink` prints the same
//! expressions), so `nft list table inet podnet` shows them in nft's own syntax; the
//! comment above each gives that syntax. Registers: `R1`/`R2` are the 16-byte
//! registers 1 and 2, `R32(n)` the 4-byte register n (a concatenation's fields sit in
//! consecutive 4-byte registers).

use super::TABLE;

/// One field of a set key or map value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
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

impl Field {
    /// nft's datatype id (`TYPE_*` of nftables' datatype.h).
    fn type_id(self) -> u32 {
        match self {
            Field::V4 | Field::Net4 => 7,
            Field::V6 | Field::Net6 => 8,
            Field::Ether => 9,
            Field::Proto => 12,
            Field::Port => 13,
            Field::Ifname => 41,
        }
    }

    /// The field's own length in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            Field::V4 | Field::Net4 => 4,
            Field::V6 | Field::Net6 => 16,
            Field::Ether => 6,
            Field::Proto => 1,
            Field::Port => 2,
            Field::Ifname => 16,
        }
    }

    /// nft's name of the type (`nft list` shows it).
    pub fn nft_type(self) -> &'static str {
        match self {
            Field::V4 | Field::Net4 => "ipv4_addr",
            Field::V6 | Field::Net6 => "ipv6_addr",
            Field::Ether => "ether_addr",
            Field::Proto => "inet_proto",
            Field::Port => "inet_service",
            Field::Ifname => "ifname",
        }
    }
}

/// The datatype id of a concatenation (nft shifts each field in by 6 bits).
pub fn concat_type(fields: &[Field]) -> u32 {
    fields.iter().fold(0, |t, f| (t << 6) | f.type_id())
}

/// A concatenation's length: each field padded to 4 bytes (one register each).
pub fn concat_len(fields: &[Field]) -> u32 {
    fields.iter().map(|f| f.bytes().div_ceil(4) * 4).sum()
}

/// What a map maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Data {
    /// A set: no data.
    None,
    Fields(&'static [Field]),
    /// A verdict map (`jump <chain>`).
    Verdict,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Inet,
    Bridge,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Inet => "inet",
            Family::Bridge => "bridge",
        }
    }

    pub fn parse(s: &str) -> Option<Family> {
        match s {
            "inet" => Some(Family::Inet),
            "bridge" => Some(Family::Bridge),
            _ => None,
        }
    }
}

/// One set or map of podnet's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetDef {
    pub family: Family,
    pub name: &'static str,
    pub key: &'static [Field],
    pub data: Data,
    /// Holds ranges (the prefix of `local4`/`local6`).
    pub interval: bool,
}

const fn set(name: &'static str, key: &'static [Field]) -> SetDef {
    SetDef {
        family: Family::Inet,
        name,
        key,
        data: Data::None,
        interval: false,
    }
}

const fn map(name: &'static str, key: &'static [Field], data: &'static [Field]) -> SetDef {
    SetDef {
        data: Data::Fields(data),
        ..set(name, key)
    }
}

use Field::*;

/// Every set and map of `inet podnet` and `bridge podnet` (see the table in [`super`]).
pub const SETS: &[SetDef] = &[
    set("masq4", &[V4]),
    set("masq6", &[V6]),
    SetDef {
        interval: true,
        ..set("local4", &[V4, Net4])
    },
    SetDef {
        interval: true,
        ..set("local6", &[V6, Net6])
    },
    set("pmlocal4", &[V4]),
    set("pmlocal6", &[V6]),
    set("pmall4", &[V4]),
    set("pmall6", &[V6]),
    set("pmhairpin", &[Ifname, Ifname]),
    set("fw4", &[V4]),
    set("fw6", &[V6]),
    set("isolated", &[Ifname]),
    set("strict", &[Ifname]),
    set("samebr", &[Ifname, Ifname]),
    set("dns", &[Ifname, Proto, Port]),
    map("pm4", &[V4, Proto, Port], &[V4, Port]),
    map("pm4any", &[Proto, Port], &[V4, Port]),
    map("pm6", &[V6, Proto, Port], &[V6, Port]),
    map("pm6any", &[Proto, Port], &[V6, Port]),
    SetDef {
        data: Data::Verdict,
        ..set("admin", &[Ifname])
    },
    SetDef {
        family: Family::Bridge,
        ..set("macs", &[Ifname, Ether])
    },
    SetDef {
        family: Family::Bridge,
        ..set("checked", &[Ifname])
    },
];

/// The four port maps, which a network with `conditionsV4`/`conditionsV6` gets again
/// under its own suffix (`pm4_<hash>`).
pub const PORT_MAPS: &[&str] = &["pm4", "pm4any", "pm6", "pm6any"];

/// The definition of set `name` of `family`; a conditioned port map (`pm4any_<hash>`)
/// has its plain map's.
pub fn set_def(family: &str, name: &str) -> Option<&'static SetDef> {
    let family = Family::parse(family)?;
    let base = match name.split_once('_') {
        Some((base, _)) if PORT_MAPS.contains(&base) => base,
        _ => name,
    };
    SETS.iter().find(|s| s.family == family && s.name == base)
}

impl SetDef {
    /// `add set …` / `add map …` in nft's syntax, under `name` (for a conditioned
    /// network's maps, created by `nft` together with its conditions).
    pub fn nft_text(&self, name: &str) -> String {
        let types = |f: &[Field]| {
            f.iter()
                .map(|f| f.nft_type())
                .collect::<Vec<_>>()
                .join(" . ")
        };
        let (kind, data) = match self.data {
            Data::None => ("set", String::new()),
            Data::Fields(d) => ("map", format!(" : {}", types(d))),
            Data::Verdict => ("map", " : verdict".into()),
        };
        let flags = if self.interval {
            " flags interval;"
        } else {
            ""
        };
        format!(
            "add {kind} {} {TABLE} {name} {{ type {}{data};{flags} }}",
            self.family.name(),
            types(self.key)
        )
    }
}

// ---- chains and rules ----------------------------------------------------------------

/// A register (`NFT_REG_*` / `NFT_REG32_*` numbering).
pub type Reg = u32;
pub const VERDICT: Reg = 0;
pub const R1: Reg = 1;
pub const R2: Reg = 2;
/// The 4-byte register `n` (`NFT_REG32_00` is 8).
pub const fn r32(n: u32) -> Reg {
    8 + n
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKey {
    Mark = 3,
    IifName = 6,
    OifName = 7,
    NfProto = 15,
    L4Proto = 16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Base {
    Link = 0,
    Network = 1,
    Transport = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CtKey {
    State = 0,
    Status = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Drop,
    Accept,
    Return,
    Jump(&'static str),
}

/// One nf_tables expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    Meta(MetaKey, Reg),
    MetaSet(MetaKey, Reg),
    Payload {
        base: Base,
        offset: u32,
        len: u32,
        dreg: Reg,
    },
    /// `reg == data` (or `!=`).
    Cmp {
        reg: Reg,
        eq: bool,
        data: Vec<u8>,
    },
    /// `reg = (reg & mask) ^ xor`.
    Bitwise {
        reg: Reg,
        mask: Vec<u8>,
        xor: Vec<u8>,
    },
    /// `reg` in set `set` (not in, with `invert`); a map's value into `dreg`.
    Lookup {
        reg: Reg,
        set: &'static str,
        dreg: Option<Reg>,
        invert: bool,
    },
    /// `fib daddr type` into `dreg`.
    FibDaddrType(Reg),
    Ct(CtKey, Reg),
    /// `dnat` to the address in `addr` and the port in `port`; `v6` for `ip6`.
    Dnat {
        v6: bool,
        addr: Reg,
        port: Reg,
    },
    Masquerade,
    Verdict(Verdict),
}

/// One chain: a base chain has `(type, hook number, priority)`, policy accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainDef {
    pub family: Family,
    pub name: &'static str,
    pub base: Option<(&'static str, u32, i32)>,
    /// `None`: podnet never writes its rules (`portmap_cond`: one jump per conditioned
    /// network, added by portmap).
    pub rules: Option<Vec<Vec<Expr>>>,
}

// Netfilter hook numbers (the bridge family numbers its hooks the same way).
const PREROUTING: u32 = 0;
const INPUT: u32 = 1;
const FORWARD: u32 = 2;
const OUTPUT: u32 = 3;
const POSTROUTING: u32 = 4;

/// Host-order bytes of a 32-bit value (marks, ct state and status, fib results).
fn host32(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

fn ifname(name: &str) -> Vec<u8> {
    let mut v = name.as_bytes().to_vec();
    v.resize(16, 0);
    v
}

fn eq(reg: Reg, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        reg,
        eq: true,
        data,
    }
}

fn ne(reg: Reg, data: Vec<u8>) -> Expr {
    Expr::Cmp {
        reg,
        eq: false,
        data,
    }
}

fn lookup(reg: Reg, set: &'static str) -> Expr {
    Expr::Lookup {
        reg,
        set,
        dreg: None,
        invert: false,
    }
}

fn payload(base: Base, offset: u32, len: u32, dreg: Reg) -> Expr {
    Expr::Payload {
        base,
        offset,
        len,
        dreg,
    }
}

/// `meta nfproto ipv4|ipv6` (the implicit check before `ip …` / `ip6 …` in inet).
fn nfproto(v6: bool) -> [Expr; 2] {
    [
        Expr::Meta(MetaKey::NfProto, R1),
        eq(R1, vec![if v6 { 10 } else { 2 }]),
    ]
}

fn saddr(v6: bool, dreg: Reg) -> Expr {
    if v6 {
        payload(Base::Network, 8, 16, dreg)
    } else {
        payload(Base::Network, 12, 4, dreg)
    }
}

fn daddr(v6: bool, dreg: Reg) -> Expr {
    if v6 {
        payload(Base::Network, 24, 16, dreg)
    } else {
        payload(Base::Network, 16, 4, dreg)
    }
}

/// `th dport` into `dreg`.
fn dport(dreg: Reg) -> Expr {
    payload(Base::Transport, 2, 2, dreg)
}

/// `ct status dnat` (`ct status ! dnat` with `not`).
fn ct_dnat(not: bool) -> [Expr; 3] {
    [
        Expr::Ct(CtKey::Status, R1),
        Expr::Bitwise {
            reg: R1,
            mask: host32(0x20),
            xor: host32(0),
        },
        Expr::Cmp {
            reg: R1,
            eq: not,
            data: host32(0),
        },
    ]
}

/// `ct state <bits>` (any of them).
fn ct_state(bits: u32) -> [Expr; 3] {
    [
        Expr::Ct(CtKey::State, R1),
        Expr::Bitwise {
            reg: R1,
            mask: host32(bits),
            xor: host32(0),
        },
        ne(R1, host32(0)),
    ]
}

const CT_ESTABLISHED_RELATED: u32 = 0x02 | 0x04;
const CT_NEW: u32 = 0x08;
/// The mark bit of a hairpinned DNAT flow (bit 13).
const HAIRPIN_MARK: u32 = 0x2000;

fn rule<const N: usize>(parts: [&[Expr]; N]) -> Vec<Expr> {
    parts.iter().flat_map(|p| p.iter().cloned()).collect()
}

fn verdict(v: Verdict) -> Expr {
    Expr::Verdict(v)
}

fn iifname_oifname() -> [Expr; 2] {
    [
        Expr::Meta(MetaKey::IifName, R1),
        Expr::Meta(MetaKey::OifName, R2),
    ]
}

/// The portmap DNAT through map `set`: `dnat ip to ip daddr . meta l4proto . th dport
/// map @pm4` (with the host address) or `… to meta l4proto . th dport map @pm4any`.
fn dnat_rule(v6: bool, set: &'static str, with_addr: bool) -> Vec<Expr> {
    let mut r = nfproto(v6).to_vec();
    if with_addr {
        // Address in R1 (4 or 16 bytes), then protocol and port in the next registers.
        let (proto, port) = if v6 { (R2, r32(5)) } else { (r32(1), r32(2)) };
        r.extend([
            daddr(v6, R1),
            Expr::Meta(MetaKey::L4Proto, proto),
            dport(port),
        ]);
    } else {
        r.extend([Expr::Meta(MetaKey::L4Proto, R1), dport(r32(1))]);
    }
    r.push(Expr::Lookup {
        reg: R1,
        set,
        dreg: Some(R1),
        invert: false,
    });
    // The value is address . port: the port follows the address's register.
    let port = if v6 { R2 } else { r32(1) };
    r.push(Expr::Dnat { v6, addr: R1, port });
    r
}

/// Masquerade DNATed flows to a container in `set` (`ct status dnat ip daddr @pmall4
/// masquerade`); `from_localhost` adds `ip saddr 127.0.0.0/8`.
fn dnat_masq(v6: bool, set: &'static str, from_localhost: bool) -> Vec<Expr> {
    let mut r = ct_dnat(false).to_vec();
    r.extend(nfproto(v6));
    if from_localhost {
        r.extend([payload(Base::Network, 12, 1, R1), eq(R1, vec![127])]);
    }
    r.extend([daddr(v6, R1), lookup(R1, set), Expr::Masquerade]);
    r
}

/// The hairpin mark: `ct status dnat iifname . oifname @pmhairpin ip daddr @pmlocal4
/// meta mark set meta mark | 0x00002000`.
fn hairpin_mark(v6: bool, set: &'static str) -> Vec<Expr> {
    rule([
        &ct_dnat(false),
        &iifname_oifname(),
        &[lookup(R1, "pmhairpin")],
        &nfproto(v6),
        &[
            daddr(v6, R1),
            lookup(R1, set),
            Expr::Meta(MetaKey::Mark, R1),
            Expr::Bitwise {
                reg: R1,
                mask: host32(!HAIRPIN_MARK),
                xor: host32(HAIRPIN_MARK),
            },
            Expr::MetaSet(MetaKey::Mark, R1),
        ],
    ])
}

/// `ip saddr @fw4 accept` / `ip daddr @fw4 ct state established,related accept`.
fn fw_accept(v6: bool, set: &'static str, reply: bool) -> Vec<Expr> {
    let mut r = nfproto(v6).to_vec();
    if reply {
        r.extend([daddr(v6, R1), lookup(R1, set)]);
        r.extend(ct_state(CT_ESTABLISHED_RELATED));
    } else {
        r.extend([saddr(v6, R1), lookup(R1, set)]);
    }
    r.push(verdict(Verdict::Accept));
    r
}

/// Every chain of podnet's tables with its rules, in order.
pub fn chains() -> Vec<ChainDef> {
    let inet = |name, base, rules| ChainDef {
        family: Family::Inet,
        name,
        base,
        rules,
    };
    vec![
        // Packets to 127.0.0.0/8 that did not arrive on `lo` are martians, yet the
        // kernel's check comes after the DNAT in `prerouting` and is lifted by the
        // `route_localnet` that localhost ports need (CVE-2020-8558): they are dropped
        // before conntrack, so no neighbour or LAN host reaches a localhost port or a
        // host service on 127.0.0.1. The host's own localhost traffic is on `lo`.
        // `iifname != "lo" ip daddr 127.0.0.0/8 drop`
        inet(
            "guard",
            Some(("filter", PREROUTING, -300)),
            Some(vec![rule([
                &[Expr::Meta(MetaKey::IifName, R1), ne(R1, ifname("lo"))],
                &nfproto(false),
                &[
                    payload(Base::Network, 16, 1, R1),
                    eq(R1, vec![127]),
                    verdict(Verdict::Drop),
                ],
            ])]),
        ),
        // `fib daddr type local jump portmap`
        inet(
            "prerouting",
            Some(("nat", PREROUTING, -100)),
            Some(vec![local_jump()]),
        ),
        inet(
            "output",
            Some(("nat", OUTPUT, -100)),
            Some(vec![local_jump()]),
        ),
        inet("portmap_cond", None, None),
        inet(
            "portmap",
            None,
            Some(vec![
                vec![verdict(Verdict::Jump("portmap_cond"))],
                dnat_rule(false, "pm4", true),
                dnat_rule(false, "pm4any", false),
                dnat_rule(true, "pm6", true),
                dnat_rule(true, "pm6any", false),
            ]),
        ),
        inet(
            "postrouting",
            Some(("nat", POSTROUTING, 100)),
            Some(vec![
                dnat_masq(false, "pmall4", false),
                dnat_masq(true, "pmall6", false),
                dnat_masq(false, "pmlocal4", true),
                // `meta mark & 0x00002000 == 0x00002000 masquerade`
                vec![
                    Expr::Meta(MetaKey::Mark, R1),
                    Expr::Bitwise {
                        reg: R1,
                        mask: host32(HAIRPIN_MARK),
                        xor: host32(0),
                    },
                    eq(R1, host32(HAIRPIN_MARK)),
                    Expr::Masquerade,
                ],
                // `ip saddr . ip daddr @local4 return`
                rule([
                    &nfproto(false),
                    &[
                        saddr(false, R1),
                        daddr(false, r32(1)),
                        lookup(R1, "local4"),
                        verdict(Verdict::Return),
                    ],
                ]),
                rule([
                    &nfproto(true),
                    &[
                        saddr(true, R1),
                        daddr(true, R2),
                        lookup(R1, "local6"),
                        verdict(Verdict::Return),
                    ],
                ]),
                // `ip daddr 224.0.0.0/4 return`
                rule([
                    &nfproto(false),
                    &[
                        daddr(false, R1),
                        Expr::Bitwise {
                            reg: R1,
                            mask: vec![0xf0, 0, 0, 0],
                            xor: vec![0; 4],
                        },
                        eq(R1, vec![0xe0, 0, 0, 0]),
                        verdict(Verdict::Return),
                    ],
                ]),
                // `ip6 daddr ff00::/8 return`
                rule([
                    &nfproto(true),
                    &[
                        payload(Base::Network, 24, 1, R1),
                        eq(R1, vec![0xff]),
                        verdict(Verdict::Return),
                    ],
                ]),
                // `ip saddr @masq4 masquerade`
                rule([
                    &nfproto(false),
                    &[saddr(false, R1), lookup(R1, "masq4"), Expr::Masquerade],
                ]),
                rule([
                    &nfproto(true),
                    &[saddr(true, R1), lookup(R1, "masq6"), Expr::Masquerade],
                ]),
            ]),
        ),
        inet(
            "forward",
            Some(("filter", FORWARD, -5)),
            Some(vec![
                hairpin_mark(false, "pmlocal4"),
                hairpin_mark(true, "pmlocal6"),
                // `iifname @isolated oifname @isolated iifname . oifname != @samebr drop`
                rule([
                    &[
                        Expr::Meta(MetaKey::IifName, R1),
                        lookup(R1, "isolated"),
                        Expr::Meta(MetaKey::OifName, R1),
                        lookup(R1, "isolated"),
                    ],
                    &iifname_oifname(),
                    &[not_same_bridge(), verdict(Verdict::Drop)],
                ]),
                // `oifname @strict iifname . oifname != @samebr ct state new
                //  ct status ! dnat drop`
                rule([
                    &[Expr::Meta(MetaKey::OifName, R1), lookup(R1, "strict")],
                    &iifname_oifname(),
                    &[not_same_bridge()],
                    &ct_state(CT_NEW),
                    &ct_dnat(true),
                    &[verdict(Verdict::Drop)],
                ]),
                // `iifname vmap @admin`, `oifname vmap @admin`
                admin_vmap(MetaKey::IifName),
                admin_vmap(MetaKey::OifName),
                fw_accept(false, "fw4", false),
                fw_accept(false, "fw4", true),
                fw_accept(true, "fw6", false),
                fw_accept(true, "fw6", true),
            ]),
        ),
        // `iifname . meta l4proto . th dport @dns accept`
        inet(
            "input",
            Some(("filter", INPUT, -5)),
            Some(vec![vec![
                Expr::Meta(MetaKey::IifName, R1),
                Expr::Meta(MetaKey::L4Proto, R2),
                dport(r32(5)),
                lookup(R1, "dns"),
                verdict(Verdict::Accept),
            ]]),
        ),
        ChainDef {
            family: Family::Bridge,
            name: "prerouting",
            base: Some(("filter", PREROUTING, -300)),
            rules: Some(vec![
                // `iifname . ether saddr @macs accept`
                vec![
                    Expr::Meta(MetaKey::IifName, R1),
                    payload(Base::Link, 6, 6, R2),
                    lookup(R1, "macs"),
                    verdict(Verdict::Accept),
                ],
                // `iifname @checked drop`
                vec![
                    Expr::Meta(MetaKey::IifName, R1),
                    lookup(R1, "checked"),
                    verdict(Verdict::Drop),
                ],
            ]),
        },
    ]
}

/// `fib daddr type local jump portmap`.
fn local_jump() -> Vec<Expr> {
    const RTN_LOCAL: u32 = 2;
    vec![
        Expr::FibDaddrType(R1),
        eq(R1, host32(RTN_LOCAL)),
        verdict(Verdict::Jump("portmap")),
    ]
}

/// `iifname . oifname != @samebr` (iifname in R1, oifname in R2).
fn not_same_bridge() -> Expr {
    Expr::Lookup {
        reg: R1,
        set: "samebr",
        dreg: None,
        invert: true,
    }
}

fn admin_vmap(key: MetaKey) -> Vec<Expr> {
    vec![
        Expr::Meta(key, R1),
        Expr::Lookup {
            reg: R1,
            set: "admin",
            dreg: Some(VERDICT),
            invert: false,
        },
    ]
}

// ---- netlink encoding -------------------------------------------------------------------

/// Netlink attributes, written by hand where the netfilter crate has no type
/// (expressions beyond its six, the set description).
#[derive(Debug, Default)]
pub struct Nla(pub Vec<u8>);

pub const NLA_F_NESTED: u16 = 0x8000;

impl Nla {
    pub fn put(&mut self, kind: u16, value: &[u8]) -> &mut Nla {
        let len = u16::try_from(4 + value.len()).expect("a small attribute");
        self.0.extend(len.to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(value);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }

    pub fn be32(&mut self, kind: u16, v: u32) -> &mut Nla {
        self.put(kind, &v.to_be_bytes())
    }

    pub fn string(&mut self, kind: u16, s: &str) -> &mut Nla {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.put(kind, &v)
    }

    pub fn nest(&mut self, kind: u16, inner: Nla) -> &mut Nla {
        self.put(kind | NLA_F_NESTED, &inner.0)
    }
}

const NFTA_LIST_ELEM: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;

fn data_value(bytes: &[u8]) -> Nla {
    let mut n = Nla::default();
    n.put(NFTA_DATA_VALUE, bytes);
    n
}

fn verdict_data(v: Verdict) -> Nla {
    const NF_DROP: i32 = 0;
    const NF_ACCEPT: i32 = 1;
    const NFT_JUMP: i32 = -3;
    const NFT_RETURN: i32 = -5;
    let mut inner = Nla::default();
    let code = match v {
        Verdict::Drop => NF_DROP,
        Verdict::Accept => NF_ACCEPT,
        Verdict::Return => NFT_RETURN,
        Verdict::Jump(_) => NFT_JUMP,
    };
    inner.put(1, &code.to_be_bytes());
    if let Verdict::Jump(chain) = v {
        inner.string(2, chain);
    }
    let mut n = Nla::default();
    n.nest(NFTA_DATA_VERDICT, inner);
    n
}

impl Expr {
    /// The expression's name and its `NFTA_EXPR_DATA` attributes.
    fn encode(&self) -> (&'static str, Nla) {
        let mut a = Nla::default();
        let name = match self {
            Expr::Meta(key, dreg) => {
                a.be32(2, *key as u32).be32(1, *dreg);
                "meta"
            }
            Expr::MetaSet(key, sreg) => {
                a.be32(2, *key as u32).be32(3, *sreg);
                "meta"
            }
            Expr::Payload {
                base,
                offset,
                len,
                dreg,
            } => {
                a.be32(1, *dreg)
                    .be32(2, *base as u32)
                    .be32(3, *offset)
                    .be32(4, *len);
                "payload"
            }
            Expr::Cmp { reg, eq, data } => {
                a.be32(1, *reg)
                    .be32(2, u32::from(!eq))
                    .nest(3, data_value(data));
                "cmp"
            }
            Expr::Bitwise { reg, mask, xor } => {
                let len = u32::try_from(mask.len()).expect("a register's length");
                a.be32(1, *reg)
                    .be32(2, *reg)
                    .be32(3, len)
                    .nest(4, data_value(mask))
                    .nest(5, data_value(xor));
                "bitwise"
            }
            Expr::Lookup {
                reg,
                set,
                dreg,
                invert,
            } => {
                a.string(1, set).be32(2, *reg);
                if let Some(d) = dreg {
                    a.be32(3, *d);
                }
                if *invert {
                    a.be32(5, 1);
                }
                "lookup"
            }
            Expr::FibDaddrType(dreg) => {
                const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
                const NFTA_FIB_F_DADDR: u32 = 2;
                a.be32(1, *dreg)
                    .be32(2, NFT_FIB_RESULT_ADDRTYPE)
                    .be32(3, NFTA_FIB_F_DADDR);
                "fib"
            }
            Expr::Ct(key, dreg) => {
                a.be32(1, *dreg).be32(2, *key as u32);
                "ct"
            }
            Expr::Dnat { v6, addr, port } => {
                const NFT_NAT_DNAT: u32 = 1;
                a.be32(1, NFT_NAT_DNAT)
                    .be32(2, if *v6 { 10 } else { 2 })
                    .be32(3, *addr)
                    .be32(5, *port);
                "nat"
            }
            Expr::Masquerade => "masq",
            Expr::Verdict(v) => {
                a.be32(1, VERDICT).nest(2, verdict_data(*v));
                "immediate"
            }
        };
        (name, a)
    }
}

/// A rule's `NFTA_RULE_EXPRESSIONS` payload (the list of its expressions).
pub fn encode_rule(exprs: &[Expr]) -> Vec<u8> {
    let mut list = Nla::default();
    for e in exprs {
        let (name, data) = e.encode();
        let mut elem = Nla::default();
        elem.string(1, name).nest(2, data);
        list.nest(NFTA_LIST_ELEM, elem);
    }
    list.0
}

/// A set's `NFTA_SET_DESC` payload: the field lengths of a ranged concatenation (the
/// kernel's pipapo set needs them).
pub fn encode_concat_desc(fields: &[Field]) -> Vec<u8> {
    let mut concat = Nla::default();
    for f in fields {
        let mut field = Nla::default();
        field.be32(1, f.bytes());
        concat.nest(NFTA_LIST_ELEM, field);
    }
    let mut desc = Nla::default();
    desc.nest(2, concat);
    desc.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_types_are_nfts() {
        // What nft itself sends for `pm4` (seen with `nft --debug=mnl`).
        let pm4 = set_def("inet", "pm4").unwrap();
        assert_eq!(concat_type(pm4.key), 0x730d);
        assert_eq!(concat_len(pm4.key), 12);
        let Data::Fields(d) = pm4.data else { panic!() };
        assert_eq!((concat_type(d), concat_len(d)), (0x1cd, 8));
        assert_eq!(concat_type(set_def("inet", "local4").unwrap().key), 0x1c7);
        assert_eq!(set_def("inet", "pm4any_0123abcd").unwrap().name, "pm4any");
        assert!(set_def("inet", "macs").is_none());
        assert!(set_def("bridge", "macs").is_some());
        assert_eq!(
            set_def("inet", "pm6").unwrap().nft_text("pm6_ab"),
            "add map inet podnet pm6_ab { type ipv6_addr . inet_proto . inet_service : ipv6_addr . inet_service; }"
        );
        assert_eq!(
            set_def("inet", "local4").unwrap().nft_text("local4"),
            "add set inet podnet local4 { type ipv4_addr . ipv4_addr; flags interval; }"
        );
    }

    #[test]
    fn every_rule_refers_to_a_declared_set_and_chain() {
        let chains = chains();
        for c in &chains {
            for r in c.rules.iter().flatten() {
                for e in r {
                    match e {
                        Expr::Lookup { set, .. } => assert!(
                            set_def(c.family.name(), set).is_some(),
                            "{} {}: no set {set}",
                            c.family.name(),
                            c.name
                        ),
                        Expr::Verdict(Verdict::Jump(to)) => {
                            assert!(chains.iter().any(|d| d.name == *to && d.family == c.family))
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    #[test]
    fn expressions_encode_as_nested_attributes() {
        let bytes = encode_rule(&[Expr::Verdict(Verdict::Jump("portmap"))]);
        // LIST_ELEM(nested) { NAME "immediate", DATA(nested) { DREG 0, DATA { VERDICT { CODE -3, CHAIN } } } }
        assert_eq!(u16::from_ne_bytes([bytes[2], bytes[3]]), 1 | NLA_F_NESTED);
        assert_eq!(
            usize::from(u16::from_ne_bytes([bytes[0], bytes[1]])),
            bytes.len()
        );
        assert!(bytes.windows(10).any(|w| w == b"immediate\0"));
        assert!(bytes.windows(4).any(|w| w == (-3i32).to_be_bytes()));
    }
}
