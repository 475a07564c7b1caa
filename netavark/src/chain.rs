//! One network of a setup, as the conflist of podnet's plugins that wires it (pure).
//!
//! Podman 5 has done the IPAM (`static_ips` is always filled), so the chain is
//! `bridge` with `static` IPAM, then `portmap`, `firewall` and — with `dns_enabled` —
//! `dnsname`, the same plugins and nft tables a CNI runtime gets. Network options podnet
//! cannot honour are refused with the option named, never ignored.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{json, Map, Value};

use crate::types::{Network, PerNetworkOptions, PortMapping};
use crate::Error;

/// The CNI version of the chains (1.1.0: route metrics reach the bridge plugin).
pub const CNI_VERSION: &str = "1.1.0";
/// netavark's route metric where the network (`metric`) or the route sets none.
pub const DEFAULT_METRIC: u32 = 100;
/// Podman's DNS domain.
pub const DNS_DOMAIN: &str = "dns.podman";
/// The bridge options netavark knows; each is either honoured or refused by name.
const BRIDGE_OPTIONS: &[&str] = &[
    "mode",
    "mtu",
    "isolate",
    "metric",
    "no_default_route",
    "vrf",
    "vlan",
];
/// The macvlan options netavark knows.
const MACVLAN_OPTIONS: &[&str] = &["mode", "mtu", "metric", "no_default_route", "bclim"];
/// The ipvlan options netavark knows.
const IPVLAN_OPTIONS: &[&str] = &["mode", "mtu", "metric", "no_default_route"];
/// The default route metric on macvlan networks: 100 as on bridges, what netavark 1.14
/// (Podman 5.4's, the recorded contract) uses; netavark 2.0 lowered it to 99.
pub const MACVLAN_METRIC: u32 = DEFAULT_METRIC;

/// What the chain of one network needs besides the network itself.
#[derive(Debug, Clone, Copy)]
pub struct Wiring<'a> {
    pub opts: &'a PerNetworkOptions,
    pub ports: &'a [PortMapping],
    /// The container's own upstream resolvers (`dns_servers`, Podman's `--dns`).
    pub dns_servers: &'a [IpAddr],
    /// `--firewall-driver none`: no masquerade, published ports or firewall rules.
    pub no_firewall: bool,
    /// The port the network's responder listens on (`NETAVARK_DNS_PORT`, default 53).
    pub dns_port: u16,
}

/// The conflist (as JSON) and the capability arguments for one network of a setup.
pub fn conflist(net: &Network, w: Wiring<'_>) -> Result<(Value, Map<String, Value>), Error> {
    match net.driver.as_str() {
        "bridge" => bridge(net, w),
        "macvlan" | "ipvlan" => macvlan(net, w),
        d => Err(Error::Unsupported(format!(
            "{}: driver {d:?}: podnet's backend drives bridge, macvlan and ipvlan networks",
            field(net, "driver"),
        ))),
    }
}

fn field(net: &Network, f: &str) -> String {
    format!("network_info.{}.{f}", net.name)
}

/// Every option is one the driver knows (`known`), and none of `refused` is set.
fn check_options(net: &Network, known: &[&str], refused: &[&str]) -> Result<(), Error> {
    for key in net.options.iter().flat_map(|o| o.keys()) {
        if !known.contains(&key.as_str()) {
            return Err(Error::Invalid(format!(
                "{}: unknown {} option {key:?}",
                field(net, "options"),
                net.driver
            )));
        }
    }
    for key in refused {
        if net.option(key).is_some() {
            return Err(Error::Unsupported(format!(
                "{}: option {key:?} is not supported by podnet's backend yet",
                field(net, "options")
            )));
        }
    }
    Ok(())
}

/// A numeric option (`mtu`, `metric`), empty meaning unset.
fn number_option(net: &Network, key: &str) -> Result<Option<u32>, Error> {
    match net.option(key).filter(|m| !m.is_empty()) {
        None => Ok(None),
        Some(m) => m.parse::<u32>().map(Some).map_err(|_| {
            Error::Invalid(format!(
                "{}: {m:?} is not a number",
                field(net, &format!("options.{key}"))
            ))
        }),
    }
}

/// The static IPAM of a container: its addresses (with gateways unless `internal`), the
/// default routes at `metric` unless internal or `no_default_route`, the network's routes.
fn static_ipam(net: &Network, opts: &PerNetworkOptions, metric: u32) -> Result<Value, Error> {
    let no_default_route = match net.option("no_default_route") {
        None | Some("" | "false" | "0") => false,
        Some("true" | "1") => true,
        Some(v) => {
            return Err(Error::Invalid(format!(
                "{}: {v:?} is not a boolean",
                field(net, "options.no_default_route")
            )))
        }
    };
    let addresses = addresses(net, opts)?;
    let mut routes: Vec<Value> = Vec::new();
    if !net.internal && !no_default_route {
        if addresses.iter().any(|(a, _)| a.is_ipv4()) {
            routes.push(json!({ "dst": "0.0.0.0/0", "priority": metric }));
        }
        if addresses.iter().any(|(a, _)| a.is_ipv6()) {
            routes.push(json!({ "dst": "::/0", "priority": metric }));
        }
    }
    for r in net.routes.iter().flatten() {
        let mut route = json!({ "dst": r.destination.to_string() });
        if let Some(gw) = r.gateway {
            route["gw"] = json!(gw.to_string());
        }
        route["priority"] = json!(r.metric.unwrap_or(DEFAULT_METRIC));
        routes.push(route);
    }
    Ok(json!({
        "type": "static",
        "addresses": addresses.iter().map(|(a, gw)| {
            let mut v = json!({ "address": a.to_string() });
            if let Some(gw) = gw.filter(|_| !net.internal || net.driver == "bridge") {
                v["gateway"] = json!(gw.to_string());
            }
            v
        }).collect::<Vec<_>>(),
        "routes": routes,
    }))
}

/// A macvlan's or ipvlan's mode, refused naming `what` when the driver has no such mode.
pub fn check_mode(driver: &str, mode: &str, what: &str) -> Result<(), Error> {
    let (known, modes) = if driver == "ipvlan" {
        (netkit::ipvlan_mode(mode).is_some(), "l2, l3 or l3s")
    } else {
        (
            netkit::macvlan_mode(mode).is_some(),
            "bridge, private, vepa, passthru or source",
        )
    };
    if known {
        Ok(())
    } else {
        Err(Error::Invalid(format!("{what}: {mode:?} is not {modes}")))
    }
}

/// The container's own MAC (`static_mac`) as the `mac` capability.
fn mac_capability(w: &Wiring<'_>, caps: &mut Map<String, Value>) {
    if let Some(mac) = w.opts.static_mac.as_deref().filter(|m| !m.is_empty()) {
        caps.insert("mac".into(), json!(mac));
    }
}

fn bridge(net: &Network, w: Wiring<'_>) -> Result<(Value, Map<String, Value>), Error> {
    check_options(net, BRIDGE_OPTIONS, &[])?;
    let unmanaged = match net.option("mode") {
        None | Some("" | "managed") => false,
        Some("unmanaged") => true,
        Some(m) => {
            return Err(Error::Invalid(format!(
                "{}: mode {m:?} is neither managed nor unmanaged",
                field(net, "options.mode")
            )))
        }
    };
    let isolate = match net.option("isolate") {
        None | Some("" | "false") => None,
        Some("true") => Some("same-bridge"),
        Some("strict") => Some("isolated"),
        Some(v) => {
            return Err(Error::Invalid(format!(
                "{}: {v:?} is not true, false or strict",
                field(net, "options.isolate")
            )))
        }
    };
    let bridge = net
        .network_interface
        .clone()
        .filter(|b| !b.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{}: missing", field(net, "network_interface"))))?;
    let metric = number_option(net, "metric")?.unwrap_or(DEFAULT_METRIC);
    let ipam = static_ipam(net, w.opts, metric)?;
    let mut bridge_plugin = json!({
        "type": "bridge",
        "bridge": bridge,
        "isGateway": !unmanaged,
        "ipMasq": !net.internal && !w.no_firewall,
        "hairpinMode": true,
        "ipam": ipam,
        "capabilities": { "mac": true },
    });
    if let Some(mtu) = number_option(net, "mtu")? {
        bridge_plugin["mtu"] = json!(mtu);
    }
    // As netavark: VLAN filtering on the bridge, the port's PVID (egress untagged) is
    // the VLAN, VLAN 1 stays on the port.
    match number_option(net, "vlan")? {
        None | Some(0) => {}
        Some(v @ 1..=4094) => {
            bridge_plugin["vlan"] = json!(v);
            bridge_plugin["preserveDefaultVlan"] = json!(true);
        }
        Some(v) => {
            return Err(Error::Invalid(format!(
                "{}: {v} is not in 0..=4094",
                field(net, "options.vlan")
            )))
        }
    }
    // The bridge is made in that VRF (which must exist), as netavark does.
    if let Some(vrf) = net.option("vrf").filter(|v| !v.is_empty()) {
        bridge_plugin["vrf"] = json!(vrf);
    }
    let mut plugins = vec![bridge_plugin];
    let mut caps = Map::new();
    mac_capability(&w, &mut caps);
    if !w.no_firewall {
        if !net.internal {
            plugins.push(json!({ "type": "portmap", "capabilities": { "portMappings": true } }));
            caps.insert("portMappings".into(), port_mappings(w.ports)?);
        }
        let mut fw = json!({ "type": "firewall", "backend": "" });
        if let Some(p) = isolate {
            fw["ingressPolicy"] = json!(p);
        }
        plugins.push(fw);
    }
    if net.dns_enabled {
        let mut dns = json!({
            "type": "dnsname",
            "domainName": DNS_DOMAIN,
            "capabilities": { "aliases": true, "dns": true },
        });
        if let Some(servers) = net.network_dns_servers.as_ref().filter(|s| !s.is_empty()) {
            dns["upstreams"] = json!(servers);
        }
        // Containers ask port 53: dnsname redirects the gateway's port 53 to it.
        if w.dns_port != 53 {
            dns["port"] = json!(w.dns_port);
        }
        plugins.push(dns);
        if !w.dns_servers.is_empty() {
            caps.insert("dns".into(), json!({ "servers": w.dns_servers }));
        }
        let aliases = w.opts.aliases.clone().unwrap_or_default();
        caps.insert("aliases".into(), json!({ net.name.clone(): aliases }));
    }
    let list = json!({ "cniVersion": CNI_VERSION, "name": net.name, "plugins": plugins });
    Ok((list, caps))
}

/// A macvlan network as netavark wires it: the container on the parent's LAN
/// (`network_interface`, empty for the default route's interface) with Podman's
/// addresses, the default route at [`MACVLAN_METRIC`], no NAT, published ports or names (as
/// netavark: port mappings and DNS are bridge features). `dhcp` IPAM leases from the
/// LAN's server through podnet's `dhcp` plugin (netavark's dhcp-proxy is not needed);
/// `none` leaves the link without addresses.
/// An ipvlan network is wired the same way, with ipvlan's modes (`l2` by default) and
/// no MAC of its own (the parent's).
fn macvlan(net: &Network, w: Wiring<'_>) -> Result<(Value, Map<String, Value>), Error> {
    let ipvlan = net.driver == "ipvlan";
    if ipvlan {
        check_options(net, IPVLAN_OPTIONS, &[])?;
    } else {
        check_options(net, MACVLAN_OPTIONS, &["bclim"])?;
    }
    let driver = net
        .ipam_options
        .as_ref()
        .and_then(|o| o.get("driver"))
        .map(String::as_str)
        .unwrap_or("");
    if !matches!(driver, "" | "host-local" | "dhcp" | "none") {
        return Err(Error::Invalid(format!(
            "{}: driver {driver:?} is not host-local, dhcp or none",
            field(net, "ipam_options")
        )));
    }
    let mode = net
        .option("mode")
        .filter(|m| !m.is_empty())
        .unwrap_or(if ipvlan { "l2" } else { "bridge" });
    check_mode(net.driver.as_str(), mode, &field(net, "options.mode"))?;
    let metric = number_option(net, "metric")?.unwrap_or(MACVLAN_METRIC);
    let mut plugin = json!({
        "type": net.driver,
        "master": net.network_interface.clone().unwrap_or_default(),
        "mode": mode,
    });
    if !ipvlan {
        plugin["capabilities"] = json!({ "mac": true });
    }
    match driver {
        // The LAN's DHCP server, through podnet's dhcp plugin and its daemon (started on
        // demand, its socket under podnet's run directory); the routes at the metric.
        "dhcp" => {
            let socket = netkit::run_dir().join("dhcp.sock");
            plugin["ipam"] = json!({
                "type": "dhcp",
                "daemonSocketPath": socket.display().to_string(),
                "priority": metric,
            });
        }
        // No addresses: the link alone (L2).
        "none" => {}
        _ => plugin["ipam"] = static_ipam(net, w.opts, metric)?,
    }
    if let Some(mtu) = number_option(net, "mtu")? {
        plugin["mtu"] = json!(mtu);
    }
    let mut caps = Map::new();
    if !ipvlan {
        mac_capability(&w, &mut caps);
    }
    let list = json!({ "cniVersion": CNI_VERSION, "name": net.name, "plugins": [plugin] });
    Ok((list, caps))
}

/// Each static IP with its subnet's prefix and gateway.
fn addresses(
    net: &Network,
    opts: &PerNetworkOptions,
) -> Result<Vec<(IpNetwork, Option<IpAddr>)>, Error> {
    let ips = opts.static_ips.as_deref().unwrap_or_default();
    if ips.is_empty() {
        return Err(Error::Invalid(format!(
            "networks.{}.static_ips: empty; Podman assigns the addresses (host-local IPAM) before setup",
            net.name
        )));
    }
    ips.iter()
        .map(|ip| {
            let s = net
                .subnets()
                .iter()
                .find(|s| s.subnet.contains(*ip))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "networks.{}.static_ips: {ip} is in no subnet of the network",
                        net.name
                    ))
                })?;
            let a = IpNetwork::new(*ip, s.subnet.prefix()).expect("the subnet's prefix fits");
            Ok((a, s.gateway))
        })
        .collect()
}

/// netavark's port mappings (ranges, protocol lists) as CNI `portMappings`.
fn port_mappings(ports: &[PortMapping]) -> Result<Value, Error> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let n = p.range.max(1);
        if p.host_port.checked_add(n - 1).is_none() || p.container_port.checked_add(n - 1).is_none()
        {
            return Err(Error::Invalid(format!(
                "port_mappings[{i}].range: {n} ports from {} run past 65535",
                p.host_port.max(p.container_port)
            )));
        }
        let protocols = if p.protocol.is_empty() {
            "tcp"
        } else {
            &p.protocol
        };
        for proto in protocols.split(',') {
            if !matches!(proto, "tcp" | "udp" | "sctp") {
                return Err(Error::Invalid(format!(
                    "port_mappings[{i}].protocol: {proto:?} is not tcp, udp or sctp"
                )));
            }
            for k in 0..n {
                let host_port = if p.host_port == 0 { 0 } else { p.host_port + k };
                let mut m = json!({
                    "hostPort": host_port,
                    "containerPort": p.container_port + k,
                    "protocol": proto,
                });
                if !p.host_ip.is_empty() {
                    m["hostIP"] = json!(p.host_ip);
                }
                out.push(m);
            }
        }
    }
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NetworkOptions;

    const HUGO: &str = include_str!("../tests/fixtures/setup-port-mapping.json");

    fn wiring(o: &NetworkOptions) -> (Value, Map<String, Value>) {
        let n = &o.networks[0];
        let net = &o.network_info[&n.name];
        conflist(
            net,
            Wiring {
                opts: &n.opts,
                ports: o.port_mappings.as_deref().unwrap_or_default(),
                dns_servers: &[],
                no_firewall: false,
                dns_port: 53,
            },
        )
        .unwrap()
    }

    #[test]
    fn podmans_setup_becomes_podnets_chain() {
        let o: NetworkOptions = serde_json::from_str(HUGO).unwrap();
        let (list, caps) = wiring(&o);
        let types: Vec<&str> = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap", "firewall", "dnsname"]);
        assert_eq!(list["plugins"][0]["bridge"], "podman1");
        assert_eq!(
            list["plugins"][0]["ipam"]["addresses"],
            json!([{"address": "10.89.0.7/24", "gateway": "10.89.0.1"}])
        );
        assert_eq!(
            caps["portMappings"],
            json!([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}])
        );
        assert_eq!(caps["aliases"], json!({"blog": ["91816bc9b67a", "front"]}));
    }

    #[test]
    fn ranges_protocol_lists_and_bad_options() {
        let mut o: NetworkOptions = serde_json::from_str(HUGO).unwrap();
        o.port_mappings.as_mut().unwrap()[0].range = 3;
        o.port_mappings.as_mut().unwrap()[0].protocol = "tcp,udp".into();
        let (_, caps) = wiring(&o);
        assert_eq!(caps["portMappings"].as_array().unwrap().len(), 6);
        o.port_mappings.as_mut().unwrap()[0].protocol = "icmp".into();
        let net = &o.network_info["blog"];
        let w = Wiring {
            opts: &o.networks[0].opts,
            ports: o.port_mappings.as_deref().unwrap(),
            dns_servers: &[],
            no_firewall: false,
            dns_port: 53,
        };
        let e = conflist(net, w).unwrap_err().to_string();
        assert!(e.contains("port_mappings[0].protocol"), "{e}");
        let mut net = net.clone();
        net.options = Some([("isolate".to_string(), "maybe".to_string())].into());
        let e = conflist(&net, Wiring { ports: &[], ..w })
            .unwrap_err()
            .to_string();
        assert!(e.contains("network_info.blog.options.isolate"), "{e}");
        net.options = Some([("vlan".to_string(), "4095".to_string())].into());
        let e = conflist(&net, Wiring { ports: &[], ..w })
            .unwrap_err()
            .to_string();
        assert!(e.contains("network_info.blog.options.vlan: 4095"), "{e}");
        net.options = Some(
            [("vlan", "5"), ("vrf", "blue")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let (list, _) = conflist(&net, Wiring { ports: &[], ..w }).unwrap();
        let br = &list["plugins"][0];
        assert_eq!(
            (&br["vlan"], &br["preserveDefaultVlan"], &br["vrf"]),
            (&json!(5), &json!(true), &json!("blue")),
            "{list}"
        );
    }

    #[test]
    fn metrics_and_the_containers_own_dns_servers() {
        let o: NetworkOptions = serde_json::from_str(HUGO).unwrap();
        let mut net = o.network_info["blog"].clone();
        let servers: Vec<IpAddr> = vec!["192.0.2.53".parse().unwrap()];
        let w = Wiring {
            opts: &o.networks[0].opts,
            ports: &[],
            dns_servers: &servers,
            no_firewall: false,
            dns_port: 53,
        };
        let (list, caps) = conflist(&net, w).unwrap();
        assert_eq!(
            list["cniVersion"], "1.1.0",
            "route priorities need 1.1.0 results"
        );
        assert_eq!(
            list["plugins"][0]["ipam"]["routes"],
            json!([{"dst": "0.0.0.0/0", "priority": 100}])
        );
        assert_eq!(caps["dns"], json!({"servers": ["192.0.2.53"]}));
        assert_eq!(list["plugins"][3]["capabilities"]["dns"], true);
        net.options = Some([("metric".to_string(), "250".to_string())].into());
        let (list, _) = conflist(&net, w).unwrap();
        assert_eq!(list["plugins"][0]["ipam"]["routes"][0]["priority"], 250);
        net.options = Some([("metric".to_string(), "-1".to_string())].into());
        let e = conflist(&net, w).unwrap_err().to_string();
        assert!(e.contains("network_info.blog.options.metric"), "{e}");
    }

    #[test]
    fn internal_networks_have_no_route_masquerade_or_ports() {
        let o: NetworkOptions = serde_json::from_str(HUGO).unwrap();
        let mut net = o.network_info["blog"].clone();
        net.internal = true;
        let w = Wiring {
            opts: &o.networks[0].opts,
            ports: o.port_mappings.as_deref().unwrap(),
            dns_servers: &[],
            no_firewall: false,
            dns_port: 53,
        };
        let (list, caps) = conflist(&net, w).unwrap();
        assert_eq!(list["plugins"][0]["ipMasq"], false);
        assert_eq!(list["plugins"][0]["ipam"]["routes"], json!([]));
        assert!(!caps.contains_key("portMappings"));
        assert_eq!(
            list["plugins"].as_array().unwrap().len(),
            3,
            "bridge, firewall, dnsname"
        );
    }

    #[test]
    fn macvlan_networks_are_the_macvlan_plugin_alone() {
        let o: NetworkOptions = serde_json::from_str(HUGO).unwrap();
        let mut net = o.network_info["blog"].clone();
        net.driver = "macvlan".into();
        net.network_interface = Some("enp1s0".into());
        net.options = Some([("mode".to_string(), "private".to_string())].into());
        let w = Wiring {
            opts: &o.networks[0].opts,
            ports: o.port_mappings.as_deref().unwrap(),
            dns_servers: &[],
            no_firewall: false,
            dns_port: 53,
        };
        let (list, caps) = conflist(&net, w).unwrap();
        let plugins = list["plugins"].as_array().unwrap();
        assert_eq!(plugins.len(), 1, "no ports, firewall or names: {list}");
        let m = &plugins[0];
        assert_eq!(
            (m["type"].as_str(), m["master"].as_str(), m["mode"].as_str()),
            (Some("macvlan"), Some("enp1s0"), Some("private"))
        );
        assert_eq!(
            m["ipam"]["addresses"],
            json!([{"address": "10.89.0.7/24", "gateway": "10.89.0.1"}])
        );
        assert_eq!(
            m["ipam"]["routes"][0],
            json!({"dst": "0.0.0.0/0", "priority": 100})
        );
        assert!(!caps.contains_key("portMappings") && !caps.contains_key("aliases"));
        // Internal: no gateway, no default route.
        net.internal = true;
        let (list, _) = conflist(&net, w).unwrap();
        assert_eq!(
            list["plugins"][0]["ipam"]["addresses"],
            json!([{"address": "10.89.0.7/24"}])
        );
        assert_eq!(list["plugins"][0]["ipam"]["routes"], json!([]));
        // Refused by name: an unknown mode, bridge options, bclim, DHCP.
        for (key, value, needle) in [
            ("mode", "l2", "options.mode"),
            ("isolate", "true", "unknown macvlan option"),
            ("bclim", "1", "bclim"),
        ] {
            let mut n = net.clone();
            n.options = Some([(key.to_string(), value.to_string())].into());
            let e = conflist(&n, w).unwrap_err().message();
            assert!(e.contains(needle), "{key}: {e}");
        }
        let mut n = net.clone();
        n.ipam_options = Some([("driver".to_string(), "dhcp".to_string())].into());
        let (list, _) = conflist(&n, w).unwrap();
        let ipam = &list["plugins"][0]["ipam"];
        assert_eq!(
            (ipam["type"].as_str(), ipam["priority"].as_u64()),
            (Some("dhcp"), Some(100)),
            "{list}"
        );
        assert!(ipam["daemonSocketPath"]
            .as_str()
            .unwrap()
            .ends_with("/dhcp.sock"));
        n.ipam_options = Some([("driver".to_string(), "none".to_string())].into());
        assert!(conflist(&n, w).unwrap().0["plugins"][0]
            .get("ipam")
            .is_none());
        n.ipam_options = Some([("driver".to_string(), "magic".to_string())].into());
        assert!(conflist(&n, w)
            .unwrap_err()
            .message()
            .contains("ipam_options"));
        let mut n = net.clone();
        n.driver = "ipvlan".into();
        n.options = None;
        let (list, caps) = conflist(&n, w).unwrap();
        let p = &list["plugins"][0];
        assert_eq!(
            (p["type"].as_str(), p["mode"].as_str()),
            (Some("ipvlan"), Some("l2")),
            "{list}"
        );
        assert!(
            p.get("capabilities").is_none() && caps.is_empty(),
            "an ipvlan has no MAC of its own"
        );
        n.options = Some([("mode".to_string(), "bridge".to_string())].into());
        assert!(conflist(&n, w)
            .unwrap_err()
            .message()
            .contains("l2, l3 or l3s"));
        n.options = Some([("bclim".to_string(), "1".to_string())].into());
        assert!(conflist(&n, w).unwrap_err().message().contains("bclim"));
        n.driver = "vxlan".into();
        assert!(conflist(&n, w).unwrap_err().message().contains("driver"));
    }
}
