//! Network namespaces as a type: [`NetNs`] owns the namespace's file descriptor;
//! [`NetNs::enter`] switches the calling thread in and returns a guard that switches
//! back when dropped (on `?` and on panic alike).
//!
//! Namespace membership is per thread, so a guard is `!Send`: it must be dropped on
//! the thread that created it.

use std::fs::{self, File, OpenOptions};
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{fstatfs, NSFS_MAGIC, PROC_SUPER_MAGIC};

use crate::error::{Error, Result};

/// Where named namespaces are pinned (as `ip netns` does).
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// An open network namespace.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    path: PathBuf,
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl NetNs {
    /// Opens the namespace at `path` (a pin under /run/netns, `/proc/PID/ns/net`, …),
    /// checking that it is one.
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|source| Error::Open {
            path: path.clone(),
            source,
        })?;
        let fd = OwnedFd::from(file);
        let fs_type = fstatfs(&fd)
            .map_err(|e| Error::Open {
                path: path.clone(),
                source: e.into(),
            })?
            .filesystem_type();
        // nsfs for pins and /proc/PID/ns/net on current kernels; procfs on old ones.
        if fs_type != NSFS_MAGIC && fs_type != PROC_SUPER_MAGIC {
            return Err(Error::NotNetns { path });
        }
        Ok(NetNs { fd, path })
    }

    /// The calling thread's current namespace.
    pub fn current() -> Result<NetNs> {
        NetNs::open("/proc/thread-self/ns/net")
    }

    /// The path this namespace was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new namespace pinned at `NETNS_RUN_DIR/name`, like `ip netns add`.
    pub fn create_named(name: &str) -> Result<NetNs> {
        validate_name(name)?;
        NetNs::create_at(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Creates a new namespace pinned (bind-mounted) at `path`. The pin's directory is
    /// made a shared mount point first, as iproute2 does, so that the pin propagates
    /// to mount namespaces created later. Nothing is left behind on failure.
    pub fn create_at(path: impl Into<PathBuf>) -> Result<NetNs> {
        let path = path.into();
        let create_err = |source| Error::Create {
            path: path.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| create_err(io_errno(&e)))?;
            make_shared_mountpoint(dir).map_err(create_err)?;
        }
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o444)
            .open(&path)
            .map_err(|e| create_err(io_errno(&e)))?;
        // unshare() moves only the calling thread: do it on a thread of its own, pin
        // the new namespace, and let the thread end.
        let target = path.clone();
        let pinned = std::thread::spawn(move || -> nix::Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
        .unwrap_or(Err(Errno::EIO));
        if let Err(e) = pinned {
            let _ = fs::remove_file(&path);
            return Err(create_err(e));
        }
        NetNs::open(&path)
    }

    /// Unpins and removes a namespace created by [`NetNs::create_at`]. A pin that is
    /// already gone is fine. The namespace itself lives on while anything holds it.
    pub fn delete_at(path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(source) => {
                return Err(Error::Delete {
                    path: path.into(),
                    source,
                })
            }
        }
        match fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Delete {
                path: path.into(),
                source: io_errno(&e),
            }),
            _ => Ok(()),
        }
    }

    /// [`NetNs::delete_at`] for a namespace pinned under [`NETNS_RUN_DIR`].
    pub fn delete_named(name: &str) -> Result<()> {
        validate_name(name)?;
        NetNs::delete_at(Path::new(NETNS_RUN_DIR).join(name))
    }

    /// Switches the calling thread into this namespace until the guard drops.
    pub fn enter(&self) -> Result<NsGuard> {
        let original = NetNs::current()?;
        setns(&self.fd, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
            what: self.path.display().to_string(),
            source,
        })?;
        Ok(NsGuard {
            original,
            _not_send: PhantomData,
        })
    }

    /// Runs `f` inside this namespace, always switching back.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T> {
        let _guard = self.enter()?;
        Ok(f())
    }

    /// Whether two handles name the same namespace (same nsfs inode).
    pub fn same_as(&self, other: &NetNs) -> bool {
        let id = |fd: BorrowedFd<'_>| nix::sys::stat::fstat(fd).map(|s| (s.st_dev, s.st_ino)).ok();
        id(self.fd.as_fd()).is_some() && id(self.fd.as_fd()) == id(other.fd.as_fd())
    }
}

/// Returned by [`NetNs::enter`]; switches the thread back when dropped.
#[derive(Debug)]
pub struct NsGuard {
    original: NetNs,
    _not_send: PhantomData<*const ()>,
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.original.fd, CloneFlags::CLONE_NEWNET) {
            // Going on in the wrong namespace would configure the wrong machine.
            eprintln!("netkit: cannot return to the original network namespace: {e}");
            std::process::abort();
        }
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Invalid {
            what: "namespace name",
            value: name.into(),
        });
    }
    Ok(())
}

/// Makes `dir` a mount point with shared propagation (bind-mounting it onto itself
/// when it is not a mount point yet), as `ip netns add` does for /run/netns.
fn make_shared_mountpoint(dir: &Path) -> nix::Result<()> {
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(None::<&str>, dir, None::<&str>, shared, None::<&str>) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            mount(None::<&str>, dir, None::<&str>, shared, None::<&str>)
        }
        Err(e) => Err(e),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(Errno::EIO as i32))
}
