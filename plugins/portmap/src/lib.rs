//! The `portmap` plugin: published ports (`runtimeConfig.portMappings`) as DNAT map
//! elements of podnet's `inet podnet` table.
//!
//! Every mapping is one element of a map looked up by a static rule (`pm4any`: `proto .
//! port -> container . port` for mappings without `hostIP`, `pm4`: `hostIP . proto .
//! port -> ...` with it; `pm6*` for IPv6), so ADD and DEL add or delete that container's
//! elements in one transaction, never read the table, and cost the same with 10 or 10,000
//! published ports on the host. Elements are added with `create`: a host port another
//! container holds makes the whole transaction fail, and the error names the holder.
//! With `snat` (default), flows DNATed to the container back out of the interface they
//! came in by (hairpin) or from 127.0.0.0/8 are masqueraded; `masqAll` masquerades every
//! DNATed flow. `route_localnet` is on only while a mapping reached from 127/8 needs it
//! ([`needs_localnet`]); the table's `guard` chain keeps 127/8 from anywhere but `lo`
//! out. UDP conntrack entries of the mapped host ports are flushed on ADD and DEL.

#![forbid(unsafe_code)]

use std::net::IpAddr;

use cni::skel::{CmdArgs, GcArgs, Plugin};
use cni::{CniError, CniResult, ErrorCode};
use ipnetwork::IpNetwork;
use netkit::nft::{self, CommitError, Entry, Record};
use netkit::{conntrack, sysctl, NetNs};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Portmap;

/// The reference's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortmapConf {
    pub name: String,
    /// Masquerade hairpin and localhost flows (default true).
    #[serde(default)]
    pub snat: Option<bool>,
    #[serde(default)]
    pub masq_all: bool,
    /// Newer references' rule backend; see [`netkit::nft::check_backend`].
    #[serde(default)]
    pub backend: Option<String>,
    /// Accepted and validated (0–31); podnet always marks hairpin flows with bit 13 (the
    /// reference's default), as its rules are shared by every network.
    #[serde(default)]
    pub mark_masq_bit: Option<i64>,
    /// Accepted; podnet marks hairpin flows itself and needs no mark chain.
    #[serde(default)]
    pub external_set_mark_chain: Option<String>,
    /// nft match expressions the DNAT rules of this network also require.
    #[serde(default, rename = "conditionsV4")]
    pub conditions_v4: Vec<String>,
    #[serde(default, rename = "conditionsV6")]
    pub conditions_v6: Vec<String>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i64,
    pub container_port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// One validated mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: &'static str,
    pub host_ip: Option<IpAddr>,
}

impl PortmapConf {
    pub fn parse(args: &CmdArgs) -> Result<PortmapConf, CniError> {
        let c: PortmapConf = args.config()?;
        if c.mark_masq_bit.is_some() && c.external_set_mark_chain.is_some() {
            return Err(CniError::invalid_config(
                "markMasqBit and externalSetMarkChain cannot both be set",
            ));
        }
        if let Some(bit) = c.mark_masq_bit {
            if !(0..=31).contains(&bit) {
                return Err(CniError::invalid_config(format!(
                    "markMasqBit: {bit} is not between 0 and 31"
                )));
            }
        }
        netkit::nft::check_backend("backend", c.backend.as_deref())?;
        for (key, conds) in [
            ("conditionsV4", &c.conditions_v4),
            ("conditionsV6", &c.conditions_v6),
        ] {
            // The reference tells iptables conditions by their first character.
            if conds.first().is_some_and(|f| f.starts_with(['-', '!'])) {
                return Err(CniError::new(
                    cni::ErrorCode::UNSUPPORTED_FIELD,
                    format!("{key}: {:?} is in iptables syntax; podnet takes nftables match expressions (as the reference's nftables backend)", conds.join(" ")),
                ));
            }
            if let Some(bad) = conds
                .iter()
                .find(|c| c.contains(['"', ';', '\n', '{', '}']))
            {
                return Err(CniError::invalid_config(format!(
                    "{key}: {bad:?} is not a plain nft match expression"
                )));
            }
        }
        Ok(c)
    }

    pub fn snat(&self) -> bool {
        self.snat.unwrap_or(true)
    }

    /// The mappings, validated, each named by its index when at fault.
    pub fn mappings(&self) -> Result<Vec<Mapping>, CniError> {
        let mut out: Vec<Mapping> = Vec::new();
        for (i, m) in self.runtime_config.port_mappings.iter().enumerate() {
            let field = |f: &str| format!("runtimeConfig.portMappings[{i}].{f}");
            let port = |v: i64, f: &str| {
                u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
                    CniError::invalid_config(format!("{}: {v} is not a port (1-65535)", field(f)))
                })
            };
            let protocol = match m
                .protocol
                .as_deref()
                .unwrap_or("tcp")
                .to_ascii_lowercase()
                .as_str()
            {
                "tcp" | "" => "tcp",
                "udp" => "udp",
                "sctp" => "sctp",
                other => {
                    return Err(CniError::invalid_config(format!(
                        "{}: {other:?} is not tcp, udp or sctp",
                        field("protocol")
                    )))
                }
            };
            let host_ip = match m.host_ip.as_deref().map(str::trim) {
                None | Some("") => None,
                Some(s) => {
                    let ip: IpAddr = s.parse().map_err(|_| {
                        CniError::invalid_config(format!(
                            "{}: {s:?} is not an IP address",
                            field("hostIP")
                        ))
                    })?;
                    // 0.0.0.0 and :: mean "every address", as for the reference.
                    (!ip.is_unspecified()).then_some(ip)
                }
            };
            let mapping = Mapping {
                host_port: port(m.host_port, "hostPort")?,
                container_port: port(m.container_port, "containerPort")?,
                protocol,
                host_ip,
            };
            if let Some(prev) = out.iter().find(|o| {
                o.host_port == mapping.host_port
                    && o.protocol == mapping.protocol
                    && o.host_ip == mapping.host_ip
            }) {
                if prev.container_port != mapping.container_port {
                    return Err(CniError::invalid_config(format!(
                        "{}: host port {}/{} is mapped twice, to {} and {}",
                        field("hostPort"),
                        protocol,
                        mapping.host_port,
                        prev.container_port,
                        mapping.container_port
                    )));
                }
                continue; // an exact duplicate: once is enough
            }
            out.push(mapping);
        }
        Ok(out)
    }

    /// The suffix of this network's conditioned maps and chain (empty without conditions).
    fn cond_suffix(&self) -> String {
        if self.conditions_v4.is_empty() && self.conditions_v6.is_empty() {
            return String::new();
        }
        // FNV-1a over both lists: the same conditions share their maps and chain.
        let mut h: u32 = 0x811c_9dc5;
        for b in self
            .conditions_v4
            .join(" ")
            .bytes()
            .chain([0])
            .chain(self.conditions_v6.join(" ").bytes())
        {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        format!("_{h:08x}")
    }

    /// The conditioned chain's set-up commands (idempotent).
    fn cond_setup(&self, suffix: &str) -> Vec<String> {
        let t = nft::TABLE;
        let chain = format!("{}{}", nft::COND_CHAIN_PREFIX, &suffix[1..]);
        let mut out = nft::portmap_maps(suffix);
        out.push(format!("add chain inet {t} {chain}"));
        out.push(format!("flush chain inet {t} {chain}"));
        let (c4, c6) = (self.conditions_v4.join(" "), self.conditions_v6.join(" "));
        for rule in [
            format!("meta nfproto ipv4 {c4} dnat ip to ip daddr . meta l4proto . th dport map @pm4{suffix}"),
            format!("meta nfproto ipv4 {c4} dnat ip to meta l4proto . th dport map @pm4any{suffix}"),
            format!("meta nfproto ipv6 {c6} dnat ip6 to ip6 daddr . meta l4proto . th dport map @pm6{suffix}"),
            format!("meta nfproto ipv6 {c6} dnat ip6 to meta l4proto . th dport map @pm6any{suffix}"),
        ] {
            out.push(format!("add rule inet {t} {chain} {rule}"));
        }
        out
    }
}

/// The container's first IPv4 and first IPv6 address (with prefix), preferring addresses
/// of interfaces inside the container.
pub fn container_addrs(prev: &CniResult) -> (Option<IpNetwork>, Option<IpNetwork>) {
    let in_sandbox = |i: &cni::IpConfig| {
        i.interface
            .and_then(|n| prev.interfaces.get(n))
            .is_none_or(|iface| iface.sandbox.is_some())
    };
    let pick = |v4: bool| {
        let fam = |i: &&cni::IpConfig| i.address.is_ipv4() == v4;
        prev.ips
            .iter()
            .filter(fam)
            .find(|i| in_sandbox(i))
            .or_else(|| prev.ips.iter().find(fam))
            .map(|i| i.address)
    };
    (pick(true), pick(false))
}

/// The record of one attachment's mappings (pure).
pub fn record(conf: &PortmapConf, args: &CmdArgs, prev: &CniResult) -> Result<Record, CniError> {
    let mappings = conf.mappings()?;
    let mut rec = Record::new("portmap", &conf.name, &args.container_id, &args.ifname);
    if mappings.is_empty() {
        return Ok(rec);
    }
    // No address to forward to (a chain without IPAM): nothing is published, as the
    // reference does.
    let (v4, v6) = container_addrs(prev);
    if v4.is_none() && v6.is_none() {
        return Ok(rec);
    }
    let suffix = conf.cond_suffix();
    if !suffix.is_empty() {
        rec.setup = conf.cond_setup(&suffix);
    }
    for m in &mappings {
        for cont in [v4, v6].into_iter().flatten() {
            let fam = if cont.is_ipv4() { "4" } else { "6" };
            let (set, key, label) = match m.host_ip {
                Some(h) if h.is_ipv4() != cont.is_ipv4() => continue,
                Some(h) => (
                    format!("pm{fam}{suffix}"),
                    format!("{h} . {} . {}", m.protocol, m.host_port),
                    format!("host port {}/{} on {h}", m.protocol, m.host_port),
                ),
                None => (
                    format!("pm{fam}any{suffix}"),
                    format!("{} . {}", m.protocol, m.host_port),
                    format!("host port {}/{} (IPv{fam})", m.protocol, m.host_port),
                ),
            };
            rec.entries.push(
                Entry::inet(set, key)
                    .with_value(format!("{} . {}", cont.ip(), m.container_port))
                    .exclusive(label),
            );
        }
    }
    // Masquerade what comes back to the container through its own published ports. Hash
    // sets only: deleting from a range set costs the kernel far more (docs/benchmarks.md).
    for cont in [v4, v6].into_iter().flatten() {
        let fam = if cont.is_ipv4() { "4" } else { "6" };
        let used = rec
            .entries
            .iter()
            .any(|e| e.set.starts_with(&format!("pm{fam}")));
        if !used {
            continue;
        }
        let ip = cont.ip().to_string();
        if conf.masq_all {
            rec.entries.push(Entry::inet(format!("pmall{fam}"), ip));
        } else if conf.snat() {
            rec.entries.push(Entry::inet(format!("pmlocal{fam}"), ip));
        }
    }
    // Hairpin: a flow DNATed back out of the interface it came in by (a neighbour on the
    // bridge, or the container itself) is marked in `forward`, where the input interface
    // is known, and masqueraded in `postrouting`, so the reply returns through the host.
    // Shared by the interface's containers, removed with the last.
    if rec.entries.iter().any(|e| e.set.starts_with("pmlocal")) {
        if let Some(host_if) = prev.host_interfaces()?.first() {
            let q = format!("\"{}\"", host_if.name);
            rec.group = Some(host_if.name.clone());
            rec.group_entries
                .push(Entry::inet("pmhairpin", format!("{q} . {q}")));
        }
    }
    Ok(rec)
}

/// The UDP host ports of a record.
fn udp_ports(rec: &Record) -> Vec<u16> {
    rec.entries
        .iter()
        .filter(|e| e.set.starts_with("pm4") || e.set.starts_with("pm6"))
        .filter_map(|e| {
            let parts: Vec<&str> = e.key.split(" . ").collect();
            let i = parts.iter().position(|p| *p == "udp")?;
            parts.get(i + 1)?.parse().ok()
        })
        .collect()
}

/// Where portmap keeps, for a host interface whose `route_localnet` it turned on, the
/// value it had (`0`): `<dir>/<interface>`. Interface names come from the journal, and
/// were checked by [`CniResult::host_interfaces`] at ADD.
/// Saved `route_localnet` values, `<run dir>/portmap-localnet`.
pub fn localnet_dir() -> std::path::PathBuf {
    netkit::run_dir().join("portmap-localnet")
}

/// Whether the record's IPv4 mappings are reached from 127.0.0.0/8 and masqueraded there
/// (`snat`): a mapping without `hostIP`, or on a loopback `hostIP`. Only those need
/// `route_localnet` on the host interface, so that a DNATed flow from 127.0.0.1 may
/// leave through it (the guard chain still drops 127/8 arriving from anywhere but `lo`).
pub fn needs_localnet(rec: &Record) -> bool {
    let reached_from_lo = |e: &Entry| {
        e.set.starts_with("pm4any")
            || (e.set.starts_with("pm4")
                && e.key
                    .split(" . ")
                    .next()
                    .and_then(|h| h.parse::<std::net::Ipv4Addr>().ok())
                    .is_some_and(|h| h.is_loopback()))
    };
    rec.group.is_some()
        && rec.entries.iter().any(|e| e.set == "pmlocal4")
        && rec.entries.iter().any(reached_from_lo)
}

/// Makes `route_localnet` on `iface` what its portmap records need: on while one needs
/// it, back to `0` once none does if portmap turned it on (a value an administrator set
/// stays). Under the table lock, after the record was committed or released, so that an
/// ADD and a DEL on one interface never leave it off for a record that needs it.
/// `adding`: the caller just committed a record that needs it (no journal to read).
fn sync_localnet(iface: &str, adding: bool) -> Result<(), CniError> {
    let _lock = nft::lock()?;
    let needed = adding || nft::group("portmap", iface)?.iter().any(needs_localnet);
    let host = NetNs::current()?;
    let key = format!("net/ipv4/conf/{iface}/route_localnet");
    let saved = localnet_dir().join(iface);
    let current = match sysctl::get(&host, &key) {
        Ok(v) => v,
        // The interface is gone (its bridge deleted): nothing to set or give back.
        Err(netkit::Error::Sysctl { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            let _ = std::fs::remove_file(&saved);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let io =
        |what: &str, e: std::io::Error| CniError::io(format!("{what} {}: {e}", saved.display()));
    if needed && current == "0" {
        std::fs::create_dir_all(localnet_dir())
            .and_then(|()| std::fs::write(&saved, "0\n"))
            .map_err(|e| io("writing", e))?;
        sysctl::set(&host, &key, "1")?;
    } else if !needed && saved.exists() {
        sysctl::set(&host, &key, "0")?;
        std::fs::remove_file(&saved).map_err(|e| io("removing", e))?;
    }
    Ok(())
}

/// What follows a record's release (DEL, GC, a failed ADD): its UDP conntrack entries
/// flushed and its interface's `route_localnet` given back when no record needs it.
fn after_release(gone: &nft::Released) -> Result<(), CniError> {
    let mut failures = Vec::new();
    if let (true, Some(iface)) = (needs_localnet(&gone.record), &gone.record.group) {
        failures.extend(sync_localnet(iface, false).err());
    }
    failures.extend(
        conntrack::flush_udp(&udp_ports(&gone.record))
            .err()
            .map(CniError::from),
    );
    CniError::join(failures)
}

fn conflict_error(e: CommitError) -> CniError {
    match e {
        CommitError::Conflict(c) => CniError::new(
            ErrorCode::PORT_IN_USE,
            format!(
                "{} is already published by container {} (network {}, interface {})",
                c.what, c.holder_id, c.holder_network, c.holder_ifname
            ),
        ),
        other => other.into(),
    }
}

impl Plugin for Portmap {
    fn about(&self) -> &'static str {
        concat!("podnet portmap plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let prev = args.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "portmap must be called as a chained plugin: prevResult is missing",
            )
        })?;
        let conf = PortmapConf::parse(args)?;
        let rec = record(&conf, args, &prev)?;
        if rec.entries.is_empty() {
            return Ok(prev);
        }
        let suffix = conf.cond_suffix();
        let new_cond_chain = !suffix.is_empty()
            && !nft::chain_exists(&format!("{}{}", nft::COND_CHAIN_PREFIX, &suffix[1..]))?;
        nft::commit(&rec).map_err(conflict_error)?;
        let finish = || -> Result<(), CniError> {
            if new_cond_chain {
                let chain = format!("{}{}", nft::COND_CHAIN_PREFIX, &suffix[1..]);
                let _lock = nft::lock()?;
                nft::ensure_cond_jumps(&[&chain])?;
            }
            if let (true, Some(iface)) = (needs_localnet(&rec), &rec.group) {
                sync_localnet(iface, true)?;
            }
            conntrack::flush_udp(&udp_ports(&rec))?;
            Ok(())
        };
        if let Err(e) = finish() {
            if let Ok(Some(gone)) = nft::release("portmap", &args.container_id, &args.ifname) {
                let _ = after_release(&gone);
            }
            return Err(e);
        }
        Ok(prev)
    }

    /// From the container id alone: no netns, no prevResult, any network name.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        match nft::release("portmap", &args.container_id, &args.ifname)? {
            Some(gone) => after_release(&gone),
            None => Ok(()),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let conf = PortmapConf::parse(args)?;
        let want = record(&conf, args, prev)?;
        if want.entries.is_empty() {
            return Ok(());
        }
        let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
        let have = nft::find("portmap", &args.container_id, &args.ifname)?
            .ok_or_else(|| failed("no published ports are recorded for this container".into()))?;
        if let Some(missing) = want.entries.iter().find(|e| {
            !have
                .entries
                .iter()
                .any(|h| h.set == e.set && h.key == e.key && h.value == e.value)
        }) {
            return Err(failed(format!(
                "{} is not published (want {} -> {})",
                missing.label.as_deref().unwrap_or(&missing.key),
                missing.key,
                missing.value.as_deref().unwrap_or_default()
            )));
        }
        nft::verify(&have).map_err(failed)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf: PortmapConf = cni::config::decode("network config", &args.stdin)?;
        let gone = nft::retain_attachments(&conf.name, &args.valid_attachments)?;
        CniError::join(
            gone.iter()
                .filter(|g| g.record.owner == "portmap")
                .filter_map(|g| after_release(g).err())
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(conf: serde_json::Value) -> CmdArgs {
        CmdArgs::new("c1", "eth0", &serde_json::to_vec(&conf).unwrap()).unwrap()
    }

    fn prev() -> CniResult {
        serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.88.0.5/16", "interface": 1}, {"address": "fd00::5/64", "interface": 1}]
        }))
        .unwrap()
    }

    fn conf(extra: serde_json::Value) -> serde_json::Value {
        let mut c = json!({"cniVersion": "1.0.0", "name": "podman", "type": "portmap"});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    }

    #[test]
    fn go_cni_spellings_and_nulls() {
        // containerd's go-cni: capability structs without JSON names, HostIP empty.
        let a = args(conf(
            json!({"snat": null, "runtimeConfig": {"portMappings": [
            {"HostPort": 18080, "ContainerPort": 8080, "Protocol": "tcp", "HostIP": ""},
            {"HOSTPORT": 18081, "containerport": 81, "Protocol": "UDP", "HostIP": "127.0.0.1"}]}}),
        ));
        let c = PortmapConf::parse(&a).unwrap();
        assert!(c.snat(), "null is the default");
        let m = c.mappings().unwrap();
        assert_eq!(
            (
                m[0].host_port,
                m[0].container_port,
                m[0].protocol,
                m[0].host_ip
            ),
            (18080, 8080, "tcp", None)
        );
        assert_eq!((m[1].host_port, m[1].protocol), (18081, "udp"));
        assert_eq!(m[1].host_ip, Some("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn route_localnet_only_for_mappings_reached_from_loopback() {
        let needs = |ports: serde_json::Value, extra: serde_json::Value| {
            let mut c = conf(extra);
            c["runtimeConfig"] = json!({ "portMappings": ports });
            let a = args(c);
            needs_localnet(&record(&PortmapConf::parse(&a).unwrap(), &a, &prev()).unwrap())
        };
        let p = |host_ip: Option<&str>| {
            let mut m = json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp"});
            if let Some(h) = host_ip {
                m["hostIP"] = json!(h);
            }
            json!([m])
        };
        assert!(needs(p(None), json!({})), "every address: localhost too");
        assert!(needs(p(Some("127.0.0.1")), json!({})));
        assert!(needs(p(Some("127.0.0.53")), json!({})));
        assert!(!needs(p(Some("192.0.2.254")), json!({})));
        assert!(
            !needs(p(Some("::1")), json!({})),
            "IPv6 has no route_localnet"
        );
        assert!(
            !needs(p(None), json!({"snat": false})),
            "not masqueraded: no reply"
        );
    }

    #[test]
    fn mappings_become_map_elements() {
        let a = args(conf(json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "UDP", "hostIP": "192.0.2.1"},
            {"hostPort": 8080, "containerPort": 80}
        ]}})));
        let c = PortmapConf::parse(&a).unwrap();
        let r = record(&c, &a, &prev()).unwrap();
        let keys: Vec<(String, String, Option<String>)> = r
            .entries
            .iter()
            .map(|e| (e.set.clone(), e.key.clone(), e.value.clone()))
            .collect();
        assert_eq!(
            keys,
            [
                (
                    "pm4any".into(),
                    "tcp . 8080".into(),
                    Some("10.88.0.5 . 80".into())
                ),
                (
                    "pm6any".into(),
                    "tcp . 8080".into(),
                    Some("fd00::5 . 80".into())
                ),
                (
                    "pm4".into(),
                    "192.0.2.1 . udp . 5353".into(),
                    Some("10.88.0.5 . 53".into())
                ),
                ("pmlocal4".into(), "10.88.0.5".into(), None),
                ("pmlocal6".into(), "fd00::5".into(), None),
            ]
        );
        assert!(r.entries[0].exclusive);
        assert_eq!(r.group.as_deref(), Some("cni0"));
        assert_eq!(r.group_entries[0].key, "\"cni0\" . \"cni0\"");
        assert_eq!(udp_ports(&r), [5353]);
    }

    #[test]
    fn masq_all_and_no_snat() {
        let a = args(conf(
            json!({"masqAll": true, "runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80, "hostIP": "0.0.0.0"}]}}),
        ));
        let r = record(&PortmapConf::parse(&a).unwrap(), &a, &prev()).unwrap();
        assert!(r
            .entries
            .iter()
            .any(|e| e.set == "pmall4" && e.key == "10.88.0.5"));
        assert!(
            r.entries.iter().any(|e| e.set == "pm4any"),
            "0.0.0.0 means any"
        );
        let a = args(conf(
            json!({"snat": false, "runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80}]}}),
        ));
        let r = record(&PortmapConf::parse(&a).unwrap(), &a, &prev()).unwrap();
        assert!(!r
            .entries
            .iter()
            .any(|e| e.set.starts_with("pmlocal") || e.set.starts_with("pmall")));
        assert!(r.group_entries.is_empty());
    }

    #[test]
    fn bad_input_names_the_field() {
        for (pm, field) in [
            (
                json!({"hostPort": 0, "containerPort": 80}),
                "runtimeConfig.portMappings[0].hostPort",
            ),
            (
                json!({"hostPort": 80, "containerPort": 70000}),
                "runtimeConfig.portMappings[0].containerPort",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "protocol": "icmp"}),
                "runtimeConfig.portMappings[0].protocol",
            ),
            (
                json!({"hostPort": 80, "containerPort": 80, "hostIP": "nope"}),
                "runtimeConfig.portMappings[0].hostIP",
            ),
        ] {
            let a = args(conf(json!({"runtimeConfig": {"portMappings": [pm]}})));
            let e = PortmapConf::parse(&a).unwrap().mappings().unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains(field), "{}", e.msg);
        }
        let a = args(conf(json!({"markMasqBit": 40})));
        assert!(PortmapConf::parse(&a)
            .unwrap_err()
            .msg
            .contains("markMasqBit"));
        let a = args(conf(
            json!({"markMasqBit": 1, "externalSetMarkChain": "KUBE-MARK-MASQ"}),
        ));
        assert!(PortmapConf::parse(&a).is_err());
        let a = args(conf(json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 80, "containerPort": 80}, {"hostPort": 80, "containerPort": 81}]}})));
        assert!(PortmapConf::parse(&a)
            .unwrap()
            .mappings()
            .unwrap_err()
            .msg
            .contains("mapped twice"));
    }

    #[test]
    fn no_address_publishes_nothing() {
        let a = args(conf(json!({"runtimeConfig": {"portMappings": [
            {"hostPort": 8080, "containerPort": 80}]}})));
        let c = PortmapConf::parse(&a).unwrap();
        let mut p = prev();
        p.ips.clear();
        assert!(record(&c, &a, &p).unwrap().entries.is_empty());
    }

    #[test]
    fn newer_reference_keys_honoured_or_refused() {
        for ok in ["iptables", "nftables"] {
            assert!(PortmapConf::parse(&args(conf(json!({"backend": ok})))).is_ok());
        }
        let e = PortmapConf::parse(&args(conf(json!({"backend": "ebpf"})))).unwrap_err();
        assert!(e.msg.starts_with("backend:"), "{}", e.msg);
        for iptables in [json!(["-d", "192.0.2.1"]), json!(["!", "-s", "10.0.0.0/8"])] {
            let e = PortmapConf::parse(&args(conf(json!({"conditionsV4": iptables})))).unwrap_err();
            assert_eq!(e.code, ErrorCode::UNSUPPORTED_FIELD);
            assert!(
                e.msg.contains("conditionsV4") && e.msg.contains("iptables syntax"),
                "{}",
                e.msg
            );
        }
    }

    #[test]
    fn conditions_get_their_own_maps() {
        let a = args(conf(json!({"conditionsV4": ["ip saddr 192.0.2.0/24"],
            "runtimeConfig": {"portMappings": [{"hostPort": 80, "containerPort": 80}]}})));
        let c = PortmapConf::parse(&a).unwrap();
        let r = record(&c, &a, &prev()).unwrap();
        let suffix = c.cond_suffix();
        assert_eq!(suffix.len(), 9);
        assert_eq!(r.entries[0].set, format!("pm4any{suffix}"));
        assert!(r
            .setup
            .iter()
            .any(|l| l.contains("ip saddr 192.0.2.0/24 dnat ip to")));
        let bad = args(conf(
            json!({"conditionsV4": ["ip saddr 1.2.3.4; flush ruleset"]}),
        ));
        assert!(PortmapConf::parse(&bad)
            .unwrap_err()
            .msg
            .contains("conditionsV4"));
    }
}
