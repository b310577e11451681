//! Test harness: starts the real `llmux` binary on port 0 against in-process mock upstreams.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const ADMIN: &str = "test-admin-token";

/// A running `llmux serve`; killed on drop.
pub struct Llmux {
    pub child: Child,
    pub addr: SocketAddr,
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
                if let Some(rest) = text.strip_prefix("llmux listening on http://") {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(rest.trim().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(a) => a.parse().unwrap(),
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                std::thread::sleep(Duration::from_millis(100));
                panic!("llmux did not start: {:#?}", log.lock().unwrap());
            }
        };
        Llmux {
            child,
            addr,
            log,
            dir,
            header,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
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
        let until = std::time::Instant::now() + limit;
        loop {
            if self.in_flight().await == 0 {
                return true;
            }
            if std::time::Instant::now() > until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
