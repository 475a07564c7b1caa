//! The `ipam` keys of a `dhcp` network, as the reference reads them, and the DHCP
//! options they turn into.

use cni::CniError;
use dhcproto::v4::{DhcpOption, OptionCode, UnknownOption};
use serde::{Deserialize, Serialize};

/// Where the plugin finds the daemon unless `daemonSocketPath` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/cni/dhcp.sock";

/// A network config as the dhcp plugin reads it: its name and its `ipam` object.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(default)]
    pub name: String,
    pub ipam: Option<IpamConf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(default)]
    pub daemon_socket_path: String,
    /// Options sent to the server: a fixed `value` or one taken from `CNI_ARGS`.
    #[serde(default)]
    pub provide: Vec<ProvideOption>,
    /// Options asked of the server (the parameter request list).
    #[serde(default)]
    pub request: Vec<RequestOption>,
    /// The metric of the routes in the result.
    #[serde(default)]
    pub priority: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProvideOption {
    #[serde(default)]
    pub option: String,
    #[serde(default)]
    pub value: String,
    #[serde(default, rename = "fromArg")]
    pub from_arg: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestOption {
    #[serde(default)]
    pub skip_default: bool,
    #[serde(default)]
    pub option: String,
}

/// The options the reference knows by name; any other is given by its number.
const NAMED: &[(&str, u8)] = &[
    ("dhcp-client-identifier", 61),
    ("subnet-mask", 1),
    ("routers", 3),
    ("host-name", 12),
    ("user-class", 77),
    ("vendor-class-identifier", 60),
];

/// An option by the reference's name or by number (1–254).
pub fn option_code(name: &str) -> Option<u8> {
    NAMED
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, c)| *c)
        .or_else(|| name.parse::<u8>().ok().filter(|c| (1..=254).contains(c)))
}

/// What a lease is asked with: the options sent, and the parameter request list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub provide: Vec<(u8, Vec<u8>)>,
    pub request: Vec<u8>,
}

/// Asked by default, as the reference: the router and the subnet mask; podnet also asks
/// for the classless static routes (RFC 3442), which the result honours.
pub const DEFAULT_REQUEST: &[u8] = &[3, 1, 121];

impl NetConf {
    /// Decoded as Go decodes it (code 6 naming the field at fault).
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        cni::config::decode("network config", stdin)
    }

    pub fn ipam(&self) -> IpamConf {
        self.ipam.clone().unwrap_or_default()
    }

    /// The daemon's socket: `ipam.daemonSocketPath`, which must be absolute (code 7).
    pub fn socket_path(&self) -> Result<std::path::PathBuf, CniError> {
        let p = self.ipam().daemon_socket_path;
        if p.is_empty() {
            return Ok(DEFAULT_SOCKET.into());
        }
        let path = std::path::PathBuf::from(&p);
        if !path.is_absolute() || p.contains('\0') || path.file_name().is_none() {
            return Err(CniError::invalid_config(format!(
                "ipam.daemonSocketPath: {:?} is not an absolute path to a socket",
                cni::validate::echo(&p)
            )));
        }
        Ok(path)
    }
}

impl IpamConf {
    /// The options to send and request, `CNI_ARGS` supplying `fromArg` values; every
    /// refusal names its key (code 7).
    pub fn wanted(&self, args: &cni::CniArgs) -> Result<Wanted, CniError> {
        let mut provide = Vec::new();
        for (i, p) in self.provide.iter().enumerate() {
            let code = option_code(&p.option).ok_or_else(|| {
                CniError::invalid_config(format!(
                    "ipam.provide[{i}].option: unknown DHCP option {:?} (a name the reference knows or a number 1-254)",
                    cni::validate::echo(&p.option)
                ))
            })?;
            let from_arg = (!p.from_arg.is_empty())
                .then(|| args.get(&p.from_arg))
                .flatten();
            for (key, v) in [("value", Some(p.value.as_str())), ("fromArg", from_arg)] {
                let Some(v) = v.filter(|v| !v.is_empty()) else {
                    continue;
                };
                if v.len() > 255 {
                    return Err(CniError::invalid_config(format!(
                        "ipam.provide[{i}].{key}: the value of option {:?} is {} bytes, above DHCP's 255",
                        p.option,
                        v.len()
                    )));
                }
                provide.retain(|(c, _)| *c != code);
                provide.push((code, v.as_bytes().to_vec()));
            }
        }
        let mut request = Vec::new();
        let mut skip_default = false;
        for (i, r) in self.request.iter().enumerate() {
            skip_default |= r.skip_default;
            if r.option.is_empty() {
                continue;
            }
            let code = option_code(&r.option).ok_or_else(|| {
                CniError::invalid_config(format!(
                    "ipam.request[{i}].option: unknown DHCP option {:?}",
                    cni::validate::echo(&r.option)
                ))
            })?;
            if !request.contains(&code) {
                request.push(code);
            }
        }
        if !skip_default {
            for c in DEFAULT_REQUEST {
                if !request.contains(c) {
                    request.push(*c);
                }
            }
        }
        Ok(Wanted { provide, request })
    }
}

impl Wanted {
    /// As dhcproto options.
    pub fn options(&self) -> Vec<DhcpOption> {
        let mut out: Vec<DhcpOption> = self
            .provide
            .iter()
            .map(|(c, v)| DhcpOption::Unknown(UnknownOption::new(OptionCode::from(*c), v.clone())))
            .collect();
        if !self.request.is_empty() {
            out.push(DhcpOption::ParameterRequestList(
                self.request.iter().map(|c| OptionCode::from(*c)).collect(),
            ));
        }
        out
    }
}

/// The client identifier of an attachment, as the reference builds it: `ID/NETWORK/IFNAME`,
/// cut to 254 bytes, sent with type 0 (not a hardware address).
pub fn client_id(container_id: &str, network: &str, ifname: &str) -> Vec<u8> {
    let mut id = format!("{container_id}/{network}/{ifname}").into_bytes();
    id.truncate(254);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipam(v: serde_json::Value) -> IpamConf {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn options_by_name_number_value_and_cni_args() {
        let args = cni::CniArgs::parse("K8S_POD_NAME=web-1;IgnoreUnknown=1").unwrap();
        let w = ipam(serde_json::json!({
            "provide": [{"option": "host-name", "fromArg": "K8S_POD_NAME"}, {"option": "60", "value": "podnet"}],
            "request": [{"option": "6"}]
        }))
        .wanted(&args)
        .unwrap();
        assert_eq!(
            w.provide,
            vec![(12, b"web-1".to_vec()), (60, b"podnet".to_vec())]
        );
        assert_eq!(w.request, vec![6, 3, 1, 121]);
        let w = ipam(serde_json::json!({"request": [{"skipDefault": true, "option": "routers"}]}))
            .wanted(&args)
            .unwrap();
        assert_eq!(w.request, vec![3]);
        for (v, key) in [
            (
                serde_json::json!({"provide": [{"option": "nope", "value": "x"}]}),
                "ipam.provide[0].option",
            ),
            (
                serde_json::json!({"provide": [{"option": "12", "value": "x".repeat(256)}]}),
                "ipam.provide[0].value",
            ),
            (
                serde_json::json!({"request": [{"option": "255"}]}),
                "ipam.request[0].option",
            ),
        ] {
            let e = ipam(v.clone()).wanted(&args).unwrap_err();
            assert_eq!(e.code, cni::ErrorCode::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains(key), "{v}: {}", e.msg);
        }
    }

    #[test]
    fn the_client_id_is_the_references() {
        assert_eq!(client_id("c1", "lan", "eth0"), b"c1/lan/eth0".to_vec());
        assert_eq!(client_id(&"x".repeat(300), "n", "e").len(), 254);
    }
}
