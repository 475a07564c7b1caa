//! Finding networks as libcni does: the `.conf`, `.conflist` and `.json` files of a
//! directory in lexical order, a single-plugin `.conf` read as a list of one
//! ([`NetConfList::from_bytes`]), the first list with the wanted name.

use std::path::{Path, PathBuf};

use crate::config::NetConfList;
use crate::error::CniError;

/// Why a network could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("no network {name:?} in {} ({files} config files read)", dir.display())]
    NotFound {
        name: String,
        dir: PathBuf,
        files: usize,
    },
    /// The file named after the network does not parse.
    #[error("{}: {}", file.display(), source.msg)]
    Invalid {
        file: PathBuf,
        #[source]
        source: CniError,
    },
}

/// The config files of `dir`, sorted (none when it cannot be read).
pub fn config_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.retain(|p| {
        matches!(
            p.extension().and_then(|x| x.to_str()),
            Some("conflist" | "conf" | "json")
        )
    });
    files.sort();
    files
}

/// One config file as a list; `None` when it cannot be read at all.
pub fn load(file: &Path) -> Option<Result<NetConfList, CniError>> {
    let bytes = std::fs::read(file).ok()?;
    Some(NetConfList::from_bytes(&bytes))
}

/// The network named `name` in `dir`, and the file it is in. A file that does not parse
/// is skipped, unless it is named after the network (`NAME.conflist`): then it is the
/// network, broken.
pub fn find_network(dir: &Path, name: &str) -> Result<(NetConfList, PathBuf), DiscoveryError> {
    let files = config_files(dir);
    for f in &files {
        match load(f) {
            Some(Ok(list)) if list.name == name => return Ok((list, f.clone())),
            Some(Err(source)) if f.file_stem().and_then(|s| s.to_str()) == Some(name) => {
                return Err(DiscoveryError::Invalid {
                    file: f.clone(),
                    source,
                })
            }
            _ => {}
        }
    }
    Err(DiscoveryError::NotFound {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        files: files.len(),
    })
}

/// Splits a plugin search path (`CNI_PATH`, colon separated, empty entries ignored).
pub fn split_path(raw: &str) -> Vec<PathBuf> {
    raw.split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_by_name_in_lexical_order_and_names_a_broken_namesake() {
        let d = tempfile::tempdir().unwrap();
        let w = |f: &str, s: &str| std::fs::write(d.path().join(f), s).unwrap();
        w(
            "10-a.conflist",
            r#"{"cniVersion":"1.0.0","name":"web","plugins":[{"type":"bridge"}]}"#,
        );
        w(
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"web","plugins":[{"type":"ptp"}]}"#,
        );
        w(
            "30-c.conf",
            r#"{"cniVersion":"1.0.0","name":"one","type":"loopback"}"#,
        );
        w("broken.conflist", "{");
        w("notes.txt", "not a config");
        let (list, file) = find_network(d.path(), "web").unwrap();
        assert_eq!(file.file_name().unwrap(), "10-a.conflist");
        assert_eq!(crate::config::plugin_type(&list.plugins[0]), Some("bridge"));
        assert_eq!(find_network(d.path(), "one").unwrap().0.plugins.len(), 1);
        match find_network(d.path(), "nope").unwrap_err() {
            DiscoveryError::NotFound { files, .. } => assert_eq!(files, 4),
            e => panic!("{e}"),
        }
        let e = find_network(d.path(), "broken").unwrap_err();
        assert!(matches!(e, DiscoveryError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("broken.conflist"), "{e}");
    }

    #[test]
    fn search_path_skips_empty_entries() {
        assert_eq!(
            split_path("/a::/b:"),
            [PathBuf::from("/a"), PathBuf::from("/b")]
        );
    }
}
