//! The llmux binary: parses the command line, sets up logging, and hands off to a command.

mod check;
mod cli;
mod demo;
mod mockcmd;
mod secrets;
mod serve;

use clap::Parser;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc: per-call allocations are ~15 % of the proxy's CPU under
/// load with glibc (arena locks, consolidation), and jemalloc returns memory of closed streams;
/// the benchmark (bench/) measures both.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("llmux: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve { config } => serve::run(config).await,
            cli::Command::Demo { listen } => demo::run(listen).await,
            cli::Command::Mock(args) => mockcmd::run(*args).await,
            cli::Command::Config {
                action: cli::ConfigAction::Check { file },
            } => check::run(&file),
            cli::Command::Migrate { config } => secrets::migrate(config).await,
            cli::Command::Secrets {
                action: cli::SecretsAction::Rotate { config },
            } => secrets::rotate(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("llmux: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr. `LLMUX_LOG` (or `RUST_LOG`) filters, default `info`;
/// `LLMUX_LOG_FORMAT=json` writes one JSON object per line.
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("LLMUX_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "info".to_string());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LLMUX_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Each line also goes to the ring behind `GET /admin/v1/logs` (the console's log page).
        .with_writer(admin::logring::Tee::default);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
