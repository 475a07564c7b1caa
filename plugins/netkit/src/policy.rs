//! Policy routing for source-based routing (the `sbr` plugin): `ip rule` entries `from
//! ADDR lookup TABLE`, the tables in use, and a link's routes moved from the main table
//! into another one.

use std::collections::BTreeSet;
use std::net::IpAddr;

use futures::TryStreamExt;
use ipnetwork::IpNetwork;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use netlink_packet_route::AddressFamily;
use rtnetlink::{IpVersion, RouteMessageBuilder};

use crate::error::Result;
use crate::netlink::nl;
use crate::{host_prefix, Netlink, RouteSpec};

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;

/// One `ip rule` entry, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `from PREFIX`; `None` for `from all`.
    pub src: Option<IpNetwork>,
    pub table: u32,
    pub priority: Option<u32>,
    message: RuleMessage,
}

fn rule_table(m: &RuleMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn route_table(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn route_ip(
    m: &RouteMessage,
    pick: impl Fn(&RouteAttribute) -> Option<&RouteAddress>,
) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match pick(a)? {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    })
}

fn route_oif(m: &RouteMessage) -> Option<u32> {
    m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })
}

impl Netlink {
    /// `ip rule show` and `ip -6 rule show`.
    pub async fn rule_list(&self) -> Result<Vec<Rule>> {
        let mut out = Vec::new();
        for v in [IpVersion::V4, IpVersion::V6] {
            let msgs: Vec<RuleMessage> = self
                .handle()
                .rule()
                .get(v)
                .execute()
                .try_collect()
                .await
                .map_err(nl("rule show"))?;
            for m in msgs {
                let src = m.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Source(ip) => IpNetwork::new(*ip, m.header.src_len).ok(),
                    _ => None,
                });
                let priority = m.attributes.iter().find_map(|a| match a {
                    RuleAttribute::Priority(p) => Some(*p),
                    _ => None,
                });
                out.push(Rule {
                    src,
                    table: rule_table(&m),
                    priority,
                    message: m,
                });
            }
        }
        Ok(out)
    }

    /// `ip rule add from ADDR/32 lookup TABLE` (`/128` for IPv6).
    pub async fn rule_add_from(&self, src: IpAddr, table: u32) -> Result<()> {
        let req = self
            .handle()
            .rule()
            .add()
            .table_id(table)
            .action(RuleAction::ToTable);
        let op = format!("rule add from {src} lookup {table}");
        match src {
            IpAddr::V4(a) => req.v4().source_prefix(a, 32).execute().await,
            IpAddr::V6(a) => req.v6().source_prefix(a, 128).execute().await,
        }
        .map_err(nl(op))
    }

    /// `ip rule del` of a rule as read back.
    pub async fn rule_del(&self, rule: &Rule) -> Result<()> {
        self.handle()
            .rule()
            .del(rule.message.clone())
            .execute()
            .await
            .map_err(nl(format!(
                "rule del from {:?} lookup {}",
                rule.src, rule.table
            )))
    }

    /// Every routing table a route or a rule of this namespace refers to.
    pub async fn tables_in_use(&self) -> Result<BTreeSet<u32>> {
        let mut used: BTreeSet<u32> = self.rule_list().await?.iter().map(|r| r.table).collect();
        for m in self.route_messages_all_tables().await? {
            used.insert(route_table(&m));
        }
        Ok(used)
    }

    /// Every route of every table, both families.
    pub(crate) async fn route_messages_all_tables(&self) -> Result<Vec<RouteMessage>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut filter = RouteMessageBuilder::<IpAddr>::new().build();
            filter.header.address_family = family;
            let msgs: Vec<RouteMessage> = self
                .handle()
                .route()
                .get(filter)
                .execute()
                .try_collect()
                .await
                .map_err(nl("route show table all"))?;
            out.extend(msgs);
        }
        Ok(out)
    }

    /// `ip route add … table T` (replacing one that is there).
    pub async fn route_replace_in_table(&self, route: &RouteSpec, table: u32) -> Result<()> {
        let mut msg = crate::netlink::route_message(route)?;
        set_table(&mut msg, table);
        self.handle()
            .route()
            .add(msg)
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route replace {} table {table}", route.dst)))
    }

    /// The main table's routes through link `index`.
    async fn main_routes_of(&self, index: u32) -> Result<Vec<RouteMessage>> {
        Ok(self
            .route_messages_all_tables()
            .await?
            .into_iter()
            .filter(|m| route_table(m) == MAIN_TABLE && route_oif(m) == Some(index))
            .collect())
    }

    /// The main table's routes through link `index` that `keep` picks (given each one's
    /// scope, preferred source and gateway), kept to be put into another table later
    /// ([`Netlink::routes_restore_in_table`]): a VRF takes a link's routes out of main.
    pub async fn routes_save(
        &self,
        index: u32,
        keep: impl Fn(u8, Option<IpAddr>, Option<IpAddr>) -> bool,
    ) -> Result<SavedRoutes> {
        let mut saved = Vec::new();
        for m in self.main_routes_of(index).await? {
            let src = route_ip(&m, |a| match a {
                RouteAttribute::PrefSource(s) => Some(s),
                _ => None,
            });
            let gw = route_ip(&m, |a| match a {
                RouteAttribute::Gateway(g) => Some(g),
                _ => None,
            });
            if keep(u8::from(m.header.scope), src, gw) {
                saved.push(m);
            }
        }
        Ok(SavedRoutes(saved))
    }

    /// Adds `saved` routes to `table`, as they were.
    pub async fn routes_restore_in_table(&self, saved: &SavedRoutes, table: u32) -> Result<()> {
        for m in &saved.0 {
            let mut c = m.clone();
            set_table(&mut c, table);
            c.header.flags = Default::default();
            c.attributes.retain(|a| {
                !matches!(a, RouteAttribute::CacheInfo(_) | RouteAttribute::Expires(_))
            });
            let dst = crate::netlink::route_from(m).map(|r| r.dst);
            self.handle()
                .route()
                .add(c)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("route replace {dst:?} table {table}")))?;
        }
        Ok(())
    }

    /// The main table's routes through link `index` that `copy` picks (given each one's
    /// preferred source and gateway) are added to `table` as they are.
    pub async fn routes_copy_to_table(
        &self,
        index: u32,
        table: u32,
        copy: impl Fn(Option<IpAddr>, Option<IpAddr>) -> bool,
    ) -> Result<()> {
        let saved = self.routes_save(index, |_, src, gw| copy(src, gw)).await?;
        self.routes_restore_in_table(&saved, table).await
    }

    /// Deletes the main table's routes through link `index` whose scope `remove` picks.
    pub async fn routes_del_from_main(
        &self,
        index: u32,
        remove: impl Fn(u8) -> bool,
    ) -> Result<()> {
        for m in self.main_routes_of(index).await? {
            if !remove(u8::from(m.header.scope)) {
                continue;
            }
            let dst = crate::netlink::route_from(&m).map(|r| r.dst);
            match self.handle().route().del(m).execute().await {
                Err(e) if !crate::netlink::is_nodev(&e) => {
                    return Err(nl(format!("route del {dst:?} dev index {index}"))(e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// `ip route replace SUBNET dev X src SRC scope link` in the main table.
    pub async fn route_replace_with_source(
        &self,
        index: u32,
        subnet: IpNetwork,
        src: IpAddr,
    ) -> Result<()> {
        let b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(subnet.network(), subnet.prefix())
            .map_err(|_| crate::Error::Invalid {
                what: "route",
                value: subnet.to_string(),
            })?
            .output_interface(index)
            .scope(netlink_packet_route::route::RouteScope::Link);
        let b = b.pref_source(src).map_err(|_| crate::Error::Invalid {
            what: "route source",
            value: src.to_string(),
        })?;
        self.handle()
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl(format!("route replace {subnet} src {src}")))
    }

    /// Deletes every route of `table` through link `index`.
    pub async fn table_flush_link(&self, table: u32, index: u32) -> Result<()> {
        for m in self.route_messages_all_tables().await? {
            if route_table(&m) != table || route_oif(&m) != Some(index) {
                continue;
            }
            match self.handle().route().del(m).execute().await {
                Err(e) if !crate::netlink::is_nodev(&e) => {
                    return Err(nl(format!("route flush table {table} dev index {index}"))(
                        e,
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

fn set_table(m: &mut RouteMessage, table: u32) {
    m.attributes
        .retain(|a| !matches!(a, RouteAttribute::Table(_)));
    if table > 255 {
        m.header.table = 252; // RT_TABLE_COMPAT: the attribute holds the id
        m.attributes.push(RouteAttribute::Table(table));
    } else {
        m.header.table = table as u8;
        m.attributes.push(RouteAttribute::Table(table));
    }
}

/// The first table id from `first` that nothing in `used` names.
pub fn free_table(used: &BTreeSet<u32>, first: u32) -> u32 {
    (first..)
        .find(|t| !used.contains(t))
        .expect("a free table id exists")
}

/// `ADDR/32` (`/128`): the source prefix of a rule for one address.
pub fn source_of(ip: IpAddr) -> IpNetwork {
    host_prefix(ip)
}

/// Routes kept by [`Netlink::routes_save`].
#[derive(Debug, Clone, Default)]
pub struct SavedRoutes(Vec<RouteMessage>);

impl SavedRoutes {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
