//! Traffic control over netlink, as `tc` speaks it: a token-bucket (`tbf`) root qdisc,
//! the `ingress` qdisc with a redirect of everything to another device (`u32` match-all,
//! `mirred egress redirect`), and `ifb` devices to shape what a link receives.
//!
//! rtnetlink has no `tbf` type, so its parameters are encoded here (`struct
//! tc_tbf_qopt`), and read back from a dump the same way.

use futures::StreamExt;
use netlink_packet_core::{
    DefaultNla, NetlinkMessage, NetlinkPayload, Nla, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::tc::{TcAttribute, TcHandle, TcMessage, TcOption};
use netlink_packet_route::RouteNetlinkMessage;
use rtnetlink::LinkIfb;

use crate::error::{Error, Result};
use crate::netlink::{nl, Netlink};
use crate::Errno;

const TCA_TBF_PARMS: u16 = 1;
const TCA_TBF_RATE64: u16 = 4;
/// `sizeof(struct tc_tbf_qopt)`: two `tc_ratespec` of 12 bytes, then limit, buffer, mtu.
const TBF_QOPT_LEN: usize = 36;
/// Scheduler ticks per microsecond: the kernel's `PSCHED_TICKS2NS(x) = x << 6` with
/// `/proc/net/psched` reading `000003e8 00000040 000f4240 …` (1000 / 64), as `tc` and
/// the Go netlink library compute it.
const TICKS_PER_USEC: f64 = 1000.0 / 64.0;
const USEC_PER_SEC: f64 = 1_000_000.0;
/// The queueing latency a `tbf` is sized for (the reference bandwidth plugin's 25 ms).
const LATENCY_USEC: f64 = 25_000.0;

/// A token bucket: `rate` in bytes per second, `buffer` in scheduler ticks, `limit` in
/// bytes, derived from a rate and a burst in bits exactly as the reference plugin does,
/// so that either side's CHECK accepts the other's qdisc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    pub rate: u64,
    pub buffer: u32,
    pub limit: u32,
}

impl Tbf {
    /// `rate_bits` > 0 bits per second, `burst_bits` > 0 bits (callers validate both).
    pub fn from_bits(rate_bits: u64, burst_bits: u64) -> Tbf {
        let rate = rate_bits / 8;
        let burst = (burst_bits / 8) as u32;
        // Go: time2Tick(uint32(float64(burst) * TIME_UNITS_PER_SEC / float64(rate))).
        let usec = (f64::from(burst) * USEC_PER_SEC / rate.max(1) as f64) as u32;
        Tbf {
            rate,
            buffer: (f64::from(usec) * TICKS_PER_USEC) as u32,
            limit: ((rate as f64 * LATENCY_USEC / USEC_PER_SEC) as u32).wrapping_add(burst),
        }
    }

    fn options(&self) -> Vec<TcOption> {
        let mut qopt = [0u8; TBF_QOPT_LEN];
        let rate32 = u32::try_from(self.rate).unwrap_or(u32::MAX);
        qopt[8..12].copy_from_slice(&rate32.to_ne_bytes());
        qopt[24..28].copy_from_slice(&self.limit.to_ne_bytes());
        qopt[28..32].copy_from_slice(&self.buffer.to_ne_bytes());
        let mut opts = vec![TcOption::Other(DefaultNla::new(
            TCA_TBF_PARMS,
            qopt.to_vec(),
        ))];
        if self.rate > u64::from(u32::MAX) {
            let r = self.rate.to_ne_bytes().to_vec();
            opts.push(TcOption::Other(DefaultNla::new(TCA_TBF_RATE64, r)));
        }
        opts
    }

    /// The parameters from a dumped qdisc's `TCA_OPTIONS` (one unparsed nest).
    fn parse(attrs: &[TcAttribute]) -> Option<Tbf> {
        let nest = attrs.iter().find_map(|a| match a {
            TcAttribute::Options(o) => o.iter().find_map(|o| match o {
                TcOption::Other(nla) => Some(nla_value(nla)),
                _ => None,
            }),
            _ => None,
        })?;
        let (mut qopt, mut rate64) = (None, None);
        let mut rest = nest.as_slice();
        while rest.len() >= 4 {
            let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
            let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
            if len < 4 || len > rest.len() {
                break;
            }
            let value = &rest[4..len];
            match kind {
                TCA_TBF_PARMS if value.len() >= TBF_QOPT_LEN => qopt = Some(value.to_vec()),
                TCA_TBF_RATE64 if value.len() == 8 => {
                    rate64 = Some(u64::from_ne_bytes(value.try_into().ok()?))
                }
                _ => {}
            }
            rest = &rest[len.next_multiple_of(4).min(rest.len())..];
        }
        let q = qopt?;
        let word = |at: usize| u32::from_ne_bytes([q[at], q[at + 1], q[at + 2], q[at + 3]]);
        Some(Tbf {
            rate: rate64.unwrap_or(u64::from(word(8))),
            limit: word(24),
            buffer: word(28),
        })
    }
}

/// A qdisc as `tc qdisc show dev D` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qdisc {
    pub kind: String,
    pub handle: u32,
    pub parent: u32,
    /// The bucket, for a `tbf`.
    pub tbf: Option<Tbf>,
}

fn nla_value(nla: &DefaultNla) -> Vec<u8> {
    let mut v = vec![0; nla.value_len()];
    nla.emit_value(&mut v);
    v
}

fn index_i32(index: u32) -> i32 {
    i32::try_from(index).unwrap_or(i32::MAX)
}

impl Netlink {
    /// `ip link add NAME mtu MTU type ifb`, left down: a qdisc grafted onto a device that
    /// is down costs no RCU grace period (the kernel deactivates an up device first),
    /// so the caller adds its qdisc, then [`Netlink::ifb_activate`]s it.
    pub async fn link_add_ifb(&self, name: &str, mtu: u32) -> Result<()> {
        let msg = LinkIfb::new(name).mtu(mtu).build();
        self.link_add(msg, format!("link add {name} type ifb"))
            .await
    }

    /// `ip link set dev D up alias ALIAS`, in one request (a creating request takes no
    /// alias).
    pub async fn ifb_activate(&self, index: u32, alias: &str) -> Result<()> {
        self.link_set(index, &format!("up alias {alias:?}"), |m| {
            m.up()
                .append_extra_attribute(LinkAttribute::IfAlias(alias.to_owned()))
        })
        .await
    }

    /// `tc qdisc add dev D root handle 1: tbf …`.
    pub async fn qdisc_add_tbf(&self, index: u32, tbf: &Tbf) -> Result<()> {
        let mut msg = TcMessage::with_index(index_i32(index));
        msg.header.parent = TcHandle::ROOT;
        msg.header.handle = TcHandle { major: 1, minor: 0 };
        msg.attributes.push(TcAttribute::Kind("tbf".into()));
        msg.attributes.push(TcAttribute::Options(tbf.options()));
        let op = format!(
            "qdisc add dev index {index} root handle 1: tbf rate {}bps",
            tbf.rate
        );
        self.tc_request(RouteNetlinkMessage::NewQueueDiscipline(msg), op)
            .await
    }

    /// `tc qdisc add dev D ingress` (handle ffff:).
    pub async fn qdisc_add_ingress(&self, index: u32) -> Result<()> {
        self.handle()
            .qdisc()
            .add(index_i32(index))
            .ingress()
            .execute()
            .await
            .map_err(nl(format!("qdisc add dev index {index} ingress")))
    }

    /// `tc filter add dev FROM parent ffff: protocol all prio 1 u32 match u32 0 0 action
    /// mirred egress redirect dev TO`: everything FROM receives leaves through TO.
    pub async fn filter_add_redirect(&self, from: u32, to: u32) -> Result<()> {
        let op = || format!("filter add dev index {from} parent ffff: u32 redirect {to}");
        let eth_p_all = (nix::libc::ETH_P_ALL as u16).to_be();
        self.handle()
            .traffic_filter(index_i32(from))
            .add()
            .parent(0xffff_0000)
            .priority(1)
            .protocol(eth_p_all)
            .redirect(to)
            .map_err(nl(op()))?
            .execute()
            .await
            .map_err(nl(op()))
    }

    /// `tc qdisc del dev D root` (or `ingress`); none there is fine.
    pub async fn qdisc_del(&self, index: u32, ingress: bool) -> Result<()> {
        let mut req = self.handle().qdisc().del(index_i32(index));
        let header = &mut req.message_mut().header;
        if ingress {
            header.parent = TcHandle::INGRESS;
            header.handle = TcHandle::from(0xffff_0000);
        } else {
            header.parent = TcHandle::ROOT;
        }
        match req
            .execute()
            .await
            .map_err(nl(format!("qdisc del dev index {index}")))
        {
            Err(e) if matches!(e.errno(), Some(Errno::ENOENT | Errno::EINVAL)) => Ok(()),
            r => r,
        }
    }

    /// `tc qdisc show dev D`.
    pub async fn qdisc_list(&self, index: u32) -> Result<Vec<Qdisc>> {
        let mut dump = self
            .handle()
            .qdisc()
            .get()
            .index(index_i32(index))
            .execute();
        let mut out = Vec::new();
        while let Some(msg) = dump.next().await {
            let msg = msg.map_err(nl(format!("qdisc show dev index {index}")))?;
            if msg.header.index != index_i32(index) {
                continue;
            }
            let kind = msg
                .attributes
                .iter()
                .find_map(|a| match a {
                    TcAttribute::Kind(k) => Some(k.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let tbf = (kind == "tbf")
                .then(|| Tbf::parse(&msg.attributes))
                .flatten();
            out.push(Qdisc {
                kind,
                handle: msg.header.handle.into(),
                parent: msg.header.parent.into(),
                tbf,
            });
        }
        Ok(out)
    }

    /// The root `tbf` of a link, if it has one.
    pub async fn qdisc_root_tbf(&self, index: u32) -> Result<Option<Tbf>> {
        Ok(self
            .qdisc_list(index)
            .await?
            .into_iter()
            .find(|q| q.parent == u32::from(TcHandle::ROOT) && q.kind == "tbf")
            .and_then(|q| q.tbf))
    }

    async fn tc_request(&self, body: RouteNetlinkMessage, op: String) -> Result<()> {
        let mut req = NetlinkMessage::from(body);
        req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        let fail = |source| Error::Netlink {
            op: op.clone(),
            source,
        };
        let mut answers = self.handle().request(req).map_err(fail)?;
        while let Some(answer) = answers.next().await {
            if let NetlinkPayload::Error(e) = answer.payload {
                if e.code.is_some() {
                    return Err(fail(rtnetlink::Error::NetlinkError(e)));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_matches_the_reference_arithmetic() {
        // 1 Mbit/s with a 1 Mbit burst: 125000 B/s, burst 125000 B = 1 s = 15625000 ticks;
        // limit = 125000 * 0.025 + 125000.
        let t = Tbf::from_bits(1_000_000, 1_000_000);
        assert_eq!(
            t,
            Tbf {
                rate: 125_000,
                buffer: 15_625_000,
                limit: 128_125
            }
        );
    }

    #[test]
    fn options_round_trip() {
        for t in [
            Tbf::from_bits(8_000_000, 80_000),
            Tbf::from_bits(80_000_000_000, 800_000),
        ] {
            let mut nest = Vec::new();
            for o in t.options() {
                let TcOption::Other(nla) = o else {
                    unreachable!()
                };
                let v = &nla_value(&nla);
                nest.extend_from_slice(&((v.len() + 4) as u16).to_ne_bytes());
                nest.extend_from_slice(&nla.kind().to_ne_bytes());
                nest.extend_from_slice(v);
                nest.resize(nest.len().next_multiple_of(4), 0);
            }
            let attrs = [TcAttribute::Options(vec![TcOption::Other(
                DefaultNla::new(2, nest),
            )])];
            assert_eq!(Tbf::parse(&attrs), Some(t));
        }
    }
}
