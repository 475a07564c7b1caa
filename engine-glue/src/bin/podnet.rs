//! `podnet`: the engine's command line. Parses, calls the library, prints, exits.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use engine_glue::config::{self, Config};
use engine_glue::options::{apply_network_option, parse_add_host, parse_publish};
use engine_glue::state::{short_id, HostEntry, PortMapping};
use engine_glue::{
    CreateOptions, Engine, Error, NetOptions, NetworkChoice, NetworkSpec, PodOptions,
};

#[derive(Debug, Parser)]
#[command(
    name = "podnet",
    version,
    about = "A daemonless engine for containers and pods on podnet's CNI plugins"
)]
struct Cli {
    /// Records, bundles and logs.
    #[arg(long, global = true, env = config::ENV_ROOT, default_value = config::DEFAULT_ROOT)]
    root: PathBuf,
    /// Runtime state (pids, exit codes, the OCI runtime's root).
    #[arg(long, global = true, env = config::ENV_RUNROOT, default_value = config::DEFAULT_RUNROOT)]
    runroot: PathBuf,
    /// Where network conflists are.
    #[arg(long, global = true, env = config::ENV_CNI_CONFIG_DIR, default_value = config::DEFAULT_CNI_CONFIG_DIR)]
    cni_config_dir: PathBuf,
    /// Where CNI plugins are (colon-separated).
    #[arg(long, global = true, env = config::ENV_CNI_PATH, default_value = config::DEFAULT_CNI_PLUGIN_DIRS)]
    cni_plugin_dir: String,
    /// libcni's result cache.
    #[arg(long, global = true, env = config::ENV_CNI_CACHE_DIR, default_value = config::DEFAULT_CNI_CACHE_DIR)]
    cni_cache_dir: PathBuf,
    /// The OCI runtime (default: runc, else crun, on PATH).
    #[arg(long, global = true, env = config::ENV_RUNTIME)]
    runtime: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Manage networks (CNI conflists).
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Manage pods.
    #[command(subcommand)]
    Pod(PodCmd),
    /// Create a container and start it.
    Run {
        /// Print the id and return once it runs, instead of waiting for its end.
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        opts: ContainerArgs,
    },
    /// Create a container (network, files, bundle) without starting it.
    Create {
        #[command(flatten)]
        opts: ContainerArgs,
    },
    /// Start containers.
    Start {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop containers (SIGTERM, SIGKILL after the timeout); the network stays.
    Stop {
        /// Seconds to wait before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop and start containers; address and names stay.
    Restart {
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers: network (leases, rules, names), namespace pin, bundle.
    Rm {
        /// Kill a running container first.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// List containers.
    Ps {
        /// Also those not running.
        #[arg(short, long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show everything known of containers, as JSON.
    Inspect {
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Print a container's output.
    Logs {
        /// Keep printing until the container ends.
        #[arg(short, long)]
        follow: bool,
        container: String,
    },
    /// Run a command in a running container.
    Exec {
        container: String,
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Generate files for other tools.
    #[command(subcommand)]
    Generate(GenerateCmd),
    /// Internal: the per-container monitor started by `start`.
    #[command(hide = true)]
    Monitor { id: String },
}

#[derive(Debug, Subcommand)]
enum GenerateCmd {
    /// A systemd unit that starts the container at boot.
    Systemd {
        /// Seconds `ExecStop` waits before SIGKILL.
        #[arg(short = 't', long = "time", default_value_t = 10)]
        time: u64,
        container: String,
    },
}

#[derive(Debug, Subcommand)]
enum NetworkCmd {
    /// Create a network: a conflist with Podman 4's chain.
    Create {
        name: String,
        /// bridge, macvlan or ipvlan (-o parent=IF -o mode=M; without --subnet: DHCP).
        #[arg(short = 'd', long, default_value = "bridge")]
        driver: String,
        /// host-local (podnet's leases in the subnets), or dhcp (a DHCP server on the
        /// network's LAN; no --subnet).
        #[arg(long = "ipam-driver")]
        ipam_driver: Option<String>,
        #[arg(long)]
        subnet: Vec<ipnetwork::IpNetwork>,
        #[arg(long)]
        gateway: Vec<IpAddr>,
        #[arg(long = "ip-range")]
        ip_range: Vec<ipnetwork::IpNetwork>,
        /// Add an IPv6 subnet (a random ULA /64 unless --subnet gives one).
        #[arg(long)]
        ipv6: bool,
        /// No gateway, no masquerade, no default route.
        #[arg(long)]
        internal: bool,
        /// No dnsname plugin.
        #[arg(long = "disable-dns")]
        disable_dns: bool,
        /// Driver options: isolate=true|false, mtu=N, bridge=NAME; macvlan, ipvlan: parent=IF, mode=M.
        #[arg(short = 'o', long = "opt", value_delimiter = ',')]
        opts: Vec<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a network and who uses it, as JSON.
    Inspect { name: String },
    /// Remove networks nobody uses.
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Put back every container's firewall rules after a firewall reload (as
    /// `netctl reload`; a watcher also does it by itself within a second).
    Reload,
}

#[derive(Debug, Subcommand)]
enum PodCmd {
    /// Create a pod: a network namespace its members share.
    Create {
        name: String,
        #[command(flatten)]
        net: NetArgs,
        #[arg(long)]
        hostname: Option<String>,
    },
    /// List pods.
    #[command(alias = "list")]
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Show a pod, as JSON.
    Inspect { name: String },
    /// Remove pods (with -f, their containers too).
    Rm {
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// The network flags containers and pods share.
#[derive(Debug, Args)]
struct NetArgs {
    /// NET[,NET2], host, none or container:NAME.
    #[arg(long)]
    network: Option<String>,
    /// A static IPv4 address on the first network.
    #[arg(long)]
    ip: Option<std::net::Ipv4Addr>,
    /// A static IPv6 address on the first network.
    #[arg(long)]
    ip6: Option<std::net::Ipv6Addr>,
    /// [hostIP:]hostPort:containerPort[/proto].
    #[arg(short = 'p', long = "publish", value_parser = |s: &str| parse_publish(s).map_err(|e| e.to_string()))]
    publish: Vec<PortMapping>,
    /// Another name on the networks.
    #[arg(long = "network-alias")]
    network_alias: Vec<String>,
    /// NAME:IP for /etc/hosts.
    #[arg(long = "add-host", value_parser = |s: &str| parse_add_host(s).map_err(|e| e.to_string()))]
    add_host: Vec<HostEntry>,
    /// A nameserver for /etc/resolv.conf instead of the network's.
    #[arg(long)]
    dns: Vec<IpAddr>,
}

impl NetArgs {
    fn choice(&self) -> Result<NetworkChoice, Error> {
        self.network
            .as_deref()
            .map_or(Ok(NetworkChoice::Default), NetworkChoice::parse)
    }

    fn options(self) -> Result<NetOptions, Error> {
        Ok(NetOptions {
            network: self.choice()?,
            ips: self
                .ip
                .map(IpAddr::V4)
                .into_iter()
                .chain(self.ip6.map(IpAddr::V6))
                .collect(),
            ports: self.publish,
            aliases: self.network_alias,
            add_hosts: self.add_host,
            dns: self.dns,
        })
    }
}

#[derive(Debug, Args)]
struct ContainerArgs {
    #[arg(long)]
    name: Option<String>,
    /// The root filesystem directory.
    #[arg(long, required = true)]
    rootfs: PathBuf,
    #[command(flatten)]
    net: NetArgs,
    #[arg(long)]
    hostname: Option<String>,
    /// Join this pod's network namespace.
    #[arg(long)]
    pod: Option<String>,
    /// KEY=VALUE.
    #[arg(short, long)]
    env: Vec<String>,
    /// The command and its arguments (after --).
    #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

impl ContainerArgs {
    fn options(self) -> Result<CreateOptions, Error> {
        Ok(CreateOptions {
            net: self.net.options()?,
            name: self.name,
            rootfs: self.rootfs,
            command: self.command,
            env: self.env,
            pod: self.pod,
            hostname: self.hostname,
        })
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = Config {
        root: cli.root.clone(),
        runroot: cli.runroot.clone(),
        cni_config_dir: cli.cni_config_dir.clone(),
        cni_plugin_dirs: cni::runtime::split_path(&cli.cni_plugin_dir),
        cni_cache_dir: cli.cni_cache_dir.clone(),
        runtime: cli.runtime.clone().unwrap_or_else(|| Config::new().runtime),
        ..Config::new()
    };
    let engine = Engine::new(config);
    match dispatch(&engine, cli.command) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("podnet: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).expect("values serialize")
    );
}

/// Runs `f` on each name, reporting every failure; the last error decides the status.
fn each(names: &[String], mut f: impl FnMut(&str) -> Result<(), Error>) -> Result<u8, Error> {
    let mut last = None;
    for n in names {
        if let Err(e) = f(n) {
            eprintln!("podnet: {e}");
            last = Some(e);
        }
    }
    match last {
        Some(e) => Ok(e.exit_code() as u8),
        None => Ok(0),
    }
}

fn dispatch(engine: &Engine, cmd: Cmd) -> Result<u8, Error> {
    match cmd {
        Cmd::Network(n) => network(engine, n),
        Cmd::Pod(p) => pod(engine, p),
        Cmd::Run { detach, opts } => {
            let mut out = std::io::stdout();
            let (c, code) = engine.run(opts.options()?, detach, &mut out)?;
            if detach {
                println!("{}", c.id);
            }
            Ok(code.clamp(0, 255) as u8)
        }
        Cmd::Create { opts } => {
            let c = engine.create(opts.options()?)?;
            println!("{}", c.id);
            Ok(0)
        }
        Cmd::Start { containers } => each(&containers, |c| {
            engine.start(c).map(|c| println!("{}", c.name))
        }),
        Cmd::Stop { time, containers } => each(&containers, |c| {
            engine
                .stop(c, Duration::from_secs(time))
                .map(|_| println!("{c}"))
        }),
        Cmd::Restart { time, containers } => each(&containers, |c| {
            engine
                .restart(c, Duration::from_secs(time))
                .map(|c| println!("{}", c.name))
        }),
        Cmd::Rm { force, containers } => each(&containers, |c| {
            engine.remove(c, force).map(|c| println!("{}", c.name))
        }),
        Cmd::Ps { all, json } => {
            let rows = engine.list(all);
            if json {
                print_json(&rows);
                return Ok(0);
            }
            println!(
                "{:<12}  {:<16}  {:<12}  {:<20}  {:<28}  {:<20}  COMMAND",
                "ID", "NAME", "STATUS", "NETWORK", "IPS", "PORTS"
            );
            for r in rows {
                let ips: Vec<String> = r.ips.iter().map(ToString::to_string).collect();
                println!(
                    "{:<12}  {:<16}  {:<12}  {:<20}  {:<28}  {:<20}  {}",
                    short_id(&r.id),
                    r.name,
                    r.status.to_string(),
                    r.pod.map_or(r.network, |p| format!("pod:{p}")),
                    ips.join(","),
                    r.ports.join(","),
                    r.command
                );
            }
            Ok(0)
        }
        Cmd::Inspect { containers } => {
            let mut out = Vec::new();
            let code = each(&containers, |c| engine.inspect(c).map(|v| out.push(v)))?;
            print_json(&out);
            Ok(code)
        }
        Cmd::Logs { follow, container } => {
            let mut out = std::io::stdout();
            engine.logs(&container, follow, &mut out)?;
            let _ = out.flush();
            Ok(0)
        }
        Cmd::Exec { container, command } => {
            Ok(engine.exec(&container, &command)?.clamp(0, 255) as u8)
        }
        Cmd::Generate(GenerateCmd::Systemd { time, container }) => {
            let podnet = std::env::current_exe().unwrap_or_else(|_| "podnet".into());
            print!("{}", engine.generate_systemd(&container, &podnet, time)?);
            Ok(0)
        }
        Cmd::Monitor { id } => {
            Ok(engine_glue::monitor::run(&engine.config, &id).clamp(0, 255) as u8)
        }
    }
}

fn network(engine: &Engine, cmd: NetworkCmd) -> Result<u8, Error> {
    match cmd {
        NetworkCmd::Create {
            name,
            driver,
            ipam_driver,
            subnet,
            gateway,
            ip_range,
            ipv6,
            internal,
            disable_dns,
            opts,
        } => {
            let mut spec = NetworkSpec {
                name,
                subnets: subnet,
                gateways: gateway,
                ip_ranges: ip_range,
                ipv6,
                internal,
                disable_dns,
                driver,
                ipam_driver,
                ..NetworkSpec::default()
            };
            for o in &opts {
                apply_network_option(&mut spec, o)?;
            }
            let info = engine.network_create(spec)?;
            println!("{}", info.name);
            Ok(0)
        }
        NetworkCmd::Ls { json } => {
            let nets = engine.network_list()?;
            if json {
                print_json(&nets);
                return Ok(0);
            }
            println!(
                "{:<16}  {:<8}  {:<14}  {:<4}  SUBNETS",
                "NAME", "DRIVER", "BRIDGE", "DNS"
            );
            for n in nets {
                let subnets: Vec<String> = n.subnets.iter().map(|s| s.subnet.to_string()).collect();
                println!(
                    "{:<16}  {:<8}  {:<14}  {:<4}  {}",
                    n.name,
                    n.driver,
                    n.bridge.unwrap_or_default(),
                    if n.dns_enabled { "yes" } else { "no" },
                    subnets.join(",")
                );
            }
            Ok(0)
        }
        NetworkCmd::Inspect { name } => {
            let (info, users) = engine.network_inspect(&name)?;
            print_json(&serde_json::json!({"network": info, "usedBy": users}));
            Ok(0)
        }
        NetworkCmd::Rm { names } => each(&names, |n| {
            engine.network_remove(n).map(|()| println!("{n}"))
        }),
        NetworkCmd::Reload => {
            let r = netkit::nft::restore()?;
            println!("{} attachments restored", r.records);
            Ok(0)
        }
    }
}

fn pod(engine: &Engine, cmd: PodCmd) -> Result<u8, Error> {
    match cmd {
        PodCmd::Create {
            name,
            net,
            hostname,
        } => {
            let p = engine.pod_create(PodOptions {
                name,
                net: net.options()?,
                hostname,
            })?;
            println!("{}", p.id);
            Ok(0)
        }
        PodCmd::Ls { json } => {
            let pods = engine.pod_list();
            if json {
                let v: Vec<_> = pods
                    .iter()
                    .map(|(p, m)| serde_json::json!({"pod": p, "members": m}))
                    .collect();
                print_json(&v);
                return Ok(0);
            }
            println!(
                "{:<12}  {:<16}  {:<20}  {:<28}  MEMBERS",
                "ID", "NAME", "NETWORKS", "IPS"
            );
            for (p, members) in pods {
                let ips: Vec<String> = p
                    .net
                    .attachments
                    .iter()
                    .flat_map(|a| a.ips.iter().map(|i| i.ip().to_string()))
                    .collect();
                println!(
                    "{:<12}  {:<16}  {:<20}  {:<28}  {}",
                    short_id(&p.id),
                    p.name,
                    p.net.networks.join(","),
                    ips.join(","),
                    members.join(",")
                );
            }
            Ok(0)
        }
        PodCmd::Inspect { name } => {
            print_json(&engine.pod_inspect(&name)?);
            Ok(0)
        }
        PodCmd::Rm { force, names } => each(&names, |n| {
            engine.pod_remove(n, force).map(|p| println!("{}", p.name))
        }),
    }
}
