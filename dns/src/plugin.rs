//! The `dnsname` chained plugin, a drop-in for the one Podman 4's CNI backend puts at
//! the end of its chains (`domainName`, capability `aliases`, the container name from
//! `CNI_ARGS K8S_POD_NAME`).
//!
//! ADD writes the attachment's record, opens port 53 on the bridge, starts the responder
//! if it is not running and tells it over the control socket; the reply comes once the
//! names are served, so a query sent the moment ADD returns is answered. The result is
//! `prevResult` with `dns.nameservers` set to the network's gateways and the domain
//! added to `dns.search`. DEL removes exactly that attachment's record (by container id
//! and interface), and port 53 and the listeners go with the network's last container.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cni::skel::{CmdArgs, GcArgs, Plugin, StatusArgs};
use cni::{CniError, CniResult, ErrorCode};
use ipnetwork::IpNetwork;
use netkit::nft::{self, hostfw, Entry, Record};
use serde::Deserialize;

use crate::control::{self, ControlError, Reply, Request};
use crate::store::{self, Attachment, NetworkConf, Store};

/// Podman's domain.
pub const DEFAULT_DOMAIN: &str = "dns.podman";

/// How long a plugin waits for a starting responder.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, Default)]
pub struct Dnsname;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DnsnameConf {
    pub name: String,
    #[serde(default)]
    pub domain_name: Option<String>,
    /// podnet: the port the responder listens on (default 53).
    #[serde(default)]
    pub port: Option<u16>,
    /// podnet: this network's upstream resolvers (default: the host's resolv.conf).
    #[serde(default)]
    pub upstreams: Vec<IpAddr>,
    /// podnet: the responder's state directory (default /run/podnet/dns).
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeConfig {
    /// `{network: [alias, …]}`.
    #[serde(default)]
    pub aliases: HashMap<String, Vec<String>>,
    /// The `dns` capability (CNI's conventions): `servers` become this container's own
    /// upstreams; `searches` and `options` are the runtime's resolv.conf business.
    #[serde(default)]
    pub dns: DnsCapability,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DnsCapability {
    #[serde(default)]
    pub servers: Vec<String>,
}

/// The container's own upstreams from `runtimeConfig.dns.servers` (pure).
pub fn own_upstreams(conf: &DnsnameConf) -> Result<Vec<IpAddr>, CniError> {
    let mut out = Vec::new();
    for (i, s) in conf.runtime_config.dns.servers.iter().enumerate() {
        let ip: IpAddr = s.trim().parse().map_err(|_| {
            CniError::invalid_config(format!(
                "runtimeConfig.dns.servers[{i}]: {:?} is not an IP address",
                cni::validate::echo(s)
            ))
        })?;
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    Ok(out)
}

/// CNI_ARGS keys the plugin knows (Podman's).
const KNOWN_ARGS: &[&str] = &[
    "K8S_POD_NAME",
    "K8S_POD_NAMESPACE",
    "K8S_POD_INFRA_CONTAINER_ID",
    "K8S_POD_UID",
];

impl DnsnameConf {
    pub fn parse(stdin: &[u8]) -> Result<DnsnameConf, CniError> {
        let c: DnsnameConf = cni::config::decode("network config", stdin)?;
        if !valid_network_name(&c.name) {
            return Err(CniError::invalid_config(format!(
                "name: {:?} cannot name a network directory",
                cni::validate::echo(&c.name)
            )));
        }
        let d = c.domain();
        if !valid_name(&d) {
            return Err(CniError::invalid_config(format!(
                "domainName: {d:?} is not a DNS domain"
            )));
        }
        if c.port == Some(0) {
            return Err(CniError::invalid_config("port: 0 is not a port"));
        }
        Ok(c)
    }

    /// The domain, lowercase, without a trailing dot.
    pub fn domain(&self) -> String {
        self.domain_name
            .as_deref()
            .unwrap_or(DEFAULT_DOMAIN)
            .trim_end_matches('.')
            .to_ascii_lowercase()
    }

    pub fn store(&self) -> Store {
        match self.state_dir.as_deref() {
            Some(d) if !d.as_os_str().is_empty() => Store::new(d),
            _ => Store::default(),
        }
    }
}

/// A network name that can name a directory of the store.
fn valid_network_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name.starts_with('.'))
}

/// A DNS name of letter-digit-hyphen(-underscore) labels, each 1–63 long.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// The names of one attachment: container name, aliases, short id (pure).
pub fn names(conf: &DnsnameConf, args: &CmdArgs) -> Result<Vec<String>, CniError> {
    args.args.reject_unknown(KNOWN_ARGS)?;
    let mut out: Vec<String> = Vec::new();
    let mut push = |field: &str, n: &str| -> Result<(), CniError> {
        let n = n.to_ascii_lowercase();
        if !valid_name(&n) {
            return Err(CniError::invalid_config(format!(
                "{field}: {n:?} is not a valid DNS name"
            )));
        }
        if !out.contains(&n) {
            out.push(n);
        }
        Ok(())
    };
    if let Some(pod) = args.args.get("K8S_POD_NAME").filter(|p| !p.is_empty()) {
        push("CNI_ARGS K8S_POD_NAME", pod)?;
    }
    for a in conf
        .runtime_config
        .aliases
        .get(&conf.name)
        .into_iter()
        .flatten()
    {
        push(&format!("runtimeConfig.aliases.{}", conf.name), a)?;
    }
    let short: String = args.container_id.chars().take(12).collect();
    if valid_name(&short.to_ascii_lowercase()) {
        push("CNI_CONTAINERID", &short)?;
    }
    if out.is_empty() {
        return Err(CniError::invalid_config(
            "no name to register: CNI_ARGS K8S_POD_NAME is unset and the container id is not a DNS label",
        ));
    }
    Ok(out)
}

/// The network's record; `bridge_of` names the host interface holding a gateway.
pub fn network_conf(
    conf: &DnsnameConf,
    prev: &CniResult,
    bridge_of: impl FnOnce(IpAddr) -> Result<String, CniError>,
) -> Result<NetworkConf, CniError> {
    let mut gateways: Vec<IpAddr> = Vec::new();
    let mut subnets: Vec<IpNetwork> = Vec::new();
    for ip in &prev.ips {
        if let Some(gw) = ip.gateway {
            if !gateways.contains(&gw) {
                gateways.push(gw);
            }
        }
        let net = IpNetwork::new(ip.address.network(), ip.address.prefix())
            .expect("a network of a valid prefix is valid");
        if !subnets.contains(&net) {
            subnets.push(net);
        }
    }
    if gateways.is_empty() {
        return Err(CniError::invalid_config(
            "prevResult.ips: no gateway; dnsname serves names on the network's gateway address (bridge with isGateway)",
        ));
    }
    Ok(NetworkConf {
        name: conf.name.clone(),
        domain: conf.domain(),
        bridge: bridge_of(gateways[0])?,
        gateways,
        subnets,
        port: conf.port.unwrap_or(53),
        upstreams: conf.upstreams.clone(),
    })
}

/// The container-side addresses of `prev` (every IP of the sandbox interface).
pub fn container_ips(prev: &CniResult) -> Vec<IpAddr> {
    prev.ips
        .iter()
        .filter(|ip| {
            ip.interface
                .and_then(|i| prev.interfaces.get(i))
                .is_none_or(|i| i.sandbox.is_some())
        })
        .map(|ip| ip.address.ip())
        .collect()
}

/// The host interface holding `gw`.
fn gateway_interface(gw: IpAddr) -> Result<String, CniError> {
    netkit::block_on(async {
        let nl = netkit::netlink::Netlink::open_current()?;
        for (index, addr) in nl.addr_list(None).await? {
            if addr.ip() == gw {
                if let Some(link) = nl.link_by_index(index).await? {
                    return Ok(link.name);
                }
            }
        }
        Err(CniError::invalid_config(format!(
            "prevResult.ips: gateway {gw} is no address of a host interface; dnsname needs the bridge to hold it"
        )))
    })
}

/// The DNS port's elements of one attachment, shared by its bridge: the port opened on
/// the bridge, and with a `port` other than 53 each gateway's port 53 redirected to it
/// (containers' resolv.conf can name no port), through the port maps' DNAT.
fn nft_record(net: &NetworkConf, container_id: &str, ifname: &str) -> Record {
    let mut rec = Record::new("dnsname", &net.name, container_id, ifname);
    rec.group = Some(net.bridge.clone());
    for proto in ["udp", "tcp"] {
        rec.group_entries.push(Entry::inet(
            "dns",
            format!("\"{}\" . {proto} . {}", net.bridge, net.port),
        ));
        if net.port == 53 {
            continue;
        }
        for gw in &net.gateways {
            let map = if gw.is_ipv4() { "pm4" } else { "pm6" };
            rec.group_entries.push(
                Entry::inet(map, format!("{gw} . {proto} . 53"))
                    .with_value(format!("{gw} . {}", net.port)),
            );
        }
    }
    rec
}

fn responder_err(e: impl std::fmt::Display) -> CniError {
    CniError::new(ErrorCode::DNS_RESPONDER, format!("DNS responder: {e}"))
}

fn wait_gone(pid: i32, timeout: Duration) {
    let t = Instant::now();
    while netkit::process_running(pid) && t.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The responder binary: this very program when it is `dnsname`, else `dnsname` from
/// CNI_PATH.
fn responder_exe(path: &[PathBuf]) -> Result<PathBuf, CniError> {
    if let Ok(me) = std::env::current_exe() {
        if me.file_name().is_some_and(|n| n == "dnsname") {
            return Ok(me);
        }
    }
    path.iter()
        .map(|d| d.join("dnsname"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::PLUGIN_NOT_FOUND,
                "dnsname (the DNS responder) is not in CNI_PATH",
            )
        })
}

/// Starts the responder unless one answers. Called with the store lock held.
fn ensure_responder(store: &Store, path: &[PathBuf]) -> Result<(), CniError> {
    match control::call(&store.socket_path(), &Request::Status, CALL_TIMEOUT) {
        Ok(_) => return Ok(()),
        Err(ControlError::NotRunning(_)) => {}
        Err(e) => return Err(responder_err(e)),
    }
    // A responder without a control socket (or a stale pidfile): stop it for good.
    if let Ok(pid) = std::fs::read_to_string(store.pid_path()) {
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if netkit::process_running(pid) && cmd.windows(5).any(|w| w == b"serve") {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                wait_gone(pid, Duration::from_secs(2));
            }
        }
    }
    let exe = responder_exe(path)?;
    let log_path = store.log_path();
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 1 << 20) {
        let _ = std::fs::remove_file(&log_path);
    }
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| responder_err(format!("opening {}: {e}", log_path.display())))?;
    let mut child = Command::new(&exe)
        .arg("serve")
        .arg("--state-dir")
        .arg(&store.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| responder_err(format!("starting {}: {e}", exe.display())))?;
    let started = Instant::now();
    loop {
        match control::call(&store.socket_path(), &Request::Status, CALL_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(ControlError::NotRunning(_)) => {}
            Err(e) => return Err(responder_err(e)),
        }
        if let Ok(Some(status)) = child.try_wait() {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(3).collect();
            return Err(responder_err(format!(
                "it exited at start ({status}): {}",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
            )));
        }
        if started.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            return Err(responder_err(format!(
                "not ready after {START_TIMEOUT:?} (see {})",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Sends `req` to a running responder; `Ok(None)` when none runs. Waits for an exiting
/// responder to be gone, so that the next start can bind its addresses.
fn tell(store: &Store, req: &Request) -> Result<Option<Reply>, CniError> {
    match control::call(&store.socket_path(), req, CALL_TIMEOUT) {
        Ok(r) => {
            if r.exiting {
                wait_gone(r.pid as i32, Duration::from_secs(5));
            }
            match &r.error {
                Some(e) => Err(responder_err(e)),
                None => Ok(Some(r)),
            }
        }
        Err(ControlError::NotRunning(_)) => Ok(None),
        Err(e) => Err(responder_err(e)),
    }
}

fn now_seq() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Undoes ADD's files and elements (DEL, and a failed ADD).
/// Removes an attachment's record (searching every network: one renamed since ADD
/// included) and its port-53 elements. Best effort, as DEL is: a state directory that
/// does not exist holds no record, and the elements go whatever happened to the record.
fn forget(
    store: &Store,
    network: Option<&str>,
    container_id: &str,
    ifname: &str,
) -> Result<(), CniError> {
    let mut failures = Vec::new();
    if store.dir.is_dir() {
        if let Err(e) = forget_record(store, network, &store::key(container_id, ifname)) {
            failures.push(e);
        }
    }
    match nft::release("dnsname", container_id, ifname) {
        Ok(Some(gone)) => {
            if let (true, Some(br)) = (gone.last_in_group, &gone.record.group) {
                failures.extend(hostfw::close_dns(br).err().map(CniError::from));
            }
        }
        Ok(None) => {}
        Err(e) => failures.push(e.into()),
    }
    CniError::join(failures)
}

fn forget_record(store: &Store, network: Option<&str>, key: &str) -> Result<(), CniError> {
    let _lock = store.lock()?;
    let nets = network
        .map(str::to_owned)
        .into_iter()
        .chain(store.network_names()?);
    for net in nets {
        if store.remove_attachment(&net, key)? {
            store.remove_network_if_empty(&net)?;
            tell(
                store,
                &Request::Del {
                    network: net,
                    key: key.to_owned(),
                },
            )?;
            break;
        }
    }
    Ok(())
}

impl Plugin for Dnsname {
    fn about(&self) -> &'static str {
        concat!(
            "podnet dnsname plugin and DNS responder v",
            env!("CARGO_PKG_VERSION")
        )
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let mut prev = args.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "dnsname must be called as a chained plugin: prevResult is missing",
            )
        })?;
        let conf = DnsnameConf::parse(&args.stdin)?;
        let names = names(&conf, args)?;
        let net = network_conf(&conf, &prev, gateway_interface)?;
        let att = Attachment {
            container_id: args.container_id.clone(),
            ifname: args.ifname.clone(),
            names,
            ips: container_ips(&prev),
            upstreams: own_upstreams(&conf)?,
            seq: now_seq(),
        };
        let store = conf.store();
        let rec = nft_record(&net, &args.container_id, &args.ifname);
        let added = (|| -> Result<(), CniError> {
            if nft::commit(&rec)?.first_in_group {
                hostfw::open_dns(&net.bridge, net.port)?;
            }
            let _lock = store.lock()?;
            store
                .put_network(&net)
                .and_then(|()| store.put_attachment(&net.name, &att))?;
            ensure_responder(&store, &args.path)?;
            tell(
                &store,
                &Request::Add {
                    network: net.name.clone(),
                    key: att.key(),
                },
            )?;
            Ok(())
        })();
        if let Err(e) = added {
            let _ = forget(&store, Some(&net.name), &args.container_id, &args.ifname);
            return Err(e);
        }
        prev.dns.nameservers = net.gateways.iter().map(|g| g.to_string()).collect();
        if !prev.dns.search.contains(&net.domain) {
            prev.dns.search.push(net.domain.clone());
        }
        Ok(prev)
    }

    /// Needs only the network name and `stateDir`: a config ADD would refuse (a bad
    /// `domainName`) still DELs, with nothing to undo.
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let conf: DnsnameConf = cni::config::decode("network config", &args.stdin)?;
        let network = valid_network_name(&conf.name).then_some(conf.name.as_str());
        forget(&conf.store(), network, &args.container_id, &args.ifname)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let conf = DnsnameConf::parse(&args.stdin)?;
        let failed = |m: String| CniError::new(ErrorCode::CHECK_FAILED, m);
        let store = conf.store();
        let key = store::key(&args.container_id, &args.ifname);
        let have = store
            .attachment(&conf.name, &key)?
            .ok_or_else(|| failed(format!("no DNS record for {key} in network {}", conf.name)))?;
        let want_names = names(&conf, args)?;
        if have.names != want_names || have.ips != container_ips(prev) {
            return Err(failed(format!(
                "the DNS record of {key} ({:?} → {:?}) differs from the config and result ({want_names:?} → {:?})",
                have.names,
                have.ips,
                container_ips(prev)
            )));
        }
        let served = tell(
            &store,
            &Request::Get {
                network: conf.name.clone(),
                key: key.clone(),
            },
        )?
        .ok_or_else(|| failed("the DNS responder is not running".into()))?;
        if served.attachment.as_ref() != Some(&have) {
            return Err(failed(format!(
                "the DNS responder does not serve the record of {key}"
            )));
        }
        nft::check("dnsname", &args.container_id, &args.ifname)
    }

    fn status(&self, args: &StatusArgs) -> Result<(), CniError> {
        let conf = DnsnameConf::parse(&args.stdin)?;
        let store = conf.store();
        if !store.has_attachments(&conf.name)? {
            return Ok(()); // started on demand by the first ADD
        }
        match control::call(&store.socket_path(), &Request::Status, CALL_TIMEOUT) {
            Ok(r)
                if r.networks
                    .iter()
                    .any(|(n, a, _)| *n == conf.name && !a.is_empty()) =>
            {
                Ok(())
            }
            Ok(_) => Err(CniError::new(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                format!(
                    "the DNS responder does not listen for network {}",
                    conf.name
                ),
            )),
            Err(e) => Err(CniError::new(
                ErrorCode::PLUGIN_NOT_AVAILABLE,
                format!("network {}: {e}", conf.name),
            )),
        }
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = DnsnameConf::parse(&args.stdin)?;
        let store = conf.store();
        {
            let _lock = store.lock()?;
            let mut changed = false;
            for a in store.attachments(&conf.name)? {
                let valid = args
                    .valid_attachments
                    .iter()
                    .any(|v| v.container_id == a.container_id && v.ifname == a.ifname);
                if !valid {
                    changed |= store.remove_attachment(&conf.name, &a.key())?;
                }
            }
            if changed {
                store.remove_network_if_empty(&conf.name)?;
                tell(
                    &store,
                    &Request::Sync {
                        network: conf.name.clone(),
                    },
                )?;
            }
        }
        for gone in nft::retain_attachments(&conf.name, &args.valid_attachments)? {
            if let (true, "dnsname", Some(br)) = (
                gone.last_in_group,
                gone.record.owner.as_str(),
                &gone.record.group,
            ) {
                hostfw::close_dns(br)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_port_redirects_each_gateways_port_53() {
        let mut net = NetworkConf {
            name: "podman".into(),
            domain: "dns.podman".into(),
            gateways: vec!["10.88.0.1".parse().unwrap(), "fd00::1".parse().unwrap()],
            subnets: vec![],
            bridge: "podman0".into(),
            port: 53,
            upstreams: vec![],
        };
        let sets =
            |r: &Record| -> Vec<String> { r.group_entries.iter().map(|e| e.set.clone()).collect() };
        assert_eq!(sets(&nft_record(&net, "c", "eth0")), ["dns", "dns"]);
        net.port = 5354;
        let r = nft_record(&net, "c", "eth0");
        let dnat: Vec<(&str, &str, Option<&str>)> = r
            .group_entries
            .iter()
            .filter(|e| e.set != "dns")
            .map(|e| (e.set.as_str(), e.key.as_str(), e.value.as_deref()))
            .collect();
        assert_eq!(
            dnat,
            [
                ("pm4", "10.88.0.1 . udp . 53", Some("10.88.0.1 . 5354")),
                ("pm6", "fd00::1 . udp . 53", Some("fd00::1 . 5354")),
                ("pm4", "10.88.0.1 . tcp . 53", Some("10.88.0.1 . 5354")),
                ("pm6", "fd00::1 . tcp . 53", Some("fd00::1 . 5354")),
            ]
        );
        assert!(r
            .group_entries
            .iter()
            .any(|e| e.key == "\"podman0\" . udp . 5354"));
    }

    #[test]
    fn the_dns_capability_gives_the_containers_own_upstreams() {
        let c = DnsnameConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"dnsname",
                 "runtimeConfig":{"dns":{"servers":["192.0.2.53"," 2001:db8::53","192.0.2.53"],"searches":["x"]}}}"#,
        )
        .unwrap();
        let want: Vec<IpAddr> = vec![
            "192.0.2.53".parse().unwrap(),
            "2001:db8::53".parse().unwrap(),
        ];
        assert_eq!(own_upstreams(&c).unwrap(), want);
        let c = DnsnameConf::parse(
            br#"{"cniVersion":"1.1.0","name":"n","type":"dnsname","runtimeConfig":{"dns":{"servers":["dns.example"]}}}"#,
        )
        .unwrap();
        let e = own_upstreams(&c).unwrap_err();
        assert_eq!(e.code, ErrorCode::INVALID_NETWORK_CONFIG);
        assert!(e.msg.contains("runtimeConfig.dns.servers[0]"), "{e:?}");
    }
}
