//! In-process harness: the gateway and its mock upstreams on the test's own runtime.
//!
//! Meant for `#[tokio::test(start_paused = true)]`: timeouts, cooldowns, breaker windows and
//! probe intervals then elapse in virtual time, which tokio advances whenever every task is
//! waiting on a timer. That holds only while everything runs on the test's (current-thread)
//! runtime and nothing waits outside it: the gateway, the mocks and the client here all do,
//! and upstream URLs are `127.0.0.1` literals (no DNS on a blocking thread).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use llmux_gateway::Gateway;
use llmux_mock::{MockConfig, MockServer};
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A gateway serving HTTP on 127.0.0.1 (a port from the OS); stopped on drop.
pub struct Gw {
    pub gw: Arc<Gateway>,
    pub addr: SocketAddr,
    client: reqwest::Client,
    cancel: CancellationToken,
}

impl Gw {
    /// Builds the gateway from `toml` (a whole config file), probes its upstreams once, starts
    /// the prober and serves, as `llmux serve` does.
    pub async fn start(toml: &str) -> Gw {
        let config = llmux_config::Config::from_toml_str(toml, &|_| None).unwrap();
        let gw = Gateway::new(config).unwrap();
        let tasks = TaskTracker::new();
        let cancel = CancellationToken::new();
        gw.start(&tasks, cancel.clone()).await;
        gw.probed_once().await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (serving, stop) = (Arc::clone(&gw), cancel.clone());
        tokio::spawn(async move {
            let shutdown = async move { stop.cancelled().await };
            serving
                .serve(listener, None, shutdown, axum::Router::new(), None)
                .await
                .unwrap();
        });
        let client = reqwest::Client::builder()
            // Virtual time: a call that never ends fails the test instead of hanging it.
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap();
        Gw {
            gw,
            addr,
            client,
            cancel,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// A POST with extra headers.
    pub fn request(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path))
    }

    /// The upstream named `name` in the routing snapshot in force.
    pub fn upstream(&self, name: &str) -> Arc<llmux_gateway::upstream::Upstream> {
        let routes = self.gw.routes();
        Arc::clone(routes.upstream(name).unwrap())
    }

    /// The state of key `i` of upstream `name`.
    pub fn key(&self, name: &str, i: usize) -> llmux_gateway::keys::KeyState {
        self.upstream(name).keys.state(i)
    }

    /// The state of key `i` of upstream `name`: "ok", "cooling" or "disabled".
    pub fn key_state(&self, name: &str, i: usize) -> &'static str {
        self.key(name, i).as_str()
    }

    /// The breaker of upstream `name`: "closed", "open" or "half_open".
    pub fn breaker(&self, name: &str) -> &'static str {
        self.upstream(name).breaker.state().as_str()
    }

    /// Calls in flight over all upstreams.
    pub fn in_flight(&self) -> usize {
        self.gw
            .routes()
            .upstreams
            .iter()
            .map(|u| u.active_requests())
            .sum()
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Polls `check` every 10 ms (virtual) until it holds; panics with `what` after `limit`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < until, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn mock(cfg: MockConfig) -> MockServer {
    MockServer::start(cfg).await.unwrap()
}

pub fn node(name: &str, models: &[&str]) -> MockConfig {
    MockConfig {
        name: name.to_string(),
        models: models.iter().map(|m| m.to_string()).collect(),
        ..MockConfig::default()
    }
}

/// An `[[upstreams]]` block for an Ollama node; `extra` lines go inside it (e.g. `timeouts`).
pub fn ollama(name: &str, up: &MockServer, extra: &str) -> String {
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"ollama\"\nurl = \"{}\"\n{extra}\n",
        up.url()
    )
}

/// An `[[upstreams]]` block for an OpenAI-kind upstream with `keys` (the mock serves `/v1`).
pub fn openai(name: &str, up: &MockServer, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [{}]\n",
        up.url(),
        keys.join(", ")
    )
}

pub fn chat(model: &str, stream: bool) -> Value {
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

/// Requests `up` received with `key`.
pub fn hits(up: &MockServer, key: &str) -> u64 {
    up.stats().by_key.get(key).copied().unwrap_or(0)
}
