//! host-local's configuration, with every reference key: `ranges` (range sets), the
//! legacy top-level `subnet`/`rangeStart`/`rangeEnd`/`gateway`, `routes`, `dataDir`,
//! `resolvConf`; `runtimeConfig.ipRanges` (prepended); requested addresses from
//! `CNI_ARGS IP=`, `args.cni.ips` and `runtimeConfig.ips`.

use std::net::IpAddr;
use std::path::PathBuf;

use cni::{CniArgs, CniError, CniVersion, Route};
use ipnetwork::IpNetwork;
use serde::Deserialize;

use crate::range::{Range, RangeSet};

/// The reference's default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetWire {
    #[serde(default)]
    name: String,
    ipam: Option<IpamWire>,
    #[serde(default)]
    runtime_config: RuntimeWire,
    #[serde(default)]
    args: Option<ArgsWire>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeWire {
    #[serde(default)]
    ip_ranges: Vec<Vec<RangeWire>>,
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct ArgsWire {
    #[serde(default)]
    cni: Option<ArgsCniWire>,
}

#[derive(Debug, Deserialize)]
struct ArgsCniWire {
    #[serde(default)]
    ips: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IpamWire {
    #[serde(default)]
    ranges: Vec<Vec<RangeWire>>,
    // The legacy single range, spelled out (not flattened) so that decode errors keep
    // the field's path.
    subnet: Option<IpNetwork>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    range_start: Option<IpAddr>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    gateway: Option<IpAddr>,
    #[serde(default)]
    routes: Vec<Route>,
    data_dir: Option<PathBuf>,
    resolv_conf: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RangeWire {
    subnet: Option<IpNetwork>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    range_start: Option<IpAddr>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    range_end: Option<IpAddr>,
    #[serde(default, deserialize_with = "cni::gojson::ip")]
    gateway: Option<IpAddr>,
}

/// host-local's validated configuration.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    /// The network name: the lease directory under `data_dir`.
    pub network: String,
    pub range_sets: Vec<RangeSet>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub resolv_conf: Option<PathBuf>,
    /// Addresses requested for this attachment, from every source, in order.
    pub requested: Vec<IpAddr>,
}

impl HostLocalConf {
    /// Parses the plugin's stdin (the whole network config, as IPAM plugins get it).
    pub fn parse(
        stdin: &[u8],
        args: &CniArgs,
        version: CniVersion,
    ) -> Result<HostLocalConf, CniError> {
        let net: NetWire = cni::config::decode("network config", stdin)?;
        let ipam = net
            .ipam
            .ok_or_else(|| CniError::invalid_config("IPAM config missing 'ipam' key"))?;
        let mut sets: Vec<(String, Vec<RangeWire>)> = net
            .runtime_config
            .ip_ranges
            .into_iter()
            .enumerate()
            .map(|(i, s)| (format!("runtimeConfig.ipRanges[{i}]"), s))
            .collect();
        if ipam.subnet.is_some() {
            let legacy = RangeWire {
                subnet: ipam.subnet,
                range_start: ipam.range_start,
                range_end: ipam.range_end,
                gateway: ipam.gateway,
            };
            sets.push(("ipam.subnet".into(), vec![legacy]));
        }
        sets.extend(
            ipam.ranges
                .into_iter()
                .enumerate()
                .map(|(i, s)| (format!("ipam.ranges[{i}]"), s)),
        );
        if sets.is_empty() {
            return Err(CniError::invalid_config(
                "ipam: no IP ranges specified (\"ranges\" or \"subnet\")",
            ));
        }
        let range_sets = sets
            .into_iter()
            .map(|(path, set)| range_set(&path, set))
            .collect::<Result<Vec<_>, _>>()?;
        check_sets(&range_sets, version)?;
        Ok(HostLocalConf {
            network: net.name,
            range_sets,
            routes: ipam.routes,
            data_dir: cni::config::dir_or(ipam.data_dir.as_deref(), DEFAULT_DATA_DIR),
            resolv_conf: ipam.resolv_conf,
            requested: requested_ips(args, net.args, net.runtime_config.ips)?,
        })
    }
}

fn range_set(path: &str, ranges: Vec<RangeWire>) -> Result<RangeSet, CniError> {
    let ranges = ranges
        .into_iter()
        .enumerate()
        .map(|(j, r)| {
            let subnet = r.subnet.ok_or_else(|| {
                CniError::invalid_config(format!("{path}[{j}].subnet is missing"))
            })?;
            Range::new(subnet, r.range_start, r.range_end, r.gateway)
                .map_err(|e| CniError::invalid_config(format!("{path}[{j}]: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RangeSet::new(ranges).map_err(|e| CniError::invalid_config(format!("{path}: {e}")))
}

fn check_sets(sets: &[RangeSet], version: CniVersion) -> Result<(), CniError> {
    for (i, a) in sets.iter().enumerate() {
        if let Some(j) = sets[i + 1..].iter().position(|b| a.overlaps(b)) {
            return Err(CniError::invalid_config(format!(
                "range set {i} overlaps with {}",
                i + 1 + j
            )));
        }
    }
    let v4 = sets.iter().filter(|s| s.is_ipv4()).count();
    if (v4 > 1 || sets.len() - v4 > 1) && version < CniVersion::V0_3_0 {
        return Err(CniError::incompatible_version(format!(
            "CNI version {version} does not support more than 1 address per family"
        )));
    }
    Ok(())
}

/// `CNI_ARGS IP=` (comma separated), then `args.cni.ips`, then `runtimeConfig.ips`;
/// each an address, with or without a prefix length.
fn requested_ips(
    args: &CniArgs,
    conf_args: Option<ArgsWire>,
    runtime: Vec<String>,
) -> Result<Vec<IpAddr>, CniError> {
    let from_env = args
        .get("IP")
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(|s| ("CNI_ARGS IP", s.to_owned()));
    let from_args = conf_args
        .and_then(|a| a.cni)
        .map(|c| c.ips)
        .unwrap_or_default()
        .into_iter()
        .map(|s| ("args.cni.ips", s));
    let from_rt = runtime.into_iter().map(|s| ("runtimeConfig.ips", s));
    let mut out: Vec<IpAddr> = Vec::new();
    for (source, raw) in from_env.chain(from_args).chain(from_rt) {
        let text = raw.trim();
        let ip = text
            .parse::<IpAddr>()
            .or_else(|_| text.parse::<IpNetwork>().map(|n| n.ip()))
            .map_err(|_| {
                CniError::invalid_config(format!("{source}: invalid IP address {text:?}"))
            })?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value, args: &str) -> Result<HostLocalConf, CniError> {
        HostLocalConf::parse(
            v.to_string().as_bytes(),
            &CniArgs::parse(args).unwrap(),
            CniVersion::V1_0_0,
        )
    }

    #[test]
    fn every_source_of_ranges_and_requests() {
        let c = parse(
            json!({"name":"net","ipam":{"type":"host-local","subnet":"10.1.0.0/24",
                "ranges":[[{"subnet":"10.2.0.0/24","rangeStart":"10.2.0.10","rangeEnd":"10.2.0.20","gateway":"10.2.0.254"}],[{"subnet":"fd00::/64"}]],
                "routes":[{"dst":"0.0.0.0/0"},{"dst":"10.9.0.0/16","gw":"10.2.0.1"}],"dataDir":"/tmp/x","resolvConf":"/etc/resolv.conf"},
                "runtimeConfig":{"ipRanges":[[{"subnet":"10.3.0.0/24"}]],"ips":["10.2.0.15/24"]},
                "args":{"cni":{"ips":["fd00::5"]}}}),
            "IP=10.1.0.7",
        )
        .unwrap();
        let subnets: Vec<String> = c
            .range_sets
            .iter()
            .map(|s| s.0[0].subnet.to_string())
            .collect();
        assert_eq!(
            subnets,
            ["10.3.0.0/24", "10.1.0.0/24", "10.2.0.0/24", "fd00::/64"]
        );
        assert_eq!(c.range_sets[2].0[0].gateway.to_string(), "10.2.0.254");
        assert_eq!(
            c.requested
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>(),
            ["10.1.0.7", "fd00::5", "10.2.0.15"]
        );
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.network, "net");
    }

    #[test]
    fn go_cni_ip_ranges_and_empty_strings() {
        // containerd sends the podCIDR as go-cni's IPRanges, Go field names, "" unset.
        let c = parse(
            json!({"name":"k8s","ipam":{"type":"host-local","dataDir":"","ranges":null,
                "Routes":[{"Dst":"0.0.0.0/0","GW":""}]},
                "runtimeConfig":{"ipRanges":[[{"Subnet":"10.244.1.0/24","RangeStart":"","RangeEnd":"","Gateway":""}]]}}),
            "",
        )
        .unwrap();
        assert_eq!(c.range_sets[0].0[0].subnet.to_string(), "10.244.1.0/24");
        assert_eq!(c.range_sets[0].0[0].gateway.to_string(), "10.244.1.1");
        assert_eq!(
            c.data_dir,
            PathBuf::from(DEFAULT_DATA_DIR),
            "\"\" is the default"
        );
        assert_eq!(c.routes.len(), 1);
        assert!(c.routes[0].gw.is_none());
    }

    #[test]
    fn errors_name_the_place() {
        let cases = [
            (json!({"name":"n"}), "'ipam'"),
            (
                json!({"name":"n","ipam":{"type":"host-local"}}),
                "no IP ranges",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.5/24"}]]}}),
                "ipam.ranges[0][0]: network 10.0.0.5/24 has host bits",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"gateway":"10.0.0.1"}]]}}),
                "ipam.ranges[0][0].subnet is missing",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/16"}],[{"subnet":"10.0.1.0/24"}]]}}),
                "range set 0 overlaps with 1",
            ),
            (
                json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"},{"subnet":"fd00::/64"}]]}}),
                "ipam.ranges[0]: mixes",
            ),
            (
                json!({"name":"n","ipam":{"subnet":"10.0.0.0/24"},"runtimeConfig":{"ips":["bogus"]}}),
                "runtimeConfig.ips",
            ),
        ];
        for (conf, needle) in cases {
            let e = parse(conf, "").unwrap_err();
            assert!(e.msg.contains(needle), "{} lacks {needle}", e.msg);
        }
        let e = parse(json!({"name":"n","ipam":{"subnet":"not-a-cidr"}}), "").unwrap_err();
        assert_eq!(e.code, cni::ErrorCode::DECODING_FAILURE);
        assert!(e.msg.contains("ipam.subnet"), "{}", e.msg);
        let two_v4 = json!({"name":"n","ipam":{"ranges":[[{"subnet":"10.0.0.0/24"}],[{"subnet":"10.1.0.0/24"}]]}});
        let e = HostLocalConf::parse(
            two_v4.to_string().as_bytes(),
            &CniArgs::default(),
            CniVersion::V0_2_0,
        )
        .unwrap_err();
        assert_eq!(e.code, cni::ErrorCode::INCOMPATIBLE_VERSION);
    }
}
