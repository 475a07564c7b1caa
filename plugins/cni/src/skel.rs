//! The plugin skeleton: the only code that reads `CNI_*` and stdin, prints the result
//! or the error object, and chooses the exit status.
//!
//! [`run`] wires the process to [`dispatch`], which is pure (environment and stdin in,
//! output out) so that the protocol is unit-tested without spawning processes.

use std::io::{Read, Write};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::args::CniArgs;
use crate::config::{decode, NetConf};
use crate::error::CniError;
use crate::result::CniResult;
use crate::validate;
use crate::version::{CniVersion, VersionInfo};

/// A CNI plugin. `add`, `del` and `check` get the validated arguments; `status` and
/// `gc` have defaults that fit plugins with no state of their own.
pub trait Plugin {
    /// One line naming the plugin, printed when it is run without `CNI_COMMAND`.
    fn about(&self) -> &'static str;

    /// The versions the plugin serves.
    fn supported_versions(&self) -> &'static [CniVersion] {
        CniVersion::ALL
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError>;

    /// Must succeed when there is nothing left to undo.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError>;

    fn check(&self, args: &CmdArgs) -> Result<(), CniError>;

    fn status(&self, _args: &StatusArgs) -> Result<(), CniError> {
        Ok(())
    }

    fn gc(&self, _args: &GcArgs) -> Result<(), CniError> {
        Ok(())
    }
}

/// The CNI commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// The variables the spec requires for this command (besides `CNI_COMMAND`).
    fn required_env(self) -> &'static [&'static str] {
        match self {
            Command::Add | Command::Check => {
                &["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"]
            }
            Command::Del => &["CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"],
            Command::Status | Command::Gc => &["CNI_PATH"],
            Command::Version => &[],
        }
    }
}

/// Arguments of ADD, DEL and CHECK.
#[derive(Debug, Clone)]
pub struct CmdArgs {
    pub container_id: String,
    /// `None` for a DEL without `CNI_NETNS`.
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<PathBuf>,
    /// The config exactly as received, for plugins to decode their own type.
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: CniVersion,
    /// `prevResult`, converted to the model.
    pub prev_result: Option<CniResult>,
}

impl CmdArgs {
    /// The arguments of a call made in-process (an engine calling plugin logic directly,
    /// a unit test): the same validation and `prevResult` decoding as a call through the
    /// environment, in the config's own `cniVersion`.
    pub fn new(container_id: &str, ifname: &str, config: &[u8]) -> Result<CmdArgs, CniError> {
        let conf: NetConf = decode("network config", config)?;
        let version = conf.cni_version.parse().map_err(|_| {
            CniError::incompatible_version(format!("cniVersion {:?}", conf.cni_version))
        })?;
        let env = |k: &str| match k {
            "CNI_CONTAINERID" => Some(container_id.to_owned()),
            "CNI_IFNAME" => Some(ifname.to_owned()),
            _ => None,
        };
        cmd_args(&env, Vec::new(), config, conf, version)
    }

    /// Decodes the plugin's own config type, naming the field at fault (code 6).
    pub fn config<T: DeserializeOwned>(&self) -> Result<T, CniError> {
        decode("network config", &self.stdin)
    }
}

/// Arguments of STATUS.
#[derive(Debug, Clone)]
pub struct StatusArgs {
    pub path: Vec<PathBuf>,
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: CniVersion,
}

/// One attachment still in use, as listed in `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The config key of GC's valid attachments (spec 1.1).
pub const VALID_ATTACHMENTS_KEY: &str = "cni.dev/valid-attachments";
/// The same list under the key of early 1.1 drafts, still sent by some runtimes.
pub const LEGACY_ATTACHMENTS_KEY: &str = "cni.dev/attachments";

/// Arguments of GC.
#[derive(Debug, Clone)]
pub struct GcArgs {
    pub path: Vec<PathBuf>,
    pub stdin: Vec<u8>,
    pub conf: NetConf,
    pub version: CniVersion,
    pub valid_attachments: Vec<Attachment>,
}

/// What a plugin run prints and returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub status: i32,
}

/// Runs `plugin` as a CNI plugin process and exits.
pub fn run<P: Plugin>(plugin: P) -> ! {
    // Room for a whole ordinary config: one read, not a read per doubling from 32 bytes.
    let mut stdin = Vec::with_capacity(16 * 1024);
    let outcome = match std::io::stdin().lock().read_to_end(&mut stdin) {
        Ok(_) => dispatch(&plugin, |k| std::env::var(k).ok(), &stdin),
        Err(e) => error_outcome(
            CniError::from_source(crate::ErrorCode::IO_FAILURE, "reading stdin", &e),
            CniVersion::LATEST,
        ),
    };
    let _ = std::io::stdout().write_all(outcome.stdout.as_bytes());
    let _ = std::io::stderr().write_all(outcome.stderr.as_bytes());
    let _ = std::io::stdout().flush();
    // Every plugin's `main` is this call: the skeleton is the plugins' entry point.
    #[allow(clippy::exit)]
    std::process::exit(outcome.status)
}

/// The protocol: environment lookup and stdin in, what to print out.
pub fn dispatch<P: Plugin>(
    plugin: &P,
    env: impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Outcome {
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    // The version errors are reported in: the config's, when it names one we know.
    let answer_version = sniff_version(stdin).unwrap_or(CniVersion::LATEST);
    let Some(cmd_str) = env("CNI_COMMAND") else {
        return about_outcome(plugin);
    };
    let result = match Command::parse(&cmd_str) {
        None => Err(CniError::invalid_env(format!(
            "unknown CNI_COMMAND: {cmd_str}"
        ))),
        Some(Command::Version) => return version_outcome(plugin, stdin),
        Some(cmd) => run_command(plugin, cmd, &env, stdin),
    };
    match result {
        Ok(stdout) => Outcome {
            stdout,
            stderr: String::new(),
            status: 0,
        },
        Err(e) => error_outcome(e, answer_version),
    }
}

fn run_command<P: Plugin>(
    plugin: &P,
    cmd: Command,
    env: &impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<String, CniError> {
    let missing: Vec<&str> = cmd
        .required_env()
        .iter()
        .copied()
        .filter(|k| env(k).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::invalid_env(format!(
            "required env variables [{}] missing",
            missing.join(",")
        )));
    }
    let conf: NetConf = decode("network config", stdin)?;
    validate::network_name(&conf.name)?;
    let version = negotiate(plugin, &conf, cmd)?;
    let path = crate::runtime::split_path(&env("CNI_PATH").unwrap_or_default());
    match cmd {
        Command::Status => {
            plugin.status(&StatusArgs {
                path,
                stdin: stdin.to_vec(),
                conf,
                version,
            })?;
            Ok(String::new())
        }
        Command::Gc => {
            let valid_attachments = valid_attachments(&conf)?;
            plugin.gc(&GcArgs {
                path,
                stdin: stdin.to_vec(),
                conf,
                version,
                valid_attachments,
            })?;
            Ok(String::new())
        }
        Command::Add | Command::Del | Command::Check => {
            let args = cmd_args(env, path, stdin, conf, version)?;
            match cmd {
                Command::Add => plugin.add(&args)?.to_json(version),
                Command::Del => plugin.del(&args).map(|()| String::new()),
                _ => plugin.check(&args).map(|()| String::new()),
            }
        }
        Command::Version => unreachable!("VERSION is answered before the environment is read"),
    }
}

fn cmd_args(
    env: &impl Fn(&str) -> Option<String>,
    path: Vec<PathBuf>,
    stdin: &[u8],
    conf: NetConf,
    version: CniVersion,
) -> Result<CmdArgs, CniError> {
    let container_id = env("CNI_CONTAINERID").unwrap_or_default();
    validate::container_id(&container_id)?;
    let ifname = env("CNI_IFNAME").unwrap_or_default();
    validate::interface_name(&ifname)?;
    let args = CniArgs::parse(&env("CNI_ARGS").unwrap_or_default())?;
    let prev_result = match &conf.prev_result {
        Some(v) if !v.is_null() => Some(
            CniResult::decode(v)
                .map_err(|e| CniError {
                    msg: format!("prevResult: {}", e.msg),
                    ..e
                })?
                .0,
        ),
        _ => None,
    };
    Ok(CmdArgs {
        container_id,
        netns: env("CNI_NETNS").map(PathBuf::from),
        ifname,
        args,
        path,
        stdin: stdin.to_vec(),
        conf,
        version,
        prev_result,
    })
}

/// Picks the version to answer in and checks the command exists in it.
fn negotiate<P: Plugin>(plugin: &P, conf: &NetConf, cmd: Command) -> Result<CniVersion, CniError> {
    let raw = if conf.cni_version.is_empty() {
        "0.1.0"
    } else {
        conf.cni_version.as_str()
    };
    let supported = plugin.supported_versions();
    let version = raw
        .parse::<CniVersion>()
        .ok()
        .filter(|v| supported.contains(v))
        .ok_or_else(|| {
            let list: Vec<&str> = supported.iter().map(|v| v.as_str()).collect();
            CniError::incompatible_version("incompatible CNI versions")
                .with_details(format!("config is {raw:?}, plugin supports {list:?}"))
        })?;
    let allowed = match cmd {
        Command::Check => version.allows_check(),
        Command::Status | Command::Gc => version.allows_status_and_gc(),
        _ => true,
    };
    if !allowed {
        return Err(CniError::incompatible_version(format!(
            "config version does not allow {}",
            cmd.as_str()
        ))
        .with_details(format!("config is {:?}", version.as_str())));
    }
    Ok(version)
}

fn valid_attachments(conf: &NetConf) -> Result<Vec<Attachment>, CniError> {
    match conf
        .valid_attachments
        .as_ref()
        .or(conf.legacy_attachments.as_ref())
    {
        None => Ok(Vec::new()),
        Some(v) => crate::config::decode_value(VALID_ATTACHMENTS_KEY, v.clone()),
    }
}

fn sniff_version(stdin: &[u8]) -> Option<CniVersion> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Sniff {
        cni_version: String,
    }
    crate::config::decode::<Sniff>("network config", stdin)
        .ok()?
        .cni_version
        .parse()
        .ok()
}

fn version_outcome<P: Plugin>(plugin: &P, stdin: &[u8]) -> Outcome {
    let supported = plugin.supported_versions();
    let echoed = sniff_version(stdin)
        .filter(|v| supported.contains(v))
        .unwrap_or_else(|| *supported.iter().max().unwrap_or(&CniVersion::LATEST));
    let info = VersionInfo {
        cni_version: echoed.to_string(),
        supported_versions: supported.iter().map(|v| v.to_string()).collect(),
    };
    Outcome {
        stdout: serde_json::to_string(&info).expect("version info serializes"),
        stderr: String::new(),
        status: 0,
    }
}

fn about_outcome<P: Plugin>(plugin: &P) -> Outcome {
    let list: Vec<&str> = plugin
        .supported_versions()
        .iter()
        .map(|v| v.as_str())
        .collect();
    Outcome {
        stdout: String::new(),
        stderr: format!(
            "{}\nCNI protocol versions supported: {}\n",
            plugin.about(),
            list.join(", ")
        ),
        status: 0,
    }
}

fn error_outcome(err: CniError, version: CniVersion) -> Outcome {
    let err = err.in_version(version);
    Outcome {
        stdout: serde_json::to_string(&err).expect("errors serialize"),
        stderr: String::new(),
        status: 1,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;
    use crate::ErrorCode;

    #[derive(Default)]
    struct Fake {
        versions: Option<&'static [CniVersion]>,
        seen: RefCell<Vec<String>>,
    }

    impl Plugin for Fake {
        fn about(&self) -> &'static str {
            "fake plugin"
        }
        fn supported_versions(&self) -> &'static [CniVersion] {
            self.versions.unwrap_or(CniVersion::ALL)
        }
        fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
            self.seen
                .borrow_mut()
                .push(format!("ADD {}", args.container_id));
            Ok(args.prev_result.clone().unwrap_or_else(|| CniResult {
                ips: vec![crate::IpConfig {
                    interface: None,
                    address: "10.0.0.2/24".parse().unwrap(),
                    gateway: None,
                }],
                ..Default::default()
            }))
        }
        fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
            self.seen.borrow_mut().push(format!("DEL {:?}", args.netns));
            Ok(())
        }
        fn check(&self, _: &CmdArgs) -> Result<(), CniError> {
            self.seen.borrow_mut().push("CHECK".into());
            Ok(())
        }
        fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
            self.seen
                .borrow_mut()
                .push(format!("GC {}", args.valid_attachments.len()));
            Ok(())
        }
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const FULL: &[(&str, &str)] = &[
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];

    fn call(
        p: &Fake,
        cmd: &str,
        extra: &[(&str, &str)],
        stdin: &str,
    ) -> (Outcome, serde_json::Value) {
        let mut pairs = FULL.to_vec();
        pairs.push(("CNI_COMMAND", cmd));
        pairs.extend_from_slice(extra);
        let out = dispatch(p, env(&pairs), stdin.as_bytes());
        let v = serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out, v)
    }

    #[test]
    fn add_answers_in_the_requested_version() {
        let p = Fake::default();
        for &v in CniVersion::ALL {
            let (out, json) = call(
                &p,
                "ADD",
                &[],
                &format!(r#"{{"cniVersion":"{v}","name":"n","type":"fake"}}"#),
            );
            assert_eq!(out.status, 0, "{v}: {}", out.stdout);
            assert_eq!(json["cniVersion"], v.as_str());
        }
        let (_, json) = call(
            &p,
            "ADD",
            &[],
            r#"{"cniVersion":"0.2.0","name":"n","type":"fake"}"#,
        );
        assert_eq!(json["ip4"]["ip"], "10.0.0.2/24");
    }

    #[test]
    fn prev_result_is_converted_and_passed() {
        let p = Fake::default();
        let (out, json) = call(
            &p,
            "ADD",
            &[],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"10.9.0.5/16"}]}}"#,
        );
        assert_eq!(out.status, 0);
        assert_eq!(json["ips"][0]["address"], "10.9.0.5/16");
        let (out, json) = call(
            &p,
            "ADD",
            &[],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake","prevResult":{"cniVersion":"1.0.0","ips":[{"address":"x"}]}}"#,
        );
        assert_eq!(out.status, 1);
        assert_eq!(json["code"], 6);
        assert!(json["msg"].as_str().unwrap().starts_with("prevResult"));
    }

    #[test]
    fn error_paths_carry_spec_codes_and_version() {
        let p = Fake::default();
        let conf = r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#;
        // (command, env overrides, stdin, expected code, text the message names)
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, u32, &'a str);
        let cases: &[Case<'_>] = &[
            ("ADD", &[("CNI_NETNS", "")], conf, 4, "CNI_NETNS"),
            ("FOO", &[], conf, 4, "FOO"),
            ("ADD", &[("CNI_CONTAINERID", "a b")], conf, 4, "containerID"),
            ("ADD", &[("CNI_IFNAME", "a/b")], conf, 4, "interface name"),
            ("ADD", &[("CNI_ARGS", "novalue")], conf, 4, "CNI_ARGS"),
            ("ADD", &[], "{", 6, "network config"),
            (
                "ADD",
                &[],
                r#"{"cniVersion":"1.0.0","type":"fake"}"#,
                7,
                "network name",
            ),
            (
                "ADD",
                &[],
                r#"{"cniVersion":"9.0.0","name":"n","type":"fake"}"#,
                1,
                "incompatible",
            ),
            (
                "CHECK",
                &[],
                r#"{"cniVersion":"0.3.1","name":"n","type":"fake"}"#,
                1,
                "CHECK",
            ),
            ("STATUS", &[], conf, 1, "STATUS"),
            ("GC", &[], conf, 1, "GC"),
        ];
        for (cmd, extra, stdin, code, needle) in cases {
            let (out, json) = call(&p, cmd, extra, stdin);
            assert_eq!(out.status, 1, "{cmd} {extra:?}");
            assert_eq!(json["code"], *code, "{cmd} {extra:?}: {json}");
            assert!(json["msg"].as_str().unwrap().contains(needle), "{json}");
            assert!(json["cniVersion"].is_string(), "{json}");
        }
        assert!(
            p.seen.borrow().is_empty(),
            "no plugin method runs on bad input"
        );
    }

    #[test]
    fn del_without_netns_and_gc_with_attachments() {
        let p = Fake::default();
        let (out, _) = call(
            &p,
            "DEL",
            &[("CNI_NETNS", "")],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#,
        );
        assert_eq!(out.status, 0);
        assert_eq!(out.stdout, "");
        let (out, _) = call(
            &p,
            "GC",
            &[],
            r#"{"cniVersion":"1.1.0","name":"n","type":"fake","cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}]}"#,
        );
        assert_eq!(out.status, 0, "{}", out.stdout);
        let (out, _) = call(
            &p,
            "GC",
            &[],
            r#"{"cniVersion":"1.1.0","name":"n","type":"fake","cni.dev/attachments":[{"containerID":"a","ifname":"eth0"},{"containerID":"b","ifname":"eth0"}]}"#,
        );
        assert_eq!(out.status, 0);
        assert_eq!(
            *p.seen.borrow(),
            vec!["DEL None".to_string(), "GC 1".into(), "GC 2".into()]
        );
    }

    #[test]
    fn version_echoes_the_request_and_about_goes_to_stderr() {
        let p = Fake::default();
        let out = dispatch(
            &p,
            env(&[("CNI_COMMAND", "VERSION")]),
            br#"{"cniVersion":"0.3.1"}"#,
        );
        let info: VersionInfo = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(info.cni_version, "0.3.1");
        assert_eq!(info.supported_versions.len(), 7);
        let out = dispatch(&p, env(&[("CNI_COMMAND", "VERSION")]), b"");
        assert!(out.stdout.contains(r#""cniVersion":"1.1.0""#));
        let out = dispatch(&p, env(&[]), b"");
        assert_eq!((out.status, out.stdout.as_str()), (0, ""));
        assert!(out.stderr.contains("fake plugin") && out.stderr.contains("0.1.0, 0.2.0"));
        let old = Fake {
            versions: Some(&[CniVersion::V0_3_1, CniVersion::V0_4_0]),
            ..Default::default()
        };
        let (out, json) = call(
            &old,
            "ADD",
            &[],
            r#"{"cniVersion":"1.0.0","name":"n","type":"fake"}"#,
        );
        assert_eq!(
            (out.status, json["code"].as_u64()),
            (1, Some(ErrorCode::INCOMPATIBLE_VERSION.0 as u64))
        );
    }
}
