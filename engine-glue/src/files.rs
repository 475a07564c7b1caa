//! The three files the engine binds into every container: /etc/hosts, /etc/resolv.conf
//! and /etc/hostname. Pure builders; the caller writes them.

use std::net::IpAddr;

use crate::state::{Attached, HostEntry};

/// Names that map to an address in /etc/hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    pub ip: IpAddr,
    pub names: Vec<String>,
}

impl HostLine {
    pub fn new(ip: IpAddr, names: impl IntoIterator<Item = impl Into<String>>) -> HostLine {
        let mut v: Vec<String> = Vec::new();
        for n in names {
            let n = n.into();
            if !n.is_empty() && !v.contains(&n) {
                v.push(n);
            }
        }
        HostLine { ip, names: v }
    }
}

/// /etc/hosts: `--add-host` entries first (they win, as in Podman), the loopback lines,
/// then the container's own addresses under its names. `base` (the host's file, for
/// `--network host`) replaces the loopback lines.
pub fn hosts(own: &[HostLine], add_hosts: &[HostEntry], base: Option<&str>) -> String {
    let mut out = String::new();
    for h in add_hosts {
        out.push_str(&format!("{}\t{}\n", h.ip, h.name));
    }
    match base {
        Some(b) => {
            out.push_str(b);
            if !b.ends_with('\n') {
                out.push('\n');
            }
        }
        None => out.push_str("127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
    }
    for l in own.iter().filter(|l| !l.names.is_empty()) {
        out.push_str(&format!("{}\t{}\n", l.ip, l.names.join(" ")));
    }
    out
}

/// The own-address lines of a set of attachments: every address under `names`.
pub fn own_lines(attachments: &[Attached], names: &[&str]) -> Vec<HostLine> {
    attachments
        .iter()
        .flat_map(|a| a.ips.iter())
        .map(|ip| HostLine::new(ip.ip(), names.iter().copied()))
        .collect()
}

/// What /etc/resolv.conf says, parsed or to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolv {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Resolv {
    pub fn parse(text: &str) -> Resolv {
        let mut r = Resolv::default();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => r.nameservers.extend(words.next().map(str::to_owned)),
                Some("search" | "domain") => r.search = words.map(str::to_owned).collect(),
                Some("options") => r.options.extend(words.map(str::to_owned)),
                _ => {}
            }
        }
        r
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for n in &self.nameservers {
            out.push_str(&format!("nameserver {n}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// A container's resolv.conf: `--dns` servers if given, else the networks' responders
/// (from the CNI results), else the host's servers that are reachable from a container
/// namespace (loopback ones are not). Search domains: the networks' then the host's.
pub fn resolv(dns: &[IpAddr], attachments: &[Attached], host: &Resolv) -> Resolv {
    let mut r = Resolv::default();
    let push = |v: &mut Vec<String>, s: &str| {
        if !v.iter().any(|x| x == s) {
            v.push(s.to_owned());
        }
    };
    if !dns.is_empty() {
        dns.iter()
            .for_each(|d| push(&mut r.nameservers, &d.to_string()));
    } else {
        attachments
            .iter()
            .flat_map(|a| &a.nameservers)
            .for_each(|n| push(&mut r.nameservers, n));
    }
    if r.nameservers.is_empty() {
        host.nameservers
            .iter()
            .filter(|n| n.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback()))
            .for_each(|n| push(&mut r.nameservers, n));
    }
    attachments
        .iter()
        .flat_map(|a| &a.search)
        .chain(&host.search)
        .for_each(|s| push(&mut r.search, s));
    r.options = host.options.clone();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached(ip: &str, ns: &[&str]) -> Attached {
        Attached {
            network: "web".into(),
            ifname: "eth0".into(),
            ips: vec![ip.parse().unwrap()],
            mac: None,
            gateways: vec![],
            nameservers: ns.iter().map(|s| s.to_string()).collect(),
            search: vec!["dns.podman".into()],
        }
    }

    #[test]
    fn hosts_lists_add_hosts_loopback_and_own_names() {
        let a = [attached("10.89.0.10/24", &[])];
        let own = own_lines(&a, &["hugo", "hugo", "blog"]);
        let extra = [HostEntry {
            name: "db".into(),
            ip: "192.0.2.5".parse().unwrap(),
        }];
        assert_eq!(
            hosts(&own, &extra, None),
            "192.0.2.5\tdb\n127.0.0.1\tlocalhost localhost.localdomain\n::1\tlocalhost ip6-localhost ip6-loopback\n10.89.0.10\thugo blog\n"
        );
        assert_eq!(hosts(&[], &[], Some("127.0.0.1 h")), "127.0.0.1 h\n");
    }

    #[test]
    fn resolv_prefers_dns_flag_then_responder_then_reachable_host_servers() {
        let host = Resolv::parse(
            "# x\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch lan\noptions edns0\n",
        );
        assert_eq!(host.nameservers, ["127.0.0.53", "192.0.2.53"]);
        let a = [attached("10.89.0.10/24", &["10.89.0.1"])];
        let r = resolv(&[], &a, &host);
        assert_eq!(
            r.render(),
            "search dns.podman lan\nnameserver 10.89.0.1\noptions edns0\n"
        );
        let r = resolv(&["9.9.9.9".parse().unwrap()], &a, &host);
        assert_eq!(r.nameservers, ["9.9.9.9"]);
        let r = resolv(&[], &[], &host);
        assert_eq!(
            r.nameservers,
            ["192.0.2.53"],
            "loopback servers are unreachable"
        );
    }
}
