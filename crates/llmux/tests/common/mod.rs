//! Test harness: starts the real `llmux` binary on port 0 (it reports the port it got)
//! against in-process mock upstreams; `eventually` polls for what happens in the background,
//! and `Recorder` is an HTTP sink for webhooks and OTLP exports.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub mod cluster;

pub const ADMIN: &str = "test-admin-token";

/// A running `llmux serve`; killed on drop.
pub struct Llmux {
    pub child: Child,
    pub addr: SocketAddr,
    /// `http://ADDR`, or `https://ADDR` with `[server.tls]`.
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The working directory (holds the config file, and the SQLite store and master key by
    /// default); shared so that a restart finds the same state.
    pub dir: Arc<tempfile::TempDir>,
    /// Everything the config file has before the test's body: `[server]`, `[admin]`, `[store]`.
    pub header: String,
}

/// How to start `llmux serve`.
#[derive(Default, Clone)]
pub struct Opts {
    /// The config after the generated tables (upstreams, `[auth]`, …).
    pub body: String,
    /// Extra lines of `[server]`.
    pub server_extra: String,
    /// Extra lines of `[admin]` (e.g. `allow_private_upstreams = true`).
    pub admin_extra: String,
    /// `store.url`; default: a SQLite file in the working directory.
    pub store_url: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

impl Llmux {
    /// Writes `body` (the config without `[server]`) and starts the binary on a free port.
    pub fn start(body: &str) -> Llmux {
        Self::start_with_server(body, "")
    }

    pub fn start_with_server(body: &str, server_extra: &str) -> Llmux {
        Self::start_opts(Opts {
            body: body.to_string(),
            server_extra: server_extra.to_string(),
            ..Opts::default()
        })
    }

    pub fn start_opts(opts: Opts) -> Llmux {
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let store_url = opts
            .store_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}/data/llmux.db", dir.path().display()));
        let header = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n{}\n[admin]\ntoken = \"{ADMIN}\"\n{}\n[store]\nurl = \"{store_url}\"\n",
            opts.server_extra, opts.admin_extra
        );
        write_file(dir.path(), &header, &opts.body);
        Self::spawn_in(dir, header, &opts.env)
    }

    /// The config file.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("llmux.toml")
    }

    /// Rewrites the config file: the same header, a new body.
    pub fn write_config(&self, body: &str) {
        write_file(self.dir.path(), &self.header, body);
    }

    /// Stops this process and starts another on the same directory (config, store, key file).
    pub fn restart(mut self, env: &[(String, String)]) -> Llmux {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Self::spawn_in(Arc::clone(&self.dir), self.header.clone(), env)
    }

    /// Runs `llmux ARGS` in the working directory to completion: (success, stdout, stderr).
    pub fn run_cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("LLMUX_MASTER_KEY")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn spawn_in(dir: Arc<tempfile::TempDir>, header: String, env: &[(String, String)]) -> Llmux {
        let path = dir.path().join("llmux.toml");
        let mut child = Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .env("LLMUX_LOG", "info")
            .env_remove("LLMUX_MASTER_KEY")
            .envs(env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                // Plain text, or the message of a JSON log line (`LLMUX_LOG_FORMAT=json`).
                let json = serde_json::from_str::<serde_json::Value>(&line).ok();
                let text = json
                    .as_ref()
                    .and_then(|v| v["fields"]["message"].as_str())
                    .unwrap_or(&line);
                if let Some(rest) = text.strip_prefix("llmux listening on ") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let base: String = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("llmux did not start: {:#?}", log.lock().unwrap());
            }
        };
        let addr = base.split_once("://").unwrap().1.parse().unwrap();
        Llmux {
            child,
            addr,
            base,
            log,
            dir,
            header,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends the process `signal` (`"TERM"`, `"HUP"`, …) with `kill`.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args([format!("-{signal}").as_str(), &pid])
            .status()
            .unwrap()
            .success());
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// `GET /admin/v1/upstreams` as JSON.
    pub async fn upstreams(&self) -> serde_json::Value {
        client()
            .get(self.url("/admin/v1/upstreams"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Sum of `active_requests` over all upstreams.
    pub async fn in_flight(&self) -> u64 {
        self.upstreams()
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["active_requests"].as_u64().unwrap())
            .sum()
    }

    /// Waits until no call is in flight, up to `limit`; returns whether it got there.
    pub async fn wait_idle(&self, limit: Duration) -> bool {
        poll_until(limit, async || self.in_flight().await == 0)
            .await
            .is_some()
    }

    /// Waits until `n` calls are in flight (e.g. before a signal that must find them open).
    pub async fn wait_in_flight(&self, n: u64) {
        eventually(
            Duration::from_secs(10),
            &format!("{n} calls in flight"),
            async || self.in_flight().await >= n,
        )
        .await;
    }
}

/// What a poll in [`eventually`] returns: `true` or `Some(value)` once the wait is over.
pub trait Settled {
    type Out;
    fn settled(self) -> Option<Self::Out>;
}

impl Settled for bool {
    type Out = ();
    fn settled(self) -> Option<()> {
        self.then_some(())
    }
}

impl<T> Settled for Option<T> {
    type Out = T;
    fn settled(self) -> Option<T> {
        self
    }
}

/// Polls `check` every 20 ms until it settles (`true`, or `Some(value)`), for up to `limit`.
pub async fn poll_until<S: Settled>(
    limit: Duration,
    mut check: impl AsyncFnMut() -> S,
) -> Option<S::Out> {
    let until = Instant::now() + limit;
    loop {
        if let Some(out) = check().await.settled() {
            return Some(out);
        }
        if Instant::now() > until {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like [`poll_until`], but a wait that runs out fails the test, naming `what`.
pub async fn eventually<S: Settled>(
    limit: Duration,
    what: &str,
    check: impl AsyncFnMut() -> S,
) -> S::Out {
    match poll_until(limit, check).await {
        Some(out) => out,
        None => panic!("not within {limit:?}: {what}"),
    }
}

/// An HTTP server on a port from the OS that answers every request `204` and keeps each JSON
/// body: a webhook, or an OTLP/HTTP collector. Stops with the test's runtime.
pub struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(record(sock, Arc::clone(&sink)));
            }
        });
        Recorder { addr, seen }
    }

    /// `http://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The JSON bodies received so far, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// Serves one connection: reads requests (bodies by `Content-Length`), keeps the JSON ones.
async fn record(mut sock: tokio::net::TcpStream, sink: Arc<Mutex<Vec<Value>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        if buf.len() < head_end + 4 + len {
            continue;
        }
        let body = &buf[head_end + 4..head_end + 4 + len];
        if let Ok(v) = serde_json::from_slice::<Value>(body) {
            sink.lock().unwrap().push(v);
        }
        let _ = sock
            .write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            .await;
        buf.drain(..head_end + 4 + len);
    }
}

/// Writes `llmux.toml` in `dir`: header then body, replaced atomically as editors and config
/// management do (the watcher never reads half a file).
fn write_file(dir: &std::path::Path, header: &str, body: &str) {
    let tmp = dir.join("llmux.toml.tmp");
    std::fs::File::create(&tmp)
        .unwrap()
        .write_all(format!("{header}{body}").as_bytes())
        .unwrap();
    std::fs::rename(&tmp, dir.join("llmux.toml")).unwrap();
}

impl Drop for Llmux {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An admin API call with the bootstrap token: (status, JSON body or `Null`).
pub async fn admin(gw: &Llmux, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The gateway's `/metrics` page, as text.
pub async fn metrics_text(gw: &Llmux) -> String {
    client()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An `[[upstreams]]` block for an Ollama node.
pub fn ollama(name: &str, url: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nkind = \"ollama\"\nurl = \"{url}\"\n")
}

/// An `[[upstreams]]` block for an OpenAI-kind upstream (the mock serves `/v1`).
pub fn openai(name: &str, url: &str, key: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nkind = \"openai\"\nurl = \"{url}/v1\"\nkeys = [\"{key}\"]\n")
}

pub fn node(name: &str, models: &[&str]) -> llmux_mock::MockConfig {
    llmux_mock::MockConfig {
        name: name.to_string(),
        models: models.iter().map(|m| m.to_string()).collect(),
        ..llmux_mock::MockConfig::default()
    }
}

pub fn chat(model: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello there"}]
    })
}

/// `POST /v1/chat/completions` for `model` (see [`chat`]).
pub async fn post_chat(gw: &Llmux, model: &str, stream: bool) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model, stream))
        .send()
        .await
        .unwrap()
}

pub fn header(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// A fresh PostgreSQL schema for one test (`url` points llmux at it), dropped with this guard.
pub struct PgSchema {
    base: String,
    pub name: String,
    pub url: String,
}

impl PgSchema {
    /// `None` when `LLMUX_TEST_POSTGRES_URL` is unset: the test runs on SQLite only.
    pub async fn create(prefix: &str) -> Option<PgSchema> {
        use sqlx::Connection as _;
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let base = std::env::var("LLMUX_TEST_POSTGRES_URL")
            .ok()
            .filter(|b| !b.is_empty())?;
        let name = format!(
            "{prefix}_{}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos(),
            SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mut c = sqlx::PgConnection::connect(&base).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut c)
            .await
            .unwrap();
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-csearch_path%3D{name}");
        Some(PgSchema { base, name, url })
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        use sqlx::Connection as _;
        let (base, name) = (self.base.clone(), self.name.clone());
        // Its own runtime on its own thread: drop may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(mut c) = sqlx::PgConnection::connect(&base).await {
                    let sql = format!("DROP SCHEMA IF EXISTS {name} CASCADE");
                    let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut c).await;
                }
            });
        })
        .join();
    }
}
