//! Benchmark client for llmux's `bench/run`.
//!
//! `stream`: runs SSE streams against one target and records, per stream, the time to the
//! first SSE event (TTFT) and every gap between consecutive events. Events are delimited on
//! the SSE level (a blank line, `\n\n` or `\r\n\r\n`), not on TCP reads, so a proxy that
//! coalesces or splits writes shows up as gap distortion rather than being hidden by it.
//!
//! `hold`: opens N streams at once, waits until every one of them has delivered its first
//! event (so it is open end to end), counts them, reads VmRSS (and the open descriptor
//! count) of the given processes while they are all open, writes the result and exits,
//! which closes them all.
//!
//! Both write one JSON document (raw samples in microseconds) to `--out`. Every loop is
//! bounded by a count and by `--timeout`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{Notify, Semaphore};

#[derive(Parser)]
#[command(
    name = "bench-client",
    about = "llmux benchmark client (SSE timings, held-open streams)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run streams and record TTFT and inter-event gaps.
    Stream(StreamArgs),
    /// Hold N streams open at once and read the RSS of processes meanwhile.
    Hold(HoldArgs),
}

#[derive(Args, Clone)]
struct Target {
    /// URL to POST to (e.g. http://127.0.0.1:4000/v1/chat/completions).
    #[arg(long)]
    url: String,
    /// Request body (JSON).
    #[arg(long)]
    body: String,
    /// Extra request header, `name: value`; repeatable.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Where to write the JSON result.
    #[arg(long)]
    out: PathBuf,
    /// Hard limit for the whole command, in seconds.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
}

#[derive(Args)]
struct StreamArgs {
    #[command(flatten)]
    target: Target,
    /// Number of streams to run.
    #[arg(long, default_value_t = 20)]
    streams: usize,
    /// Streams in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Streams run (and discarded) before measuring, all at once (use the concurrency).
    #[arg(long, default_value_t = 4)]
    warmup: usize,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    target: Target,
    /// Number of streams to hold open at once.
    #[arg(long, default_value_t = 5000)]
    streams: usize,
    /// Streams being opened at once (connect + headers + first event).
    #[arg(long, default_value_t = 256)]
    open_concurrency: usize,
    /// Processes whose VmRSS is summed (e.g. nginx master and workers); repeatable.
    #[arg(long = "pid")]
    pids: Vec<u32>,
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&format!("tokio runtime: {e}")),
    };
    let (target, result) = match cli.cmd {
        Cmd::Stream(a) => {
            let t = a.target.clone();
            (t, rt.block_on(run_stream(a)))
        }
        Cmd::Hold(a) => {
            let t = a.target.clone();
            (t, rt.block_on(run_hold(a)))
        }
    };
    // Dropping the runtime cancels whatever is still open (held streams) and closes sockets.
    rt.shutdown_timeout(Duration::from_secs(2));
    let value = match result {
        Ok(v) => v,
        Err(e) => fail(&e),
    };
    if let Err(e) = std::fs::write(&target.out, value.to_string()) {
        fail(&format!("write {}: {e}", target.out.display()));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("bench-client: {msg}");
    std::process::exit(1)
}

fn client(max_idle: usize) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(max_idle)
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("http client: {e}"))
}

fn request(c: &reqwest::Client, t: &Target) -> Result<reqwest::RequestBuilder, String> {
    let mut rb = c
        .post(&t.url)
        .header("content-type", "application/json")
        .body(t.body.clone());
    for h in &t.headers {
        let (k, v) = h
            .split_once(':')
            .ok_or_else(|| format!("bad header (want `name: value`): {h}"))?;
        rb = rb.header(k.trim(), v.trim());
    }
    Ok(rb)
}

/// Incremental SSE event splitter: feed bytes, get the number of complete events.
#[derive(Default)]
struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    /// Appends `chunk`; returns the complete events it finished (each with a `data:` line).
    fn feed(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        loop {
            let lf = find(&self.buf, b"\n\n").map(|i| (i, 2));
            let crlf = find(&self.buf, b"\r\n\r\n").map(|i| (i, 4));
            let cut = match (lf, crlf) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            let Some((i, n)) = cut else { break };
            let ev: Vec<u8> = self.buf.drain(..i + n).take(i).collect();
            // Comments (`: keep-alive`) and empty events are not events a client sees.
            if ev
                .split(|b| *b == b'\n')
                .any(|line| line.starts_with(b"data:"))
            {
                out.push(ev);
            }
        }
        out
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

struct StreamSample {
    ttft_us: u64,
    gaps_us: Vec<u64>,
    events: usize,
    total_us: u64,
    done: bool,
}

async fn one_stream(c: &reqwest::Client, t: &Target) -> Result<StreamSample, String> {
    let rb = request(c, t)?;
    let t0 = Instant::now();
    let resp = rb.send().await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!(
            "status {status}: {}",
            body.chars().take(200).collect::<String>()
        ));
    }
    let mut body = resp.bytes_stream();
    let mut sp = Splitter::default();
    let mut times: Vec<Instant> = Vec::with_capacity(128);
    let mut done = false;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body after {} events: {e}", times.len()))?;
        let now = Instant::now();
        for ev in sp.feed(&chunk) {
            if find(&ev, b"[DONE]").is_some() {
                done = true;
            }
            times.push(now);
        }
    }
    let end = Instant::now();
    let Some(first) = times.first() else {
        return Err("stream ended without an SSE event".into());
    };
    let ttft_us = micros(first.duration_since(t0));
    let gaps_us = times
        .windows(2)
        .map(|w| micros(w[1].duration_since(w[0])))
        .collect();
    Ok(StreamSample {
        ttft_us,
        gaps_us,
        events: times.len(),
        total_us: micros(end.duration_since(t0)),
        done,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn run_stream(a: StreamArgs) -> Result<Value, String> {
    let t = Arc::new(a.target);
    let deadline = Instant::now() + Duration::from_secs_f64(t.timeout);
    let c = client(a.concurrency.max(1))?;
    // Warm-up streams run concurrently, so the client's and the target's connection pools hold
    // `concurrency` live connections before measuring: TTFT is then the warm path, as for a
    // client that keeps its connections (connection set-up is not what this measures).
    let warm = (0..a.warmup).map(|_| {
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, one_stream(&c, &t))
    });
    for r in futures_util::future::join_all(warm).await {
        match r {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("warm-up stream failed: {e}")),
            Err(_) => return Err("timed out in warm-up".into()),
        }
    }
    let started = Instant::now();
    let sem = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let mut tasks = Vec::with_capacity(a.streams);
    for _ in 0..a.streams {
        let permit = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            sem.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(permit)) = permit else { break };
        let (c, t) = (c.clone(), t.clone());
        tasks.push(tokio::spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::time::timeout(left, one_stream(&c, &t)).await;
            drop(permit);
            r.unwrap_or_else(|_| Err("timed out".into()))
        }));
    }
    let (mut ttft, mut gaps, mut events, mut totals) = (vec![], vec![], vec![], vec![]);
    let (mut failed, mut no_done) = (0usize, 0usize);
    let mut errors: Vec<String> = vec![];
    for task in tasks {
        match task.await {
            Ok(Ok(s)) => {
                ttft.push(s.ttft_us);
                gaps.extend(s.gaps_us);
                events.push(s.events);
                totals.push(s.total_us);
                if !s.done {
                    no_done += 1;
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(e);
                }
            }
            Err(e) => {
                failed += 1;
                if errors.len() < 5 {
                    errors.push(format!("task: {e}"));
                }
            }
        }
    }
    Ok(json!({
        "mode": "stream",
        "url": t.url,
        "requested": a.streams,
        "concurrency": a.concurrency,
        "ok": ttft.len(),
        "failed": failed,
        "without_done": no_done,
        "errors": errors,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "ttft_us": ttft,
        "gaps_us": gaps,
        "events": events,
        "total_us": totals,
    }))
}

/// VmRSS in KiB of one process, from /proc/PID/status.
fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// What the `hold` streams share: the gate on opening, and the counts the run reports.
struct Hold {
    opening: Arc<Semaphore>,
    /// Streams past their first event and not ended.
    open_now: AtomicUsize,
    ever_open: AtomicUsize,
    ended_early: AtomicUsize,
    failed: AtomicUsize,
    progress: Notify,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Hold {
    fn note_error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 5 {
                v.push(e);
            }
        }
    }
}

/// Reads one stream to its first event (then it counts as open and frees its opening slot),
/// then on until it ends; `is_open` says whether it got that far.
async fn hold_stream(
    c: &reqwest::Client,
    t: &Target,
    h: &Hold,
    is_open: &mut bool,
) -> Result<(), String> {
    let permit = h
        .opening
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| e.to_string())?;
    let resp = request(c, t)?
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()));
    }
    let mut body = resp.bytes_stream();
    let mut sp = Splitter::default();
    let mut seen = 0usize;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        seen += sp.feed(&chunk).len();
        if seen > 0 {
            *is_open = true;
            drop(permit);
            h.open_now.fetch_add(1, Ordering::SeqCst);
            h.ever_open.fetch_add(1, Ordering::SeqCst);
            h.progress.notify_one();
            // Keep reading below: the stream stays open until it ends or we exit.
            break;
        }
    }
    if !*is_open {
        return Err("ended before its first event".into());
    }
    while let Some(chunk) = body.next().await {
        chunk.map_err(|e| format!("body: {e}"))?;
    }
    Ok(())
}

/// One `hold` stream until it ends or `deadline`, counted in `h`.
async fn hold_one(c: reqwest::Client, t: Arc<Target>, h: Arc<Hold>, deadline: Instant) {
    let mut is_open = false;
    let left = deadline.saturating_duration_since(Instant::now());
    let r = tokio::time::timeout(left, hold_stream(&c, &t, &h, &mut is_open)).await;
    if r.is_ok() && is_open {
        // Ended (by the upstream or an error) after it was open: no longer open.
        h.open_now.fetch_sub(1, Ordering::SeqCst);
        h.ended_early.fetch_add(1, Ordering::SeqCst);
    }
    if let Ok(Err(e)) = r {
        if !is_open {
            h.failed.fetch_add(1, Ordering::SeqCst);
        }
        h.note_error(e);
    }
    h.progress.notify_one();
}

async fn run_hold(a: HoldArgs) -> Result<Value, String> {
    let t = Arc::new(a.target);
    let deadline = Instant::now() + Duration::from_secs_f64(t.timeout);
    let c = client(0)?;
    let h = Arc::new(Hold {
        opening: Arc::new(Semaphore::new(a.open_concurrency.max(1))),
        open_now: AtomicUsize::new(0),
        ever_open: AtomicUsize::new(0),
        ended_early: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        progress: Notify::new(),
        errors: std::sync::Mutex::new(Vec::new()),
    });
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.streams)
        .map(|_| tokio::spawn(hold_one(c.clone(), t.clone(), h.clone(), deadline)))
        .collect();
    // Wait (bounded) until every stream is open, or nothing more can happen.
    loop {
        let open = h.ever_open.load(Ordering::SeqCst);
        let dead = h.failed.load(Ordering::SeqCst);
        if open + dead >= a.streams || Instant::now() >= deadline {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let _ =
            tokio::time::timeout(left.min(Duration::from_millis(200)), h.progress.notified()).await;
    }
    let open_elapsed = started.elapsed().as_secs_f64();
    // Let the last accepted streams settle in the gateway before reading memory.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open_at_sample = h.open_now.load(Ordering::SeqCst);
    let per_pid: Vec<Value> = a
        .pids
        .iter()
        .map(|p| json!({"pid": p, "rss_kib": rss_kib(*p), "fds": fd_count(*p)}))
        .collect();
    let rss_total: u64 = a.pids.iter().filter_map(|p| rss_kib(*p)).sum();
    let fds_total: usize = a.pids.iter().filter_map(|p| fd_count(*p)).sum();
    let open_after = h.open_now.load(Ordering::SeqCst);
    let errs = h.errors.lock().map(|v| v.clone()).unwrap_or_default();
    for task in &tasks {
        task.abort();
    }
    Ok(json!({
        "mode": "hold",
        "url": t.url,
        "requested": a.streams,
        "opened": h.ever_open.load(Ordering::SeqCst),
        "open_at_sample": open_at_sample,
        "open_after_sample": open_after,
        "ended_early": h.ended_early.load(Ordering::SeqCst),
        "failed": h.failed.load(Ordering::SeqCst),
        "errors": errs,
        "seconds_to_open": open_elapsed,
        "rss_kib": rss_total,
        "fds": fds_total,
        "processes": per_pid,
    }))
}

#[cfg(test)]
mod tests {
    use super::Splitter;

    #[test]
    fn splits_on_blank_lines_not_reads() {
        let mut sp = Splitter::default();
        assert_eq!(sp.feed(b"data: {\"a\"").len(), 0);
        assert_eq!(sp.feed(b":1}\n\ndata: x\n\nda").len(), 2);
        assert_eq!(sp.feed(b"ta: [DONE]\r\n\r\n: ping\n\n").len(), 1);
        assert!(sp.buf.is_empty());
    }
}
