//! podnet's host-local and the reference's on one data directory: leases written by
//! either are honoured by the other, both ways; concurrency; crashes.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use podnet_tests::{privileged_test, Call, Subject};
use serde_json::{json, Value};

const DATA: &str = "/var/lib/cni/interop";
const REFERENCE: &str = "/usr/lib/cni/host-local";

fn podnet() -> PathBuf {
    let s = Subject::from_env();
    assert_eq!(
        s.family,
        podnet_tests::subject::Family::Podnet,
        "interop tests run podnet's build against /usr/lib/cni"
    );
    s.plugin("host-local")
}

fn conf() -> Value {
    json!({"cniVersion": "1.0.0", "name": "mix", "type": "bridge",
           "ipam": {"type": "host-local", "dataDir": DATA, "ranges": [[{"subnet": "10.60.0.0/16"}]]}})
}

fn call(bin: &Path, cmd: &str, id: &str) -> Call {
    Call::new(bin, cmd, Path::new("/run/netns/unused"), "eth0", &conf()).set("CNI_CONTAINERID", id)
}

fn leases() -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fs::read_dir(format!("{DATA}/mix"))
        .map(|d| {
            d.filter_map(|e| {
                let e = e.ok()?;
                let name = e.file_name().into_string().ok()?;
                name.parse::<std::net::IpAddr>().ok()?;
                Some((name, fs::read_to_string(e.path()).ok()?))
            })
            .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn addr(out: &Value) -> String {
    out["ips"][0]["address"].as_str().unwrap().to_owned()
}

privileged_test! {
    fn leases_are_honoured_both_ways() {
        let ours = podnet();
        let theirs = Path::new(REFERENCE);
        // The reference allocates; podnet continues after it, refuses its address, releases it.
        let a = addr(&call(theirs, "ADD", "ref-a").run().ok());
        let b = addr(&call(&ours, "ADD", "pod-b").run().ok());
        assert_ne!(a, b);
        assert_eq!((a.as_str(), b.as_str()), ("10.60.0.2/16", "10.60.0.3/16"), "podnet continues from last_reserved_ip");
        let taken = call(&ours, "ADD", "pod-x").set("CNI_ARGS", "IP=10.60.0.2").run();
        assert!(taken.err().1.contains("\"ref-a\""));
        call(&ours, "DEL", "ref-a").run().ok();
        assert_eq!(leases(), [("10.60.0.3".to_string(), "pod-b\r\neth0".to_string())]);
        // podnet allocates; the reference continues after it, sees the lease, and releases it.
        let c = addr(&call(theirs, "ADD", "ref-c").run().ok());
        assert_eq!(c, "10.60.0.4/16");
        let dup = call(theirs, "ADD", "ref-y").set("CNI_ARGS", "IP=10.60.0.3").run();
        assert_ne!(dup.status, 0, "the reference refuses podnet's lease");
        call(theirs, "DEL", "pod-b").run().ok();
        call(theirs, "CHECK", "ref-c").run().ok();
        call(&ours, "CHECK", "ref-c").run().ok();
        call(&ours, "DEL", "ref-c").run().ok();
        assert!(leases().is_empty(), "{:?}", leases());
    }
}

privileged_test! {
    fn legacy_id_only_leases_are_released() {
        let ours = podnet();
        fs::create_dir_all(format!("{DATA}/mix")).unwrap();
        fs::write(format!("{DATA}/mix/10.60.0.50"), "old-ctr").unwrap();
        let taken = call(&ours, "ADD", "new").set("CNI_ARGS", "IP=10.60.0.50").run();
        assert!(taken.err().1.contains("\"old-ctr\""));
        call(&ours, "DEL", "old-ctr").set("CNI_IFNAME", "whatever0").run().ok();
        assert!(leases().is_empty());
    }
}

privileged_test! {
    fn a_hundred_parallel_adds_then_dels() {
        let ours = podnet();
        let outs: Vec<Value> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..100).map(|i| {
                let ours = ours.clone();
                sc.spawn(move || call(&ours, "ADD", &format!("par{i}")).run().ok())
            }).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let addrs: HashSet<String> = outs.iter().map(addr).collect();
        assert_eq!(addrs.len(), 100, "no duplicate address");
        assert_eq!(leases().len(), 100);
        std::thread::scope(|sc| {
            for i in 0..100 {
                let ours = ours.clone();
                sc.spawn(move || call(&ours, "DEL", &format!("par{i}")).run().ok());
            }
        });
        assert!(leases().is_empty(), "{:?}", leases());
        let index: String = fs::read_dir(format!("{DATA}/.podnet-index/mix/buckets")).unwrap()
            .map(|e| fs::read_to_string(e.unwrap().path()).unwrap()).collect();
        assert!(index.is_empty(), "the index is empty too: {index}");
    }
}

privileged_test! {
    fn a_kill_at_any_point_of_add_is_undone_by_del() {
        use std::process::{Command, Stdio};
        use std::io::Write;
        let ours = podnet();
        let mut killed = 0;
        for i in 0..60u64 {
            let id = format!("crash{i}");
            let c = call(&ours, "ADD", &id);
            let mut child = Command::new(&c.binary).env_clear().envs(c.env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            child.stdin.take().unwrap().write_all(&c.stdin).unwrap();
            // Spread the kill over the whole ADD (about 1 ms).
            std::thread::sleep(std::time::Duration::from_micros(i * 25));
            if child.try_wait().unwrap().is_none() {
                killed += 1;
            }
            let _ = child.kill();
            let _ = child.wait();
            call(&ours, "DEL", &id).run().ok();
            let left: Vec<_> = leases().into_iter().filter(|(_, h)| h.starts_with(&id)).collect();
            assert!(left.is_empty(), "{id}: {left:?}");
        }
        assert!(killed > 0, "some ADDs were killed mid-way");
        let tmp: Vec<_> = fs::read_dir(format!("{DATA}/mix")).unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with(".podnet-tmp")).collect();
        // A kill between writing and linking leaves a temporary file (never a lease); GC removes it.
        if !tmp.is_empty() {
            let mut gc = conf();
            gc["cniVersion"] = json!("1.1.0");
            gc["cni.dev/valid-attachments"] = json!([]);
            Call::bare(&ours, "GC", &gc).run().ok();
            assert!(fs::read_dir(format!("{DATA}/mix")).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".podnet-tmp")));
        }
    }
}
