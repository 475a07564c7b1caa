//! The lease store on a temporary directory: reference layout, the index staying right
//! when another writer changes the directory, legacy leases, GC.

use std::fs;
use std::net::IpAddr;

use ipam::store::Store;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn leases_use_the_reference_layout() {
    let d = tempfile::tempdir().unwrap();
    let mut s = Store::open(d.path(), "net").unwrap();
    assert!(s.reserve(ip("10.0.0.2"), "ctr1", "eth0", 0).unwrap());
    assert!(
        !s.reserve(ip("10.0.0.2"), "ctr2", "eth0", 0).unwrap(),
        "taken"
    );
    drop(s);
    let dir = d.path().join("net");
    assert_eq!(
        fs::read_to_string(dir.join("10.0.0.2")).unwrap(),
        "ctr1\r\neth0"
    );
    assert_eq!(
        fs::read_to_string(dir.join("last_reserved_ip.0")).unwrap(),
        "10.0.0.2"
    );
    assert!(dir.join("lock").exists());
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "no temporary file is left: {names:?}"
    );
}

#[test]
fn the_index_answers_and_survives_foreign_writes() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("net");
    {
        let mut s = Store::open(d.path(), "net").unwrap();
        s.reserve(ip("10.0.0.2"), "a", "eth0", 0).unwrap();
        s.reserve(ip("10.0.0.3"), "a", "eth1", 0).unwrap();
        assert_eq!(s.leases_of("a", "eth0").unwrap(), [ip("10.0.0.2")]);
    }
    // Another writer adds leases (one legacy) and removes one, as the reference would.
    fs::write(dir.join("10.0.0.9"), "b\r\neth0").unwrap();
    fs::write(dir.join("10.0.0.10"), "a").unwrap();
    fs::remove_file(dir.join("10.0.0.3")).unwrap();
    let mut s = Store::open(d.path(), "net").unwrap();
    assert_eq!(s.leases_of("b", "eth0").unwrap(), [ip("10.0.0.9")]);
    let mut a0 = s.leases_of("a", "eth0").unwrap();
    a0.sort();
    assert_eq!(
        a0,
        [ip("10.0.0.2"), ip("10.0.0.10")],
        "the legacy lease belongs to every interface"
    );
    assert_eq!(s.leases_of("a", "eth1").unwrap(), [ip("10.0.0.10")]);
    let mut freed = s.release("a", "eth0").unwrap();
    freed.sort();
    assert_eq!(freed, [ip("10.0.0.2"), ip("10.0.0.10")]);
    assert!(!dir.join("10.0.0.2").exists() && !dir.join("10.0.0.10").exists());
    assert!(dir.join("10.0.0.9").exists());
}

#[test]
fn a_write_in_the_same_instant_is_still_seen() {
    // The stamp is synthetic, so a foreign create right after podnet's own change (same
    // timestamp tick) still differs from it.
    let d = tempfile::tempdir().unwrap();
    for n in 0..50u8 {
        {
            let mut s = Store::open(d.path(), "net").unwrap();
            s.reserve(ip(&format!("10.1.0.{}", n + 1)), "p", "eth0", 0)
                .unwrap();
        }
        fs::write(
            d.path().join("net").join(format!("10.2.0.{}", n + 1)),
            format!("f{n}\r\neth0"),
        )
        .unwrap();
        let s = Store::open(d.path(), "net").unwrap();
        assert_eq!(
            s.leases_of(&format!("f{n}"), "eth0").unwrap().len(),
            1,
            "round {n}"
        );
    }
}

#[test]
fn retain_is_gc_and_cleans_crash_leftovers() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("net");
    {
        let mut s = Store::open(d.path(), "net").unwrap();
        s.reserve(ip("10.0.0.2"), "keep", "eth0", 0).unwrap();
        s.reserve(ip("10.0.0.3"), "stale", "eth0", 0).unwrap();
    }
    fs::write(dir.join("10.0.0.4"), "").unwrap(); // torn by a crashed writer
    fs::write(dir.join(".podnet-tmp-999-1"), "x\r\neth0").unwrap(); // a crash between write and link
    let mut s = Store::open(d.path(), "net").unwrap();
    let mut freed = s.retain(|h| h.id == "keep").unwrap();
    freed.sort();
    assert_eq!(freed, [ip("10.0.0.3"), ip("10.0.0.4")]);
    assert!(!dir.join(".podnet-tmp-999-1").exists());
    assert_eq!(s.leases_of("keep", "eth0").unwrap(), [ip("10.0.0.2")]);
    assert!(s.leases_of("stale", "eth0").unwrap().is_empty());
}

#[test]
fn the_lock_serializes_processes() {
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), "net").unwrap();
    // flock(1) on the same file must wait while the store is open.
    let busy = Command::new("flock")
        .args(["-n", "-E", "42"])
        .arg(d.path().join("net/lock"))
        .arg("true")
        .status()
        .unwrap();
    assert_eq!(busy.code(), Some(42), "the lock is held");
    drop(s);
    let free = Command::new("flock")
        .args(["-n"])
        .arg(d.path().join("net/lock"))
        .arg("true")
        .status()
        .unwrap();
    assert!(free.success());
}

#[test]
fn released_inodes_are_reused_and_a_linked_spare_never_is() {
    use std::os::unix::fs::MetadataExt;
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("net");
    {
        let mut s = Store::open(d.path(), "net").unwrap();
        s.reserve(ip("10.0.0.2"), "a", "eth0", 0).unwrap();
        let ino = fs::metadata(dir.join("10.0.0.2")).unwrap().ino();
        s.release("a", "eth0").unwrap();
        assert!(s.reserve(ip("10.0.0.3"), "b", "eth0", 0).unwrap());
        assert_eq!(
            fs::metadata(dir.join("10.0.0.3")).unwrap().ino(),
            ino,
            "the released inode is reused"
        );
        assert_eq!(
            fs::read_to_string(dir.join("10.0.0.3")).unwrap(),
            "b\r\neth0"
        );
    }
    // A crash between linking a spare as a lease and dropping its spare name leaves an
    // inode with two names: it must never be rewritten.
    let spare = d.path().join(".podnet-index/net/spare/spare-1-1");
    fs::create_dir_all(spare.parent().unwrap()).unwrap();
    fs::hard_link(dir.join("10.0.0.3"), &spare).unwrap();
    let mut s = Store::open(d.path(), "net").unwrap();
    assert!(s.reserve(ip("10.0.0.4"), "c", "eth0", 0).unwrap());
    assert_eq!(
        fs::read_to_string(dir.join("10.0.0.3")).unwrap(),
        "b\r\neth0",
        "the lease is intact"
    );
    assert_eq!(
        fs::read_to_string(dir.join("10.0.0.4")).unwrap(),
        "c\r\neth0"
    );
    assert!(!spare.exists(), "the stale spare name is dropped");
    // Taken candidates reuse one prepared file; what is left goes back to the pool.
    assert!(!s.reserve(ip("10.0.0.3"), "d", "eth0", 0).unwrap());
    assert!(!s.reserve(ip("10.0.0.4"), "d", "eth0", 0).unwrap());
    drop(s);
    let names: Vec<String> = fs::read_dir(d.path().join(".podnet-index/net"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".podnet-tmp")),
        "{names:?}"
    );
}
