//! `llmux serve`: load the config, probe upstreams, serve until a signal, then drain within the grace period.

use config::Config;
use gateway::Gateway;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub async fn run(path: Option<PathBuf>) -> Result<(), String> {
    let config = load(path)?;
    let listen = config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    run_gateway(config, listener, shutdown_signal()).await
}

/// `--config FILE`, else `./llmux.toml` when present, else the built-in defaults.
fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.or_else(|| {
        let local = PathBuf::from("llmux.toml");
        local.exists().then_some(local)
    });
    match path {
        Some(p) => {
            let cfg = Config::load(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            tracing::info!(file = %p.display(), upstreams = cfg.upstreams.len(), "config loaded");
            Ok(cfg)
        }
        None => {
            tracing::warn!(
                "no --config and no ./llmux.toml: running on built-in defaults with no upstreams"
            );
            Ok(Config::default())
        }
    }
}

/// Runs a gateway on `listener` until `stop` resolves, then gives open calls
/// `server.shutdown_grace` to finish.
pub async fn run_gateway(
    config: Config,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let grace = config.server.shutdown_grace;
    let gw = Gateway::new(config)?;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    gw.start(&tasks, cancel.clone()).await;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    for up in gw.routes().upstreams.iter() {
        let s = up.state();
        tracing::info!(
            upstream = %up.name,
            kind = up.kind.as_str(),
            pool = s.pool.as_str(),
            models = s.model_list.len(),
            error = s.last_error.as_deref().unwrap_or(""),
            "upstream"
        );
    }
    // A stable line that scripts and tests wait for.
    eprintln!("llmux listening on http://{addr}");

    let stopping = CancellationToken::new();
    let stop_signal = stopping.clone();
    tokio::spawn(async move {
        stop.await;
        stop_signal.cancel();
    });
    let server = {
        let gw = Arc::clone(&gw);
        let stopping = stopping.clone();
        tokio::spawn(async move {
            gw.serve(listener, async move { stopping.cancelled().await }, None)
                .await
        })
    };
    tokio::pin!(server);
    tokio::select! {
        res = &mut server => {
            return match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("server failed: {e}")),
                Err(e) => Err(format!("server task failed: {e}")),
            };
        }
        _ = stopping.cancelled() => {}
    }
    tracing::info!(grace = ?grace, "shutting down: no new connections; waiting for open calls");
    cancel.cancel();
    tasks.close();
    match tokio::time::timeout(grace, &mut server).await {
        Ok(_) => tracing::info!("all calls finished; bye"),
        Err(_) => tracing::warn!(grace = ?grace, "grace period over; closing the calls still open"),
    }
    tasks.wait().await;
    Ok(())
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
