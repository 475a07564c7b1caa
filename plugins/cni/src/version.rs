//! CNI spec versions: parsing, ordering, and what each version allows.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A CNI specification version this crate can speak.
///
/// Ordering follows the spec's release order, so `>=` answers "does this
/// version have feature X".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_1_0,
    V0_2_0,
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Every version, oldest first.
    pub const ALL: &'static [CniVersion] = &[
        CniVersion::V0_1_0,
        CniVersion::V0_2_0,
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The newest version this crate speaks.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_1_0 => "0.1.0",
            CniVersion::V0_2_0 => "0.2.0",
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK exists from 0.4.0 on.
    pub fn allows_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC exist from 1.1.0 on.
    pub fn allows_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// The result family a version belongs to: which JSON shape it uses.
    pub fn result_shape(self) -> ResultShape {
        match self {
            CniVersion::V0_1_0 | CniVersion::V0_2_0 => ResultShape::Legacy,
            CniVersion::V0_3_0 | CniVersion::V0_3_1 | CniVersion::V0_4_0 => ResultShape::Versioned,
            CniVersion::V1_0_0 => ResultShape::V1_0,
            CniVersion::V1_1_0 => ResultShape::V1_1,
        }
    }
}

/// The four JSON shapes a result takes across the spec's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultShape {
    /// 0.1.0 and 0.2.0: `ip4` / `ip6` objects.
    Legacy,
    /// 0.3.0 to 0.4.0: `ips[]` with a `version` field.
    Versioned,
    /// 1.0.0: `ips[]` without `version`.
    V1_0,
    /// 1.1.0: adds interface `mtu`/`socketPath`/`pciID` and route attributes.
    V1_1,
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A version string that is not one of the spec's releases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown CNI version {0:?}")]
pub struct UnknownVersion(pub String);

impl FromStr for CniVersion {
    type Err = UnknownVersion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CniVersion::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownVersion(s.to_owned()))
    }
}

impl Serialize for CniVersion {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CniVersion {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The body of a VERSION answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub cni_version: String,
    pub supported_versions: Vec<String>,
}

impl VersionInfo {
    /// Parses the supported list, keeping only versions this crate knows.
    pub fn known_versions(&self) -> Vec<CniVersion> {
        self.supported_versions
            .iter()
            .filter_map(|v| v.parse().ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_every_version() {
        for pair in CniVersion::ALL.windows(2) {
            assert!(pair[0] < pair[1]);
            assert_eq!(pair[0].as_str().parse::<CniVersion>(), Ok(pair[0]));
        }
        assert!("1.2.0".parse::<CniVersion>().is_err());
        assert!(CniVersion::V0_4_0.allows_check());
        assert!(!CniVersion::V0_3_1.allows_check());
        assert!(CniVersion::V1_1_0.allows_status_and_gc());
        assert!(!CniVersion::V1_0_0.allows_status_and_gc());
    }
}
