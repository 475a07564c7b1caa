//! Healing a firewall reload without a command. `nft flush ruleset` (what `systemctl
//! restart nftables`, `ufw reload` or a firewalld reload does) removes podnet's tables
//! and with them every published port, masquerade and isolation rule, while the
//! containers keep running. A small watcher, started on demand by the first commit and
//! gone with the last record, listens to the kernel's nf_tables events and calls
//! [`super::restore`] when one of podnet's tables is deleted, or reopens the host's
//! chains when another table's chain appears (a reloaded host ruleset, whose
//! drop-policy chains need podnet's accepts again). Element changes only wake it.
//!
//! It is the plugin binary itself, re-run as `<plugin> watch-nftables` (detached, in its
//! own process group, stdio closed so that no runtime waits on it). One runs per host:
//! it holds an exclusive `flock` on [`lock_path`] for its lifetime; a commit that finds
//! the lock free starts one. It exits when no record is left, deciding that under the
//! table lock and letting its own lock go first, so a concurrent first ADD either sees
//! it running or starts the next one.

use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::fcntl::{Flock, FlockArg};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{lock, NftError, TABLE};

/// Held by the running watcher.
/// The watcher's lock, `<run dir>/nft-watch.lock`.
pub fn lock_path() -> std::path::PathBuf {
    crate::run_dir().join("nft-watch.lock")
}
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
    let path = lock_path();
    let path = path.as_path();
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

/// What one nfnetlink message asks of podnet, the larger of two winning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reaction {
    Nothing,
    /// Another table's chain appeared (a host ruleset loaded): podnet's accepts in the
    /// host's drop-policy chains.
    HostChains,
    /// A podnet table went: everything.
    Everything,
}

fn reaction(msg: &[u8]) -> Reaction {
    if msg.len() < 20 {
        return Reaction::Nothing;
    }
    let kind = u16::from_ne_bytes([msg[4], msg[5]]);
    if kind >> 8 != SUBSYS_NFTABLES {
        return Reaction::Nothing;
    }
    let ours = || table_name(&msg[20..]).is_some_and(|t| t == TABLE.as_bytes());
    match kind & 0xff {
        MSG_DELTABLE | MSG_DESTROYTABLE if ours() => Reaction::Everything,
        MSG_NEWCHAIN if !ours() => Reaction::HostChains,
        _ => Reaction::Nothing,
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

/// Reads every queued datagram; the largest [`reaction`] of the messages in them. A
/// receive buffer overrun (ENOBUFS) lost events, so it asks for everything.
fn drain(sock: &Socket, buf: &mut Vec<u8>) -> Reaction {
    let mut most = Reaction::Nothing;
    loop {
        buf.clear();
        match sock.recv(buf, 0) {
            Ok(0) => return most,
            Ok(_) => {
                let mut rest = &buf[..];
                while rest.len() >= 16 {
                    let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                    if len < 16 || len > rest.len() {
                        break;
                    }
                    most = most.max(reaction(&rest[..len]));
                    rest = rest.get((len + 3) & !3..).unwrap_or_default();
                }
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => most = Reaction::Everything,
            Err(_) => return most,
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
        // Element changes (every ADD and DEL) wake it too: they cost a drain, nothing
        // else. Only a relevant event (the last DEL drops the tables) or an idle period
        // leads to the table lock and the check for a record left.
        if ready {
            let mut what = drain(&sock, &mut buf);
            if what == Reaction::Nothing {
                continue;
            }
            std::thread::sleep(SETTLE);
            what = what.max(drain(&sock, &mut buf));
            let done = match what {
                Reaction::Everything => super::restore(),
                _ => super::record::reopen_host_chains(),
            };
            if let Err(e) = done {
                eprintln!("podnet nftables watcher: restoring: {e}");
            }
        }
        let _table = lock()?;
        if !super::record::any_record() {
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
    fn reacts_to_our_deleted_tables_and_foreign_chains_only() {
        use Reaction::*;
        assert_eq!(reaction(&msg(MSG_DELTABLE, "podnet")), Everything);
        assert_eq!(reaction(&msg(MSG_DESTROYTABLE, "podnet")), Everything);
        assert_eq!(reaction(&msg(MSG_DELTABLE, "filter")), Nothing, "not ours");
        assert_eq!(
            reaction(&msg(MSG_NEWCHAIN, "filter")),
            HostChains,
            "a host ruleset"
        );
        assert_eq!(
            reaction(&msg(MSG_NEWCHAIN, "podnet")),
            Nothing,
            "our own restore"
        );
        assert_eq!(reaction(&msg(12, "podnet")), Nothing, "new set elements");
        assert_eq!(reaction(&[0; 8]), Nothing);
        assert_eq!(
            table_name(&msg(MSG_NEWCHAIN, "filter")[20..]),
            Some(&b"filter"[..])
        );
        assert_eq!(table_name(&[4, 0, 1, 0]), Some(&[][..]), "an empty name");
        assert_eq!(table_name(&[200, 0, 1, 0]), None, "a length past the end");
    }
}
