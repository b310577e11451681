//! Credits and budgets on the data plane: the `Accountant` the gateway asks before a priced call
//! reaches an upstream, and that receives every call's record for the call-log writer.
//!
//! The store holds the truth (credits, and what was spent per day in the usage rollups); this
//! keeps, per app, the store's figures (reloaded every [`RELOAD_EVERY`] or when the admin API
//! changes the app) plus what the store does not know yet: costs settled but not yet written
//! (`unflushed`) and estimates reserved by calls still running (`reserved`). Admission is an
//! in-memory check after the first call of an app.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::accounting::{Accountant, AdmitFuture, CallRecord, Refusal};
use store::Store;
use tokio::time::Instant;

use crate::calllog::{to_store, Flushed, Queue};

/// How long the store's figures for an app are trusted before they are read again.
pub const RELOAD_EVERY: Duration = Duration::from_secs(30);

const DAY_MS: i64 = 86_400_000;

#[derive(Clone, Debug, Default)]
struct AppBook {
    /// From the store.
    credits: f64,
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
    loaded: Option<Instant>,
}

/// The data plane's accountant over the store.
pub struct Ledger {
    store: Store,
    queue: Arc<Queue>,
    books: Mutex<HashMap<String, AppBook>>,
}

/// Unix ms at the start of the UTC day and month that contain `now`.
fn day_and_month_start(now: i64) -> (i64, i64) {
    let day = now.div_euclid(DAY_MS) * DAY_MS;
    let days = now.div_euclid(DAY_MS);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    (day, day - (d - 1) * DAY_MS)
}

impl Ledger {
    pub fn new(store: Store, queue: Arc<Queue>) -> Arc<Ledger> {
        Arc::new(Ledger {
            store,
            queue,
            books: Mutex::new(HashMap::new()),
        })
    }

    /// Re-reads the app's credits and budgets at its next call (after an admin change).
    pub fn refresh(&self, app_id: &str) {
        if let Ok(mut books) = self.books.lock() {
            if let Some(b) = books.get_mut(app_id) {
                b.loaded = None;
            }
        }
    }

    async fn load(&self, app_id: &str, now: i64) -> Result<AppBook, store::StoreError> {
        let app = self.store.get_app(app_id).await?;
        let (day, month) = day_and_month_start(now);
        let spent_day = self.store.app_spent_since(app_id, day).await?;
        let spent_month = self.store.app_spent_since(app_id, month).await?;
        Ok(AppBook {
            credits: app.credits,
            daily_budget: app.daily_budget,
            monthly_budget: app.monthly_budget,
            spent_day,
            spent_month,
            day_start: day,
            loaded: Some(Instant::now()),
            ..AppBook::default()
        })
    }

    async fn admit_app(&self, app_id: &str, reserve: f64, priced: bool) -> Result<(), Refusal> {
        if !priced {
            // Free models (local ones) are never refused for money.
            return Ok(());
        }
        let now = store::now_ms();
        let (today, _) = day_and_month_start(now);
        let fresh = self.books.lock().ok().and_then(|b| {
            b.get(app_id).map(|b| {
                b.loaded.is_some_and(|at| at.elapsed() < RELOAD_EVERY) && b.day_start == today
            })
        });
        if fresh != Some(true) {
            match self.load(app_id, now).await {
                Ok(loaded) => {
                    if let Ok(mut books) = self.books.lock() {
                        let b = books.entry(app_id.to_owned()).or_default();
                        // What only this process knows survives the reload.
                        let (unflushed, reserved) = (b.unflushed, b.reserved);
                        *b = AppBook {
                            spent_day: loaded.spent_day + unflushed,
                            spent_month: loaded.spent_month + unflushed,
                            unflushed,
                            reserved,
                            ..loaded
                        };
                    }
                }
                // The store is briefly unavailable: let the call through on what is known (or
                // nothing) rather than refuse every call; the charge is written later anyway.
                Err(e) => {
                    tracing::warn!(app = app_id, error = %e, "cannot read the app's credit; admitting")
                }
            }
        }
        let Ok(mut books) = self.books.lock() else {
            return Ok(());
        };
        let Some(b) = books.get_mut(app_id) else {
            return Ok(());
        };
        if b.credits - b.unflushed - b.reserved <= 0.0 {
            return Err(Refusal::OutOfCredit);
        }
        if b.daily_budget
            .is_some_and(|cap| b.spent_day + b.reserved >= cap)
        {
            return Err(Refusal::DailyBudget);
        }
        if b.monthly_budget
            .is_some_and(|cap| b.spent_month + b.reserved >= cap)
        {
            return Err(Refusal::MonthlyBudget);
        }
        b.reserved += reserve;
        Ok(())
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
            let (day, month) = (b.spent_day, b.spent_month);
            b.spent_day += r.cost;
            b.spent_month += r.cost;
            if b.loaded.is_some() {
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
            gateway::alerts::emit(gateway::alerts::Alert::Budget {
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
        for (app, cost) in charged {
            if let Some(b) = books.get_mut(app) {
                b.unflushed = (b.unflushed - cost).max(0.0);
            }
        }
        for (app, balance) in balances {
            if let Some(b) = books.get_mut(app) {
                b.credits = *balance;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
