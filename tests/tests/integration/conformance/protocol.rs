//! Protocol checks for every plugin in the directory: VERSION, the about line, and each
//! error code the skeleton owns (1, 4, 6, 7), with the version stamped on the error.

use cni::CniVersion;
use podnet_tests::{privileged_test, Call, Deviation, Subject};
use serde_json::{json, Value};

fn conf(plugin: &str, version: &str) -> Value {
    json!({"cniVersion": version, "name": "conformance", "type": plugin})
}

/// Runs `f` for every plugin of the subject with an ADD call in the plugin's newest version.
fn each_plugin(f: impl Fn(&Subject, &str, Call)) {
    let s = Subject::from_env();
    let plugins = s.plugins();
    assert!(!plugins.is_empty());
    for p in plugins {
        let v = s.newest(p).to_string();
        let call = Call::new(
            &s.plugin(p),
            "ADD",
            std::path::Path::new("/run/netns/none"),
            "eth0",
            &conf(p, &v),
        );
        f(&s, p, call);
    }
}

fn assert_error(s: &Subject, plugin: &str, call: &Call, code: u64, needle: &str) {
    let (got, msg, obj) = call.run().err();
    assert_eq!(got, code, "{plugin}: {obj}");
    assert!(msg.contains(needle), "{plugin}: {msg:?} lacks {needle:?}");
    if !s.deviates(Deviation::ErrorWithoutVersion) {
        assert!(
            obj["cniVersion"].is_string(),
            "{plugin}: error without cniVersion: {obj}"
        );
    }
}

privileged_test! {
    fn version_lists_supported_versions() {
        let s = Subject::from_env();
        for p in s.plugins() {
            // Every entry is a spec version, and the current spec is among them.
            let raw = Call::bare(&s.plugin(p), "VERSION", &json!({"cniVersion": "1.0.0"})).run().ok();
            let listed = raw["supportedVersions"].as_array().unwrap().len();
            let versions = s.versions(p);
            assert_eq!(versions.len(), listed, "{p}: {raw}");
            assert!(versions.iter().any(|v| *v >= CniVersion::V1_0_0), "{p}: {raw}");
            for asked in ["0.3.1", "1.0.0"] {
                let reply = Call::bare(&s.plugin(p), "VERSION", &json!({"cniVersion": asked})).run().ok();
                let expect = if s.deviates(Deviation::VersionNotEchoed) { "1.0.0" } else { asked };
                assert_eq!(reply["cniVersion"], expect, "{p}");
            }
            // With no config at all, VERSION still answers.
            let reply = Call::bare(&s.plugin(p), "VERSION", &Value::Null).stdin(b"").run().ok();
            assert!(reply["supportedVersions"].is_array(), "{p}");
        }
    }
}

privileged_test! {
    fn podnet_serves_every_version_up_to_1_1_0() {
        let s = Subject::from_env();
        if s.family != podnet_tests::subject::Family::Podnet {
            return; // the reference 1.1.x predates spec 1.1.0
        }
        assert_eq!(s.versions("loopback"), CniVersion::ALL);
    }
}

privileged_test! {
    fn no_command_prints_about_and_exits_zero() {
        let s = Subject::from_env();
        for p in s.plugins() {
            let r = Call::bare(&s.plugin(p), "", &Value::Null).without("CNI_COMMAND").run();
            assert_eq!(r.status, 0, "{p}");
            assert!(r.stderr.contains("CNI protocol versions supported"), "{p}: {}", r.stderr);
        }
    }
}

privileged_test! {
    fn unknown_command_is_code_4() {
        each_plugin(|s, p, call| assert_error(s, p, &call.set("CNI_COMMAND", "FROB"), 4, "FROB"));
    }
}

privileged_test! {
    fn missing_environment_is_code_4_naming_the_variable() {
        each_plugin(|s, p, call| {
            for var in ["CNI_NETNS", "CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"] {
                assert_error(s, p, &call.clone().without(var), 4, var);
            }
            let del = call.clone().set("CNI_COMMAND", "DEL");
            assert_error(s, p, &del.without("CNI_IFNAME"), 4, "CNI_IFNAME");
        });
    }
}

privileged_test! {
    fn invalid_container_id_and_ifname_are_code_4() {
        each_plugin(|s, p, call| {
            assert_error(s, p, &call.clone().set("CNI_CONTAINERID", "bad id"), 4, "containerID");
            assert_error(s, p, &call.clone().set("CNI_CONTAINERID", "-lead"), 4, "containerID");
            for bad in ["a/b", "a:b", "tab\there"] {
                assert_error(s, p, &call.clone().set("CNI_IFNAME", bad), 4, "interface name");
            }
            assert_error(s, p, &call.clone().set("CNI_IFNAME", "abcdefghijklmnop"), 4, "too long");
        });
    }
}

privileged_test! {
    fn undecodable_config_is_code_6() {
        each_plugin(|s, p, call| {
            for bad in [&b"{\"cniVersion\":"[..], b"not json", b""] {
                let (code, _, obj) = call.clone().stdin(bad).run().err();
                assert_eq!(code, 6, "{p}: {obj}");
            }
            let _ = s;
        });
    }
}

privileged_test! {
    fn bad_network_name_is_code_7() {
        each_plugin(|s, p, call| {
            let v = s.newest(p).to_string();
            let no_name = json!({"cniVersion": v, "type": p});
            assert_error(s, p, &call.clone().stdin(no_name.to_string().as_bytes()), 7, "network name");
            let bad = json!({"cniVersion": v, "name": "has space", "type": p});
            assert_error(s, p, &call.clone().stdin(bad.to_string().as_bytes()), 7, "network name");
        });
    }
}

privileged_test! {
    fn unsupported_version_is_code_1() {
        each_plugin(|s, p, call| {
            for v in ["9.9.9", "banana"] {
                let c = call.clone().stdin(conf(p, v).to_string().as_bytes());
                assert_error(s, p, &c, 1, "incompatible CNI versions");
            }
        });
    }
}

privileged_test! {
    fn check_below_0_4_0_is_code_1() {
        each_plugin(|s, p, call| {
            for v in ["0.3.1", "0.2.0"] {
                let c = call.clone().set("CNI_COMMAND", "CHECK").stdin(conf(p, v).to_string().as_bytes());
                assert_error(s, p, &c, 1, "CHECK");
            }
        });
    }
}

privileged_test! {
    fn status_and_gc_below_1_1_0_are_code_1() {
        let s = Subject::from_env();
        for p in s.plugins() {
            if !s.versions(p).contains(&CniVersion::V1_1_0) {
                continue; // a plugin that predates 1.1.0 does not know these commands
            }
            for cmd in ["STATUS", "GC"] {
                let c = Call::bare(&s.plugin(p), cmd, &conf(p, "1.0.0"));
                assert_error(&s, p, &c, 1, cmd);
            }
        }
    }
}
