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

use super::{apply, lock, query_objects, Batch, NftError, TABLE};

fn comment(bridge: &str) -> String {
    format!("podnet bridge:{bridge}")
}

/// (family, table, chain) of every forward base chain outside podnet (with a drop
/// policy only, when `only_drop`).
fn forward_chains(only_drop: bool) -> Result<Vec<(String, String, String)>, NftError> {
    Ok(query_objects(&["list", "chains"], "chain")?
        .into_iter()
        .filter(|c| {
            c["hook"] == "forward"
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

/// The insert commands for one chain (pure).
pub fn open_batch(family: &str, table: &str, chain: &str, bridge: &str) -> Batch {
    let c = comment(bridge);
    let mut b = Batch::default();
    // `insert` puts a rule first: the second one inserted ends up on top.
    b.push(format!(
        "insert rule {family} {table} {chain} oifname \"{bridge}\" ct state established,related accept comment \"{c}\""
    ));
    b.push(format!(
        "insert rule {family} {table} {chain} iifname \"{bridge}\" accept comment \"{c}\""
    ));
    b
}

/// Lets `bridge`'s traffic through every drop-policy forward chain of other tables
/// (idempotent). Returns how many chains were opened.
pub fn open_bridge(bridge: &str) -> Result<usize, NftError> {
    let _lock = lock()?;
    let mut batch = Batch::default();
    let mut n = 0;
    for (family, table, chain) in forward_chains(true)? {
        if handles(&family, &table, &chain, &comment(bridge))?.is_empty() {
            batch
                .0
                .extend(open_batch(&family, &table, &chain, bridge).0);
            n += 1;
        }
    }
    apply(&batch)?;
    Ok(n)
}

/// Removes what [`open_bridge`] inserted for `bridge`, wherever it still is.
pub fn close_bridge(bridge: &str) -> Result<usize, NftError> {
    let _lock = lock()?;
    let mut batch = Batch::default();
    for (family, table, chain) in forward_chains(false)? {
        for h in handles(&family, &table, &chain, &comment(bridge))? {
            batch.push(format!("delete rule {family} {table} {chain} handle {h}"));
        }
    }
    let n = batch.0.len();
    apply(&batch)?;
    Ok(n)
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
