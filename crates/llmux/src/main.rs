//! The llmux binary: parses the command line, sets up logging, and hands off to a command.

mod backup;
mod check;
mod cli;
mod demo;
mod mockcmd;
mod secrets;
mod serve;
mod shellgen;
mod transfer;

use clap::Parser;
use std::process::ExitCode;

/// jemalloc instead of glibc malloc: per-call allocations are ~15 % of the proxy's CPU under
/// load with glibc (arena locks, consolidation), and jemalloc returns memory of closed streams;
/// the benchmark (bench/) measures both.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    init_logging();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // With JSON logs, a usage error is a JSON line too; help and version stay text.
        Err(e)
            if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed)
                && e.use_stderr()
                && !matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp
                        | clap::error::ErrorKind::DisplayVersion
                        | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
                ) =>
        {
            say_error(e.to_string().trim_end());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say_error(&format!("llmux: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            cli::Command::Serve { config, listen } => serve::run(config, listen).await,
            cli::Command::Demo { listen } => demo::run(listen).await,
            cli::Command::Mock(args) => mockcmd::run(*args).await,
            cli::Command::Config {
                action: cli::ConfigAction::Check { file, config },
            } => match file.or(config) {
                Some(file) => check::run(&file),
                None => check::run_local(),
            },
            cli::Command::Migrate { config } => secrets::migrate(config).await,
            cli::Command::Secrets {
                action: cli::SecretsAction::Rotate { config },
            } => secrets::rotate(config).await,
            cli::Command::Completions { shell } => shellgen::completions(shell),
            cli::Command::Man { dir } => shellgen::man(dir.as_deref()),
            cli::Command::Backup { with, to } => {
                backup::backup(with.config, to, with.passphrase_env).await
            }
            cli::Command::Restore { with, from } => {
                backup::restore(with.config, from, with.passphrase_env).await
            }
            cli::Command::Export { with, to } => {
                transfer::export(with.config, to, with.passphrase_env).await
            }
            cli::Command::Import { with, from, apply } => {
                transfer::import(with.config, from, with.passphrase_env, apply).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            say_error(&format!("llmux: {message}"));
            ExitCode::FAILURE
        }
    }
}

/// Whether logs are JSON lines (`LLMUX_LOG_FORMAT=json`): then every line on stderr is one.
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A line for people and scripts (e.g. "llmux listening on …"): plain text, or a JSON log
/// line whose `message` is that text when logs are JSON.
pub(crate) fn say(line: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::info!("{line}");
    } else {
        eprintln!("{line}");
    }
}

fn say_error(line: &str) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{line}");
    } else {
        eprintln!("{line}");
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
    // PostgreSQL's notices ("relation … already exists, skipping" at every start) are not
    // news for an operator, unless the filter asks for sqlx by name.
    let filter = if filter.contains("sqlx") {
        filter
    } else {
        format!("{filter},sqlx::postgres::notice=warn")
    };
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LLMUX_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        // Each line also goes to the ring behind `GET /admin/v1/logs` (the console's log page).
        .with_writer(llmux_admin::logring::Tee::default);
    if json {
        builder.json().init();
        JSON_LOGS.store(true, std::sync::atomic::Ordering::Relaxed);
        // A panic's message is a log line like any other (the default hook prints plain text).
        std::panic::set_hook(Box::new(|info| {
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let payload = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %payload, location, "panic");
        }));
    } else {
        builder.init();
    }
}
