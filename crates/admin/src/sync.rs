//! Changes made through the admin API of one instance, live on every other instance on the
//! same PostgreSQL store within a second (cluster mode or not; SQLite: nothing to do).
//!
//! - Every admin write, once stored and applied here, is published ([`ControlPlane::publish`]):
//!   `Store::notify` bumps the store's change counter and sends `{"from","seq","kind","id"}` on
//!   the schema's channel, in one transaction.
//! - [`spawn`] listens (`LISTEN`, reconnecting) and applies the others' changes: `config` →
//!   the running config recomposed from the store and this instance's file, without a new
//!   revision or audit event ([`ControlPlane::resync_config`]); `key` → the key cache forgets the
//!   key; `app` → the ledger re-reads the app; `user` → nothing (users are read on every
//!   request); `all` → everything.
//! - The safety net: every [`RECHECK_EVERY`] the counter is read; when it moved past the
//!   changes heard (a lost notification, a dead listener connection), everything is re-read and
//!   the listener reconnects. After a reconnection everything is re-read too.
//!
//! What is not shared this way: the config file (each instance reads its own; a rollback's
//! restored file settings hold on the instance that rolled back) and runtime state (health,
//! key cooldowns: see docs/cluster.md). Drains are runtime state kept in the store, so they
//! travel as a `config` change (`crate::drain`).

use std::collections::BTreeSet;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmux_store::{BackendKind, Change, ChangeKind, Heard, Store};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{ApiError, ApiResult};
use crate::ControlPlane;

/// How often the change counter is read to catch a lost notification.
pub const RECHECK_EVERY: Duration = Duration::from_secs(2);
/// The longest a publish or a counter read may take (PostgreSQL down must not stall an admin
/// call for the pool's 30-second acquire timeout).
const STORE_WAIT: Duration = Duration::from_secs(2);
/// The longest a re-read of the shared config may take.
const RESYNC_WAIT: Duration = Duration::from_secs(10);
/// The first pause before the listener reconnects (doubling up to [`RETRY_MAX`]).
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// This process's side of the change stream: who it is and which changes it has seen.
pub(crate) struct SyncState {
    /// This process's id in published changes (random per start).
    pub(crate) origin: String,
    seen: Mutex<Seen>,
    /// A publish failed: the loop publishes `all` at its next check.
    owed: AtomicBool,
}

/// The change counter values seen: every one up to `upto`, and those above it heard out of
/// order. A counter past `upto` that stays there means a lost notification.
#[derive(Default)]
struct Seen {
    upto: Option<i64>,
    ahead: BTreeSet<i64>,
}

impl Seen {
    fn mark(&mut self, seq: i64) {
        let Some(upto) = self.upto.as_mut() else {
            return; // Not synced yet: the first resync sets the base.
        };
        if seq <= *upto {
            return;
        }
        self.ahead.insert(seq);
        while self.ahead.remove(&(*upto + 1)) {
            *upto += 1;
        }
    }

    /// Everything up to `seq` is in force (after a full re-read that began at `seq`).
    fn synced_to(&mut self, seq: i64) {
        let mut upto = self.upto.map_or(seq, |u| u.max(seq));
        self.ahead.retain(|s| *s > upto);
        while self.ahead.remove(&(upto + 1)) {
            upto += 1;
        }
        self.upto = Some(upto);
    }

    /// Whether every change up to counter value `seq` was heard (a gap below it: not).
    fn covers(&self, seq: i64) -> bool {
        self.upto.is_some_and(|upto| seq <= upto)
    }
}

impl SyncState {
    pub(crate) fn new() -> SyncState {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        SyncState {
            origin: format!("{}-{:016x}", std::process::id(), h.finish()),
            seen: Mutex::new(Seen::default()),
            owed: AtomicBool::new(false),
        }
    }

    fn mark(&self, seq: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.mark(seq);
        }
    }

    fn synced_to(&self, seq: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.synced_to(seq);
        }
    }

    fn covers(&self, seq: i64) -> bool {
        self.seen.lock().is_ok_and(|seen| seen.covers(seq))
    }
}

impl ControlPlane {
    /// Tells the other instances on this store about a change made here (call it once the
    /// change is stored and applied here). Never fails the admin call: on an error the change
    /// is owed, and the sync loop publishes `all` at its next check.
    pub(crate) async fn publish(&self, kind: ChangeKind, id: Option<&str>) {
        if self.store.kind() != BackendKind::Postgres {
            return;
        }
        let sent =
            tokio::time::timeout(STORE_WAIT, self.store.notify(&self.sync.origin, kind, id)).await;
        match sent {
            Ok(Ok(Some(seq))) => self.sync.mark(seq),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => self.owe(kind, &e.to_string()),
            Err(_) => self.owe(kind, "PostgreSQL did not answer within 2 s"),
        }
    }

    /// Forgets virtual key `id` (none: every key) here, and tells the other instances.
    pub(crate) async fn key_changed(&self, id: Option<&str>) {
        match id {
            Some(id) => self.keycache.invalidate(id),
            None => self.keycache.clear(),
        }
        self.publish(ChangeKind::Key, id).await;
    }

    /// Re-reads app `id`'s credits and budgets at its next call, here and on the other
    /// instances.
    pub(crate) async fn app_changed(&self, id: &str) {
        self.ledger.refresh(id);
        self.publish(ChangeKind::App, Some(id)).await;
    }

    fn owe(&self, kind: ChangeKind, why: &str) {
        tracing::warn!(%kind, error = why, "cannot tell the other instances about a change; retrying at the next check");
        self.sync.owed.store(true, Ordering::SeqCst);
    }

    /// Recomposes the running config from the store and this instance's file, and reloads the
    /// price overrides, after a change made on another instance: no revision, no audit event
    /// (the instance that made the change recorded them).
    pub async fn resync_config(&self) -> ApiResult<()> {
        let fs = self.lock().await;
        self.apply_composed(&fs).await?;
        drop(fs);
        let prices = crate::pricing::load(&self.store).await?;
        self.gateway
            .accounting
            .set_api_prices(prices, &self.gateway.config().pricing);
        if let Ok(Some(latest)) = self.store.latest_config_revision().await {
            self.set_revision(latest.id);
        }
        Ok(())
    }

    /// [`ControlPlane::resync_config`] within [`RESYNC_WAIT`]: a store that does not answer
    /// must not hold the change lock for the pool's 30-second acquire timeout.
    async fn resync_config_bounded(&self) -> ApiResult<()> {
        tokio::time::timeout(RESYNC_WAIT, self.resync_config())
            .await
            .map_err(|_| {
                ApiError::Internal(format!(
                    "the store did not answer within {} s",
                    RESYNC_WAIT.as_secs()
                ))
            })?
    }

    /// Re-reads everything another instance may have changed.
    async fn resync_all(&self) {
        if let Err(e) = self.resync_config_bounded().await {
            tracing::warn!(error = %e, "cannot apply the shared config; the running config keeps serving");
        }
        self.keycache.clear();
        self.ledger.refresh_all();
    }

    /// Applies one change heard on the channel.
    async fn apply_change(&self, change: Change) {
        if change.from == self.sync.origin {
            self.sync.mark(change.seq);
            return;
        }
        let id = change.id.as_deref();
        match change.kind {
            ChangeKind::Config => {
                if let Err(e) = self.resync_config_bounded().await {
                    tracing::warn!(error = %e, from = %change.from, "cannot apply a config change made on another instance; the running config keeps serving");
                }
            }
            ChangeKind::Key => match id {
                Some(id) => self.keycache.invalidate(id),
                None => self.keycache.clear(),
            },
            ChangeKind::App => match id {
                Some(id) => self.ledger.refresh(id),
                None => self.ledger.refresh_all(),
            },
            // Users are read on every admin request: nothing is cached to forget.
            ChangeKind::User => {}
            ChangeKind::All => self.resync_all().await,
        }
        tracing::debug!(kind = %change.kind, from = %change.from, seq = change.seq, "applied a change made on another instance");
        self.sync.mark(change.seq);
    }

    /// Re-reads everything and takes the counter read before as the base: every change up to it
    /// is then in force.
    async fn resync(&self) {
        match read_seq(&self.store).await {
            Ok(seq) => {
                self.resync_all().await;
                self.sync.synced_to(seq);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the change counter; retrying"),
        }
    }
}

async fn read_seq(store: &Store) -> Result<i64, String> {
    match tokio::time::timeout(STORE_WAIT, store.change_seq()).await {
        Ok(Ok(seq)) => Ok(seq),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("PostgreSQL did not answer within 2 s".into()),
    }
}

/// Starts the change listener and the loop that applies what it hears, on `tasks`, when the
/// store is PostgreSQL; both stop on `cancel`.
pub fn spawn(cp: &Arc<ControlPlane>, tasks: &TaskTracker, cancel: CancellationToken) {
    if cp.store.kind() != BackendKind::Postgres {
        return;
    }
    let (tx, rx) = mpsc::channel(1024);
    let reset = Arc::new(Notify::new());
    tasks.spawn(listen(
        cp.store.clone(),
        tx,
        Arc::clone(&reset),
        cancel.clone(),
    ));
    tasks.spawn(apply_loop(Arc::clone(cp), rx, reset, cancel));
}

/// Keeps a `LISTEN` open (reconnecting with a growing pause) and forwards what it hears.
async fn listen(
    store: Store,
    tx: mpsc::Sender<Heard>,
    reset: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut wait = RETRY_FIRST;
    let mut listener = None;
    loop {
        let heard = match listener.as_mut() {
            None => tokio::select! {
                _ = cancel.cancelled() => return,
                made = store.listen_changes() => made.map(|l| {
                    listener = Some(l);
                    None
                }),
            },
            Some(l) => tokio::select! {
                _ = cancel.cancelled() => return,
                _ = reset.notified() => {
                    l.reset();
                    continue;
                }
                heard = l.next() => heard.map(Some),
            },
        };
        match heard {
            Ok(None) => {}
            Ok(Some(heard)) => {
                wait = RETRY_FIRST;
                if tx.send(heard).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "change listener: cannot hear the other instances' changes; the counter is still checked every 2 s");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Applies what the listener hears, and every [`RECHECK_EVERY`] compares the change counter
/// with what was heard.
async fn apply_loop(
    cp: Arc<ControlPlane>,
    mut rx: mpsc::Receiver<Heard>,
    reset: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(RECHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await; // The first tick is immediate; the listener's `Connected` syncs first.
    loop {
        let work = async {
            tokio::select! {
                heard = rx.recv() => match heard {
                    Some(heard) => on_heard(&cp, heard).await,
                    None => return false,
                },
                _ = tick.tick() => recheck(&cp, &mut rx, &reset).await,
            }
            true
        };
        // A re-read in progress stops with the process too (the running config stays whole:
        // `Gateway::apply` swaps it in one step).
        tokio::select! {
            _ = cancel.cancelled() => return,
            more = work => if !more { return },
        }
    }
}

async fn on_heard(cp: &ControlPlane, heard: Heard) {
    match heard {
        Heard::Change(change) => cp.apply_change(change).await,
        Heard::Connected => cp.resync().await,
        Heard::Unreadable(why) => {
            tracing::warn!(error = %why, "unreadable change notification; re-reading everything");
            cp.resync().await;
        }
    }
}

/// The safety net: publishes an owed change, then reads the counter; a value not covered by
/// what was heard (after applying what is queued) means a lost notification: everything is
/// re-read and the listener reconnects.
async fn recheck(cp: &ControlPlane, rx: &mut mpsc::Receiver<Heard>, reset: &Notify) {
    if cp.sync.owed.swap(false, Ordering::SeqCst) {
        cp.publish(ChangeKind::All, None).await;
    }
    let seq = match read_seq(&cp.store).await {
        Ok(seq) => seq,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the change counter");
            return;
        }
    };
    while let Ok(heard) = rx.try_recv() {
        on_heard(cp, heard).await;
    }
    if cp.sync.covers(seq) {
        return;
    }
    tracing::info!(
        seq,
        "the shared state changed without a notification heard: re-reading everything"
    );
    cp.resync_all().await;
    cp.sync.synced_to(seq);
    reset.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seen_counts_up_and_notices_gaps() {
        let mut s = Seen::default();
        s.mark(3);
        assert!(!s.covers(3), "nothing counts before the first sync");
        s.synced_to(5);
        assert!(s.covers(5));
        s.mark(6);
        s.mark(8);
        assert!(s.covers(6) && !s.covers(7), "7 is missing");
        assert!(!s.covers(8), "8 was heard, but not 7 below it");
        assert_eq!(s.upto, Some(6));
        s.mark(7);
        assert_eq!(s.upto, Some(8), "the gap closed");
        s.mark(10);
        s.synced_to(9);
        assert_eq!(
            s.upto,
            Some(10),
            "a re-read at 9 also takes 10 heard before"
        );
        assert!(s.covers(10) && s.covers(4) && !s.covers(11));
    }
}
