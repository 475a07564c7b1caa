//! What `create`, `run` and `pod create` are asked, and the parsers for the flag forms
//! Podman users type (`-p`, `--network`, `--add-host`). Pure.

use std::net::IpAddr;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::network::NetworkSpec;
use crate::state::{HostEntry, NetSandbox, PortMapping};

/// `--network`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkChoice {
    /// Not given: the default network (or the pod's namespace with `--pod`).
    #[default]
    Default,
    Networks(Vec<String>),
    Host,
    None,
    /// `container:NAME_OR_ID`.
    Container(String),
}

impl NetworkChoice {
    pub fn parse(s: &str) -> Result<NetworkChoice> {
        let field = "--network";
        match s {
            "host" => Ok(NetworkChoice::Host),
            "none" => Ok(NetworkChoice::None),
            "" => Err(Error::invalid(field, "empty")),
            _ => {
                if let Some(c) = s.strip_prefix("container:") {
                    return match c.is_empty() {
                        true => Err(Error::invalid(field, "container: needs a name or id")),
                        false => Ok(NetworkChoice::Container(c.to_owned())),
                    };
                }
                let nets: Vec<String> = s.split(',').map(str::to_owned).collect();
                if let Some(bad) = nets
                    .iter()
                    .find(|n| matches!(n.as_str(), "" | "host" | "none"))
                {
                    return Err(Error::invalid(
                        field,
                        format!("{bad:?} cannot be combined with other networks"),
                    ));
                }
                Ok(NetworkChoice::Networks(nets))
            }
        }
    }
}

/// The network flags `create` and `pod create` share.
#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    pub network: NetworkChoice,
    /// `--ip`, `--ip6`.
    pub ips: Vec<IpAddr>,
    pub ports: Vec<PortMapping>,
    pub aliases: Vec<String>,
    pub add_hosts: Vec<HostEntry>,
    pub dns: Vec<IpAddr>,
}

impl NetOptions {
    /// The namespace asked for on `networks`, before any CNI call.
    pub fn sandbox(&self, networks: Vec<String>) -> NetSandbox {
        NetSandbox {
            networks,
            ports: self.ports.clone(),
            static_ips: self.ips.clone(),
            aliases: self.aliases.clone(),
            ..NetSandbox::default()
        }
    }
}

/// Everything `create` takes.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Generated from the id when absent.
    pub name: Option<String>,
    pub rootfs: PathBuf,
    pub command: Vec<String>,
    pub env: Vec<String>,
    pub net: NetOptions,
    pub pod: Option<String>,
    pub hostname: Option<String>,
}

/// Everything `pod create` takes.
#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    pub name: String,
    pub net: NetOptions,
    pub hostname: Option<String>,
}

/// `-p [hostIP:]hostPort:containerPort[/proto]`, `-p containerPort` (same host port),
/// IPv6 host addresses in brackets (`[::1]:8080:80`).
pub fn parse_publish(s: &str) -> Result<PortMapping> {
    let field = || format!("-p {s}");
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, p)) => (spec, p.to_ascii_lowercase()),
        None => (s, "tcp".to_owned()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(Error::invalid(
            field(),
            format!("protocol {proto:?} is not tcp, udp or sctp"),
        ));
    }
    let (host_ip, rest) = match spec.strip_prefix('[') {
        Some(v6) => {
            let (ip, rest) = v6.split_once("]:").ok_or_else(|| {
                Error::invalid(
                    field(),
                    "an IPv6 host address is written [ADDR]:HOSTPORT:PORT",
                )
            })?;
            (ip.to_owned(), rest)
        }
        None => match spec.matches(':').count() {
            2 => {
                let (ip, rest) = spec.split_once(':').expect("two colons");
                (ip.to_owned(), rest)
            }
            0 | 1 => (String::new(), spec),
            _ => {
                return Err(Error::invalid(
                    field(),
                    "too many ':' (IPv6 host addresses go in brackets)",
                ))
            }
        },
    };
    if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
        return Err(Error::invalid(
            field(),
            format!("{host_ip:?} is not an IP address"),
        ));
    }
    let port = |p: &str, what: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::invalid(
                field(),
                format!("{what} {p:?} is not a port (1-65535)"),
            )),
        }
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some((h, c)) => (port(h, "host port")?, port(c, "container port")?),
        None => {
            let p = port(rest, "container port")?;
            (p, p)
        }
    };
    Ok(PortMapping {
        host_port,
        container_port,
        protocol: proto,
        host_ip,
    })
}

/// One `podnet network create -o KEY[=VALUE]` driver option (`isolate`, `mtu`, `bridge`;
/// for macvlan `parent` and `mode`; a bare key means `true`), applied to `spec`.
pub fn apply_network_option(spec: &mut NetworkSpec, o: &str) -> Result<()> {
    let (k, v) = o.split_once('=').unwrap_or((o, "true"));
    let bad = |why: &str| Error::invalid(format!("-o {o}"), why);
    match k {
        "isolate" => spec.isolate = v.parse().map_err(|_| bad("isolate is true or false"))?,
        "mtu" => spec.mtu = Some(v.parse().map_err(|_| bad("mtu is a number"))?),
        "bridge" => spec.bridge = Some(v.to_owned()),
        "parent" => spec.parent = Some(v.to_owned()),
        "mode" => spec.mode = Some(v.to_owned()),
        _ => return Err(bad("known options: isolate, mtu, bridge, parent, mode")),
    }
    Ok(())
}

/// `--add-host NAME:IP` (the IP may be IPv6: everything after the first colon).
pub fn parse_add_host(s: &str) -> Result<HostEntry> {
    let (name, ip) = s
        .split_once(':')
        .ok_or_else(|| Error::invalid(format!("--add-host {s}"), "expected NAME:IP"))?;
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| {
            Error::invalid(
                format!("--add-host {s}"),
                format!("{ip:?} is not an IP address"),
            )
        })?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::invalid(
            format!("--add-host {s}"),
            format!("{name:?} is not a host name"),
        ));
    }
    Ok(HostEntry {
        name: name.to_owned(),
        ip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_options() {
        let mut spec = NetworkSpec::default();
        for o in ["isolate", "mtu=1400", "bridge=br9"] {
            apply_network_option(&mut spec, o).unwrap();
        }
        assert!(spec.isolate);
        assert_eq!(
            (spec.mtu, spec.bridge.as_deref()),
            (Some(1400), Some("br9"))
        );
        for (bad, needle) in [
            ("mtu=x", "mtu is a number"),
            ("isolate=maybe", "true or false"),
            ("vlan=3", "known options"),
        ] {
            let e = apply_network_option(&mut spec, bad)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle) && e.contains(bad), "{e}");
        }
    }

    /// A mapping as (hostPort, containerPort, protocol, hostIP).
    fn fields(s: &str) -> (u16, u16, String, String) {
        let p = parse_publish(s).unwrap();
        (p.host_port, p.container_port, p.protocol, p.host_ip)
    }

    #[test]
    fn publish_forms() {
        assert_eq!(fields("8080:80"), (8080, 80, "tcp".into(), String::new()));
        assert_eq!(
            fields("127.0.0.1:53:5353/UDP"),
            (53, 5353, "udp".into(), "127.0.0.1".into())
        );
        let p = parse_publish("[::1]:8443:443/tcp").unwrap();
        assert_eq!(p.host_ip, "::1");
        assert_eq!(parse_publish("80").unwrap().host_port, 80);
        for (bad, why) in [
            ("8080:0", "container port"),
            ("x:80", "host port"),
            ("80/icmp", "protocol"),
            ("1.2.3:80:80", "not an IP"),
            ("::1:80:80", "brackets"),
        ] {
            let e = parse_publish(bad).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("-p {bad}: ")) && e.contains(why),
                "{e}"
            );
        }
    }

    #[test]
    fn network_and_add_host_forms() {
        assert_eq!(NetworkChoice::parse("host").unwrap(), NetworkChoice::Host);
        assert_eq!(
            NetworkChoice::parse("container:hugo").unwrap(),
            NetworkChoice::Container("hugo".into())
        );
        assert_eq!(
            NetworkChoice::parse("a,b").unwrap(),
            NetworkChoice::Networks(vec!["a".into(), "b".into()])
        );
        assert!(NetworkChoice::parse("a,host")
            .unwrap_err()
            .to_string()
            .contains("cannot be combined"));
        let h = parse_add_host("db:fd00::5").unwrap();
        assert_eq!(
            (h.name.as_str(), h.ip.to_string().as_str()),
            ("db", "fd00::5")
        );
        assert!(parse_add_host("db")
            .unwrap_err()
            .to_string()
            .contains("NAME:IP"));
    }
}
