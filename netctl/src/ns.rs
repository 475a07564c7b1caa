//! `netctl ns add|ls|rm|exec|show|identify`: `ip netns`, plus `show` for any target.

use std::os::unix::process::CommandExt;
use std::path::Path;

use netkit::{NetNs, Netlink, NETNS_RUN_DIR};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::target::{id_of, Target};

/// Names pinned under /run/netns, sorted.
pub(crate) fn names() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

pub(crate) fn add(name: &str) -> Result<()> {
    cni::validate::network_name(name).map_err(|e| Error::invalid("namespace name", e.msg))?;
    if Path::new(NETNS_RUN_DIR).join(name).exists() {
        return Err(Error::NamespaceExists(name.to_owned()));
    }
    NetNs::create_named(name)
        .map(drop)
        .map_err(Error::netkit(format!("creating namespace {name}")))
}

pub(crate) fn rm(name: &str) -> Result<()> {
    if !Path::new(NETNS_RUN_DIR).join(name).exists() {
        return Err(Error::NoNamespace(name.to_owned()));
    }
    NetNs::delete_named(name).map_err(Error::netkit(format!("deleting namespace {name}")))
}

/// The names under /run/netns that pin the same namespace as `t`.
pub(crate) fn identify(t: &Target) -> Vec<String> {
    names()
        .into_iter()
        .filter(|n| id_of(&Path::new(NETNS_RUN_DIR).join(n)) == Some(t.id))
        .collect()
}

/// Runs `cmd` inside the named namespace, as `ip netns exec` does: a private mount
/// namespace, /sys remounted for the new network namespace, and each file of
/// /etc/netns/NAME bound over its namesake in /etc. Does not return on success.
pub(crate) fn exec(name: &str, cmd: &[String]) -> Result<()> {
    let t = Target::resolve(name)?;
    let ns = t.open()?;
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| Error::invalid("exec", "needs a command"))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(Error::sys("unshare mount namespace"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(Error::sys("making / a slave mount"))?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(Error::sys(format!("entering {name}")))?;
    let _ = umount2("/sys", MntFlags::MNT_DETACH);
    mount(
        Some(name),
        "/sys",
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(Error::sys(format!("mounting /sys for {name}")))?;
    let etc = Path::new("/etc/netns").join(name);
    if let Ok(dir) = std::fs::read_dir(&etc) {
        for e in dir.flatten() {
            let dst = Path::new("/etc").join(e.file_name());
            mount(
                Some(&e.path()),
                &dst,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(Error::sys(format!(
                "binding {} over {}",
                e.path().display(),
                dst.display()
            )))?;
        }
    }
    let err = std::process::Command::new(prog).args(args).exec();
    Err(Error::io(format!("running {prog}"))(err))
}

#[derive(Debug, Serialize)]
pub(crate) struct LinkView {
    pub index: u32,
    pub name: String,
    pub kind: Option<String>,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub master: Option<u32>,
    pub addresses: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(crate) struct RouteView {
    pub dst: String,
    pub gateway: Option<String>,
    pub dev: Option<String>,
    pub scope: u8,
}

#[derive(Debug, Serialize)]
pub(crate) struct NeighView {
    pub address: String,
    pub lladdr: Option<String>,
    pub dev: Option<String>,
    pub state: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct Show {
    pub target: String,
    pub path: String,
    pub names: Vec<String>,
    pub links: Vec<LinkView>,
    pub routes: Vec<RouteView>,
    pub neighbours: Vec<NeighView>,
}

pub(crate) fn show(t: &Target) -> Result<Show> {
    let ns = t.open()?;
    netkit::block_on(async {
        let nl = Netlink::open_in(&ns)?;
        let links = nl.link_list().await?;
        let addrs = nl.addr_list(None).await?;
        let dev = |i: Option<u32>| {
            i.and_then(|i| links.iter().find(|l| l.index == i))
                .map(|l| l.name.clone())
        };
        let routes = nl
            .route_list()
            .await?
            .into_iter()
            .map(|r| RouteView {
                dst: r.dst.to_string(),
                gateway: r.gateway.map(|g| g.to_string()),
                dev: dev(r.oif),
                scope: r.scope,
            })
            .collect();
        let neighbours = nl
            .neigh_list()
            .await?
            .into_iter()
            .map(|n| NeighView {
                address: n.address.to_string(),
                lladdr: n.lladdr,
                dev: dev(Some(n.index)),
                state: n.state,
            })
            .collect();
        let links = links
            .iter()
            .map(|l| LinkView {
                index: l.index,
                name: l.name.clone(),
                kind: l.kind.clone(),
                mac: l.mac.clone(),
                mtu: l.mtu,
                up: l.up,
                master: l.master,
                addresses: addrs
                    .iter()
                    .filter(|(i, _)| *i == l.index)
                    .map(|(_, a)| a.to_string())
                    .collect(),
            })
            .collect();
        Ok::<_, netkit::Error>(Show {
            target: t.spec.clone(),
            path: t.path.display().to_string(),
            names: identify(t),
            links,
            routes,
            neighbours,
        })
    })
    .map_err(Error::netkit(format!("reading {}", t.spec)))
}

impl std::fmt::Display for Show {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "namespace {} ({})", self.target, self.path)?;
        writeln!(
            f,
            "\nLINKS\n{:<4} {:<16} {:<8} {:<18} {:<6} {:<5} ADDRESSES",
            "IDX", "NAME", "KIND", "MAC", "MTU", "STATE"
        )?;
        for l in &self.links {
            writeln!(
                f,
                "{:<4} {:<16} {:<8} {:<18} {:<6} {:<5} {}",
                l.index,
                l.name,
                l.kind.as_deref().unwrap_or("-"),
                l.mac,
                l.mtu,
                if l.up { "up" } else { "down" },
                l.addresses.join(" ")
            )?;
        }
        writeln!(
            f,
            "\nROUTES\n{:<24} {:<20} {:<16} SCOPE",
            "DESTINATION", "GATEWAY", "DEV"
        )?;
        for r in &self.routes {
            writeln!(
                f,
                "{:<24} {:<20} {:<16} {}",
                r.dst,
                r.gateway.as_deref().unwrap_or("-"),
                r.dev.as_deref().unwrap_or("-"),
                r.scope
            )?;
        }
        writeln!(
            f,
            "\nNEIGHBOURS\n{:<24} {:<18} {:<16} STATE",
            "ADDRESS", "LLADDR", "DEV"
        )?;
        for n in &self.neighbours {
            writeln!(
                f,
                "{:<24} {:<18} {:<16} {}",
                n.address,
                n.lladdr.as_deref().unwrap_or("-"),
                n.dev.as_deref().unwrap_or("-"),
                n.state
            )?;
        }
        Ok(())
    }
}
