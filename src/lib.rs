//! regent: a drop-in replacement for the Open Policy Agent server.
//!
//! [`run`] builds everything from the command line and configuration, opens the listeners and
//! serves until the shutdown token fires, then drains in-flight requests within the grace period.

pub mod build;
pub mod cli;
pub mod config;
pub mod engine;
pub mod plugins;
pub mod rest;
pub mod server;
pub mod telemetry;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use cli::RunArgs;
use config::{Config, ConfigErrors};
use engine::loader::{load_paths, LoadError};
use engine::{EngineError, Snapshot, Store};
use plugins::PluginManager;
use server::AppState;
use telemetry::Telemetry;

#[derive(Debug, Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    #[error("loading {0}")]
    Load(#[from] LoadError),
    #[error("error(s) occurred while compiling module(s): {}", describe_errors(.0))]
    Compile(Vec<engine::RegoError>),
    #[error("{0}")]
    Engine(EngineError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("starting the diagnostic listeners' runtime: {0}")]
    DiagnosticRuntime(std::io::Error),
}

impl From<EngineError> for RunError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Compile(errs) | EngineError::DataConflict(errs) => RunError::Compile(errs),
            other => RunError::Engine(other),
        }
    }
}

fn describe_errors(errors: &[engine::RegoError]) -> String {
    errors
        .iter()
        .map(|e| match &e.location {
            Some(l) => format!("{}:{}:{}: {}: {}", l.file, l.row, l.col, e.code, e.message),
            None => format!("{}: {}", e.code, e.message),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Turns `localhost:8181`, `:8181`, `http://host:port` into something to bind.
pub fn parse_addr(addr: &str) -> String {
    let addr = addr
        .strip_prefix("http://")
        .unwrap_or(addr)
        .trim_end_matches('/');
    match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    }
}

async fn bind(addr: &str) -> Result<TcpListener, RunError> {
    TcpListener::bind(parse_addr(addr))
        .await
        .map_err(|source| RunError::Listen {
            addr: addr.to_string(),
            source,
        })
}

/// Runs the server until `shutdown` is cancelled.
pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<(), RunError> {
    let config = Arc::new(Config::load(args.config_file.as_deref(), &args.sets)?);
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    // Built before listening so a bad CA file or client key stops the process here.
    let services = Arc::new(rest::Services::build(&config)?);
    let draft = load_paths(&args.paths, !args.v0_compatible)?;
    let store = Arc::new(Store::new(Snapshot::build(draft)?).v0_compatible(args.v0_compatible));
    let plugins = Arc::new(PluginManager::new());
    let telemetry = Arc::new(Telemetry::new(&config));
    let bundles = Arc::new(plugins::bundle::BundleStatusBoard::default());
    // Persisted and file:// bundles are active before the first request is served.
    let bundle_plugin = plugins::bundle::BundlePlugin::start(plugins::bundle::plugin::Context {
        config: config.clone(),
        services: services.clone(),
        store: store.clone(),
        plugins: plugins.clone(),
        board: bundles.clone(),
        rego_v1: !args.v0_compatible,
    })
    .await;
    let state = AppState::new(store, plugins, bundles, telemetry, config);
    let status = start_status(&state, &services);
    server::blocking::keep_io_polled(tokio::runtime::Handle::current(), state.evaluations.clone());

    let tracker = TaskTracker::new();
    let mut main_addrs = Vec::new();
    for addr in &args.addrs {
        let listener = bind(addr).await?;
        main_addrs.push(listener.local_addr().map_err(|source| RunError::Listen {
            addr: addr.clone(),
            source,
        })?);
        serve(&tracker, listener, server::router(state.clone()), &shutdown);
    }
    let mut diag_addrs = Vec::new();
    let mut diag_listeners = Vec::new();
    for addr in &args.diagnostic_addrs {
        let listener = bind(addr).await?;
        let listen_err = |source| RunError::Listen {
            addr: addr.clone(),
            source,
        };
        diag_addrs.push(listener.local_addr().map_err(listen_err)?);
        diag_listeners.push(listener.into_std().map_err(listen_err)?);
    }
    if !diag_listeners.is_empty() {
        serve_diagnostics(
            &tracker,
            diag_listeners,
            server::diagnostic_router(state.clone()),
            &shutdown,
        )
        .map_err(RunError::DiagnosticRuntime)?;
    }
    tracing::info!(
        addrs = ?main_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        diagnostic_addrs = ?diag_addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "Initializing server."
    );
    tracker.close();

    shutdown.cancelled().await;
    tracing::info!("Shutting down...");
    if let Some(plugin) = bundle_plugin {
        plugin.stop().await;
    }
    let grace = Duration::from_secs(args.shutdown_grace_period);
    // A grace period past what the clock can represent waits as long as the clock can.
    let now = tokio::time::Instant::now();
    let deadline = now
        .checked_add(grace)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)));
    if tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::error!("Graceful shutdown timed out; in-flight requests were dropped.");
    }
    if let Some(status) = status {
        status
            .stop(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await;
    }
    tracing::info!("Server shutdown.");
    Ok(())
}

/// Starts the status plugin when configured and publishes its view to `GET /v1/status`.
fn start_status(
    state: &Arc<AppState>,
    services: &rest::Services,
) -> Option<plugins::status::StatusPlugin> {
    let config = state.config.status.clone()?;
    // Config validation guarantees the service exists.
    let sender = config
        .service
        .as_deref()
        .and_then(|name| services.get(name))
        .map(|client| client as Arc<dyn plugins::status::push::Sender>);
    let plugin = plugins::status::StatusPlugin::start(
        config,
        plugins::status::Deps {
            manager: state.plugins.clone(),
            bundles: state.bundles.clone(),
            telemetry: state.telemetry.clone(),
            labels: state.config.labels.clone(),
            sender,
        },
    );
    let _ = state.status.set(plugin.view());
    Some(plugin)
}

fn serve(
    tracker: &TaskTracker,
    listener: TcpListener,
    router: axum::Router,
    shutdown: &CancellationToken,
) {
    let shutdown = shutdown.clone();
    tracker.spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(err) = axum::serve(listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
        {
            tracing::error!(error = %err, "Listener failed.");
        }
    });
}

/// Serves the diagnostic listeners on their own single-threaded runtime and OS thread, so that
/// `/health` and `/metrics` there never queue behind policy evaluations, which run inline on the
/// main runtime's workers. The main listeners keep their zero-handoff request path.
fn serve_diagnostics(
    tracker: &TaskTracker,
    listeners: Vec<std::net::TcpListener>,
    router: axum::Router,
    shutdown: &CancellationToken,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let shutdown = shutdown.clone();
    // Tracked like the main listeners, so shutdown waits for in-flight diagnostic requests.
    let serving = tracker.track_future(async move {
        let mut servers = tokio::task::JoinSet::new();
        for listener in listeners {
            let listener = match TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(err) => {
                    tracing::error!(error = %err, "Diagnostic listener failed.");
                    continue;
                }
            };
            let service = router
                .clone()
                .into_make_service_with_connect_info::<SocketAddr>();
            let shutdown = shutdown.clone();
            servers.spawn(async move {
                if let Err(err) = axum::serve(listener, service)
                    .with_graceful_shutdown(async move { shutdown.cancelled().await })
                    .await
                {
                    tracing::error!(error = %err, "Listener failed.");
                }
            });
        }
        while servers.join_next().await.is_some() {}
    });
    std::thread::Builder::new()
        .name("regent-diagnostic".into())
        .spawn(move || runtime.block_on(serving))?;
    Ok(())
}
