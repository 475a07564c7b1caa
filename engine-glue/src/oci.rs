//! The OCI side: the bundle's `config.json` (a pure function of the container) and the
//! runtime verbs the engine uses (`run -d`, `kill`, `exec`, `delete`, `state`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::config::Config;
use crate::error::{Error, Result};

/// What goes into one bundle.
#[derive(Debug, Clone)]
pub struct Spec<'a> {
    pub rootfs: &'a Path,
    pub args: &'a [String],
    pub env: &'a [String],
    pub hostname: &'a str,
    /// The network namespace to join; `None` stays in the host's.
    pub netns: Option<&'a Path>,
    /// Files bound into the container (read-write, as Podman binds them), as
    /// `(destination, source)`.
    pub binds: Vec<(&'static str, PathBuf)>,
}

/// Podman's default capabilities plus NET_RAW, so that `ping` works in busybox images.
const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SETFCAP",
    "CAP_SETGID",
    "CAP_SETPCAP",
    "CAP_SETUID",
    "CAP_SYS_CHROOT",
];

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn config_json(spec: &Spec<'_>) -> Value {
    let mut env: Vec<String> = vec![DEFAULT_PATH.into(), format!("HOSTNAME={}", spec.hostname)];
    for e in spec.env {
        let key = e.split('=').next().unwrap_or_default();
        env.retain(|x| x.split('=').next() != Some(key));
        env.push(e.clone());
    }
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ];
    if let Some(ns) = spec.netns {
        namespaces.push(json!({"type": "network", "path": ns}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc"}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        // A new sysfs shows the container's own network devices; in the host's network
        // namespace the kernel refuses a new sysfs, so the host's is bound instead.
        match spec.netns {
            Some(_) => json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                              "options": ["nosuid", "noexec", "nodev", "ro"]}),
            None => json!({"destination": "/sys", "type": "bind", "source": "/sys",
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        },
    ];
    for (dst, src) in &spec.binds {
        mounts.push(json!({"destination": dst, "type": "bind", "source": src,
                           "options": ["bind", "rprivate"]}));
    }
    let caps = json!(CAPABILITIES);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": spec.args,
            "env": env,
            "cwd": "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": true,
        },
        "root": {"path": spec.rootfs, "readonly": false},
        "hostname": spec.hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                "/proc/sysrq-trigger"],
        },
    })
}

/// The OCI runtime as the engine calls it.
#[derive(Debug, Clone)]
pub struct Runtime<'a> {
    config: &'a Config,
}

impl<'a> Runtime<'a> {
    pub fn new(config: &'a Config) -> Runtime<'a> {
        Runtime { config }
    }

    /// `runtime --root R VERB ARGS…`, ready to run.
    pub fn command(&self, verb: &str) -> Command {
        let mut c = Command::new(&self.config.runtime);
        c.arg("--root").arg(self.config.runtime_root()).arg(verb);
        c
    }

    /// Runs a verb to completion; its stderr becomes the error.
    fn call(&self, verb: &'static str, args: &[&str]) -> Result<String> {
        let out = self
            .command(verb)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Runtime {
                runtime: self.config.runtime.display().to_string(),
                verb,
                msg: e.to_string(),
            })?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(Error::Runtime {
                runtime: self.config.runtime_name(),
                verb,
                msg: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            }),
        }
    }

    pub fn kill(&self, id: &str, signal: &str) -> Result<()> {
        self.call("kill", &[id, signal]).map(drop)
    }

    /// Forgets a container the runtime still knows; one it does not know is fine.
    pub fn delete(&self, id: &str) -> Result<()> {
        match self.call("delete", &["--force", id]) {
            Err(Error::Runtime { msg, .. })
                if msg.contains("does not exist") || msg.contains("not found") =>
            {
                Ok(())
            }
            r => r.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_joins_the_given_namespace_and_binds_the_files() {
        let args = vec!["httpd".to_string(), "-f".into()];
        let env = vec!["PATH=/bin".to_string(), "A=1".into()];
        let spec = Spec {
            rootfs: Path::new("/srv/rootfs"),
            args: &args,
            env: &env,
            hostname: "hugo",
            netns: Some(Path::new("/run/netns/podnet-abc")),
            binds: vec![("/etc/hosts", PathBuf::from("/var/lib/podnet/x/hosts"))],
        };
        let v = config_json(&spec);
        assert_eq!(
            v["process"]["env"],
            json!(["HOSTNAME=hugo", "PATH=/bin", "A=1"])
        );
        assert_eq!(
            v["linux"]["namespaces"][4],
            json!({"type": "network", "path": "/run/netns/podnet-abc"})
        );
        assert_eq!(v["mounts"][5]["type"], "sysfs");
        assert_eq!(v["mounts"][6]["destination"], "/etc/hosts");
        assert_eq!(v["hostname"], "hugo");
        let host = config_json(&Spec {
            netns: None,
            ..spec
        });
        assert_eq!(
            host["linux"]["namespaces"].as_array().unwrap().len(),
            4,
            "no network namespace: the host's"
        );
        assert_eq!(host["mounts"][5]["type"], "bind");
    }
}
