//! Persistent tap devices. The kernel has no rtnetlink request that makes a tun/tap
//! device: it is made by `TUNSETIFF` on an open `/dev/net/tun`, in the namespace the
//! file was opened in, and kept after the file closes by `TUNSETPERSIST` — what `ip
//! tuntap add` does. Everything else about the link (MTU, MAC, master, up) is netlink's.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::libc;

use crate::{Error, NetNs, Result};

/// A tap to create: multi-queue, and the user and group allowed to open it (`None`:
/// no restriction, as `ip tuntap add` without `user`/`group`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapOptions {
    pub multi_queue: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
}

/// `struct ifreq` as `TUNSETIFF` reads it: the name, then the flags in the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _union_rest: [u8; 22],
}

/// The flags of a tap: no packet-information header (as `ip tuntap add`), multi-queue
/// when asked, and `IFF_TUN_EXCL` so an existing device of that name is an error
/// (`EBUSY`) rather than attached to.
fn flags(opts: &TapOptions) -> libc::c_int {
    let mut f = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_TUN_EXCL;
    if opts.multi_queue {
        f |= libc::IFF_MULTI_QUEUE;
    }
    f
}

/// Creates the persistent tap `name` in `ns` (the calling thread enters it only to
/// open `/dev/net/tun`). An existing link of that name is refused (`EBUSY`/`EEXIST`).
/// A failure before the device is made persistent leaves nothing: the kernel removes a
/// non-persistent tap when its file closes.
pub fn tap_create(ns: &NetNs, name: &str, opts: &TapOptions) -> Result<()> {
    let tun = ns.run(open_tun)??;
    tap_create_on(&tun, name, opts)
}

/// `/dev/net/tun`, opened in the calling thread's namespace.
pub fn open_tun() -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|source| Error::Io {
            what: "opening /dev/net/tun",
            source,
        })
}

/// [`tap_create`] on an already opened `/dev/net/tun` (the namespace it was opened in
/// is the device's).
pub fn tap_create_on(tun: &File, name: &str, opts: &TapOptions) -> Result<()> {
    let mut req = ifreq(name, flags(opts))?;
    let fd = tun.as_raw_fd();
    // SAFETY: `fd` is an open /dev/net/tun; TUNSETIFF reads and writes one `struct
    // ifreq`, which `req` is (same layout, 40 bytes), alive for the call.
    let r = unsafe { libc::ioctl(fd, libc::TUNSETIFF, &mut req as *mut IfReq) };
    check(r, "TUNSETIFF (creating the tap)")?;
    if let Some(uid) = opts.owner {
        // SAFETY: TUNSETOWNER takes its argument by value; no memory is shared.
        let r = unsafe { libc::ioctl(fd, libc::TUNSETOWNER, libc::c_ulong::from(uid)) };
        check(r, "TUNSETOWNER (the tap's owner)")?;
    }
    if let Some(gid) = opts.group {
        // SAFETY: as TUNSETOWNER.
        let r = unsafe { libc::ioctl(fd, libc::TUNSETGROUP, libc::c_ulong::from(gid)) };
        check(r, "TUNSETGROUP (the tap's group)")?;
    }
    // SAFETY: as TUNSETOWNER.
    let r = unsafe { libc::ioctl(fd, libc::TUNSETPERSIST, 1 as libc::c_ulong) };
    check(r, "TUNSETPERSIST (keeping the tap)")
}

/// Opens the existing tap `name` in `ns` as a queue, as a VM monitor does (frames
/// read from the file are the ones the kernel sends out of the tap; frames written are
/// received by it). `multi_queue` must match the device's.
pub fn tap_open(ns: &NetNs, name: &str, multi_queue: bool) -> Result<File> {
    let tun = ns.run(open_tun)??;
    let mut req = ifreq(
        name,
        libc::IFF_TAP
            | libc::IFF_NO_PI
            | if multi_queue {
                libc::IFF_MULTI_QUEUE
            } else {
                0
            },
    )?;
    // SAFETY: as in `tap_create_on`.
    let r = unsafe { libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req as *mut IfReq) };
    check(r, "TUNSETIFF (opening the tap)")?;
    Ok(tun)
}

fn ifreq(name: &str, flags: libc::c_int) -> Result<IfReq> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ || bytes.contains(&0) {
        return Err(Error::Invalid {
            what: "tap name",
            value: name.into(),
        });
    }
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        // The tun flags are a 16-bit field; IFF_TUN_EXCL is its top bit.
        flags: flags as u16 as libc::c_short,
        _union_rest: [0; 22],
    };
    req.name[..bytes.len()].copy_from_slice(bytes);
    Ok(req)
}

fn check(r: libc::c_int, what: &'static str) -> Result<()> {
    if r < 0 {
        let errno = Errno::last();
        // EBUSY from IFF_TUN_EXCL means the name is taken: say so as netlink would.
        let errno = if errno == Errno::EBUSY {
            Errno::EEXIST
        } else {
            errno
        };
        return Err(Error::Io {
            what,
            source: std::io::Error::from_raw_os_error(errno as i32),
        });
    }
    Ok(())
}

/// What the kernel reports about a tun/tap link (`IFLA_INFO_DATA` of kind `tun`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TunInfo {
    /// `true` for a tap (L2), `false` for a tun (L3).
    pub tap: bool,
    pub owner: Option<u32>,
    pub group: Option<u32>,
    pub persist: bool,
    pub multi_queue: bool,
    pub pi: bool,
    pub vnet_hdr: bool,
}

/// Decodes `IFLA_TUN_*` attributes (kind, payload) as the kernel sends them.
pub(crate) fn tun_info<'a>(attrs: impl IntoIterator<Item = (u16, &'a [u8])>) -> TunInfo {
    const OWNER: u16 = 1;
    const GROUP: u16 = 2;
    const TYPE: u16 = 3;
    const PI: u16 = 4;
    const VNET_HDR: u16 = 5;
    const PERSIST: u16 = 6;
    const MULTI_QUEUE: u16 = 7;
    let u32_of = |v: &[u8]| v.try_into().ok().map(u32::from_ne_bytes);
    let id = |v: &[u8]| u32_of(v).filter(|id| *id != u32::MAX);
    let flag = |v: &[u8]| v.first().is_some_and(|b| *b != 0);
    let mut info = TunInfo::default();
    for (kind, v) in attrs {
        match kind {
            OWNER => info.owner = id(v),
            GROUP => info.group = id(v),
            TYPE => info.tap = v.first() == Some(&(libc::IFF_TAP as u8)),
            PI => info.pi = flag(v),
            VNET_HDR => info.vnet_hdr = flag(v),
            PERSIST => info.persist = flag(v),
            MULTI_QUEUE => info.multi_queue = flag(v),
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifreq_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<IfReq>(), 40);
        let f = flags(&TapOptions {
            multi_queue: true,
            ..Default::default()
        });
        assert_eq!(f, 0x0002 | 0x1000 | 0x8000 | 0x0100);
    }

    #[test]
    fn tun_attributes_decode() {
        let none = u32::MAX.to_ne_bytes();
        let uid = 1000u32.to_ne_bytes();
        let attrs: Vec<(u16, &[u8])> = vec![
            (1, &uid),
            (2, &none),
            (3, &[2]),
            (4, &[0]),
            (6, &[1]),
            (7, &[1]),
        ];
        let i = tun_info(attrs);
        assert_eq!(
            i,
            TunInfo {
                tap: true,
                owner: Some(1000),
                group: None,
                persist: true,
                multi_queue: true,
                pi: false,
                vnet_hdr: false,
            }
        );
    }

    #[test]
    fn bad_names_are_refused_before_the_kernel() {
        let f = File::open("/dev/null").unwrap();
        for n in ["", "0123456789abcdef", "a\0b"] {
            assert!(matches!(
                tap_create_on(&f, n, &TapOptions::default()),
                Err(Error::Invalid { .. })
            ));
        }
    }
}
