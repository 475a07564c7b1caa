//! The `static` IPAM plugin: addresses, routes and DNS from the config, no state.
//!
//! Addresses come from `ipam.addresses` plus `CNI_ARGS IP=` (comma separated CIDRs,
//! appended, with `GATEWAY=` setting the gateway of the addresses whose subnet holds
//! it), as the reference does; `args.cni.ips` and then `runtimeConfig.ips` (capability
//! `ips`) replace the list when given.

use std::net::IpAddr;

use cni::skel::{CmdArgs, Plugin};
use cni::{CniError, CniResult, CniVersion, Dns, IpConfig, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Static;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetWire {
    ipam: Option<IpamWire>,
    #[serde(default)]
    args: Option<ArgsWire>,
    #[serde(default)]
    runtime_config: Option<RuntimeWire>,
}

#[derive(Debug, Deserialize)]
struct IpamWire {
    #[serde(default)]
    addresses: Vec<AddressWire>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Debug, Deserialize)]
struct AddressWire {
    address: String,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    gateway: Option<IpAddr>,
}

#[derive(Debug, Deserialize)]
struct ArgsWire {
    cni: Option<IpsWire>,
}

#[derive(Debug, Deserialize)]
struct IpsWire {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct RuntimeWire {
    #[serde(default)]
    ips: Vec<String>,
}

fn cidr(source: &str, s: &str) -> Result<IpNetwork, CniError> {
    s.trim().parse::<IpNetwork>().ok().filter(|_| s.contains('/')).ok_or_else(|| {
        CniError::invalid_config(format!("{source}: invalid CIDR {s:?} (an address with its prefix length, like 10.10.0.5/24)"))
    })
}

/// The addresses, from every source, in the reference's order of precedence.
fn addresses(net: &NetWire, ipam: &IpamWire, args: &CmdArgs) -> Result<Vec<IpConfig>, CniError> {
    let mut out: Vec<IpConfig> = ipam
        .addresses
        .iter()
        .enumerate()
        .map(|(i, a)| {
            Ok(IpConfig {
                interface: None,
                address: cidr(&format!("ipam.addresses[{i}].address"), &a.address)?,
                gateway: a.gateway,
            })
        })
        .collect::<Result<_, CniError>>()?;
    for item in args.args.get("IP").into_iter().flat_map(|v| v.split(',')) {
        out.push(IpConfig {
            interface: None,
            address: cidr("CNI_ARGS IP", item)?,
            gateway: None,
        });
    }
    for gw in args
        .args
        .get("GATEWAY")
        .into_iter()
        .flat_map(|v| v.split(','))
    {
        let gw: IpAddr = gw.trim().parse().map_err(|_| {
            CniError::invalid_config(format!("CNI_ARGS GATEWAY: invalid address {gw:?}"))
        })?;
        for ip in out.iter_mut().filter(|ip| ip.address.contains(gw)) {
            ip.gateway = Some(gw);
        }
    }
    let overrides = [
        (
            "args.cni.ips",
            net.args
                .as_ref()
                .and_then(|a| a.cni.as_ref())
                .map(|c| &c.ips),
        ),
        (
            "runtimeConfig.ips",
            net.runtime_config.as_ref().map(|r| &r.ips),
        ),
    ];
    for (source, list) in overrides {
        if let Some(list) = list.filter(|l| !l.is_empty()) {
            out = list
                .iter()
                .map(|s| {
                    Ok(IpConfig {
                        interface: None,
                        address: cidr(source, s)?,
                        gateway: None,
                    })
                })
                .collect::<Result<_, CniError>>()?;
        }
    }
    Ok(out)
}

impl Static {
    fn result(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        args.args.reject_unknown(&[
            "IP",
            "GATEWAY",
            "K8S_POD_NAME",
            "K8S_POD_NAMESPACE",
            "K8S_POD_INFRA_CONTAINER_ID",
            "K8S_POD_UID",
        ])?;
        let net: NetWire = args.config()?;
        let ipam = net
            .ipam
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("IPAM config missing 'ipam' key"))?;
        let ips = addresses(&net, ipam, args)?;
        if ips.is_empty() {
            return Err(CniError::invalid_config("ipam.addresses: no address given (config, CNI_ARGS IP, args.cni.ips or runtimeConfig.ips)"));
        }
        let v4 = ips.iter().filter(|i| i.address.is_ipv4()).count();
        if (v4 > 1 || ips.len() - v4 > 1) && args.version < CniVersion::V0_3_0 {
            return Err(CniError::incompatible_version(format!(
                "CNI version {} does not support more than 1 address per family",
                args.version
            )));
        }
        let routes = ipam.routes.clone();
        Ok(CniResult {
            ips,
            routes,
            dns: ipam.dns.clone(),
            ..Default::default()
        })
    }
}

impl Plugin for Static {
    fn about(&self) -> &'static str {
        concat!("podnet static IPAM plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        self.result(args)
    }

    /// Nothing was allocated; the config is still validated.
    fn del(&self, _args: &CmdArgs) -> Result<(), CniError> {
        Ok(())
    }

    /// The config must still yield the recorded addresses.
    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let want = self.result(args)?;
        if let Some(prev) = &args.prev_result {
            for ip in &want.ips {
                if !prev.ips.iter().any(|p| p.address == ip.address) {
                    return Err(CniError::new(
                        cni::ErrorCode::CHECK_FAILED,
                        format!("address {} is not in the recorded result", ip.address),
                    ));
                }
            }
        }
        Ok(())
    }
}
