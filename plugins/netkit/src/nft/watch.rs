//! Healing a firewall reload without a command. `nft flush ruleset` (what `systemctl
//! restart nftables`, `ufw reload` or a firewalld reload does) removes podnet's tables
//! and with them every published port, masquerade and isolation rule, while the
//! containers keep running. A small watcher, started on demand by the first commit and
//! gone with the last record, listens to the kernel's nf_tables events and calls
//! [`super::restore`] when a table is deleted or another table's chain appears (a
//! reloaded host ruleset, whose drop-policy chains need podnet's accepts again).
//!
//! It is the plugin binary itself, re-run as `<plugin> watch-nftables` (detached, in its
//! own process group, stdio closed so that no runtime waits on it). One runs per host:
//! it holds an exclusive `flock` on [`LOCK_PATH`] for its lifetime; a commit that finds
//! the lock free starts one. It exits when no record is left, deciding that under the
//! table lock and letting its own lock go first, so a concurrent first ADD either sees
//! it running or starts the next one.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{lock, NftError, TABLE};

/// Held by the running watcher.
pub const LOCK_PATH: &str = "/run/podnet/nft-watch.lock";
/// The argument that makes a plugin binary the watcher.
pub const ARG: &str = "watch-nftables";

/// `NFNLGRP_NFTABLES`: the multicast group of nf_tables changes.
const GROUP: u32 = 7;
const SUBSYS_NFTABLES: u16 = 10;
const MSG_NEWCHAIN: u16 = 3;
const MSG_DELTABLE: u16 = 2;
const MSG_DESTROYTABLE: u16 = 26;
/// How long a burst of events (one reload is hundreds) is left to settle before acting.
const SETTLE: Duration = Duration::from_millis(20);
/// How often an idle watcher checks whether any record is left.
const IDLE_CHECK: Duration = Duration::from_secs(10);

fn watcher_lock(how: FlockArg) -> Option<Flock<File>> {
    let path = Path::new(LOCK_PATH);
    std::fs::create_dir_all(path.parent()?).ok()?;
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    Flock::lock(f, how).ok()
}

/// Starts the watcher unless one runs. Called by [`super::commit`] with the table lock
/// held; best effort (a host without it still has `netctl reload`).
pub(super) fn ensure() {
    if watcher_lock(FlockArg::LockExclusiveNonblock).is_none() {
        return; // held: a watcher runs (or the directory is unusable)
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    use std::os::unix::process::CommandExt;
    let _ = Command::new(exe)
        .arg(ARG)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn();
}

/// The first thing in the `main` of every plugin that commits nftables records: run as
/// the watcher (and exit) when started as one, else return at once.
pub fn serve_if_asked() {
    if std::env::args().nth(1).as_deref() != Some(ARG) {
        return;
    }
    let code = match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("podnet nftables watcher: {e}");
            1
        }
    };
    // The process is the watcher and nothing else: its work ends here.
    #[allow(clippy::exit)]
    std::process::exit(code)
}

/// Whether one nfnetlink message says something podnet must react to: a table gone, or
/// a chain of another table created.
fn relevant(msg: &[u8]) -> bool {
    if msg.len() < 20 {
        return false;
    }
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind >> 8 != SUBSYS_NFTABLES {
        return false;
    }
    match kind & 0xff {
        MSG_DELTABLE | MSG_DESTROYTABLE => true,
        MSG_NEWCHAIN => table_name(&msg[20..]).is_some_and(|t| t != TABLE.as_bytes()),
        _ => false,
    }
}

/// The `*_TABLE` attribute (type 1 in table and chain messages) of nfnetlink attributes.
fn table_name(mut attrs: &[u8]) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == 1 {
            let v = &attrs[4..len];
            return Some(v.strip_suffix(&[0]).unwrap_or(v));
        }
        attrs = attrs.get((len + 3) & !3..)?;
    }
    None
}

/// Reads every queued datagram; whether any message in them is [`relevant`]. A receive
/// buffer overrun (ENOBUFS) lost events, so it counts as relevant too.
fn drain(sock: &Socket, buf: &mut Vec<u8>) -> bool {
    let mut any = false;
    loop {
        buf.clear();
        match sock.recv(buf, 0) {
            Ok(0) => return any,
            Ok(_) => {
                let mut rest = &buf[..];
                while rest.len() >= 16 {
                    let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    if len < 16 || len > rest.len() {
                        break;
                    }
                    any |= relevant(&rest[..len]);
                    rest = rest.get((len + 3) & !3..).unwrap_or_default();
                }
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => any = true,
            Err(_) => return any,
        }
    }
}

fn serve() -> Result<(), NftError> {
    let Some(mine) = watcher_lock(FlockArg::LockExclusiveNonblock) else {
        return Ok(()); // another watcher won the race
    };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(NftError::Exec)?;
    sock.bind(&SocketAddr::new(0, 0)).map_err(NftError::Exec)?;
    sock.add_membership(GROUP).map_err(NftError::Exec)?;
    sock.set_non_blocking(true).map_err(NftError::Exec)?;
    let mut buf = Vec::with_capacity(1 << 16);
    loop {
        let ready = {
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            let timeout = PollTimeout::try_from(IDLE_CHECK).unwrap_or(PollTimeout::MAX);
            poll(&mut fds, timeout).is_ok_and(|n| n > 0)
        };
        if ready && drain(&sock, &mut buf) {
            std::thread::sleep(SETTLE);
            drain(&sock, &mut buf);
            if let Err(e) = super::restore() {
                eprintln!("podnet nftables watcher: restoring: {e}");
            }
        }
        let _table = lock()?;
        if super::record::all()?.is_empty() {
            drop(mine);
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, table: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let name = format!("{table}\0");
        attr.extend_from_slice(&((4 + name.len()) as u16).to_ne_bytes());
        attr.extend_from_slice(&1u16.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = Vec::new();
        m.extend_from_slice(&((20 + attr.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((SUBSYS_NFTABLES << 8) | kind).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[2, 0, 0, 0]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn reacts_to_deleted_tables_and_foreign_chains_only() {
        assert!(relevant(&msg(MSG_DELTABLE, "podnet")));
        assert!(relevant(&msg(MSG_DELTABLE, "filter")));
        assert!(relevant(&msg(MSG_DESTROYTABLE, "podnet")));
        assert!(
            relevant(&msg(MSG_NEWCHAIN, "filter")),
            "a host ruleset loaded"
        );
        assert!(!relevant(&msg(MSG_NEWCHAIN, "podnet")), "our own restore");
        assert!(!relevant(&msg(12, "podnet")), "new set elements");
        assert!(!relevant(&[0; 8]));
        assert_eq!(
            table_name(&msg(MSG_NEWCHAIN, "filter")[20..]),
            Some(&b"filter"[..])
        );
        assert_eq!(table_name(&[4, 0, 1, 0]), Some(&[][..]), "an empty name");
        assert_eq!(table_name(&[200, 0, 1, 0]), None, "a length past the end");
    }
}
