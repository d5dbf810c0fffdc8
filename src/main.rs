//! The `regent` binary: parse the command line, set up logging, run until a signal arrives.

use clap::Parser;
use tikv_jemallocator::Jemalloc;
use tokio_util::sync::CancellationToken;

use regent::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: Jemalloc = Jemalloc;

fn main() {
    let result = run();
    // Log lines are written by a background thread: let it finish before the process ends.
    regent::telemetry::logging::flush();
    if let Err(err) = result {
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Command::Version => {
            print!("{}", regent::build::describe());
            return Ok(());
        }
        Command::Run(args) => args,
    };
    regent::telemetry::logging::init(args.log_level, args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signal_shutdown(shutdown.clone()));
        regent::run(args, shutdown).await
    });
    // `run` already waited the grace period; an evaluation still running past it is abandoned
    // rather than waited for (dropping the runtime would block until it finished).
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result?;
    Ok(())
}

/// Cancels `shutdown` on SIGINT or SIGTERM.
async fn signal_shutdown(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    shutdown.cancel();
}
