//! Log setup: OPA's `--log-level` and `--log-format` (JSON by default, in OPA's line shapes
//! from `log_format`), written to stderr.

use tracing_subscriber::EnvFilter;

use super::log_format::{Layout, OpaFormat};

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
    let layout = match format {
        LogFormat::Text => Layout::Text,
        LogFormat::Json => Layout::Json,
        LogFormat::JsonPretty => Layout::JsonPretty,
    };
    let result = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .event_format(OpaFormat(layout))
        .try_init();
    // A second init (tests running several servers in one process) keeps the first subscriber.
    let _ = result;
}
