//! The `firewall` plugin, on nftables whatever `backend` says.
//!
//! Per container: its addresses join `fw4`/`fw6` (accepted from, and accepted to when
//! the flow is established), as the reference's per-container iptables rules do. Per
//! bridge (the result's first host-side interface), shared by its containers and removed
//! with the last of them: a jump to the admin chain (`iptablesAdminChainName`, created
//! when missing and never flushed or deleted by podnet while it holds rules), the bridge's
//! ingress policy (`same-bridge`: drop what comes from another same-bridge network;
//! `isolated`: drop new flows from anywhere else except published ports), and, when
//! another table's forward chain has a drop policy, the accepts that let the bridge's
//! traffic through it ([`netkit::nft::hostfw`]).

#![forbid(unsafe_code)]

use cni::skel::{CmdArgs, GcArgs, Plugin};
use cni::{CniError, CniResult};
use netkit::nft::{self, hostfw, Entry, Record};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default)]
pub struct Firewall;

pub const DEFAULT_ADMIN_CHAIN: &str = "CNI-ADMIN";

/// The reference's keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirewallConf {
    pub name: String,
    /// `iptables` or `firewalld`: both accepted, both implemented with nftables.
    #[serde(default)]
    pub backend: Option<String>,
    #[serde(default)]
    pub iptables_admin_chain_name: Option<String>,
    /// Accepted (default `trusted`); there is no firewalld zone in nftables.
    #[serde(default)]
    pub firewalld_zone: Option<String>,
    #[serde(default)]
    pub ingress_policy: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngressPolicy {
    Open,
    SameBridge,
    Isolated,
}

impl FirewallConf {
    pub fn parse(stdin: &[u8]) -> Result<FirewallConf, CniError> {
        let c: FirewallConf = cni::config::decode("network config", stdin)?;
        match c.backend.as_deref() {
            None | Some("" | "iptables" | "firewalld") => {}
            Some(other) => {
                return Err(CniError::invalid_config(format!(
                    "backend: {other:?} is not iptables or firewalld"
                )))
            }
        }
        let chain = c.admin_chain();
        let valid = !chain.is_empty()
            && chain.len() <= 28
            && chain
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            && !nft::own_chain(chain);
        if !valid {
            return Err(CniError::invalid_config(format!(
                "iptablesAdminChainName: {chain:?} is not a chain name podnet can create (1-28 letters, digits, '-' or '_')"
            )));
        }
        c.ingress_policy()?;
        Ok(c)
    }

    pub fn admin_chain(&self) -> &str {
        self.iptables_admin_chain_name
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_CHAIN)
    }

    pub fn ingress_policy(&self) -> Result<IngressPolicy, CniError> {
        match self.ingress_policy.as_deref() {
            None | Some("" | "open") => Ok(IngressPolicy::Open),
            Some("same-bridge") => Ok(IngressPolicy::SameBridge),
            Some("isolated") => Ok(IngressPolicy::Isolated),
            Some(other) => Err(CniError::invalid_config(format!(
                "ingressPolicy: {other:?} is not open, same-bridge or isolated"
            ))),
        }
    }
}

/// The record of one attachment (pure).
pub fn record(conf: &FirewallConf, args: &CmdArgs, prev: &CniResult) -> Result<Record, CniError> {
    let mut rec = Record::new("firewall", &conf.name, &args.container_id, &args.ifname);
    for ip in &prev.ips {
        let set = if ip.address.is_ipv4() { "fw4" } else { "fw6" };
        let e = Entry::inet(set, ip.address.ip().to_string());
        if !rec.entries.contains(&e) {
            rec.entries.push(e);
        }
    }
    let admin = conf.admin_chain();
    rec.chains.push(admin.to_owned());
    if let Some(br) = prev.host_interfaces()?.first() {
        let q = format!("\"{}\"", br.name);
        rec.group = Some(br.name.clone());
        rec.group_entries
            .push(Entry::inet("admin", q.clone()).with_value(format!("jump {admin}")));
        rec.group_entries
            .push(Entry::inet("samebr", format!("{q} . {q}")));
        match conf.ingress_policy()? {
            IngressPolicy::Open => {}
            IngressPolicy::SameBridge => rec.group_entries.push(Entry::inet("isolated", q)),
            IngressPolicy::Isolated => rec.group_entries.push(Entry::inet("strict", q)),
        }
    } else if conf.ingress_policy()? != IngressPolicy::Open {
        return Err(CniError::invalid_config(
            "ingressPolicy needs a host-side interface (a bridge) in prevResult",
        ));
    }
    Ok(rec)
}

fn closed(gone: &nft::Released) -> Result<(), CniError> {
    if gone.last_in_group {
        if let Some(br) = &gone.record.group {
            hostfw::close_bridge(br)?;
        }
    }
    Ok(())
}

impl Plugin for Firewall {
    fn about(&self) -> &'static str {
        concat!("podnet firewall plugin v", env!("CARGO_PKG_VERSION"))
    }

    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let prev = args.prev_result.clone().ok_or_else(|| {
            CniError::invalid_config(
                "firewall must be called as a chained plugin: prevResult is missing",
            )
        })?;
        let conf = FirewallConf::parse(&args.stdin)?;
        let rec = record(&conf, args, &prev)?;
        let done = nft::commit(&rec)?;
        if let (true, Some(br)) = (done.first_in_group, &rec.group) {
            if let Err(e) = hostfw::open_bridge(br) {
                if let Ok(Some(gone)) = nft::release("firewall", &args.container_id, &args.ifname) {
                    let _ = closed(&gone);
                }
                return Err(e.into());
            }
        }
        Ok(prev)
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        FirewallConf::parse(&args.stdin)?;
        match nft::release("firewall", &args.container_id, &args.ifname)? {
            Some(gone) => closed(&gone),
            None => Ok(()),
        }
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let prev = args
            .prev_result
            .as_ref()
            .ok_or_else(|| CniError::invalid_config("CHECK needs prevResult"))?;
        let conf = FirewallConf::parse(&args.stdin)?;
        let want = record(&conf, args, prev)?;
        let have = nft::find("firewall", &args.container_id, &args.ifname)?;
        let failed = |m: String| CniError::new(cni::ErrorCode::CHECK_FAILED, m);
        match have {
            Some(h) if h.entries == want.entries && h.group_entries == want.group_entries => {
                nft::verify(&h).map_err(failed)
            }
            Some(_) => Err(failed(
                "the firewall elements of this container differ from its config and result".into(),
            )),
            None => Err(failed(
                "no firewall elements are recorded for this container".into(),
            )),
        }
    }

    fn gc(&self, args: &GcArgs) -> Result<(), CniError> {
        let conf = FirewallConf::parse(&args.stdin)?;
        for gone in nft::retain_attachments(&conf.name, &args.valid_attachments)? {
            if gone.record.owner == "firewall" {
                closed(&gone)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(conf: serde_json::Value) -> CmdArgs {
        CmdArgs::new("c1", "eth0", &serde_json::to_vec(&conf).unwrap()).unwrap()
    }

    fn prev() -> CniResult {
        serde_json::from_value(json!({
            "cniVersion": "1.0.0",
            "interfaces": [{"name": "cni0"}, {"name": "veth1"}, {"name": "eth0", "sandbox": "/run/netns/x"}],
            "ips": [{"address": "10.88.0.5/16", "interface": 2}, {"address": "fd00::5/64", "interface": 2}]
        }))
        .unwrap()
    }

    #[test]
    fn host_interface_names_never_become_paths() {
        let a = args(json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"}));
        let c = FirewallConf::parse(&a.stdin).unwrap();
        for bad in ["../../../tmp/p", "a/b", "..", "all"] {
            let mut p = prev();
            p.interfaces[0].name = bad.into();
            let e = record(&c, &a, &p).unwrap_err();
            assert!(e.msg.contains("prevResult.interfaces[0].name"), "{}", e.msg);
        }
    }

    #[test]
    fn record_per_policy() {
        let a = args(
            json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall",
            "backend": "iptables", "ingressPolicy": "same-bridge"}),
        );
        let c = FirewallConf::parse(&a.stdin).unwrap();
        let r = record(&c, &a, &prev()).unwrap();
        assert_eq!(r.group.as_deref(), Some("cni0"));
        assert_eq!(
            r.entries,
            [
                Entry::inet("fw4", "10.88.0.5"),
                Entry::inet("fw6", "fd00::5")
            ]
        );
        assert_eq!(
            r.group_entries,
            [
                Entry::inet("admin", "\"cni0\"").with_value("jump CNI-ADMIN"),
                Entry::inet("samebr", "\"cni0\" . \"cni0\""),
                Entry::inet("isolated", "\"cni0\""),
            ]
        );
        assert_eq!(r.chains, ["CNI-ADMIN"]);
        assert!(r.setup.is_empty(), "no nft text");
    }

    #[test]
    fn bad_keys_are_named() {
        for (conf, field) in [
            (json!({"backend": "ebpf"}), "backend"),
            (json!({"ingressPolicy": "closed"}), "ingressPolicy"),
            (
                json!({"iptablesAdminChainName": "bad name"}),
                "iptablesAdminChainName",
            ),
            (
                json!({"iptablesAdminChainName": "forward"}),
                "iptablesAdminChainName",
            ),
        ] {
            let mut c = json!({"cniVersion": "1.0.0", "name": "n", "type": "firewall"});
            c.as_object_mut()
                .unwrap()
                .extend(conf.as_object().unwrap().clone());
            let e = FirewallConf::parse(&serde_json::to_vec(&c).unwrap()).unwrap_err();
            assert_eq!(e.code, cni::ErrorCode::INVALID_NETWORK_CONFIG);
            assert!(e.msg.contains(field), "{}", e.msg);
        }
    }
}
