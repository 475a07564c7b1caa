//! Where the engine keeps things and which programs it runs. Every path can be moved
//! (flags and environment of the CLI, fields here for an embedding engine), which is
//! how the tests and `make demo` keep the machine's own /etc and /var untouched.

use std::path::{Path, PathBuf};

use cni::runtime::split_path;

/// The defaults, as Podman 4's CNI backend has them where the two overlap.
pub const DEFAULT_ROOT: &str = "/var/lib/podnet";
pub const DEFAULT_RUNROOT: &str = "/run/podnet/engine";
pub const DEFAULT_CNI_CONFIG_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_CNI_PLUGIN_DIRS: &str = "/opt/cni/bin";
pub const DEFAULT_CNI_CACHE_DIR: &str = "/var/lib/cni";
/// The network a container joins when it names none: Podman's default, same name,
/// bridge and subnet, so the two engines agree on it.
pub const DEFAULT_NETWORK: &str = "podman";

/// The environment variables the CLI reads (each also a flag).
pub const ENV_ROOT: &str = "PODNET_ROOT";
pub const ENV_RUNROOT: &str = "PODNET_RUNROOT";
pub const ENV_CNI_CONFIG_DIR: &str = "PODNET_CNI_CONFIG_DIR";
pub const ENV_CNI_PATH: &str = "CNI_PATH";
pub const ENV_CNI_CACHE_DIR: &str = "PODNET_CNI_CACHE_DIR";
pub const ENV_RUNTIME: &str = "PODNET_RUNTIME";

#[derive(Debug, Clone)]
pub struct Config {
    /// Records, bundles, logs, generated /etc files (survives reboots).
    pub root: PathBuf,
    /// Monitor pids, exit codes, the OCI runtime's state (gone at reboot).
    pub runroot: PathBuf,
    /// Conflists, one per network, as `<name>.conflist`.
    pub cni_config_dir: PathBuf,
    /// Where CNI plugins are looked up, in order.
    pub cni_plugin_dirs: Vec<PathBuf>,
    /// libcni's result cache (DEL and CHECK get `prevResult` from it).
    pub cni_cache_dir: PathBuf,
    /// The OCI runtime binary (runc, or crun where it works on the host).
    pub runtime: PathBuf,
    /// The `podnet` binary, run as each container's monitor (`podnet monitor ID`).
    pub monitor: PathBuf,
}

impl Config {
    /// The defaults, with the OCI runtime found on PATH (runc first) and the monitor
    /// being the running executable.
    pub fn new() -> Config {
        Config {
            root: DEFAULT_ROOT.into(),
            runroot: DEFAULT_RUNROOT.into(),
            cni_config_dir: DEFAULT_CNI_CONFIG_DIR.into(),
            cni_plugin_dirs: split_path(DEFAULT_CNI_PLUGIN_DIRS),
            cni_cache_dir: DEFAULT_CNI_CACHE_DIR.into(),
            runtime: find_runtime().unwrap_or_else(|| "runc".into()),
            monitor: std::env::current_exe().unwrap_or_else(|_| "podnet".into()),
        }
    }

    /// The defaults with the environment's overrides (the variables the CLI reads):
    /// how another tool (netctl) finds the engine's state.
    pub fn from_env() -> Config {
        let mut c = Config::new();
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        if let Some(v) = var(ENV_ROOT) {
            c.root = v;
        }
        if let Some(v) = var(ENV_RUNROOT) {
            c.runroot = v;
        }
        if let Some(v) = var(ENV_CNI_CONFIG_DIR) {
            c.cni_config_dir = v;
        }
        if let Some(v) = var(ENV_CNI_PATH) {
            c.cni_plugin_dirs = split_path(&v.to_string_lossy());
        }
        if let Some(v) = var(ENV_CNI_CACHE_DIR) {
            c.cni_cache_dir = v;
        }
        if let Some(v) = var(ENV_RUNTIME) {
            c.runtime = v;
        }
        c
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root.join("pods")
    }

    /// The OCI runtime's `--root`.
    pub fn runtime_root(&self) -> PathBuf {
        self.runroot.join("runtime")
    }

    /// Where the runtime state of one container lives (pids, exit code).
    pub fn run_dir(&self, id: &str) -> PathBuf {
        self.runroot.join(id)
    }

    /// The environment that carries this configuration to another `podnet` process
    /// (the monitor; the commands of a generated systemd unit).
    pub fn to_env(&self) -> Vec<(&'static str, String)> {
        let plugin_dirs: Vec<String> = self
            .cni_plugin_dirs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        vec![
            (ENV_ROOT, self.root.display().to_string()),
            (ENV_RUNROOT, self.runroot.display().to_string()),
            (
                ENV_CNI_CONFIG_DIR,
                self.cni_config_dir.display().to_string(),
            ),
            (ENV_CNI_PATH, plugin_dirs.join(":")),
            (ENV_CNI_CACHE_DIR, self.cni_cache_dir.display().to_string()),
            (ENV_RUNTIME, self.runtime.display().to_string()),
        ]
    }

    pub fn runtime_name(&self) -> String {
        self.runtime
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.runtime.display().to_string())
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

/// runc, else crun, on PATH.
fn find_runtime() -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/sbin:/usr/bin:/sbin:/bin".into());
    ["runc", "crun"].iter().find_map(|name| {
        split_path(&path)
            .into_iter()
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    })
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
