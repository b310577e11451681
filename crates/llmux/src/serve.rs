//! `llmux serve`: load the config, open the store, compose file + API state, probe upstreams,
//! serve (data plane and admin API) until a signal, then drain within the grace period.

use llmux_admin::ControlPlane;
use llmux_config::Config;
use llmux_gateway::Gateway;
use llmux_store::{MasterKeys, Store};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The config file as read: where it is, its text, and the validated config.
pub struct Loaded {
    pub path: Option<PathBuf>,
    pub text: Option<String>,
    pub config: Config,
}

pub async fn run(
    path: Option<PathBuf>,
    listen: Option<std::net::SocketAddr>,
) -> Result<(), String> {
    let mut loaded = load(path)?;
    if let Some(addr) = listen {
        // `--listen` wins over the file; a reload cannot move a bound listener anyway.
        loaded.config.server.listen = addr;
    }
    // The store first: the port is bound only once llmux can serve, so a load balancer or a
    // health check never sees a listener that answers nothing while the store is unreachable.
    let (store, keys) = open_store(&loaded.config).await?;
    let listen = loaded.config.server.listen;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    run_gateway(loaded, store, keys, listener, shutdown_signal()).await
}

/// `--config FILE`, else `./llmux.toml` when present, else the built-in defaults.
pub fn load(path: Option<PathBuf>) -> Result<Loaded, String> {
    let path = path.or_else(|| {
        let local = PathBuf::from("llmux.toml");
        local.exists().then_some(local)
    });
    match path {
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let config = Config::from_toml_str(&text, &|name| std::env::var(name).ok())
                .map_err(|e| format!("{}: {e}", p.display()))?;
            tracing::info!(file = %p.display(), upstreams = config.upstreams.len(), "config loaded");
            Ok(Loaded {
                path: Some(p),
                text: Some(text),
                config,
            })
        }
        None => {
            tracing::warn!(
                "no --config and no ./llmux.toml: running on built-in defaults with no upstreams"
            );
            Ok(Loaded {
                path: None,
                text: None,
                config: Config::default(),
            })
        }
    }
}

/// Where the master key file lives: beside the SQLite database, or `llmux-data/master.key`
/// (relative to the working directory) for PostgreSQL. `None` for an in-memory database,
/// whose secrets die with the process anyway.
pub fn master_key_file(url: &str) -> Option<PathBuf> {
    llmux_store::data_dir(url).map(|dir| dir.join("master.key"))
}

/// The master keys: `LLMUX_MASTER_KEY`, else the key file (created 0600 on first start), else
/// (in-memory store only) a fresh key for this process.
pub fn master_keys(url: &str) -> Result<MasterKeys, String> {
    if let Some(keys) = MasterKeys::from_env().map_err(|e| e.to_string())? {
        tracing::info!(
            key = keys.current().id(),
            "master key from {}",
            llmux_store::MASTER_KEY_ENV
        );
        return Ok(keys);
    }
    let Some(path) = master_key_file(url) else {
        return Ok(MasterKeys::new(llmux_store::MasterKey::generate()));
    };
    let (keys, created) = MasterKeys::load_or_create(&path)
        .map_err(|e| format!("master key file {}: {e}", path.display()))?;
    if created {
        tracing::warn!(
            file = %path.display(),
            "created a new master key file (mode 0600): it encrypts the provider keys in the \
             store; back it up, or set {} instead",
            llmux_store::MASTER_KEY_ENV
        );
    }
    Ok(keys)
}

/// Opens the store at `store.url`, runs the migrations, and loads the master keys. A store
/// that cannot be opened is a start-up error naming the url.
pub async fn open_store(config: &Config) -> Result<(Store, MasterKeys), String> {
    let url = &config.store.url;
    let store = Store::connect(url).await.map_err(|e| {
        format!(
            "cannot open the store at {}: {e}",
            llmux_store::redact_url(url)
        )
    })?;
    store.migrate().await.map_err(|e| {
        format!(
            "cannot migrate the store at {}: {e}",
            llmux_store::redact_url(url)
        )
    })?;
    let keys = master_keys(url)?;
    tracing::info!(store = %llmux_store::redact_url(url), "store ready");
    Ok((store, keys))
}

/// The gateway on the effective config (file + store), with its limits backend and its
/// control plane; the start-up revision recorded.
async fn compose(
    loaded: Loaded,
    store: &Store,
    keys: MasterKeys,
) -> Result<(Arc<Gateway>, Arc<ControlPlane>), String> {
    let (effective, overlay) = llmux_admin::initial_config(store, &keys, &loaded.config)
        .await
        .map_err(|e| e.to_string())?;
    let gw = Gateway::new(effective.clone()).map_err(|e| e.to_string())?;
    if effective.limits.backend == llmux_config::LimitsBackend::Redis || effective.cluster_mode() {
        // Fixed at start-up: switching the backend of live counters would reset every limit.
        // A cluster always shares its limits: that is what makes them exact across instances.
        let url = effective
            .limits
            .redis_url
            .as_ref()
            .map(llmux_config::Secret::expose);
        let backend = llmux_ratelimit_redis::RedisBackend::new(url.unwrap_or_default())?;
        gw.limits.set_shared(Arc::new(backend));
    }
    if let Some(url) = effective.limits.redis_url.as_ref() {
        // Installed whenever Redis is configured (it connects only when first used), so that
        // a reload may switch `[cache] backend = "redis"` on; its key prefix is the cluster's.
        let cache =
            llmux_ratelimit_redis::cache::RedisCache::new(url.expose(), &effective.cluster.prefix)?;
        gw.cache.set_shared(Arc::new(cache));
    }
    // Same upstreams as `new` built: this only installs the overlay, no probe.
    gw.apply(effective, overlay)
        .await
        .map_err(|e| e.to_string())?;
    let env: llmux_admin::Env = Arc::new(|name: &str| std::env::var(name).ok());
    let cp = ControlPlane::new(
        store.clone(),
        keys,
        Arc::clone(&gw),
        loaded.path,
        loaded.text,
        loaded.config,
        env,
    );
    if let Err(e) = cp.record_startup().await {
        tracing::warn!(error = %e, "cannot record the start-up config revision");
    }
    Ok((gw, cp))
}

/// One log line per upstream with its state after the start-up probe.
fn log_upstreams(gw: &Gateway) {
    for up in gw.routes().upstreams.iter() {
        let s = up.state();
        tracing::info!(
            upstream = %up.name,
            kind = up.kind.as_str(),
            source = gw.routes().source(&up.name),
            pool = s.pool.as_str(),
            models = s.model_list.len(),
            error = s.last_error.as_deref().unwrap_or(""),
            "upstream"
        );
    }
}

/// In cluster mode, joins the cluster — before the gateway starts probing, since the prober
/// lease decides who probes. Otherwise `GET /admin/v1/cluster` lists this instance alone, at
/// its bound address.
async fn join_cluster(
    gw: &Arc<Gateway>,
    cp: &Arc<ControlPlane>,
    store: &Store,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    addr: std::net::SocketAddr,
) -> Result<(), String> {
    let config = Arc::clone(&gw.routes().config);
    if !config.cluster_mode() {
        let local = llmux_admin::cluster_api::Local::new(Arc::clone(gw), addr.to_string());
        cp.set_cluster_view(Arc::new(local));
        return Ok(());
    }
    let cluster = llmux_cluster::Cluster::new(&config, addr)?;
    llmux_cluster::start(llmux_cluster::Ctx {
        cluster,
        gw: Arc::clone(gw),
        cp: Arc::clone(cp),
        store: store.clone(),
        tasks: tasks.clone(),
        cancel: cancel.clone(),
    })
    .await;
    Ok(())
}

/// Runs a gateway with its control plane on `listener` until `stop` resolves, then gives open
/// calls `server.shutdown_grace` to finish.
pub async fn run_gateway(
    loaded: Loaded,
    store: Store,
    keys: MasterKeys,
    listener: tokio::net::TcpListener,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let grace = loaded.config.server.shutdown_grace;
    // A certificate that does not load stops start-up here, before anything is served.
    let tls = match &loaded.config.server.tls {
        Some(files) => Some(Arc::new(llmux_gateway::tls::Tls::load(files)?)),
        None => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Before the upstreams are built: each keeps a call client per worker.
    start_workers(&loaded.config.server)?;
    let (gw, cp) = compose(loaded, &store, keys).await?;
    let tasks = TaskTracker::new();
    let cancel = CancellationToken::new();
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    // Before the gateway starts probing: the prober lease decides who probes.
    join_cluster(&gw, &cp, &store, &tasks, &cancel, addr).await?;
    gw.start(&tasks, cancel.clone()).await;
    // The call-log writer stops last: only once no call can finish any more (below).
    let writer_stop = CancellationToken::new();
    cp.start_accounting(&tasks, writer_stop.clone()).await;
    llmux_gateway::limits::start(&gw, &tasks, cancel.clone());
    llmux_admin::watch::spawn(&cp, &tasks, cancel.clone());
    log_upstreams(&gw);
    // A stable line that scripts and tests wait for.
    crate::say(&format!("llmux listening on {scheme}://{addr}"));

    let stopping = CancellationToken::new();
    let stop_signal = stopping.clone();
    tokio::spawn(async move {
        stop.await;
        stop_signal.cancel();
    });
    let server = {
        let gw = Arc::clone(&gw);
        let stopping = stopping.clone();
        let admin = llmux_admin::router(&cp);
        let console = llmux_admin::console_router(&cp);
        tokio::spawn(async move {
            gw.serve(
                listener,
                tls,
                async move { stopping.cancelled().await },
                admin,
                Some(console),
            )
            .await
        })
    };
    tokio::pin!(server);
    tokio::select! {
        // The stop first: once it is asked for, the server ends by itself (with no open call, at
        // once), and that end must still take the drain below — the writer's last batch, the
        // spill file — rather than return as if the server had stopped on its own.
        biased;
        _ = stopping.cancelled() => {}
        res = &mut server => {
            return match res {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(format!("server failed: {e}")),
                Err(e) => Err(format!("server task failed: {e}")),
            };
        }
    }
    tracing::info!(grace = ?grace, "shutting down: no new connections; waiting for open calls");
    cancel.cancel();
    tasks.close();
    drain_calls(&gw, grace, &mut server).await;
    writer_stop.cancel();
    finish(&tasks, &store).await;
    Ok(())
}

/// The connection workers `server.workers` asks for (default: one per core).
fn start_workers(server: &llmux_config::ServerConfig) -> Result<(), String> {
    let workers = match server.workers {
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    llmux_gateway::workers::start(workers)
        .map_err(|e| format!("cannot start the connection workers: {e}"))
}

/// Waits up to `grace` for the open calls; then cuts the streams still open, then drops the
/// calls left, each step given [`CUT_SETTLE`] so their records still reach the writer.
async fn drain_calls<F: std::future::Future + Unpin>(
    gw: &Gateway,
    grace: Duration,
    server: &mut F,
) {
    match tokio::time::timeout(grace, &mut *server).await {
        Ok(_) => tracing::info!("all calls finished; bye"),
        Err(_) => {
            tracing::warn!(grace = ?grace, "grace period over; cutting the streams still open");
            // Each open stream ends now with its error event and queues its record (what it
            // delivered), while the call-log writer still runs; their connections then close.
            gw.accounting.streams_cut.cancel();
            if tokio::time::timeout(CUT_SETTLE, &mut *server)
                .await
                .is_err()
            {
                // Calls with no stream to cut (waiting for an upstream, reading a whole
                // answer): dropped now, so their records settle while the writer runs.
                tracing::warn!("calls still open after the cut: dropping them");
                gw.accounting.calls_dropped.cancel();
                if tokio::time::timeout(CUT_SETTLE, &mut *server)
                    .await
                    .is_err()
                {
                    tracing::warn!("connections still open after the drop; closing them at exit");
                }
            }
        }
    }
}

/// Once the call-log writer is told to stop: waits for the background tasks, closes the store.
async fn finish(tasks: &TaskTracker, store: &Store) {
    // The writer gives up on a store that cannot take its records within its own bound (they
    // go to the spill file); this outer bound only guards against a task that hangs.
    let bound = llmux_hub::calllog::SHUTDOWN_WRITE + Duration::from_secs(2);
    if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
        tracing::warn!("background tasks still running at exit");
    }
    if tokio::time::timeout(Duration::from_secs(1), store.close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close in time");
    }
}

/// After the grace period, how long the cut streams get to end and their connections to close.
const CUT_SETTLE: Duration = Duration::from_secs(1);

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is
/// first polled: a signal that comes right after "listening" (a supervisor, a test) stops
/// llmux cleanly instead of killing it with the default disposition.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let int = signal(SignalKind::interrupt()).ok();
        let term = signal(SignalKind::terminate()).ok();
        async move {
            let recv = |s: Option<tokio::signal::unix::Signal>| async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                _ = recv(int) => {}
                _ = recv(term) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_beside_the_database() {
        assert_eq!(
            master_key_file("sqlite://llmux-data/llmux.db"),
            Some(PathBuf::from("llmux-data/master.key"))
        );
        assert_eq!(
            master_key_file("sqlite:///var/lib/llmux/x.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/llmux/master.key"))
        );
        assert_eq!(master_key_file("sqlite::memory:"), None);
        assert_eq!(
            master_key_file("postgres://u:p@h/db"),
            Some(PathBuf::from("llmux-data/master.key"))
        );
        assert_eq!(
            llmux_store::redact_url("postgres://u:p@h/db"),
            "postgres://***@h/db"
        );
    }
}
