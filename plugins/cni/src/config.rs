//! Network configuration: a plugin's config as it arrives on stdin, and the conflist
//! a runtime reads from disk. A plugin's config decodes as Go plugins decode it
//! ([`crate::gojson`]); a conflist's own keys are read exactly, as libcni reads them, and
//! its unknown keys are kept (`extra`) so that a runtime passes them through untouched.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::CniError;
use crate::result::Dns;
use crate::validate;
use crate::version::CniVersion;

/// The keys every plugin config has in common. Plugin crates deserialize their own
/// type from the same bytes; this one is what the skeleton and runtime need.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "type", default)]
    pub plugin_type: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub capabilities: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipam: Option<IpamConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Dns>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_config: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<Value>,
    /// GC's `cni.dev/valid-attachments` (spec 1.1).
    #[serde(
        default,
        rename = "cni.dev/valid-attachments",
        skip_serializing_if = "Option::is_none"
    )]
    pub valid_attachments: Option<Value>,
    /// The same list under its name of the spec's drafts (`cni.dev/attachments`).
    #[serde(
        default,
        rename = "cni.dev/attachments",
        skip_serializing_if = "Option::is_none"
    )]
    pub legacy_attachments: Option<Value>,
}

/// The `ipam` object: a `type` naming the IPAM plugin; the rest is the IPAM plugin's,
/// which reads it from the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IpamConf {
    #[serde(rename = "type", default)]
    pub plugin_type: String,
}

impl NetConf {
    /// Whether the plugin declared `capability` as `true`.
    pub fn has_capability(&self, capability: &str) -> bool {
        self.capabilities.get(capability) == Some(&Value::Bool(true))
    }

    /// `args.cni.<key>`, the config-borne counterpart of `CNI_ARGS`.
    pub fn args_cni(&self, key: &str) -> Option<&Value> {
        let cni = crate::gojson::get(self.args.as_ref()?, "cni")?;
        crate::gojson::get(cni, key)
    }
}

/// Decodes JSON into `T` as Go's `encoding/json` would ([`crate::gojson`]: keys
/// case-insensitive with exact matches first, `null` the default), naming the field at
/// fault on failure (code 6).
pub fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, CniError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| CniError::decoding(format!("error decoding {what}: {e}")))?;
    decode_value(what, value)
}

/// [`decode`] of an already parsed value.
pub fn decode_value<T: serde::de::DeserializeOwned>(
    what: &str,
    value: Value,
) -> Result<T, CniError> {
    serde_path_to_error::deserialize(crate::gojson::GoValue(value))
        .map_err(|e| decode_error(what, e))
}

/// Decodes JSON whose keys are matched exactly (a conflist's, as libcni reads them).
fn decode_exact<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, CniError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| decode_error(what, e))
}

fn decode_error(what: &str, e: serde_path_to_error::Error<serde_json::Error>) -> CniError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    let field = if path == "." {
        String::new()
    } else {
        format!(" at {path:?}")
    };
    CniError::decoding(format!("error decoding {what}{field}: {inner}"))
}

/// A conflist plugin's `type` (libcni decodes each plugin's `NetConf` as Go does).
pub fn plugin_type(plugin: &Map<String, Value>) -> Option<&str> {
    crate::gojson::find_key(plugin, "type").and_then(Value::as_str)
}

/// A directory key (`dataDir`, `stateDir`): absent, `null` or `""` mean `default`, as
/// the Go plugins test for the empty string.
pub fn dir_or(dir: Option<&Path>, default: &str) -> PathBuf {
    match dir {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from(default),
    }
}

/// A network configuration list (`*.conflist`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConfList {
    #[serde(default)]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cni_versions: Vec<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disable_check: bool,
    #[serde(
        default,
        rename = "disableGC",
        skip_serializing_if = "std::ops::Not::not"
    )]
    pub disable_gc: bool,
    pub plugins: Vec<Map<String, Value>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl NetConfList {
    /// Parses a conflist, or a single plugin `.conf` wrapped as a one-plugin list (as
    /// libcni does), and validates the name and the plugin types.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CniError> {
        let raw: Value = decode_exact("network configuration", bytes)?;
        let list = if raw.get("plugins").is_some() {
            decode_exact::<NetConfList>("network configuration list", bytes)?
        } else {
            let Value::Object(plugin) = raw else {
                return Err(CniError::decoding(
                    "network configuration is not a JSON object",
                ));
            };
            let field = |k: &str| {
                plugin
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            NetConfList {
                cni_version: field("cniVersion"),
                cni_versions: Vec::new(),
                name: field("name"),
                disable_check: plugin.get("disableCheck") == Some(&Value::Bool(true)),
                disable_gc: false,
                plugins: vec![plugin],
                extra: Map::new(),
            }
        };
        list.validate()?;
        Ok(list)
    }

    pub fn load(path: &Path) -> Result<Self, CniError> {
        let bytes = std::fs::read(path).map_err(|e| {
            CniError::from_source(
                crate::ErrorCode::IO_FAILURE,
                format!("reading {}", path.display()),
                &e,
            )
        })?;
        NetConfList::from_bytes(&bytes).map_err(|e| CniError {
            msg: format!("{}: {}", path.display(), e.msg),
            ..e
        })
    }

    fn validate(&self) -> Result<(), CniError> {
        validate::network_name(&self.name)?;
        if self.plugins.is_empty() {
            return Err(CniError::invalid_config(format!(
                "network {:?}: \"plugins\" is empty",
                crate::validate::echo(&self.name)
            )));
        }
        for (i, p) in self.plugins.iter().enumerate() {
            match plugin_type(p) {
                Some(t) if !t.is_empty() && !t.contains('/') => {}
                _ => {
                    return Err(CniError::invalid_config(format!(
                        "network {:?}: plugins[{i}].type is missing or invalid",
                        crate::validate::echo(&self.name)
                    )))
                }
            }
        }
        self.version()?;
        Ok(())
    }

    /// The version the chain runs in: the highest of `cniVersions` that this crate
    /// speaks (spec 1.1), else `cniVersion`, else 0.1.0 (libcni's default).
    pub fn version(&self) -> Result<CniVersion, CniError> {
        if !self.cni_versions.is_empty() {
            return self
                .cni_versions
                .iter()
                .filter_map(|v| v.parse::<CniVersion>().ok())
                .max()
                .ok_or_else(|| {
                    CniError::incompatible_version(format!(
                        "network {:?}: none of cniVersions {:?} is supported",
                        crate::validate::echo(&self.name),
                        self.cni_versions
                    ))
                });
        }
        if self.cni_version.is_empty() {
            return Ok(CniVersion::V0_1_0);
        }
        self.cni_version.parse().map_err(|_| {
            CniError::incompatible_version(format!(
                "network {:?}: unsupported cniVersion {:?}",
                crate::validate::echo(&self.name),
                self.cni_version
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_config_ignores_unknown_keys() {
        let c: NetConf = decode(
            "config",
            br#"{"cniVersion":"1.0.0","name":"n","type":"bridge","bridge":"cni0",
                "capabilities":{"portMappings":true},"ipam":{"type":"host-local","subnet":"10.0.0.0/24"}}"#,
        )
        .unwrap();
        assert!(c.has_capability("portMappings"));
        assert_eq!(c.ipam.as_ref().unwrap().plugin_type, "host-local");
    }

    #[test]
    fn decode_errors_name_the_field() {
        let err = decode::<NetConf>("config", br#"{"name": 5}"#).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::DECODING_FAILURE);
        assert!(err.msg.contains("\"name\""), "{}", err.msg);
    }

    #[test]
    fn conflist_version_highest_wins() {
        let l = NetConfList::from_bytes(
            br#"{"cniVersion":"0.4.0","cniVersions":["0.4.0","1.1.0","9.0.0"],"name":"n","plugins":[{"type":"loopback"}]}"#,
        )
        .unwrap();
        assert_eq!(l.version().unwrap(), CniVersion::V1_1_0);
        let l = NetConfList::from_bytes(
            br#"{"cniVersion":"0.3.1","name":"n","plugins":[{"type":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(l.version().unwrap(), CniVersion::V0_3_1);
    }

    #[test]
    fn conflist_rejects_bad_input() {
        for (bad, needle) in [
            (
                &br#"{"cniVersion":"1.0.0","name":"a b","plugins":[{"type":"x"}]}"#[..],
                "network name",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins",
            ),
            (
                br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"x":1}]}"#,
                "plugins[0].type",
            ),
            (
                br#"{"cniVersion":"7.0.0","name":"n","plugins":[{"type":"x"}]}"#,
                "cniVersion",
            ),
        ] {
            let e = NetConfList::from_bytes(bad).unwrap_err();
            assert!(e.msg.contains(needle), "{} lacks {needle}", e.msg);
        }
    }

    #[test]
    fn single_conf_becomes_a_list() {
        let l = NetConfList::from_bytes(br#"{"cniVersion":"1.0.0","name":"n","type":"loopback"}"#)
            .unwrap();
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.name, "n");
    }
}
