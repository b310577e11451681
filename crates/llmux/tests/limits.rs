//! End-to-end: rate limits per key (requests, tokens, concurrency), per client IP before
//! authentication, and shared through Redis by two instances, surviving a Redis outage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::time::Duration;

async fn admin_post(gw: &Llmux, path: &str, body: Value) -> Value {
    let resp = client()
        .post(gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201, "{path}");
    resp.json().await.unwrap()
}

/// A virtual key of a fresh app, with `limits`.
async fn key_with(gw: &Llmux, app: &str, limits: Value) -> String {
    admin_post(gw, "/apps", json!({ "name": app })).await;
    let k = admin_post(
        gw,
        "/keys",
        json!({ "name": format!("{app}-key"), "app": app, "limits": limits }),
    )
    .await;
    k["key"].as_str().unwrap().to_string()
}

async fn chat_call(gw: &Llmux, key: &str) -> reqwest::Response {
    client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat("llama3", false))
        .send()
        .await
        .unwrap()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// A random private address, so runs sharing one Redis never share a counter.
fn random_ip() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        ^ u64::from(std::process::id()) << 20;
    format!("10.{}.{}.{}", (n >> 16) % 256, (n >> 8) % 256, n % 256)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sixth_call_on_a_key_limited_to_five_gets_429() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}",
        ollama("gpu-a", &a.url())
    ));
    let key = key_with(&gw, "five", json!({ "rpm": 5 })).await;
    for left in (0..5).rev() {
        let r = chat_call(&gw, &key).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-requests"), "5");
        assert_eq!(
            header(&r, "x-ratelimit-remaining-requests"),
            left.to_string()
        );
        assert!(!header(&r, "x-ratelimit-reset-requests").is_empty());
    }
    let r = chat_call(&gw, &key).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = header(&r, "retry-after").parse().unwrap();
    assert!((1..=12).contains(&retry), "{retry}");
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "5");
    assert_eq!(header(&r, "x-ratelimit-remaining-requests"), "0");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // The Anthropic dialect gets its own error shape.
    let one = key_with(&gw, "anthropic", json!({ "rpm": 1 })).await;
    let messages = json!({ "model": "llama3", "max_tokens": 16,
        "messages": [{ "role": "user", "content": "hi" }] });
    let send = || {
        client()
            .post(gw.url("/v1/messages"))
            .header("x-api-key", &one)
            .header("anthropic-version", "2023-06-01")
            .json(&messages)
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 200);
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "retry-after").is_empty());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");

    // Tokens per minute: the estimate (body bytes / 4 + max_tokens) is charged at admission.
    let tokens = key_with(&gw, "tokens", json!({ "tpm": 1000 })).await;
    let big = json!({ "model": "llama3", "max_tokens": 700,
        "messages": [{ "role": "user", "content": "hi" }] });
    let send = || {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&tokens)
            .json(&big)
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-tokens"), "1000");
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "x-ratelimit-reset-tokens").is_empty());

    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "llmux_rejections_total{layer=\"key_rpm\"}"),
        Some(2.0)
    );
    assert_eq!(
        metric(&m, "llmux_rejections_total{layer=\"key_tpm\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "llmux_ratelimit_backend_up{backend=\"memory\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_keys_is_limited_per_ip_before_authentication() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n[limits]\nip = \"10/min\"\n{}",
        ollama("gpu-a", &a.url())
    ));
    for _ in 0..10 {
        let r = chat_call(&gw, "sk-llmux-nope-nope").await;
        assert_eq!(r.status(), 401);
    }
    let r = chat_call(&gw, "sk-llmux-nope-nope").await;
    assert_eq!(r.status(), 429);
    assert!(!header(&r, "retry-after").is_empty());
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "10");
    // Probes are never limited.
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "llmux_rejections_total{layer=\"ip\"}"),
        Some(1.0)
    );
    // The ten wrong keys were refused by authentication.
    assert_eq!(
        metric(&m, "llmux_rejections_total{layer=\"auth\"}"),
        Some(10.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_two_with_three_slow_streams() {
    let mut cfg = node("slow", &["llama3:latest"]);
    cfg.chunk_delay = Duration::from_millis(150);
    cfg.chunks = 6;
    let a = llmux_mock::MockServer::start(cfg).await.unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}",
        ollama("slow", &a.url())
    ));
    let key = key_with(&gw, "two", json!({ "concurrency": 2 })).await;
    let stream = || {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat("llama3", true))
            .send()
    };
    let first = stream().await.unwrap();
    let second = stream().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = stream().await.unwrap();
    assert_eq!(third.status(), 429);
    assert_eq!(header(&third, "retry-after"), "1");
    // One stream finishes: its slot is free again.
    let mut body = first.bytes_stream();
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
    }
    eventually(
        Duration::from_secs(2),
        "a new call is admitted once a stream ended",
        async || stream().await.unwrap().status() == 200,
    )
    .await;
    drop(second);
    let m = metrics_text(&gw).await;
    assert!(metric(&m, "llmux_rejections_total{layer=\"key_concurrency\"}").unwrap() >= 1.0);
}

fn shared_redis() -> Option<String> {
    let url = std::env::var("LLMUX_TEST_REDIS_URL").ok();
    if url.is_none() {
        eprintln!("LLMUX_TEST_REDIS_URL is not set: skipping the Redis test");
    }
    url
}

async fn call_from(gw: &Llmux, ip: &str) -> u16 {
    client()
        .post(gw.url("/v1/chat/completions"))
        .header("x-forwarded-for", ip)
        .json(&chat("llama3", false))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sharing_redis_admit_exactly_the_limit() {
    let Some(redis) = shared_redis() else { return };
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let body = format!(
        "[limits]\nip = \"10/min\"\ntrust_forwarded_for = true\nbackend = \"redis\"\nredis_url = \"{redis}\"\n{}",
        ollama("gpu-a", &a.url())
    );
    let one = Llmux::start(&body);
    let two = Llmux::start(&body);
    let ip = random_ip();
    let mut admitted = 0;
    for i in 0..30 {
        let gw = if i % 2 == 0 { &one } else { &two };
        if call_from(gw, &ip).await == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 10);
    let m = metrics_text(&one).await;
    assert_eq!(
        metric(&m, "llmux_ratelimit_backend_up{backend=\"redis\"}"),
        Some(1.0)
    );
}

/// A `redis-server` of this test's own, without persistence, on a Unix socket (Redis cannot
/// take a TCP port from the OS); [`tcp_to`] puts it on one.
struct OwnRedis {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl OwnRedis {
    async fn start(socket: &std::path::Path) -> Option<OwnRedis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(socket)
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let r = OwnRedis {
            child,
            socket: socket.to_path_buf(),
        };
        poll_until(Duration::from_secs(2), async || {
            tokio::net::UnixStream::connect(socket).await.is_ok()
        })
        .await?;
        Some(r)
    }

    fn exists(&self, key: &str) -> bool {
        let out = std::process::Command::new("redis-cli")
            .arg("-s")
            .arg(&self.socket)
            .args(["exists", key])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Forwards connections to a TCP port from the OS to the Unix `socket`, whether or not a
/// server is there: the port stays this test's while Redis stops and starts behind it.
async fn tcp_to(socket: std::path::PathBuf) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let socket = socket.clone();
            tokio::spawn(async move {
                // No server: the connection is closed at once, as a refused one would be.
                if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                    let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_run_fails_open_and_is_used_again_when_back() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let Some(redis) = OwnRedis::start(&socket).await else {
        eprintln!("redis-server is not installed: skipping the Redis outage test");
        return;
    };
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[limits]\nip = \"3/min\"\ntrust_forwarded_for = true\nbackend = \"redis\"\nredis_url = \"redis://{}\"\n{}",
        tcp_to(socket.clone()).await,
        ollama("gpu-a", &a.url())
    ));
    assert_eq!(call_from(&gw, "10.0.0.1").await, 200);
    assert!(redis.exists("llmux:v1:rl:ip:10.0.0.1"), "counted in Redis");

    drop(redis);
    // Redis is gone: calls are still served, on local counters (which limit as configured).
    let statuses: Vec<u16> =
        futures_util::future::join_all((0..4).map(|_| call_from(&gw, "10.0.0.2"))).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        3,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        1,
        "{statuses:?}"
    );
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "llmux_ratelimit_backend_up{backend=\"redis\"}"),
        Some(0.0)
    );
    assert!(gw.log_text().contains("rate-limit backend unreachable"));

    // Back at the same address: the probe notices, and counters go to Redis again.
    let redis = OwnRedis::start(&socket)
        .await
        .expect("redis-server restarts");
    let up = poll_until(Duration::from_secs(10), async || {
        let m = metrics_text(&gw).await;
        metric(&m, "llmux_ratelimit_backend_up{backend=\"redis\"}") == Some(1.0)
    })
    .await;
    assert!(
        up.is_some(),
        "the backend is seen up again: {}",
        gw.log_text()
    );
    assert_eq!(call_from(&gw, "10.0.0.3").await, 200);
    assert!(
        redis.exists("llmux:v1:rl:ip:10.0.0.3"),
        "counted in Redis again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_limit_within_a_key() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest", "mistral:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}",
        ollama("gpu-a", &a.url())
    ));
    let key = key_with(
        &gw,
        "per-model",
        json!({ "rpm": 100, "models": { "llama3": { "rpm": 1 } } }),
    )
    .await;
    let send = |model: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .json(&chat(model, false))
            .send()
    };
    assert_eq!(send("llama3").await.unwrap().status(), 200);
    let r = send("llama3:latest").await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "1");
    // Other models only answer to the key's own limit.
    let r = send("mistral").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-ratelimit-limit-requests"), "100");
    let m = metrics_text(&gw).await;
    assert_eq!(
        metric(&m, "llmux_rejections_total{layer=\"model\"}"),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presented_virtual_key_is_honoured_when_auth_is_not_required() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest", "qwen2:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = false\n{}",
        ollama("gpu-a", &a.url())
    ));
    let key = key_with(&gw, "open", json!({ "rpm": 1 })).await;
    // The key's limit applies although the key is not required...
    assert_eq!(chat_call(&gw, &key).await.status(), 200);
    assert_eq!(chat_call(&gw, &key).await.status(), 429);
    // ...a wrong llmux key is refused rather than served anonymously...
    assert_eq!(chat_call(&gw, "sk-llmux-nope-nope").await.status(), 401);
    // ...while calls with no llmux key (none, or an SDK's placeholder) stay anonymous.
    assert_eq!(chat_call(&gw, "ollama").await.status(), 200);
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("llama3", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A key limited to some models is held to them.
    let only = admin_post(
        &gw,
        "/keys",
        json!({ "name": "only-qwen", "app": "open", "models": ["qwen2"] }),
    )
    .await;
    let r = chat_call(&gw, only["key"].as_str().unwrap()).await;
    assert_eq!(r.status(), 403);
}

/// Behind a proxy, `X-Forwarded-For` is read from the right: the leftmost entries are the
/// client's own claim, so varying them does not buy new per-IP allowances, and the call log
/// records the address the proxy appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cannot_pick_its_own_address_in_x_forwarded_for() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[limits]\nip = \"3/min\"\ntrust_forwarded_for = true\ntrusted_proxies = [\"127.0.0.1\"]\n{}",
        ollama("gpu-a", &a.url())
    ));
    let key = key_with(&gw, "behind-proxy", json!({})).await;
    let mut admitted = 0;
    for i in 0..8 {
        let status = client()
            .post(gw.url("/v1/chat/completions"))
            .bearer_auth(&key)
            .header("x-forwarded-for", format!("198.51.100.{i}, 203.0.113.9"))
            .json(&chat("llama3", false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3);
    let mut polls = 0u32;
    let calls = poll_until(Duration::from_secs(10), async || {
        polls += 1;
        // The admin API is behind the per-IP limit too: each poll comes from a new address.
        let page: Value = client()
            .get(gw.url("/admin/v1/calls"))
            .header(
                "x-forwarded-for",
                format!("198.51.{}.{}", polls / 256, polls % 256),
            )
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let calls = page["calls"].as_array().cloned().unwrap_or_default();
        (!calls.is_empty()).then_some(calls)
    })
    .await
    .expect("the calls are recorded");
    for c in &calls {
        assert_eq!(c["client_ip"], "203.0.113.9", "{c}");
    }
}
