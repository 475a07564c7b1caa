//! The bridge plugin's configuration: every key of the reference plugin, with its
//! defaults.

use cni::skel::CmdArgs;
use cni::{CniError, Dns};
use serde::Deserialize;

/// One `vlanTrunk` entry: a single `id` or a `minID`..`maxID` range.
#[derive(Debug, Clone, Deserialize)]
pub struct TrunkWire {
    pub id: Option<u16>,
    #[serde(rename = "minID")]
    pub min_id: Option<u16>,
    #[serde(rename = "maxID")]
    pub max_id: Option<u16>,
}

fn default_bridge() -> String {
    "cni0".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeConf {
    pub name: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default, rename = "isDefaultGateway")]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub force_address: bool,
    #[serde(default)]
    pub ip_masq: bool,
    /// Newer references' masquerade backend; see [`netkit::nft::check_backend`].
    #[serde(default)]
    pub ip_masq_backend: Option<String>,
    #[serde(default)]
    pub mtu: u32,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    #[serde(default)]
    pub vlan: u16,
    #[serde(default)]
    pub vlan_trunk: Vec<TrunkWire>,
    #[serde(default = "yes")]
    pub preserve_default_vlan: bool,
    /// podnet's: the VRF (an existing `vrf` link) a bridge made by this plugin is put
    /// in, as netavark's `vrf` option.
    #[serde(default)]
    pub vrf: Option<String>,
    #[serde(default)]
    pub macspoofchk: bool,
    #[serde(default)]
    pub enabledad: bool,
    #[serde(default)]
    pub disable_container_interface: bool,
    #[serde(default)]
    pub port_isolation: bool,
    #[serde(default)]
    pub ipam: Option<cni::config::IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    #[serde(default)]
    pub args: Option<ArgsWire>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeWire>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArgsWire {
    pub cni: Option<ArgsCni>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ArgsCni {
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuntimeWire {
    pub mac: Option<String>,
}

/// A VLAN span on the container's port.
pub type Span = (u16, u16);

impl BridgeConf {
    pub fn parse(args: &CmdArgs) -> Result<BridgeConf, CniError> {
        let mut c: BridgeConf = args.config()?;
        netkit::nft::check_backend("ipMasqBackend", c.ip_masq_backend.as_deref())?;
        if c.is_default_gateway {
            c.is_gateway = true; // as in the reference: a default gateway is a gateway
        }
        if c.bridge.is_empty() || cni::validate::interface_name(&c.bridge).is_err() {
            return Err(CniError::invalid_config(format!(
                "bridge: invalid bridge name {:?}",
                c.bridge
            )));
        }
        if c.vlan > 4094 {
            return Err(CniError::invalid_config(format!(
                "vlan: {} is not in 0..=4094",
                c.vlan
            )));
        }
        c.trunk()?;
        if let Some(v) = c.vrf.as_deref() {
            if cni::validate::interface_name(v).is_err() {
                return Err(CniError::invalid_config(format!(
                    "vrf: invalid VRF name {v:?}"
                )));
            }
        }
        if c.ipam.as_ref().is_some_and(|i| i.plugin_type.is_empty()) {
            return Err(CniError::invalid_config("ipam.type is missing"));
        }
        Ok(c)
    }

    /// The `vlanTrunk` spans, validated.
    pub fn trunk(&self) -> Result<Vec<Span>, CniError> {
        self.vlan_trunk
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let bad = |m: &str| CniError::invalid_config(format!("vlanTrunk[{i}]: {m}"));
                let span = match (t.id, t.min_id, t.max_id) {
                    (Some(id), None, None) => (id, id),
                    (None, Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    (None, Some(_), Some(_)) => return Err(bad("minID is greater than maxID")),
                    _ => return Err(bad("give either id or both minID and maxID")),
                };
                if span.0 == 0 || span.1 > 4094 {
                    return Err(bad("VLAN ids are 1..=4094"));
                }
                Ok(span)
            })
            .collect()
    }

    pub fn vlan_filtering(&self) -> Result<bool, CniError> {
        Ok(self.vlan != 0 || !self.trunk()?.is_empty())
    }

    /// The container MAC: `runtimeConfig.mac` over `args.cni.mac` over `CNI_ARGS MAC=`.
    pub fn mac(&self, args: &CmdArgs) -> Result<Option<[u8; 6]>, CniError> {
        let from_rt = self
            .runtime_config
            .as_ref()
            .and_then(|r| r.mac.clone())
            .map(|m| ("runtimeConfig.mac", m));
        let from_args = self
            .args
            .as_ref()
            .and_then(|a| a.cni.as_ref())
            .and_then(|c| c.mac.clone())
            .map(|m| ("args.cni.mac", m));
        let from_env = args.args.get("MAC").map(|m| ("CNI_ARGS MAC", m.to_owned()));
        match from_rt.or(from_args).or(from_env) {
            None => Ok(None),
            Some((source, m)) => netkit::parse_mac(&m).map(Some).map_err(|_| {
                CniError::invalid_config(format!("{source}: invalid MAC address {m:?}"))
            }),
        }
    }

    pub fn mtu(&self) -> Option<u32> {
        (self.mtu != 0).then_some(self.mtu)
    }
}
