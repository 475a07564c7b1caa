//! Pods: a pinned network namespace attached under the pod's name, shared by its member
//! containers without a pause process (the pin keeps the namespace alive). Members share
//! one /etc/hosts, rewritten when one comes or goes; the pod name resolves on its
//! networks through `dnsname` (`K8S_POD_NAME` is the pod's name).

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files;
use crate::options::{NetworkChoice, PodOptions};
use crate::sandbox::{self, Owner};
use crate::state::{
    self, find, list, new_id, now, record_dir, save, validate_name, write_atomic, Container, Lock,
    NetMode, Phase, Pod,
};
use crate::Engine;

impl Engine {
    pub fn pod_create(&self, opts: PodOptions) -> Result<Pod> {
        let lock = Lock::take(&self.config)?;
        validate_name("pod name", &opts.name)?;
        state::ensure_name_free::<Pod>(&self.config, &opts.name)?;
        let networks = match &opts.net.network {
            NetworkChoice::Default => vec![crate::config::DEFAULT_NETWORK.to_owned()],
            NetworkChoice::Networks(n) => n.clone(),
            NetworkChoice::None => vec![],
            _ => {
                return Err(Error::invalid(
                    "--network",
                    "a pod takes NET[,NET2] or none",
                ))
            }
        };
        if networks.is_empty() && (!opts.net.ports.is_empty() || !opts.net.ips.is_empty()) {
            return Err(Error::invalid(
                "--network none",
                "cannot publish ports or take --ip",
            ));
        }
        if let Some(first) = networks.first() {
            self.check_static_ips(first, &opts.net.ips)?;
        }
        let mut pod = Pod {
            id: new_id()?,
            hostname: opts.hostname.unwrap_or_else(|| opts.name.clone()),
            name: opts.name,
            created: now(),
            net: opts.net.sandbox(networks),
            add_hosts: opts.net.add_hosts,
            dns: opts.net.dns,
            phase: Phase::Configuring,
        };
        save(&self.config, &lock, &pod)?;
        let owner = Owner {
            id: &pod.id,
            name: &pod.name,
        };
        let done = sandbox::setup(&self.config, owner, &mut pod.net).and_then(|()| {
            pod.phase = Phase::Ready;
            save(&self.config, &lock, &pod)?;
            self.write_pod_hosts(&lock, &pod.id)
        });
        if let Err(e) = done {
            let _ = sandbox::teardown(
                &self.config,
                Owner {
                    id: &pod.id,
                    name: &pod.name,
                },
                &pod.net,
            );
            let _ = state::remove::<Pod>(&self.config, &lock, &pod.id);
            return Err(e);
        }
        Ok(pod)
    }

    fn members(&self, pod_id: &str) -> Vec<Container> {
        list::<Container>(&self.config)
            .into_iter()
            .filter(|c| matches!(&c.net, NetMode::Pod { id } if id == pod_id))
            .collect()
    }

    /// The pod's shared /etc/hosts: its addresses under the pod's hostname and name and
    /// every member's hostname and name.
    pub(crate) fn write_pod_hosts(&self, _lock: &Lock, pod_id: &str) -> Result<()> {
        let pod = state::load::<Pod>(&self.config, pod_id)?;
        let members = self.members(pod_id);
        let mut names: Vec<&str> = vec![&pod.hostname, &pod.name];
        for m in &members {
            names.push(&m.hostname);
            names.push(&m.name);
        }
        let text = files::hosts(
            &files::own_lines(&pod.net.attachments, &names),
            &pod.add_hosts,
            None,
        );
        write_atomic(
            &record_dir::<Pod>(&self.config, pod_id).join("hosts"),
            text.as_bytes(),
        )
    }

    /// After a reboot or an interrupted `pod create`: the pod's network anew.
    pub(crate) fn ensure_pod_network(&self, lock: &Lock, pod_id: &str) -> Result<()> {
        let mut pod = state::load::<Pod>(&self.config, pod_id)?;
        if sandbox::netns_path(&pod.id).exists() && pod.phase == Phase::Ready {
            return Ok(());
        }
        let owner = Owner {
            id: &pod.id,
            name: &pod.name,
        };
        let _ = sandbox::teardown(&self.config, owner, &pod.net);
        sandbox::setup(&self.config, owner, &mut pod.net)?;
        pod.phase = Phase::Ready;
        save(&self.config, lock, &pod)?;
        self.write_pod_hosts(lock, &pod.id)
    }

    pub fn pod_list(&self) -> Vec<(Pod, Vec<String>)> {
        list::<Pod>(&self.config)
            .into_iter()
            .map(|p| {
                let m = self.members(&p.id).into_iter().map(|c| c.name).collect();
                (p, m)
            })
            .collect()
    }

    pub fn pod_inspect(&self, key: &str) -> Result<Value> {
        let pod = find::<Pod>(&self.config, key)?;
        let members: Vec<Value> = self
            .members(&pod.id)
            .iter()
            .map(|c| json!({"Id": c.id, "Name": c.name, "Status": crate::container::status(&self.config, c).to_string()}))
            .collect();
        let results = sandbox::results(
            &self.config,
            Owner {
                id: &pod.id,
                name: &pod.name,
            },
            &pod.net,
        );
        Ok(json!({
            "Id": pod.id,
            "Name": pod.name,
            "Record": pod,
            "NetNS": sandbox::netns_path(&pod.id),
            "Members": members,
            "NetworkResults": results,
        }))
    }

    /// `pod rm`: refuses a pod with members unless `force`, which removes them first.
    pub fn pod_remove(&self, key: &str, force: bool) -> Result<Pod> {
        let pod = find::<Pod>(&self.config, key)?;
        let members = self.members(&pod.id);
        if !members.is_empty() && !force {
            let names: Vec<&str> = members.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::InUse {
                what: format!("pod {}", pod.name),
                by: format!(
                    "container {} (pod rm -f removes them)",
                    names.join(", container ")
                ),
            });
        }
        for m in &members {
            self.remove(&m.id, true)?;
        }
        let lock = Lock::take(&self.config)?;
        sandbox::teardown(
            &self.config,
            Owner {
                id: &pod.id,
                name: &pod.name,
            },
            &pod.net,
        )?;
        state::remove::<Pod>(&self.config, &lock, &pod.id)?;
        Ok(pod)
    }
}
