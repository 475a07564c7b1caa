//! Conntrack entries, over ctnetlink: flushing the UDP flows of published ports.
//!
//! A UDP "connection" to a host port that was seen before the port was published (or
//! after it was unpublished) keeps its stale conntrack entry, and with it the old NAT
//! decision, for as long as packets keep coming: the mapping never takes effect
//! (reference plugins #123, #1190). `portmap` flushes the entries whose original
//! destination port is a mapped UDP host port, on ADD and on DEL.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::error::{Error, Result};

fn request(family: NetfilterProtoFamily, flags: u16, msg: ConntrackMessage) -> Vec<u8> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut packet = NetlinkMessage::new(
        hdr,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            msg,
        )),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    buf
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { what, source }
}

/// Whether an original tuple is UDP to one of `ports`.
fn udp_to(tuple: &[Tuple], ports: &[u16]) -> bool {
    let proto = tuple.iter().find_map(|t| match t {
        Tuple::Proto(p) => Some(p),
        _ => None,
    });
    let Some(p) = proto else { return false };
    p.iter()
        .any(|x| matches!(x, ProtoTuple::Protocol(Protocol::Udp)))
        && p.iter()
            .any(|x| matches!(x, ProtoTuple::DestinationPort(d) if ports.contains(d)))
}

/// Deletes the conntrack entries (IPv4 and IPv6) of UDP flows whose original
/// destination port is in `ports`; returns how many it asked the kernel to delete.
pub fn flush_udp(ports: &[u16]) -> Result<usize> {
    if ports.is_empty() {
        return Ok(0);
    }
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(io("ctnetlink socket"))?;
    sock.bind_auto().map_err(io("ctnetlink bind"))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(io("ctnetlink connect"))?;
    let mut doomed = Vec::new();
    for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
        let dump = request(
            family,
            NLM_F_REQUEST | NLM_F_DUMP,
            ConntrackMessage::Get(vec![]),
        );
        sock.send(&dump, 0).map_err(io("ctnetlink dump"))?;
        let mut buf = vec![0u8; 1 << 16];
        'dump: loop {
            let n = sock
                .recv(&mut &mut buf[..], 0)
                .map_err(io("ctnetlink dump"))?;
            let mut off = 0;
            while off < n {
                let msg =
                    NetlinkMessage::<NetfilterMessage>::deserialize(&buf[off..n]).map_err(|e| {
                        Error::Io {
                            what: "ctnetlink dump",
                            source: std::io::Error::other(e.to_string()),
                        }
                    })?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) => {
                        return Err(Error::Io {
                            what: "ctnetlink dump",
                            source: e.to_io(),
                        })
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attrs)),
                        ..
                    }) => {
                        for a in attrs {
                            if let ConntrackAttribute::CtaTupleOrig(t) = a {
                                if udp_to(&t, ports) {
                                    doomed.push((family, t));
                                }
                            }
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                off += len;
            }
        }
    }
    for (family, tuple) in &doomed {
        let del = request(
            *family,
            NLM_F_REQUEST,
            ConntrackMessage::Delete(vec![ConntrackAttribute::CtaTupleOrig(tuple.clone())]),
        );
        // A flow that ended meanwhile is an error reply nobody needs to read.
        sock.send(&del, 0).map_err(io("ctnetlink delete"))?;
    }
    // After portmap's DEL deleted its elements, this release would wait for their
    // clean-up (crate::release).
    crate::release::close_netfilter(sock);
    Ok(doomed.len())
}
