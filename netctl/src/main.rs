//! `netctl`: the netns toolkit on the command line.

#![forbid(unsafe_code)]

mod cnitool;
mod error;
mod link;
mod ns;
mod target;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};
use ipnetwork::IpNetwork;
use serde_json::json;

use crate::error::{Error, Result, Verb};
use crate::target::Target;

/// The netns toolkit: namespaces, direct veth links between containers, and CNI networks
/// on any namespace.
///
/// Targets name a network namespace: `pid:1234` (a process's), a path
/// (`/proc/1234/ns/net`, a bind mount), or a name pinned under /run/netns.
#[derive(Debug, Parser)]
#[command(name = "netctl", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Wire two namespaces with a veth pair: point-to-point addresses, host routes, up.
    ///
    /// Without --ip/--peer-ip, a free pair of /32s (IPv4) or /128s (IPv6) is taken from
    /// --range. Running the same command again changes nothing.
    Link {
        a: String,
        b: String,
        /// Address of A's end (with --peer-ip).
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Address of B's end (with --ip).
        #[arg(long)]
        peer_ip: Option<std::net::IpAddr>,
        /// Interface name in A (default `pn-` and a hash of B).
        #[arg(long)]
        name: Option<String>,
        /// Interface name in B (default `pn-` and a hash of A).
        #[arg(long)]
        peer_name: Option<String>,
        #[arg(long)]
        mtu: Option<u32>,
        /// Where default address pairs come from.
        #[arg(long, env = "NETCTL_LINK_RANGE", default_value = link::DEFAULT_RANGE)]
        range: IpNetwork,
        /// Print the link as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a link made by `netctl link` (either namespace may be gone already).
    Unlink { a: String, b: String },
    /// List the links made by `netctl link`, with their state.
    Links {
        #[arg(long)]
        json: bool,
    },
    /// Network namespaces, like `ip netns`.
    Ns {
        #[command(subcommand)]
        command: NsCmd,
    },
    /// ADD a CNI network to a namespace (the cnitool equivalent); prints the result.
    Add(CniCmd),
    /// CHECK a CNI network of a namespace against its cached result.
    Check(CniCmd),
    /// DEL a CNI network from a namespace (with the cached result as prevResult).
    Del(CniCmd),
    /// GC a CNI network: attachments whose namespace is gone are released.
    Gc(CniNet),
    /// STATUS of a CNI network: whether its plugins are ready for ADD.
    Status(CniNet),
    /// Put back podnet's nftables rules after a firewall reload (`nft flush ruleset`,
    /// `systemctl restart nftables`): the tables, every attachment's published ports,
    /// masquerade, isolation and DNS elements from the journals, and the accepts in
    /// the host's drop-policy chains. Idempotent. (A watcher does it by itself within
    /// a second of a reload; this is the command for when it cannot run.)
    Reload {
        #[arg(long)]
        json: bool,
    },
    /// Print shell completions.
    Completions { shell: clap_complete::Shell },
    /// Write man pages (netctl.1 and one per subcommand) into DIR.
    Man { dir: PathBuf },
}

#[derive(Debug, Subcommand)]
enum NsCmd {
    /// Create a namespace pinned under /run/netns.
    Add { name: String },
    /// List the namespaces pinned under /run/netns.
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Delete a pinned namespace.
    Rm { name: String },
    /// Run a command inside a namespace (with /etc/netns/NAME overlays, as `ip netns exec`).
    Exec {
        name: String,
        #[arg(trailing_var_arg = true, required = true)]
        command: Vec<String>,
    },
    /// Links, addresses, routes and neighbours of a namespace.
    Show {
        target: String,
        #[arg(long)]
        json: bool,
    },
    /// The names under /run/netns of the namespace a target is in.
    Identify { target: String },
}

#[derive(Debug, clap::Args)]
struct CniNet {
    network: String,
    #[command(flatten)]
    env: CniEnv,
}

#[derive(Debug, clap::Args)]
struct CniCmd {
    network: String,
    target: String,
    /// Interface name in the namespace.
    #[arg(long, default_value = "eth0")]
    ifname: String,
    /// Container id (default: derived from the namespace path, as cnitool does).
    #[arg(long)]
    id: Option<String>,
    /// Capability arguments as a JSON object (`{"portMappings": [...]}`).
    #[arg(long, env = "CAP_ARGS")]
    cap_args: Option<String>,
    #[command(flatten)]
    env: CniEnv,
}

#[derive(Debug, clap::Args)]
struct CniEnv {
    /// Where conflists are read from.
    #[arg(long, env = "NETCONFPATH", default_value = cnitool::DEFAULT_NETCONFPATH)]
    netconfpath: PathBuf,
    /// Plugin directories, `:`-separated.
    #[arg(long, env = "CNI_PATH", default_value = cnitool::DEFAULT_CNI_PATH)]
    cni_path: String,
    /// `CNI_ARGS` for every plugin (`K=V;K2=V2`).
    #[arg(long, env = "CNI_ARGS", default_value = "")]
    cni_args: String,
}

fn invocation(env: &CniEnv, c: Option<&CniCmd>) -> cnitool::Invocation {
    cnitool::Invocation {
        netconfpath: env.netconfpath.clone(),
        cni_path: env.cni_path.clone(),
        cni_args: env.cni_args.clone(),
        capability_args: c.and_then(|c| c.cap_args.clone()),
        ifname: c.map_or_else(|| "eth0".into(), |c| c.ifname.clone()),
        container_id: c.and_then(|c| c.id.clone()),
    }
}

fn print_json(v: &impl serde::Serialize) {
    println!("{}", serde_json::to_string_pretty(v).expect("serializes"));
}

fn cni_verb(verb: Verb, c: &CniCmd) -> Result<()> {
    if let Some(result) = invocation(&c.env, Some(c)).run(verb, &c.network, Some(&c.target))? {
        print_json(&result);
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Link {
            a,
            b,
            ip,
            peer_ip,
            name,
            peer_name,
            mtu,
            range,
            json,
        } => {
            let (ta, tb) = (Target::resolve(&a)?, Target::resolve(&b)?);
            let opts = link::LinkOptions {
                ip,
                peer_ip,
                name,
                peer_name,
                mtu,
                range: Some(range),
            };
            let (rec, new) = link::link(&ta, &tb, &opts)?;
            if json {
                print_json(&rec);
            } else {
                println!(
                    "{} {} {} <-> {} {} {}{}",
                    rec.a.target,
                    rec.a.ifname,
                    rec.a.addr,
                    rec.b.target,
                    rec.b.ifname,
                    rec.b.addr,
                    if new { "" } else { " (already linked)" }
                );
            }
        }
        Cmd::Unlink { a, b } => {
            let rec = link::unlink(&a, &b)?;
            println!(
                "unlinked {} {} <-> {} {}",
                rec.a.target, rec.a.ifname, rec.b.target, rec.b.ifname
            );
        }
        Cmd::Links { json } => {
            let all: Vec<_> = link::records()
                .into_iter()
                .map(|(_, r)| {
                    let state = match (link::alive(&r.a), link::alive(&r.b)) {
                        (true, true) => "up".to_string(),
                        (false, _) => format!("stale: the namespace of {} is gone", r.a.target),
                        (_, false) => format!("stale: the namespace of {} is gone", r.b.target),
                    };
                    (r, state)
                })
                .collect();
            if json {
                let v: Vec<_> = all
                    .iter()
                    .map(|(r, s)| json!({"a": r.a, "b": r.b, "mtu": r.mtu, "state": s}))
                    .collect();
                print_json(&v);
            } else {
                println!(
                    "{:<20} {:<14} {:<16} {:<20} {:<14} {:<16} STATE",
                    "A", "IF", "ADDRESS", "B", "IF", "ADDRESS"
                );
                for (r, s) in all {
                    println!(
                        "{:<20} {:<14} {:<16} {:<20} {:<14} {:<16} {s}",
                        r.a.target, r.a.ifname, r.a.addr, r.b.target, r.b.ifname, r.b.addr
                    );
                }
            }
        }
        Cmd::Ns { command } => match command {
            NsCmd::Add { name } => ns::add(&name)?,
            NsCmd::Ls { json } => {
                let names = ns::names();
                if json {
                    print_json(&names);
                } else {
                    for n in names {
                        println!("{n}");
                    }
                }
            }
            NsCmd::Rm { name } => ns::rm(&name)?,
            NsCmd::Exec { name, command } => ns::exec(&name, &command)?,
            NsCmd::Show { target, json } => {
                let s = ns::show(&Target::resolve(&target)?)?;
                if json {
                    print_json(&s);
                } else {
                    print!("{s}");
                }
            }
            NsCmd::Identify { target } => {
                for n in ns::identify(&Target::resolve(&target)?) {
                    println!("{n}");
                }
            }
        },
        Cmd::Add(c) => cni_verb(Verb::Add, &c)?,
        Cmd::Check(c) => cni_verb(Verb::Check, &c)?,
        Cmd::Del(c) => cni_verb(Verb::Del, &c)?,
        Cmd::Gc(n) => {
            invocation(&n.env, None).run(Verb::Gc, &n.network, None)?;
        }
        Cmd::Status(n) => {
            invocation(&n.env, None).run(Verb::Status, &n.network, None)?;
            println!("{}: ready", n.network);
        }
        Cmd::Reload { json } => {
            let r = netkit::nft::restore().map_err(Error::Reload)?;
            if json {
                print_json(&json!({
                    "attachments": r.records,
                    "tablesCreated": r.tables_created,
                    "hostChains": r.host_chains,
                }));
            } else {
                println!(
                    "{} attachments restored{}{}",
                    r.records,
                    if r.tables_created {
                        ", tables created"
                    } else {
                        ""
                    },
                    if r.host_chains > 0 {
                        format!(", {} host firewall chains opened", r.host_chains)
                    } else {
                        String::new()
                    }
                );
            }
        }
        Cmd::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "netctl", &mut std::io::stdout());
        }
        Cmd::Man { dir } => {
            std::fs::create_dir_all(&dir).map_err(Error::io(dir.display().to_string()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .map_err(Error::io(dir.display().to_string()))?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("netctl: {e}");
            ExitCode::FAILURE
        }
    }
}
