//! `create`: a network as `podman network create` asks for it, completed the way
//! netavark completes it (pure but for the random id and ULA prefix): the bridge name
//! (`podman<N>`, the first free), a free subnet from the pools, gateways, the IPAM driver.

use std::net::{IpAddr, Ipv6Addr};

use ipnetwork::IpNetwork;

use crate::types::{CreateRequest, Network, Subnet};
use crate::Error;

/// The pools containers/common passes by default (used when the request has none).
const DEFAULT_POOL: &str = "10.89.0.0/16";
const DEFAULT_POOL_SIZE: u8 = 24;

/// The completed network; `random` supplies the id and the ULA prefix's bytes.
pub fn create(req: CreateRequest, random: &mut dyn FnMut(&mut [u8])) -> Result<Network, Error> {
    let CreateRequest {
        mut network,
        used,
        options,
    } = req;
    if network.name.is_empty()
        || network.name.contains('/')
        || network.name.starts_with('.')
        || network.name.len() > 253
    {
        return Err(Error::Invalid(format!(
            "network.name: {:?} cannot name a network",
            network.name
        )));
    }
    if used.names.contains_key(&network.name) {
        return Err(Error::Invalid(format!(
            "network.name: a network named {:?} exists",
            network.name
        )));
    }
    if network.driver.is_empty() {
        network.driver = "bridge".into();
    }
    if !matches!(network.driver.as_str(), "bridge" | "macvlan" | "ipvlan") {
        return Err(Error::Unsupported(format!(
            "network.driver: {:?}: podnet's backend creates bridge, macvlan and ipvlan networks",
            network.driver
        )));
    }
    if network.id.is_empty() {
        let mut id = [0u8; 32];
        random(&mut id);
        network.id = id.iter().map(|b| format!("{b:02x}")).collect();
    }
    if network.driver == "macvlan" || network.driver == "ipvlan" {
        return macvlan(network, &used.subnets);
    }
    let iface = match network.network_interface.as_deref() {
        Some(i) if !i.is_empty() => {
            if used.interfaces.iter().any(|u| u == i) {
                return Err(Error::Invalid(format!(
                    "network.network_interface: {i:?} is used by another network"
                )));
            }
            i.to_owned()
        }
        _ => {
            let prefix = options
                .default_interface_name
                .as_deref()
                .unwrap_or("podman");
            (0..)
                .map(|n| format!("{prefix}{n}"))
                .find(|c| !used.interfaces.contains(c))
                .expect("a free name exists")
        }
    };
    netkit_name(&iface)?;
    network.network_interface = Some(iface);

    let mut subnets = network.subnets.take().unwrap_or_default();
    let taken: Vec<IpNetwork> = used.subnets.clone();
    check_overlaps(&subnets, &taken)?;
    if !subnets.iter().any(|s| s.subnet.is_ipv4()) && (subnets.is_empty() || !network.ipv6_enabled)
    {
        let pools: Vec<(IpNetwork, u8)> = if options.subnet_pools.is_empty() {
            vec![(
                DEFAULT_POOL.parse().expect("a valid pool"),
                DEFAULT_POOL_SIZE,
            )]
        } else {
            options
                .subnet_pools
                .iter()
                .map(|p| (p.base, p.size))
                .collect()
        };
        let mut all_taken = taken.clone();
        all_taken.extend(subnets.iter().map(|s| s.subnet));
        let free = pools
            .iter()
            .find_map(|(base, size)| free_in(base, *size, &all_taken))
            .ok_or_else(|| {
                Error::Invalid("network.subnets: every subnet of the pools is used".into())
            })?;
        subnets.push(Subnet {
            subnet: free,
            gateway: None,
            lease_range: None,
        });
    }
    if network.ipv6_enabled && !subnets.iter().any(|s| s.subnet.is_ipv6()) {
        let mut b = [0u8; 7];
        random(&mut b);
        let ula = Ipv6Addr::new(
            0xfd00 | u16::from(b[0]),
            u16::from_be_bytes([b[1], b[2]]),
            u16::from_be_bytes([b[3], b[4]]),
            u16::from_be_bytes([b[5], b[6]]),
            0,
            0,
            0,
            0,
        );
        subnets.push(Subnet {
            subnet: IpNetwork::new(IpAddr::V6(ula), 64).expect("a /64 is valid"),
            gateway: None,
            lease_range: None,
        });
    }
    complete_subnets(&mut subnets, true)?;
    network.ipv6_enabled |= subnets.iter().any(|s| s.subnet.is_ipv6());
    network.subnets = Some(subnets);
    // The network's options are checked as setup checks them.
    let probe = crate::types::PerNetworkOptions {
        aliases: None,
        interface_name: "eth0".into(),
        static_ips: Some(vec![nth(&network.subnets()[0].subnet, 2)]),
        static_mac: None,
        options: None,
    };
    crate::chain::conflist(
        &network,
        crate::chain::Wiring {
            opts: &probe,
            ports: &[],
            dns_servers: &[],
            no_firewall: false,
            dns_port: 53,
        },
    )?;
    let ipam = network.ipam_options.get_or_insert_with(Default::default);
    ipam.entry("driver".into())
        .or_insert_with(|| "host-local".into());
    Ok(network)
}

fn check_overlaps(subnets: &[Subnet], taken: &[IpNetwork]) -> Result<(), Error> {
    for (i, s) in subnets.iter().enumerate() {
        if let Some(t) = taken.iter().find(|t| overlaps(t, &s.subnet)) {
            return Err(Error::Invalid(format!(
                "network.subnets[{i}].subnet: {} overlaps {t}, used by another network",
                s.subnet
            )));
        }
    }
    Ok(())
}

/// No host bits, gateways inside their subnet; a missing gateway is the subnet's first
/// address when `add_gateway`.
fn complete_subnets(subnets: &mut [Subnet], add_gateway: bool) -> Result<(), Error> {
    for (i, s) in subnets.iter_mut().enumerate() {
        let net = IpNetwork::new(s.subnet.network(), s.subnet.prefix()).expect("valid");
        if net != s.subnet {
            return Err(Error::Invalid(format!(
                "network.subnets[{i}].subnet: {} has host bits set (the network is {net})",
                s.subnet
            )));
        }
        match s.gateway {
            Some(gw) if !s.subnet.contains(gw) => {
                return Err(Error::Invalid(format!(
                    "network.subnets[{i}].gateway: {gw} is not in {}",
                    s.subnet
                )))
            }
            Some(_) => {}
            None if add_gateway => s.gateway = Some(nth(&s.subnet, 1)),
            None => {}
        }
    }
    Ok(())
}

/// A macvlan network as netavark completes it: no DNS (netavark has none for
/// macvlan), `host-local` IPAM over the given subnets (gateways added unless internal)
/// or, without subnets, `dhcp`; the parent (`network_interface`, empty for the default
/// route's interface) and the options checked. Whether the parent exists is the
/// caller's check ([`parent_exists`]).
fn macvlan(mut network: Network, taken: &[IpNetwork]) -> Result<Network, Error> {
    if let Some(i) = network
        .network_interface
        .as_deref()
        .filter(|i| !i.is_empty())
    {
        netkit_name(i)?;
    }
    network.dns_enabled = false;
    let mut subnets = network.subnets.take().unwrap_or_default();
    check_overlaps(&subnets, taken)?;
    complete_subnets(&mut subnets, !network.internal)?;
    network.ipv6_enabled |= subnets.iter().any(|s| s.subnet.is_ipv6());
    let ipam = network.ipam_options.get_or_insert_with(Default::default);
    let driver = ipam.get("driver").cloned().unwrap_or_default();
    match (driver.as_str(), subnets.is_empty()) {
        ("", true) => {
            ipam.insert("driver".into(), "dhcp".into());
        }
        ("", false) => {
            ipam.insert("driver".into(), "host-local".into());
        }
        ("host-local", true) => {
            return Err(Error::Invalid(
                "network.subnets: the host-local IPAM driver needs at least one subnet".into(),
            ))
        }
        ("dhcp", false) => {
            return Err(Error::Invalid(
                "network.ipam_options.driver: dhcp takes no subnets".into(),
            ))
        }
        ("host-local" | "dhcp" | "none", _) => {}
        (d, _) => {
            return Err(Error::Invalid(format!(
                "network.ipam_options.driver: {d:?} is not host-local, dhcp or none"
            )))
        }
    }
    network.subnets = Some(subnets);
    for (key, value) in network.options.iter().flatten() {
        match key.as_str() {
            "mode" if !value.is_empty() => {
                crate::chain::check_mode(&network.driver, value, "network.options.mode")?
            }
            "mtu" | "metric" if !value.is_empty() && value.parse::<u32>().is_err() => {
                return Err(Error::Invalid(format!(
                    "network.options.{key}: {value:?} is not a number"
                )))
            }
            "bclim" if network.driver == "macvlan" && value.parse::<i32>().is_err() => {
                return Err(Error::Invalid(format!(
                    "network.options.bclim: {value:?} is not a number"
                )))
            }
            "mode" | "mtu" | "metric" | "no_default_route" => {}
            "bclim" if network.driver == "macvlan" => {}
            _ => {
                return Err(Error::Invalid(format!(
                    "network.options: unknown {} option {key:?}",
                    network.driver
                )))
            }
        }
    }
    Ok(network)
}

/// `network_interface` names a link of the calling namespace (or is unset).
pub fn parent_exists(network: &Network) -> Result<(), Error> {
    let Some(parent) = network
        .network_interface
        .as_deref()
        .filter(|i| !i.is_empty())
    else {
        return Ok(());
    };
    let found = netkit::block_on(async { netkit::Netlink::open_current()?.link_get(parent).await })
        .map_err(|e| Error::Io(format!("network.network_interface: {e}")))?;
    match found {
        Some(_) => Ok(()),
        None => Err(Error::Invalid(format!(
            "network.network_interface: parent interface {parent:?} does not exist"
        ))),
    }
}

fn netkit_name(name: &str) -> Result<(), Error> {
    cni::validate::interface_name(name)
        .map_err(|e| Error::Invalid(format!("network.network_interface: {}", e.msg)))
}

fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    a.contains(b.network()) || b.contains(a.network())
}

/// The first `/size` of `base` that overlaps nothing taken.
fn free_in(base: &IpNetwork, size: u8, taken: &[IpNetwork]) -> Option<IpNetwork> {
    let IpNetwork::V4(b) = base else { return None };
    if size < b.prefix() || size > 30 {
        return None;
    }
    let start = u32::from(b.network());
    let step = 1u64 << (32 - size);
    let count = 1u64 << (size - b.prefix());
    (0..count).find_map(|k| {
        let addr = std::net::Ipv4Addr::from((u64::from(start) + k * step) as u32);
        let cand = IpNetwork::new(IpAddr::V4(addr), size).ok()?;
        (!taken.iter().any(|t| overlaps(t, &cand))).then_some(cand)
    })
}

fn nth(net: &IpNetwork, n: u128) -> IpAddr {
    match net.network() {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a) + n as u32).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a) + n).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> CreateRequest {
        serde_json::from_value(v).unwrap()
    }

    fn zero(b: &mut [u8]) {
        b.fill(0xab);
    }

    #[test]
    fn a_bare_network_gets_a_free_subnet_bridge_and_gateway() {
        let n = create(
            req(json!({
                "network": {"name": "blog", "driver": "bridge", "dns_enabled": true},
                "used": {"interfaces": ["podman0", "podman1"], "names": {"podman": "x"}, "subnets": ["10.88.0.0/16", "10.89.0.0/24"]},
                "options": {"subnet_pools": [{"base": "10.89.0.0/16", "size": 24}], "default_interface_name": "podman"}
            })),
            &mut zero,
        )
        .unwrap();
        assert_eq!(n.network_interface.as_deref(), Some("podman2"));
        assert_eq!(n.subnets()[0].subnet.to_string(), "10.89.1.0/24");
        assert_eq!(n.subnets()[0].gateway.unwrap().to_string(), "10.89.1.1");
        assert_eq!(n.id.len(), 64);
        assert_eq!(n.ipam_options.unwrap()["driver"], "host-local");
    }

    #[test]
    fn ipv6_overlaps_and_bad_options_are_named() {
        let n = create(
            req(json!({"network": {"name": "six", "ipv6_enabled": true}})),
            &mut zero,
        )
        .unwrap();
        assert!(n.subnets().iter().any(|s| s.subnet.is_ipv6()));
        assert!(n.subnets().iter().any(|s| s.subnet.is_ipv4()));
        let e = create(
            req(json!({"network": {"name": "x", "subnets": [{"subnet": "10.88.1.0/24"}]}, "used": {"subnets": ["10.88.0.0/16"]}})),
            &mut zero,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network.subnets[0].subnet"), "{e}");
        let e = create(
            req(json!({"network": {"name": "x", "options": {"isolate": "sometimes"}}})),
            &mut zero,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("options.isolate"), "{e}");
        let e = create(
            req(json!({"network": {"name": "x", "driver": "vxlan"}})),
            &mut zero,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("network.driver"), "{e}");
        let iv = create(
            req(json!({"network": {"name": "x", "driver": "ipvlan", "options": {"mode": "l3"}}})),
            &mut zero,
        )
        .unwrap();
        assert_eq!((iv.driver.as_str(), iv.dns_enabled), ("ipvlan", false));
        let e = create(
            req(json!({"network": {"name": "x", "driver": "ipvlan", "options": {"mode": "bridge"}}})),
            &mut zero,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("l2, l3 or l3s"), "{e}");
    }

    #[test]
    fn macvlan_networks_as_netavark_completes_them() {
        let dhcp = create(
            req(json!({"network": {"name": "lan", "driver": "macvlan", "network_interface": "enp1s0", "dns_enabled": true}})),
            &mut zero,
        )
        .unwrap();
        assert_eq!(dhcp.ipam_options.as_ref().unwrap()["driver"], "dhcp");
        assert!(!dhcp.dns_enabled && dhcp.subnets().is_empty());
        assert_eq!(
            dhcp.network_interface.as_deref(),
            Some("enp1s0"),
            "the parent, not a bridge name"
        );
        let lan = create(
            req(json!({"network": {"name": "lan", "driver": "macvlan", "options": {"mode": "private"},
                                   "subnets": [{"subnet": "192.168.5.0/24"}]}})),
            &mut zero,
        )
        .unwrap();
        assert_eq!(lan.ipam_options.as_ref().unwrap()["driver"], "host-local");
        assert_eq!(lan.subnets()[0].gateway.unwrap().to_string(), "192.168.5.1");
        for (v, needle) in [
            (json!({"options": {"mode": "l2"}}), "options.mode"),
            (
                json!({"options": {"isolate": "true"}}),
                "unknown macvlan option",
            ),
            (
                json!({"ipam_options": {"driver": "host-local"}}),
                "needs at least one subnet",
            ),
            (
                json!({"ipam_options": {"driver": "dhcp"}, "subnets": [{"subnet": "10.1.0.0/24"}]}),
                "dhcp takes no subnets",
            ),
            (json!({"subnets": [{"subnet": "10.88.1.0/24"}]}), "overlaps"),
        ] {
            let mut n = json!({"name": "lan", "driver": "macvlan"});
            for (k, x) in v.as_object().unwrap() {
                n[k] = x.clone();
            }
            let e = create(
                req(json!({"network": n, "used": {"subnets": ["10.88.0.0/16"]}})),
                &mut zero,
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains(needle), "{v}: {e}");
        }
    }
}
