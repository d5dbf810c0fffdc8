//! The bundle plugin's tasks: activate persisted and `file://` bundles at start, then poll each
//! service bundle on its own tokio task, and report every attempt on the status board.
//!
//! Reading a tarball and compiling run on the blocking pool, never on the request path; the
//! store swaps snapshots atomically, so requests see the old bundle or the new one. The
//! plugin is `NOT_READY` in the plugin manager until every bundle has activated once, then
//! `OK` for good (as OPA: later failures show only in the per-bundle status).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::activate::{self, ActivateError};
use super::archive::{self, ArchiveError, Bundle, Limits, Payload};
use super::download::{self, DownloadError, Fetched};
use super::persist;
use super::status::{BundleStatus, BundleStatusBoard};
use super::{add, Timers, PLUGIN_NAME, TIMER_BUNDLE_REQUEST, TIMER_REGO_LOAD_BUNDLES};
use crate::config::bundles::{BundleConfig, BundleSource};
use crate::config::Config;
use crate::engine::{EngineError, Store};
use crate::plugins::{PluginManager, PluginStatus, State};
use crate::rest::{ServiceClient, Services};

/// How many rounds persisted bundles get to activate at start, so bundles that depend on each
/// other's modules can come up in any order (OPA's `maxActivationRetry`).
pub const MAX_ACTIVATION_ROUNDS: usize = 10;
/// `code` of every failed attempt in the bundle status.
pub const BUNDLE_ERROR_CODE: &str = "bundle_error";
/// OPA's status message for parse and compile failures, detailed in `errors`.
pub const COMPILE_ERROR_MESSAGE: &str = "error(s) occurred while compiling module(s)";

/// Everything the plugin needs from `run`.
pub struct Context {
    pub config: Arc<Config>,
    pub services: Arc<Services>,
    pub store: Arc<Store>,
    pub plugins: Arc<PluginManager>,
    pub board: Arc<BundleStatusBoard>,
    /// Rego syntax for modules whose bundle does not pin one (`false` with `--v0-compatible`).
    pub rego_v1: bool,
}

#[derive(Debug, Error)]
enum BundleError {
    #[error(transparent)]
    Download(#[from] DownloadError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Activate(#[from] ActivateError),
    #[error("{0}")]
    Other(String),
}

impl BundleError {
    /// Writes this failure into a status the way OPA's `SetError` does.
    fn record(&self, s: &mut BundleStatus) {
        s.clear_error();
        s.code = BUNDLE_ERROR_CODE.to_string();
        match self {
            BundleError::Archive(ArchiveError::Rego(errors))
            | BundleError::Activate(ActivateError::Engine(EngineError::Compile(errors))) => {
                s.message = COMPILE_ERROR_MESSAGE.to_string();
                s.errors = errors.clone();
            }
            BundleError::Download(e) => {
                s.message = e.to_string();
                s.http_code = e.http_code();
            }
            other => s.message = other.to_string(),
        }
    }
}

/// A running plugin; [`BundlePlugin::stop`] ends its tasks.
pub struct BundlePlugin {
    cancel: CancellationToken,
    tasks: TaskTracker,
}

struct Shared {
    store: Arc<Store>,
    plugins: Arc<PluginManager>,
    board: Arc<BundleStatusBoard>,
    names: Vec<String>,
    ready: Mutex<bool>,
    persist_dir: PathBuf,
    rego_v1: bool,
}

impl BundlePlugin {
    /// Registers the plugin (NOT_READY), activates persisted bundles and `file://` bundles,
    /// then starts one download task per service bundle. `None` when no bundle is configured.
    pub async fn start(ctx: Context) -> Option<BundlePlugin> {
        let bundles = ctx.config.bundles.clone();
        if bundles.is_empty() {
            return None;
        }
        ctx.plugins.register(PLUGIN_NAME);
        let shared = Arc::new(Shared {
            store: ctx.store,
            plugins: ctx.plugins,
            board: ctx.board,
            names: bundles.iter().map(|b| b.name.clone()).collect(),
            ready: Mutex::new(false),
            persist_dir: ctx.config.persistence_directory(),
            rego_v1: ctx.rego_v1,
        });
        for b in &bundles {
            shared.update(&b.name, |_| {});
        }
        let local = shared.clone();
        let startup = bundles.clone();
        let done = tokio::task::spawn_blocking(move || {
            local.activate_persisted(&startup);
            for b in &startup {
                if let BundleSource::File(path) = &b.source {
                    local.load_file(b, path);
                }
            }
        })
        .await;
        if let Err(e) = done {
            tracing::error!(plugin = PLUGIN_NAME, error = %e, "Loading bundles at start failed.");
        }
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        for b in bundles {
            let BundleSource::Service { service, resource } = &b.source else {
                continue;
            };
            let Some(client) = ctx.services.get(service) else {
                continue; // config validation guarantees the service exists
            };
            let resource = resource.clone();
            tasks.spawn(download_loop(
                shared.clone(),
                b,
                client,
                resource,
                cancel.clone(),
            ));
        }
        tasks.close();
        Some(BundlePlugin { cancel, tasks })
    }

    /// Stops every download task and waits for them (an activation in progress completes).
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Shared {
    /// Edits one bundle's status on the board. At debug level the new status is logged, which
    /// is also how the end-to-end tests observe the board through the binary.
    fn update(&self, name: &str, edit: impl FnOnce(&mut BundleStatus)) {
        self.board.update(name, edit);
        if tracing::enabled!(tracing::Level::DEBUG) {
            if let Some(s) = self.board.snapshot().get(name) {
                let json = serde_json::to_string(s).unwrap_or_default();
                tracing::debug!(name, plugin = PLUGIN_NAME, status = %json, "Bundle status updated.");
            }
        }
    }

    /// Reads and activates one tarball. Blocking: parse and compile.
    fn load(
        &self,
        cfg: &BundleConfig,
        raw: &[u8],
        etag: &str,
        timers: &mut Timers,
    ) -> Result<Bundle, BundleError> {
        let started = Instant::now();
        let limits = Limits {
            size_limit_bytes: cfg.size_limit_bytes,
            rego_v1: self.rego_v1,
        };
        let out = archive::read(raw, limits, timers)
            .map_err(BundleError::from)
            .and_then(|bundle| {
                activate::activate(&self.store, &cfg.name, &bundle, etag, timers)?;
                Ok(bundle)
            });
        add(timers, TIMER_REGO_LOAD_BUNDLES, started);
        out
    }

    /// Marks the plugin OK once every bundle has activated without errors; never goes back.
    fn check_ready(&self) {
        let mut ready = self.ready.lock().unwrap_or_else(|p| p.into_inner());
        if *ready {
            return;
        }
        let board = self.board.snapshot();
        let all = self.names.iter().all(|n| {
            board
                .get(n)
                .is_some_and(|s| s.last_successful_activation.is_some() && s.errors.is_empty())
        });
        if all {
            *ready = true;
            self.plugins
                .update(PLUGIN_NAME, PluginStatus::new(State::Ok));
        }
    }

    fn activated(&self, name: &str, bundle: &Bundle, timers: Timers, downloaded: bool) {
        let now = Utc::now();
        self.update(name, |s| {
            s.metrics = timers;
            s.clear_error();
            s.kind = bundle.kind().to_string();
            s.active_revision = bundle.manifest.revision.clone();
            s.last_successful_activation = Some(now);
            s.size = bundle.size;
            if downloaded {
                s.last_request = Some(now);
                s.last_successful_request = Some(now);
                s.last_successful_download = Some(now);
            }
        });
        self.check_ready();
    }

    fn failed(&self, name: &str, err: &BundleError, timers: Timers, downloaded: bool) {
        let now = Utc::now();
        self.update(name, |s| {
            s.metrics = timers;
            s.last_request = Some(now);
            if downloaded {
                s.last_successful_request = Some(now);
                s.last_successful_download = Some(now);
            }
            err.record(s);
        });
    }

    /// Activates every persisted copy before the first download, in rounds so bundles that
    /// depend on each other can activate in any order.
    fn activate_persisted(&self, bundles: &[BundleConfig]) {
        let mut pending = Vec::new();
        for b in bundles.iter().filter(|b| b.persist) {
            match persist::load(&self.persist_dir, &b.name) {
                Ok(Some(p)) => pending.push((b, p)),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(name = %b.name, plugin = PLUGIN_NAME, "Failed to load bundle from disk: {e}");
                    self.failed(
                        &b.name,
                        &BundleError::Other(format!("failed to load bundle from disk: {e}")),
                        Timers::new(),
                        false,
                    );
                }
            }
        }
        for _ in 0..MAX_ACTIVATION_ROUNDS {
            let before = pending.len();
            let mut retry = Vec::new();
            for (b, p) in pending {
                let mut timers = Timers::new();
                match self.load(b, &p.raw, &p.etag, &mut timers) {
                    Ok(bundle) => {
                        tracing::info!(name = %b.name, plugin = PLUGIN_NAME, revision = %bundle.manifest.revision, "Bundle loaded from disk and activated successfully.");
                        self.activated(&b.name, &bundle, timers, false);
                    }
                    Err(e) => {
                        tracing::error!(name = %b.name, plugin = PLUGIN_NAME, "Bundle activation failed: {e}");
                        self.failed(&b.name, &e, timers, false);
                        if matches!(e, BundleError::Activate(_)) {
                            retry.push((b, p));
                        }
                    }
                }
            }
            if retry.is_empty() || retry.len() == before {
                break;
            }
            pending = retry;
        }
    }

    /// A `file://` bundle: read and activated once at start, as OPA's file loader does.
    fn load_file(&self, cfg: &BundleConfig, path: &std::path::Path) {
        let mut timers = Timers::new();
        let started = Instant::now();
        let raw = std::fs::metadata(path)
            .and_then(|m| {
                if m.len() > cfg.size_limit_bytes + download::DOWNLOAD_SLACK_BYTES {
                    Err(std::io::Error::other(format!(
                        "bundle file exceeds max size ({} bytes)",
                        cfg.size_limit_bytes
                    )))
                } else {
                    std::fs::read(path)
                }
            })
            .map_err(|e| BundleError::Other(format!("{}: {e}", path.display())));
        add(&mut timers, TIMER_BUNDLE_REQUEST, started);
        let result = raw.and_then(|raw| self.load(cfg, &raw, "", &mut timers));
        match result {
            Ok(bundle) => {
                tracing::info!(name = %cfg.name, plugin = PLUGIN_NAME, "Bundle loaded and activated successfully.");
                self.activated(&cfg.name, &bundle, timers, true);
            }
            Err(e) => {
                tracing::error!(name = %cfg.name, plugin = PLUGIN_NAME, "Bundle load failed: {e}");
                let downloaded = matches!(e, BundleError::Activate(_));
                self.failed(&cfg.name, &e, timers, downloaded);
            }
        }
    }
}

/// Polls one bundle until cancelled.
async fn download_loop(
    shared: Arc<Shared>,
    cfg: BundleConfig,
    client: Arc<ServiceClient>,
    resource: String,
    cancel: CancellationToken,
) {
    let name = cfg.name.clone();
    tracing::info!(name = %name, plugin = PLUGIN_NAME, "Starting bundle loader.");
    // A persisted bundle activated at start is revalidated rather than downloaded again.
    let mut activated_etag = shared
        .store
        .snapshot()
        .bundles()
        .get(&name)
        .map(|b| b.etag.clone())
        .unwrap_or_default();
    let mut etag = activated_etag.clone();
    let mut failures: u32 = 0;
    let mut long_poll = cfg.polling.long_polling_timeout.is_some();
    loop {
        let mut timers = Timers::new();
        let started = Instant::now();
        let wait = if long_poll {
            cfg.polling.long_polling_timeout
        } else {
            None
        };
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            r = download::fetch(&client, &resource, &etag, wait, cfg.size_limit_bytes) => r,
        };
        add(&mut timers, TIMER_BUNDLE_REQUEST, started);
        // Whether this attempt succeeded as far as the download schedule is concerned.
        let ok = match result {
            Err(e) => {
                tracing::error!(name = %name, plugin = PLUGIN_NAME, "Bundle load failed: {e}");
                shared.failed(&name, &e.into(), timers, false);
                etag = activated_etag.clone();
                false
            }
            Ok(resp) => {
                if long_poll && !resp.long_poll {
                    tracing::debug!(name = %name, plugin = PLUGIN_NAME, "Server does not support long polling; polling periodically.");
                    long_poll = false;
                }
                match resp.fetched {
                    Fetched::NotModified { etag: same } => {
                        tracing::debug!(name = %name, plugin = PLUGIN_NAME, "Bundle load skipped, server replied with not modified.");
                        etag = same;
                        let now = Utc::now();
                        shared.update(&name, |s| {
                            s.metrics = timers;
                            s.last_request = Some(now);
                            s.last_successful_request = Some(now);
                            s.clear_error();
                        });
                        shared.check_ready();
                        true
                    }
                    Fetched::Modified { body, etag: new } => {
                        let outcome = process(&shared, &cfg, body, new.clone(), timers).await;
                        match outcome {
                            Ok(()) => {
                                activated_etag = new.clone();
                                etag = new;
                                true
                            }
                            Err(e) => {
                                etag = activated_etag.clone();
                                // A bundle that cannot be read is retried with backoff, as
                                // OPA's downloader does; a compile failure waits a full poll.
                                !matches!(e, BundleError::Archive(_) | BundleError::Other(_))
                            }
                        }
                    }
                }
            }
        };
        let delay = if ok {
            failures = 0;
            if long_poll {
                Duration::ZERO
            } else {
                download::poll_delay(cfg.polling.min_delay, cfg.polling.max_delay)
            }
        } else {
            let d = download::backoff(failures, cfg.polling.max_delay);
            failures = failures.saturating_add(1);
            d
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    tracing::info!(name = %name, plugin = PLUGIN_NAME, "Stopping bundle loader.");
}

/// Reads, activates and (when configured) persists a downloaded tarball, then records it.
async fn process(
    shared: &Arc<Shared>,
    cfg: &BundleConfig,
    body: Vec<u8>,
    etag: String,
    mut timers: Timers,
) -> Result<(), BundleError> {
    let job_shared = shared.clone();
    let job_cfg = cfg.clone();
    let job_etag = etag.clone();
    let joined = tokio::task::spawn_blocking(move || {
        let result = job_shared.load(&job_cfg, &body, &job_etag, &mut timers);
        let persisted = match &result {
            Ok(Bundle {
                payload: Payload::Snapshot { .. },
                ..
            }) if job_cfg.persist => Some(persist::save(
                &job_shared.persist_dir,
                &job_cfg.name,
                &body,
                &job_etag,
            )),
            _ => None,
        };
        (result, persisted, timers)
    })
    .await;
    let name = &cfg.name;
    let (result, persisted, timers) = match joined {
        Ok(parts) => parts,
        Err(e) => {
            let err = BundleError::Other(format!("bundle processing failed: {e}"));
            shared.failed(name, &err, Timers::new(), false);
            return Err(err);
        }
    };
    match result {
        Ok(bundle) => {
            if etag.is_empty() {
                tracing::info!(name = %name, plugin = PLUGIN_NAME, "Bundle loaded and activated successfully.");
            } else {
                tracing::info!(name = %name, plugin = PLUGIN_NAME, "Bundle loaded and activated successfully. Etag updated to {etag}.");
            }
            shared.activated(name, &bundle, timers, true);
            if let Some(Err(e)) = persisted {
                // The bundle serves; only the copy for the next start is missing.
                tracing::error!(name = %name, plugin = PLUGIN_NAME, "Persisting bundle to disk failed: {e}");
                let err = BundleError::Other(format!("persisting bundle to disk failed: {e}"));
                shared.update(name, |s| err.record(s));
            }
            Ok(())
        }
        Err(e) => {
            tracing::error!(name = %name, plugin = PLUGIN_NAME, "Bundle activation failed: {e}");
            // A tarball that could not be read counts as a failed download, as in OPA.
            let downloaded = matches!(e, BundleError::Activate(_));
            shared.failed(name, &e, timers, downloaded);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Snapshot;
    use crate::plugins::bundle::archive::tests::tarball;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn bundle(root: &str, revision: &str) -> Vec<u8> {
        let manifest = json!({"revision": revision, "roots": [root]}).to_string();
        let data = json!({root: {"rev": revision}}).to_string();
        tarball(&[
            (".manifest", manifest.as_bytes()),
            ("data.json", data.as_bytes()),
        ])
    }

    /// `/bundles/a` always serves; `/bundles/b` fails twice, serves once, then fails forever.
    async fn control_plane() -> (String, Arc<AtomicUsize>) {
        let b_calls = Arc::new(AtomicUsize::new(0));
        let counter = b_calls.clone();
        let router = axum::Router::new()
            .route(
                "/bundles/a",
                axum::routing::get(|| async { bundle("a", "a1") }),
            )
            .route(
                "/bundles/b",
                axum::routing::get(move || {
                    let n = counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            2 => (axum::http::StatusCode::OK, bundle("b", "b1")),
                            _ => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, vec![]),
                        }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await });
        (url, b_calls)
    }

    async fn wait(what: &str, mut f: impl FnMut() -> bool) {
        for _ in 0..200 {
            if f() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_ready_until_every_bundle_activated_then_ok_for_good() {
        let (url, b_calls) = control_plane().await;
        let polling = json!({"min_delay_seconds": 0.05, "max_delay_seconds": 0.05});
        let config = Arc::new(
            Config::from_raw(json!({
                "services": {"cp": {"url": url}},
                "bundles": {"a": {"polling": polling}, "b": {"polling": polling}},
            }))
            .unwrap(),
        );
        let plugins = Arc::new(PluginManager::new());
        let board = Arc::new(BundleStatusBoard::default());
        let store = Arc::new(Store::new(Snapshot::empty()));
        let plugin = BundlePlugin::start(Context {
            services: Arc::new(Services::build(&config).unwrap()),
            config,
            store: store.clone(),
            plugins: plugins.clone(),
            board: board.clone(),
            rego_v1: true,
        })
        .await
        .expect("bundles configured");
        assert_eq!(plugins.status(PLUGIN_NAME).unwrap().state, State::NotReady);

        wait("a to activate", || {
            board.snapshot()["a"].last_successful_activation.is_some()
        })
        .await;
        assert_eq!(
            plugins.status(PLUGIN_NAME).unwrap().state,
            State::NotReady,
            "b has not activated yet"
        );
        wait("b to activate", || {
            board.snapshot()["b"].active_revision == "b1"
        })
        .await;
        wait("the plugin to be ready", || {
            plugins.status(PLUGIN_NAME).unwrap().state == State::Ok
        })
        .await;
        // Later failures show in b's status only; the plugin stays OK and b keeps serving.
        wait("b to fail again", || b_calls.load(Ordering::SeqCst) > 4).await;
        wait("the failure on the board", || {
            board.snapshot()["b"].http_code == Some(500)
        })
        .await;
        assert_eq!(plugins.status(PLUGIN_NAME).unwrap().state, State::Ok);
        assert_eq!(store.snapshot().data()["b"], json!({"rev": "b1"}));
        let b = board.snapshot()["b"].clone();
        assert_eq!(b.code, BUNDLE_ERROR_CODE);
        assert_eq!(b.message, "server replied with Internal Server Error");
        assert!(b.last_request > b.last_successful_request);

        plugin.stop().await;
        let calls = b_calls.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(b_calls.load(Ordering::SeqCst), calls, "stopped polling");
    }

    #[tokio::test]
    async fn no_bundles_no_plugin() {
        let config = Arc::new(Config::default());
        let plugins = Arc::new(PluginManager::new());
        let started = BundlePlugin::start(Context {
            services: Arc::new(Services::default()),
            config,
            store: Arc::new(Store::new(Snapshot::empty())),
            plugins: plugins.clone(),
            board: Arc::new(BundleStatusBoard::default()),
            rego_v1: true,
        })
        .await;
        assert!(started.is_none());
        assert!(plugins.status(PLUGIN_NAME).is_none());
    }
}
