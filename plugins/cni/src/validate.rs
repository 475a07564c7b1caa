//! Identifier rules shared by the plugin skeleton and the runtime (the same as libcni's),
//! so that a bad name is refused before anything is created.

use crate::error::{CniError, ErrorCode};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME_LEN: usize = 15;

fn is_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn valid_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric()) && chars.all(is_id_char)
}

/// How much of a name from the input an error echoes: a 10,000-character name is bad
/// input, not a message.
pub const ECHO_MAX: usize = 64;

/// `name` cut to [`ECHO_MAX`] characters (marked with `…` when cut), for messages.
pub fn echo(name: &str) -> String {
    match name.char_indices().nth(ECHO_MAX) {
        None => name.to_owned(),
        Some((at, _)) => format!("{}…", &name[..at]),
    }
}

/// `CNI_CONTAINERID`: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn container_id(id: &str) -> Result<(), CniError> {
    if id.is_empty() {
        return Err(CniError::new(
            ErrorCode::UNKNOWN_CONTAINER,
            "missing containerID",
        ));
    }
    if !valid_identifier(id) {
        return Err(
            CniError::invalid_env("invalid characters in containerID").with_details(echo(id))
        );
    }
    Ok(())
}

/// A network `name`: non-empty, `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub fn network_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_config("missing network name"));
    }
    if !valid_identifier(name) {
        return Err(
            CniError::invalid_config("invalid characters found in network name")
                .with_details(echo(name)),
        );
    }
    Ok(())
}

/// `CNI_IFNAME`: what the kernel accepts as a link name.
pub fn interface_name(name: &str) -> Result<(), CniError> {
    if name.is_empty() {
        return Err(CniError::invalid_env("interface name is empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(
            CniError::invalid_env("interface name is too long").with_details(format!(
                "interface name should be less than {} characters",
                MAX_IFNAME_LEN + 1
            )),
        );
    }
    if name == "." || name == ".." {
        return Err(CniError::invalid_env("interface name is . or .."));
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        return Err(CniError::invalid_env(
            "interface name contains / or : or whitespace characters",
        )
        .with_details(echo(name)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_are_cut_in_messages() {
        let long = "n-".repeat(5_000);
        let e = network_name(&format!("{long}!")).unwrap_err();
        assert!(
            e.details.len() < 80 && e.details.ends_with('…'),
            "{}",
            e.details
        );
        assert_eq!(echo("short"), "short");
    }

    #[test]
    fn identifiers() {
        assert!(container_id("abc-1.2_3").is_ok());
        assert_eq!(
            container_id("").unwrap_err().code,
            ErrorCode::UNKNOWN_CONTAINER
        );
        assert_eq!(
            container_id("a b").unwrap_err().code,
            ErrorCode::INVALID_ENVIRONMENT
        );
        assert_eq!(
            container_id("-a").unwrap_err().code,
            ErrorCode::INVALID_ENVIRONMENT
        );
        assert!(network_name("podman").is_ok());
        assert_eq!(
            network_name("").unwrap_err().code,
            ErrorCode::INVALID_NETWORK_CONFIG
        );
        assert_eq!(
            network_name("a/b").unwrap_err().code,
            ErrorCode::INVALID_NETWORK_CONFIG
        );
        assert!(interface_name("eth0").is_ok());
        for bad in ["", ".", "..", "a/b", "a:b", "a b", "abcdefghijklmnop"] {
            assert_eq!(
                interface_name(bad).unwrap_err().code,
                ErrorCode::INVALID_ENVIRONMENT,
                "{bad}"
            );
        }
    }
}
