//! Address ranges and range sets, and the order addresses are handed out in. Pure:
//! no I/O, so every rule is unit-tested without root or disk.
//!
//! Rules are the reference host-local's: the subnet must have no host bits set and room
//! for at least two hosts; `rangeStart` defaults to the network address + 1, `rangeEnd`
//! to the last address (for IPv4 the one before broadcast); `gateway` defaults to the
//! network address + 1 and is never handed out; the ranges of one set share a family and
//! do not overlap.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

/// Why a range or set is invalid; rendered into the error naming the config path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("network {0} has host bits set; its network address is {1}")]
    HostBits(IpNetwork, IpAddr),
    #[error("network {0} is too small to allocate from")]
    TooSmall(IpNetwork),
    #[error("rangeStart {0} is not in network {1}")]
    StartOutside(IpAddr, IpNetwork),
    #[error("rangeEnd {0} is not in network {1}")]
    EndOutside(IpAddr, IpNetwork),
    #[error("rangeStart {0} is after rangeEnd {1}")]
    StartAfterEnd(IpAddr, IpAddr),
    #[error("gateway {0} is not in network {1}")]
    GatewayOutside(IpAddr, IpNetwork),
    #[error("mixes IPv4 and IPv6 ranges")]
    MixedFamilies,
    #[error("ranges {0} and {1} overlap")]
    Overlap(IpNetwork, IpNetwork),
    #[error("is empty")]
    Empty,
}

/// One canonical range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, network address only.
    pub subnet: IpNetwork,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: IpAddr,
}

pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn from_u128(v: u128, like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4((v as u32).into()),
        IpAddr::V6(_) => IpAddr::V6(v.into()),
    }
}

impl Range {
    /// Canonicalizes a range as given in the config.
    pub fn new(
        subnet: IpNetwork,
        start: Option<IpAddr>,
        end: Option<IpAddr>,
        gateway: Option<IpAddr>,
    ) -> Result<Range, RangeError> {
        let network = subnet.network();
        if subnet.ip() != network {
            return Err(RangeError::HostBits(subnet, network));
        }
        let bits = if subnet.is_ipv4() { 32 } else { 128 };
        if subnet.prefix() > bits - 2 {
            return Err(RangeError::TooSmall(subnet));
        }
        let last = to_u128(subnet.broadcast()) - u128::from(subnet.is_ipv4());
        let start = start.unwrap_or_else(|| from_u128(to_u128(network) + 1, network));
        let end = end.unwrap_or_else(|| from_u128(last, network));
        if !subnet.contains(start) || start.is_ipv4() != subnet.is_ipv4() {
            return Err(RangeError::StartOutside(start, subnet));
        }
        if !subnet.contains(end) || end.is_ipv4() != subnet.is_ipv4() {
            return Err(RangeError::EndOutside(end, subnet));
        }
        if to_u128(start) > to_u128(end) {
            return Err(RangeError::StartAfterEnd(start, end));
        }
        let gateway = gateway.unwrap_or_else(|| from_u128(to_u128(network) + 1, network));
        if !subnet.contains(gateway) || gateway.is_ipv4() != subnet.is_ipv4() {
            return Err(RangeError::GatewayOutside(gateway, subnet));
        }
        Ok(Range {
            subnet,
            start,
            end,
            gateway,
        })
    }

    /// Whether `ip` may be handed out from this range (the gateway included: a request
    /// for it is refused separately, with its own message).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.subnet.is_ipv4()
            && (to_u128(self.start)..=to_u128(self.end)).contains(&to_u128(ip))
    }

    /// How many addresses the range hands out.
    pub fn capacity(&self) -> u128 {
        let span = to_u128(self.end) - to_u128(self.start) + 1;
        span - u128::from(self.contains(self.gateway))
    }

    fn overlaps(&self, other: &Range) -> bool {
        self.subnet.is_ipv4() == other.subnet.is_ipv4()
            && to_u128(self.start) <= to_u128(other.end)
            && to_u128(other.start) <= to_u128(self.end)
    }
}

/// Ranges handed out as one pool: an attachment gets one address per set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet(pub Vec<Range>);

impl RangeSet {
    pub fn new(ranges: Vec<Range>) -> Result<RangeSet, RangeError> {
        let Some(first) = ranges.first() else {
            return Err(RangeError::Empty);
        };
        if ranges
            .iter()
            .any(|r| r.subnet.is_ipv4() != first.subnet.is_ipv4())
        {
            return Err(RangeError::MixedFamilies);
        }
        for (i, a) in ranges.iter().enumerate() {
            if let Some(b) = ranges[i + 1..].iter().find(|b| a.overlaps(b)) {
                return Err(RangeError::Overlap(a.subnet, b.subnet));
            }
        }
        Ok(RangeSet(ranges))
    }

    pub fn is_ipv4(&self) -> bool {
        self.0[0].subnet.is_ipv4()
    }

    /// The range `ip` belongs to.
    pub fn range_for(&self, ip: IpAddr) -> Option<&Range> {
        self.0.iter().find(|r| r.contains(ip))
    }

    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.0.iter().any(|a| other.0.iter().any(|b| a.overlaps(b)))
    }

    pub fn capacity(&self) -> u128 {
        self.0.iter().map(Range::capacity).sum()
    }

    /// Every address of the set once, in hand-out order: starting after `last` (the
    /// last address reserved, when it is in the set; else at the first range's start),
    /// wrapping around, never the gateway.
    pub fn candidates(&self, last: Option<IpAddr>) -> impl Iterator<Item = (IpAddr, &Range)> + '_ {
        let (first_range, first) =
            match last.and_then(|ip| self.0.iter().position(|r| r.contains(ip)).map(|i| (i, ip))) {
                Some((i, ip)) => (i, Some(to_u128(ip))),
                None => (0, None),
            };
        let n = self.0.len();
        // Visit the starting range's tail, the other ranges, then the starting range's head.
        (0..=n).flat_map(move |step| {
            let idx = (first_range + step) % n;
            let r = &self.0[idx];
            let (lo, hi) = (to_u128(r.start), to_u128(r.end));
            // An empty span (`from > to`) yields nothing.
            let (from, to) = match (step, first) {
                (0, Some(f)) => (f.saturating_add(1), hi),
                (s, Some(f)) if s == n => (lo, f),
                (s, None) if s == n => (1, 0),
                _ => (lo, hi),
            };
            let gw = to_u128(r.gateway);
            (from..=to)
                .filter(move |v| *v != gw)
                .map(move |v| (from_u128(v, r.start), r))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn range(subnet: &str) -> Range {
        Range::new(subnet.parse().unwrap(), None, None, None).unwrap()
    }

    #[test]
    fn defaults_follow_the_reference() {
        let r = range("10.88.0.0/24");
        assert_eq!(
            (r.start, r.end, r.gateway),
            (ip("10.88.0.1"), ip("10.88.0.254"), ip("10.88.0.1"))
        );
        assert_eq!(r.capacity(), 253);
        let r6 = range("fd00::/120");
        assert_eq!((r6.start, r6.end), (ip("fd00::1"), ip("fd00::ff")));
        let r = Range::new(
            "10.0.0.0/24".parse().unwrap(),
            Some(ip("10.0.0.100")),
            Some(ip("10.0.0.110")),
            Some(ip("10.0.0.254")),
        )
        .unwrap();
        assert_eq!(r.capacity(), 11);
    }

    #[test]
    fn invalid_ranges() {
        let n = |s: &str| s.parse::<IpNetwork>().unwrap();
        assert!(matches!(
            Range::new(n("10.0.0.5/24"), None, None, None),
            Err(RangeError::HostBits(..))
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/31"), None, None, None),
            Err(RangeError::TooSmall(_))
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), Some(ip("10.0.1.1")), None, None),
            Err(RangeError::StartOutside(..))
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, Some(ip("fd00::1")), None),
            Err(RangeError::EndOutside(..))
        ));
        assert!(matches!(
            Range::new(
                n("10.0.0.0/24"),
                Some(ip("10.0.0.9")),
                Some(ip("10.0.0.8")),
                None
            ),
            Err(RangeError::StartAfterEnd(..))
        ));
        assert!(matches!(
            Range::new(n("10.0.0.0/24"), None, None, Some(ip("10.9.0.1"))),
            Err(RangeError::GatewayOutside(..))
        ));
        assert_eq!(
            RangeSet::new(vec![range("10.0.0.0/24"), range("fd00::/64")]),
            Err(RangeError::MixedFamilies)
        );
        assert!(matches!(
            RangeSet::new(vec![range("10.0.0.0/16"), range("10.0.5.0/24")]),
            Err(RangeError::Overlap(..))
        ));
        assert_eq!(RangeSet::new(vec![]), Err(RangeError::Empty));
    }

    #[test]
    fn candidates_start_after_last_wrap_and_skip_the_gateway() {
        let set = RangeSet::new(vec![
            Range::new("10.0.0.0/29".parse().unwrap(), None, None, None).unwrap(), // .1 gw, .2-.6
            Range::new(
                "10.0.1.0/29".parse().unwrap(),
                Some(ip("10.0.1.4")),
                None,
                Some(ip("10.0.1.5")),
            )
            .unwrap(),
        ])
        .unwrap();
        let all = |last| {
            set.candidates(last)
                .map(|(ip, _)| ip.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            all(None),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.4", "10.0.1.6"]
        );
        assert_eq!(
            all(Some(ip("10.0.0.4"))),
            ["10.0.0.5", "10.0.0.6", "10.0.1.4", "10.0.1.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        );
        assert_eq!(
            all(Some(ip("10.0.1.6"))),
            ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.1.4", "10.0.1.6"]
        );
        assert_eq!(
            all(Some(ip("192.168.0.1"))),
            all(None),
            "a last address outside the set is ignored"
        );
        assert_eq!(set.capacity(), 7);
        assert_eq!(
            set.range_for(ip("10.0.1.6")).unwrap().gateway,
            ip("10.0.1.5")
        );
        assert!(set.range_for(ip("10.0.1.2")).is_none());
    }

    #[test]
    fn candidates_are_lazy_on_huge_ranges() {
        let set = RangeSet::new(vec![range("fd00::/64")]).unwrap();
        let first: Vec<_> = set
            .candidates(Some(ip("fd00::ffff")))
            .take(2)
            .map(|(ip, _)| ip)
            .collect();
        assert_eq!(first, [ip("fd00::1:0"), ip("fd00::1:1")]);
    }
}
