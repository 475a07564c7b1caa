//! The names the responder answers, in memory, and the one function that decides every
//! answer ([`Zone::lookup`]). Pure: no I/O and no DNS wire types, unit-tested as is.
//!
//! **Views.** A client sees the networks its source address belongs to — by subnet,
//! or because it is registered there — and every network of the containers that hold
//! its address (a container on two networks sees both, whichever gateway it asks).
//! A client never sees a network it is not on, and a client on none of them is
//! refused (the responder is no open resolver).
//!
//! **Names.** In a network with domain `dns.podman`, `hugo` and `hugo.dns.podman` are
//! the same name. Two attachments may hold one name for a moment (a container being
//! replaced): the newer one answers. Unknown names in the domain and unknown
//! single-label names are NXDOMAIN (never sent upstream); everything else is forwarded.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

use smallvec::SmallVec;

use crate::store::{Attachment, NetworkConf};

/// The query types the zone distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    A,
    Aaaa,
    Ptr,
    Any,
    Other,
}

/// The decision for one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Address records (already filtered by type), authoritative.
    Addrs(Vec<IpAddr>),
    /// PTR targets, fully qualified without the trailing dot.
    Ptr(Vec<String>),
    /// The name exists, not with this type (NOERROR, empty). `domain` is the zone's.
    NoData {
        domain: String,
    },
    NxDomain {
        domain: String,
    },
    /// Not ours: ask these upstreams (empty: the host's resolvers).
    Forward {
        upstreams: Vec<IpAddr>,
    },
    /// The client is on none of our networks: never an open resolver.
    Refused,
}

/// One attachment as the zone holds it: compact, as a responder may hold 50,000.
#[derive(Debug)]
struct Entry {
    /// `<containerID>.<ifname>`, shared with [`Net::slots`].
    key: Arc<str>,
    /// The container id's length in `key` (ids and interface names may hold dots).
    cid_len: usize,
    names: Box<[Box<str>]>,
    ips: Box<[IpAddr]>,
    /// The container's own upstreams (usually none: the network's).
    upstreams: Box<[IpAddr]>,
    seq: u128,
}

impl Entry {
    fn container_id(&self) -> &str {
        &self.key[..self.cid_len]
    }

    fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id().to_owned(),
            ifname: self.key[self.cid_len + 1..].to_owned(),
            names: self.names.iter().map(|n| n.to_string()).collect(),
            ips: self.ips.to_vec(),
            upstreams: self.upstreams.to_vec(),
            seq: self.seq,
        }
    }
}

/// The slots of the attachments holding one name or address: nearly always one.
type Holders = SmallVec<[u32; 2]>;

/// One network's names. Attachments live in a slab; the name and address indexes hold
/// their 4-byte slots, not copies of their keys (~0.5 KiB a name instead of ~1 KiB).
#[derive(Debug, Default)]
struct Net {
    conf: Option<NetworkConf>,
    /// key → slot, ordered so that a container id's attachments are one range.
    slots: BTreeMap<Arc<str>, u32>,
    entries: Vec<Option<Entry>>,
    free: Vec<u32>,
    names: FastMap<Box<str>, Holders>,
    ips: FastMap<IpAddr, Holders>,
}

/// The per-query indexes hash with foldhash: their keys are set by the runtime, not by
/// clients, and SipHash was a visible share of a local answer.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

impl Net {
    fn domain(&self) -> &str {
        self.conf.as_ref().map_or("", |c| c.domain.as_str())
    }

    fn covers(&self, ip: IpAddr) -> bool {
        self.conf
            .as_ref()
            .is_some_and(|c| c.subnets.iter().any(|s| s.contains(ip)))
    }

    fn entry(&self, slot: u32) -> Option<&Entry> {
        self.entries.get(slot as usize).and_then(Option::as_ref)
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.slots.get(key).and_then(|s| self.entry(*s))
    }

    /// The newest attachment among `slots`.
    fn newest(&self, slots: &[u32]) -> Option<&Entry> {
        slots
            .iter()
            .filter_map(|s| self.entry(*s))
            .max_by_key(|e| e.seq)
    }

    /// Whether container `cid` has an attachment here: keys starting `<cid>.`.
    fn has_container(&self, cid: &str) -> bool {
        self.slots
            .range::<str, _>((Bound::Included(cid), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(cid))
            .any(|(_, s)| self.entry(*s).is_some_and(|e| e.cid_len == cid.len()))
    }

    fn insert(&mut self, a: Attachment) {
        let key: Arc<str> = Arc::from(a.key());
        self.remove(&key);
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.entries.push(None);
                u32::try_from(self.entries.len() - 1).expect("fewer than 2^32 attachments")
            }
        };
        for n in &a.names {
            let holders = match self.names.get_mut(n.as_str()) {
                Some(h) => h,
                None => self.names.entry(n.as_str().into()).or_default(),
            };
            holders.push(slot);
        }
        for ip in &a.ips {
            self.ips.entry(*ip).or_default().push(slot);
        }
        self.slots.insert(key.clone(), slot);
        self.entries[slot as usize] = Some(Entry {
            key,
            cid_len: a.container_id.len(),
            names: a.names.into_iter().map(String::into_boxed_str).collect(),
            ips: a.ips.into_boxed_slice(),
            upstreams: a.upstreams.into_boxed_slice(),
            seq: a.seq,
        });
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(slot) = self.slots.remove(key) else {
            return false;
        };
        let Some(e) = self.entries.get_mut(slot as usize).and_then(Option::take) else {
            return false;
        };
        fn drop_slot<K: Borrow<Q> + std::hash::Hash + Eq, Q: std::hash::Hash + Eq + ?Sized>(
            m: &mut FastMap<K, Holders>,
            k: &Q,
            slot: u32,
        ) {
            if let Some(v) = m.get_mut(k) {
                v.retain(|x| *x != slot);
                if v.is_empty() {
                    m.remove(k);
                }
            }
        }
        for n in e.names.iter() {
            drop_slot(&mut self.names, &**n, slot);
        }
        for ip in e.ips.iter() {
            drop_slot(&mut self.ips, ip, slot);
        }
        self.free.push(slot);
        true
    }
}

/// Every network's names.
#[derive(Debug, Default)]
pub struct Zone {
    nets: HashMap<String, Net>,
}

impl Zone {
    pub fn set_network(&mut self, conf: NetworkConf) {
        let name = conf.name.clone();
        self.nets.entry(name).or_default().conf = Some(conf);
    }

    pub fn network(&self, name: &str) -> Option<&NetworkConf> {
        self.nets.get(name).and_then(|n| n.conf.as_ref())
    }

    pub fn networks(&self) -> impl Iterator<Item = &NetworkConf> {
        self.nets.values().filter_map(|n| n.conf.as_ref())
    }

    pub fn remove_network(&mut self, name: &str) -> bool {
        self.nets.remove(name).is_some()
    }

    /// Adds or replaces an attachment (incremental: nothing else is touched).
    pub fn insert(&mut self, network: &str, a: Attachment) {
        self.nets.entry(network.to_owned()).or_default().insert(a);
    }

    pub fn remove(&mut self, network: &str, key: &str) -> bool {
        self.nets.get_mut(network).is_some_and(|n| n.remove(key))
    }

    pub fn attachment(&self, network: &str, key: &str) -> Option<Attachment> {
        self.nets
            .get(network)
            .and_then(|n| n.get(key))
            .map(Entry::attachment)
    }

    pub fn len(&self, network: &str) -> usize {
        self.nets.get(network).map_or(0, |n| n.slots.len())
    }

    pub fn is_empty(&self, network: &str) -> bool {
        self.len(network) == 0
    }

    /// The networks `src` sees (see the module docs).
    /// Networks covering the address come first. Computed for every query: no heap
    /// allocation, and the container lookup only when some network does not cover `src`.
    fn view(&self, src: IpAddr) -> SmallVec<[&Net; 4]> {
        let mut view: SmallVec<[&Net; 4]> = self.nets.values().filter(|n| n.covers(src)).collect();
        if view.len() == self.nets.len() {
            return view;
        }
        let cids: SmallVec<[&str; 2]> = self
            .nets
            .values()
            .filter_map(|n| n.ips.get(&src).map(|slots| (n, slots)))
            .flat_map(|(n, slots)| {
                slots
                    .iter()
                    .filter_map(|s| n.entry(*s).map(Entry::container_id))
            })
            .collect();
        if !cids.is_empty() {
            view.extend(
                self.nets
                    .values()
                    .filter(|n| !n.covers(src) && cids.iter().any(|c| n.has_container(c))),
            );
        }
        view
    }

    /// Decides the answer to `qname` (lowercase, no trailing dot) asked by `src`.
    pub fn lookup(&self, src: IpAddr, qname: &str, qtype: QType) -> Answer {
        let view = self.view(src);
        // The asking container's own upstreams, else those of the networks it sees.
        let upstreams = || Answer::Forward {
            upstreams: match view
                .iter()
                .filter_map(|n| n.ips.get(&src).and_then(|slots| n.newest(slots)))
                .find(|e| !e.upstreams.is_empty())
            {
                Some(e) => e.upstreams.to_vec(),
                None => view
                    .iter()
                    .filter_map(|n| n.conf.as_ref())
                    .flat_map(|c| c.upstreams.iter().copied())
                    .collect(),
            },
        };
        if view.is_empty() {
            return Answer::Refused;
        }
        if let Some(ip) = arpa_to_ip(qname) {
            let mut names = Vec::new();
            for n in &view {
                if let Some(a) = n.ips.get(&ip).and_then(|slots| n.newest(slots)) {
                    let fqdn = format!("{}.{}", a.names[0], n.domain());
                    if !names.contains(&fqdn) {
                        names.push(fqdn);
                    }
                }
            }
            return match (names.is_empty(), qtype) {
                (false, QType::Ptr | QType::Any) => Answer::Ptr(names),
                (false, _) => Answer::NoData {
                    domain: view[0].domain().to_owned(),
                },
                (true, _) => match view.iter().find(|n| n.covers(ip)) {
                    Some(n) => Answer::NxDomain {
                        domain: n.domain().to_owned(),
                    },
                    None => upstreams(),
                },
            };
        }
        // The label asked for, and the domain it was asked in (if any).
        let mut in_domain: Option<&str> = None;
        let mut label = qname;
        for n in &view {
            let d = n.domain();
            if qname == d {
                return Answer::NoData { domain: d.into() };
            }
            if let Some(l) = qname
                .strip_suffix(d)
                .and_then(|p| p.strip_suffix('.'))
                .filter(|_| !d.is_empty())
            {
                in_domain = Some(d);
                label = l;
                break;
            }
        }
        if in_domain.is_none() && qname.contains('.') {
            return upstreams();
        }
        let mut ips: Vec<IpAddr> = Vec::new();
        let mut found = false;
        for n in &view {
            if in_domain.is_some_and(|d| d != n.domain()) {
                continue;
            }
            if let Some(a) = n.names.get(label).and_then(|slots| n.newest(slots)) {
                found = true;
                for ip in &a.ips {
                    if !ips.contains(ip) {
                        ips.push(*ip);
                    }
                }
            }
        }
        let domain = in_domain.unwrap_or(view[0].domain()).to_owned();
        if !found {
            return Answer::NxDomain { domain };
        }
        ips.retain(|ip| match qtype {
            QType::A => ip.is_ipv4(),
            QType::Aaaa => ip.is_ipv6(),
            QType::Any => true,
            QType::Ptr | QType::Other => false,
        });
        if ips.is_empty() {
            Answer::NoData { domain }
        } else {
            Answer::Addrs(ips)
        }
    }
}

/// The address of a reverse name (`10.0.88.10.in-addr.arpa`, nibbles `.ip6.arpa`).
pub fn arpa_to_ip(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let parts: Vec<u8> = rest
            .split('.')
            .map(|p| p.parse().ok())
            .collect::<Option<_>>()?;
        if parts.len() != 4 {
            return None;
        }
        return Some(IpAddr::from([parts[3], parts[2], parts[1], parts[0]]));
    }
    let rest = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|p| {
            (p.len() == 1)
                .then(|| u8::from_str_radix(p, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // rchunks of the reversed nibble list: [low, high] of byte i.
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(name: &str, subnet: &str, upstreams: &[&str]) -> NetworkConf {
        let subnet: ipnetwork::IpNetwork = subnet.parse().unwrap();
        NetworkConf {
            name: name.into(),
            domain: "dns.podman".into(),
            gateways: vec![subnet.network()],
            subnets: vec![subnet],
            bridge: format!("{name}0"),
            port: 53,
            upstreams: upstreams.iter().map(|u| u.parse().unwrap()).collect(),
        }
    }

    fn att(cid: &str, names: &[&str], ips: &[&str], seq: u128) -> Attachment {
        Attachment {
            container_id: cid.into(),
            ifname: "eth0".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            ips: ips.iter().map(|i| i.parse().unwrap()).collect(),
            upstreams: vec![],
            seq,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn zone() -> Zone {
        let mut z = Zone::default();
        z.set_network(conf("a", "10.1.0.0/24", &[]));
        z.set_network(conf("b", "10.2.0.0/24", &["10.9.9.9"]));
        z.insert(
            "a",
            att("c1", &["hugo", "blog", "c1"], &["10.1.0.10", "fd00::10"], 1),
        );
        z.insert("a", att("c2", &["proxy"], &["10.1.0.11"], 2));
        z.insert("b", att("c3", &["db"], &["10.2.0.5"], 3));
        // c2 is on both networks.
        z.insert("b", att("c2", &["proxy"], &["10.2.0.11"], 4));
        z
    }

    #[test]
    fn container_ids_with_dots_do_not_join_views_by_prefix() {
        let mut z = zone();
        z.insert("a", att("abc.def", &["web"], &["10.1.0.20"], 4));
        z.insert("b", att("abc", &["cache"], &["10.2.0.20"], 5));
        // `abc.def` is on a only; `abc` (whose key `abc.eth0` shares the prefix) on b only.
        assert!(matches!(
            z.lookup(ip("10.1.0.20"), "db", QType::A),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            z.lookup(ip("10.2.0.20"), "hugo", QType::A),
            Answer::NxDomain { .. }
        ));
        // Joined on both, a container sees both.
        z.insert("b", att("abc.def", &["web"], &["10.2.0.21"], 6));
        assert_eq!(
            z.lookup(ip("10.1.0.20"), "db", QType::A),
            Answer::Addrs(vec![ip("10.2.0.5")])
        );
        assert_eq!(
            z.attachment("a", "abc.def.eth0").unwrap().container_id,
            "abc.def"
        );
        assert!(z.remove("b", "abc.def.eth0"));
        assert!(matches!(
            z.lookup(ip("10.1.0.20"), "db", QType::A),
            Answer::NxDomain { .. }
        ));
    }

    #[test]
    fn answers_names_fqdns_and_aliases_by_type() {
        let z = zone();
        let src = ip("10.1.0.99");
        let v4 = Answer::Addrs(vec![ip("10.1.0.10")]);
        assert_eq!(z.lookup(src, "hugo", QType::A), v4);
        assert_eq!(z.lookup(src, "hugo.dns.podman", QType::A), v4);
        assert_eq!(z.lookup(src, "blog.dns.podman", QType::A), v4);
        assert_eq!(z.lookup(src, "c1", QType::A), v4);
        assert_eq!(
            z.lookup(src, "hugo", QType::Aaaa),
            Answer::Addrs(vec![ip("fd00::10")])
        );
        let nodata = Answer::NoData {
            domain: "dns.podman".into(),
        };
        assert_eq!(z.lookup(src, "hugo", QType::Other), nodata);
        assert_eq!(z.lookup(src, "proxy", QType::Aaaa), nodata);
        let nx = Answer::NxDomain {
            domain: "dns.podman".into(),
        };
        assert_eq!(z.lookup(src, "nobody.dns.podman", QType::A), nx);
        assert_eq!(z.lookup(src, "nobody", QType::A), nx);
        assert_eq!(z.lookup(src, "a.b.dns.podman", QType::A), nx);
    }

    #[test]
    fn views_isolate_networks_and_join_them_for_multi_network_containers() {
        let z = zone();
        // A stranger on a sees a only.
        assert!(matches!(
            z.lookup(ip("10.1.0.99"), "db", QType::A),
            Answer::NxDomain { .. }
        ));
        // c2 (on a and b) sees both, from either address.
        assert_eq!(
            z.lookup(ip("10.1.0.11"), "db", QType::A),
            Answer::Addrs(vec![ip("10.2.0.5")])
        );
        assert_eq!(
            z.lookup(ip("10.2.0.11"), "hugo", QType::A),
            Answer::Addrs(vec![ip("10.1.0.10")])
        );
        // A client on no network gets nothing, not even forwarding.
        assert_eq!(
            z.lookup(ip("192.168.1.5"), "hugo", QType::A),
            Answer::Refused
        );
        assert_eq!(
            z.lookup(ip("192.168.1.5"), "example.com", QType::A),
            Answer::Refused
        );
    }

    #[test]
    fn forwards_everything_else_to_the_view_upstreams() {
        let z = zone();
        assert_eq!(
            z.lookup(ip("10.1.0.99"), "example.com", QType::A),
            Answer::Forward { upstreams: vec![] }
        );
        assert_eq!(
            z.lookup(ip("10.2.0.99"), "example.com", QType::A),
            Answer::Forward {
                upstreams: vec![ip("10.9.9.9")]
            }
        );
    }

    #[test]
    fn a_container_with_its_own_upstreams_forwards_there() {
        let mut z = zone();
        let mut a = att("c9", &["dig"], &["10.2.0.9"], 9);
        a.upstreams = vec![ip("192.0.2.53")];
        z.insert("b", a);
        assert_eq!(
            z.lookup(ip("10.2.0.9"), "example.com", QType::A),
            Answer::Forward {
                upstreams: vec![ip("192.0.2.53")]
            }
        );
        // Its names are still answered locally; its neighbours keep the network's.
        assert_eq!(
            z.lookup(ip("10.2.0.9"), "db", QType::A),
            Answer::Addrs(vec![ip("10.2.0.5")])
        );
        assert_eq!(
            z.lookup(ip("10.2.0.5"), "example.com", QType::A),
            Answer::Forward {
                upstreams: vec![ip("10.9.9.9")]
            }
        );
    }

    #[test]
    fn ptr_for_v4_and_v6() {
        let z = zone();
        let src = ip("10.1.0.99");
        let want = Answer::Ptr(vec!["hugo.dns.podman".into()]);
        assert_eq!(z.lookup(src, "10.0.1.10.in-addr.arpa", QType::Ptr), want);
        let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
        assert_eq!(z.lookup(src, v6, QType::Ptr), want);
        assert!(matches!(
            z.lookup(src, "77.0.1.10.in-addr.arpa", QType::Ptr),
            Answer::NxDomain { .. }
        ));
        assert!(matches!(
            z.lookup(src, "8.8.8.8.in-addr.arpa", QType::Ptr),
            Answer::Forward { .. }
        ));
    }

    #[test]
    fn the_newer_holder_of_a_name_answers_and_removal_is_exact() {
        let mut z = zone();
        z.insert("a", att("c9", &["hugo"], &["10.1.0.50"], 9));
        let src = ip("10.1.0.99");
        assert_eq!(
            z.lookup(src, "hugo", QType::A),
            Answer::Addrs(vec![ip("10.1.0.50")])
        );
        assert!(z.remove("a", "c9.eth0"));
        assert!(!z.remove("a", "c9.eth0"));
        assert_eq!(
            z.lookup(src, "hugo", QType::A),
            Answer::Addrs(vec![ip("10.1.0.10")])
        );
        assert!(z.remove("a", "c1.eth0"));
        assert!(matches!(
            z.lookup(src, "hugo", QType::A),
            Answer::NxDomain { .. }
        ));
        assert_eq!(z.len("a"), 1);
    }

    #[test]
    fn arpa_names_parse_strictly() {
        assert_eq!(arpa_to_ip("4.3.2.1.in-addr.arpa"), Some(ip("1.2.3.4")));
        assert_eq!(arpa_to_ip("3.2.1.in-addr.arpa"), None);
        assert_eq!(arpa_to_ip("x.3.2.1.in-addr.arpa"), None);
        assert_eq!(arpa_to_ip("1.ip6.arpa"), None);
    }
}
