//! Running a conflist: ADD in order threading `prevResult`, DEL in reverse (best effort),
//! CHECK, STATUS and GC, with `runtimeConfig` injected for declared capabilities and
//! the result cache kept in libcni's format.

use std::path::PathBuf;

use serde_json::{Map, Value};

use super::cache::{CachedAttachment, ResultCache, CACHE_KIND};
use super::exec::{Invocation, PluginExec};
use crate::args::CniArgs;
use crate::config::NetConfList;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::skel::{Attachment, Command, LEGACY_ATTACHMENTS_KEY, VALID_ATTACHMENTS_KEY};
use crate::validate;
use crate::version::CniVersion;

/// The per-attachment arguments of a runtime call (libcni's `RuntimeConf`).
#[derive(Debug, Clone, Default)]
pub struct RuntimeConf {
    pub container_id: String,
    pub netns: Option<PathBuf>,
    pub ifname: String,
    pub args: CniArgs,
    /// Capability arguments (`portMappings`, `ips`, `mac`, `aliases`, …); each reaches only
    /// the plugins that declare the capability.
    pub capability_args: Map<String, Value>,
}

impl RuntimeConf {
    fn validate(&self) -> Result<(), CniError> {
        validate::container_id(&self.container_id)?;
        validate::interface_name(&self.ifname)
    }

    fn attachment(&self) -> Attachment {
        Attachment {
            container_id: self.container_id.clone(),
            ifname: self.ifname.clone(),
        }
    }
}

/// The runtime side of CNI: where plugins are and where results are cached.
#[derive(Debug, Clone)]
pub struct CniRuntime {
    pub exec: PluginExec,
    pub cache: ResultCache,
}

impl CniRuntime {
    pub fn new(plugin_path: Vec<PathBuf>, cache_dir: impl Into<PathBuf>) -> Self {
        CniRuntime {
            exec: PluginExec::new(plugin_path),
            cache: ResultCache::new(cache_dir),
        }
    }

    /// ADD every plugin in order. The cache entry is written before the first plugin
    /// runs (without a result) and completed after the last, so an ADD interrupted at
    /// any point is still visible to [`CniRuntime::gc`]. On failure nothing is undone
    /// here: as with libcni, the caller runs DEL.
    pub fn add(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<CniResult, CniError> {
        rt.validate()?;
        let version = list.version()?;
        let mut entry = self.cache_entry(list, rt);
        self.cache.write(&entry)?;
        let mut prev: Option<Value> = None;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(list, plugin, version, rt, prev.take(), None);
            let out = self.call(list, i, Command::Add, rt, &conf)?;
            let value: Value =
                crate::config::decode(&format!("result of {}", describe(list, i)), &out)?;
            prev = Some(value);
        }
        let value = prev.expect("a conflist has at least one plugin");
        let (result, _) = CniResult::decode(&value)?;
        entry.result = Some(result.encode(version)?);
        self.cache.write(&entry)?;
        Ok(result)
    }

    /// DEL every plugin in reverse order with the cached result as `prevResult` (0.4.0
    /// and later). Every plugin is called even when one fails; the errors are joined.
    /// The cache entry goes only when all succeeded, so a retry still has it.
    pub fn del(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        rt.validate()?;
        let version = list.version()?;
        let prev = if version >= CniVersion::V0_4_0 {
            self.cached_result(list, rt)?
        } else {
            None
        };
        let mut failures = Vec::new();
        for (i, plugin) in list.plugins.iter().enumerate().rev() {
            let conf = plugin_config(list, plugin, version, rt, prev.clone(), None);
            if let Err(e) = self.call(list, i, Command::Del, rt, &conf) {
                failures.push(e);
            }
        }
        CniError::join(failures)?;
        self.cache.remove(&list.name, &rt.container_id, &rt.ifname)
    }

    /// CHECK every plugin in order against the cached result. A no-op when the list
    /// sets `disableCheck`; refused below 0.4.0.
    pub fn check(&self, list: &NetConfList, rt: &RuntimeConf) -> Result<(), CniError> {
        rt.validate()?;
        if list.disable_check {
            return Ok(());
        }
        let version = list.version()?;
        if !version.allows_check() {
            return Err(CniError::incompatible_version(format!(
                "network {:?}: configuration version {version} does not allow CHECK",
                list.name
            )));
        }
        let prev = self.cached_result(list, rt)?.ok_or_else(|| {
            CniError::new(
                ErrorCode::UNKNOWN_CONTAINER,
                format!(
                    "network {:?}: no cached result for container {:?} interface {:?}",
                    list.name, rt.container_id, rt.ifname
                ),
            )
        })?;
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(list, plugin, version, rt, Some(prev.clone()), None);
            self.call(list, i, Command::Check, rt, &conf)?;
        }
        Ok(())
    }

    /// STATUS of every plugin; the first failure is returned (its code is the answer,
    /// 50 or 51 by the spec). A no-op below 1.1.0, as in libcni.
    pub fn status(&self, list: &NetConfList) -> Result<(), CniError> {
        let version = list.version()?;
        if !version.allows_status_and_gc() {
            return Ok(());
        }
        let rt = RuntimeConf::default();
        for (i, plugin) in list.plugins.iter().enumerate() {
            let conf = plugin_config(list, plugin, version, &rt, None, None);
            self.call(list, i, Command::Status, &rt, &conf)?;
        }
        Ok(())
    }

    /// GC: DEL every cached attachment of the network that is not in `valid`, then (1.1.0
    /// and later, unless `disableGC`) send GC to every plugin with the valid list.
    pub fn gc(&self, list: &NetConfList, valid: &[Attachment]) -> Result<(), CniError> {
        let version = list.version()?;
        let mut failures = Vec::new();
        for cached in self.cache.list(&list.name)? {
            let rt = RuntimeConf {
                container_id: cached.container_id.clone(),
                netns: cached.netns.as_ref().map(PathBuf::from),
                ifname: cached.if_name.clone(),
                args: CniArgs::from_pairs(
                    cached.cni_args.iter().map(|[k, v]| (k.clone(), v.clone())),
                ),
                capability_args: cached.capability_args.clone(),
            };
            if !valid.contains(&rt.attachment()) {
                if let Err(e) = self.del(list, &rt) {
                    failures.push(e);
                }
            }
        }
        if version.allows_status_and_gc() && !list.disable_gc {
            let rt = RuntimeConf::default();
            let valid = serde_json::to_value(valid).expect("attachments serialize");
            for (i, plugin) in list.plugins.iter().enumerate() {
                let conf = plugin_config(list, plugin, version, &rt, None, Some(&valid));
                if let Err(e) = self.call(list, i, Command::Gc, &rt, &conf) {
                    failures.push(e);
                }
            }
        }
        CniError::join(failures)
    }

    /// The cached result of an attachment, in the list's version.
    pub fn cached_result(
        &self,
        list: &NetConfList,
        rt: &RuntimeConf,
    ) -> Result<Option<Value>, CniError> {
        let Some(entry) = self.cache.read(&list.name, &rt.container_id, &rt.ifname)? else {
            return Ok(None);
        };
        let Some(raw) = entry.result else {
            return Ok(None);
        };
        let (result, _) = CniResult::decode(&raw)?;
        Ok(Some(result.encode(list.version()?)?))
    }

    fn cache_entry(&self, list: &NetConfList, rt: &RuntimeConf) -> CachedAttachment {
        CachedAttachment {
            kind: CACHE_KIND.to_owned(),
            container_id: rt.container_id.clone(),
            config: serde_json::to_vec(list).expect("conflists serialize"),
            if_name: rt.ifname.clone(),
            network_name: list.name.clone(),
            netns: rt.netns.as_ref().map(|p| p.display().to_string()),
            cni_args: rt
                .args
                .pairs()
                .iter()
                .map(|(k, v)| [k.clone(), v.clone()])
                .collect(),
            capability_args: rt.capability_args.clone(),
            result: None,
        }
    }

    fn call(
        &self,
        list: &NetConfList,
        index: usize,
        cmd: Command,
        rt: &RuntimeConf,
        conf: &Value,
    ) -> Result<Vec<u8>, CniError> {
        let plugin_type = crate::config::plugin_type(&list.plugins[index]).unwrap_or_default();
        let binary = self.exec.find(plugin_type)?;
        let call = Invocation {
            command: cmd,
            container_id: &rt.container_id,
            netns: rt.netns.as_deref(),
            ifname: &rt.ifname,
            args: &rt.args,
        };
        self.exec
            .exec(&binary, &call, conf.to_string().as_bytes())
            .map_err(|e| CniError {
                msg: format!("{} {}: {}", describe(list, index), cmd.as_str(), e.msg),
                ..e
            })
    }
}

fn describe(list: &NetConfList, index: usize) -> String {
    let t = crate::config::plugin_type(&list.plugins[index]).unwrap_or_default();
    format!("network {:?} plugin {t:?}", list.name)
}

/// The config one plugin receives: its own object plus the list's `name` and chosen
/// `cniVersion`, `prevResult`, `runtimeConfig` for its declared capabilities, and the
/// valid attachments on GC (under both keys).
pub fn plugin_config(
    list: &NetConfList,
    plugin: &Map<String, Value>,
    version: CniVersion,
    rt: &RuntimeConf,
    prev_result: Option<Value>,
    valid_attachments: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), Value::String(list.name.clone()));
    conf.insert("cniVersion".into(), Value::String(version.to_string()));
    if let Some(prev) = prev_result {
        conf.insert("prevResult".into(), prev);
    }
    let runtime_config: Map<String, Value> = crate::gojson::find_key(plugin, "capabilities")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(_, on)| **on == Value::Bool(true))
        .filter_map(|(cap, _)| {
            rt.capability_args
                .get(cap)
                .map(|v| (cap.clone(), v.clone()))
        })
        .collect();
    if !runtime_config.is_empty() {
        conf.insert("runtimeConfig".into(), Value::Object(runtime_config));
    }
    if let Some(valid) = valid_attachments {
        conf.insert(VALID_ATTACHMENTS_KEY.into(), valid.clone());
        conf.insert(LEGACY_ATTACHMENTS_KEY.into(), valid.clone());
    }
    Value::Object(conf)
}
