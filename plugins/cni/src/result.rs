//! Results in every spec version, converted through one model.
//!
//! [`CniResult`] is the 1.1.0 model (the richest); [`CniResult::encode`] renders it in any
//! version's shape and [`CniResult::decode`] reads any version's shape back. Conversion
//! rules are the spec's (and libcni's): 0.3.x/0.4.0 add `ips[].version`; 1.0.0 drops
//! it; 1.1.0 adds interface `mtu`/`socketPath`/`pciID` and route attributes, which older
//! versions drop; 0.1.0/0.2.0 keep only the first address of each family and the routes
//! of the families they keep, and cannot express a result without an address.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CniError;
use crate::version::{CniVersion, ResultShape};

/// DNS settings of a config or result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self == &Dns::default()
    }
}

/// An interface a plugin created or configured.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The namespace path; absent for host-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_path: Option<String>,
    /// 1.1.0 and later.
    #[serde(default, rename = "pciID", skip_serializing_if = "Option::is_none")]
    pub pci_id: Option<String>,
}

/// An address assigned to an interface (`address` keeps its host bits: `10.1.0.2/24`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
    pub address: IpNetwork,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::gojson::ip"
    )]
    pub gateway: Option<IpAddr>,
}

/// A route. The attributes after `gw` exist from 1.1.0 on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub dst: IpNetwork,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::gojson::ip"
    )]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    /// A route with only a destination and an optional gateway (valid in every version).
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>) -> Self {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }

    fn without_v1_1_fields(&self) -> Route {
        Route::new(self.dst, self.gw)
    }
}

/// The result of ADD, in the 1.1.0 model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub dns: Dns,
}

// ---- wire shapes ----------------------------------------------------------------

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CurrentWire {
    cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ips: Vec<IpWire>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<Route>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct IpWire {
    /// Present in 0.3.0 to 0.4.0 only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
    address: IpNetwork,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::gojson::ip"
    )]
    gateway: Option<IpAddr>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyWire {
    cni_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip4: Option<LegacyIp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ip6: Option<LegacyIp>,
    #[serde(default)]
    dns: Dns,
}

#[derive(Serialize, Deserialize)]
struct LegacyIp {
    ip: IpNetwork,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::gojson::ip"
    )]
    gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    routes: Vec<LegacyRoute>,
}

#[derive(Serialize, Deserialize)]
struct LegacyRoute {
    dst: IpNetwork,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::gojson::ip"
    )]
    gw: Option<IpAddr>,
}

impl CniResult {
    /// The host-side interfaces (no `sandbox`), in order, each name checked as a link
    /// name the kernel could have given (plugins use them as sysctl directories and in
    /// state paths): code 7 naming the entry otherwise. `all` and `default` are sysctl
    /// directories, not links.
    pub fn host_interfaces(&self) -> Result<Vec<&Interface>, CniError> {
        let mut out = Vec::new();
        for (i, iface) in self.interfaces.iter().enumerate() {
            if iface.sandbox.as_deref().is_some_and(|s| !s.is_empty()) {
                continue;
            }
            let bad = crate::validate::interface_name(&iface.name).err();
            if bad.is_some() || matches!(iface.name.as_str(), "all" | "default") {
                let why = bad.map_or("a sysctl directory, not a link".to_owned(), |e| e.msg);
                return Err(CniError::invalid_config(format!(
                    "prevResult.interfaces[{i}].name {:?}: {why}",
                    crate::validate::echo(&iface.name)
                )));
            }
            out.push(iface);
        }
        Ok(out)
    }

    /// Renders the result in `version`'s shape. Fails only for 0.1.0/0.2.0 when there is
    /// no address to express.
    pub fn encode(&self, version: CniVersion) -> Result<Value, CniError> {
        let shape = version.result_shape();
        let value = match shape {
            ResultShape::Legacy => serde_json::to_value(self.to_legacy(version)?),
            _ => serde_json::to_value(self.to_current(version, shape)),
        };
        Ok(value.expect("result types always serialize"))
    }

    /// Renders as a compact JSON string (what a plugin prints).
    pub fn to_json(&self, version: CniVersion) -> Result<String, CniError> {
        Ok(self.encode(version)?.to_string())
    }

    fn to_current(&self, version: CniVersion, shape: ResultShape) -> CurrentWire {
        let v1_1 = shape == ResultShape::V1_1;
        let interfaces = self
            .interfaces
            .iter()
            .map(|i| match v1_1 {
                true => i.clone(),
                false => Interface {
                    mtu: None,
                    socket_path: None,
                    pci_id: None,
                    ..i.clone()
                },
            })
            .collect();
        let ips = self
            .ips
            .iter()
            .map(|ip| IpWire {
                version: (shape == ResultShape::Versioned).then(|| family(ip.address).to_owned()),
                interface: ip.interface,
                address: ip.address,
                gateway: ip.gateway,
            })
            .collect();
        let routes = self
            .routes
            .iter()
            .map(|r| {
                if v1_1 {
                    r.clone()
                } else {
                    r.without_v1_1_fields()
                }
            })
            .collect();
        CurrentWire {
            cni_version: version.to_string(),
            interfaces,
            ips,
            routes,
            dns: self.dns.clone(),
        }
    }

    fn to_legacy(&self, version: CniVersion) -> Result<LegacyWire, CniError> {
        let first = |v4: bool| {
            self.ips
                .iter()
                .find(|ip| ip.address.is_ipv4() == v4)
                .map(|ip| LegacyIp {
                    ip: ip.address,
                    gateway: ip.gateway,
                    routes: self
                        .routes
                        .iter()
                        .filter(|r| r.dst.is_ipv4() == v4)
                        .map(|r| LegacyRoute {
                            dst: r.dst,
                            gw: r.gw,
                        })
                        .collect(),
                })
        };
        let (ip4, ip6) = (first(true), first(false));
        if ip4.is_none() && ip6.is_none() {
            return Err(CniError::incompatible_version(format!(
                "cannot express the result in version {version}: it has no IP address"
            )));
        }
        Ok(LegacyWire {
            cni_version: version.to_string(),
            ip4,
            ip6,
            dns: self.dns.clone(),
        })
    }

    /// Reads a result of any version. The version comes from its `cniVersion`; without
    /// one, the shape decides (`ip4`/`ip6` means 0.2.0, else 1.1.0).
    pub fn decode(value: &Value) -> Result<(CniResult, CniVersion), CniError> {
        let field = |k| crate::gojson::get(value, k);
        let version = match field("cniVersion").and_then(Value::as_str) {
            Some(v) => v.parse::<CniVersion>().map_err(|_| {
                CniError::incompatible_version(format!("result has unsupported cniVersion {v:?}"))
            })?,
            None if field("ip4").is_some() || field("ip6").is_some() => CniVersion::V0_2_0,
            None => CniVersion::LATEST,
        };
        let mut value = value.clone();
        if let Some(o) = value.as_object_mut() {
            o.insert("cniVersion".into(), Value::String(version.to_string()));
        }
        let result = match version.result_shape() {
            ResultShape::Legacy => {
                let w: LegacyWire = crate::config::decode_value("result", value)?;
                CniResult::from_legacy(w)
            }
            _ => {
                let w: CurrentWire = crate::config::decode_value("result", value)?;
                CniResult {
                    interfaces: w.interfaces,
                    ips: w
                        .ips
                        .into_iter()
                        .map(|ip| IpConfig {
                            interface: ip.interface,
                            address: ip.address,
                            gateway: ip.gateway,
                        })
                        .collect(),
                    routes: w.routes,
                    dns: w.dns,
                }
            }
        };
        Ok((result, version))
    }

    fn from_legacy(w: LegacyWire) -> CniResult {
        let mut r = CniResult {
            dns: w.dns,
            ..CniResult::default()
        };
        for ip in [w.ip4, w.ip6].into_iter().flatten() {
            r.ips.push(IpConfig {
                interface: None,
                address: ip.ip,
                gateway: ip.gateway,
            });
            r.routes
                .extend(ip.routes.into_iter().map(|rt| Route::new(rt.dst, rt.gw)));
        }
        r
    }
}

fn family(net: IpNetwork) -> &'static str {
    if net.is_ipv4() {
        "4"
    } else {
        "6"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_interface_names_are_checked() {
        let with = |name: &str| -> CniResult {
            serde_json::from_value(json!({"interfaces": [{"name": name},
                {"name": "eth0", "sandbox": "/run/netns/x"}]}))
            .unwrap()
        };
        assert_eq!(with("cni0").host_interfaces().unwrap()[0].name, "cni0");
        for bad in ["../../../tmp/p", "a/b", "..", "all", "default", "", "x y"] {
            let e = with(bad).host_interfaces().unwrap_err();
            assert_eq!(e.code, crate::ErrorCode::INVALID_NETWORK_CONFIG, "{bad}");
            assert!(
                e.msg.starts_with("prevResult.interfaces[0].name"),
                "{}",
                e.msg
            );
        }
    }
    use serde_json::json;

    fn rich() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "veth1".into(),
                    mac: Some("aa:bb:cc:dd:ee:01".into()),
                    ..Default::default()
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("aa:bb:cc:dd:ee:02".into()),
                    mtu: Some(1400),
                    sandbox: Some("/run/netns/c1".into()),
                    socket_path: Some("/run/sock".into()),
                    pci_id: Some("0000:00:01.0".into()),
                },
            ],
            ips: vec![
                IpConfig {
                    interface: Some(1),
                    address: "10.88.0.10/16".parse().unwrap(),
                    gateway: Some("10.88.0.1".parse().unwrap()),
                },
                IpConfig {
                    interface: Some(1),
                    address: "10.99.0.10/16".parse().unwrap(),
                    gateway: None,
                },
                IpConfig {
                    interface: Some(1),
                    address: "fd00::10/64".parse().unwrap(),
                    gateway: Some("fd00::1".parse().unwrap()),
                },
            ],
            routes: vec![
                Route {
                    mtu: Some(1300),
                    advmss: Some(1200),
                    priority: Some(10),
                    table: Some(100),
                    scope: Some(0),
                    ..Route::new(
                        "0.0.0.0/0".parse().unwrap(),
                        Some("10.88.0.1".parse().unwrap()),
                    )
                },
                Route::new("::/0".parse().unwrap(), Some("fd00::1".parse().unwrap())),
            ],
            dns: Dns {
                nameservers: vec!["10.88.0.1".into()],
                domain: Some("dns.podman".into()),
                search: vec!["dns.podman".into()],
                options: vec!["ndots:1".into()],
            },
        }
    }

    /// What survives a trip through `version`, written out by hand from the spec's rules.
    fn survives(r: &CniResult, version: CniVersion) -> CniResult {
        match version.result_shape() {
            ResultShape::V1_1 => r.clone(),
            ResultShape::V1_0 | ResultShape::Versioned => CniResult {
                interfaces: r
                    .interfaces
                    .iter()
                    .map(|i| Interface {
                        mtu: None,
                        socket_path: None,
                        pci_id: None,
                        ..i.clone()
                    })
                    .collect(),
                routes: r.routes.iter().map(Route::without_v1_1_fields).collect(),
                ..r.clone()
            },
            ResultShape::Legacy => {
                let v4 = r.ips.iter().find(|i| i.address.is_ipv4());
                let v6 = r.ips.iter().find(|i| i.address.is_ipv6());
                let keep = |fam4: bool| {
                    r.routes
                        .iter()
                        .filter(move |rt| rt.dst.is_ipv4() == fam4)
                        .map(Route::without_v1_1_fields)
                };
                let mut routes: Vec<Route> = Vec::new();
                if v4.is_some() {
                    routes.extend(keep(true));
                }
                if v6.is_some() {
                    routes.extend(keep(false));
                }
                CniResult {
                    interfaces: vec![],
                    ips: v4
                        .into_iter()
                        .chain(v6)
                        .map(|i| IpConfig {
                            interface: None,
                            ..i.clone()
                        })
                        .collect(),
                    routes,
                    dns: r.dns.clone(),
                }
            }
        }
    }

    #[test]
    fn every_conversion_pair() {
        let r = rich();
        for &from in CniVersion::ALL {
            let wire = r.encode(from).unwrap();
            assert_eq!(wire["cniVersion"], from.as_str());
            let (decoded, v) = CniResult::decode(&wire).unwrap();
            assert_eq!(v, from);
            assert_eq!(decoded, survives(&r, from), "through {from}");
            for &to in CniVersion::ALL {
                let wire2 = decoded.encode(to).unwrap();
                let (back, v2) = CniResult::decode(&wire2).unwrap();
                assert_eq!(v2, to);
                assert_eq!(back, survives(&survives(&r, from), to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn shapes_per_version() {
        let r = rich();
        let v031 = r.encode(CniVersion::V0_3_1).unwrap();
        assert_eq!(v031["ips"][0]["version"], "4");
        assert_eq!(v031["ips"][2]["version"], "6");
        assert!(v031["interfaces"][1].get("mtu").is_none());
        let v100 = r.encode(CniVersion::V1_0_0).unwrap();
        assert!(v100["ips"][0].get("version").is_none());
        assert!(v100["routes"][0].get("table").is_none());
        let v110 = r.encode(CniVersion::V1_1_0).unwrap();
        assert_eq!(v110["interfaces"][1]["pciID"], "0000:00:01.0");
        assert_eq!(v110["interfaces"][1]["socketPath"], "/run/sock");
        assert_eq!(v110["routes"][0]["advmss"], 1200);
        let v020 = r.encode(CniVersion::V0_2_0).unwrap();
        assert_eq!(
            v020,
            json!({"cniVersion":"0.2.0",
                "ip4":{"ip":"10.88.0.10/16","gateway":"10.88.0.1","routes":[{"dst":"0.0.0.0/0","gw":"10.88.0.1"}]},
                "ip6":{"ip":"fd00::10/64","gateway":"fd00::1","routes":[{"dst":"::/0","gw":"fd00::1"}]},
                "dns":{"nameservers":["10.88.0.1"],"domain":"dns.podman","search":["dns.podman"],"options":["ndots:1"]}})
        );
    }

    #[test]
    fn legacy_needs_an_address() {
        let r = CniResult {
            interfaces: vec![Interface {
                name: "lo".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let e = r.encode(CniVersion::V0_2_0).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::INCOMPATIBLE_VERSION);
        assert!(r.encode(CniVersion::V0_3_0).is_ok());
    }

    #[test]
    fn decode_infers_missing_version_and_rejects_unknown() {
        let (r, v) = CniResult::decode(&json!({"ip4":{"ip":"10.0.0.2/24"}})).unwrap();
        assert_eq!(v, CniVersion::V0_2_0);
        assert_eq!(r.ips.len(), 1);
        let e = CniResult::decode(&json!({"cniVersion":"3.0.0"})).unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::INCOMPATIBLE_VERSION);
        let e = CniResult::decode(&json!({"cniVersion":"1.0.0","ips":[{"address":"bogus"}]}))
            .unwrap_err();
        assert_eq!(e.code, crate::ErrorCode::DECODING_FAILURE);
        assert!(e.msg.contains("ips[0].address"), "{}", e.msg);
    }
}
