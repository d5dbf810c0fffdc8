//! The on-disk copy of bundles configured with `persist: true`, in OPA's layout:
//! `<persistence_directory>/bundles/<name>/bundle.tar.gz` plus `manifest.json` holding the
//! etag, so a restarted server activates the copy before its first download and revalidates it
//! with `If-None-Match`.
//!
//! Writes go to a temporary file in the same directory and are renamed into place, so a crash
//! leaves either the old copy or the new one. Only whole tarballs are written here; nothing
//! from inside a bundle ever becomes a file.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

pub const BUNDLE_FILE: &str = "bundle.tar.gz";
pub const MANIFEST_FILE: &str = "manifest.json";

/// A persisted tarball and the etag it was downloaded with.
#[derive(Debug, Clone, PartialEq)]
pub struct Persisted {
    pub raw: Vec<u8>,
    pub etag: String,
}

/// `<base>/bundles/<name>`; bundle names were checked at config time to stay inside.
pub fn dir(base: &Path, name: &str) -> PathBuf {
    base.join("bundles").join(name)
}

/// Reads the persisted copy, `Ok(None)` when there is none.
pub fn load(base: &Path, name: &str) -> std::io::Result<Option<Persisted>> {
    let dir = dir(base, name);
    let raw = match std::fs::read(dir.join(BUNDLE_FILE)) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A missing or unreadable manifest only costs one full download.
    let etag = std::fs::read(dir.join(MANIFEST_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("etag").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_default();
    Ok(Some(Persisted { raw, etag }))
}

/// Replaces the persisted copy atomically.
pub fn save(base: &Path, name: &str, raw: &[u8], etag: &str) -> std::io::Result<()> {
    let dir = dir(base, name);
    std::fs::create_dir_all(&dir)?;
    replace(&dir, BUNDLE_FILE, raw)?;
    replace(
        &dir,
        MANIFEST_FILE,
        json!({"etag": etag}).to_string().as_bytes(),
    )
}

fn replace(dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(file))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_with_etag() {
        let base = tempfile::tempdir().unwrap();
        assert_eq!(load(base.path(), "a/b").unwrap(), None);
        save(base.path(), "a/b", b"tarball", "\"e1\"").unwrap();
        save(base.path(), "a/b", b"tarball2", "\"e2\"").unwrap();
        assert!(base.path().join("bundles/a/b/bundle.tar.gz").is_file());
        assert_eq!(
            load(base.path(), "a/b").unwrap(),
            Some(Persisted {
                raw: b"tarball2".to_vec(),
                etag: "\"e2\"".into()
            })
        );
        let leftovers: Vec<_> = std::fs::read_dir(base.path().join("bundles/a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    }
}
