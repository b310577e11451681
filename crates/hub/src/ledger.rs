//! Credits and budgets on the data plane: the `Accountant` the gateway asks before a priced call
//! reaches an upstream, and that receives every call's record for the call-log writer.
//!
//! The store holds the truth (credits, and what was spent per day in the usage rollups); this
//! keeps, per app, the store's figures (reloaded every [`RELOAD_EVERY`] or when the admin API
//! changes the app) plus what the store does not know yet: costs settled but not yet written
//! (`unflushed`) and estimates reserved by calls still running (`reserved`). Admission is an
//! in-memory check after the first call of an app.
//!
//! A reload is single-flight per app and bounded by [`STORE_TIMEOUT`]: while one call reloads,
//! the others admit on the last good figures (or, for an app never loaded, wait for that one
//! load). After a failed reload the figures are kept and the store is not asked again for that
//! app until a backoff ([`RETRY_FIRST`] doubling to [`RELOAD_EVERY`]) has passed, so an outage
//! costs one short wait, not a wait per call.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use llmux_gateway::accounting::{Accountant, AdmitFuture, CallRecord, Refusal};
use llmux_store::Store;
use tokio::time::Instant;

use crate::calllog::{to_store, Flushed, Queue};
use crate::sharedbook::{Admission, Mark, SharedBook, Verdict};

/// How long the store's figures for an app are trusted before they are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);
/// How long a call waits for the store's figures before it is admitted on what is known.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The first pause after a failed reload (doubling up to [`RELOAD_EVERY`]).
pub const RETRY_FIRST: Duration = Duration::from_secs(1);

const DAY_MS: i64 = 86_400_000;

/// An app's figures as the store has them.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    /// `None`: not metered.
    pub credits: Option<f64>,
    pub daily_budget: Option<f64>,
    pub monthly_budget: Option<f64>,
    /// Spent since the start of the UTC day / month given to [`FigureSource::figures`].
    pub spent_day: f64,
    pub spent_month: f64,
}

pub type FiguresFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Figures, llmux_store::StoreError>> + Send + 'a>>;

/// Where the ledger reads an app's figures: the store (a trait so that tests can stand in a
/// store that hangs or fails).
pub trait FigureSource: Send + Sync {
    fn figures<'a>(&'a self, app_id: &'a str, day: i64, month: i64) -> FiguresFuture<'a>;
}

impl FigureSource for Store {
    fn figures<'a>(&'a self, app_id: &'a str, day: i64, month: i64) -> FiguresFuture<'a> {
        Box::pin(async move {
            let app = self.get_app(app_id).await?;
            Ok(Figures {
                credits: app.credits,
                daily_budget: app.daily_budget,
                monthly_budget: app.monthly_budget,
                spent_day: self.app_spent_since(app_id, day).await?,
                spent_month: self.app_spent_since(app_id, month).await?,
            })
        })
    }
}

#[derive(Clone, Debug, Default)]
struct AppBook {
    /// From the store; `None`: not metered.
    credits: Option<f64>,
    daily_budget: Option<f64>,
    monthly_budget: Option<f64>,
    /// Spent today / this month as the store had it at load, plus what settled since.
    spent_day: f64,
    spent_month: f64,
    day_start: i64,
    /// Settled, not yet written (the store's credits do not include it yet).
    unflushed: f64,
    /// Held by calls still running.
    reserved: f64,
    /// When the figures were read; `None`: read them at the next call.
    loaded: Option<Instant>,
    /// Whether the figures came from the store at least once (else they are defaults).
    known: bool,
    /// After a failed reload: not before this.
    retry_at: Option<Instant>,
    retry_wait: Duration,
    /// Held by the one call reloading the figures.
    gate: Arc<tokio::sync::Mutex<()>>,
    /// The store's figures at the last load and the cluster's mark read just before them.
    at_load: AtLoad,
    /// Orders this instance's published outstanding (cluster mode).
    seq: u64,
}

/// What a cluster-wide admission measures from (see [`crate::sharedbook`]).
#[derive(Clone, Debug, Default)]
struct AtLoad {
    /// `None`: no shared book, or it did not answer at the load.
    mark: Option<Mark>,
    credits: Option<f64>,
    spent_day: f64,
    spent_month: f64,
}

impl AppBook {
    /// `shared`: in a cluster, figures loaded without the cluster's mark are re-read after
    /// [`RETRY_FIRST`] rather than [`RELOAD_EVERY`], so that the shared view resumes soon.
    fn fresh(&self, today: i64, shared: bool) -> bool {
        let ttl = if shared && self.at_load.mark.is_none() {
            RETRY_FIRST
        } else {
            RELOAD_EVERY
        };
        self.loaded.is_some_and(|at| at.elapsed() < ttl) && self.day_start == today
    }

    /// Reserved by calls still running plus settled but not written: what this instance holds.
    fn outstanding(&self) -> f64 {
        self.reserved + self.unflushed
    }

    /// The local checks: this instance's view of the store's figures and its own calls.
    fn check(&self) -> Result<(), Refusal> {
        if self
            .credits
            .is_some_and(|credits| credits - self.unflushed - self.reserved <= 0.0)
        {
            return Err(Refusal::OutOfCredit);
        }
        if self
            .daily_budget
            .is_some_and(|cap| self.spent_day + self.reserved >= cap)
        {
            return Err(Refusal::DailyBudget);
        }
        if self
            .monthly_budget
            .is_some_and(|cap| self.spent_month + self.reserved >= cap)
        {
            return Err(Refusal::MonthlyBudget);
        }
        Ok(())
    }

    /// The cluster-wide admission of a call that reserves `reserve` (already added).
    fn admission(&self, app: &str, reserve: f64) -> Option<Admission> {
        let mark = self.at_load.mark.clone()?;
        let after = self.outstanding();
        Some(Admission {
            app: app.to_owned(),
            mark,
            credits: self.at_load.credits,
            daily: self.daily_budget.map(|cap| (cap, self.at_load.spent_day)),
            monthly: self
                .monthly_budget
                .map(|cap| (cap, self.at_load.spent_month)),
            outstanding: (after - reserve).max(0.0),
            after,
            seq: self.seq,
        })
    }

    fn backing_off(&self) -> bool {
        self.retry_at.is_some_and(|at| Instant::now() < at)
    }
}

/// The data plane's accountant over the store.
pub struct Ledger {
    source: Arc<dyn FigureSource>,
    queue: Arc<Queue>,
    books: Mutex<HashMap<String, AppBook>>,
    /// Reloads attempted (for tests and logs).
    loads: AtomicU64,
    /// The other instances' reservations and spending (cluster mode).
    shared: OnceLock<Arc<dyn SharedBook>>,
}

/// Unix ms at the start of the UTC day and month that contain `now`.
fn day_and_month_start(now: i64) -> (i64, i64) {
    let day = now.div_euclid(DAY_MS) * DAY_MS;
    let Ok(midnight) = jiff::Timestamp::from_millisecond(day) else {
        return (day, day);
    };
    let date = jiff::tz::Offset::UTC.to_datetime(midnight).date();
    (day, day - i64::from(date.day() - 1) * DAY_MS)
}

impl Ledger {
    pub fn new(store: Store, queue: Arc<Queue>) -> Arc<Ledger> {
        Ledger::with_source(Arc::new(store), queue)
    }

    /// A ledger reading the figures from `source`.
    pub fn with_source(source: Arc<dyn FigureSource>, queue: Arc<Queue>) -> Arc<Ledger> {
        Arc::new(Ledger {
            source,
            queue,
            books: Mutex::new(HashMap::new()),
            loads: AtomicU64::new(0),
            shared: OnceLock::new(),
        })
    }

    /// Admits against the whole cluster's spending through `book` (once; later calls are
    /// ignored). Without it, or while it does not answer, the ledger decides on its own.
    pub fn set_shared(&self, book: Arc<dyn SharedBook>) {
        let _ = self.shared.set(book);
    }

    /// Re-reads the app's credits and budgets at its next call (after an admin change).
    pub fn refresh(&self, app_id: &str) {
        if let Ok(mut books) = self.books.lock() {
            if let Some(b) = books.get_mut(app_id) {
                b.loaded = None;
            }
        }
    }

    /// Re-reads every app's credits and budgets at its next call (after a change made on
    /// another instance, or when notifications about such changes may have been lost).
    pub fn refresh_all(&self) {
        if let Ok(mut books) = self.books.lock() {
            for b in books.values_mut() {
                b.loaded = None;
            }
        }
    }

    /// Reads the app's figures when they are stale: one call at a time per app, within
    /// [`STORE_TIMEOUT`]; a call that has figures to go on does not wait for another's reload.
    async fn reload_if_stale(&self, app_id: &str, now: i64) {
        let (today, month) = day_and_month_start(now);
        let shared = self.shared.get().is_some();
        let (gate, known) = {
            let Ok(mut books) = self.books.lock() else {
                return;
            };
            let b = books.entry(app_id.to_owned()).or_default();
            if b.fresh(today, shared) || b.backing_off() {
                return;
            }
            (Arc::clone(&b.gate), b.known)
        };
        let _reloading = if known {
            match gate.try_lock_owned() {
                Ok(g) => g,
                // Another call is reloading: go on with the last good figures.
                Err(_) => return,
            }
        } else {
            gate.lock_owned().await
        };
        // Another call may have reloaded (or failed) while this one waited.
        let again = self.books.lock().ok().and_then(|b| {
            b.get(app_id)
                .map(|b| !b.fresh(today, shared) && !b.backing_off())
        });
        if again != Some(true) {
            return;
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        // Before the store: every cost the mark counts as flushed is in what the store says.
        let mark = match self.shared.get() {
            Some(book) => book.mark(app_id).await,
            None => None,
        };
        let read = tokio::time::timeout(STORE_TIMEOUT, self.source.figures(app_id, today, month))
            .await
            .map_err(|_| format!("no answer within {STORE_TIMEOUT:?}"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        let Ok(mut books) = self.books.lock() else {
            return;
        };
        let b = books.entry(app_id.to_owned()).or_default();
        match read {
            Ok(f) => {
                b.at_load = AtLoad {
                    mark,
                    credits: f.credits,
                    spent_day: f.spent_day,
                    spent_month: f.spent_month,
                };
                b.credits = f.credits;
                b.daily_budget = f.daily_budget;
                b.monthly_budget = f.monthly_budget;
                // What only this process knows (unflushed, reserved) survives the reload.
                b.spent_day = f.spent_day + b.unflushed;
                b.spent_month = f.spent_month + b.unflushed;
                b.day_start = today;
                b.loaded = Some(Instant::now());
                b.known = true;
                b.retry_at = None;
                b.retry_wait = Duration::ZERO;
            }
            // The store is unavailable: let calls through on what is known (or nothing) rather
            // than refuse every call — the charge is written later anyway — and leave the store
            // alone for a while.
            Err(e) => {
                b.retry_wait = (b.retry_wait * 2).clamp(RETRY_FIRST, RELOAD_EVERY);
                b.retry_at = Some(Instant::now() + b.retry_wait);
                tracing::warn!(app = app_id, error = %e, retry_in = ?b.retry_wait, "cannot read the app's credit; admitting on the last known figures");
            }
        }
    }

    async fn admit_app(&self, app_id: &str, reserve: f64, priced: bool) -> Result<(), Refusal> {
        if !priced {
            // Free models (local ones) are never refused for money.
            return Ok(());
        }
        self.reload_if_stale(app_id, llmux_store::now_ms()).await;
        let admission = {
            let Ok(mut books) = self.books.lock() else {
                return Ok(());
            };
            let Some(b) = books.get_mut(app_id) else {
                return Ok(());
            };
            b.check()?;
            b.reserved += reserve;
            b.seq += 1;
            b.admission(app_id, reserve)
        };
        let (Some(book), Some(admission)) = (self.shared.get(), admission) else {
            return Ok(());
        };
        match book.admit(admission).await {
            // Unanswered: decided on this instance's figures, as on a single instance.
            None | Some(Verdict::Admit) => Ok(()),
            Some(Verdict::Stale) => {
                self.refresh(app_id);
                Ok(())
            }
            Some(Verdict::Refuse(refusal)) => {
                self.unreserve(app_id, reserve, book.as_ref());
                Err(refusal)
            }
        }
    }

    /// Gives back a reservation the cluster refused, and says so to the others.
    fn unreserve(&self, app_id: &str, reserve: f64, book: &dyn SharedBook) {
        if let Ok(mut books) = self.books.lock() {
            if let Some(b) = books.get_mut(app_id) {
                b.reserved = (b.reserved - reserve).max(0.0);
                b.seq += 1;
                book.publish(app_id, b.outstanding(), b.seq);
            }
        }
    }

    fn settle(&self, r: &CallRecord) {
        let Some(app) = r.app_id.as_deref() else {
            return;
        };
        if r.reserved == 0.0 && r.cost == 0.0 {
            return;
        }
        let mut alerts = Vec::new();
        if let Ok(mut books) = self.books.lock() {
            let b = books.entry(app.to_owned()).or_default();
            b.reserved = (b.reserved - r.reserved).max(0.0);
            b.unflushed += r.cost;
            if let Some(book) = self.shared.get() {
                b.seq += 1;
                book.publish(app, b.outstanding(), b.seq);
            }
            let (day, month) = (b.spent_day, b.spent_month);
            b.spent_day += r.cost;
            b.spent_month += r.cost;
            if b.known {
                for (what, cap, before, after) in [
                    ("daily budget", b.daily_budget, day, b.spent_day),
                    ("monthly budget", b.monthly_budget, month, b.spent_month),
                ] {
                    if let Some(percent) = cap.and_then(|cap| crossed(cap, before, after)) {
                        alerts.push((
                            percent,
                            format!("{what}: {after:.4} of {:.4} USD", cap.unwrap_or(0.0)),
                        ));
                    }
                }
            }
        }
        // Outside the lock: emitting logs a line.
        for (percent, detail) in alerts {
            llmux_gateway::alerts::emit(llmux_gateway::alerts::Alert::Budget {
                app: app.to_owned(),
                percent,
                detail,
            });
        }
    }
}

/// 80 or 100 when spending went from `before` to `after` across that share of `cap`.
fn crossed(cap: f64, before: f64, after: f64) -> Option<u32> {
    if cap <= 0.0 {
        return None;
    }
    [100, 80]
        .into_iter()
        .find(|p| before < cap * f64::from(*p) / 100.0 && after >= cap * f64::from(*p) / 100.0)
}

impl Accountant for Ledger {
    fn admit<'a>(&'a self, app_id: &'a str, reserve: f64, priced: bool) -> AdmitFuture<'a> {
        Box::pin(self.admit_app(app_id, reserve, priced))
    }

    fn record(&self, record: CallRecord) {
        self.settle(&record);
        self.queue.push(to_store(record));
    }
}

impl Flushed for Ledger {
    fn flushed(&self, charged: &[(String, f64)], balances: &[(String, f64)]) {
        let Ok(mut books) = self.books.lock() else {
            return;
        };
        let book = self.shared.get();
        for (app, cost) in charged {
            let left = books.get_mut(app).map(|b| {
                b.unflushed = (b.unflushed - cost).max(0.0);
                b.seq += 1;
                (b.outstanding(), b.seq)
            });
            if let Some(book) = book {
                book.flushed(app, *cost, left);
            }
        }
        // The balances update this instance's own view (used while the cluster's is out of
        // reach); the cluster-wide admission measures from the figures at the mark instead.
        for (app, balance) in balances {
            if let Some(b) = books.get_mut(app) {
                b.credits = Some(*balance);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Answers with `figures`, or never (a store that hangs) while it is `None`.
    #[derive(Default)]
    struct Source {
        figures: Mutex<Option<Figures>>,
        asked: AtomicU64,
    }

    impl FigureSource for Source {
        fn figures<'a>(&'a self, _: &'a str, _: i64, _: i64) -> FiguresFuture<'a> {
            self.asked.fetch_add(1, Ordering::Relaxed);
            let answer = self.figures.lock().unwrap().clone();
            Box::pin(async move {
                match answer {
                    Some(f) => Ok(f),
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn ledger(credits: Option<f64>) -> (Arc<Ledger>, Arc<Source>) {
        let source = Arc::new(Source::default());
        *source.figures.lock().unwrap() = Some(Figures {
            credits,
            ..Figures::default()
        });
        let (queue, _rx) = Queue::new();
        let l = Ledger::with_source(Arc::clone(&source) as Arc<dyn FigureSource>, queue);
        (l, source)
    }

    async fn admit_many(l: &Arc<Ledger>, app: &str, n: usize) -> Vec<Result<(), Refusal>> {
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let (l, app) = (Arc::clone(l), app.to_owned());
                tokio::spawn(async move { l.admit_app(&app, 0.01, true).await })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_store_costs_one_short_wait_not_one_per_call() {
        let (l, source) = ledger(Some(10.0));
        assert_eq!(l.admit_app("a", 0.01, true).await, Ok(()));
        assert_eq!(source.asked.load(Ordering::Relaxed), 1);

        // The store hangs and the figures go stale: one call reloads (and gives up after
        // STORE_TIMEOUT); the others go on with the last good figures at once.
        *source.figures.lock().unwrap() = None;
        tokio::time::advance(RELOAD_EVERY).await;
        let started = Instant::now();
        assert!(admit_many(&l, "a", 20).await.iter().all(Result::is_ok));
        assert_eq!(source.asked.load(Ordering::Relaxed), 2);
        assert!(started.elapsed() <= STORE_TIMEOUT + Duration::from_millis(10));

        // Backing off: the next calls do not ask the store, nor wait.
        let started = Instant::now();
        assert_eq!(l.admit_app("a", 0.01, true).await, Ok(()));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(source.asked.load(Ordering::Relaxed), 2);
        tokio::time::advance(RETRY_FIRST).await;
        assert_eq!(l.admit_app("a", 0.01, true).await, Ok(()));
        assert_eq!(source.asked.load(Ordering::Relaxed), 3);

        // An app never loaded: its first calls wait for one load between them.
        let started = Instant::now();
        assert!(admit_many(&l, "b", 10).await.iter().all(Result::is_ok));
        assert_eq!(source.asked.load(Ordering::Relaxed), 4);
        assert!(started.elapsed() <= STORE_TIMEOUT + Duration::from_millis(10));

        // The store is back: the figures are read again once the backoff has passed.
        *source.figures.lock().unwrap() = Some(Figures {
            credits: Some(0.0),
            ..Figures::default()
        });
        tokio::time::advance(RELOAD_EVERY).await;
        assert_eq!(
            l.admit_app("a", 0.01, true).await,
            Err(Refusal::OutOfCredit)
        );
    }

    #[tokio::test]
    async fn an_app_without_credits_is_not_metered_but_a_zero_balance_is() {
        let (free, _) = ledger(None);
        assert_eq!(free.admit_app("a", 1e6, true).await, Ok(()));
        let (broke, _) = ledger(Some(0.0));
        assert_eq!(
            broke.admit_app("a", 0.01, true).await,
            Err(Refusal::OutOfCredit)
        );
        assert!(Refusal::OutOfCredit
            .to_string()
            .contains("credit balance is 0"));
        // Free models are never refused for money.
        assert_eq!(broke.admit_app("a", 0.0, false).await, Ok(()));
    }

    #[test]
    fn budget_thresholds() {
        assert_eq!(crossed(10.0, 7.0, 8.5), Some(80));
        assert_eq!(crossed(10.0, 7.0, 10.0), Some(100));
        assert_eq!(crossed(10.0, 8.5, 9.0), None);
        assert_eq!(crossed(0.0, 0.0, 1.0), None);
    }

    #[test]
    fn utc_day_and_month() {
        // 2024-03-15T10:00:00Z
        let now = 1_710_496_800_000;
        let (day, month) = day_and_month_start(now);
        assert_eq!(day, 1_710_460_800_000); // 2024-03-15T00:00Z
        assert_eq!(month, 1_709_251_200_000); // 2024-03-01T00:00Z
    }
}
