//! Accounting on the data plane: the usage tap that reads token counts out of relayed bytes
//! (`usage.rs`), the pricing table (`pricing.rs`), the call record (`record.rs`), secrets
//! redacted from logged bodies (`redact.rs`), and the hook ([`Accountant`]) through which the
//! control plane admits calls against credits and budgets and receives one record per call.
//!
//! The gateway does not know the store: it hands records to an [`Accountant`] that must never
//! block (the control plane's implementation queues them for a batched writer).

mod pricing;
mod record;
mod redact;
mod usage;

pub use pricing::{estimate_tokens, Price, Pricing, Tokens, DEFAULT_PRICES};
pub use record::{
    status_class, AttemptRecord, CallRecord, Draft, BODY_LOG_LIMIT, CLIENT_CLOSED_STATUS,
    MAX_CALL_TOKENS,
};
pub use redact::redact;
pub use usage::{cap, from_canonical, tokens, UsageTap, MAX_CLIENT_STRING};

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Why a call is refused before it reaches an upstream.
#[derive(Clone, Debug, PartialEq)]
pub enum Refusal {
    OutOfCredit,
    DailyBudget,
    MonthlyBudget,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Refusal::OutOfCredit => {
                "This app's credit balance is 0 (spent, or held by calls still running): add \
                 credits (POST /admin/v1/apps/{app}/credits) to continue."
            }
            Refusal::DailyBudget => {
                "This app's daily budget is spent: calls resume tomorrow (UTC) or when the budget is raised."
            }
            Refusal::MonthlyBudget => {
                "This app's monthly budget is spent: calls resume next month (UTC) or when the budget is raised."
            }
        })
    }
}

pub type AdmitFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Refusal>> + Send + 'a>>;

/// Admits calls against an app's credit and budgets, and receives every call's record.
/// Implemented over the store by the control plane.
pub trait Accountant: Send + Sync {
    /// Checks `app_id`'s balance and budgets and reserves `reserve` USD until the call's
    /// record arrives. `priced`: whether the model costs anything (free models always pass).
    fn admit<'a>(&'a self, app_id: &'a str, reserve: f64, priced: bool) -> AdmitFuture<'a>;
    /// Takes one finished call. Must not block: it runs on the request path's drop.
    fn record(&self, record: CallRecord);
}

/// The accounting state the gateway holds: the accountant (once installed), the pricing, and
/// whether bodies go into the log.
#[derive(Default)]
pub struct Accounting {
    accountant: std::sync::OnceLock<Arc<dyn Accountant>>,
    pricing: arc_swap::ArcSwap<Pricing>,
    api_prices: std::sync::Mutex<BTreeMap<String, Price>>,
    pub refused: AtomicU64,
    /// Cancelled when the shutdown grace period is over: streams still open end (their
    /// records settled with what they delivered) while the call-log writer still runs.
    pub streams_cut: tokio_util::sync::CancellationToken,
    /// Cancelled a moment after `streams_cut`: calls still open (waiting for an upstream,
    /// reading a whole answer) are dropped with their connections, so their records settle —
    /// as `shutdown` — while the writer still runs.
    pub calls_dropped: tokio_util::sync::CancellationToken,
}

impl Accounting {
    pub fn set_accountant(&self, a: Arc<dyn Accountant>) {
        let _ = self.accountant.set(a);
    }

    pub fn accountant(&self) -> Option<&Arc<dyn Accountant>> {
        self.accountant.get()
    }

    pub fn pricing(&self) -> Arc<Pricing> {
        self.pricing.load_full()
    }

    /// Rebuilds the table from the config's `[[pricing]]` and the API's overrides.
    pub fn reprice(&self, config: &[llmux_config::PricingConfig]) {
        let api = self
            .api_prices
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        self.pricing.store(Arc::new(Pricing::build(config, &api)));
    }

    /// Replaces the admin API's overrides and rebuilds the table.
    pub fn set_api_prices(
        &self,
        prices: BTreeMap<String, Price>,
        config: &[llmux_config::PricingConfig],
    ) {
        if let Ok(mut m) = self.api_prices.lock() {
            *m = prices;
        }
        self.reprice(config);
    }

    pub fn record(&self, record: CallRecord) {
        if let Some(a) = self.accountant.get() {
            a.record(record);
        }
    }
}

/// What the call-log writer reports for `/metrics`.
#[derive(Default)]
pub struct LogMetrics {
    /// Records waiting to be written (channel plus overflow buffer).
    pub queue_depth: AtomicU64,
    /// Records that went to the overflow buffer because the channel was full.
    pub overflowed: AtomicU64,
    /// Records dropped because even the overflow buffer was full.
    pub dropped: AtomicU64,
    /// Batches that failed to write (and were retried).
    pub write_errors: AtomicU64,
    /// Records the store refused for their data (a NUL byte, an oversized value): stored
    /// sanitised, or set aside when even that failed — never retried forever.
    pub rejected: AtomicU64,
    /// Records written to the spill file because the store could not take them at shutdown.
    pub spilled: AtomicU64,
}

/// Shared by the writer (which updates it) and the gateway's `/metrics`.
pub static LOG_METRICS: LogMetrics = LogMetrics {
    queue_depth: AtomicU64::new(0),
    overflowed: AtomicU64::new(0),
    dropped: AtomicU64::new(0),
    write_errors: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    spilled: AtomicU64::new(0),
};

/// The call log's and the ledger's counters for `/metrics`: (name, is a counter, help, value).
/// Counter names leave out `_total`, which the encoder adds.
pub(crate) fn metric_values(
    accounting: &Accounting,
) -> [(&'static str, bool, &'static str, u64); 7] {
    let m = &LOG_METRICS;
    [
        (
            "llmux_call_log_queue_depth",
            false,
            "Call-log records waiting for the writer.",
            m.queue_depth.load(Relaxed),
        ),
        (
            "llmux_call_log_overflow",
            true,
            "Call-log records that waited in the overflow buffer because the channel was full.",
            m.overflowed.load(Relaxed),
        ),
        (
            "llmux_call_log_dropped",
            true,
            "Call-log records dropped because the overflow buffer was full too.",
            m.dropped.load(Relaxed),
        ),
        (
            "llmux_call_log_write_errors",
            true,
            "Call-log batches that failed to write and were retried.",
            m.write_errors.load(Relaxed),
        ),
        (
            "llmux_call_log_rejected",
            true,
            "Call-log records the store refused for their data (stored sanitised or set aside).",
            m.rejected.load(Relaxed),
        ),
        (
            "llmux_call_log_spilled",
            true,
            "Call-log records written to the spill file for the next start to replay.",
            m.spilled.load(Relaxed),
        ),
        (
            "llmux_quota_refusals",
            true,
            "Calls refused for lack of credit or budget.",
            accounting.refused.load(Relaxed),
        ),
    ]
}
