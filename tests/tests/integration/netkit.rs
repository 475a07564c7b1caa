//! netkit against the kernel: namespaces, the enter guard, veth born in another
//! namespace, bridges, addresses, routes, link attributes and sysctls, read back.

use std::process::Command;

use ipnetwork::IpNetwork;
use netkit::{sysctl, NetNs, Netlink, RouteSpec, VethOptions};
use podnet_tests::{privileged_test, random_name, Sandbox};

fn ip(ns: &NetNs, args: &str) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("ip")
        .args(args.split(' '))
        .output()
        .expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

privileged_test! {
    fn create_enter_and_delete_a_pinned_namespace() {
        let host = NetNs::current().unwrap();
        let name = random_name("nk");
        let ns = NetNs::create_named(&name).unwrap();
        assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
        assert!(!ns.same_as(&host));
        {
            let _g = ns.enter().unwrap();
            assert!(NetNs::current().unwrap().same_as(&ns));
        }
        assert!(NetNs::current().unwrap().same_as(&host), "the guard switched back");
        // A panic inside `run` still switches back.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| ns.run(|| panic!("boom"))));
        assert!(caught.is_err());
        assert!(NetNs::current().unwrap().same_as(&host), "switched back after a panic");
        // `ip netns` sees the pin.
        let listed = String::from_utf8(Command::new("ip").args(["netns", "list"]).output().unwrap().stdout).unwrap();
        assert!(listed.contains(&name), "{listed}");
        assert!(NetNs::create_named(&name).is_err(), "a taken name is refused");
        NetNs::delete_named(&name).unwrap();
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
        NetNs::delete_named(&name).unwrap(); // already gone: fine
        assert!(NetNs::create_named("../x").is_err());
    }
}

privileged_test! {
    fn open_refuses_what_is_not_a_namespace() {
        let e = NetNs::open("/etc/hostname").unwrap_err();
        assert!(matches!(e, netkit::Error::NotNetns { .. }), "{e}");
        let e = NetNs::open("/run/netns/missing").unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(cni::CniError::from(e).code, cni::ErrorCode::UNKNOWN_CONTAINER);
        let pid = NetNs::open(format!("/proc/{}/ns/net", std::process::id())).unwrap();
        assert!(pid.same_as(&NetNs::current().unwrap()));
    }
}

privileged_test! {
    fn veth_peer_is_born_in_the_other_namespace() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let ctr = sb.container("c");
        let (hname, cname) = (random_name("vh"), "eth0");
        netkit::block_on(async {
            let hnl = Netlink::open_in(&host).unwrap();
            let cnl = Netlink::open_in(&ctr).unwrap();
            let br = random_name("br");
            hnl.link_add_bridge(&br, &Default::default()).await.unwrap();
            let b = hnl.link_require(&br).await.unwrap();
            let opts = VethOptions {
                mtu: Some(1400),
                peer_mac: Some(netkit::parse_mac("02:00:00:aa:bb:cc").unwrap()),
                master: Some(b.index),
                up: true,
                ..Default::default()
            };
            hnl.link_add_veth(&hname, cname, &ctr, &opts).await.unwrap();
            let h = hnl.link_require(&hname).await.unwrap();
            let c = cnl.link_require(cname).await.unwrap();
            assert_eq!((h.kind.as_deref(), h.mtu), (Some("veth"), 1400));
            assert_eq!((c.mac.as_str(), c.mtu), ("02:00:00:aa:bb:cc", 1400));
            // Enslaved and up by the creating request; the container end stays down.
            assert_eq!((h.master, h.up, c.up), (Some(b.index), true, false));
            assert_eq!(c.peer, Some(h.index), "the container end names its host end");
            hnl.link_set_master(h.index, None).await.unwrap();
            assert!(hnl.link_get(cname).await.unwrap().is_none(), "the peer never appears in the host");
            // Configure the container side from outside, through its own socket.
            cnl.link_set_up(c.index).await.unwrap();
            hnl.link_set_up(h.index).await.unwrap();
            let caddr: IpNetwork = "10.77.0.2/24".parse().unwrap();
            cnl.addr_add(c.index, caddr).await.unwrap();
            cnl.addr_add(c.index, caddr).await.unwrap(); // idempotent
            hnl.addr_add(h.index, "10.77.0.1/24".parse().unwrap()).await.unwrap();
            let route = RouteSpec { dst: "10.99.0.0/16".parse().unwrap(), gateway: Some("10.77.0.1".parse().unwrap()), oif: None, scope: 0, priority: None };
            cnl.route_add(&route).await.unwrap();
            let routes = cnl.route_list().await.unwrap();
            assert!(routes.iter().any(|r| r.dst == route.dst && r.gateway == route.gateway && r.oif == Some(c.index)), "{routes:?}");
            let v4: Vec<_> = cnl.addr_list(Some(c.index)).await.unwrap().into_iter().filter(|(_, a)| a.is_ipv4()).collect();
            assert_eq!(v4, vec![(c.index, caddr)]);
        });
        // Read back with iproute2 too, and send real packets over the pair.
        assert!(ip(&ctr, "-br addr show dev eth0").contains("10.77.0.2/24"));
        // One queue each way on both ends, set at creation (no cut-down, no RCU wait).
        for (ns, dev) in [(&ctr, "eth0"), (&host, hname.as_str())] {
            assert!(ip(ns, &format!("-d link show dev {dev}")).contains("numtxqueues 1 numrxqueues 1"));
        }
        assert!(ip(&ctr, "route show").contains("10.99.0.0/16 via 10.77.0.1 dev eth0"));
        let ping = Command::new("nsenter").arg(format!("--net={}", ctr.path().display()))
            .args(["ping", "-c", "1", "-W", "2", "10.77.0.1"]).output().unwrap();
        assert!(ping.status.success(), "{}", String::from_utf8_lossy(&ping.stdout));
        netkit::block_on(async {
            let cnl = Netlink::open_in(&ctr).unwrap();
            let c = cnl.link_require("eth0").await.unwrap();
            let route = RouteSpec { dst: "10.99.0.0/16".parse().unwrap(), gateway: Some("10.77.0.1".parse().unwrap()), oif: None, scope: 0, priority: None };
            cnl.route_del(&route).await.unwrap();
            cnl.route_del(&route).await.unwrap(); // gone: fine
            cnl.addr_del(c.index, "10.77.0.2/24".parse().unwrap()).await.unwrap();
            cnl.addr_del(c.index, "10.77.0.2/24".parse().unwrap()).await.unwrap();
            assert!(!cnl.addr_list(Some(c.index)).await.unwrap().iter().any(|(_, a)| a.is_ipv4()));
            cnl.link_del(c.index).await.unwrap();
            cnl.link_del(c.index).await.unwrap(); // gone: fine
            let hnl = Netlink::open_in(&NetNs::current().unwrap()).unwrap();
            assert!(hnl.link_get(&hname).await.unwrap().is_none(), "deleting one end removes the pair");
        });
    }
}

privileged_test! {
    fn a_link_deleted_unwaited_is_gone_with_its_peer_when_the_call_returns() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let ctr = sb.container("c");
        let hname = random_name("vu");
        let make = || netkit::block_on(async {
            let hnl = Netlink::open_in(&host).unwrap();
            let cnl = Netlink::open_in(&ctr).unwrap();
            hnl.link_add_veth(&hname, "eth0", &ctr, &VethOptions::default()).await.unwrap();
            let h = hnl.link_require(&hname).await.unwrap();
            let c = cnl.link_require("eth0").await.unwrap();
            hnl.link_set_up(h.index).await.unwrap();
            cnl.link_set_up(c.index).await.unwrap();
            cnl.addr_add(c.index, "10.78.0.2/24".parse().unwrap()).await.unwrap();
            hnl.addr_add(h.index, "10.78.0.1/32".parse().unwrap()).await.unwrap();
            let route = RouteSpec { dst: "10.78.0.2/32".parse().unwrap(), gateway: None, oif: Some(h.index), scope: 253, priority: None };
            hnl.route_add(&route).await.unwrap();
            (h.index, c.index)
        });
        let (h, c) = make();
        assert!(ip(&host, "route show").contains("10.78.0.2 dev"));
        {
            let _in_host = host.enter().unwrap();
            netkit::unlink::link_del_unwaited(&ctr, c, Some(h)).unwrap();
            // Read back at once, no polling: both ends are unregistered, with their
            // addresses and routes.
            assert!(!ip(&ctr, "-br link show").contains("eth0"), "container end gone");
            assert!(!ip(&host, "-br link show").contains(&hname), "host end gone");
            assert!(!ip(&host, "route show").contains("10.78.0.2"), "host route gone");
            assert!(!ip(&host, "-br addr show").contains("10.78.0.1"), "host address gone");
            // Already gone: fine (the kernel's ENODEV, through the orphan).
            netkit::unlink::link_del_unwaited(&ctr, c, Some(h)).unwrap();
        }
        // Both names are free again at once.
        let (_, c2) = make();
        assert!(ip(&ctr, "-br addr show dev eth0").contains("10.78.0.2/24"));
        let _in_host = host.enter().unwrap();
        netkit::unlink::link_del_unwaited(&ctr, c2, None).unwrap();
        assert!(!ip(&ctr, "-br link show").contains("eth0"));
    }
}

privileged_test! {
    fn bridge_master_rename_mac_mtu_and_move() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let other = sb.container("o");
        let br = random_name("br");
        let (a, b) = (random_name("va"), random_name("vb"));
        netkit::block_on(async {
            let nl = Netlink::open_in(&host).unwrap();
            nl.link_add_bridge(&br, &netkit::BridgeOptions { mtu: Some(1450), ..Default::default() }).await.unwrap();
            let bridge = nl.link_require(&br).await.unwrap();
            assert_eq!((bridge.kind.as_deref(), bridge.mtu), (Some("bridge"), 1450));
            assert!(nl.link_add_bridge(&br, &Default::default()).await.unwrap_err().is_exists());
            nl.link_add_veth(&a, &b, &host, &VethOptions::default()).await.unwrap();
            let va = nl.link_require(&a).await.unwrap();
            nl.link_set_master(va.index, Some(bridge.index)).await.unwrap();
            assert_eq!(nl.link_require(&a).await.unwrap().master, Some(bridge.index));
            nl.link_set_master(va.index, None).await.unwrap();
            assert_eq!(nl.link_require(&a).await.unwrap().master, None);
            nl.link_set_mtu(va.index, 1300).await.unwrap();
            nl.link_set_mac(va.index, netkit::parse_mac("02:11:22:33:44:55").unwrap()).await.unwrap();
            nl.link_set_name(va.index, "renamed0").await.unwrap();
            let r = nl.link_require("renamed0").await.unwrap();
            assert_eq!((r.index, r.mtu, r.mac.as_str()), (va.index, 1300, "02:11:22:33:44:55"));
            nl.link_set_up(r.index).await.unwrap();
            assert!(nl.link_require("renamed0").await.unwrap().up);
            nl.link_set_down(r.index).await.unwrap();
            assert!(!nl.link_require("renamed0").await.unwrap().up);
            let vb = nl.link_require(&b).await.unwrap();
            nl.link_set_netns(vb.index, &other).await.unwrap();
            assert!(nl.link_get(&b).await.unwrap().is_none());
            let onl = Netlink::open_in(&other).unwrap();
            assert!(onl.link_get(&b).await.unwrap().is_some());
            assert!(nl.link_require("nope0").await.unwrap_err().is_not_found());
        });
        assert!(ip(&host, &format!("-d link show {br}")).contains("bridge"));
    }
}

privileged_test! {
    fn sysctls_are_per_namespace() {
        let mut sb = Sandbox::new();
        let host = sb.host();
        let ctr = sb.container("s");
        let key = "net.ipv4.ip_forward";
        let host_before = sysctl::get(&host, key).unwrap();
        let old = sysctl::set(&ctr, key, "1").unwrap();
        assert_eq!(old, "0");
        assert_eq!(sysctl::get(&ctr, key).unwrap(), "1");
        assert_eq!(sysctl::get(&host, key).unwrap(), host_before, "the host stays untouched");
        let direct = Command::new("nsenter").arg(format!("--net={}", ctr.path().display()))
            .args(["cat", "/proc/sys/net/ipv4/ip_forward"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&direct.stdout).trim(), "1");
        assert!(matches!(sysctl::set(&ctr, "kernel.hostname", "x"), Err(netkit::Error::SysctlKey(_))));
        let e = sysctl::get(&ctr, "net.ipv4.no_such_knob").unwrap_err();
        assert_eq!(e.errno(), Some(nix::errno::Errno::ENOENT));
        // `ensure_on_here` acts on the calling thread's namespace, whichever it is.
        let v6 = "net.ipv6.conf.all.forwarding";
        let host_v6 = sysctl::get(&host, v6).unwrap();
        ctr.run(|| sysctl::ensure_on_here(v6)).unwrap().unwrap();
        ctr.run(|| sysctl::ensure_on_here(v6)).unwrap().unwrap(); // already on: fine
        assert_eq!(sysctl::get(&ctr, v6).unwrap(), "1");
        assert_eq!(sysctl::get(&host, v6).unwrap(), host_v6, "the host stays untouched");
        assert!(matches!(sysctl::ensure_on_here("vm.swappiness"), Err(netkit::Error::SysctlKey(_))));
    }
}

privileged_test! {
    fn journal_temps_of_a_dead_add_go_with_del_and_gc() {
        // An ADD that died while writing its journal leaves `.<id>.<ifname>.tmp` (its
        // elements were never applied: the journal is written first). DEL of that
        // attachment removes it, and GC removes any such file.
        let _sb = Sandbox::new();
        let dir = netkit::nft::record::state_dir().join("portmap/cni0");
        std::fs::create_dir_all(&dir).unwrap();
        let (mine, other) = (dir.join(".crashed.eth0.tmp"), dir.join(".elsewhere.eth1.tmp"));
        std::fs::write(&mine, "{\"partial").unwrap();
        std::fs::write(&other, "").unwrap();
        assert!(netkit::nft::release("portmap", "crashed", "eth0").unwrap().is_none());
        assert!(!mine.exists(), "DEL removed its own temporary journal file");
        assert!(other.exists(), "DEL leaves another attachment's alone");
        netkit::nft::retain_attachments("podman", &[]).unwrap();
        assert!(!other.exists(), "GC removed the stale temporary file");
    }
}

privileged_test! {
    /// The tables podnet makes over netlink from its typed schema are, as `nft` lists
    /// them, the ones its former nft text made (`tests/fixtures/podnet-tables.nft`,
    /// listed from that text): every set with its type and flags, every chain with its
    /// hook and priority, every rule. Made twice, they stay the same (idempotent), and
    /// elements encoded from the same schema go into every set.
    fn the_schema_makes_the_tables_nft_text_made() {
        let _sb = Sandbox::new();
        use netkit::nft::schema::{Family, SETS};
        let fams = [Family::Inet, Family::Bridge];
        assert!(!netkit::nft::wire::table_exists(Family::Inet).unwrap());
        netkit::nft::wire::create_tables(&fams).unwrap();
        netkit::nft::wire::create_tables(&fams).unwrap();
        assert!(netkit::nft::wire::table_exists(Family::Inet).unwrap());
        let listed = |args: &str| {
            let out = Command::new("nft").args(args.split(' ')).output().expect("nft runs");
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let want = include_str!("../../fixtures/podnet-tables.nft");
        let got = listed("list ruleset");
        for (n, (g, w)) in got.lines().zip(want.lines()).enumerate() {
            assert_eq!(g, w, "line {}", n + 1);
        }
        assert_eq!(got.lines().count(), want.lines().count(), "{got}");
        // One element in every set, over netlink, each listed back as nft prints it.
        let sample = |f: netkit::nft::schema::Field| match f {
            netkit::nft::schema::Field::V4 => "10.88.0.5",
            netkit::nft::schema::Field::V6 => "fd00::5",
            netkit::nft::schema::Field::Net4 => "10.88.0.0/16",
            netkit::nft::schema::Field::Net6 => "fd00::/64",
            netkit::nft::schema::Field::Proto => "tcp",
            netkit::nft::schema::Field::Port => "8080",
            netkit::nft::schema::Field::Ifname => "\"cni0\"",
            netkit::nft::schema::Field::Ether => "02:00:00:00:00:01",
        };
        let join = |fs: &[netkit::nft::schema::Field]| {
            fs.iter().map(|f| sample(*f)).collect::<Vec<_>>().join(" . ")
        };
        let entries: Vec<netkit::nft::Entry> = SETS
            .iter()
            .map(|d| {
                let e = netkit::nft::Entry {
                    family: d.family.name().into(),
                    set: d.name.into(),
                    key: join(d.key),
                    value: None,
                    exclusive: false,
                    label: None,
                };
                match d.data {
                    netkit::nft::schema::Data::None => e,
                    netkit::nft::schema::Data::Fields(f) => e.with_value(join(f)),
                    netkit::nft::schema::Data::Verdict => e.with_value("jump portmap_cond"),
                }
            })
            .collect();
        let ops: Vec<_> = entries
            .iter()
            .map(|e| (netkit::nft::wire::Op::Add, e, Some("n c eth0")))
            .collect();
        netkit::nft::wire::apply(&ops).unwrap();
        let inet = listed("list table inet podnet");
        for want in [
            "elements = { 10.88.0.5 comment \"n c eth0\" }",
            "elements = { 10.88.0.5 . 10.88.0.0/16 comment \"n c eth0\" }",
            "elements = { fd00::5 . fd00::/64 comment \"n c eth0\" }",
            "elements = { 10.88.0.5 . tcp . 8080 comment \"n c eth0\" : 10.88.0.5 . 8080 }",
            "elements = { tcp . 8080 comment \"n c eth0\" : fd00::5 . 8080 }",
            "elements = { \"cni0\" . tcp . 8080 comment \"n c eth0\" }",
            "elements = { \"cni0\" comment \"n c eth0\" : jump portmap_cond }",
        ] {
            assert!(inet.contains(want), "{want} not in\n{inet}");
        }
        let bridge = listed("list table bridge podnet");
        assert!(
            bridge.contains("elements = { \"cni0\" . 02:00:00:00:00:01 comment \"n c eth0\" }"),
            "{bridge}"
        );
    }
}
