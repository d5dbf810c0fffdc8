//! Command-line interface with OPA's flags for `run` and `version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::telemetry::logging::{LogFormat, LogLevel};

#[derive(Debug, Parser)]
#[command(
    name = "regent",
    about = "A drop-in replacement for the Open Policy Agent server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the policy server (`--server`), as `opa run --server` does.
    Run(RunArgs),
    /// Print version and build information.
    Version,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Start the REST API server (the only mode regent has; accepted for OPA compatibility).
    #[arg(short = 's', long)]
    pub server: bool,
    /// Listening address, repeatable: `[host]:port`, `http://host:port`.
    #[arg(short = 'a', long = "addr", default_value = "localhost:8181")]
    pub addrs: Vec<String>,
    /// Diagnostic listener (health and metrics only), repeatable.
    #[arg(long = "diagnostic-addr")]
    pub diagnostic_addrs: Vec<String>,
    /// OPA-style YAML configuration file.
    #[arg(short = 'c', long = "config-file")]
    pub config_file: Option<PathBuf>,
    /// Override a configuration value: `--set key.path=value`, repeatable.
    #[arg(long = "set")]
    pub sets: Vec<String>,
    #[arg(short = 'l', long = "log-level", value_enum, default_value = "info")]
    pub log_level: LogLevel,
    #[arg(long = "log-format", value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM.
    #[arg(long = "shutdown-grace-period", default_value_t = 10)]
    pub shutdown_grace_period: u64,
    /// Parse policies with Rego v0 syntax (OPA 0.x compatibility).
    #[arg(long = "v0-compatible")]
    pub v0_compatible: bool,
    /// Policy (.rego) and data (.json, .yaml) files or directories.
    pub paths: Vec<PathBuf>,
}
