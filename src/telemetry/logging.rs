//! Log setup: OPA's `--log-level` and `--log-format` (JSON by default), written to stderr.

use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
    #[value(name = "json-pretty")]
    JsonPretty,
}

pub fn init(level: LogLevel, format: LogFormat) {
    let level = match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Error => "error",
    };
    let filter = EnvFilter::new(format!("regent={level},warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE)
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::JsonPretty => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .pretty()
            .try_init(),
    };
    // A second init (tests running several servers in one process) keeps the first subscriber.
    let _ = result;
}
