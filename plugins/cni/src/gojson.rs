//! JSON decoded the way Go's `encoding/json` decodes it into a struct, which is what
//! every runtime and reference plugin on the other side of the protocol does:
//!
//! - an object key matches a struct field exactly, else case-insensitively (go-cni sends
//!   `{"HostPort": 8080}`, libcni users write `"CNIVersion"`); of two keys that land on
//!   one field, the later wins, as in Go;
//! - `null` for a struct field leaves the field at its default;
//! - keys that match no field are ignored (serde's default too).
//!
//! Map-typed values (`capabilities`, a flattened rest) keep their keys as written, as Go's
//! maps do. The adapter sits between a parsed [`Value`] and any `Deserialize` type, so
//! every derived struct gets this for free: no per-field aliases. (A struct with a
//! `#[serde(flatten)]` field is read through a map, whose keys serde then compares
//! exactly: config types decode the same bytes twice instead of flattening.)

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

/// `deserialize_with` for an optional address that Go holds as a `net.IP`: its
/// `UnmarshalText` takes `""` as no address (go-cni sends `"Gateway": ""`).
pub fn ip<'de, D: Deserializer<'de>>(d: D) -> Result<Option<std::net::IpAddr>, D::Error> {
    match Option::<String>::deserialize(d)?.as_deref() {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| de::Error::custom(format!("invalid IP address {s:?}"))),
    }
}

/// A JSON value seen through Go's decoding rules.
#[derive(Debug)]
pub struct GoValue(pub Value);

/// The object key that Go would store in `field`: the exact spelling if present, else the
/// last key that equals it case-insensitively.
pub fn find_key<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a Value> {
    object.get(field).or_else(|| {
        object
            .iter()
            .rev()
            .find(|(k, _)| fold_eq(k, field))
            .map(|(_, v)| v)
    })
}

/// `find_key` on a value that may not be an object.
pub fn get<'a>(value: &'a Value, field: &str) -> Option<&'a Value> {
    value.as_object().and_then(|o| find_key(o, field))
}

/// Go's `bytes.EqualFold` (simple Unicode case folding; ASCII fast path).
fn fold_eq(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let fold = |s: &str| s.chars().flat_map(char::to_lowercase).collect::<String>();
    fold(a) == fold(b)
}

/// Renames the keys of `object` to the field names they match, drops `null`s, and keeps
/// only the last of several keys that land on the same field. Unmatched keys are kept
/// (serde ignores them, or a flattened rest collects them).
fn to_fields(object: Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    let mut out = Map::with_capacity(object.len());
    for (key, value) in object {
        let name = if fields.contains(&key.as_str()) {
            key
        } else if let Some(f) = fields.iter().find(|f| fold_eq(f, &key)) {
            (*f).to_owned()
        } else {
            key
        };
        if value.is_null() {
            out.remove(&name);
        } else {
            out.insert(name, value);
        }
    }
    out
}

impl<'de> Deserializer<'de> for GoValue {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Array(items) => visitor.visit_seq(GoSeq(items.into_iter())),
            Value::Object(object) => visitor.visit_map(GoMap::new(object)),
            other => other.deserialize_any(visitor),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        match self.0 {
            Value::Object(object) => visitor.visit_map(GoMap::new(to_fields(object, fields))),
            other => GoValue(other).deserialize_any(visitor),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct GoSeq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for GoSeq {
    type Error = serde_json::Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Self::Error> {
        self.0
            .next()
            .map(|v| seed.deserialize(GoValue(v)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

struct GoMap {
    entries: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl GoMap {
    fn new(object: Map<String, Value>) -> GoMap {
        GoMap {
            entries: object.into_iter(),
            value: None,
        }
    }
}

impl<'de> MapAccess<'de> for GoMap {
    type Error = serde_json::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Self::Error> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(Value::String(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, Self::Error> {
        let value = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value requested before its key"))?;
        seed.deserialize(GoValue(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(rename_all = "camelCase")]
    struct Mapping {
        host_port: i64,
        #[serde(default, rename = "hostIP")]
        host_ip: Option<String>,
        #[serde(default)]
        inner: Vec<Inner>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    struct Inner {
        #[serde(default)]
        flag: bool,
    }

    fn go<T: serde::de::DeserializeOwned>(v: Value) -> T {
        T::deserialize(GoValue(v)).unwrap()
    }

    #[test]
    fn keys_fold_and_exact_wins() {
        let m: Mapping = go(json!({"HostPort": 80, "HOSTIP": "::1", "Inner": [{"FLAG": true}]}));
        assert_eq!(m.host_port, 80);
        assert_eq!(m.host_ip.as_deref(), Some("::1"));
        assert!(m.inner[0].flag);
        // The later of two keys landing on one field wins, as in Go.
        let m: Mapping = go(json!({"hostPort": 1, "HostPort": 2}));
        assert_eq!(m.host_port, 2);
    }

    #[test]
    fn null_is_the_default() {
        let m: Mapping = go(json!({"hostPort": 1, "hostIP": null, "inner": null}));
        assert_eq!(
            m,
            Mapping {
                host_port: 1,
                ..Mapping::default()
            }
        );
        let i: Inner = go(json!({"flag": null}));
        assert!(!i.flag);
    }

    #[test]
    fn maps_keep_their_keys() {
        let m: std::collections::BTreeMap<String, bool> = go(json!({"PortMappings": true}));
        assert!(m.contains_key("PortMappings"));
        let o = json!({"cniVersion": "1.0.0", "CNIVERSION": "0.4.0"});
        assert_eq!(get(&o, "cniVersion"), Some(&json!("1.0.0")));
        assert_eq!(
            get(&json!({"CniVersion": "x"}), "cniVersion"),
            Some(&json!("x"))
        );
    }
}
