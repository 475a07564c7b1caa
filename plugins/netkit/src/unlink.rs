//! Deleting a link without waiting in the kernel's clean-up.
//!
//! `RTM_DELLINK` unregisters the device under the RTNL lock: it is unlisted (its name
//! free again), every protocol drops its addresses, routes, neighbours and bridge port,
//! and the kernel multicasts `RTM_DELLINK` for it. Then, with the lock released, the
//! requester's own context runs `netdev_run_todo()`, whose `rcu_barrier()` and wait for
//! the last references only free memory: 13–22 ms per veth on the machines measured,
//! the larger part of every bridge and ptp DEL (docs/benchmarks.md).
//!
//! [`link_del_unwaited`] has the request sent by a short-lived orphan
//! ([`crate::release::request_from_orphan`]) and returns when the notifications say the
//! link, and its veth peer, are unregistered; the orphan waits through the rest. A
//! refusal (or any answer that comes first) is the orphan's to report.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::ns::NetNs;

/// `RTMGRP_LINK`: link notifications.
const RTMGRP_LINK: u32 = 1;
/// How long the kernel may take to answer before this is an error.
const LIMIT: Duration = Duration::from_secs(30);

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// A netlink socket subscribed to link notifications of the calling thread's namespace.
fn link_events() -> Result<Socket> {
    let mut s = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
    s.bind(&SocketAddr::new(0, RTMGRP_LINK))
        .map_err(io("subscribing to link notifications"))?;
    s.set_non_blocking(true)
        .map_err(io("subscribing to link notifications"))?;
    Ok(s)
}

/// `ip link del` of link `index` in `ns` that returns once the kernel has unregistered
/// it and, when `peer` is given, its veth peer (an index in the caller's namespace,
/// which the kernel unregisters in the same step): their `RTM_DELLINK` notifications
/// were sent, after every protocol let go of them. A link that is already gone is fine.
pub fn link_del_unwaited(ns: &NetNs, index: u32, peer: Option<u32>) -> Result<()> {
    let (events, request_sock) = {
        let _in = ns.enter()?;
        let events = link_events()?;
        let request = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        (events, request)
    };
    let peer_events = peer.map(|_| link_events()).transpose()?;
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | NLM_F_ACK;
    hdr.sequence_number = 1;
    let mut m = NetlinkMessage::new(hdr, NetlinkPayload::from(RouteNetlinkMessage::DelLink(msg)));
    m.finalize();
    let mut request = vec![0; m.buffer_len()];
    m.serialize(&mut request);
    let request_fd = request_sock
        .as_fd()
        .try_clone_to_owned()
        .map_err(Error::Socket)?;
    drop(request_sock);
    let answer = crate::release::request_from_orphan(request_fd, &request)
        .map_err(io("starting the link deletion"))?;

    let mut pending = [Some((&events, index)), peer_events.as_ref().zip(peer)];
    let deadline = Instant::now() + LIMIT;
    let mut buf = vec![0u8; 1 << 16];
    while pending.iter().any(Option::is_some) {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::Io {
                what: "deleting a link: no answer from the kernel",
                source: Errno::ETIMEDOUT.into(),
            });
        }
        let mut fds: Vec<PollFd<'_>> = vec![PollFd::new(answer.as_fd(), PollFlags::POLLIN)];
        fds.extend(
            pending
                .iter()
                .flatten()
                .map(|(s, _)| PollFd::new(s.as_fd(), PollFlags::POLLIN)),
        );
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io("waiting for the link deletion")(e.into())),
            Ok(_) => {}
        }
        if fds[0].any().unwrap_or(false) {
            // The kernel answered (an error, or success before a notification was read).
            return read_answer(&answer);
        }
        for slot in pending.iter_mut() {
            let Some((sock, want)) = *slot else { continue };
            match deleted(sock, want, &mut buf) {
                Ok(true) => *slot = None,
                Ok(false) => {}
                // Notifications overran the socket: the orphan's answer tells instead.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                    return read_answer(&answer)
                }
                Err(e) => return Err(io("reading link notifications")(e)),
            }
        }
    }
    Ok(())
}

/// Whether the queued notifications of `sock` include `RTM_DELLINK` of `index`.
fn deleted(sock: &Socket, index: u32, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut seen = false;
    loop {
        let n = match sock.recv(&mut &mut buf[..], 0) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(seen),
            Err(e) => return Err(e),
        };
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let Ok(m) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest) else {
                break;
            };
            let len = (m.header.length as usize).min(rest.len());
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) = &m.payload {
                seen |= l.header.index == index;
            }
            if len == 0 {
                break;
            }
            rest = &rest[((len + 3) & !3).min(rest.len())..];
        }
    }
}

/// The orphan's answer: success, a link already gone, or the kernel's refusal.
fn read_answer(answer: &OwnedFd) -> Result<()> {
    let mut code = [0u8; 4];
    // The orphan writes once, when the kernel answered (after its clean-up wait).
    let n = nix::unistd::read(answer, &mut code).map_err(|e| io("deleting a link")(e.into()))?;
    if n < 4 {
        return Err(Error::Io {
            what: "deleting a link: the helper process ended without an answer",
            source: Errno::EPIPE.into(),
        });
    }
    match i32::from_ne_bytes(code) {
        0 | nix::libc::ENODEV => Ok(()),
        e => Err(Error::Io {
            what: "deleting a link",
            source: Errno::from_raw(e).into(),
        }),
    }
}
