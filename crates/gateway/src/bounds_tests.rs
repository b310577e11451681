//! In-process tests of the call path's bounds: whole answers read with an idle timeout and a
//! size cap, and absurd durations that must not overflow the clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::call::{self, Endpoint};
use crate::Gateway;
use axum::body::Body;
use axum::extract::Request;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What a scripted upstream does once it has read a request.
#[derive(Clone)]
enum Script {
    /// A complete OpenAI chat answer.
    Answer,
    /// Headers and the start of a body, then nothing (the connection stays open).
    Stall,
    /// A chunked body of `n` bytes (never a valid answer; its size is the point).
    Huge(usize),
    /// `Content-Length: n` announced, then nothing.
    Declares(u64),
}

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// A tiny HTTP/1.1 upstream that plays `script` on every connection; returns its base URL.
async fn upstream(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, script.clone()));
        }
    });
    format!("http://{addr}/v1")
}

async fn serve(mut conn: TcpStream, script: Script) {
    // Read the request head and its body (by Content-Length) before answering.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let json = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n";
    match script {
        Script::Answer => {
            let reply = format!("{json}content-length: {}\r\n\r\n{ANSWER}", ANSWER.len());
            let _ = conn.write_all(reply.as_bytes()).await;
        }
        Script::Stall => {
            let start = r#"{"id":"c1","object":"chat.completion","#;
            let reply = format!("{json}content-length: {}\r\n\r\n{start}", ANSWER.len());
            let _ = conn.write_all(reply.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Script::Huge(n) => {
            let _ = conn
                .write_all(format!("{json}transfer-encoding: chunked\r\n\r\n").as_bytes())
                .await;
            let piece = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < n {
                let len = piece.len().min(n - sent);
                let frame = [
                    format!("{len:x}\r\n").as_bytes(),
                    &piece[..len],
                    b"\r\n".as_slice(),
                ]
                .concat();
                if conn.write_all(&frame).await.is_err() {
                    return;
                }
                sent += len;
            }
            let _ = conn.write_all(b"0\r\n\r\n").await;
        }
        Script::Declares(n) => {
            let reply = format!("{json}content-length: {n}\r\n\r\n{{");
            let _ = conn.write_all(reply.as_bytes()).await;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}

/// A gateway whose upstreams (OpenAI kind, serving model `m`) are `urls`, in order.
fn gateway(urls: &[String], extra: &str) -> Arc<Gateway> {
    let mut text = format!("[routing]\nstrategy = \"round_robin\"\n{extra}\n");
    for (i, url) in urls.iter().enumerate() {
        text.push_str(&format!(
            "[[upstreams]]\nname = \"u{i}\"\nkind = \"openai\"\nurl = \"{url}\"\nmodels = [\"m\"]\ntimeouts = {{ first_byte = \"5s\", idle = \"300ms\" }}\n"
        ));
    }
    let config = llmux_config::Config::from_toml_str(&text, &|_| None).unwrap();
    Gateway::new(config).unwrap()
}

/// An Anthropic-dialect call: translated for the OpenAI-kind upstreams, answered whole.
async fn call(gw: &Arc<Gateway>) -> (u16, Option<String>, Value) {
    let body = r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
    let req = Request::builder()
        .method("POST")
        .uri("/v1/messages")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = tokio::time::timeout(
        Duration::from_secs(20),
        call::handle(Arc::clone(gw), Endpoint::AnthropicMessages, req),
    )
    .await
    .expect("the call must not hang on a stalled upstream");
    let status = resp.status().as_u16();
    let served_by = resp
        .headers()
        .get(crate::X_LLMUX_UPSTREAM)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (
        status,
        served_by,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn a_whole_answer_that_stalls_fails_at_the_idle_timeout_and_fails_over() {
    let stalled = upstream(Script::Stall).await;
    let gw = gateway(std::slice::from_ref(&stalled), "");
    let started = std::time::Instant::now();
    let (status, _, body) = call(&gw).await;
    assert_eq!(status, 502, "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("timeouts.idle"), "{message}");

    // Nothing reached the client yet: the next upstream answers instead.
    let good = upstream(Script::Answer).await;
    let gw = gateway(&[stalled, good], "");
    for _ in 0..2 {
        let (status, served_by, body) = call(&gw).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(served_by.as_deref(), Some("u1"));
        assert_eq!(body["content"][0]["text"], "hello");
    }
}

#[tokio::test]
async fn a_whole_answer_larger_than_max_upstream_body_is_refused_in_the_callers_dialect() {
    let huge = upstream(Script::Huge(4 << 20)).await;
    let gw = gateway(&[huge], "[server]\nmax_upstream_body = \"1MiB\"");
    let (status, _, body) = call(&gw).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["type"], "error", "Anthropic's error shape: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("server.max_upstream_body"), "{message}");
    assert!(message.contains("1048576"), "{message}");

    // A declared length past the limit is refused before a byte of the body is read.
    let declares = upstream(Script::Declares(10 << 30)).await;
    let gw = gateway(&[declares], "[server]\nmax_upstream_body = \"1MiB\"");
    let started = std::time::Instant::now();
    let (status, _, body) = call(&gw).await;
    assert_eq!(status, 502, "{body}");
    assert!(started.elapsed() < Duration::from_millis(250), "no waiting");

    // Within the limit, a normal answer passes.
    let good = upstream(Script::Answer).await;
    let gw = gateway(&[good], "[server]\nmax_upstream_body = \"1KiB\"");
    assert_eq!(call(&gw).await.0, 200);
}

#[tokio::test]
async fn the_prober_reads_a_listing_within_a_bound() {
    let huge = upstream(Script::Huge(20 << 20)).await;
    let gw = gateway(&[huge], "");
    let routes = gw.routes();
    crate::health::probe_some(&routes.upstreams, &routes.config).await;
    let state = routes.upstreams[0].state();
    assert_eq!(state.pool, crate::upstream::Pool::Standby);
    let error = state.last_error.clone().unwrap_or_default();
    assert!(error.contains("larger than 16777216 bytes"), "{error}");
}

/// Durations past any clock (a config built by hand skips validation) must not panic the
/// call path: not the first-byte deadline, not the relay's idle timer.
#[tokio::test]
async fn enormous_timeouts_do_not_overflow_the_clock() {
    let node = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        models: vec!["m:latest".into()],
        chunk_delay: Duration::from_millis(5),
        ..llmux_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let text = format!(
        "[[upstreams]]\nname = \"n\"\nkind = \"ollama\"\nurl = \"{}\"\nmodels = [\"m:latest\"]\n",
        node.url()
    );
    let mut config = llmux_config::Config::from_toml_str(&text, &|_| None).unwrap();
    config.upstreams[0].timeouts.first_byte = Duration::MAX;
    config.upstreams[0].timeouts.idle = Duration::MAX;
    let gw = Gateway::new(config).unwrap();
    let body = r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#;
    let req = Request::builder()
        .method("POST")
        .uri("/api/chat")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let resp = call::handle(Arc::clone(&gw), Endpoint::OllamaChat, req).await;
    assert_eq!(resp.status(), 200);
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("\"done\":true"));
}
