//! The call-log writer: records arrive from the data plane through a bounded channel (never
//! blocking a request), and one background task writes them in batches — rows, usage rollups
//! and credit charges in one transaction — retrying with backoff while the store is down.
//!
//! When the channel is full, records wait in a bounded overflow buffer
//! (`llmux_call_log_overflow_total`); only when that is full too is a record dropped, counted
//! (`llmux_call_log_dropped_total`) and logged. So while the store is down the process holds
//! up to [`BUFFER_RECORDS`] records (channel and overflow) and writes them, in order, when the
//! store is back; the outage is logged once when it starts (with that bound) and once when it
//! ends (with how long it lasted and how many records waited).
//!
//! Every record carries a unique `call_id`, and the store skips records whose id is in the log
//! already: a batch retried after a write whose commit landed but whose answer was lost (a
//! connection cut, a timeout), or a spill file replayed after such a write, is written exactly
//! once (and charged once).
//!
//! A record the store refuses for its data is isolated and stored sanitised or set aside
//! (`llmux_call_log_rejected_total`), so it cannot stop the log. On shutdown the writer drains
//! everything queued within a bounded time; what the store cannot take goes to a spill file
//! that the next start replays.

use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use llmux_gateway::accounting::LOG_METRICS;
use llmux_store::{CallRecord, Store};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Records the channel holds before the overflow buffer takes over.
pub const CHANNEL_CAPACITY: usize = 10_000;
/// Records the overflow buffer holds (about 1 KB each) before records are dropped.
pub const OVERFLOW_LIMIT: usize = 200_000;
/// Bytes the overflow buffer holds (by [`approx_size`]) before records are dropped: with
/// `[logs] bodies = true` a record can carry 128 KiB of text, and 200,000 of those would not
/// fit in memory.
pub const OVERFLOW_BYTES: usize = 256 * 1024 * 1024;
/// Records held in memory while the store is down, before any is dropped.
pub const BUFFER_RECORDS: usize = CHANNEL_CAPACITY + OVERFLOW_LIMIT;
/// A write that has not finished after this long is abandoned (its transaction rolls back, or
/// its commit landed and the retry skips its rows): a store behind a dead link can otherwise
/// hold the writer forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// A batch is written when it has this many records…
pub const BATCH_MAX: usize = 500;
/// …or this long after its first record arrived.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// Retry backoff while the store fails: doubles from the first to the last. The last is short:
/// a retry costs one failed connection attempt, and it bounds how long the records that waited
/// through an outage wait once the store is back.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1));
/// On shutdown, how long the writer may keep writing (and retrying a store that is down)
/// before what is left goes to the spill file: the process must exit near its grace period.
pub const SHUTDOWN_WRITE: Duration = Duration::from_secs(3);

/// Why a batch did not land.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct WriteError {
    pub message: String,
    /// The store refused the data itself (retrying the same records can never work), as
    /// opposed to being unavailable.
    pub data: bool,
}

pub type WriteFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<(String, f64)>, WriteError>> + Send + 'a>>;

/// Where batches go: the store in production, a fake in tests.
pub trait BatchSink: Send + Sync {
    /// Writes the whole batch or nothing; returns the new balance of every app charged.
    fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a>;
}

impl BatchSink for Store {
    fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
        Box::pin(async move {
            self.record_calls(batch).await.map_err(|e| WriteError {
                data: e.is_data_error(),
                message: e.to_string(),
            })
        })
    }
}

/// Told about every batch written: the cost charged per app and the new balances.
pub trait Flushed: Send + Sync {
    fn flushed(&self, charged: &[(String, f64)], balances: &[(String, f64)]);
}

/// The sending side, shared by every call.
pub struct Queue {
    tx: mpsc::Sender<CallRecord>,
    overflow: Mutex<Overflow>,
    /// [`OVERFLOW_BYTES`] (smaller in tests).
    overflow_bytes: usize,
    wake: Notify,
    /// A whole batch waits in the channel: the writer need not wait for [`FLUSH_EVERY`].
    batch_ready: Notify,
}

impl Queue {
    /// A queue and the receiver its writer reads.
    pub fn new() -> (Arc<Queue>, mpsc::Receiver<CallRecord>) {
        Queue::bounded(OVERFLOW_BYTES)
    }

    fn bounded(overflow_bytes: usize) -> (Arc<Queue>, mpsc::Receiver<CallRecord>) {
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        (
            Arc::new(Queue {
                tx,
                overflow: Mutex::new(Overflow::default()),
                overflow_bytes,
                wake: Notify::new(),
                batch_ready: Notify::new(),
            }),
            rx,
        )
    }

    /// Queues one record without blocking.
    pub fn push(&self, record: CallRecord) {
        LOG_METRICS.queue_depth.fetch_add(1, Relaxed);
        let record = match self.tx.try_send(record) {
            Ok(()) => {
                if self.tx.max_capacity() - self.tx.capacity() >= BATCH_MAX {
                    self.batch_ready.notify_one();
                }
                return;
            }
            Err(TrySendError::Full(r) | TrySendError::Closed(r)) => r,
        };
        let size = approx_size(&record);
        let kept = match self.overflow.lock() {
            Ok(mut o)
                if o.records.len() < OVERFLOW_LIMIT && o.bytes + size <= self.overflow_bytes =>
            {
                o.bytes += size;
                o.records.push_back(record);
                true
            }
            _ => false,
        };
        if kept {
            LOG_METRICS.overflowed.fetch_add(1, Relaxed);
            self.wake.notify_one();
        } else {
            LOG_METRICS.queue_depth.fetch_sub(1, Relaxed);
            let n = LOG_METRICS.dropped.fetch_add(1, Relaxed);
            // One line per 1000 drops: a log flood would only make the overload worse.
            if n.is_multiple_of(1000) {
                tracing::error!(
                    dropped = n + 1,
                    records = OVERFLOW_LIMIT,
                    bytes = self.overflow_bytes,
                    "call log overflow buffer full: call records dropped (llmux_call_log_dropped_total)"
                );
            }
        }
    }

    fn take_overflow(&self, batch: &mut Vec<CallRecord>) {
        if let Ok(mut o) = self.overflow.lock() {
            while batch.len() < BATCH_MAX {
                match o.records.pop_front() {
                    Some(r) => {
                        o.bytes = o.bytes.saturating_sub(approx_size(&r));
                        batch.push(r);
                    }
                    None => break,
                }
            }
        }
    }

    fn overflow_is_empty(&self) -> bool {
        self.overflow.lock().map_or(true, |o| o.records.is_empty())
    }
}

/// The records waiting beyond the channel, and their size by [`approx_size`].
#[derive(Default)]
struct Overflow {
    records: VecDeque<CallRecord>,
    bytes: usize,
}

/// About how much memory `r` holds: its texts plus a fixed share for the rest.
fn approx_size(r: &CallRecord) -> usize {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    512 + r.request_id.len()
        + r.requested_model.len()
        + text(&r.request_body)
        + text(&r.response_body)
        + r.attempt_log.len() * 96
}

/// The writer task: runs until `stop` is cancelled, then drains the queue and returns. What the
/// store cannot take within [`SHUTDOWN_WRITE`] of the stop goes to `spill` (when there is one),
/// for the next start to replay.
pub async fn run(
    queue: Arc<Queue>,
    mut rx: mpsc::Receiver<CallRecord>,
    sink: Arc<dyn BatchSink>,
    flushed: Arc<dyn Flushed>,
    stop: CancellationToken,
    spill: Option<PathBuf>,
) {
    let mut batch: Vec<CallRecord> = Vec::with_capacity(BATCH_MAX);
    let mut backoff = BACKOFF.0;
    let mut give_up_at: Option<tokio::time::Instant> = None;
    let mut outage = Outage::default();
    loop {
        let stopping = stop.is_cancelled();
        if batch.is_empty() {
            // The overflow first: its records are waiting already, and no wake-up may be left
            // for them (a `Notify` keeps one permit however many records were pushed).
            queue.take_overflow(&mut batch);
        }
        if batch.is_empty() && !stopping {
            // Wait for the first record of the next batch.
            tokio::select! {
                r = rx.recv() => if let Some(r) = r { batch.push(r) },
                () = queue.wake.notified() => {}
                () = stop.cancelled() => {}
            }
        }
        fill(&queue, &mut rx, &mut batch, &stop).await;
        queue.take_overflow(&mut batch);
        if batch.is_empty() {
            if stop.is_cancelled() && rx.is_empty() && queue.overflow_is_empty() {
                return;
            }
            continue;
        }
        // Once stopping, the drain is bounded: a store that is down (or hangs) must not hold
        // the process past its grace period; what is left goes to the spill file.
        if stop.is_cancelled() && give_up_at.is_none() {
            // Quick retries again: a store that only blinked still gets its records.
            backoff = BACKOFF.0;
            give_up_at = Some(tokio::time::Instant::now() + SHUTDOWN_WRITE);
        }
        match write_isolating(&*sink, &mut batch, &*flushed, &stop, &mut give_up_at).await {
            Ok(()) => {
                backoff = BACKOFF.0;
                outage.over();
            }
            Err(e) => {
                LOG_METRICS.write_errors.fetch_add(1, Relaxed);
                outage.failed(&e, backoff);
                let out_of_time =
                    give_up_at.is_some_and(|at| tokio::time::Instant::now() + backoff >= at);
                if stop.is_cancelled() && out_of_time {
                    spill_the_rest(&queue, &mut rx, batch, spill.as_deref()).await;
                    return;
                }
                // A stop ends the wait: the shutdown's bounded drain starts at once.
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled(), if !stop.is_cancelled() => {}
                }
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// The store being unavailable to the writer: logged once when it starts and once when it
/// ends, not at every retry (a retry a second for an hour would be 3,600 lines).
#[derive(Default)]
struct Outage {
    since: Option<tokio::time::Instant>,
    failures: u64,
}

impl Outage {
    fn failed(&mut self, e: &WriteError, retry_in: Duration) {
        self.failures += 1;
        let waiting = LOG_METRICS.queue_depth.load(Relaxed);
        if self.since.is_none() {
            self.since = Some(tokio::time::Instant::now());
            tracing::warn!(
                error = %e,
                waiting,
                buffer = BUFFER_RECORDS,
                ?retry_in,
                "call log: the store is unavailable; call records wait in memory (up to {BUFFER_RECORDS}, \
                 then they are dropped and counted in llmux_call_log_dropped_total) and are \
                 written when it is back"
            );
        } else {
            tracing::debug!(error = %e, waiting, ?retry_in, "call log write failed again; retrying");
        }
    }

    fn over(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                lasted = ?since.elapsed(),
                failed_writes = self.failures,
                waiting = LOG_METRICS.queue_depth.load(Relaxed),
                dropped_total = LOG_METRICS.dropped.load(Relaxed),
                "call log: the store is back; writing the records that waited"
            );
            self.failures = 0;
        }
    }
}

/// Adds to a started batch what arrives within [`FLUSH_EVERY`], up to [`BATCH_MAX`]; once
/// stopping, only what is queued already.
///
/// The writer sleeps through the interval and takes what queued meanwhile, woken early only
/// when a whole batch waits ([`Queue::push`] says so): taking records one by one as they came
/// woke this task (and a thread of the main runtime) once per call, from every thread serving
/// calls — a cross-thread wake-up per call for a write that happens ten times a second.
async fn fill(
    queue: &Queue,
    rx: &mut mpsc::Receiver<CallRecord>,
    batch: &mut Vec<CallRecord>,
    stop: &CancellationToken,
) {
    let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
    loop {
        while batch.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        queue.take_overflow(batch);
        if batch.len() >= BATCH_MAX
            || batch.is_empty()
            || stop.is_cancelled()
            || tokio::time::Instant::now() >= deadline
        {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            () = queue.batch_ready.notified() => {}
            () = stop.cancelled() => {}
        }
    }
}

/// Out of time at shutdown: `batch`, the channel and the overflow go to the spill file.
async fn spill_the_rest(
    queue: &Queue,
    rx: &mut mpsc::Receiver<CallRecord>,
    mut batch: Vec<CallRecord>,
    spill: Option<&Path>,
) {
    rx.close();
    while let Ok(r) = rx.try_recv() {
        batch.push(r);
    }
    if let Ok(mut o) = queue.overflow.lock() {
        o.bytes = 0;
        batch.extend(o.records.drain(..));
    }
    spill_at_shutdown(spill, batch).await;
}

/// Writes `batch`, isolating records the store refuses for their data: a batch that fails for
/// a data reason is split in halves until the bad record stands alone; that one is stored
/// sanitised, or set aside (counted, logged) when even that fails — so one bad record can
/// never stop the log. On an error that is not about data (store down, `deadline` passed)
/// the records not yet written are left in `batch` for the caller to retry.
async fn write_isolating(
    sink: &dyn BatchSink,
    batch: &mut Vec<CallRecord>,
    flushed: &dyn Flushed,
    stop: &CancellationToken,
    give_up_at: &mut Option<tokio::time::Instant>,
) -> Result<(), WriteError> {
    let settle = |part: &[CallRecord], balances: &[(String, f64)]| {
        LOG_METRICS
            .queue_depth
            .fetch_sub(part.len() as u64, Relaxed);
        flushed.flushed(&charges(part), balances);
    };
    // A stack: the last part is written next, so records keep their order.
    let mut parts = vec![std::mem::take(batch)];
    while let Some(mut part) = parts.pop() {
        let failed = match write_by(sink, &part, stop, give_up_at).await {
            Ok(balances) => {
                settle(&part, &balances);
                continue;
            }
            Err(e) if e.data && part.len() > 1 => {
                let second = part.split_off(part.len() / 2);
                parts.push(second);
                parts.push(part);
                continue;
            }
            Err(e) if e.data => {
                LOG_METRICS.rejected.fetch_add(1, Relaxed);
                let clean = part.iter().map(CallRecord::sanitised).collect::<Vec<_>>();
                match write_by(sink, &clean, stop, give_up_at).await {
                    Ok(balances) => {
                        tracing::warn!(request_id = %clean[0].request_id, error = %e.message, "call record refused by the store; stored sanitised");
                        settle(&clean, &balances);
                        continue;
                    }
                    Err(again) if again.data => {
                        tracing::error!(request_id = %clean[0].request_id, error = %again.message, "call record refused by the store even sanitised; set aside");
                        LOG_METRICS.queue_depth.fetch_sub(1, Relaxed);
                        continue;
                    }
                    Err(again) => again,
                }
            }
            Err(e) => e,
        };
        // Not the data's fault: keep what is left, in order, for the caller's retry.
        batch.append(&mut part);
        for mut p in parts.into_iter().rev() {
            batch.append(&mut p);
        }
        return Err(failed);
    }
    Ok(())
}

/// One write. Once the writer is stopping it is abandoned (as not done: its transaction rolls
/// back) at `give_up_at`; a write that hangs when the stop comes (a store that does not answer)
/// gets [`SHUTDOWN_WRITE`] from then.
async fn write_by(
    sink: &dyn BatchSink,
    part: &[CallRecord],
    stop: &CancellationToken,
    give_up_at: &mut Option<tokio::time::Instant>,
) -> Result<Vec<(String, f64)>, WriteError> {
    let mut fut = sink.write(part);
    let at = match *give_up_at {
        Some(at) => at,
        None => {
            tokio::select! {
                r = &mut fut => return r,
                () = stop.cancelled() => {}
                () = tokio::time::sleep(WRITE_TIMEOUT) => {
                    return Err(WriteError {
                        message: format!("the store did not finish the write within {WRITE_TIMEOUT:?}"),
                        data: false,
                    });
                }
            }
            *give_up_at.insert(tokio::time::Instant::now() + SHUTDOWN_WRITE)
        }
    };
    tokio::time::timeout_at(at, fut).await.unwrap_or_else(|_| {
        Err(WriteError {
            message: "the store did not answer before the shutdown deadline".into(),
            data: false,
        })
    })
}

/// Name of the spill file, in the data directory.
pub const SPILL_FILE: &str = "call-log-spill.jsonl";

/// Where records the store could not take at shutdown are kept: beside the SQLite database, or
/// in `llmux-data/` for PostgreSQL. `None` for an in-memory database (nothing would replay it).
pub fn spill_file(url: &str) -> Option<PathBuf> {
    llmux_store::data_dir(url).map(|dir| dir.join(SPILL_FILE))
}

/// Appends `records` to the spill file (JSON lines, mode 0600), or reports them lost.
async fn spill_at_shutdown(path: Option<&Path>, records: Vec<CallRecord>) {
    if records.is_empty() {
        return;
    }
    let n = records.len();
    LOG_METRICS.queue_depth.fetch_sub(n as u64, Relaxed);
    let Some(path) = path else {
        tracing::error!(
            records = n,
            "shutting down with the store unavailable and no spill file (in-memory store): call records lost"
        );
        return;
    };
    let owned = path.to_path_buf();
    let written = tokio::task::spawn_blocking(move || append_jsonl(&owned, &records)).await;
    match written {
        Ok(Ok(())) => {
            LOG_METRICS.spilled.fetch_add(n as u64, Relaxed);
            tracing::warn!(records = n, file = %path.display(), "store unavailable at shutdown: call records spilled; the next start writes them");
        }
        Ok(Err(e)) => {
            tracing::error!(records = n, file = %path.display(), error = %e, "cannot write the spill file: call records lost")
        }
        Err(e) => tracing::error!(records = n, error = %e, "spill task failed: call records lost"),
    }
}

fn append_jsonl(path: &Path, records: &[CallRecord]) -> std::io::Result<()> {
    use std::io::Write as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // Records name apps, keys and client addresses (and bodies when logged).
        options.mode(0o600);
    }
    let file = options.open(path)?;
    let mut out = std::io::BufWriter::new(file);
    for r in records {
        serde_json::to_writer(&mut out, r)?;
        out.write_all(b"\n")?;
    }
    out.flush()?;
    out.get_ref().sync_all()
}

/// Writes the records a previous run spilled, then removes the file. Records the store refuses
/// for their data are isolated like the writer's; when the store fails otherwise, the records
/// not written stay in the file for the next start. Returns how many were written.
pub async fn replay_spill(sink: &dyn BatchSink, flushed: &dyn Flushed, path: &Path) -> usize {
    let text = match tokio::fs::read_to_string(path).await {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
        Err(e) => {
            tracing::error!(file = %path.display(), error = %e, "cannot read the call-log spill file");
            return 0;
        }
    };
    let mut records = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str::<CallRecord>(line) {
            Ok(r) => records.push(r),
            // A line cut by a crash mid-write: the rest of the file is still good.
            Err(e) => {
                tracing::warn!(error = %e, "unreadable line in the call-log spill file; skipped")
            }
        }
    }
    let total = records.len();
    LOG_METRICS.queue_depth.fetch_add(total as u64, Relaxed);
    let mut written = 0;
    let mut rest = records.into_iter();
    loop {
        let mut batch: Vec<CallRecord> = rest.by_ref().take(BATCH_MAX).collect();
        if batch.is_empty() {
            break;
        }
        let n = batch.len();
        let never = CancellationToken::new();
        if let Err(e) = write_isolating(sink, &mut batch, flushed, &never, &mut None).await {
            batch.extend(rest);
            LOG_METRICS
                .queue_depth
                .fetch_sub(batch.len() as u64, Relaxed);
            let kept = batch.len();
            let owned = path.to_path_buf();
            let tmp = path.with_extension("jsonl.tmp");
            let rewrite = tokio::task::spawn_blocking(move || {
                append_jsonl(&tmp, &batch)?;
                std::fs::rename(&tmp, &owned)
            })
            .await;
            tracing::error!(file = %path.display(), error = %e, written, kept, ok = matches!(rewrite, Ok(Ok(()))), "cannot replay the call-log spill file now; the rest stays for the next start");
            return written;
        }
        written += n;
    }
    if let Err(e) = tokio::fs::remove_file(path).await {
        tracing::error!(file = %path.display(), error = %e, "cannot remove the replayed spill file (its records would be written twice)");
    }
    tracing::info!(records = written, file = %path.display(), "call records spilled at the last shutdown written");
    written
}

/// Cost per app in a batch.
fn charges(batch: &[CallRecord]) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = Vec::new();
    for r in batch {
        let (Some(app), Some(cost)) = (&r.app_id, r.cost) else {
            continue;
        };
        match out.iter_mut().find(|(a, _)| a == app) {
            Some((_, c)) => *c += cost,
            None => out.push((app.clone(), cost)),
        }
    }
    out
}

/// A gateway record in the store's shape.
pub fn to_store(r: llmux_gateway::accounting::CallRecord) -> CallRecord {
    let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    CallRecord {
        created_at: r.created_at,
        request_id: r.request_id,
        call_id: Some(llmux_store::new_call_id()),
        app_id: r.app_id,
        virtual_key_id: r.virtual_key_id,
        dialect: r.dialect,
        requested_model: r.requested_model,
        upstream: r.upstream,
        upstream_model: r.upstream_model,
        provider_key_id: r.provider_key_id,
        status: i64::from(r.status),
        error_class: r.error_class,
        attempts: i64::from(r.attempts),
        latency_ms: i(r.latency_ms),
        ttft_ms: r.ttft_ms.map(i),
        input_tokens: Some(i(r.tokens.input)),
        output_tokens: Some(i(r.tokens.output)),
        tokens_estimated: r.tokens.estimated,
        cost: Some(r.cost),
        client_ip: r.client_ip,
        request_body: r.request_body,
        response_body: r.response_body,
        chunks: r.chunks.map(i),
        reported_model: r.reported_model,
        attempt_log: r
            .attempt_log
            .into_iter()
            .map(|a| llmux_store::Attempt {
                upstream: a.upstream,
                key_id: a.key_id,
                status: a.status,
                error_class: a.error_class,
                ms: a.ms,
            })
            .collect(),
        stream: r.stream,
        hook: r.hook,
        cache_hit: r.cache_hit,
        cached_tokens: Some(i(r.tokens.cached)),
        cache_write_tokens: Some(i(r.tokens.cache_write)),
        reasoning_tokens: Some(i(r.tokens.reasoning)),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Fails its first `fail` writes, then keeps every batch.
    struct Flaky {
        fail: AtomicUsize,
        written: Mutex<Vec<CallRecord>>,
    }

    impl BatchSink for Flaky {
        fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
            Box::pin(async move {
                if self
                    .fail
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(WriteError {
                        message: "store unavailable".into(),
                        data: false,
                    });
                }
                self.written.lock().unwrap().extend_from_slice(batch);
                Ok(Vec::new())
            })
        }
    }

    struct Nobody;
    impl Flushed for Nobody {
        fn flushed(&self, _: &[(String, f64)], _: &[(String, f64)]) {}
    }

    fn record(i: usize) -> CallRecord {
        to_store(llmux_gateway::accounting::CallRecord {
            request_id: format!("req-{i}"),
            requested_model: "m".into(),
            ..Default::default()
        })
    }

    #[tokio::test(start_paused = true)]
    async fn survives_a_store_that_is_down_for_a_while_and_loses_nothing() {
        let (queue, rx) = Queue::new();
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(6),
            written: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop.clone(),
            None,
        ));
        // More than the channel holds, while the store is down: the overflow takes the rest.
        let n = CHANNEL_CAPACITY + 2_345;
        for i in 0..n {
            queue.push(record(i));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(sink.written.lock().unwrap().len(), n);
        for i in n..n + 10 {
            queue.push(record(i));
        }
        stop.cancel();
        task.await.unwrap();
        let written = sink.written.lock().unwrap();
        assert_eq!(written.len(), n + 10);
        let mut ids: Vec<&str> = written.iter().map(|r| r.request_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n + 10, "no record written twice");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_drains_what_is_queued() {
        let (queue, rx) = Queue::new();
        let sink = Arc::new(Flaky {
            fail: AtomicUsize::new(2),
            written: Mutex::new(Vec::new()),
        });
        let stop = CancellationToken::new();
        for i in 0..1234 {
            queue.push(record(i));
        }
        stop.cancel();
        run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop,
            None,
        )
        .await;
        assert_eq!(sink.written.lock().unwrap().len(), 1234);
    }

    /// Refuses, like PostgreSQL, any batch holding a NUL byte in a text field.
    struct NoNul {
        written: Mutex<Vec<CallRecord>>,
        down: std::sync::atomic::AtomicBool,
    }

    impl BatchSink for NoNul {
        fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
            Box::pin(async move {
                if self.down.load(Ordering::SeqCst) {
                    return Err(WriteError {
                        message: "connection refused".into(),
                        data: false,
                    });
                }
                if batch.iter().any(|r| r.requested_model.contains('\0')) {
                    return Err(WriteError {
                        message: "invalid byte sequence for encoding \"UTF8\": 0x00".into(),
                        data: true,
                    });
                }
                self.written.lock().unwrap().extend_from_slice(batch);
                Ok(Vec::new())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_bad_record_does_not_stop_the_log() {
        let (queue, rx) = Queue::new();
        let sink = Arc::new(NoNul {
            written: Mutex::new(Vec::new()),
            down: Default::default(),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop.clone(),
            None,
        ));
        let rejected = LOG_METRICS.rejected.load(Relaxed);
        for i in 0..300 {
            let mut r = record(i);
            if i == 123 {
                r.requested_model = "bad\0model".into();
            }
            queue.push(r);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        for i in 300..310 {
            queue.push(record(i));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        {
            let written = sink.written.lock().unwrap();
            assert_eq!(written.len(), 310, "every record, the bad one sanitised");
            let bad = written.iter().find(|r| r.request_id == "req-123").unwrap();
            assert_eq!(bad.requested_model, "badmodel");
        }
        assert!(LOG_METRICS.rejected.load(Relaxed) > rejected);
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_long_backoff_still_spills_within_the_bound() {
        let dir = std::env::temp_dir().join(format!("llmux-spill-b-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(SPILL_FILE);
        let (queue, rx) = Queue::new();
        let sink = Arc::new(NoNul {
            written: Mutex::new(Vec::new()),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop.clone(),
            Some(path.clone()),
        ));
        for i in 0..50 {
            queue.push(record(i));
        }
        // Long enough for the backoff to reach its cap.
        tokio::time::sleep(Duration::from_secs(20)).await;
        stop.cancel();
        let stopped = tokio::time::Instant::now();
        task.await.unwrap();
        assert!(
            stopped.elapsed() <= SHUTDOWN_WRITE,
            "{:?}",
            stopped.elapsed()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 50);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Never answers, as a store behind a dead network link does.
    struct Hangs;
    impl BatchSink for Hangs {
        fn write<'a>(&'a self, _: &'a [CallRecord]) -> WriteFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_hangs_when_the_stop_comes_is_spilled_within_the_bound() {
        let dir = std::env::temp_dir().join(format!("llmux-spill-h-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(SPILL_FILE);
        let (queue, rx) = Queue::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::new(Hangs),
            Arc::new(Nobody),
            stop.clone(),
            Some(path.clone()),
        ));
        for i in 0..20 {
            queue.push(record(i));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.cancel();
        let stopped = tokio::time::Instant::now();
        task.await.unwrap();
        assert!(
            stopped.elapsed() <= SHUTDOWN_WRITE,
            "{:?}",
            stopped.elapsed()
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 20);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The store itself, but the answer of the first `lose` writes is lost after the commit
    /// landed (a connection cut just after the server took the COMMIT).
    struct LostAnswers {
        store: Store,
        lose: AtomicUsize,
    }

    impl BatchSink for LostAnswers {
        fn write<'a>(&'a self, batch: &'a [CallRecord]) -> WriteFuture<'a> {
            Box::pin(async move {
                let written = BatchSink::write(&self.store, batch).await;
                if self
                    .lose
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    return Err(WriteError {
                        message: "connection reset after COMMIT".into(),
                        data: false,
                    });
                }
                written
            })
        }
    }

    /// Real time: SQLite works on threads of its own, which paused time would not wait for.
    #[tokio::test]
    async fn a_batch_retried_after_its_answer_was_lost_is_written_and_charged_once() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        let app = store
            .create_app(&llmux_store::NewApp {
                name: "a".into(),
                credits: Some(10.0),
                daily_budget: None,
                monthly_budget: None,
            })
            .await
            .unwrap();
        let sink = Arc::new(LostAnswers {
            store: store.clone(),
            lose: AtomicUsize::new(3),
        });
        let (queue, rx) = Queue::new();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop.clone(),
            None,
        ));
        let records: Vec<CallRecord> = (0..1200)
            .map(|i| CallRecord {
                app_id: Some(app.id.clone()),
                cost: Some(0.001),
                ..record(i)
            })
            .collect();
        for r in &records {
            queue.push(r.clone());
        }
        for _ in 0..100 {
            if sink.lose.load(Ordering::SeqCst) == 0 && queue.tx.capacity() == CHANNEL_CAPACITY {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.cancel();
        task.await.unwrap();
        assert_eq!(sink.lose.load(Ordering::SeqCst), 0, "three answers lost");
        assert_eq!(store.count_calls().await.unwrap(), 1200, "each record once");
        let credits = || async { store.get_app(&app.id).await.unwrap().credits.unwrap() };
        assert!((credits().await - 8.8).abs() < 1e-9, "{}", credits().await);

        // A spill file holding records that are in already (a write abandoned at shutdown
        // whose commit landed) adds nothing when replayed.
        let dir = tempfile_dir("lost");
        let path = dir.join(SPILL_FILE);
        append_jsonl(&path, &records[..700]).unwrap();
        replay_spill(&store, &Nobody, &path).await;
        assert_eq!(store.count_calls().await.unwrap(), 1200);
        assert!((credits().await - 8.8).abs() < 1e-9, "{}", credits().await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir(what: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("llmux-spill-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn the_overflow_is_bounded_in_bytes_too_and_what_it_drops_is_counted() {
        let (queue, _rx) = Queue::bounded(64 * 1024);
        for i in 0..CHANNEL_CAPACITY {
            queue.push(record(i));
        }
        let dropped = LOG_METRICS.dropped.load(Relaxed);
        for i in 0..10 {
            queue.push(CallRecord {
                request_body: Some("x".repeat(16 * 1024)),
                ..record(i)
            });
        }
        // 64 KiB hold three records of about 16.5 KiB; the seven others are dropped, counted.
        assert_eq!(queue.overflow.lock().unwrap().records.len(), 3);
        assert_eq!(LOG_METRICS.dropped.load(Relaxed) - dropped, 7);
    }

    #[tokio::test(start_paused = true)]
    async fn store_down_at_shutdown_spills_and_the_next_start_replays() {
        let dir = std::env::temp_dir().join(format!("llmux-spill-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join(SPILL_FILE);
        let (queue, rx) = Queue::new();
        let sink = Arc::new(NoNul {
            written: Mutex::new(Vec::new()),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        for i in 0..500 {
            queue.push(record(i));
        }
        let stop = CancellationToken::new();
        stop.cancel();
        let started = tokio::time::Instant::now();
        run(
            Arc::clone(&queue),
            rx,
            Arc::clone(&sink) as Arc<dyn BatchSink>,
            Arc::new(Nobody),
            stop,
            Some(path.clone()),
        )
        .await;
        assert!(started.elapsed() <= SHUTDOWN_WRITE);
        assert!(sink.written.lock().unwrap().is_empty());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        sink.down.store(false, Ordering::SeqCst);
        let n = replay_spill(&*sink, &Nobody, &path).await;
        assert_eq!(n, 500);
        assert_eq!(sink.written.lock().unwrap().len(), 500);
        assert!(!path.exists(), "a replayed file is removed");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
