//! The runtime side against scripted fake plugins: order, prevResult threading,
//! capability injection, the cache format, timeouts, best-effort DEL and GC.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;

use cni::runtime::{CniRuntime, RuntimeConf};
use cni::{Attachment, CniArgs, ErrorCode, NetConfList};
use serde_json::{json, Value};

struct World {
    dir: tempfile::TempDir,
    rt: CniRuntime,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("bin")).unwrap();
        fs::create_dir_all(dir.path().join("log")).unwrap();
        let rt = CniRuntime::new(
            vec![dir.path().join("empty"), dir.path().join("bin")],
            dir.path().join("cache"),
        );
        World { dir, rt }
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// A plugin that logs `<n> <CMD> <name> <env…>` to calls.log and its stdin to
    /// `<n>.json`, then runs `body` (which may print a result or fail).
    fn plugin(&self, name: &str, body: &str) {
        let script = format!(
            "#!/bin/sh\nlog={log}\nn=$(wc -l < $log/calls.log 2>/dev/null || echo 0)\nn=$((n+0))\ncat > $log/$n.json\n\
             echo \"$n $CNI_COMMAND {name} $CNI_CONTAINERID $CNI_IFNAME $CNI_NETNS $CNI_ARGS $CNI_PATH\" >> $log/calls.log\n{body}\n",
            log = self.log_dir().display()
        );
        let path = self.dir.path().join("bin").join(name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A plugin that passes prevResult through on ADD after appending one address.
    fn passthrough(&self, name: &str, addr: &str) {
        self.plugin(
            name,
            &format!(
                r#"if [ "$CNI_COMMAND" = ADD ]; then
  prev=$(sed -n 's/.*"prevResult":\(.*\)}}$/\1/p' $log/$n.json)
  if [ -z "$prev" ]; then printf '{{"cniVersion":"1.1.0","ips":[{{"address":"{addr}"}}]}}'; else printf '%s' "$prev" | sed 's|"ips":\[|"ips":[{{"address":"{addr}"}},|'; fi
fi"#
            ),
        );
    }

    fn calls(&self) -> Vec<String> {
        fs::read_to_string(self.log_dir().join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn stdin_of(&self, n: usize) -> Value {
        serde_json::from_slice(&fs::read(self.log_dir().join(format!("{n}.json"))).unwrap())
            .unwrap()
    }
}

fn list(v: Value) -> NetConfList {
    NetConfList::from_bytes(v.to_string().as_bytes()).unwrap()
}

fn rt(id: &str) -> RuntimeConf {
    RuntimeConf {
        container_id: id.into(),
        netns: Some(PathBuf::from("/run/netns/test")),
        ifname: "eth0".into(),
        args: CniArgs::parse("K8S_POD_NAME=web").unwrap(),
        capability_args: serde_json::from_value(
            json!({"portMappings":[{"hostPort":8080}],"mac":"aa:bb:cc:dd:ee:ff"}),
        )
        .unwrap(),
    }
}

fn two_plugins() -> NetConfList {
    list(json!({"cniVersion":"1.0.0","name":"net1","plugins":[
        {"type":"first","capabilities":{"portMappings":true},"keep":"me"},
        {"type":"second","capabilities":{"mac":false}}]}))
}

#[test]
fn add_threads_prev_result_injects_capabilities_and_caches() {
    let w = World::new();
    w.passthrough("first", "10.0.0.2/24");
    w.passthrough("second", "fd00::2/64");
    let result = w.rt.add(&two_plugins(), &rt("c1")).unwrap();
    let addrs: Vec<String> = result.ips.iter().map(|i| i.address.to_string()).collect();
    assert_eq!(addrs, ["fd00::2/64", "10.0.0.2/24"]);
    let calls = w.calls();
    assert!(
        calls[0].starts_with("0 ADD first c1 eth0 /run/netns/test K8S_POD_NAME=web"),
        "{calls:?}"
    );
    assert!(calls[1].starts_with("1 ADD second"));
    let first = w.stdin_of(0);
    assert_eq!(first["name"], "net1");
    assert_eq!(first["cniVersion"], "1.0.0");
    assert_eq!(first["keep"], "me");
    assert_eq!(
        first["runtimeConfig"],
        json!({"portMappings":[{"hostPort":8080}]})
    );
    assert!(first.get("prevResult").is_none());
    let second = w.stdin_of(1);
    assert!(
        second.get("runtimeConfig").is_none(),
        "mac is declared false"
    );
    assert_eq!(second["prevResult"]["ips"][0]["address"], "10.0.0.2/24");

    // libcni's cache format.
    let path = w.dir.path().join("cache/results/net1-c1-eth0");
    let cached: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["containerId"], "c1");
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], "net1");
    assert_eq!(cached["netns"], "/run/netns/test");
    assert_eq!(cached["cniArgs"], json!([["K8S_POD_NAME", "web"]]));
    assert_eq!(cached["result"]["cniVersion"], "1.0.0");
    use base64::Engine as _;
    let config = base64::engine::general_purpose::STANDARD
        .decode(cached["config"].as_str().unwrap())
        .unwrap();
    assert_eq!(NetConfList::from_bytes(&config).unwrap(), two_plugins());
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn del_runs_in_reverse_with_cached_result_and_keeps_going() {
    let w = World::new();
    w.passthrough("first", "10.0.0.2/24");
    w.passthrough("second", "10.0.0.3/24");
    let l = two_plugins();
    w.rt.add(&l, &rt("c1")).unwrap();
    // "second" fails DEL: "first" must still run, and the cache must stay for a retry.
    w.plugin("second", r#"[ "$CNI_COMMAND" = DEL ] && { printf '{"code":5,"msg":"disk on fire"}'; exit 1; }; true"#);
    let err = w.rt.del(&l, &rt("c1")).unwrap_err();
    assert_eq!(err.code, ErrorCode::IO_FAILURE);
    assert!(
        err.msg.contains("plugin \"second\" DEL: disk on fire"),
        "{}",
        err.msg
    );
    let calls = w.calls();
    assert!(
        calls[2].contains("DEL second") && calls[3].contains("DEL first"),
        "{calls:?}"
    );
    assert_eq!(
        w.stdin_of(3)["prevResult"]["ips"][0]["address"],
        "10.0.0.3/24"
    );
    assert!(w.rt.cache.read("net1", "c1", "eth0").unwrap().is_some());
    w.plugin("second", "true");
    w.rt.del(&l, &rt("c1")).unwrap();
    assert!(w.rt.cache.read("net1", "c1", "eth0").unwrap().is_none());
    // DEL again: nothing cached, plugins still called without prevResult, success.
    w.rt.del(&l, &rt("c1")).unwrap();
    let last = w.calls().len() - 1;
    assert!(w.stdin_of(last).get("prevResult").is_none());
}

#[test]
fn check_needs_the_cache_and_honours_disable_check() {
    let w = World::new();
    w.passthrough("first", "10.0.0.2/24");
    w.passthrough("second", "10.0.0.3/24");
    let l = two_plugins();
    let e = w.rt.check(&l, &rt("c9")).unwrap_err();
    assert_eq!(e.code, ErrorCode::UNKNOWN_CONTAINER);
    w.rt.add(&l, &rt("c9")).unwrap();
    w.rt.check(&l, &rt("c9")).unwrap();
    let n = w.calls().len();
    assert!(w.calls()[n - 2].contains("CHECK first"));
    assert_eq!(
        w.stdin_of(n - 1)["prevResult"]["ips"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let mut off = l.clone();
    off.disable_check = true;
    w.plugin("first", "exit 1");
    w.rt.check(&off, &rt("c9")).unwrap();
    assert_eq!(w.calls().len(), n, "disableCheck calls no plugin");
    let old = list(json!({"cniVersion":"0.3.1","name":"net1","plugins":[{"type":"first"}]}));
    assert_eq!(
        w.rt.check(&old, &rt("c9")).unwrap_err().code,
        ErrorCode::INCOMPATIBLE_VERSION
    );
}

#[test]
fn plugin_errors_missing_plugins_and_timeouts() {
    let mut w = World::new();
    w.plugin("first", r#"printf '{"cniVersion":"1.0.0","code":7,"msg":"bad subnet","details":"ipam.subnet"}'; exit 1"#);
    let l = list(json!({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"first"}]}));
    let e = w.rt.add(&l, &rt("c1")).unwrap_err();
    assert_eq!(
        (e.code, e.details.as_str()),
        (ErrorCode::INVALID_NETWORK_CONFIG, "ipam.subnet")
    );
    assert!(
        e.msg
            .contains("network \"n\" plugin \"first\" ADD: bad subnet"),
        "{}",
        e.msg
    );
    // The interrupted ADD stays visible to GC as a cache entry without a result.
    let pending = w.rt.cache.read("n", "c1", "eth0").unwrap().unwrap();
    assert!(pending.result.is_none());

    w.plugin("first", "echo oops >&2; exit 3");
    let e = w.rt.add(&l, &rt("c1")).unwrap_err();
    assert_eq!(e.code, ErrorCode::PLUGIN_FAILED);
    assert_eq!(e.details, "oops");

    let missing = list(json!({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"nowhere"}]}));
    let e = w.rt.add(&missing, &rt("c1")).unwrap_err();
    assert_eq!(e.code, ErrorCode::PLUGIN_NOT_FOUND);
    assert!(e.msg.contains("\"nowhere\""));

    w.plugin("first", "sleep 5");
    w.rt.exec.timeout = Duration::from_millis(200);
    let started = std::time::Instant::now();
    let e = w.rt.add(&l, &rt("c1")).unwrap_err();
    assert_eq!(e.code, ErrorCode::PLUGIN_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));

    let e =
        w.rt.add(
            &l,
            &RuntimeConf {
                container_id: "../x".into(),
                ..rt("c1")
            },
        )
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::INVALID_ENVIRONMENT);
    assert!(!w.dir.path().join("cache/results/n-../x-eth0").exists());
}

/// A config, an answer and a stderr each larger than a pipe holds (64 KiB): the config
/// arrives whole, and neither output stream blocks the plugin while the other is read.
#[test]
fn configs_and_answers_larger_than_a_pipe_pass_whole() {
    let w = World::new();
    w.plugin(
        "big",
        r#"head -c 300000 /dev/zero | tr '\0' e >&2
head -c 300000 /dev/zero | tr '\0' ' '
printf '{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}'"#,
    );
    let pad = "p".repeat(200_000);
    let l = list(json!({"cniVersion":"1.0.0","name":"n","plugins":[{"type":"big","pad": pad}]}));
    let result = w.rt.add(&l, &rt("c1")).unwrap();
    assert_eq!(result.ips[0].address.to_string(), "10.0.0.2/24");
    assert_eq!(w.stdin_of(0)["pad"].as_str().map(str::len), Some(200_000));
}

#[test]
fn gc_deletes_stale_attachments_then_sends_valid_list() {
    let w = World::new();
    w.passthrough("first", "10.0.0.2/24");
    let l = list(json!({"cniVersion":"1.1.0","name":"gcnet","plugins":[{"type":"first"}]}));
    for id in ["keep", "stale"] {
        w.rt.add(&l, &rt(id)).unwrap();
    }
    let other = list(json!({"cniVersion":"1.1.0","name":"gcnet2","plugins":[{"type":"first"}]}));
    w.rt.add(&other, &rt("elsewhere")).unwrap();
    let valid = [Attachment {
        container_id: "keep".into(),
        ifname: "eth0".into(),
    }];
    w.rt.gc(&l, &valid).unwrap();
    let calls = w.calls();
    let tail: Vec<&str> = calls[3..]
        .iter()
        .map(|c| c.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(tail, ["DEL", "GC"], "{calls:?}");
    assert!(calls[3].contains(" stale "));
    let gc_conf = w.stdin_of(4);
    assert_eq!(
        gc_conf["cni.dev/valid-attachments"],
        json!([{"containerID":"keep","ifname":"eth0"}])
    );
    assert_eq!(
        gc_conf["cni.dev/attachments"],
        gc_conf["cni.dev/valid-attachments"]
    );
    assert!(w.rt.cache.read("gcnet", "stale", "eth0").unwrap().is_none());
    assert!(w.rt.cache.read("gcnet", "keep", "eth0").unwrap().is_some());
    assert!(w
        .rt
        .cache
        .read("gcnet2", "elsewhere", "eth0")
        .unwrap()
        .is_some());

    let mut off = l.clone();
    off.disable_gc = true;
    let before = w.calls().len();
    w.rt.gc(&off, &valid).unwrap();
    assert_eq!(w.calls().len(), before, "disableGC sends no GC");
}

#[test]
fn status_forwards_plugin_codes_and_skips_old_versions() {
    let w = World::new();
    w.plugin("first", r#"[ "$CNI_COMMAND" = STATUS ] && { printf '{"code":50,"msg":"range exhausted"}'; exit 1; }; true"#);
    let l = list(json!({"cniVersion":"1.1.0","name":"s","plugins":[{"type":"first"}]}));
    assert_eq!(
        w.rt.status(&l).unwrap_err().code,
        ErrorCode::PLUGIN_NOT_AVAILABLE
    );
    let old = list(json!({"cniVersion":"1.0.0","name":"s","plugins":[{"type":"first"}]}));
    w.rt.status(&old).unwrap();
    assert_eq!(w.calls().len(), 1);
}

#[test]
fn the_cache_is_shared_with_libcni_entries() {
    // An entry as libcni writes it (no podnet-only fields) is read back.
    let w = World::new();
    let dir = w.dir.path().join("cache/results");
    fs::create_dir_all(&dir).unwrap();
    let conf =
        base64_of(br#"{"cniVersion":"0.4.0","name":"podman","plugins":[{"type":"bridge"}]}"#);
    fs::write(
        dir.join("podman-abc-eth0"),
        json!({"kind":"cniCacheV1","containerId":"abc","config":conf,"ifName":"eth0","networkName":"podman",
               "netns":"/run/netns/x","result":{"cniVersion":"0.4.0","ips":[{"version":"4","address":"10.88.0.5/16"}]}})
        .to_string(),
    )
    .unwrap();
    let got = w.rt.cache.list("podman").unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].container_id, "abc");
    let l = list(json!({"cniVersion":"1.0.0","name":"podman","plugins":[{"type":"bridge"}]}));
    let prev =
        w.rt.cached_result(
            &l,
            &RuntimeConf {
                container_id: "abc".into(),
                ifname: "eth0".into(),
                ..Default::default()
            },
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        prev,
        json!({"cniVersion":"1.0.0","ips":[{"address":"10.88.0.5/16"}],"dns":{}})
    );
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}
