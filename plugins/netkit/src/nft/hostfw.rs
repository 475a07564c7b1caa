//! Living with a host firewall. A drop verdict in any table is final, and an accept in
//! podnet's table does not stop another table's chain from dropping: a host whose own
//! `forward` chain has a drop policy would drop container traffic whatever podnet
//! accepts. The reference plugins insert their jump into iptables' FORWARD chain; podnet
//! does the nftables equivalent, narrowly: for each bridge with a firewalled container,
//! two rules at the top of every *other* table's forward base chain whose policy is drop
//! (families ip, ip6, inet; iptables-nft's `filter FORWARD` included):
//!
//! ```text
//! iifname "<bridge>" accept comment "podnet bridge:<bridge>"
//! oifname "<bridge>" ct state established,related accept comment "podnet bridge:<bridge>"
//! ```
//!
//! They are inserted when the bridge gets its first firewalled container and deleted (by
//! handle, found through their comment) when its last one goes. podnet's own `forward`
//! chain, at a lower priority number, has already applied the isolation drops by then.
//! Tables with an accept policy are never touched.
//!
//! The DNS responder gets the same treatment on the input hook: while a bridge has a
//! container with `dnsname`, every other table's drop-policy input chain accepts UDP
//! and TCP port 53 from that bridge (comment `podnet dns:<bridge>`).
//!
//! firewalld's table admits no rule of another process: there the bridge joins
//! firewalld's `trusted` zone instead, while a firewall or dnsname record names it
//! ([`super::firewalld`]).

use super::{apply, lock, query_objects, wire, Batch, NftError, TABLE};

fn comment(bridge: &str) -> String {
    format!("podnet bridge:{bridge}")
}

fn dns_comment(bridge: &str) -> String {
    format!("podnet dns:{bridge}")
}

/// (family, table, chain) of every `hook` base chain outside podnet (with a drop
/// policy only, when `only_drop`): one netlink dump, or `nft` when that fails.
fn base_chains(hook: &str, only_drop: bool) -> Result<Vec<(String, String, String)>, NftError> {
    let number = match hook {
        "input" => 1,
        "forward" => 2,
        _ => u32::MAX,
    };
    if let Ok(chains) = wire::base_chains() {
        return Ok(chains
            .into_iter()
            .filter(|c| {
                c.hook == number
                    && (!only_drop || c.policy == 0)
                    && c.table != TABLE
                    && matches!(c.family, "ip" | "ip6" | "inet")
            })
            .map(|c| (c.family.to_owned(), c.table, c.name))
            .collect());
    }
    Ok(query_objects(&["list", "chains"], "chain")?
        .into_iter()
        .filter(|c| {
            c["hook"] == hook
                && (!only_drop || c["policy"] == "drop")
                && c["table"] != TABLE
                && matches!(c["family"].as_str(), Some("ip" | "ip6" | "inet"))
        })
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("family"), s("table"), s("name"))
        })
        .collect())
}

/// Handles of the rules carrying `comment` in one chain.
fn handles(family: &str, table: &str, chain: &str, comment: &str) -> Result<Vec<u64>, NftError> {
    Ok(
        query_objects(&["-a", "list", "chain", family, table, chain], "rule")?
            .into_iter()
            .filter(|r| r["comment"] == comment)
            .filter_map(|r| r["handle"].as_u64())
            .collect(),
    )
}

/// The insert commands for one chain (pure): `rules` end up on top, in their order.
pub fn insert_batch(family: &str, table: &str, chain: &str, rules: &[String], c: &str) -> Batch {
    let mut b = Batch::default();
    // `insert` puts a rule first: insert the last one first.
    for rule in rules.iter().rev() {
        b.push(format!(
            "insert rule {family} {table} {chain} {rule} comment \"{c}\""
        ));
    }
    b
}

fn bridge_rules(bridge: &str) -> [String; 2] {
    [
        format!("iifname \"{bridge}\" accept"),
        format!("oifname \"{bridge}\" ct state established,related accept"),
    ]
}

/// The forward rules for one bridge (pure).
pub fn open_batch(family: &str, table: &str, chain: &str, bridge: &str) -> Batch {
    insert_batch(
        family,
        table,
        chain,
        &bridge_rules(bridge),
        &comment(bridge),
    )
}

/// Inserts `rules` (tagged `c`) into every drop-policy `hook` chain of other tables
/// that does not hold them yet, under the table lock the caller holds. Returns how many
/// chains were opened.
fn open_locked(hook: &str, rules: &[String], c: &str) -> Result<usize, NftError> {
    let mut batch = Batch::default();
    let mut n = 0;
    for (family, table, chain) in base_chains(hook, true)? {
        if handles(&family, &table, &chain, c)?.is_empty() {
            batch
                .0
                .extend(insert_batch(&family, &table, &chain, rules, c).0);
            n += 1;
        }
    }
    apply(&batch)?;
    Ok(n)
}

/// Deletes the rules tagged `c` from every `hook` chain of other tables; the bridge
/// leaves firewalld's trusted zone once no record of it is left.
fn close(hook: &str, c: &str, bridge: &str) -> Result<usize, NftError> {
    let _lock = lock()?;
    let in_use = ["firewall", "dnsname"]
        .iter()
        .any(|owner| super::record::group(owner, bridge).is_ok_and(|g| !g.is_empty()));
    if !in_use {
        super::firewalld::untrust(bridge);
    }
    let mut batch = Batch::default();
    for (family, table, chain) in base_chains(hook, false)? {
        for h in handles(&family, &table, &chain, c)? {
            batch.push(format!("delete rule {family} {table} {chain} handle {h}"));
        }
    }
    let n = batch.0.len();
    apply(&batch)?;
    Ok(n)
}

/// Lets `bridge`'s traffic through every drop-policy forward chain of other tables
/// (idempotent). Returns how many chains were opened.
pub fn open_bridge(bridge: &str) -> Result<usize, NftError> {
    let _lock = lock()?;
    open_bridge_locked(bridge)
}

/// [`open_bridge`] under a table lock the caller holds ([`super::restore`]).
pub(super) fn open_bridge_locked(bridge: &str) -> Result<usize, NftError> {
    let n = open_locked("forward", &bridge_rules(bridge), &comment(bridge))?;
    super::firewalld::trust(bridge);
    Ok(n)
}

/// Removes what [`open_bridge`] inserted for `bridge`, wherever it still is.
pub fn close_bridge(bridge: &str) -> Result<usize, NftError> {
    close("forward", &comment(bridge), bridge)
}

/// Lets DNS queries (UDP and TCP to `port`) from `bridge` through every drop-policy
/// input chain of other tables, for the network's DNS responder (idempotent).
pub fn open_dns(bridge: &str, port: u16) -> Result<usize, NftError> {
    let _lock = lock()?;
    open_dns_locked(bridge, port)
}

/// [`open_dns`] under a table lock the caller holds.
pub(super) fn open_dns_locked(bridge: &str, port: u16) -> Result<usize, NftError> {
    let rules = [
        format!("iifname \"{bridge}\" udp dport {port} accept"),
        format!("iifname \"{bridge}\" tcp dport {port} accept"),
    ];
    let n = open_locked("input", &rules, &dns_comment(bridge))?;
    super::firewalld::trust(bridge);
    Ok(n)
}

/// Removes what [`open_dns`] inserted for `bridge`.
pub fn close_dns(bridge: &str) -> Result<usize, NftError> {
    close("input", &dns_comment(bridge), bridge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_batch_puts_the_ingress_accept_first() {
        assert_eq!(
            open_batch("inet", "filter", "forward", "cni0").0,
            [
                "insert rule inet filter forward oifname \"cni0\" ct state established,related accept comment \"podnet bridge:cni0\"",
                "insert rule inet filter forward iifname \"cni0\" accept comment \"podnet bridge:cni0\""
            ]
        );
    }
}
