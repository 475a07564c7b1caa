//! Driving a plugin binary through the protocol (env + stdin), as a runtime does.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// One plugin call, built up field by field; unset variables are not passed at all.
#[derive(Debug, Clone)]
pub struct Call {
    pub binary: PathBuf,
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
}

/// What the plugin answered.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// stdout as JSON (Null when empty or not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// Asserts success and returns the JSON answer.
    pub fn ok(&self) -> Value {
        assert_eq!(
            self.status, 0,
            "plugin failed: {}{}",
            self.stdout, self.stderr
        );
        self.json()
    }

    /// Asserts a CNI error and returns (code, msg, the whole object).
    pub fn err(&self) -> (u64, String, Value) {
        assert_ne!(
            self.status, 0,
            "plugin succeeded where it should fail: {}",
            self.stdout
        );
        let v = self.json();
        let code = v["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without code: {}", self.stdout));
        (code, v["msg"].as_str().unwrap_or_default().to_owned(), v)
    }
}

impl Call {
    /// A call with the full ADD/CHECK/DEL environment.
    pub fn new(binary: &Path, command: &str, netns: &Path, ifname: &str, config: &Value) -> Call {
        Call {
            binary: binary.to_path_buf(),
            env: vec![
                ("CNI_COMMAND".into(), command.into()),
                ("CNI_CONTAINERID".into(), "podnet-test-ctr".into()),
                ("CNI_NETNS".into(), netns.display().to_string()),
                ("CNI_IFNAME".into(), ifname.into()),
                (
                    "CNI_PATH".into(),
                    binary
                        .parent()
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                ),
            ],
            stdin: config.to_string().into_bytes(),
        }
    }

    /// A call with only `CNI_COMMAND` (and `CNI_PATH`), as VERSION, STATUS and GC take.
    pub fn bare(binary: &Path, command: &str, config: &Value) -> Call {
        let mut c = Call::new(binary, command, Path::new(""), "", config);
        c.env.retain(|(k, _)| k == "CNI_COMMAND" || k == "CNI_PATH");
        c
    }

    pub fn set(mut self, key: &str, value: &str) -> Call {
        self.unset(key).env.push((key.into(), value.into()));
        self
    }

    pub fn without(mut self, key: &str) -> Call {
        self.unset(key);
        self
    }

    fn unset(&mut self, key: &str) -> &mut Call {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn stdin(mut self, bytes: &[u8]) -> Call {
        self.stdin = bytes.to_vec();
        self
    }

    pub fn run(&self) -> Reply {
        let stdin = recased(&self.stdin);
        let mut child = Command::new(&self.binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", self.binary.display()));
        let _ = child.stdin.take().expect("piped").write_all(&stdin);
        let out = child.wait_with_output().expect("plugin ran");
        Reply {
            status: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `PODNET_KEY_CASE`: how [`Call::run`] re-cases the object keys of a JSON stdin, to prove
/// that plugins decode as Go's `encoding/json` does (keys case-insensitive): `upper`,
/// `lower`, `random` (each letter's case from a hash of the key and its position), or
/// unset (sent as built). Keys of Go maps stay as they are, since Go matches those
/// exactly too: `capabilities`, `sysctl` and `runtimeConfig.aliases`.
pub const KEY_CASE_ENV: &str = "PODNET_KEY_CASE";

/// A conflist as a runtime reads it, with each plugin's keys re-cased by
/// `PODNET_KEY_CASE` (the list's own keys stay exact, as libcni reads them exactly).
pub fn conflist(bytes: &[u8]) -> cni::NetConfList {
    let mut list = cni::NetConfList::from_bytes(bytes).expect("a valid conflist");
    if let Some(mode) = std::env::var(KEY_CASE_ENV).ok().filter(|m| !m.is_empty()) {
        for p in &mut list.plugins {
            let Value::Object(o) = recase(&Value::Object(std::mem::take(p)), &mode) else {
                unreachable!("an object stays an object")
            };
            *p = o;
        }
    }
    list
}

fn recased(stdin: &[u8]) -> Vec<u8> {
    let Some(mode) = std::env::var(KEY_CASE_ENV).ok().filter(|m| !m.is_empty()) else {
        return stdin.to_vec();
    };
    match serde_json::from_slice::<Value>(stdin) {
        Ok(v @ Value::Object(_)) => recase(&v, &mode).to_string().into_bytes(),
        _ => stdin.to_vec(),
    }
}

/// `value` with every struct key re-cased by `mode` (see [`KEY_CASE_ENV`]).
pub fn recase(value: &Value, mode: &str) -> Value {
    const GO_MAPS: &[&str] = &["capabilities", "sysctl", "aliases"];
    match value {
        Value::Array(items) => Value::Array(items.iter().map(|v| recase(v, mode)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| {
                    let v = if GO_MAPS.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        recase(v, mode)
                    };
                    (recase_key(k, mode), v)
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

fn recase_key(key: &str, mode: &str) -> String {
    match mode {
        "upper" => key.to_uppercase(),
        "lower" => key.to_lowercase(),
        "random" => key
            .chars()
            .enumerate()
            .map(|(i, c)| {
                use std::hash::{DefaultHasher, Hash, Hasher};
                let mut h = DefaultHasher::new();
                (key, i).hash(&mut h);
                if h.finish() & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
        other => panic!("{KEY_CASE_ENV}={other}: want upper, lower or random"),
    }
}
