//! `resolvConf`: a resolv.conf turned into a result's `dns`, as the reference does.

use std::path::Path;

use cni::{CniError, Dns, ErrorCode};

pub fn parse_file(path: &Path) -> Result<Dns, CniError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        CniError::from_source(
            ErrorCode::IO_FAILURE,
            format!("ipam.resolvConf: reading {}", path.display()),
            &e,
        )
    })?;
    Ok(parse(&text))
}

pub fn parse(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => dns.nameservers.extend(words.next().map(str::to_owned)),
            Some("domain") => dns.domain = words.next().map(str::to_owned),
            Some("search") => dns.search = words.map(str::to_owned).collect(),
            Some("options") => dns.options.extend(words.map(str::to_owned)),
            _ => {}
        }
    }
    dns
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_resolv_conf() {
        let d = super::parse("# c\nnameserver 10.0.0.1\nnameserver fd00::1 # x\ndomain example.com\nsearch a.com b.com\noptions ndots:2 edns0\n");
        assert_eq!(d.nameservers, ["10.0.0.1", "fd00::1"]);
        assert_eq!(d.domain.as_deref(), Some("example.com"));
        assert_eq!(d.search, ["a.com", "b.com"]);
        assert_eq!(d.options, ["ndots:2", "edns0"]);
    }
}
