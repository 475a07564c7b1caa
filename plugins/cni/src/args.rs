//! `CNI_ARGS`: the `K=V;K2=V2` string runtimes pass to plugins.

use crate::error::CniError;

/// Parsed `CNI_ARGS`, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs(Vec<(String, String)>);

impl CniArgs {
    /// Parses `K=V;K2=V2`. Empty segments are ignored; a segment without `=` is an
    /// error naming the segment (code 4, as the variable is at fault).
    pub fn parse(raw: &str) -> Result<Self, CniError> {
        let mut pairs = Vec::new();
        for part in raw.split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                CniError::invalid_env(format!(
                    "CNI_ARGS: invalid pair {part:?}, expected KEY=VALUE"
                ))
            })?;
            pairs.push((k.to_owned(), v.to_owned()));
        }
        Ok(CniArgs(pairs))
    }

    pub fn from_pairs(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        CniArgs(pairs.into_iter().collect())
    }

    /// The last value given for `key` (later pairs win, as in libcni).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether unknown keys may be ignored (`IgnoreUnknown=1|true`).
    pub fn ignore_unknown(&self) -> bool {
        matches!(
            self.get("IgnoreUnknown")
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("1" | "true")
        )
    }

    /// Fails with code 2 naming the first key outside `known`, unless `IgnoreUnknown` is set.
    pub fn reject_unknown(&self, known: &[&str]) -> Result<(), CniError> {
        if self.ignore_unknown() {
            return Ok(());
        }
        match self
            .0
            .iter()
            .find(|(k, _)| k != "IgnoreUnknown" && !known.contains(&k.as_str()))
        {
            Some((k, v)) => Err(CniError::new(
                crate::ErrorCode::UNSUPPORTED_FIELD,
                format!("CNI_ARGS: unknown key {k:?} (value {v:?})"),
            )
            .with_details("set IgnoreUnknown=1 to ignore unknown keys")),
            None => Ok(()),
        }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Renders back to the environment form.
    pub fn to_env(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pairs_and_unknown_keys() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5").unwrap();
        assert_eq!(a.get("K8S_POD_NAME"), Some("web"));
        assert!(a.ignore_unknown());
        assert!(a.reject_unknown(&["IP"]).is_ok());
        let b = CniArgs::parse("FOO=1").unwrap();
        let err = b.reject_unknown(&["IP"]).unwrap_err();
        assert_eq!(err.code, crate::ErrorCode::UNSUPPORTED_FIELD);
        assert!(err.msg.contains("FOO"));
        assert!(CniArgs::parse("novalue").is_err());
        assert_eq!(a.to_env(), "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.0.0.5");
    }
}
