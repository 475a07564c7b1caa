//! Networks are conflists, one file `<cni_config_dir>/<name>.conflist` each, holding the
//! chain Podman 4's CNI backend generates: `bridge` (+ `host-local`), `portmap`,
//! `firewall`, `tuning` and, unless DNS is off, `dnsname`. Podman reads podnet's files and
//! podnet reads Podman's. [`conflist`] is pure; [`create`], [`remove`] and [`find`] are the
//! I/O.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::runtime::discovery::{self, DiscoveryError};
use cni::NetConfList;
use ipnetwork::IpNetwork;
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::{Config, DEFAULT_NETWORK};
use crate::error::{Error, Result};
use crate::state::{validate_name, write_atomic};

/// The version Podman 4's CNI backend writes.
pub const CNI_VERSION: &str = "0.4.0";
/// dnsname's domain in Podman's conflists.
pub const DNS_DOMAIN: &str = "dns.podman";
const BRIDGE_PREFIX: &str = "cni-podman";

/// `podnet network create`, as asked.
#[derive(Debug, Clone, Default)]
pub struct NetworkSpec {
    pub name: String,
    /// Empty: the first free 10.89.N.0/24 (and a ULA /64 with `ipv6`).
    pub subnets: Vec<IpNetwork>,
    /// One per subnet, in order; missing ones are the subnet's first address.
    pub gateways: Vec<IpAddr>,
    /// Allocation ranges, each inside one of the subnets.
    pub ip_ranges: Vec<IpNetwork>,
    pub ipv6: bool,
    pub internal: bool,
    pub disable_dns: bool,
    /// `-o isolate=true`: firewall `ingressPolicy: same-bridge`.
    pub isolate: bool,
    /// `-o mtu=N`.
    pub mtu: Option<u32>,
    /// Default: the first free `cni-podmanN`.
    pub bridge: Option<String>,
    /// `-d`: [`BRIDGE`] (also when empty), [`MACVLAN`] or [`IPVLAN`].
    pub driver: String,
    /// `-o parent=IF` (macvlan, ipvlan): the parent; none: the default route's interface.
    pub parent: Option<String>,
    /// `-o mode=M`: macvlan's `bridge`, `private`, `vepa`, `passthru`, `source`;
    /// ipvlan's `l2`, `l3`, `l3s`.
    pub mode: Option<String>,
    /// `--ipam-driver`: [`HOST_LOCAL`] or [`DHCP`]; `None`: host-local, except for a
    /// macvlan network without subnets (DHCP), as Podman 4.3.
    pub ipam_driver: Option<String>,
}

pub const HOST_LOCAL: &str = "host-local";
pub const DHCP: &str = "dhcp";

pub const BRIDGE: &str = "bridge";
pub const MACVLAN: &str = "macvlan";
pub const IPVLAN: &str = "ipvlan";

impl NetworkSpec {
    /// A network whose containers get a link made on a parent: macvlan or ipvlan.
    pub fn is_macvlan(&self) -> bool {
        self.driver == MACVLAN || self.driver == IPVLAN
    }

    /// Whether the addresses come from DHCP: asked for, or a macvlan without subnets.
    pub fn is_dhcp(&self) -> bool {
        match self.ipam_driver.as_deref() {
            Some(d) => d == DHCP,
            None => self.is_macvlan() && self.subnets.is_empty(),
        }
    }
}

/// What `network ls` and `inspect` show, read back from a conflist (podnet's or anyone's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetworkInfo {
    pub name: String,
    pub file: PathBuf,
    pub driver: String,
    pub bridge: Option<String>,
    pub subnets: Vec<Subnet>,
    pub internal: bool,
    pub dns_enabled: bool,
    pub dns_domain: Option<String>,
    pub plugins: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Subnet {
    pub subnet: IpNetwork,
    pub gateway: Option<IpAddr>,
}

/// host-local over the spec's subnets, as Podman 4.3 writes it: a gateway per range and
/// default routes unless internal.
fn host_local(spec: &NetworkSpec) -> Value {
    let ranges: Vec<Value> = spec
        .subnets
        .iter()
        .enumerate()
        .map(|(i, net)| {
            let mut r = json!({ "subnet": net.to_string() });
            if !spec.internal {
                r["gateway"] = json!(gateway_of(spec, i).to_string());
            }
            if let Some(range) = spec.ip_ranges.iter().find(|r| net.contains(r.ip())) {
                r["rangeStart"] = json!(range.network().to_string());
                r["rangeEnd"] = json!(last_host(range).to_string());
            }
            json!([r])
        })
        .collect();
    let mut ipam = json!({ "type": "host-local", "ranges": ranges });
    if !spec.internal {
        let mut routes = Vec::new();
        if spec.subnets.iter().any(IpNetwork::is_ipv4) {
            routes.push(json!({ "dst": "0.0.0.0/0" }));
        }
        if spec.subnets.iter().any(IpNetwork::is_ipv6) {
            routes.push(json!({ "dst": "::/0" }));
        }
        ipam["routes"] = json!(routes);
    }
    ipam
}

/// The conflist for `spec` with subnets, gateways and bridge already chosen.
pub fn conflist(spec: &NetworkSpec, bridge: &str) -> Value {
    if spec.is_macvlan() {
        return macvlan_conflist(spec);
    }
    let mut bridge_plugin = json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": !spec.internal,
        "ipMasq": !spec.internal,
        "hairpinMode": true,
    });
    if let Some(mtu) = spec.mtu {
        bridge_plugin["mtu"] = json!(mtu);
    }
    if spec.is_dhcp() {
        bridge_plugin["ipam"] = json!({ "type": DHCP });
    } else {
        bridge_plugin["ipam"] = host_local(spec);
        // Podman 4.3 passes `--ip` as runtimeConfig.ips.
        bridge_plugin["capabilities"] = json!({ "ips": true });
    }
    let mut firewall = json!({ "type": "firewall", "backend": "" });
    if spec.isolate {
        firewall["ingressPolicy"] = json!("same-bridge");
    }
    let mut plugins = vec![
        bridge_plugin,
        json!({ "type": "portmap", "capabilities": { "portMappings": true } }),
        firewall,
        json!({ "type": "tuning" }),
    ];
    if !spec.disable_dns {
        plugins.push(json!({
            "type": "dnsname",
            "domainName": DNS_DOMAIN,
            "capabilities": { "aliases": true },
        }));
    }
    json!({ "cniVersion": CNI_VERSION, "name": spec.name, "plugins": plugins })
}

/// Podman 4.3's macvlan network: the one plugin, `master` empty for the default route's
/// interface, `dhcp` IPAM without subnets, the driver options kept under
/// `args.podman_options` (where Podman reads them back).
fn macvlan_conflist(spec: &NetworkSpec) -> Value {
    let mut plugin = json!({
        "type": spec.driver,
        "master": spec.parent.clone().unwrap_or_default(),
    });
    if spec.is_dhcp() {
        plugin["ipam"] = json!({ "type": DHCP });
    } else {
        plugin["ipam"] = host_local(spec);
    }
    let mut options = serde_json::Map::new();
    if let Some(mtu) = spec.mtu {
        plugin["mtu"] = json!(mtu);
        options.insert("mtu".into(), json!(mtu.to_string()));
    }
    if let Some(mode) = &spec.mode {
        plugin["mode"] = json!(mode);
        options.insert("mode".into(), json!(mode));
    }
    if !spec.subnets.is_empty() {
        plugin["capabilities"] = json!({ "ips": true });
    }
    let mut list = json!({ "cniVersion": CNI_VERSION, "name": spec.name, "plugins": [plugin] });
    if !options.is_empty() {
        list["args"] = json!({ "podman_options": options });
    }
    list
}

fn gateway_of(spec: &NetworkSpec, i: usize) -> IpAddr {
    let net = spec.subnets[i];
    spec.gateways
        .iter()
        .copied()
        .find(|g| net.contains(*g))
        .unwrap_or_else(|| nth_host(&net, 1))
}

fn nth_host(net: &IpNetwork, n: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n as u32).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
    }
}

fn last_host(net: &IpNetwork) -> IpAddr {
    match net {
        IpNetwork::V4(n) if n.prefix() < 31 => IpAddr::V4((u32::from(n.broadcast()) - 1).into()),
        IpNetwork::V4(n) => IpAddr::V4(n.broadcast()),
        IpNetwork::V6(n) => {
            let host_bits = 128 - u32::from(n.prefix());
            let last =
                u128::from(n.network()) | (u128::MAX.checked_shr(128 - host_bits).unwrap_or(0));
            IpAddr::V6(last.into())
        }
    }
}

/// Reads what `ls` and `inspect` show from any conflist.
pub fn info(list: &NetConfList, file: PathBuf) -> NetworkInfo {
    let plugins: Vec<String> = list
        .plugins
        .iter()
        .map(|p| {
            p.get("type")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let main = list.plugins.first();
    let subnets = main
        .and_then(|p| p.get("ipam"))
        .map(ipam_subnets)
        .unwrap_or_default();
    let dns = list
        .plugins
        .iter()
        .find(|p| p.get("type").and_then(Value::as_str) == Some("dnsname"));
    NetworkInfo {
        name: list.name.clone(),
        file,
        driver: plugins.first().cloned().unwrap_or_default(),
        bridge: main
            .and_then(|p| p.get("bridge"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        internal: main.is_some_and(|p| match p.get("type").and_then(Value::as_str) {
            Some(BRIDGE) => p.get("isGateway") != Some(&Value::Bool(true)),
            // Other drivers: internal when IPAM gives no route out (dhcp always may).
            _ => p.get("ipam").is_some_and(|i| {
                i.get("type").and_then(Value::as_str) == Some("host-local")
                    && i.get("routes").is_none()
            }),
        }),
        dns_enabled: dns.is_some(),
        dns_domain: dns.map(|p| {
            p.get("domainName")
                .and_then(Value::as_str)
                .unwrap_or(DNS_DOMAIN)
                .to_owned()
        }),
        subnets,
        plugins,
    }
}

fn ipam_subnets(ipam: &Value) -> Vec<Subnet> {
    let parse = |r: &Value| {
        let subnet = r.get("subnet")?.as_str()?.parse().ok()?;
        let gateway = r
            .get("gateway")
            .and_then(Value::as_str)
            .and_then(|g| g.parse().ok());
        Some(Subnet { subnet, gateway })
    };
    match ipam.get("ranges").and_then(Value::as_array) {
        Some(sets) => sets
            .iter()
            .filter_map(Value::as_array)
            .flatten()
            .filter_map(parse)
            .collect(),
        None => parse(ipam).into_iter().collect(),
    }
}

/// Every readable network of the config directory, the default one included.
pub fn list(config: &Config) -> Result<Vec<NetworkInfo>> {
    ensure_default(config)?;
    Ok(discovery::config_files(&config.cni_config_dir)
        .into_iter()
        .filter_map(|f| match discovery::load(&f)? {
            Ok(list) => Some(info(&list, f)),
            Err(_) => None,
        })
        .collect())
}

/// The network `name` (the default network is created on first use).
pub fn find(config: &Config, name: &str) -> Result<(NetConfList, NetworkInfo)> {
    if name == DEFAULT_NETWORK {
        ensure_default(config)?;
    }
    let (list, file) =
        discovery::find_network(&config.cni_config_dir, name).map_err(|e| match e {
            DiscoveryError::NotFound { .. } => Error::NotFound {
                kind: "network",
                name: name.to_owned(),
            },
            e @ DiscoveryError::Invalid { .. } => {
                Error::state(format!("network {name}"), e.to_string())
            }
        })?;
    let info = info(&list, file);
    Ok((list, info))
}

/// Writes Podman's default network (`podman`, cni-podman0, 10.88.0.0/16) when no
/// config names it. Unlike Podman's, it has DNS on: names are why podnet exists.
pub fn ensure_default(config: &Config) -> Result<()> {
    if discovery::find_network(&config.cni_config_dir, DEFAULT_NETWORK).is_ok() {
        return Ok(());
    }
    let spec = NetworkSpec {
        name: DEFAULT_NETWORK.into(),
        subnets: vec!["10.88.0.0/16".parse().expect("a valid subnet")],
        bridge: Some(format!("{BRIDGE_PREFIX}0")),
        ..NetworkSpec::default()
    };
    write(config, &spec, &format!("{BRIDGE_PREFIX}0")).map(drop)
}

/// `network create`: validates, picks what was left open, writes the conflist.
pub fn create(config: &Config, mut spec: NetworkSpec) -> Result<NetworkInfo> {
    validate_name("network name", &spec.name)?;
    let existing = list(config)?;
    if existing.iter().any(|n| n.name == spec.name) {
        return Err(Error::Exists {
            kind: "network",
            name: spec.name.clone(),
            id: format!(
                "{}",
                config
                    .cni_config_dir
                    .join(format!("{}.conflist", spec.name))
                    .display()
            ),
        });
    }
    let taken: Vec<IpNetwork> = existing
        .iter()
        .flat_map(|n| n.subnets.iter().map(|s| s.subnet))
        .collect();
    check_subnets(&spec, &existing)?;
    check_ipam_driver(&spec)?;
    if spec.is_macvlan() {
        check_macvlan(&spec)?;
        // As Podman 4.3: no name service on a macvlan network (no bridge to serve on),
        // and without subnets the addresses come from the LAN's DHCP server.
        spec.disable_dns = true;
        return write(config, &spec, "");
    }
    if !spec.driver.is_empty() && spec.driver != BRIDGE {
        return Err(Error::invalid(
            "--driver",
            format!(
                "{:?}: known drivers are bridge, macvlan and ipvlan",
                spec.driver
            ),
        ));
    }
    if let Some(o) = [
        ("parent", spec.parent.is_some()),
        ("mode", spec.mode.is_some()),
    ]
    .iter()
    .find(|(_, set)| *set)
    {
        return Err(Error::invalid(
            format!("-o {}", o.0),
            "only for -d macvlan or -d ipvlan",
        ));
    }
    // As Podman's CNI backend: an internal network has no gateway address on its bridge
    // for a responder to listen on, so DNS is off.
    spec.disable_dns |= spec.internal;
    if spec.is_dhcp() {
        // As Podman 4.3: the addresses come from a DHCP server on the bridge's LAN, and
        // with no subnet of podnet's, no name service.
        spec.disable_dns = true;
        let bridge = choose_bridge(&spec, &existing)?;
        return write(config, &spec, &bridge);
    }
    if spec.subnets.is_empty() {
        spec.subnets.push(free_subnet_v4(&taken)?);
    }
    if spec.ipv6 && !spec.subnets.iter().any(IpNetwork::is_ipv6) {
        spec.subnets.push(ula_subnet()?);
    }
    let bridge = choose_bridge(&spec, &existing)?;
    write(config, &spec, &bridge)
}

/// `-o bridge`, checked, or the first free `cni-podmanN`.
fn choose_bridge(spec: &NetworkSpec, existing: &[NetworkInfo]) -> Result<String> {
    match &spec.bridge {
        Some(b) => {
            cni::validate::interface_name(b).map_err(|e| Error::invalid("-o bridge", e.msg))?;
            Ok(b.clone())
        }
        None => Ok(free_bridge(existing)),
    }
}

fn write(config: &Config, spec: &NetworkSpec, bridge: &str) -> Result<NetworkInfo> {
    let value = conflist(spec, bridge);
    let list = NetConfList::from_bytes(value.to_string().as_bytes())
        .map_err(|e| Error::invalid("network", e.msg))?;
    let dir = &config.cni_config_dir;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let file = dir.join(format!("{}.conflist", spec.name));
    let bytes = serde_json::to_vec_pretty(&value).expect("a conflist serializes");
    write_atomic(&file, &bytes)?;
    Ok(info(&list, file))
}

/// `--ipam-driver` against the subnets, with Podman 4.3's refusals.
fn check_ipam_driver(spec: &NetworkSpec) -> Result<()> {
    match spec.ipam_driver.as_deref() {
        None | Some(HOST_LOCAL) | Some(DHCP) => {}
        Some(other) => {
            return Err(Error::invalid(
                "--ipam-driver",
                format!("{other:?}: host-local or dhcp"),
            ))
        }
    }
    if spec.ipam_driver.as_deref() == Some(DHCP) && !spec.subnets.is_empty() {
        return Err(Error::invalid(
            "--ipam-driver",
            "dhcp ipam driver is set but subnets are given",
        ));
    }
    if spec.ipam_driver.as_deref() == Some(DHCP) && (spec.ipv6 || !spec.ip_ranges.is_empty()) {
        return Err(Error::invalid(
            "--ipam-driver",
            "dhcp ipam driver takes no --ipv6 or --ip-range",
        ));
    }
    if spec.is_macvlan()
        && spec.ipam_driver.as_deref() == Some(HOST_LOCAL)
        && spec.subnets.is_empty()
    {
        return Err(Error::invalid(
            "--ipam-driver",
            "host-local ipam driver set but no subnets are given",
        ));
    }
    Ok(())
}

/// A macvlan or ipvlan network's options: a parent that exists here (the default
/// route's interface when none is given), a known mode, no bridge options.
fn check_macvlan(spec: &NetworkSpec) -> Result<()> {
    let d = &spec.driver;
    if spec.bridge.is_some() || spec.isolate {
        let o = if spec.isolate { "isolate" } else { "bridge" };
        return Err(Error::invalid(
            format!("-o {o}"),
            format!("not an option of -d {d}"),
        ));
    }
    if let Some(mode) = &spec.mode {
        let known = if d == IPVLAN {
            netkit::ipvlan_mode(mode).is_some()
        } else {
            netkit::macvlan_mode(mode).is_some()
        };
        if !known {
            let modes = if d == IPVLAN {
                "l2, l3 or l3s"
            } else {
                "bridge, private, vepa, passthru or source"
            };
            return Err(Error::invalid("-o mode", format!("{mode:?}: {modes}")));
        }
    }
    if spec.subnets.is_empty() && (spec.ipv6 || !spec.ip_ranges.is_empty()) {
        return Err(Error::invalid(
            "--subnet",
            format!("-d {d} without --subnet takes its addresses from DHCP: give --subnet for --ipv6 or --ip-range"),
        ));
    }
    let found = netkit::block_on(async {
        let nl = netkit::Netlink::open_current()?;
        match &spec.parent {
            Some(p) => {
                cni::validate::interface_name(p).map_err(|e| netkit::Error::Invalid {
                    what: "interface name",
                    value: e.msg,
                })?;
                nl.link_get(p).await
            }
            None => nl.default_route_link().await,
        }
    });
    match (found, &spec.parent) {
        (Ok(Some(_)), _) => Ok(()),
        (Ok(None), Some(p)) => Err(Error::invalid(
            "-o parent",
            format!("no interface {p:?} on this host"),
        )),
        (Ok(None), None) => Err(Error::invalid(
            "-o parent",
            "not given, and this host has no default route to take it from",
        )),
        (Err(e), _) => Err(Error::invalid("-o parent", e.to_string())),
    }
}

fn check_subnets(spec: &NetworkSpec, existing: &[NetworkInfo]) -> Result<()> {
    if !spec.ip_ranges.is_empty() && spec.subnets.is_empty() {
        return Err(Error::invalid("--ip-range", "needs --subnet"));
    }
    for net in &spec.subnets {
        if net.network() != net.ip() {
            return Err(Error::invalid(
                "--subnet",
                format!(
                    "{net} has host bits set (did you mean {}/{}?)",
                    net.network(),
                    net.prefix()
                ),
            ));
        }
        if let Some(other) = existing
            .iter()
            .find(|n| n.subnets.iter().any(|s| overlaps(&s.subnet, net)))
        {
            return Err(Error::invalid(
                "--subnet",
                format!("{net} overlaps network {:?}", other.name),
            ));
        }
    }
    for gw in &spec.gateways {
        if !spec.subnets.iter().any(|n| n.contains(*gw)) {
            return Err(Error::invalid(
                "--gateway",
                format!("{gw} is in none of the subnets"),
            ));
        }
    }
    for r in &spec.ip_ranges {
        if !spec
            .subnets
            .iter()
            .any(|n| n.contains(r.ip()) && n.prefix() <= r.prefix())
        {
            return Err(Error::invalid(
                "--ip-range",
                format!("{r} is not inside a --subnet"),
            ));
        }
    }
    Ok(())
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// The first 10.89.N.0/24 that overlaps no network, as Podman picks.
fn free_subnet_v4(taken: &[IpNetwork]) -> Result<IpNetwork> {
    (0..=255u8)
        .map(|n| {
            IpNetwork::V4(ipnetwork::Ipv4Network::new([10, 89, n, 0].into(), 24).expect("a /24"))
        })
        .find(|cand| !taken.iter().any(|t| overlaps(t, cand)))
        .ok_or_else(|| Error::invalid("--subnet", "10.89.0.0/16 is used up; give one"))
}

/// A random unique-local /64 (fdXX:XXXX:XXXX:XXXX::/64).
fn ula_subnet() -> Result<IpNetwork> {
    let id = crate::state::new_id()?;
    let hex = |r: std::ops::Range<usize>| u16::from_str_radix(&id[r], 16).expect("hex digits");
    let addr = std::net::Ipv6Addr::new(
        0xfd00 | (hex(0..2) & 0xff),
        hex(2..6),
        hex(6..10),
        hex(10..14),
        0,
        0,
        0,
        0,
    );
    Ok(IpNetwork::V6(
        ipnetwork::Ipv6Network::new(addr, 64).expect("a /64"),
    ))
}

fn free_bridge(existing: &[NetworkInfo]) -> String {
    (0..)
        .map(|n| format!("{BRIDGE_PREFIX}{n}"))
        .find(|b| !existing.iter().any(|n| n.bridge.as_deref() == Some(b)))
        .expect("an unbounded range has a free name")
}

/// `network rm`: the conflist, the bridge link, host-local's directory. The caller has
/// checked that no container or pod uses the network.
pub fn remove(config: &Config, info: &NetworkInfo) -> Result<()> {
    let mut errors = Vec::new();
    if let Err(e) = std::fs::remove_file(&info.file) {
        errors.push(Error::io(&info.file)(e));
    }
    if let Some(bridge) = &info.bridge {
        if let Err(e) = delete_link(bridge) {
            errors.push(e);
        }
    }
    let leases = config.cni_cache_dir.join("networks").join(&info.name);
    if let Err(e) = std::fs::remove_dir_all(&leases) {
        if e.kind() != std::io::ErrorKind::NotFound {
            errors.push(Error::io(leases)(e));
        }
    }
    Error::collect(errors)
}

fn delete_link(name: &str) -> Result<()> {
    let here = PathBuf::from("/proc/self/ns/net");
    let fail = |source| Error::Netns {
        path: here.clone(),
        source,
    };
    netkit::block_on(async {
        let nl = netkit::Netlink::open_current()?;
        if let Some(link) = nl.link_get(name).await? {
            nl.link_del(link.index).await?;
        }
        Ok(())
    })
    .map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> NetworkSpec {
        NetworkSpec {
            name: "web".into(),
            subnets: vec!["10.89.0.0/24".parse().unwrap()],
            ..NetworkSpec::default()
        }
    }

    #[test]
    fn the_chain_is_podman4s_key_for_key() {
        let fixture: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/podman4-dnsname.conflist"
        ))
        .unwrap();
        assert_eq!(conflist(&web(), "cni-podman1"), fixture);
    }

    #[test]
    fn macvlan_networks_are_podman4s_key_for_key() {
        let fixture = |f: &str| -> Value {
            let path = format!("{}/../tests/fixtures/{f}", env!("CARGO_MANIFEST_DIR"));
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        let lan = NetworkSpec {
            name: "mv".into(),
            driver: MACVLAN.into(),
            parent: Some("vx0".into()),
            mode: Some("private".into()),
            mtu: Some(1400),
            subnets: vec!["192.168.5.0/24".parse().unwrap()],
            disable_dns: true,
            ..NetworkSpec::default()
        };
        assert_eq!(conflist(&lan, ""), fixture("podman4-macvlan.conflist"));
        let dhcp = NetworkSpec {
            name: "mv2".into(),
            driver: MACVLAN.into(),
            disable_dns: true,
            ..NetworkSpec::default()
        };
        assert_eq!(
            conflist(&dhcp, ""),
            fixture("podman4-macvlan-dhcp.conflist")
        );
        let ipvlan = NetworkSpec {
            name: "iv3".into(),
            driver: IPVLAN.into(),
            mode: Some("l2".into()),
            mtu: Some(1400),
            subnets: vec!["10.6.0.0/24".parse().unwrap()],
            disable_dns: true,
            ..NetworkSpec::default()
        };
        assert_eq!(conflist(&ipvlan, ""), fixture("podman4-ipvlan.conflist"));
        let ipvlan_dhcp = NetworkSpec {
            name: "iv2".into(),
            driver: IPVLAN.into(),
            disable_dns: true,
            ..NetworkSpec::default()
        };
        assert_eq!(
            conflist(&ipvlan_dhcp, ""),
            fixture("podman4-ipvlan-dhcp.conflist")
        );
        let i = info(
            &NetConfList::from_bytes(conflist(&ipvlan, "").to_string().as_bytes()).unwrap(),
            "x".into(),
        );
        assert_eq!(
            (i.driver.as_str(), i.bridge.as_deref(), i.dns_enabled),
            ("ipvlan", None, false)
        );
        let bridge_dhcp = NetworkSpec {
            name: "br1".into(),
            ipam_driver: Some(DHCP.into()),
            disable_dns: true,
            ..NetworkSpec::default()
        };
        assert_eq!(
            conflist(&bridge_dhcp, "cni-podman1"),
            fixture("podman4-bridge-dhcp.conflist")
        );
        for (spec, why) in [
            (
                NetworkSpec {
                    subnets: vec!["10.5.0.0/24".parse().unwrap()],
                    ..bridge_dhcp.clone()
                },
                "subnets are given",
            ),
            (
                NetworkSpec {
                    ipam_driver: Some("none".into()),
                    ..bridge_dhcp.clone()
                },
                "host-local or dhcp",
            ),
            (
                NetworkSpec {
                    ipam_driver: Some(HOST_LOCAL.into()),
                    ..dhcp.clone()
                },
                "no subnets are given",
            ),
        ] {
            let e = check_ipam_driver(&spec).unwrap_err().to_string();
            assert!(e.contains("--ipam-driver") && e.contains(why), "{e}");
        }
        let internal = NetworkSpec {
            name: "mv3".into(),
            subnets: vec!["fd10::/64".parse().unwrap()],
            internal: true,
            ..dhcp.clone()
        };
        assert_eq!(
            conflist(&internal, ""),
            fixture("podman4-macvlan-internal.conflist")
        );
        for (spec, internal) in [(&lan, false), (&dhcp, false), (&internal, true)] {
            let v = conflist(spec, "");
            let i = info(
                &NetConfList::from_bytes(v.to_string().as_bytes()).unwrap(),
                "x".into(),
            );
            assert_eq!(
                (
                    i.driver.as_str(),
                    i.bridge.as_deref(),
                    i.internal,
                    i.dns_enabled
                ),
                ("macvlan", None, internal, false)
            );
        }
    }

    #[test]
    fn options_reach_their_plugins() {
        let spec = NetworkSpec {
            internal: true,
            disable_dns: true,
            isolate: true,
            mtu: Some(1400),
            ip_ranges: vec!["10.89.0.128/25".parse().unwrap()],
            subnets: vec![
                "10.89.0.0/24".parse().unwrap(),
                "fd10::/64".parse().unwrap(),
            ],
            ..web()
        };
        let v = conflist(&spec, "br9");
        let bridge = &v["plugins"][0];
        assert_eq!(bridge["isGateway"], false);
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["mtu"], 1400);
        assert!(bridge["ipam"].get("routes").is_none());
        assert_eq!(
            bridge["ipam"]["ranges"][0][0],
            json!({"subnet": "10.89.0.0/24", "rangeStart": "10.89.0.128", "rangeEnd": "10.89.0.254"})
        );
        assert_eq!(
            bridge["ipam"]["ranges"][1][0],
            json!({"subnet": "fd10::/64"})
        );
        assert_eq!(v["plugins"][2]["ingressPolicy"], "same-bridge");
        assert_eq!(v["plugins"].as_array().unwrap().len(), 4, "no dnsname");
        let list = NetConfList::from_bytes(v.to_string().as_bytes()).unwrap();
        let i = info(&list, "x".into());
        assert!(i.internal && !i.dns_enabled);
        assert_eq!(i.bridge.as_deref(), Some("br9"));
        assert_eq!(i.subnets.len(), 2);
    }

    #[test]
    fn free_subnets_and_bridges_skip_the_taken_ones() {
        let taken: Vec<IpNetwork> = vec![
            "10.89.0.0/24".parse().unwrap(),
            "10.89.1.0/25".parse().unwrap(),
        ];
        assert_eq!(free_subnet_v4(&taken).unwrap().to_string(), "10.89.2.0/24");
        let ula = ula_subnet().unwrap();
        assert!(
            ula.to_string().starts_with("fd") && ula.prefix() == 64,
            "{ula}"
        );
        assert_eq!(
            last_host(&"10.0.0.0/24".parse().unwrap()).to_string(),
            "10.0.0.254"
        );
        assert_eq!(
            last_host(&"fd00::/120".parse().unwrap()).to_string(),
            "fd00::ff"
        );
    }
}
