//! `netavark`: podnet's backend for Podman 5, enabled with containers.conf's
//! `helper_binaries_dir` (docs/podman.md). The command line is netavark's.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use podnet_netavark::{decode, error_json, Backend, Error, CONTRACT_VERSION};

#[derive(Debug, Parser)]
#[command(name = "netavark", disable_version_flag = true)]
struct Opts {
    /// Print the version.
    #[arg(short = 'V', long = "version")]
    version: bool,
    /// Read the JSON from this file instead of stdin.
    #[arg(short, long, global = true)]
    file: Option<PathBuf>,
    /// `nftables` (podnet's tables; `iptables` and `firewalld` are answered with them)
    /// or `none`.
    #[arg(long, env = "NETAVARK_FW", global = true)]
    firewall_driver: Option<String>,
    /// Podman's network run directory.
    #[arg(short, long, global = true)]
    config: Option<PathBuf>,
    #[arg(short, long, global = true, action = clap::ArgAction::Set)]
    rootless: Option<bool>,
    /// aardvark-dns (unused: podnet's own responder serves names).
    #[arg(short, long, global = true)]
    aardvark_binary: Option<PathBuf>,
    /// More directories to find podnet's plugins in.
    #[arg(long = "plugin-directory", global = true)]
    plugin_directories: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Complete a network for `podman network create` (stdin: the request).
    Create,
    /// Attach the namespace to the networks of stdin's document.
    Setup { netns: PathBuf },
    /// Undo a setup (stdin: the same document).
    Teardown { netns: PathBuf },
    /// Set a network's DNS servers.
    Update {
        network_name: String,
        #[arg(long, required = true, num_args = 0..)]
        network_dns_servers: Vec<String>,
    },
    /// Version information as JSON.
    Version,
    /// Put podnet's nft tables and elements back (podnet's watcher does this itself).
    #[command(name = "firewalld-reload")]
    FirewalldReload,
    #[command(name = "firewall-reload")]
    FirewallReload,
    /// netavark's DHCP proxy for macvlan networks.
    #[command(name = "dhcp-proxy")]
    DhcpProxy,
}

/// One linked plugin: its binary's name and the skeleton's dispatch of its type.
macro_rules! linked {
    ($name:literal, $plugin:expr) => {
        ($name, |env, stdin| {
            cni::skel::dispatch(&$plugin, env, stdin)
        })
    };
}

/// The plugins of the chains this backend makes, linked in: run in threads of this
/// process, not exec'd (`PODNET_EXEC_PLUGINS=1` execs them; `dhcp`, which starts its
/// daemon from its own binary, always is).
static LINKED: &[(&str, cni::runtime::exec::Linked)] = &[
    linked!("bridge", bridge::Bridge),
    linked!("static", ipam::Static),
    linked!("portmap", portmap::Portmap),
    linked!("firewall", firewall::Firewall),
    linked!("dnsname", dns::Dnsname),
    linked!(
        "macvlan",
        parent_link::ParentLink(parent_link::Kind::Macvlan)
    ),
    linked!("ipvlan", parent_link::ParentLink(parent_link::Kind::Ipvlan)),
];

fn main() -> ExitCode {
    // The linked plugins' nft commits start podnet's watcher from this binary.
    netkit::nft::watch::serve_if_asked();
    if std::env::var_os("PODNET_EXEC_PLUGINS").is_none_or(|v| v != "1") {
        cni::runtime::exec::link_plugins(LINKED);
    }
    let opts = Opts::parse();
    match run(opts) {
        Ok(out) => {
            if let Some(out) = out {
                println!("{out}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{}", error_json(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(opts: Opts) -> Result<Option<String>, Error> {
    if opts.version {
        return Ok(Some(format!(
            "netavark {CONTRACT_VERSION} (podnet {})",
            env!("CARGO_PKG_VERSION")
        )));
    }
    let no_firewall = match opts.firewall_driver.as_deref() {
        None | Some("" | "nftables" | "iptables" | "firewalld") => false,
        Some("none") => true,
        Some(d) => {
            return Err(Error::Invalid(format!(
                "--firewall-driver: {d:?} is not nftables, iptables, firewalld or none"
            )))
        }
    };
    let dns_port = match std::env::var("NETAVARK_DNS_PORT") {
        Ok(p) if !p.is_empty() => Some(
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| Error::Invalid(format!("NETAVARK_DNS_PORT: {p:?} is not a port")))?,
        ),
        _ => None,
    };
    let backend = Backend {
        config: opts
            .config
            .clone()
            .unwrap_or_else(|| "/run/containers/networks".into()),
        rootless: opts.rootless.unwrap_or(false),
        plugin_path: Backend::plugin_path(&opts.plugin_directories),
        no_firewall,
        dns_port: dns_port.unwrap_or(53),
    };
    let Some(cmd) = opts.cmd else {
        return Err(Error::Invalid(
            "no command: setup, teardown, create, update, version".into(),
        ));
    };
    let input = |file: &Option<PathBuf>| -> Result<Vec<u8>, Error> {
        match file {
            Some(f) => {
                std::fs::read(f).map_err(|e| Error::Io(format!("--file {}: {e}", f.display())))
            }
            None => {
                let mut b = Vec::new();
                std::io::stdin()
                    .read_to_end(&mut b)
                    .map_err(|e| Error::Io(format!("reading stdin: {e}")))?;
                Ok(b)
            }
        }
    };
    match cmd {
        Cmd::Version => Ok(Some(
            serde_json::json!({
                "version": CONTRACT_VERSION,
                "podnet": env!("CARGO_PKG_VERSION"),
                "default_fw_driver": "nftables",
            })
            .to_string(),
        )),
        Cmd::Create => {
            let req = decode("stdin", &input(&opts.file)?)?;
            let net = podnet_netavark::create::create(req, &mut random_pool()?)?;
            if net.driver != "bridge" {
                podnet_netavark::create::parent_exists(&net)?;
            }
            Ok(Some(serde_json::to_string(&net).expect("a network encodes")))
        }
        Cmd::Setup { netns } => {
            let doc = decode("stdin", &input(&opts.file)?)?;
            backend.prepare()?;
            let out = backend.setup(&netns, &doc)?;
            Ok(Some(serde_json::to_string(&out).expect("a status encodes")))
        }
        Cmd::Teardown { netns } => {
            let doc = decode("stdin", &input(&opts.file)?)?;
            backend.prepare()?;
            backend.teardown(&netns, &doc)?;
            Ok(None)
        }
        Cmd::Update {
            network_name,
            network_dns_servers,
        } => {
            backend.prepare()?;
            backend.update(&network_name, &network_dns_servers)?;
            Ok(None)
        }
        Cmd::FirewalldReload | Cmd::FirewallReload => {
            backend.prepare()?;
            backend.reload()?;
            Ok(None)
        }
        Cmd::DhcpProxy => Err(Error::Unsupported(
            "dhcp-proxy: not needed with podnet's backend: macvlan networks with DHCP lease through podnet's dhcp plugin, whose daemon starts on demand".into(),
        )),
    }
}

/// Random bytes for ids and ULA prefixes: `create` takes at most 39.
fn random_pool() -> Result<impl FnMut(&mut [u8]), Error> {
    use std::io::Read as _;
    let mut pool = [0u8; 64];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut pool))
        .map_err(|e| Error::Io(format!("reading /dev/urandom: {e}")))?;
    let mut used = 0;
    Ok(move |buf: &mut [u8]| {
        for b in buf.iter_mut() {
            *b = pool[used % pool.len()];
            used += 1;
        }
    })
}
