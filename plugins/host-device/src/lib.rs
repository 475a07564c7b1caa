//! The `host-device` plugin: moves an existing host interface into the container,
//! renamed to `CNI_IFNAME`, and back on DEL.
//!
//! The device is chosen by exactly one of `device`, `hwaddr`, `kernelpath`, `pciBusID` or
//! `runtimeConfig.deviceID`. Before it moves, its name, MTU, up/down state and addresses
//! are saved (`<stateDir>/<network>-<containerID>-<ifname>.json`) and its original name is
//! set as its alias (what the reference plugin reads on DEL); DEL brings it back with all
//! of them. The host's default-route interface is refused unless `allowDefaultRoute`.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use cni::skel::{CmdArgs, Command, GcArgs, Plugin, StatusArgs};
use cni::{delegate, CniError, CniResult, Dns, ErrorCode};
use ipnetwork::IpNetwork;
use netkit::{attach, Link, NetNs, Netlink};
use serde::{Deserialize, Serialize};

/// Where podnet keeps what it needs to give a device back.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cni/podnet/host-device";

#[derive(Debug, Clone, Copy, Default)]
pub struct HostDevice;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Conf {
    pub name: String,
    pub device: Option<String>,
    pub hwaddr: Option<String>,
    pub kernelpath: Option<PathBuf>,
    #[serde(rename = "pciBusID")]
    pub pci_bus_id: Option<String>,
    #[serde(default)]
    pub runtime_config: Option<RuntimeWire>,
    pub ipam: Option<cni::config::IpamConf>,
    #[serde(default)]
    pub dns: Dns,
    /// podnet: allow moving the interface that carries the host's default route.
    #[serde(default)]
    pub allow_default_route: bool,
    /// podnet: where device state is kept.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeWire {
    #[serde(rename = "deviceID")]
    pub device_id: Option<String>,
}

/// How the device was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Name(String),
    Mac(String),
    KernelPath(PathBuf),
    Pci(String),
}

impl Conf {
    fn parse(stdin: &[u8]) -> Result<Conf, CniError> {
        let c: Conf = cni::config::decode("network config", stdin)?;
        c.selector()?;
        Ok(c)
    }

    /// Exactly one selector (code 7 naming them otherwise).
    pub fn selector(&self) -> Result<Selector, CniError> {
        let device_id = self
            .runtime_config
            .as_ref()
            .and_then(|r| r.device_id.clone());
        let mut given = Vec::new();
        if let Some(d) = &self.device {
            // A name the kernel could never have given is bad input (7), not a netlink
            // failure (110).
            cni::validate::interface_name(d).map_err(|e| {
                CniError::invalid_config(format!("device: {:?}: {}", cni::validate::echo(d), e.msg))
            })?;
            given.push(Selector::Name(d.clone()));
        }
        if let Some(m) = &self.hwaddr {
            let mac = netkit::parse_mac(m).map_err(|_| {
                CniError::invalid_config(format!("hwaddr: invalid MAC address {m:?}"))
            })?;
            // All zeroes is no device's address: `lo` and tunnels have it.
            if mac == [0; 6] {
                return Err(CniError::invalid_config(format!(
                    "hwaddr: {m} is the address of no device (lo has it)"
                )));
            }
            given.push(Selector::Mac(netkit::format_mac(&mac)));
        }
        if let Some(k) = &self.kernelpath {
            given.push(Selector::KernelPath(k.clone()));
        }
        if let Some(p) = self.pci_bus_id.clone().or(device_id) {
            given.push(Selector::Pci(p));
        }
        match given.len() {
            1 => Ok(given.remove(0)),
            0 => Err(CniError::invalid_config("give exactly one of device, hwaddr, kernelpath, pciBusID or runtimeConfig.deviceID")),
            _ => Err(CniError::invalid_config("device, hwaddr, kernelpath, pciBusID and runtimeConfig.deviceID exclude each other: give one")),
        }
    }

    fn state_path(&self, args: &CmdArgs) -> PathBuf {
        let dir = cni::config::dir_or(self.state_dir.as_deref(), DEFAULT_STATE_DIR);
        dir.join(format!(
            "{}-{}-{}.json",
            self.name, args.container_id, args.ifname
        ))
    }
}

/// What the device was like on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedDevice {
    pub name: String,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<IpNetwork>,
}

fn not_found(what: String) -> CniError {
    CniError::invalid_config(format!("{what}: no such network device on the host"))
}

/// The name of the net device behind a sysfs device directory.
fn net_name_under(dir: &Path) -> Option<String> {
    if dir.join("ifindex").exists() {
        return dir.file_name().and_then(|n| n.to_str()).map(str::to_owned); // a net device itself
    }
    let mut names: Vec<String> = fs::read_dir(dir.join("net"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names.into_iter().next()
}

async fn find(host: &Netlink, sel: &Selector) -> Result<Link, CniError> {
    let by_name = |name: String| async move {
        host.link_get(&name)
            .await?
            .ok_or_else(|| not_found(format!("device {name:?}")))
    };
    match sel {
        Selector::Name(n) => by_name(n.clone()).await,
        Selector::Mac(mac) => host
            .link_list()
            .await?
            .into_iter()
            .find(|l| &l.mac == mac)
            .ok_or_else(|| not_found(format!("hwaddr {mac}"))),
        Selector::KernelPath(p) => {
            let name = net_name_under(p)
                .ok_or_else(|| not_found(format!("kernelpath {}", p.display())))?;
            by_name(name).await
        }
        Selector::Pci(id) => {
            let dir = Path::new("/sys/bus/pci/devices").join(id);
            let name = net_name_under(&dir).ok_or_else(|| not_found(format!("pciBusID {id}")))?;
            by_name(name).await
        }
    }
}

impl Plugin for HostDevice {
    fn about(&self) -> &'static str {
        concat!("podnet host-device plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let conf = Conf::parse(&args.stdin)?;
        let ns = attach::open_netns(args)?;
        netkit::block_on(add(args, &conf, &ns))
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = Conf::parse(&args.stdin)?;
        let ipam = conf
            .ipam
            .as_ref()
            .map(|i| delegate::del(&i.plugin_type, args));
        let back = netkit::block_on(give_back(args, &conf));
        ipam.transpose().and(back)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf = Conf::parse(&args.stdin)?;
        if let Some(i) = &conf.ipam {
            delegate::check(&i.plugin_type, args)?;
        }
        let ns = attach::open_netns(args)?;
        netkit::block_on(async {
            let ctr = Netlink::open_in(&ns)?;
            let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
            let c = ctr
                .link_get(&args.ifname)
                .await?
                .ok_or_else(|| failed(format!("{:?} is missing in the container", args.ifname)))?;
            let ips = args.prev_result.iter().flat_map(|r| r.ips.iter());
            attach::check_addresses(&ctr, c.index, &args.ifname, ips).await
        })
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf: Conf = cni::config::decode("network config", &args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Status, &args.path, &args.stdin)
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf: Conf = cni::config::decode("network config", &args.stdin)?;
        delegate::forward(conf.ipam.as_ref(), Command::Gc, &args.path, &args.stdin)
    }
}

async fn add(args: &CmdArgs, conf: &Conf, ns: &NetNs) -> Result<CniResult, CniError> {
    let host = Netlink::open_current()?;
    let ctr = Netlink::open_in(ns)?;
    attach::ensure_ifname_free(&ctr, args, ns).await?;
    let dev = find(&host, &conf.selector()?).await?;
    refuse_default_route(&host, conf, &dev).await?;
    let saved = SavedDevice {
        name: dev.name.clone(),
        mac: dev.mac.clone(),
        mtu: dev.mtu,
        up: dev.up,
        addresses: host
            .addr_list(Some(dev.index))
            .await?
            .into_iter()
            .map(|(_, a)| a)
            .filter(|a| !is_link_local(a))
            .collect(),
    };
    let state = conf.state_path(args);
    write_state(&state, &saved)?;
    match move_in(args, conf, ns, &host, &ctr, &dev).await {
        Ok(r) => Ok(r),
        Err(e) => {
            let _ = give_back(args, conf).await;
            if let Some(i) = &conf.ipam {
                let _ = delegate::del(&i.plugin_type, args);
            }
            Err(e)
        }
    }
}

async fn move_in(
    args: &CmdArgs,
    conf: &Conf,
    ns: &NetNs,
    host: &Netlink,
    ctr: &Netlink,
    dev: &Link,
) -> Result<CniResult, CniError> {
    // A temporary name while down, so the move cannot collide with a name in the container.
    let transit = attach::veth_name().replacen("veth", "hdev", 1);
    host.link_set_down(dev.index).await?;
    host.link_set_name(dev.index, &transit).await?;
    host.link_set_netns(dev.index, ns).await?;
    let c = ctr.link_require(&transit).await?;
    ctr.link_set_name(c.index, &args.ifname).await?;
    ctr.link_set_alias(c.index, &dev.name).await?;
    ctr.link_set_up(c.index).await?;
    let result = match &conf.ipam {
        Some(i) => delegate::add(&i.plugin_type, args)?,
        None => CniResult::default(),
    };
    attach::add_addresses(ctr, c.index, &result).await?;
    attach::add_routes(ctr, c.index, &result).await?;
    Ok(attach::container_result(
        result,
        &args.ifname,
        &c,
        ns,
        &conf.dns,
    ))
}

async fn refuse_default_route(host: &Netlink, conf: &Conf, dev: &Link) -> Result<(), CniError> {
    if conf.allow_default_route {
        return Ok(());
    }
    let carries_default = host
        .route_list()
        .await?
        .iter()
        .any(|r| r.dst.prefix() == 0 && r.oif == Some(dev.index));
    if carries_default {
        return Err(CniError::invalid_config(format!(
            "device {:?} carries the host's default route; moving it would cut the host off (set allowDefaultRoute to move it anyway)",
            dev.name
        )));
    }
    Ok(())
}

/// DEL's work: the device back on the host with its name, MTU, addresses and state.
/// Nothing to do — no netns, netns gone, device gone — is success.
async fn give_back(args: &CmdArgs, conf: &Conf) -> Result<(), CniError> {
    let state = conf.state_path(args);
    let saved: Option<SavedDevice> = fs::read(&state)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let host = Netlink::open_current()?;
    let ns = attach::open_netns_if_present(args)?;
    if let Some(ns) = &ns {
        let ctr = Netlink::open_in(ns)?;
        // Only a device a host-device ADD moved in: the one this attachment's state
        // names (by MAC or by the original name kept as its alias), or, without state,
        // one that carries an alias as both podnet's and the reference's ADD leave it.
        // A CNI_IFNAME of another plugin's (a bridge's veth) is never taken.
        let ours = |c: &Link| match &saved {
            Some(s) => c.mac == s.mac || c.alias.as_deref() == Some(s.name.as_str()),
            None => c.alias.as_deref().is_some_and(|a| !a.is_empty()),
        };
        if let Some(c) = ctr.link_get(&args.ifname).await?.filter(ours) {
            for (_, a) in ctr.addr_list(Some(c.index)).await? {
                ctr.addr_del(c.index, a).await?;
            }
            ctr.link_set_down(c.index).await?;
            let transit = attach::veth_name().replacen("veth", "hdev", 1);
            ctr.link_set_name(c.index, &transit).await?;
            ctr.link_set_netns(c.index, &NetNs::current()?).await?;
            let name = saved
                .as_ref()
                .map(|s| s.name.clone())
                .or(c.alias.clone())
                .unwrap_or_else(|| args.ifname.clone());
            let back = host.link_require(&transit).await?;
            host.link_set_name(back.index, &name).await?;
        }
    }
    // Restore what the host had, wherever the device is now (also after its netns died).
    if let Some(saved) = &saved {
        let dev = match host.link_get(&saved.name).await? {
            Some(d) => Some(d),
            None => host
                .link_list()
                .await?
                .into_iter()
                .find(|l| l.mac == saved.mac),
        };
        if let Some(dev) = dev {
            if dev.name != saved.name {
                host.link_set_down(dev.index).await?;
                host.link_set_name(dev.index, &saved.name).await?;
            }
            if dev.mtu != saved.mtu {
                host.link_set_mtu(dev.index, saved.mtu).await?;
            }
            for a in &saved.addresses {
                host.addr_add(dev.index, *a).await?;
            }
            if saved.up {
                host.link_set_up(dev.index).await?;
            }
        }
    }
    match fs::remove_file(&state) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(CniError::from_source(
            ErrorCode::IO_FAILURE,
            format!("removing {}", state.display()),
            &e,
        )),
        _ => Ok(()),
    }
}

fn is_link_local(a: &IpNetwork) -> bool {
    match a.ip() {
        std::net::IpAddr::V4(v4) => v4.is_link_local(),
        std::net::IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn write_state(path: &Path, saved: &SavedDevice) -> Result<(), CniError> {
    let io = |e: std::io::Error| {
        CniError::from_source(
            ErrorCode::IO_FAILURE,
            format!("writing {}", path.display()),
            &e,
        )
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, serde_json::to_vec(saved).expect("serializes")).map_err(io)?;
    fs::rename(&tmp, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(v: serde_json::Value) -> Result<Conf, CniError> {
        Conf::parse(v.to_string().as_bytes())
    }

    #[test]
    fn exactly_one_selector() {
        assert_eq!(
            conf(serde_json::json!({"name": "n", "device": "eth1"}))
                .unwrap()
                .selector()
                .unwrap(),
            Selector::Name("eth1".into())
        );
        let c = conf(serde_json::json!({"name": "n", "hwaddr": "AA:BB:CC:DD:EE:FF"})).unwrap();
        assert_eq!(
            c.selector().unwrap(),
            Selector::Mac("aa:bb:cc:dd:ee:ff".into())
        );
        let c =
            conf(serde_json::json!({"name": "n", "runtimeConfig": {"deviceID": "0000:00:1f.6"}}))
                .unwrap();
        assert_eq!(c.selector().unwrap(), Selector::Pci("0000:00:1f.6".into()));
        assert!(conf(serde_json::json!({"name": "n"}))
            .unwrap_err()
            .msg
            .contains("exactly one"));
        assert!(conf(
            serde_json::json!({"name": "n", "device": "a", "hwaddr": "aa:bb:cc:dd:ee:ff"})
        )
        .unwrap_err()
        .msg
        .contains("exclude"));
        assert!(conf(serde_json::json!({"name": "n", "hwaddr": "zz"}))
            .unwrap_err()
            .msg
            .contains("hwaddr"));
        let long = "x".repeat(10_000);
        for (bad, needle) in [
            (
                serde_json::json!({"name": "n", "hwaddr": "00:00:00:00:00:00"}),
                "hwaddr",
            ),
            (serde_json::json!({"name": "n", "device": "a/b"}), "device"),
            (serde_json::json!({"name": "n", "device": long}), "device"),
        ] {
            let e = conf(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG, "{}", e.msg);
            assert!(e.msg.starts_with(needle), "{}", e.msg);
            assert!(
                e.msg.len() < 200,
                "names from the input are cut: {}",
                e.msg.len()
            );
        }
    }
}
