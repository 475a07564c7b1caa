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

use std::collections::HashMap;
use std::net::IpAddr;

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

#[derive(Debug, Default)]
struct Net {
    conf: Option<NetworkConf>,
    atts: HashMap<String, Attachment>,
    /// name → attachment keys holding it.
    names: HashMap<String, Vec<String>>,
    /// address → attachment keys holding it.
    ips: HashMap<IpAddr, Vec<String>>,
    /// container id → attachments.
    cids: HashMap<String, usize>,
}

impl Net {
    fn domain(&self) -> &str {
        self.conf.as_ref().map_or("", |c| c.domain.as_str())
    }

    fn covers(&self, ip: IpAddr) -> bool {
        self.conf
            .as_ref()
            .is_some_and(|c| c.subnets.iter().any(|s| s.contains(ip)))
    }

    /// The newest attachment among `keys`.
    fn newest<'a>(&'a self, keys: &[String]) -> Option<&'a Attachment> {
        keys.iter()
            .filter_map(|k| self.atts.get(k))
            .max_by_key(|a| a.seq)
    }

    fn insert(&mut self, a: Attachment) {
        let key = a.key();
        self.remove(&key);
        for n in &a.names {
            self.names.entry(n.clone()).or_default().push(key.clone());
        }
        for ip in &a.ips {
            self.ips.entry(*ip).or_default().push(key.clone());
        }
        *self.cids.entry(a.container_id.clone()).or_default() += 1;
        self.atts.insert(key, a);
    }

    fn remove(&mut self, key: &str) -> bool {
        let Some(a) = self.atts.remove(key) else {
            return false;
        };
        fn drop_key<K: std::hash::Hash + Eq>(m: &mut HashMap<K, Vec<String>>, k: &K, key: &str) {
            if let Some(v) = m.get_mut(k) {
                v.retain(|x| x != key);
                if v.is_empty() {
                    m.remove(k);
                }
            }
        }
        for n in &a.names {
            drop_key(&mut self.names, n, key);
        }
        for ip in &a.ips {
            drop_key(&mut self.ips, ip, key);
        }
        if let Some(c) = self.cids.get_mut(&a.container_id) {
            *c -= 1;
            if *c == 0 {
                self.cids.remove(&a.container_id);
            }
        }
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

    pub fn attachment(&self, network: &str, key: &str) -> Option<&Attachment> {
        self.nets.get(network).and_then(|n| n.atts.get(key))
    }

    pub fn len(&self, network: &str) -> usize {
        self.nets.get(network).map_or(0, |n| n.atts.len())
    }

    pub fn is_empty(&self, network: &str) -> bool {
        self.len(network) == 0
    }

    /// The networks `src` sees (see the module docs).
    fn view(&self, src: IpAddr) -> Vec<&Net> {
        let cids: Vec<&str> = self
            .nets
            .values()
            .filter_map(|n| n.ips.get(&src).map(|keys| (n, keys)))
            .flat_map(|(n, keys)| {
                keys.iter()
                    .filter_map(|k| n.atts.get(k).map(|a| a.container_id.as_str()))
            })
            .collect();
        let mut view: Vec<&Net> = self
            .nets
            .values()
            .filter(|n| n.covers(src) || cids.iter().any(|c| n.cids.contains_key(*c)))
            .collect();
        // Networks covering the address answer first.
        view.sort_by_key(|n| !n.covers(src));
        view
    }

    /// Decides the answer to `qname` (lowercase, no trailing dot) asked by `src`.
    pub fn lookup(&self, src: IpAddr, qname: &str, qtype: QType) -> Answer {
        let view = self.view(src);
        let upstreams = || Answer::Forward {
            upstreams: view
                .iter()
                .filter_map(|n| n.conf.as_ref())
                .flat_map(|c| c.upstreams.iter().copied())
                .collect(),
        };
        if view.is_empty() {
            return Answer::Refused;
        }
        if let Some(ip) = arpa_to_ip(qname) {
            let mut names = Vec::new();
            for n in &view {
                if let Some(a) = n.ips.get(&ip).and_then(|keys| n.newest(keys)) {
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
            if let Some(a) = n.names.get(label).and_then(|keys| n.newest(keys)) {
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
