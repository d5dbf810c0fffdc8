//! Reading a bundle tarball into memory, refusing anything hostile before it reaches the store.
//!
//! A bundle is a gzipped tar of `.manifest`, `data.json`/`data.yaml` files (merged at their
//! directory's path), `.rego` modules, or a `patch.json` for delta bundles. Entries are never
//! written to disk: they are read into memory, so the checks here are about what the bundle
//! may claim, not where files land:
//! - entry names with `..`, a `//` or drive prefix, backslashes or NUL are refused (a single
//!   leading `/` is OPA's own format: `opa build` writes `/data.json`);
//! - only regular files and directories are accepted (no symlinks, hard links, devices);
//! - each file, and the inflated stream as a whole, is capped at `size_limit_bytes` while it is
//!   being inflated, so a gzip bomb stops at the cap instead of filling memory;
//! - data must lie under the manifest's roots and every module's package too;
//! - invalid JSON/YAML and Rego parse errors are reported with the file they are in.

use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use flate2::read::GzDecoder;
use serde_json::{Map, Value as Json};
use thiserror::Error;

use super::roots;
use super::{time, Timers, TIMER_REGO_DATA_PARSE, TIMER_REGO_MODULE_PARSE};
use crate::engine::document::{self, PatchOp};
use crate::engine::error::Stage;
use crate::engine::loader::merge;
use crate::engine::RegoError;

#[derive(Debug, Error)]
pub enum ArchiveError {
    #[error("bundle read failed: {0}")]
    Read(String),
    #[error("bundle file '{path}' exceeded max size ({limit} bytes)")]
    FileTooLarge { path: String, limit: u64 },
    #[error("bundle exceeded max inflated size ({0} bytes)")]
    TooLarge(u64),
    #[error("bundle entry {0:?} has an unsafe path")]
    UnsafePath(String),
    #[error("bundle entry {path:?} is a {kind}: only regular files and directories are allowed")]
    EntryType { path: String, kind: String },
    #[error("duplicate file in bundle: {0}")]
    Duplicate(String),
    #[error("bundle load failed on {path}: {message}")]
    Parse { path: String, message: String },
    #[error("error(s) occurred while compiling module(s)")]
    Rego(Vec<RegoError>),
    #[error("manifest has overlapped roots: '{0}' and '{1}'")]
    OverlappingRoots(String, String),
    #[error("manifest roots {roots} do not permit data at path '/{path}' (hint: check bundle directory structure)")]
    DataOutsideRoots { roots: String, path: String },
    #[error("manifest roots {roots} do not permit 'package {package}' in module '{path}'")]
    PackageOutsideRoots {
        roots: String,
        package: String,
        path: String,
    },
    #[error("manifest roots {roots} do not permit data patch at path '{path}'")]
    PatchOutsideRoots { roots: String, path: String },
    #[error("{0}")]
    Unsupported(String),
}

/// The parts of `.manifest` regent acts on, plus the manifest as stored under
/// `data.system.bundles.<name>.manifest` (roots and revision filled in).
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub revision: String,
    pub roots: Vec<String>,
    pub json: Json,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Module {
    /// Path inside the bundle, starting with `/` (`/authz/policy.rego`).
    pub path: String,
    pub raw: String,
    pub rego_v1: bool,
}

#[derive(Debug, Clone)]
pub enum Payload {
    /// Replaces everything under the roots.
    Snapshot { data: Json, modules: Vec<Module> },
    /// Patches the data under the roots of the active snapshot.
    Delta { patches: Vec<PatchOp> },
}

#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    pub payload: Payload,
    /// Bytes of the tarball as downloaded.
    pub size: u64,
}

impl Bundle {
    /// `snapshot` or `delta`, as the status reports it.
    pub fn kind(&self) -> &'static str {
        match self.payload {
            Payload::Snapshot { .. } => "snapshot",
            Payload::Delta { .. } => "delta",
        }
    }
}

/// Reading options.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Cap on each file and on the whole inflated stream.
    pub size_limit_bytes: u64,
    /// Rego syntax for modules the manifest does not pin (`--v0-compatible` clears it).
    pub rego_v1: bool,
}

/// Inflates at most `limit` bytes, then fails and raises `exceeded`.
struct Capped<R> {
    inner: R,
    remaining: u64,
    exceeded: Arc<AtomicBool>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.remaining == 0 {
            // Probe one byte: a stream that ends exactly at the cap is fine.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.exceeded.store(true, Ordering::Relaxed);
                    Err(std::io::Error::other("inflated size limit exceeded"))
                }
            };
        }
        let max = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

/// A file we keep, by kind.
enum Kept {
    Manifest(Vec<u8>),
    Data {
        dir: Vec<String>,
        yaml: bool,
        bytes: Vec<u8>,
    },
    Module {
        path: String,
        bytes: Vec<u8>,
    },
    Patch(Vec<u8>),
}

pub fn read(raw: &[u8], limits: Limits, timers: &mut Timers) -> Result<Bundle, ArchiveError> {
    let exceeded = Arc::new(AtomicBool::new(false));
    let capped = Capped {
        inner: GzDecoder::new(raw),
        remaining: limits.size_limit_bytes,
        exceeded: exceeded.clone(),
    };
    let too_large = |e: std::io::Error| {
        if exceeded.load(Ordering::Relaxed) {
            ArchiveError::TooLarge(limits.size_limit_bytes)
        } else {
            ArchiveError::Read(e.to_string())
        }
    };
    let mut archive = tar::Archive::new(capped);
    let mut kept = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for entry in archive.entries().map_err(&too_large)? {
        let mut entry = entry.map_err(&too_large)?;
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() || kind.is_pax_global_extensions() {
            continue;
        }
        if !(kind.is_file() || kind.is_contiguous()) {
            return Err(ArchiveError::EntryType {
                path: raw_path,
                kind: entry_kind(kind),
            });
        }
        let segs = safe_segments(&raw_path)?;
        let path = format!("/{}", segs.join("/"));
        let Some((base, dir)) = segs.split_last() else {
            return Err(ArchiveError::UnsafePath(raw_path));
        };
        let declared = entry.header().size().map_err(&too_large)?;
        if declared > limits.size_limit_bytes {
            return Err(file_too_large(&path, limits.size_limit_bytes));
        }
        let wanted = match base.as_str() {
            ".manifest" if dir.is_empty() => true,
            "data.json" | "data.yaml" | "data.yml" | "patch.json" => true,
            ".signatures.json" => false,
            "plan.json" => {
                return Err(ArchiveError::Unsupported(
                    "plan bundles are not supported by regent".into(),
                ))
            }
            b if b.ends_with(".wasm") => {
                return Err(ArchiveError::Unsupported(
                    "wasm modules in bundles are not supported by regent".into(),
                ))
            }
            b => b.ends_with(".rego"),
        };
        if !wanted {
            // Read through it so the inflated cap still applies to skipped files.
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(&too_large)?;
            continue;
        }
        if !seen.insert(path.clone()) {
            return Err(ArchiveError::Duplicate(path));
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(limits.size_limit_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(&too_large)?;
        if bytes.len() as u64 > limits.size_limit_bytes {
            return Err(file_too_large(&path, limits.size_limit_bytes));
        }
        let dir: Vec<String> = dir.to_vec();
        kept.push(match base.as_str() {
            ".manifest" => Kept::Manifest(bytes),
            "patch.json" => Kept::Patch(bytes),
            "data.yaml" | "data.yml" => Kept::Data {
                dir,
                yaml: true,
                bytes,
            },
            "data.json" => Kept::Data {
                dir,
                yaml: false,
                bytes,
            },
            _ => Kept::Module { path, bytes },
        });
    }
    assemble(kept, raw.len() as u64, limits, timers)
}

fn file_too_large(path: &str, limit: u64) -> ArchiveError {
    ArchiveError::FileTooLarge {
        path: path.trim_start_matches('/').to_string(),
        limit,
    }
}

fn entry_kind(kind: tar::EntryType) -> String {
    match kind {
        tar::EntryType::Symlink => "symlink".into(),
        tar::EntryType::Link => "hard link".into(),
        tar::EntryType::Char => "character device".into(),
        tar::EntryType::Block => "block device".into(),
        tar::EntryType::Fifo => "fifo".into(),
        other => format!("{other:?} entry"),
    }
}

/// The path's segments, or an error for anything that could mean "outside the bundle".
fn safe_segments(raw: &str) -> Result<Vec<String>, ArchiveError> {
    let unsafe_path = || ArchiveError::UnsafePath(raw.to_string());
    if raw.contains('\\') || raw.contains('\0') || raw.starts_with("//") {
        return Err(unsafe_path());
    }
    let mut out = Vec::new();
    for (i, seg) in raw.split('/').enumerate() {
        match seg {
            "" | "." => continue,
            ".." => return Err(unsafe_path()),
            s if i == 0 && s.len() == 2 && s.ends_with(':') => return Err(unsafe_path()),
            s => out.push(s.to_string()),
        }
    }
    Ok(out)
}

fn assemble(
    kept: Vec<Kept>,
    size: u64,
    limits: Limits,
    timers: &mut Timers,
) -> Result<Bundle, ArchiveError> {
    let manifest_bytes = kept.iter().find_map(|k| match k {
        Kept::Manifest(b) => Some(b.as_slice()),
        _ => None,
    });
    let parsed = parse_manifest(manifest_bytes, limits.rego_v1)?;
    let manifest = parsed.manifest.clone();
    let roots = &manifest.roots;
    let patch = kept.iter().find_map(|k| match k {
        Kept::Patch(b) => Some(b),
        _ => None,
    });
    if let Some(patch) = patch {
        let has = |f: fn(&Kept) -> bool| kept.iter().any(f);
        if has(|k| matches!(k, Kept::Data { .. })) || has(|k| matches!(k, Kept::Module { .. })) {
            return Err(ArchiveError::Unsupported(
                "delta bundle expected to contain only patch file but data or policy files found"
                    .into(),
            ));
        }
        let patches = time(timers, TIMER_REGO_DATA_PARSE, || parse_patch(patch))?;
        for p in &patches {
            let segs: Vec<&str> = p.path.iter().map(String::as_str).collect();
            if !roots::any_contains(roots, &segs) {
                return Err(ArchiveError::PatchOutsideRoots {
                    roots: roots::display(roots),
                    path: p.path.join("/"),
                });
            }
        }
        return Ok(Bundle {
            manifest,
            payload: Payload::Delta { patches },
            size,
        });
    }

    let mut data = Json::Object(Map::new());
    let mut modules = Vec::new();
    let mut errors = Vec::new();
    for k in kept {
        match k {
            Kept::Data { dir, yaml, bytes } => {
                let file = format!(
                    "/{}",
                    with_base(&dir, if yaml { "data.yaml" } else { "data.json" })
                );
                let value: Json = time(timers, TIMER_REGO_DATA_PARSE, || {
                    if yaml {
                        yaml_serde::from_slice(&bytes).map_err(|e| e.to_string())
                    } else {
                        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
                    }
                })
                .map_err(|message| ArchiveError::Parse {
                    path: file.clone(),
                    message,
                })?;
                let nested = dir.iter().rev().fold(value, |acc, seg| {
                    Json::Object([(seg.clone(), acc)].into_iter().collect())
                });
                merge(&mut data, nested).map_err(|message| ArchiveError::Parse {
                    path: file,
                    message: format!("merge error: {message}"),
                })?;
            }
            Kept::Module { path, bytes } => {
                let raw = String::from_utf8(bytes).map_err(|_| ArchiveError::Parse {
                    path: path.clone(),
                    message: "module is not UTF-8".into(),
                })?;
                let rego_v1 = parsed.rego_v1_for(&path);
                match time(timers, TIMER_REGO_MODULE_PARSE, || {
                    package_of(&path, &raw, rego_v1)
                }) {
                    Ok(package) => {
                        let segs: Vec<&str> = package.iter().map(String::as_str).collect();
                        if !roots::any_contains(roots, &segs) {
                            return Err(ArchiveError::PackageOutsideRoots {
                                roots: roots::display(roots),
                                package: package.join("."),
                                path,
                            });
                        }
                        modules.push(Module { path, raw, rego_v1 });
                    }
                    Err(e) => errors.push(e),
                }
            }
            Kept::Manifest(_) | Kept::Patch(_) => {}
        }
    }
    if !errors.is_empty() {
        return Err(ArchiveError::Rego(errors));
    }
    check_data_roots(&data, &mut Vec::new(), roots)?;
    Ok(Bundle {
        manifest,
        payload: Payload::Snapshot { data, modules },
        size,
    })
}

fn with_base(dir: &[String], base: &str) -> String {
    dir.iter()
        .map(String::as_str)
        .chain(std::iter::once(base))
        .collect::<Vec<_>>()
        .join("/")
}

/// The package of a module as path segments (`package a.b` -> `["a", "b"]`); parsing it here
/// also reports syntax errors per file before anything is compiled.
pub fn package_of(path: &str, raw: &str, rego_v1: bool) -> Result<Vec<String>, RegoError> {
    let mut engine = regorus::Engine::new();
    engine.set_rego_v0(!rego_v1);
    let package = engine
        .add_policy(path.to_string(), raw.to_string())
        .map_err(|e| RegoError::from_regorus(Stage::Parse, &e))?;
    Ok(package
        .strip_prefix("data")
        .unwrap_or(&package)
        .split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// OPA's walk: a key under a root is fine; a key on the way to a root must be an object whose
/// keys are checked in turn; anything else is data outside the roots.
fn check_data_roots(
    node: &Json,
    path: &mut Vec<String>,
    owned: &[String],
) -> Result<(), ArchiveError> {
    let Json::Object(map) = node else {
        return Ok(());
    };
    for (key, value) in map {
        path.push(key.clone());
        let segs: Vec<&str> = path.iter().map(String::as_str).collect();
        let contained = roots::any_contains(owned, &segs);
        let on_the_way = owned.iter().any(|r| {
            let r = roots::segments(r);
            r.len() > segs.len() && r.iter().zip(&segs).all(|(a, b)| a == b)
        });
        if !contained {
            if !on_the_way || !value.is_object() {
                return Err(ArchiveError::DataOutsideRoots {
                    roots: roots::display(owned),
                    path: path.join("/"),
                });
            }
            check_data_roots(value, path, owned)?;
        }
        path.pop();
    }
    Ok(())
}

struct ParsedManifest {
    manifest: Manifest,
    rego_v1: bool,
    /// `file_rego_versions`: glob -> v1?
    file_versions: Vec<(String, bool)>,
}

impl ParsedManifest {
    fn rego_v1_for(&self, path: &str) -> bool {
        self.file_versions
            .iter()
            .find(|(glob, _)| {
                glob_match(glob, path) || glob_match(glob, path.trim_start_matches('/'))
            })
            .map(|(_, v1)| *v1)
            .unwrap_or(self.rego_v1)
    }
}

fn parse_manifest(bytes: Option<&[u8]>, default_v1: bool) -> Result<ParsedManifest, ArchiveError> {
    let err = |message: String| ArchiveError::Parse {
        path: "/.manifest".into(),
        message,
    };
    let mut json = match bytes {
        Some(b) => serde_json::from_slice::<Json>(b).map_err(|e| err(e.to_string()))?,
        None => Json::Object(Map::new()),
    };
    let Json::Object(obj) = &mut json else {
        return Err(err("manifest must be a JSON object".into()));
    };
    let revision = match obj.get("revision") {
        None | Some(Json::Null) => String::new(),
        Some(Json::String(s)) => s.clone(),
        Some(other) => return Err(err(format!("revision must be a string, got {other}"))),
    };
    let roots: Vec<String> = match obj.get("roots") {
        None | Some(Json::Null) => vec![String::new()],
        Some(Json::Array(items)) => items
            .iter()
            .map(|r| r.as_str().map(|s| s.trim_matches('/').to_string()))
            .collect::<Option<_>>()
            .ok_or_else(|| err("roots must be a list of strings".into()))?,
        Some(other) => return Err(err(format!("roots must be a list, got {other}"))),
    };
    for (i, a) in roots.iter().enumerate() {
        for b in &roots[i + 1..] {
            if roots::overlap(a, b) {
                return Err(ArchiveError::OverlappingRoots(a.clone(), b.clone()));
            }
        }
    }
    if obj
        .get("wasm")
        .and_then(Json::as_array)
        .is_some_and(|w| !w.is_empty())
    {
        return Err(ArchiveError::Unsupported(
            "wasm modules in bundles are not supported by regent".into(),
        ));
    }
    let version = |v: &Json| match v.as_u64() {
        Some(0) => Ok(false),
        Some(1) => Ok(true),
        _ => Err(err(format!("rego_version must be 0 or 1, got {v}"))),
    };
    let rego_v1 = match obj.get("rego_version") {
        None | Some(Json::Null) => default_v1,
        Some(v) => version(v)?,
    };
    let mut file_versions = Vec::new();
    if let Some(map) = obj.get("file_rego_versions").and_then(Json::as_object) {
        for (glob, v) in map {
            file_versions.push((glob.clone(), version(v)?));
        }
    }
    obj.insert("revision".into(), Json::String(revision.clone()));
    obj.insert(
        "roots".into(),
        Json::Array(roots.iter().cloned().map(Json::String).collect()),
    );
    Ok(ParsedManifest {
        manifest: Manifest {
            revision,
            roots,
            json,
        },
        rego_v1,
        file_versions,
    })
}

fn parse_patch(bytes: &[u8]) -> Result<Vec<PatchOp>, ArchiveError> {
    let err = |message: String| ArchiveError::Parse {
        path: "/patch.json".into(),
        message,
    };
    let doc: Json = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    let ops = doc
        .get("data")
        .and_then(Json::as_array)
        .ok_or_else(|| err("expected {\"data\": [operations]}".into()))?;
    ops.iter()
        .map(|op| {
            let kind = op.get("op").and_then(Json::as_str).unwrap_or("");
            // `upsert` is `add` that creates missing parents (see activate.rs).
            if !matches!(kind, "upsert" | "add" | "remove" | "replace") {
                return Err(err(format!("bad patch operation: {kind}")));
            }
            let path = op.get("path").and_then(Json::as_str).unwrap_or("");
            Ok(PatchOp {
                op: kind.to_string(),
                path: document::split_pointer(path),
                value: op.get("value").cloned(),
            })
        })
        .collect()
}

/// Go's `filepath.Match` subset OPA's manifests use: `*` (no `/`), `?`, literals.
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some((b'*', rest)) => (0..=t.len())
                .take_while(|&i| i == 0 || t[i - 1] != b'/')
                .any(|i| go(rest, &t[i..])),
            Some((b'?', rest)) => t.first().is_some_and(|&c| c != b'/') && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use serde_json::json;

    /// Builds a .tar.gz from (path, contents); entries keep the given names verbatim.
    pub fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder =
            tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
        for (path, body) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(body.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // set_path refuses `..`; write the raw name to build hostile archives.
            let name = header.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *body).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn limits() -> Limits {
        Limits {
            size_limit_bytes: 1 << 20,
            rego_v1: true,
        }
    }

    fn read_files(files: &[(&str, &[u8])]) -> Result<Bundle, ArchiveError> {
        read(&tarball(files), limits(), &mut Timers::new())
    }

    #[test]
    fn data_lands_at_directory_path_and_manifest_defaults() {
        let b = read_files(&[
            ("/data.json", br#"{"top": 1}"#),
            ("./a/b/data.json", br#"{"x": 1}"#),
            ("a/data.yaml", b"y: [1, 2]\n"),
            ("/a/p.rego", b"package a.p\nallow := true\n"),
            ("/README.md", b"ignored"),
        ])
        .unwrap();
        assert_eq!(b.manifest.roots, [""]);
        assert_eq!(b.manifest.json, json!({"revision": "", "roots": [""]}));
        let Payload::Snapshot { data, modules } = b.payload else {
            panic!()
        };
        assert_eq!(data, json!({"top": 1, "a": {"b": {"x": 1}, "y": [1, 2]}}));
        assert_eq!(modules.len(), 1);
        assert_eq!(modules[0].path, "/a/p.rego");
    }

    #[test]
    fn hostile_entries_are_refused() {
        type Files<'a> = Vec<(&'a str, &'a [u8])>;
        let cases: Vec<(&str, Files)> = vec![
            ("unsafe path", vec![("../../etc/data.json", b"{}")]),
            ("unsafe path", vec![("a/../../data.json", b"{}")]),
            ("unsafe path", vec![("//etc/data.json", b"{}")]),
            ("unsafe path", vec![("C:/data.json", b"{}")]),
            (
                "bundle load failed on /a/data.json",
                vec![("a/data.json", b"{nope")],
            ),
            (
                "do not permit data at path '/b'",
                vec![
                    (".manifest", br#"{"roots": ["a"]}"#),
                    ("b/data.json", b"{}"),
                ],
            ),
            (
                "do not permit 'package b' in module '/x.rego'",
                vec![
                    (".manifest", br#"{"roots": ["a"]}"#),
                    ("x.rego", b"package b\n"),
                ],
            ),
            (
                "manifest has overlapped roots: 'a' and 'a/b'",
                vec![(".manifest", br#"{"roots": ["a", "a/b"]}"#)],
            ),
            (
                "error(s) occurred while compiling module(s)",
                vec![("x.rego", b"package x\nallow if {")],
            ),
            (
                "duplicate file in bundle",
                vec![("x/data.json", b"{}"), ("./x/data.json", b"{}")],
            ),
        ];
        for (expected, files) in cases {
            let err = read_files(&files).unwrap_err().to_string();
            assert!(err.contains(expected), "{files:?}: {err}");
        }
    }

    #[test]
    fn data_on_the_way_to_a_root_must_be_an_object() {
        let err = read_files(&[
            (".manifest", br#"{"roots": ["a/b"]}"#),
            ("data.json", br#"{"a": 1}"#),
        ])
        .unwrap_err();
        assert!(
            err.to_string().contains("do not permit data at path '/a'"),
            "{err}"
        );
        read_files(&[
            (".manifest", br#"{"roots": ["a/b"]}"#),
            ("data.json", br#"{"a": {"b": 1}}"#),
        ])
        .unwrap();
    }

    #[test]
    fn symlinks_and_hard_links_are_refused() {
        for kind in [tar::EntryType::Symlink, tar::EntryType::Link] {
            let mut builder =
                tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(kind);
            header.set_size(0);
            builder
                .append_link(&mut header, "data.json", "/etc/passwd")
                .unwrap();
            let raw = builder.into_inner().unwrap().finish().unwrap();
            let err = read(&raw, limits(), &mut Timers::new()).unwrap_err();
            assert!(matches!(err, ArchiveError::EntryType { .. }), "{err}");
        }
    }

    #[test]
    fn gzip_bomb_and_large_files_stop_at_the_cap() {
        let zeros = vec![b' '; 8 << 20];
        let raw = tarball(&[("data.json", &zeros)]);
        assert!(raw.len() < 64 << 10, "compresses well: {}", raw.len());
        let err = read(&raw, limits(), &mut Timers::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::FileTooLarge { .. }), "{err}");
        // Many files each under the cap, together over it.
        let chunk = vec![b' '; 300 << 10];
        let files: Vec<(String, &[u8])> = (0..8)
            .map(|i| (format!("f{i}/skip.txt"), chunk.as_slice()))
            .collect();
        let files: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
        let err = read(&tarball(&files), limits(), &mut Timers::new()).unwrap_err();
        assert!(matches!(err, ArchiveError::TooLarge(_)), "{err}");
    }

    #[test]
    fn delta_bundles_patch_under_roots() {
        let b = read_files(&[
            (".manifest", br#"{"revision": "r2", "roots": ["a"]}"#),
            (
                "patch.json",
                br#"{"data": [{"op": "upsert", "path": "/a/x", "value": 1}]}"#,
            ),
        ])
        .unwrap();
        assert_eq!(b.kind(), "delta");
        let err = read_files(&[
            (".manifest", br#"{"roots": ["a"]}"#),
            (
                "patch.json",
                br#"{"data": [{"op": "remove", "path": "/b"}]}"#,
            ),
        ])
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("do not permit data patch at path 'b'"),
            "{err}"
        );
    }

    #[test]
    fn rego_versions_from_manifest() {
        let b = read_files(&[
            (
                ".manifest",
                br#"{"rego_version": 0, "file_rego_versions": {"/v1/*.rego": 1}}"#,
            ),
            ("old.rego", b"package old\nallow { true }\n"),
            ("v1/new.rego", b"package v1.new\nallow if { true }\n"),
        ])
        .unwrap();
        let Payload::Snapshot { modules, .. } = b.payload else {
            panic!()
        };
        let v: Vec<_> = modules
            .iter()
            .map(|m| (m.path.as_str(), m.rego_v1))
            .collect();
        assert_eq!(v, [("/old.rego", false), ("/v1/new.rego", true)]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("/v1/*.rego", "/v1/a.rego"));
        assert!(!glob_match("/v1/*.rego", "/v1/x/a.rego"));
        assert!(glob_match("a?c", "abc"));
    }
}
