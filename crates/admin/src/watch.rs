//! Hot reload triggers: the config file is polled (mtime and length, every second) and SIGHUP
//! re-reads it. Polling needs no new dependency and works on every file system, including
//! bind mounts and ConfigMaps that inotify misses.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ControlPlane;

/// How often the file is checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// (mtime, length) of `path`, `None` when it cannot be read.
pub fn fingerprint(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Starts what applies config changes made outside this instance's admin API, on `tasks`; all
/// stop on `cancel`: the file poller and the SIGHUP listener (with a config file), and on a
/// PostgreSQL store the listener for the other instances' changes ([`crate::sync::spawn`]).
pub fn spawn(cp: &Arc<ControlPlane>, tasks: &TaskTracker, cancel: CancellationToken) {
    crate::sync::spawn(cp, tasks, cancel.clone());
    let Some(path) = cp.file_path.clone() else {
        return;
    };
    {
        let cp = Arc::clone(cp);
        let cancel = cancel.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = fingerprint(&path);
                let seen = cp.state.lock().await.fingerprint;
                if now.is_some() && now != seen {
                    // The outcome is logged and kept in the status by `reload_file`.
                    let _ = cp.reload_file("config-file", false).await;
                }
            }
        });
    }
    #[cfg(unix)]
    {
        let cp = Arc::clone(cp);
        tasks.spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hup) = signal(SignalKind::hangup()) else {
                tracing::warn!("cannot listen for SIGHUP; the file is still polled");
                return;
            };
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = hup.recv() => if got.is_none() { return },
                }
                tracing::info!("SIGHUP: re-reading the config file");
                let _ = cp.reload_file("sighup", true).await;
            }
        });
    }
}
