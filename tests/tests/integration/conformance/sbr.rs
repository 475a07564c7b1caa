//! sbr (chained) on the subject's plugins: a container with two interfaces, its main
//! default route through `eth0`; a "far" host behind the LAN of `net1` is answered only
//! once sbr sends `net1`'s replies back through `net1`. Rules and tables read back; DEL.

use netkit::{NetNs, Netlink, VethOptions};
use podnet_tests::net::{ping, sh};
use podnet_tests::subject::Family;
use podnet_tests::{privileged_test, random_name, Call, Deviation, Sandbox, Subject};
use serde_json::{json, Value};

/// A veth from `a` (`a_end`, `a_addr`) to `b` (`b_end`, `b_addr`), both up.
fn link(a: &NetNs, a_end: &str, a_addr: &str, b: &NetNs, b_end: &str, b_addr: &str) {
    netkit::block_on(async {
        let na = Netlink::open_in(a)?;
        na.link_add_veth(a_end, b_end, b, &VethOptions::default())
            .await?;
        for (nl, name, addr) in [(na, a_end, a_addr), (Netlink::open_in(b)?, b_end, b_addr)] {
            let l = nl.link_require(name).await?;
            nl.addr_add(l.index, addr.parse().expect("an address"))
                .await?;
            nl.link_set_up(l.index).await?;
        }
        Ok::<_, netkit::Error>(())
    })
    .unwrap();
}

/// The container `c` (eth0 10.1.0.2 with its default route via the host's 10.1.0.1,
/// net1 10.2.0.2 on the LAN 10.2.0.0/24) and `far` (192.0.2.9), reached through the
/// LAN's router 10.2.0.1.
fn layout(sb: &mut Sandbox) -> (NetNs, NetNs) {
    let c = sb.container("sc");
    let lan = sb.container("sl");
    let far = sb.container("sf");
    link(
        &sb.host(),
        &random_name("vh"),
        "10.1.0.1/24",
        &c,
        "eth0",
        "10.1.0.2/24",
    );
    link(&lan, "l0", "10.2.0.1/24", &c, "net1", "10.2.0.2/24");
    link(&lan, "l1", "192.0.2.1/24", &far, "eth0", "192.0.2.9/24");
    assert!(sh(Some(&c), "ip route add default via 10.1.0.1 dev eth0").0);
    assert!(sh(Some(&lan), "sysctl -qw net.ipv4.ip_forward=1").0);
    assert!(sh(Some(&far), "ip route add default via 192.0.2.1").0);
    (c, far)
}

fn conf(s: &Subject, c: &NetNs, extra: Value) -> Value {
    let mut v = json!({"cniVersion": s.newest("sbr").as_str(), "name": "sbrnet", "type": "sbr",
        "prevResult": {"cniVersion": "1.0.0",
            "interfaces": [{"name": "net1", "sandbox": c.path().display().to_string()}],
            "ips": [{"address": "10.2.0.2/24", "gateway": "10.2.0.1", "interface": 0}]}});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

fn call(s: &Subject, cmd: &str, c: &NetNs, v: &Value) -> Call {
    Call::new(&s.plugin("sbr"), cmd, c.path(), "net1", v)
}

privileged_test! {
    fn replies_leave_by_their_own_interface() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (c, far) = layout(&mut sb);
        assert!(!ping(&far, "10.2.0.2"), "without sbr the reply leaves by eth0 and is lost");
        let v = conf(&s, &c, json!({}));
        let r = call(&s, "ADD", &c, &v).run().ok();
        assert_eq!(r["ips"][0]["address"], "10.2.0.2/24", "prevResult passed through: {r}");
        let rules = sh(Some(&c), "ip rule").1;
        assert!(rules.contains("from 10.2.0.2 lookup 100"), "{rules}");
        let table = sh(Some(&c), "ip route show table 100").1;
        assert!(table.contains("default via 10.2.0.1 dev net1"), "{table}");
        assert!(table.contains("10.2.0.0/24 dev net1"), "the interface's routes moved in: {table}");
        let main = sh(Some(&c), "ip route show table main").1;
        assert!(!main.contains("net1"), "and out of the main table: {main}");
        assert!(ping(&far, "10.2.0.2"), "the reply leaves by net1");
        assert!(ping(&far, "10.2.0.2") && sh(Some(&c), "ping -c 1 -W 2 10.1.0.1").0, "eth0 still works");
        call(&s, "CHECK", &c, &v).run().ok();
        call(&s, "DEL", &c, &v).run().ok();
        let rules = sh(Some(&c), "ip rule").1;
        assert!(!rules.contains("10.2.0.2"), "DEL removes the rule: {rules}");
        let table = sh(Some(&c), "ip route show table 100").1;
        if s.deviates(Deviation::SbrDelLeavesTable) {
            assert!(table.contains("default via 10.2.0.1"), "the reference now empties the table: {table}");
        } else {
            assert!(table.trim().is_empty(), "and its table: {table}");
        }
        call(&s, "DEL", &c, &v).run().ok(); // nothing left to undo
    }
}

privileged_test! {
    fn a_given_table_gets_the_rules_only_and_tables_are_not_shared() {
        let s = Subject::from_env();
        let mut sb = Sandbox::new();
        let (c, _far) = layout(&mut sb);
        let v = conf(&s, &c, json!({"table": 200}));
        call(&s, "ADD", &c, &v).run().ok();
        let rules = sh(Some(&c), "ip rule").1;
        if s.deviates(Deviation::SbrWithoutTableKey) {
            assert!(rules.contains("from 10.2.0.2 lookup 100"), "the reference now knows `table`: {rules}");
            call(&s, "DEL", &c, &v).run().ok();
            // Its DEL leaves the moved routes in table 100; put net1's subnet back.
            sh(Some(&c), "ip route flush table 100; ip route add 10.2.0.0/24 dev net1");
        } else {
            assert!(rules.contains("from 10.2.0.2 lookup 200"), "{rules}");
            let main = sh(Some(&c), "ip route show table main").1;
            assert!(main.contains("10.2.0.0/24 dev net1"), "the main table is left alone: {main}");
            call(&s, "DEL", &c, &v).run().ok();
        }
        assert!(!sh(Some(&c), "ip rule").1.contains("10.2.0.2"));
        // Table 100 in use by a route already: sbr picks the next free one.
        assert!(sh(Some(&c), "ip route add 198.51.100.0/24 dev eth0 table 100").0);
        call(&s, "ADD", &c, &conf(&s, &c, json!({}))).run().ok();
        let rules = sh(Some(&c), "ip rule").1;
        if s.deviates(Deviation::SbrTableInUseByRoutes) {
            assert!(rules.contains("from 10.2.0.2 lookup 100"), "the reference now skips table 100: {rules}");
        } else {
            assert!(rules.contains("from 10.2.0.2 lookup 101"), "{rules}");
        }
        if s.family == Family::Podnet {
            // No prevResult: a chained plugin's config error, named.
            let mut bare = conf(&s, &c, json!({}));
            bare.as_object_mut().unwrap().remove("prevResult");
            let (code, msg, _) = call(&s, "ADD", &c, &bare).run().err();
            assert_eq!(code, 7);
            assert!(msg.contains("prevResult"), "{msg}");
            let (code, msg, _) = call(&s, "ADD", &c, &conf(&s, &c, json!({"gateways": ["10.2.0.1", "10.2.0.9"]}))).run().err();
            assert!(code == 7 && msg.contains("gateways"), "{msg}");
        }
    }
}
