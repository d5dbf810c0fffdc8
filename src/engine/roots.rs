//! Bundle root ownership: which parts of `data` the REST API may not write.
//!
//! An activated bundle owns its manifest's roots (`""` = all of `data`). OPA refuses API writes
//! to data or policies whose path overlaps a root in either direction (writing `a` would replace
//! the owned `a/b`; writing `a/b/c` changes the owned `a/b`), with the messages below. A bundle
//! whose `roots` list is empty is treated as owning everything: the manifest default is `[""]`,
//! and an empty list is what a loader leaves when the manifest says nothing.

use std::collections::BTreeMap;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use thiserror::Error;

use super::snapshot::BundleInfo;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RootsError {
    #[error("path {path} is owned by bundle \"{bundle}\"")]
    PathOwned { path: String, bundle: String },
    #[error("all paths owned by bundle \"{0}\"")]
    AllPathsOwned(String),
    #[error("can't write to document root with bundle roots configured")]
    DocumentRoot,
}

/// Characters Go's `url.PathEscape` leaves alone, so paths in messages read as OPA prints them.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

fn display(path: &[String]) -> String {
    path.iter()
        .map(|s| utf8_percent_encode(s, PATH_SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// Overlap in either direction: one path is a prefix of the other.
fn overlaps(path: &[String], root: &[&str]) -> bool {
    path.iter().zip(root).all(|(a, b)| a == b)
}

/// Refuses a write at `path` (data path, or a module's package path) that a bundle owns.
pub fn check_write(
    bundles: &BTreeMap<String, BundleInfo>,
    path: &[String],
) -> Result<(), RootsError> {
    if bundles.is_empty() {
        return Ok(());
    }
    if path.is_empty() {
        return Err(RootsError::DocumentRoot);
    }
    for (name, bundle) in bundles {
        if bundle.roots.is_empty() || bundle.roots.iter().any(|r| r.trim_matches('/').is_empty()) {
            return Err(RootsError::AllPathsOwned(name.clone()));
        }
        for root in &bundle.roots {
            let root: Vec<&str> = root.trim_matches('/').split('/').collect();
            if overlaps(path, &root) {
                return Err(RootsError::PathOwned {
                    path: display(path),
                    bundle: name.clone(),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Draft, Snapshot};

    fn p(s: &str) -> Vec<String> {
        s.split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect()
    }

    /// A snapshot whose draft carries bundles, as the bundle plugin will build them.
    fn with_bundles(bundles: &[(&str, &[&str])]) -> Snapshot {
        let mut draft = Draft {
            data: serde_json::json!({}),
            ..Draft::default()
        };
        for (name, roots) in bundles {
            draft.bundles.insert(
                name.to_string(),
                BundleInfo {
                    revision: "AAAAA".into(),
                    roots: roots.iter().map(|r| r.to_string()).collect(),
                    ..BundleInfo::default()
                },
            );
        }
        Snapshot::build(draft).unwrap()
    }

    #[test]
    fn no_bundles_allows_everything() {
        let s = with_bundles(&[]);
        assert_eq!(check_write(s.bundles(), &p("")), Ok(()));
        assert_eq!(check_write(s.bundles(), &p("a/b")), Ok(()));
    }

    #[test]
    fn owned_paths_in_both_directions() {
        let s = with_bundles(&[("test-bundle", &["a/b/c", "x/y", "foobar"])]);
        let owned = |path: &str| RootsError::PathOwned {
            path: path.into(),
            bundle: "test-bundle".into(),
        };
        assert_eq!(check_write(s.bundles(), &p("a/b")), Err(owned("a/b")));
        assert_eq!(check_write(s.bundles(), &p("a/b/c")), Err(owned("a/b/c")));
        assert_eq!(
            check_write(s.bundles(), &p("a/b/c/d")),
            Err(owned("a/b/c/d"))
        );
        assert_eq!(check_write(s.bundles(), &p("a")), Err(owned("a")));
        assert_eq!(check_write(s.bundles(), &p("a/b/d")), Ok(()));
        assert_eq!(check_write(s.bundles(), &p("foo/bar")), Ok(()));
        assert_eq!(check_write(s.bundles(), &p("foo")), Ok(()));
        assert_eq!(
            check_write(s.bundles(), &p("")),
            Err(RootsError::DocumentRoot)
        );
        assert_eq!(
            owned("a/b").to_string(),
            "path a/b is owned by bundle \"test-bundle\""
        );
    }

    #[test]
    fn several_bundles_name_the_owner() {
        let s = with_bundles(&[
            ("test-bundle1", &["a/b/c", "x/y"]),
            ("test-bundle2", &["a/b/d"]),
        ]);
        assert_eq!(
            check_write(s.bundles(), &p("a/b/d"))
                .unwrap_err()
                .to_string(),
            "path a/b/d is owned by bundle \"test-bundle2\""
        );
        assert_eq!(check_write(s.bundles(), &p("foo/bar")), Ok(()));
    }

    #[test]
    fn empty_root_owns_all_paths() {
        for roots in [&[""][..], &["", "does/not/matter"][..], &[][..]] {
            let s = with_bundles(&[("test-bundle", roots)]);
            assert_eq!(
                check_write(s.bundles(), &p("a/b")).unwrap_err().to_string(),
                "all paths owned by bundle \"test-bundle\""
            );
        }
    }

    #[test]
    fn messages_escape_segments_like_opa() {
        let s = with_bundles(&[("b", &["a b"])]);
        assert_eq!(
            check_write(s.bundles(), &["a b".to_string()])
                .unwrap_err()
                .to_string(),
            "path a%20b is owned by bundle \"b\""
        );
    }
}
