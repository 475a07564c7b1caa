//! Closing a netfilter netlink socket without paying for the kernel's deferred clean-up.
//!
//! Releasing a bound `NETLINK_NETFILTER` socket (its `close`, or the exit of the process
//! holding it) runs nf_tables' netlink notifier, which flushes nf_tables' transaction
//! destroy work under the commit mutex (Linux ≥ 6.4, `nft_rcv_nl_event`). After a
//! transaction that deleted anything, that work is waiting for an RCU grace period, after
//! which it frees the deleted objects: 10–30 ms on the machines measured
//! (docs/benchmarks.md), paid by whoever closes the socket. The deleted rules and elements
//! are already gone from the packet path and from `nft list` when the kernel acknowledged
//! the transaction; what the close waits for is only memory being freed.
//!
//! [`close_unwaited`] gives the socket to a short-lived orphan process that waits for one
//! grace period of its own (`membarrier`, no lock held) and then exits, so that the
//! release finds the destroy work done and holds the commit mutex for microseconds. The
//! caller goes on (and a plugin returns) as soon as the transaction is acknowledged.
//! Every netfilter socket's release waits, not only the deleting one's, so once a process
//! deleted something ([`note_deletion`]) its later sockets go the same way
//! ([`close_netfilter`]); a process that deleted nothing closes them plainly and saves
//! the fork (~0.2 ms).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult};

/// `MEMBARRIER_CMD_GLOBAL`: returns after an RCU grace period (`synchronize_rcu`).
const MEMBARRIER_CMD_GLOBAL: libc::c_long = 1;

/// Closes `fd`, a netfilter netlink socket, in an orphan process that first waits for an
/// RCU grace period; returns once no process of the caller's holds anything else of the
/// caller's ([`in_orphan`]). Falls back to a plain close when `fork` fails.
#[allow(unsafe_code)]
pub fn close_unwaited(fd: OwnedFd) {
    let _ = in_orphan(&[fd.as_raw_fd()], || {
        // SAFETY: membarrier takes no pointer; a kernel without the command answers
        // EINVAL and the orphan simply exits.
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL, 0, 0) };
    });
}

/// Runs `work` in an orphan process holding only the descriptors `keep`: a child closes
/// every other descriptor, forks the orphan and exits; the caller reaps the child, so
/// when this returns no process of the caller's holds anything else of the caller's
/// (stdout above all: a runtime reads a plugin's stdout until every holder closed it).
/// `work` must make only raw system calls on memory allocated before the call.
#[allow(unsafe_code)]
fn in_orphan(keep: &[i32], work: impl FnOnce()) -> nix::Result<()> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    // SAFETY: between `fork` and `_exit` the children make only raw system calls
    // (close_range, fork, and `work`'s, which the caller vouches for): nothing allocates
    // or takes a lock, so whatever the caller's other threads held at the fork does not
    // matter.
    match unsafe { fork() }? {
        ForkResult::Child => {
            close_all_but(&keep);
            // SAFETY: as above.
            if let Ok(ForkResult::Child) = unsafe { fork() } {
                work();
            }
            // SAFETY: _exit ends the child without running the parent's atexit
            // handlers or destructors, which must not run twice.
            unsafe { libc::_exit(0) }
        }
        ForkResult::Parent { child } => {
            let _ = waitpid(child, None);
            Ok(())
        }
    }
}

/// Set once this process committed a transaction that deleted something.
static DELETED: AtomicBool = AtomicBool::new(false);

/// Records that this process just committed a deleting transaction: from now on its
/// netfilter sockets are closed by [`close_netfilter`] without waiting.
pub fn note_deletion() {
    DELETED.store(true, Ordering::Relaxed);
}

/// Closes a netfilter netlink socket: through [`drop_unwaited`] once this process
/// deleted something (any netfilter socket's release, not only the deleting one's,
/// waits for the clean-up), plainly otherwise (a fork saved).
pub fn close_netfilter<S: AsFd>(sock: S) {
    if DELETED.load(Ordering::Relaxed) {
        drop_unwaited(sock);
    } else {
        drop(sock);
    }
}

/// [`close_unwaited`] for a socket type that owns its descriptor (`netlink_sys::Socket`):
/// the descriptor is duplicated, so that dropping `sock` releases nothing.
pub fn drop_unwaited<S: AsFd>(sock: S) {
    match sock.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            drop(sock);
            close_unwaited(fd);
        }
        Err(_) => drop(sock),
    }
}

/// Runs one netlink request in a short-lived orphan process: `request` (encoded, with
/// `NLM_F_ACK`) is sent on `sock` and the kernel's answer, 0 or a positive errno, is
/// written as a native-endian `i32` to the pipe whose read end is returned. The caller
/// can go on as soon as it has seen the request's effect by other means (an event), while
/// the orphan, not the caller, waits through whatever the kernel does before it answers:
/// for a link deletion, `netdev_run_todo`'s `rcu_barrier()`
/// ([`crate::unlink::link_del_unwaited`]). Returns once no process of the caller's holds
/// anything else of the caller's, as [`close_unwaited`] does.
#[allow(unsafe_code)]
pub fn request_from_orphan(sock: OwnedFd, request: &[u8]) -> std::io::Result<OwnedFd> {
    let (answer_r, answer_w) = nix::unistd::pipe()?;
    let (sock_fd, pipe_fd) = (sock.as_raw_fd(), answer_w.as_raw_fd());
    in_orphan(&[sock_fd, pipe_fd], || {
        // SAFETY: a caller that stopped reading must not kill the orphan before the
        // kernel answered (the write then fails harmlessly).
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let code = ask(sock_fd, request).to_ne_bytes();
        // SAFETY: `code` is 4 valid bytes.
        unsafe { libc::write(pipe_fd, code.as_ptr().cast(), code.len()) };
    })?;
    Ok(answer_r)
}

/// Sends `request` on netlink socket `fd` and reads until the kernel's ack: 0 or the
/// errno. Raw system calls only (it runs in a forked child).
#[allow(unsafe_code)]
fn ask(fd: i32, request: &[u8]) -> i32 {
    const NLMSG_ERROR: u16 = 2;
    // SAFETY: `request` is valid for its length.
    if unsafe { libc::send(fd, request.as_ptr().cast(), request.len(), 0) } < 0 {
        return nix::errno::Errno::last_raw();
    }
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: `buf` is valid for its length.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return nix::errno::Errno::last_raw();
        }
        let got = &buf[..n as usize];
        let mut off = 0;
        // nlmsghdr: len u32, type u16, flags u16, seq u32, pid u32; an error message
        // carries the (negative) errno right after it.
        while off + 20 <= got.len() {
            let len = u32::from_ne_bytes([got[off], got[off + 1], got[off + 2], got[off + 3]]);
            let kind = u16::from_ne_bytes([got[off + 4], got[off + 5]]);
            if kind == NLMSG_ERROR {
                let b = &got[off + 16..off + 20];
                return -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            }
            if len < 16 {
                break;
            }
            off += (len as usize + 3) & !3;
        }
    }
}

/// Closes every descriptor but those of `keep` (sorted): stdout above all, as a runtime
/// reads a plugin's stdout until every holder closed it.
#[allow(unsafe_code)]
fn close_all_but(keep: &[i32]) {
    let mut from: libc::c_uint = 0;
    for &k in keep {
        let k = k as libc::c_uint;
        if k > from {
            // SAFETY: close_range takes no pointer; closing descriptors in a forked
            // child affects only the child.
            unsafe { libc::syscall(libc::SYS_close_range, from, k - 1, 0) };
        }
        from = k + 1;
    }
    // SAFETY: as above.
    unsafe { libc::syscall(libc::SYS_close_range, from, libc::c_uint::MAX, 0) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    #[test]
    fn the_socket_is_closed_by_the_orphan_and_nothing_else_is_held() {
        // The orphan holds the socket until it exits: the peer then reads EOF.
        let (ours, mut peer) = UnixStream::pair().unwrap();
        // A pipe open in the caller, standing for the plugin's stdout: once the caller
        // drops its write end, reading must reach EOF (no child kept a copy).
        let (r, w) = nix::unistd::pipe().unwrap();
        close_unwaited(OwnedFd::from(ours));
        drop(w);
        let mut out = Vec::new();
        std::fs::File::from(r).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        peer.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }
}
