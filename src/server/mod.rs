//! The HTTP server: routes, shared state, and the two kinds of listener (main and diagnostic).
//!
//! [`router`] builds the main API; [`diagnostic_router`] serves only health and metrics. Tests
//! drive either in-process or through the real binary. Handlers stay thin: they parse the
//! request, call the engine or a plugin, and render the answer.

pub mod blocking;
mod body;
mod config;
mod data;
mod data_write;
pub mod error;
mod health;
mod index;
mod metrics;
mod middleware;
pub mod params;
mod policies;
mod query;
mod reply;
mod status;
mod timers;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use axum::routing::{any, get, post, MethodRouter};
use axum::Router;
use serde_json::{json, Value as Json};
use tower_http::catch_panic::CatchPanicLayer;

use crate::build;
use crate::config::Config;
use crate::engine::{Snapshot, Store};
use crate::plugins::bundle::BundleStatusBoard;
use crate::plugins::status::StatusView;
use crate::plugins::PluginManager;
use crate::telemetry::Telemetry;

/// Everything a handler may read. Cheap to share; nothing in it is locked on the read path.
pub struct AppState {
    pub store: Arc<Store>,
    pub plugins: Arc<PluginManager>,
    /// Per-bundle status written by the bundle plugin.
    pub bundles: Arc<BundleStatusBoard>,
    pub telemetry: Arc<Telemetry>,
    pub config: Arc<Config>,
    /// Per-process request counter for the request log (`req_id`), starting at 1.
    pub request_ids: AtomicU64,
    /// Evaluations in flight on the async workers (see [`blocking::keep_io_polled`]).
    pub evaluations: Arc<blocking::Evaluations>,
    /// Set once when the status plugin starts; unset means `GET /v1/status` answers "not enabled".
    pub status: OnceLock<Arc<StatusView>>,
}

impl AppState {
    pub fn new(
        store: Arc<Store>,
        plugins: Arc<PluginManager>,
        bundles: Arc<BundleStatusBoard>,
        telemetry: Arc<Telemetry>,
        config: Arc<Config>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            store,
            plugins,
            bundles,
            telemetry,
            config,
            request_ids: AtomicU64::new(0),
            evaluations: Arc::default(),
            status: OnceLock::new(),
        })
    }
}

/// A route family whose wrong methods OPA answers with an empty 405 labelled `catchall`.
fn family(route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.fallback(middleware::catchall)
}

/// The main listener's router: the REST API plus health and metrics.
pub fn router(state: Arc<AppState>) -> Router {
    let data = || {
        family(
            get(data::get_v1)
                .post(data::post_v1)
                .put(data_write::put)
                .patch(data_write::patch),
        )
    };
    let v0 = || family(post(data::post_v0));
    Router::new()
        .route("/", get(index::get).post(data::post_index))
        .route("/v0/data", v0())
        .route("/v0/data/{*path}", v0())
        .route("/v1/data", data())
        .route("/v1/data/{*path}", data().delete(data_write::delete))
        .route("/v1/policies", family(get(policies::list)))
        .route(
            "/v1/policies/{*id}",
            family(
                get(policies::get)
                    .put(policies::put)
                    .delete(policies::delete),
            ),
        )
        .route("/v1/query", family(get(query::get).post(query::post)))
        .route("/v1/query/{*path}", any(middleware::catchall))
        .route("/v1/config", get(config::get))
        .route("/v1/status", family(get(status::get)))
        .merge(monitoring_routes())
        .fallback(any(middleware::not_found))
        .layer(CatchPanicLayer::custom(middleware::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::instrument,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::decoding_limits,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::log_requests,
        ))
        .with_state(state)
}

/// The diagnostic listener's router: only health and metrics, everything else 404.
pub fn diagnostic_router(state: Arc<AppState>) -> Router {
    monitoring_routes()
        .fallback(any(middleware::not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::instrument_diagnostic,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            middleware::log_requests,
        ))
        .with_state(state)
}

/// Routes served on both listener kinds.
fn monitoring_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health::get))
        .route("/health/{*path}", get(health::get_path))
        .route(
            "/metrics",
            get(metrics::get).head(metrics::method_not_allowed),
        )
        .route(
            "/metrics/alloc_bytes",
            get(metrics::alloc_bytes).head(metrics::method_not_allowed),
        )
}

/// The `provenance` object of Data API responses.
pub fn provenance(snapshot: &Snapshot) -> Json {
    let bundles: serde_json::Map<String, Json> = snapshot
        .bundles()
        .iter()
        .map(|(name, b)| (name.clone(), json!({"revision": b.revision})))
        .collect();
    let mut out = json!({
        "version": build::VERSION,
        "build_commit": build::COMMIT,
        "build_timestamp": build::TIMESTAMP,
        "build_hostname": build::HOSTNAME,
    });
    if !bundles.is_empty() {
        out["bundles"] = Json::Object(bundles);
    }
    out
}
