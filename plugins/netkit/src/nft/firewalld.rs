//! Living with firewalld. Its nftables backend keeps its rules in `table inet firewalld`
//! (owned by its process: no other may add a rule there), whose input and forward chains
//! have an accept policy but end in `reject`: a bridge in no zone falls into the default
//! zone (`public`), so containers' forwarded traffic and their DNS queries to the bridge
//! are rejected while podnet's own chains accept them. A published port still works
//! (firewalld accepts DNATed flows).
//!
//! When that table exists, the first firewalled (or DNS-served) container of a bridge
//! puts the bridge into firewalld's `trusted` zone over D-Bus (`changeZoneOfInterface`,
//! at runtime only), as netavark does with its subnets; the bridge's last container puts
//! it back where it was. A marker under `<run dir>/firewalld/<bridge>` holds the zone the
//! bridge had (empty: none) and says that podnet moved it; a bridge an administrator had
//! already made trusted is left alone and never taken out. A firewalld reload forgets
//! runtime bindings: it re-creates its table, the nftables watcher sees a foreign chain
//! appear and calls [`trust`] again for every bridge in use.
//!
//! Best effort: no firewalld, no system bus or a refused call is a warning on stderr,
//! never a failed ADD (the same container works on a host without firewalld).
//! `DBUS_SYSTEM_BUS_ADDRESS` moves the bus, as for every D-Bus client.

use std::path::PathBuf;
use std::time::Duration;

use super::wire;

/// The zone podnet's bridges join.
pub const ZONE: &str = "trusted";
const DEST: &str = "org.fedoraproject.FirewallD1";
const PATH: &str = "/org/fedoraproject/FirewallD1";
const ZONE_IFACE: &str = "org.fedoraproject.FirewallD1.zone";
/// firewalld answers in milliseconds; a wedged one must not hang a container's ADD.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// The markers' directory.
pub fn state_dir() -> PathBuf {
    crate::run_dir().join("firewalld")
}

/// Whether firewalld's nftables table is there (one chain dump, no D-Bus).
pub fn running() -> bool {
    wire::base_chains().is_ok_and(|chains| {
        chains
            .iter()
            .any(|c| c.family == "inet" && c.table == "firewalld")
    })
}

fn marker(bridge: &str) -> Option<PathBuf> {
    cni::validate::interface_name(bridge).ok()?;
    Some(state_dir().join(bridge))
}

async fn call<B>(conn: &zbus::Connection, method: &str, body: &B) -> zbus::Result<String>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let reply = tokio::time::timeout(
        CALL_TIMEOUT,
        conn.call_method(Some(DEST), PATH, Some(ZONE_IFACE), method, body),
    )
    .await
    .map_err(|_| zbus::Error::Failure(format!("{method}: no answer within {CALL_TIMEOUT:?}")))??;
    reply.body().deserialize::<String>()
}

async fn zone_of(conn: &zbus::Connection, bridge: &str) -> zbus::Result<String> {
    call(conn, "getZoneOfInterface", &(bridge,)).await
}

fn warn(what: &str, bridge: &str, e: impl std::fmt::Display) {
    eprintln!("podnet: firewalld: {what} {bridge}: {e}");
}

/// Puts `bridge` into the trusted zone when firewalld runs (idempotent). `true` when it
/// is there afterwards because of podnet.
pub fn trust(bridge: &str) -> bool {
    let Some(mark) = marker(bridge) else {
        return false;
    };
    if !running() {
        return false;
    }
    let done = crate::block_on(async {
        let conn = zbus::Connection::system().await?;
        let now = zone_of(&conn, bridge).await?;
        if now == ZONE {
            return Ok(mark.exists());
        }
        if !mark.exists() {
            std::fs::create_dir_all(state_dir())
                .map_err(|e| zbus::Error::Failure(e.to_string()))?;
            std::fs::write(&mark, &now).map_err(|e| zbus::Error::Failure(e.to_string()))?;
        }
        call(&conn, "changeZoneOfInterface", &(ZONE, bridge)).await?;
        Ok::<_, zbus::Error>(true)
    });
    done.unwrap_or_else(|e| {
        warn("adding to the trusted zone", bridge, e);
        false
    })
}

/// Gives `bridge` back the zone it had before [`trust`] (nothing when podnet did not move
/// it, or when someone moved it since).
pub fn untrust(bridge: &str) {
    let Some(mark) = marker(bridge) else {
        return;
    };
    let Ok(before) = std::fs::read_to_string(&mark) else {
        return;
    };
    let _ = std::fs::remove_file(&mark);
    if !running() {
        return;
    }
    let done = crate::block_on(async {
        let conn = zbus::Connection::system().await?;
        if zone_of(&conn, bridge).await? != ZONE {
            return Ok(());
        }
        if before.is_empty() {
            call(&conn, "removeInterface", &(ZONE, bridge)).await?;
        } else {
            call(&conn, "changeZoneOfInterface", &(before.as_str(), bridge)).await?;
        }
        Ok::<_, zbus::Error>(())
    });
    if let Err(e) = done {
        warn("taking back out of the trusted zone", bridge, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_named_by_valid_interface_names_only() {
        assert!(marker("cni-podman0").is_some());
        for bad in ["", "../etc", "a/b", "..", "sixteen-chars-xx"] {
            assert!(marker(bad).is_none(), "{bad:?}");
        }
    }
}
