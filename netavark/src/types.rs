//! netavark's JSON, as Podman 5 writes and reads it (containers/common's `types`).
//!
//! Input keys are netavark's exact snake_case spellings (serde's, as netavark decodes
//! them: unknown keys ignored, absent optional fields their default). Output is written
//! with exactly the fields Podman knows: it decodes setup's answer with unknown fields
//! disallowed.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// A network as Podman stores it (`<config>/../networks/NAME.json`) and passes it in
/// `network_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub driver: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_interface: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnets: Option<Vec<Subnet>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
    #[serde(default)]
    pub ipv6_enabled: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub dns_enabled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_dns_servers: Option<Vec<IpAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam_options: Option<BTreeMap<String, String>>,
}

impl Network {
    pub fn subnets(&self) -> &[Subnet] {
        self.subnets.as_deref().unwrap_or_default()
    }

    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.as_ref()?.get(key).map(String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_range: Option<LeaseRange>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRange {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub destination: IpNetwork,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
}

/// setup's and teardown's stdin.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NetworkOptions {
    pub container_id: String,
    #[serde(default)]
    pub container_name: String,
    #[serde(default)]
    pub container_hostname: Option<String>,
    /// Keyed by network name (Podman), or a list with `name` (netavark accepts both).
    #[serde(deserialize_with = "map_or_list")]
    pub networks: Vec<NamedOptions>,
    #[serde(default)]
    pub network_info: HashMap<String, Network>,
    #[serde(default)]
    pub port_mappings: Option<Vec<PortMapping>>,
    #[serde(default)]
    pub dns_servers: Option<Vec<IpAddr>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct NamedOptions {
    pub name: String,
    #[serde(flatten)]
    pub opts: PerNetworkOptions,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PerNetworkOptions {
    #[serde(default)]
    pub aliases: Option<Vec<String>>,
    pub interface_name: String,
    #[serde(default)]
    pub static_ips: Option<Vec<IpAddr>>,
    #[serde(default)]
    pub static_mac: Option<String>,
    #[serde(default)]
    pub options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PortMapping {
    pub container_port: u16,
    #[serde(default)]
    pub host_ip: String,
    pub host_port: u16,
    /// `tcp`, `udp`, `sctp` or a comma-separated list of them.
    #[serde(default)]
    pub protocol: String,
    /// How many consecutive ports from `host_port`/`container_port` (0 and 1: one).
    #[serde(default)]
    pub range: u16,
}

/// setup's answer, one per network.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusBlock {
    pub dns_search_domains: Vec<String>,
    pub dns_server_ips: Vec<IpAddr>,
    pub interfaces: BTreeMap<String, NetInterface>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetInterface {
    pub mac_address: String,
    pub subnets: Vec<NetAddress>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetAddress {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub ipnet: IpNetwork,
}

/// `create`'s stdin (newer containers/common).
#[derive(Debug, Clone, Deserialize)]
pub struct CreateRequest {
    pub network: Network,
    #[serde(default)]
    pub used: Used,
    #[serde(default)]
    pub options: CreateOptions,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Used {
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// name → id of every existing network.
    #[serde(default)]
    pub names: HashMap<String, String>,
    #[serde(default)]
    pub subnets: Vec<IpNetwork>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateOptions {
    #[serde(default)]
    pub subnet_pools: Vec<SubnetPool>,
    #[serde(default)]
    pub default_interface_name: Option<String>,
    #[serde(default)]
    pub check_used_subnets: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubnetPool {
    pub base: IpNetwork,
    pub size: u8,
}

fn map_or_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NamedOptions>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<NamedOptions>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a map of network name to options, or a list of them")
        }
        fn visit_map<M: MapAccess<'de>>(self, mut m: M) -> Result<Self::Value, M::Error> {
            let mut out = Vec::new();
            while let Some((name, opts)) = m.next_entry::<String, PerNetworkOptions>()? {
                out.push(NamedOptions { name, opts });
            }
            Ok(out)
        }
        fn visit_seq<S: SeqAccess<'de>>(self, s: S) -> Result<Self::Value, S::Error> {
            Deserialize::deserialize(de::value::SeqAccessDeserializer::new(s))
        }
    }
    d.deserialize_any(V)
}
