//! The lease store: the only I/O of host-local. On-disk layout is the reference's, so
//! either implementation reads what the other wrote:
//!
//! ```text
//! <dataDir>/<network>/<ip>                 "<containerID>\r\n<ifname>" (legacy: "<containerID>")
//! <dataDir>/<network>/last_reserved_ip.<N>  the last address handed out from range set N
//! <dataDir>/<network>/lock                  flock(2)ed for the whole of every operation
//! ```
//!
//! What podnet adds lives beside it, where the reference never looks (a network name
//! cannot start with a dot):
//!
//! ```text
//! <dataDir>/.podnet-index/<network>/buckets/<00..ff>  "<containerID> <ip> <ifname>" lines (legacy: no ifname)
//! <dataDir>/.podnet-index/<network>/stamp              the network directory's mtime podnet last set
//! ```
//!
//! The index answers "which addresses does this attachment hold" without reading every
//! lease, so ADD and DEL cost the same at 10 or 10,000 leases: a container's entries sit
//! in one of 256 buckets chosen by a hash of its id, about 40 lines each at 10,000 leases.
//! Buckets, the stamp and `last_reserved_ip.N` are rewritten in place, so an ADD creates
//! exactly one new inode, the lease's, as the reference does (on this machine's ext4 each
//! new inode costs about 0.6 ms). In-place writes are safe because every index write
//! follows a change to the lease directory: a crash in the middle leaves the stamp stale,
//! and the next operation rebuilds the index. `last_reserved_ip.N` is only where the next
//! search starts: a torn one starts it elsewhere or at the range's start, as the
//! reference does with a missing one. It stays correct with other
//! writers: after each change podnet sets the network directory's mtime to a synthetic
//! stamp (random nanoseconds) and records it; any create or remove by another writer (the
//! reference plugin, a person) resets the mtime to the real time, the stamps differ, and
//! the next operation rebuilds the index from the leases once. A synthetic stamp, unlike
//! the real mtime, cannot be hit by a write in the same coarse timestamp tick.
//!
//! A lease appears atomically: its content is written to a temporary file and `link(2)`ed
//! to the address's name, which fails with EEXIST when the address is taken. A process
//! killed at any point leaves either no lease or a whole one, never a torn file (at worst
//! a `.podnet-tmp-*` file, which GC removes). There is no fsync: after a power loss,
//! ext4's default `data=ordered` writes a file's data before the link that names it; on
//! a filesystem without that ordering an empty lease may survive, which ADD skips as
//! taken and GC removes. An fsync per ADD cost 0.3 ms on this machine's disk.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cni::{CniError, ErrorCode};
use nix::fcntl::{Flock, FlockArg};

const LAST_RESERVED_PREFIX: &str = "last_reserved_ip.";
const TMP_PREFIX: &str = ".podnet-tmp-";
const INDEX_DIR: &str = ".podnet-index";
const BUCKETS: &str = "buckets";
const BUCKET_COUNT: u64 = 256;

#[derive(Debug, thiserror::Error)]
#[error("{what} {}", path.display())]
pub struct StoreError {
    what: &'static str,
    path: PathBuf,
    #[source]
    source: std::io::Error,
}

impl From<StoreError> for CniError {
    fn from(e: StoreError) -> CniError {
        CniError::from_source(ErrorCode::IO_FAILURE, e.to_string(), &e)
    }
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError { what, path, source }
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    /// `None` for a legacy lease written before leases named the interface.
    pub ifname: Option<String>,
}

impl Holder {
    fn parse(content: &str) -> Option<Holder> {
        let content = content.trim();
        if content.is_empty() {
            return None;
        }
        Some(match content.split_once("\r\n") {
            Some((id, ifname)) => Holder {
                id: id.trim().into(),
                ifname: Some(ifname.trim().into()),
            },
            None => Holder {
                id: content.into(),
                ifname: None,
            },
        })
    }

    /// Whether the lease belongs to attachment (id, ifname); a legacy lease belongs to
    /// every interface of its container, as in the reference.
    pub fn matches(&self, id: &str, ifname: &str) -> bool {
        self.id == id && self.ifname.as_deref().is_none_or(|i| i == ifname)
    }
}

/// One network's leases, locked for as long as the value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    index: PathBuf,
    _lock: Flock<File>,
    changed: bool,
    /// A file holding the content of the lease being reserved, ready to be linked; kept
    /// across the candidates of one ADD.
    prepared: Option<(PathBuf, String)>,
}

impl Store {
    /// Opens (creating) the network's directory, takes the lock, and brings the index
    /// up to date.
    pub fn open(data_dir: &Path, network: &str) -> Result<Store, StoreError> {
        let dir = data_dir.join(network);
        let index = data_dir.join(INDEX_DIR).join(network);
        for d in [&dir, &index.join(BUCKETS)] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(d)
                .map_err(io("creating", d))?;
        }
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io("opening", &lock_path))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| StoreError {
            what: "locking",
            path: lock_path.clone(),
            source: e.into(),
        })?;
        let mut store = Store {
            dir,
            index,
            _lock: lock,
            changed: false,
            prepared: None,
        };
        if !store.stamp_is_current()? {
            store.rebuild_index()?;
        }
        Ok(store)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The addresses attachment (id, ifname) holds.
    pub fn leases_of(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        Ok(self
            .index_entries(id)?
            .into_iter()
            .filter(|(_, h)| h.matches(id, ifname))
            .map(|(ip, _)| ip)
            .collect())
    }

    /// Who holds `ip`, if anyone (an empty lease has no holder). Bytes that are not
    /// UTF-8 are read as Go reads them, lossily: such a lease names no valid container,
    /// stays taken, and GC removes it; it never makes the network unusable.
    pub fn holder(&self, ip: IpAddr) -> Result<Option<Holder>, StoreError> {
        let path = self.dir.join(ip.to_string());
        match fs::read(&path) {
            Ok(c) => Ok(Holder::parse(&String::from_utf8_lossy(&c))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("reading", &path)(e)),
        }
    }

    pub fn is_taken(&self, ip: IpAddr) -> bool {
        self.dir.join(ip.to_string()).symlink_metadata().is_ok()
    }

    /// Reserves `ip` for (id, ifname); `false` when it is taken.
    pub fn reserve(
        &mut self,
        ip: IpAddr,
        id: &str,
        ifname: &str,
        range_set: usize,
    ) -> Result<bool, StoreError> {
        let target = self.dir.join(ip.to_string());
        let source = self.prepare(&format!("{id}\r\n{ifname}"))?;
        self.changed = true;
        match fs::hard_link(&source, &target) {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(false),
            other => other.map_err(io("creating lease", &target))?,
        }
        self.prepared = None;
        let _ = fs::remove_file(&source);
        // The bucket is read once and written once.
        let bucket = self.bucket(id);
        let mut all = Store::read_bucket(&bucket)?;
        all.push((
            ip,
            Holder {
                id: id.into(),
                ifname: Some(ifname.into()),
            },
        ));
        write_in_place(&bucket, index_body(&all).as_bytes())?;
        let last = self.dir.join(format!("{LAST_RESERVED_PREFIX}{range_set}"));
        write_in_place(&last, ip.to_string().as_bytes())?;
        Ok(true)
    }

    /// Releases every lease of attachment (id, ifname); returns the addresses freed.
    pub fn release(&mut self, id: &str, ifname: &str) -> Result<Vec<IpAddr>, StoreError> {
        self.release_where(id, |_, h| h.matches(id, ifname))
    }

    /// Releases only `ips` of attachment (id, ifname).
    pub fn release_only(
        &mut self,
        id: &str,
        ifname: &str,
        ips: &[IpAddr],
    ) -> Result<Vec<IpAddr>, StoreError> {
        self.release_where(id, |ip, h| h.matches(id, ifname) && ips.contains(&ip))
    }

    /// Removes the leases of `id` that `pick` chooses. The index says where they are; the
    /// lease files say whose they are: when a lease contradicts the index (an index
    /// corrupted in place under a current stamp), the index is rebuilt from the leases
    /// first, so a release never removes another attachment's lease.
    fn release_where(
        &mut self,
        id: &str,
        pick: impl Fn(IpAddr, &Holder) -> bool,
    ) -> Result<Vec<IpAddr>, StoreError> {
        let bucket = self.bucket(id);
        let mut entries = Store::read_bucket(&bucket)?;
        if !self.confirms(id, &entries)? {
            self.rebuild_index()?;
            entries = Store::read_bucket(&bucket)?;
        }
        let (gone, kept): (Vec<_>, Vec<_>) = entries
            .into_iter()
            .partition(|(ip, h)| h.id == id && pick(*ip, h));
        for (ip, _) in &gone {
            self.remove_lease(*ip)?;
        }
        if !gone.is_empty() {
            write_in_place(&bucket, index_body(&kept).as_bytes())?;
        }
        Ok(gone.into_iter().map(|(ip, _)| ip).collect())
    }

    /// Whether the leases on disk hold every entry of `id` among `entries` as written.
    fn confirms(&self, id: &str, entries: &[(IpAddr, Holder)]) -> Result<bool, StoreError> {
        for (ip, h) in entries.iter().filter(|(_, h)| h.id == id) {
            if self.holder(*ip)?.as_ref() != Some(h) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The last address reserved from range set `n`.
    pub fn last_reserved(&self, n: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED_PREFIX}{n}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Every lease on disk (a full read: for GC).
    pub fn scan(&self) -> Result<Vec<(IpAddr, Option<Holder>)>, StoreError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            let entry = entry.map_err(io("listing", &self.dir))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            out.push((ip, self.holder(ip)?));
        }
        Ok(out)
    }

    /// Removes the leases `keep` rejects, and temporary files a crash left; rebuilds the
    /// index. Returns the addresses freed.
    pub fn retain(&mut self, keep: impl Fn(&Holder) -> bool) -> Result<Vec<IpAddr>, StoreError> {
        let mut freed = Vec::new();
        for (ip, holder) in self.scan()? {
            if !holder.as_ref().is_some_and(&keep) {
                self.remove_lease(ip)?;
                freed.push(ip);
            }
        }
        for entry in [&self.dir, &self.index]
            .into_iter()
            .filter_map(|d| fs::read_dir(d).ok())
            .flatten()
            .flatten()
        {
            if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(entry.path());
                self.changed = true;
            }
        }
        self.rebuild_index()?;
        Ok(freed)
    }

    /// Removes a lease; its inode goes to the spare pool while the pool has room.
    fn remove_lease(&mut self, ip: IpAddr) -> Result<(), StoreError> {
        let path = self.dir.join(ip.to_string());
        self.changed = true;
        let removed = match self.spare_slot() {
            Some(slot) => fs::rename(&path, slot),
            None => fs::remove_file(&path),
        };
        match removed {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(io("removing", &path)(e)),
            _ => Ok(()),
        }
    }

    // ---- inode recycling -----------------------------------------------------------------
    //
    // Allocating an inode is the one cost of ADD that grows with the directory and that
    // dominates it on ext4 (~0.6–1 ms). Released leases keep their inode in a small pool
    // (`<index>/spare/`, same filesystem); ADD rewrites a spare in place and links it.
    // Crash safety: a spare is only reused while its link count is 1 — a crash between
    // linking it as a lease and dropping its spare name leaves it with two, and then only
    // the spare name is dropped, never the lease's content.

    fn spare_dir(&self) -> PathBuf {
        self.index.join("spare")
    }

    /// A free name in the pool, or `None` when the pool is full (or unusable).
    ///
    /// 64: a burst of that many DELs (a pod of containers, a host's restart of its
    /// workloads) is followed by as many ADDs that find an inode each. Allocating one
    /// under such churn is at its dearest: ext4 skips inodes freed in the last seconds,
    /// reading each one's deletion time on the way (`recently_deleted`, 8 % of all the
    /// CPU of 100 ADDs in a row, `perf record`). 64 spares hold 64 blocks of the disk.
    fn spare_slot(&self) -> Option<PathBuf> {
        const POOL: usize = 64;
        let dir = self.spare_dir();
        let count = match fs::read_dir(&dir) {
            Ok(d) => d.count(),
            Err(_) => fs::create_dir_all(&dir).ok().map(|()| 0)?,
        };
        (count < POOL).then(|| dir.join(unique_name("spare")))
    }

    /// A spare rewritten with `content`, if the pool has one fit for reuse.
    fn take_spare(&self, content: &str) -> Option<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        for entry in fs::read_dir(self.spare_dir()).ok()?.flatten() {
            let path = entry.path();
            let Ok(f) = OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            if f.metadata().map(|m| m.nlink()).unwrap_or(0) != 1 {
                let _ = fs::remove_file(&path); // still a lease's inode: drop only this name
                continue;
            }
            if overwrite(&f, content.as_bytes()).is_ok() {
                return Some(path);
            }
        }
        None
    }

    /// The file to link as the next lease: the one already prepared for this content, a
    /// recycled spare, or a new temporary file.
    fn prepare(&mut self, content: &str) -> Result<PathBuf, StoreError> {
        if let Some((path, c)) = &self.prepared {
            if c == content {
                return Ok(path.clone());
            }
        }
        let path = match self.take_spare(content) {
            Some(p) => p,
            None => write_tmp_in(&self.index, content.as_bytes())?,
        };
        self.prepared = Some((path.clone(), content.to_owned()));
        Ok(path)
    }

    // ---- index ------------------------------------------------------------------------

    fn bucket(&self, id: &str) -> PathBuf {
        self.index
            .join(BUCKETS)
            .join(format!("{:02x}", fnv1a(id.as_bytes()) % BUCKET_COUNT))
    }

    fn read_bucket(path: &Path) -> Result<Vec<(IpAddr, Holder)>, StoreError> {
        let text = match fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io("reading", path)(e)),
        };
        // A line that is not ours (not UTF-8, not "<id> <ip> [ifname]") is skipped; the
        // lease files decide every release (`confirms`).
        Ok(String::from_utf8_lossy(&text)
            .lines()
            .filter_map(|line| {
                let mut parts = line.split(' ');
                let id = parts.next()?.to_owned();
                let ip = parts.next()?.parse().ok()?;
                Some((
                    ip,
                    Holder {
                        id,
                        ifname: parts.next().map(str::to_owned),
                    },
                ))
            })
            .collect())
    }

    /// The index's entries of `id` that the lease files confirm (with the holder as the
    /// lease names it): an index corrupted in place never hands out another's address.
    fn index_entries(&self, id: &str) -> Result<Vec<(IpAddr, Holder)>, StoreError> {
        let mut out = Vec::new();
        for (ip, h) in Store::read_bucket(&self.bucket(id))? {
            if h.id != id {
                continue;
            }
            if let Some(disk) = self.holder(ip)?.filter(|d| d.id == id) {
                out.push((ip, disk));
            }
        }
        Ok(out)
    }

    fn rebuild_index(&mut self) -> Result<(), StoreError> {
        let mut buckets: BTreeMap<PathBuf, Vec<(IpAddr, Holder)>> = BTreeMap::new();
        for (ip, holder) in self.scan()? {
            if let Some(h) = holder.filter(|h| cni::validate::container_id(&h.id).is_ok()) {
                buckets.entry(self.bucket(&h.id)).or_default().push((ip, h));
            }
        }
        let dir = self.index.join(BUCKETS);
        for entry in fs::read_dir(&dir).map_err(io("listing", &dir))?.flatten() {
            if !buckets.contains_key(&entry.path()) {
                let _ = fs::remove_file(entry.path());
            }
        }
        for (path, entries) in &buckets {
            write_in_place(path, index_body(entries).as_bytes())?;
        }
        self.changed = true;
        Ok(())
    }

    // ---- stamp ------------------------------------------------------------------------

    fn stamp_is_current(&self) -> Result<bool, StoreError> {
        let recorded = fs::read_to_string(self.index.join("stamp"))
            .ok()
            .and_then(|s| parse_stamp(&s));
        let actual = fs::metadata(&self.dir)
            .map_err(io("reading", &self.dir))?
            .modified()
            .ok();
        Ok(recorded.is_some() && recorded == actual)
    }

    fn restamp(&self) -> Result<(), StoreError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = UNIX_EPOCH + Duration::new(now.as_secs(), random_nanos());
        let dir = File::open(&self.dir).map_err(io("opening", &self.dir))?;
        dir.set_times(fs::FileTimes::new().set_modified(stamp))
            .map_err(io("stamping", &self.dir))?;
        let d = stamp.duration_since(UNIX_EPOCH).unwrap_or_default();
        write_in_place(
            &self.index.join("stamp"),
            format!("{}.{:09}", d.as_secs(), d.subsec_nanos()).as_bytes(),
        )
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        if let Some((path, _)) = self.prepared.take() {
            // Prepared but never linked (every candidate was taken): back to the pool.
            match self.spare_slot() {
                Some(slot) => drop(fs::rename(&path, slot)),
                None => drop(fs::remove_file(&path)),
            }
        }
        if self.changed {
            // A failed restamp only costs a rebuild on the next operation.
            let _ = self.restamp();
        }
    }
}

/// A bucket: `<id> <ip> <ifname>` lines, without the ifname for a legacy lease.
fn index_body(entries: &[(IpAddr, Holder)]) -> String {
    entries
        .iter()
        .map(|(ip, h)| match &h.ifname {
            Some(i) => format!("{} {ip} {i}\n", h.id),
            None => format!("{} {ip}\n", h.id),
        })
        .collect()
}

/// FNV-1a: a hash that is the same in every process and Rust release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Rewrites a small file without creating a new inode once it exists.
fn write_in_place(path: &Path, content: &[u8]) -> Result<(), StoreError> {
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(path)
        .map_err(io("opening", path))?;
    overwrite(&f, content).map_err(io("writing", path))
}

/// Writes `content` over the start of `f` and cuts what is left of the old content.
///
/// Not `O_TRUNC` + write: on ext4 a truncation to zero frees the file's block, journals
/// the inode through the orphan list, and arms `auto_da_alloc`, which allocates the new
/// block and starts its writeback at close. That was 0.15–0.5 ms per file and four files
/// per ADD (`strace -T`). Written in place, the block stays; a shorter content only moves
/// the size within it. A crash between the write and the cut leaves the old tail behind
/// the new content; each of these files tolerates that (see the module's crash notes).
fn overwrite(f: &File, content: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    f.write_all_at(content, 0)?;
    let len = u64::try_from(content.len()).unwrap_or(u64::MAX);
    if f.metadata()?.len() > len {
        f.set_len(len)?;
    }
    Ok(())
}

fn parse_stamp(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = s.trim().split_once('.')?;
    Some(UNIX_EPOCH + Duration::new(secs.parse().ok()?, nanos.parse().ok()?))
}

fn random_nanos() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    (h.finish() % 1_000_000_000) as u32
}

/// `<prefix>-<pid>-<n>`: unique among the processes that hold the lock in turn.
fn unique_name(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

fn write_tmp_in(dir: &Path, content: &[u8]) -> Result<PathBuf, StoreError> {
    let path = dir.join(unique_name(TMP_PREFIX.trim_end_matches('-')));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(&path)
        .map_err(io("creating", &path))?;
    if let Err(e) = f.write_all(content) {
        let _ = fs::remove_file(&path);
        return Err(io("writing", &path)(e));
    }
    Ok(path)
}
