//! Containers: create (record → network → files → bundle), start (monitor), stop, rm,
//! ps, inspect, logs, exec.
//!
//! The network lives from `create` to `rm`: `stop` ends the process only, so a restart
//! keeps the address, the names and the published ports without asking IPAM again.
//! After a reboot (the pin under /run/netns is gone) `start` tears the stale
//! attachments down and sets the network up anew; a static `--ip` comes back the same.

use std::fs;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files::{self, HostLine, Resolv};
use crate::monitor::{self, RunFiles};
use crate::network;
use crate::oci::{self, Runtime};
use crate::options::{CreateOptions, NetworkChoice};
use crate::sandbox::{self, Owner};
use crate::state::{
    self, find, list, new_id, now, record_dir, save, short_id, validate_name, write_atomic,
    Attached, Container, Lock, NetMode, NetSandbox, Phase, Pod,
};
use crate::{Config, Engine};

/// What `ps` shows of a container's process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "code")]
pub enum Status {
    /// Network set-up was interrupted; `start` redoes it, `rm` undoes it.
    Configuring,
    Created,
    Running,
    Exited(i32),
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Configuring => f.write_str("configuring"),
            Status::Created => f.write_str("created"),
            Status::Running => f.write_str("running"),
            Status::Exited(c) => write!(f, "exited ({c})"),
        }
    }
}

/// One row of `ps`.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerView {
    pub id: String,
    pub name: String,
    pub status: Status,
    pub command: String,
    pub network: String,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<String>,
    pub pod: Option<String>,
    pub created: u64,
}

pub fn status(config: &Config, c: &Container) -> Status {
    if c.phase == Phase::Configuring {
        return Status::Configuring;
    }
    let files = RunFiles::new(config, &c.id);
    if files.running_pid().is_some() {
        return Status::Running;
    }
    match files.exit_code() {
        Some(code) => Status::Exited(code),
        None => Status::Created,
    }
}

impl Engine {
    /// `create`: the record first (so an interruption is visible to `rm`), then the
    /// network, the /etc files and the bundle. A failure undoes everything.
    pub fn create(&self, opts: CreateOptions) -> Result<Container> {
        let rootfs = check_rootfs(&opts.rootfs)?;
        if opts.command.is_empty() {
            return Err(Error::invalid(
                "command",
                "a container needs a command (after --)",
            ));
        }
        let lock = Lock::take(&self.config)?;
        let id = new_id()?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| format!("ctr-{}", short_id(&id)));
        validate_name("--name", &name)?;
        state::ensure_name_free::<Container>(&self.config, &name)?;
        let hostname = opts.hostname.clone().unwrap_or_else(|| name.clone());
        validate_hostname(&hostname)?;
        let (net, pod) = self.net_mode(&opts)?;
        let mut c = Container {
            id,
            name,
            created: now(),
            rootfs,
            command: opts.command,
            env: opts.env,
            hostname: pod.as_ref().map_or(hostname, |p| {
                opts.hostname.unwrap_or_else(|| p.hostname.clone())
            }),
            net,
            add_hosts: opts.net.add_hosts,
            dns: opts.net.dns,
            phase: Phase::Configuring,
        };
        save(&self.config, &lock, &c)?;
        if let Err(e) = self.configure(&lock, &mut c) {
            let _ = self.undo(&lock, &c);
            return Err(e);
        }
        Ok(c)
    }

    /// The network mode of a new container, checked against the flags that only some
    /// modes take.
    fn net_mode(&self, opts: &CreateOptions) -> Result<(NetMode, Option<Pod>)> {
        let own_only = |mode: &str| -> Result<()> {
            let flag = [
                (!opts.net.ips.is_empty(), "--ip"),
                (!opts.net.ports.is_empty(), "-p"),
                (!opts.net.aliases.is_empty(), "--network-alias"),
            ]
            .into_iter()
            .find_map(|(set, f)| set.then_some(f));
            match flag {
                Some(f) => Err(Error::invalid(f, format!("cannot be used with {mode}"))),
                None => Ok(()),
            }
        };
        if let Some(p) = &opts.pod {
            if opts.net.network != NetworkChoice::Default {
                return Err(Error::invalid(
                    "--network",
                    "a pod member uses its pod's network",
                ));
            }
            own_only("--pod (set it on the pod)")?;
            if !opts.net.add_hosts.is_empty() {
                return Err(Error::invalid(
                    "--add-host",
                    "pod members share the pod's /etc/hosts (set it on the pod)",
                ));
            }
            let pod = find::<Pod>(&self.config, p)?;
            return Ok((NetMode::Pod { id: pod.id.clone() }, Some(pod)));
        }
        match &opts.net.network {
            NetworkChoice::Host => own_only("--network host").map(|()| (NetMode::Host, None)),
            NetworkChoice::None => {
                own_only("--network none").map(|()| (NetMode::Own(NetSandbox::default()), None))
            }
            NetworkChoice::Container(x) => {
                own_only("--network container:")?;
                let target = find::<Container>(&self.config, x)?;
                Ok(match target.net {
                    NetMode::Own(_) => (NetMode::Container { id: target.id }, None),
                    NetMode::Host => (NetMode::Host, None),
                    other => (other, None),
                })
            }
            NetworkChoice::Default | NetworkChoice::Networks(_) => {
                let networks = match &opts.net.network {
                    NetworkChoice::Networks(n) => n.clone(),
                    _ => vec![crate::config::DEFAULT_NETWORK.to_owned()],
                };
                self.check_static_ips(&networks[0], &opts.net.ips)?;
                for n in &networks {
                    network::find(&self.config, n)?;
                }
                Ok((NetMode::Own(opts.net.sandbox(networks)), None))
            }
        }
    }

    /// `--ip` must be inside the first network, and not taken by another record.
    pub(crate) fn check_static_ips(&self, network: &str, ips: &[IpAddr]) -> Result<()> {
        if ips.is_empty() {
            return Ok(());
        }
        let (_, info) = network::find(&self.config, network)?;
        for ip in ips {
            let flag = if ip.is_ipv4() { "--ip" } else { "--ip6" };
            if !info.subnets.iter().any(|s| s.subnet.contains(*ip)) {
                let subnets: Vec<String> =
                    info.subnets.iter().map(|s| s.subnet.to_string()).collect();
                return Err(Error::invalid(
                    flag,
                    format!(
                        "{ip} is not in network {network:?} ({})",
                        subnets.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Network, files and bundle of a record in `Configuring`; then `Ready`.
    fn configure(&self, lock: &Lock, c: &mut Container) -> Result<()> {
        if let NetMode::Own(net) = &mut c.net {
            sandbox::setup(
                &self.config,
                Owner {
                    id: &c.id,
                    name: &c.name,
                },
                net,
            )?;
            save(&self.config, lock, c)?;
        }
        self.write_files(c)?;
        c.phase = Phase::Ready;
        save(&self.config, lock, c)?;
        if let NetMode::Pod { id } = &c.net {
            self.write_pod_hosts(lock, id)?;
        }
        Ok(())
    }

    /// Undoes a container's network and files and forgets it.
    fn undo(&self, lock: &Lock, c: &Container) -> Result<()> {
        let mut errors = Vec::new();
        if let NetMode::Own(net) = &c.net {
            if let Err(e) = sandbox::teardown(
                &self.config,
                Owner {
                    id: &c.id,
                    name: &c.name,
                },
                net,
            ) {
                errors.push(e);
            }
        }
        if errors.is_empty() {
            let _ = Runtime::new(&self.config).delete(&c.id);
            let run = self.config.run_dir(&c.id);
            let _ = fs::remove_dir_all(&run);
            if let Err(e) = state::remove::<Container>(&self.config, lock, &c.id) {
                errors.push(e);
            }
            if let NetMode::Pod { id } = &c.net {
                let _ = self.write_pod_hosts(lock, id);
            }
        }
        Error::collect(errors)
    }

    /// The sandbox whose namespace the container runs in, with its owner's identity.
    fn sandbox_of(&self, c: &Container) -> Result<Option<(String, String, NetSandbox)>> {
        Ok(match &c.net {
            NetMode::Own(n) => Some((c.id.clone(), c.name.clone(), n.clone())),
            NetMode::Container { id } => {
                let o = state::load::<Container>(&self.config, id).map_err(|_| {
                    Error::state(
                        format!("container {}", c.name),
                        format!(
                            "the container whose network it joins ({}) is gone",
                            short_id(id)
                        ),
                    )
                })?;
                match o.net {
                    NetMode::Own(n) => Some((o.id, o.name, n)),
                    _ => None,
                }
            }
            NetMode::Pod { id } => {
                let p = state::load::<Pod>(&self.config, id)?;
                Some((p.id, p.name, p.net))
            }
            NetMode::Host => None,
        })
    }

    /// /etc/hosts, /etc/resolv.conf, /etc/hostname and config.json of a container.
    fn write_files(&self, c: &Container) -> Result<()> {
        let host_resolv =
            Resolv::parse(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
        let sb = self.sandbox_of(c)?;
        let attachments: Vec<Attached> = sb
            .as_ref()
            .map(|s| s.2.attachments.clone())
            .unwrap_or_default();
        let hosts = match (&c.net, &sb) {
            (NetMode::Pod { .. }, _) => None,
            (NetMode::Host, _) => {
                let base = fs::read_to_string("/etc/hosts").unwrap_or_default();
                Some(files::hosts(
                    &[HostLine::new(
                        "127.0.1.1".parse().expect("an address"),
                        [&c.hostname, &c.name],
                    )],
                    &c.add_hosts,
                    Some(&base),
                ))
            }
            (NetMode::Container { .. }, Some((_, owner, _))) => {
                let own = files::own_lines(&attachments, &[&c.hostname, &c.name, owner]);
                Some(files::hosts(&own, &c.add_hosts, None))
            }
            _ => Some(files::hosts(
                &files::own_lines(&attachments, &[&c.hostname, &c.name]),
                &c.add_hosts,
                None,
            )),
        };
        let dir = record_dir::<Container>(&self.config, &c.id);
        let hosts_file = match (&hosts, &c.net) {
            (Some(text), _) => {
                write_atomic(&dir.join("hosts"), text.as_bytes())?;
                dir.join("hosts")
            }
            (None, NetMode::Pod { id }) => record_dir::<Pod>(&self.config, id).join("hosts"),
            (None, _) => unreachable!("only pod members share a hosts file"),
        };
        let resolv = files::resolv(&c.dns, &attachments, &host_resolv);
        write_atomic(&dir.join("resolv.conf"), resolv.render().as_bytes())?;
        write_atomic(
            &dir.join("hostname"),
            format!("{}\n", c.hostname).as_bytes(),
        )?;
        let netns = match &c.net {
            NetMode::Host => None,
            _ => sb.as_ref().map(|s| sandbox::netns_path(&s.0)),
        };
        let spec = oci::Spec {
            rootfs: &c.rootfs,
            args: &c.command,
            env: &c.env,
            hostname: &c.hostname,
            netns: netns.as_deref(),
            binds: vec![
                ("/etc/hosts", hosts_file),
                ("/etc/resolv.conf", dir.join("resolv.conf")),
                ("/etc/hostname", dir.join("hostname")),
            ],
        };
        let bundle =
            serde_json::to_vec_pretty(&oci::config_json(&spec)).expect("a spec serializes");
        write_atomic(&dir.join("config.json"), &bundle)
    }

    /// Brings a container's network back when its pin is gone (after a reboot) or its
    /// set-up was interrupted; for `container:` and pod members, the owner's.
    fn ensure_network(&self, lock: &Lock, c: &mut Container) -> Result<()> {
        match &mut c.net {
            NetMode::Own(net) => {
                let pinned = sandbox::netns_path(&c.id).exists();
                if !pinned || c.phase == Phase::Configuring {
                    let owner = Owner {
                        id: &c.id,
                        name: &c.name,
                    };
                    let _ = sandbox::teardown(&self.config, owner, net);
                    sandbox::setup(&self.config, owner, net)?;
                }
            }
            NetMode::Container { id } => {
                let mut owner = state::load::<Container>(&self.config, id)?;
                self.ensure_network(lock, &mut owner)?;
                save(&self.config, lock, &owner)?;
            }
            NetMode::Pod { id } => self.ensure_pod_network(lock, id)?,
            NetMode::Host => {}
        }
        self.write_files(c)?;
        c.phase = Phase::Ready;
        save(&self.config, lock, c)
    }

    /// `start`: the network if it needs it, then the monitor. Returns once the process
    /// runs (the monitor reports it); a running container is left alone.
    pub fn start(&self, key: &str) -> Result<Container> {
        let mut c = {
            let lock = Lock::take(&self.config)?;
            let mut c = find::<Container>(&self.config, key)?;
            if status(&self.config, &c) == Status::Running {
                return Ok(c);
            }
            self.ensure_network(&lock, &mut c)?;
            c
        };
        let files = RunFiles::new(&self.config, &c.id);
        let _ = fs::remove_dir_all(&files.dir);
        let _ = Runtime::new(&self.config).delete(&c.id);
        self.spawn_monitor(&c.id)?;
        c.phase = Phase::Ready;
        Ok(c)
    }

    fn spawn_monitor(&self, id: &str) -> Result<()> {
        let mut child = Command::new(&self.config.monitor)
            .arg("monitor")
            .arg(id)
            .envs(self.config.to_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(Error::io(&self.config.monitor))?;
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout is piped");
        let _ = BufReader::new(out).read_line(&mut line);
        match line.trim() {
            "ok" => Ok(()),
            msg => {
                let _ = child.wait();
                Err(Error::state(
                    format!("container {}", short_id(id)),
                    match msg.is_empty() {
                        true => "its monitor exited without a word".to_owned(),
                        false => msg.to_owned(),
                    },
                ))
            }
        }
    }

    /// `stop`: SIGTERM, then SIGKILL after `timeout`. Nothing of the network is released.
    /// Returns whether the container was running.
    pub fn stop(&self, key: &str, timeout: Duration) -> Result<bool> {
        let c = find::<Container>(&self.config, key)?;
        self.kill_and_wait(&c, timeout)
    }

    fn kill_and_wait(&self, c: &Container, timeout: Duration) -> Result<bool> {
        let files = RunFiles::new(&self.config, &c.id);
        if files.running_pid().is_none() {
            return Ok(false);
        }
        let rt = Runtime::new(&self.config);
        if !timeout.is_zero() {
            let _ = rt.kill(&c.id, "TERM");
            if wait_until(timeout, || files.running_pid().is_none()) {
                return Ok(true);
            }
        }
        let _ = rt.kill(&c.id, "KILL");
        match wait_until(Duration::from_secs(10), || files.running_pid().is_none()) {
            true => Ok(true),
            false => Err(Error::state(
                format!("container {}", c.name),
                "still running after SIGKILL",
            )),
        }
    }

    pub fn restart(&self, key: &str, timeout: Duration) -> Result<Container> {
        self.stop(key, timeout)?;
        self.start(key)
    }

    /// `rm`: refuses a running container (unless `force`, which kills it) and one whose
    /// network others join; then DEL, unpin, forget. When a DEL fails the record stays
    /// so that `rm` can be retried.
    pub fn remove(&self, key: &str, force: bool) -> Result<Container> {
        let lock = Lock::take(&self.config)?;
        let c = find::<Container>(&self.config, key)?;
        let dependents: Vec<String> = list::<Container>(&self.config)
            .into_iter()
            .filter(|d| matches!(&d.net, NetMode::Container { id } if *id == c.id))
            .map(|d| d.name)
            .collect();
        if !dependents.is_empty() {
            return Err(Error::InUse {
                what: format!("the network namespace of container {}", c.name),
                by: format!("container {}", dependents.join(", container ")),
            });
        }
        if status(&self.config, &c) == Status::Running {
            if !force {
                return Err(Error::state(
                    format!("container {}", c.name),
                    "is running (stop it first, or rm -f)",
                ));
            }
            self.kill_and_wait(&c, Duration::ZERO)?;
        }
        self.undo(&lock, &c)?;
        Ok(c)
    }

    pub fn list(&self, all: bool) -> Vec<ContainerView> {
        let mut rows: Vec<ContainerView> = list::<Container>(&self.config)
            .into_iter()
            .map(|c| self.view(&c))
            .filter(|v| all || v.status == Status::Running)
            .collect();
        rows.sort_by(|a, b| (a.created, &a.name).cmp(&(b.created, &b.name)));
        rows
    }

    fn view(&self, c: &Container) -> ContainerView {
        let sb = self.sandbox_of(c).ok().flatten();
        let (network, pod) = match &c.net {
            NetMode::Own(n) if n.networks.is_empty() => ("none".to_owned(), None),
            NetMode::Own(n) => (n.networks.join(","), None),
            NetMode::Host => ("host".to_owned(), None),
            NetMode::Container { .. } => (
                format!("container:{}", sb.as_ref().map_or("?", |s| s.1.as_str())),
                None,
            ),
            NetMode::Pod { .. } => ("pod".to_owned(), sb.as_ref().map(|s| s.1.clone())),
        };
        let (ips, ports) = match &sb {
            Some((_, _, n)) => (
                n.attachments
                    .iter()
                    .flat_map(|a| a.ips.iter().map(|i| i.ip()))
                    .collect(),
                n.ports
                    .iter()
                    .map(|p| {
                        let ip = if p.host_ip.is_empty() {
                            "0.0.0.0"
                        } else {
                            &p.host_ip
                        };
                        format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
                    })
                    .collect(),
            ),
            None => (vec![], vec![]),
        };
        ContainerView {
            id: c.id.clone(),
            name: c.name.clone(),
            status: status(&self.config, c),
            command: c.command.join(" "),
            network,
            ips,
            ports,
            pod,
            created: c.created,
        }
    }

    /// Everything known of a container: the record, the process, the CNI results.
    pub fn inspect(&self, key: &str) -> Result<Value> {
        let c = find::<Container>(&self.config, key)?;
        let files = RunFiles::new(&self.config, &c.id);
        let sb = self.sandbox_of(&c)?;
        let results = sb
            .as_ref()
            .map(|(id, name, n)| sandbox::results(&self.config, Owner { id, name }, n));
        Ok(json!({
            "Id": c.id,
            "Name": c.name,
            "State": {
                "Status": status(&self.config, &c).to_string(),
                "Pid": files.running_pid(),
                "ExitCode": files.exit_code(),
            },
            "Record": c,
            "NetNS": sb.as_ref().map(|s| sandbox::netns_path(&s.0)),
            "NetworkResults": results,
            "LogPath": monitor::log_path(&self.config, &c.id),
            "BundlePath": record_dir::<Container>(&self.config, &c.id),
        }))
    }

    /// Copies the log to `out`; with `follow`, keeps copying until the container ends.
    pub fn logs(&self, key: &str, follow: bool, out: &mut dyn Write) -> Result<()> {
        let c = find::<Container>(&self.config, key)?;
        let path = monitor::log_path(&self.config, &c.id);
        let files = RunFiles::new(&self.config, &c.id);
        follow_file(&path, 0, out, || follow && files.running_pid().is_some()).map(drop)
    }

    /// `run`: create, start, and unless `detach` copy the output until the process ends;
    /// returns its exit status (0 when detached).
    pub fn run(
        &self,
        opts: CreateOptions,
        detach: bool,
        out: &mut dyn Write,
    ) -> Result<(Container, i32)> {
        let c = self.create(opts)?;
        let log = monitor::log_path(&self.config, &c.id);
        let from = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        self.start(&c.id)?;
        if detach {
            return Ok((c, 0));
        }
        let files = RunFiles::new(&self.config, &c.id);
        follow_file(&log, from, out, || files.running_pid().is_some())?;
        Ok((c, files.exit_code().unwrap_or(-1)))
    }

    /// `exec`: a command in the running container, with the caller's stdio. Returns its
    /// exit status.
    pub fn exec(&self, key: &str, command: &[String]) -> Result<i32> {
        let c = find::<Container>(&self.config, key)?;
        if status(&self.config, &c) != Status::Running {
            return Err(Error::state(
                format!("container {}", c.name),
                "is not running",
            ));
        }
        if command.is_empty() {
            return Err(Error::invalid("command", "exec needs a command"));
        }
        let status = Runtime::new(&self.config)
            .command("exec")
            .arg(&c.id)
            .args(command)
            .status()
            .map_err(Error::io(&self.config.runtime))?;
        Ok(status.code().unwrap_or(125))
    }
}

fn check_rootfs(rootfs: &Path) -> Result<PathBuf> {
    let abs = fs::canonicalize(rootfs)
        .map_err(|e| Error::invalid("--rootfs", format!("{}: {e}", rootfs.display())))?;
    if !abs.is_dir() {
        return Err(Error::invalid(
            "--rootfs",
            format!("{} is not a directory", rootfs.display()),
        ));
    }
    Ok(abs)
}

fn validate_hostname(h: &str) -> Result<()> {
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    match ok {
        true => Ok(()),
        false => Err(Error::invalid(
            "--hostname",
            format!("{h:?} is not a host name"),
        )),
    }
}

/// Polls `done` every 5 ms for at most `limit`.
fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    done()
}

/// Copies `path` from `from` to `out`, then more as it grows while `more()` holds.
fn follow_file(
    path: &Path,
    from: u64,
    out: &mut dyn Write,
    mut more: impl FnMut() -> bool,
) -> Result<u64> {
    let mut f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(from),
        Err(e) => return Err(Error::io(path)(e)),
    };
    f.seek(SeekFrom::Start(from)).map_err(Error::io(path))?;
    let mut pos = from;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n > 0 {
            let _ = out.write_all(&buf[..n]);
            let _ = out.flush();
            pos += n as u64;
            continue;
        }
        if !more() {
            // One last read: what was written between the last read and the end.
            let n = f.read(&mut buf).map_err(Error::io(path))?;
            let _ = out.write_all(&buf[..n]);
            return Ok(pos + n as u64);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
