//! A containerd of the test's own, driven through the CRI API as the kubelet drives it.
//!
//! [`Containerd::start`] writes a config.toml whose `root`, `state` and socket are under
//! a directory of the test (inside the sandbox's tmpfs), whose CRI plugin takes its CNI
//! plugins from the directory under test and its conflist from a directory of the test,
//! and imports a busybox image built here as an OCI layout (no registry exists here); the
//! same image is the sandbox ("pause") image. On drop every pod is removed, then the
//! daemon and the shims it started are killed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ExecSyncRequest, ImageSpec,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest, PortMapping, Protocol,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

/// The image every pod and container runs: busybox, with `/www/index.html` = "podnet".
pub const IMAGE: &str = "docker.io/podnet/busybox:test";
/// What `/www/index.html` holds.
pub const PAGE: &str = "podnet";

/// A running containerd with its CRI client.
#[derive(Debug)]
pub struct Containerd {
    pub dir: PathBuf,
    pub socket: PathBuf,
    child: Child,
    rt: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
    pods: Vec<String>,
}

/// One published port of a pod.
#[derive(Debug, Clone)]
pub struct Port {
    pub host: u16,
    pub container: u16,
    pub host_ip: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes an OCI image layout of a static busybox under `dir` and returns the archive
/// `ctr images import` takes.
pub fn busybox_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "www", "etc", "tmp"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static is installed");
    for applet in [
        "sh", "sleep", "httpd", "wget", "ip", "cat", "nc", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    fs::write(root.join("www/index.html"), PAGE).unwrap();
    let layer = dir.join("layer.tar");
    let ok = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&layer)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(ok.success(), "tar of the image layer");
    let oci = dir.join("oci");
    let blobs = oci.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let blob = |bytes: &[u8]| {
        let digest = sha256_hex(bytes);
        fs::write(blobs.join(&digest), bytes).unwrap();
        (format!("sha256:{digest}"), bytes.len())
    };
    let (layer_digest, layer_size) = blob(&fs::read(&layer).unwrap());
    let config = serde_json::json!({"architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}});
    let (config_digest, config_size) = blob(config.to_string().as_bytes());
    let manifest = serde_json::json!({"schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]});
    let (manifest_digest, manifest_size) = blob(manifest.to_string().as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size,
        "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "test"}}]});
    fs::write(oci.join("index.json"), index.to_string()).unwrap();
    fs::write(oci.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = dir.join("image.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&oci)
        .arg("-cf")
        .arg(&archive)
        .arg(".")
        .status()
        .expect("tar runs");
    assert!(ok.success(), "tar of the OCI layout");
    archive
}

fn config_toml(dir: &Path, plugin_dir: &Path, conf_dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{}"
    conf_dir = "{}"
    max_conf_num = 1
"#,
        plugin_dir.display(),
        conf_dir.display()
    )
}

impl Containerd {
    /// Starts containerd under `dir` (created), with `conflist` as its only network and the
    /// CNI plugins of `plugin_dir`, and imports [`IMAGE`].
    pub fn start(dir: &Path, plugin_dir: &Path, conflist: &serde_json::Value) -> Containerd {
        let conf_dir = dir.join("net.d");
        fs::create_dir_all(&conf_dir).unwrap();
        fs::write(conf_dir.join("10-test.conflist"), conflist.to_string()).unwrap();
        fs::write(
            dir.join("config.toml"),
            config_toml(dir, plugin_dir, &conf_dir),
        )
        .unwrap();
        let log = fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd is installed");
        let socket = dir.join("containerd.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = rt.block_on(connect(&socket));
        let c = Containerd {
            dir: dir.to_path_buf(),
            socket,
            child,
            rt,
            client,
            pods: Vec::new(),
        };
        let image = busybox_image(&dir.join("image"));
        let out = c.ctr(&["-n", "k8s.io", "images", "import", image.to_str().unwrap()]);
        assert!(out.0, "ctr images import: {}", out.1);
        c
    }

    /// `ctr --address SOCKET ARGS…`: (success, stdout + stderr).
    pub fn ctr(&self, args: &[&str]) -> (bool, String) {
        crate::net::output(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(args),
        )
    }

    /// The daemon's log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The sandbox config of pod `name`, publishing `ports`, with `annotations`.
    pub fn pod_config(
        &self,
        name: &str,
        ports: &[Port],
        annotations: &[(&str, &str)],
    ) -> PodSandboxConfig {
        let logs = self.dir.join("logs").join(name);
        fs::create_dir_all(&logs).unwrap();
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            port_mappings: ports
                .iter()
                .map(|p| PortMapping {
                    protocol: Protocol::Tcp as i32,
                    container_port: i32::from(p.container),
                    host_port: i32::from(p.host),
                    host_ip: p.host_ip.clone(),
                })
                .collect(),
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    /// `RunPodSandbox`: the pod's id, or the runtime's error.
    pub fn run_pod(&mut self, config: &PodSandboxConfig) -> Result<String, String> {
        let req = RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        let id = self
            .rt
            .block_on(self.client.run_pod_sandbox(req))
            .map_err(|e| e.message().to_owned())?
            .into_inner()
            .pod_sandbox_id;
        self.pods.push(id.clone());
        Ok(id)
    }

    /// The pod's address, as `PodSandboxStatus` reports it.
    pub fn pod_ip(&mut self, id: &str) -> String {
        let req = PodSandboxStatusRequest {
            pod_sandbox_id: id.into(),
            verbose: false,
        };
        let status = self
            .rt
            .block_on(self.client.pod_sandbox_status(req))
            .expect("PodSandboxStatus")
            .into_inner();
        status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .unwrap_or_default()
    }

    /// A container in pod `id` running `command`, created and started.
    pub fn run_container(
        &mut self,
        pod: &str,
        pod_config: &PodSandboxConfig,
        name: &str,
        command: &[&str],
    ) -> String {
        let config = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: command.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            ..Default::default()
        };
        let req = CreateContainerRequest {
            pod_sandbox_id: pod.into(),
            config: Some(config),
            sandbox_config: Some(pod_config.clone()),
        };
        let id = self
            .rt
            .block_on(self.client.create_container(req))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}\n{}", self.log()))
            .into_inner()
            .container_id;
        let req = StartContainerRequest {
            container_id: id.clone(),
        };
        self.rt
            .block_on(self.client.start_container(req))
            .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// `ExecSync` in a container: (exit code, stdout + stderr).
    pub fn exec(&mut self, container: &str, cmd: &[&str]) -> (i32, String) {
        let req = ExecSyncRequest {
            container_id: container.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout: 5,
        };
        let r = self
            .rt
            .block_on(self.client.exec_sync(req))
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {e}"))
            .into_inner();
        (
            r.exit_code,
            format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            ),
        )
    }

    /// `wget -qO- URL` from inside a container, retried for up to 3 s (a server just
    /// started may not listen yet): the page, if one came.
    pub fn fetch_from(&mut self, container: &str, url: &str) -> Option<String> {
        let end = Instant::now() + Duration::from_secs(3);
        loop {
            let (code, out) = self.exec(container, &["wget", "-qO-", url]);
            if code == 0 {
                return Some(out);
            }
            if Instant::now() > end {
                eprintln!("wget {url} in {container}: exit {code}: {out}");
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `StopPodSandbox` then `RemovePodSandbox`.
    pub fn remove_pod(&mut self, id: &str) -> Result<(), String> {
        let stop = StopPodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.client.stop_pod_sandbox(stop))
            .map_err(|e| format!("StopPodSandbox: {}", e.message()))?;
        let rm = RemovePodSandboxRequest {
            pod_sandbox_id: id.into(),
        };
        self.rt
            .block_on(self.client.remove_pod_sandbox(rm))
            .map_err(|e| format!("RemovePodSandbox: {}", e.message()))?;
        self.pods.retain(|p| p != id);
        Ok(())
    }
}

async fn connect(socket: &Path) -> RuntimeServiceClient<Channel> {
    let end = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            Instant::now() < end,
            "containerd did not create {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = socket.to_path_buf();
    let channel = Endpoint::try_from("http://[::]:0")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?))
            }
        }))
        .await
        .expect("connecting to containerd");
    RuntimeServiceClient::new(channel)
}

impl Drop for Containerd {
    fn drop(&mut self) {
        for id in self.pods.clone() {
            let _ = self.remove_pod(&id);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The shims outlive the daemon; they name its socket on their command line.
        let needle = self.socket.display().to_string();
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let cmdline = fs::read(entry.path().join("cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&needle) {
                if let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}
