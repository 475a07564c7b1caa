//! The implementation under test: a plugin directory, podnet's or the reference's.
//!
//! `PODNET_PLUGIN_DIR` names it; by default it is this build's own binaries (the
//! directory above the test executable). Which family it is comes from the plugins'
//! own `about` line, so the suite never guesses from the path.
//!
//! Where the reference plugins knowingly depart from the spec, the suite asserts the
//! departure instead of the spec (so a fixed reference shows up as a failing test), and
//! docs/cni-support.md lists each one.

use std::path::{Path, PathBuf};

use cni::CniVersion;

use crate::plugin::Call;

/// The reference plugins' known departures from the spec (see docs/cni-support.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviation {
    /// loopback answers 0.1.0/0.2.0 in the 1.0 shape and omits `ips[].version` in 0.3.x/0.4.0.
    ResultShapeIgnoresVersion,
    /// Error objects carry no `cniVersion`.
    ErrorWithoutVersion,
    /// VERSION answers `cniVersion` 1.0.0 whatever was asked.
    VersionNotEchoed,
    /// ADD with a CNI_NETNS that does not exist fails with the catch-all code 999.
    MissingNetnsCatchAll,
    /// A failed CHECK answers the catch-all code 999 instead of a documented code.
    CheckFailureCatchAll,
    /// ptp CHECK fails (999) on IPAM routes without `gw`: it looks for them without the
    /// gateway it installed them with.
    PtpCheckRoutesWithoutGateway,
    /// host-device gives the device back without the addresses it had on the host.
    HostDeviceLosesAddresses,
    /// host-device DEL fails when there is nothing left to give back: the interface or the
    /// container's namespace is already gone (DEL twice, or after the netns died).
    HostDeviceDelNotIdempotent,
    /// macvlan DEL deletes whatever link is named `CNI_IFNAME` in the container, another
    /// plugin's too (the DEL a runtime sends after an ADD refused because the name was
    /// taken).
    MacvlanDelRemovesAnyInterface,
    /// ipvlan and vlan DEL delete whatever link is named `CNI_IFNAME` in the container,
    /// as macvlan's does.
    SubLinkDelRemovesAnyInterface,
    /// dhcp CHECK asks the daemon for a lease (acquiring one when none is held).
    DhcpCheckAcquires,
    /// dhcp (1.1.1) has no GC.
    DhcpWithoutGc,
    /// dhcp keeps resending for up to 208 s whatever `-timeout` says when no server
    /// answers.
    DhcpRetriesLong,
    /// ipvlan without `ipam` (and not chained) fails and leaves the link it made.
    IpvlanLeavesLinkWithoutIpam,
    /// vrf (1.1.1) CHECK passes whether or not the interface is in the VRF.
    VrfCheckChecksNothing,
    /// ipvlan accepts an MTU above its parent's (the kernel takes it).
    IpvlanMtuAboveParent,
    /// vrf (1.1.1) loses the interface's routes other than the connected ones, and its
    /// IPv6 addresses, when it enslaves it (newer references restore them).
    VrfDropsRoutes,
    /// vrf picks table 1 (the first id no other VRF has) when a route already uses it.
    VrfTableInUseByRoutes,
    /// sbr DEL removes the rules but leaves the routes in the tables it made (they go
    /// only with the interface).
    SbrDelLeavesTable,
    /// sbr picks a table that routes of another table already use: it looks for the id
    /// only among rules and the main table's routes.
    SbrTableInUseByRoutes,
    /// sbr 1.1.1 predates the `table` key: it ignores it and builds table 100.
    SbrWithoutTableKey,
    /// tuning DEL restores link settings but leaves the sysctls it changed.
    TuningKeepsSysctls,
    /// tuning (1.1.1) predates `txQLen`: the key is accepted and ignored.
    TuningWithoutTxQLen,
    /// portmap CHECK fails (999, "could not check ipv6 dnat") for a container with no
    /// IPv6 address: it looks for an ip6tables chain it never created.
    PortmapCheckWithoutIpv6,
    /// portmap DNATs packets to 127.0.0.1 that arrive from the LAN or a neighbour
    /// container to ports published on 127.0.0.1, and `route_localnet` lets a neighbour
    /// reach host services bound to 127.0.0.1 (CVE-2020-8558).
    LocalhostPortsReachableFromOutside,
    /// portmap turns `route_localnet` on for every IPv4 mapping (`hostIP` or not) and
    /// never turns it off.
    RouteLocalnetForEveryMapping,
}

/// Which implementation a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Podnet,
    Reference,
}

/// The plugin directory under test.
#[derive(Debug, Clone)]
pub struct Subject {
    pub dir: PathBuf,
    pub family: Family,
}

/// Every plugin type the suite knows; the protocol checks run on those present.
pub const KNOWN_PLUGINS: &[&str] = &[
    "loopback",
    "bridge",
    "ptp",
    "host-device",
    "macvlan",
    "ipvlan",
    "vlan",
    "vrf",
    "sbr",
    "tap",
    "host-local",
    "dhcp",
    "static",
    "portmap",
    "firewall",
    "tuning",
    "bandwidth",
];

impl Subject {
    pub fn from_env() -> Subject {
        let dir = match std::env::var_os("PODNET_PLUGIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => default_dir(),
        };
        assert!(
            dir.join("loopback").is_file(),
            "no loopback plugin in {} (build the workspace first, or set PODNET_PLUGIN_DIR)",
            dir.display()
        );
        let about = Call::bare(&dir.join("loopback"), "", &serde_json::Value::Null)
            .without("CNI_COMMAND")
            .run()
            .stderr;
        let family = if about.starts_with("podnet") {
            Family::Podnet
        } else {
            Family::Reference
        };
        Subject { dir, family }
    }

    pub fn plugin(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The known plugins this directory has.
    pub fn plugins(&self) -> Vec<&'static str> {
        KNOWN_PLUGINS
            .iter()
            .copied()
            .filter(|p| self.dir.join(p).is_file())
            .collect()
    }

    /// Whether the subject has `_deviation`. Every listed deviation is the reference's
    /// (containernetworking-plugins 1.1.x); the argument names, at the call site, which
    /// departure the test is about.
    pub fn deviates(&self, _deviation: Deviation) -> bool {
        self.family == Family::Reference
    }

    /// The versions `plugin` claims in its VERSION answer.
    pub fn versions(&self, plugin: &str) -> Vec<CniVersion> {
        let reply = Call::bare(
            &self.plugin(plugin),
            "VERSION",
            &serde_json::json!({"cniVersion": "0.4.0"}),
        )
        .run();
        let info: cni::version::VersionInfo = serde_json::from_str(&reply.stdout)
            .unwrap_or_else(|e| panic!("{plugin} VERSION: {e}: {}", reply.stdout));
        info.known_versions()
    }

    /// The newest version `plugin` serves.
    pub fn newest(&self, plugin: &str) -> CniVersion {
        *self
            .versions(plugin)
            .iter()
            .max()
            .expect("a plugin serves some version")
    }
}

/// A binary of this workspace's build (`netctl`, …), beside the test executable's
/// profile directory.
pub fn workspace_bin(name: &str) -> PathBuf {
    let p = default_dir().join(name);
    assert!(
        p.is_file(),
        "{} is not built (cargo build --workspace --bins)",
        p.display()
    );
    p
}

pub fn default_dir() -> PathBuf {
    // target/<profile>/deps/integration-<hash> -> target/<profile>
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in target/<profile>/deps")
        .to_path_buf()
}
