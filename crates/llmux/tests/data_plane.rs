//! End-to-end: the real binary against mock Ollama and OpenAI upstreams — endpoints, routing,
//! streaming, errors, admin state and metrics. Timing and failover cases run in process on
//! paused time: crates/gateway/tests/failover.rs.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::{json, Value};
use std::time::Duration;

async fn two_nodes_and_openai() -> (MockServer, MockServer, MockServer, Llmux) {
    let a = MockServer::start(node("gpu-a", &["llama3:latest", "nomic-embed-text:latest"]))
        .await
        .unwrap();
    let b = MockServer::start(node("gpu-b", &["llama3:latest", "mistral:latest"]))
        .await
        .unwrap();
    let mut oc = node("openai", &["gpt-4o-mini", "text-embedding-3-small"]);
    oc.api_key = Some("sk-provider".into());
    let o = MockServer::start(oc).await.unwrap();
    let cfg = format!(
        "{}{}{}",
        ollama("gpu-a", &a.url()),
        ollama("gpu-b", &b.url()),
        openai("openai", &o.url(), "sk-provider")
    );
    let gw = Llmux::start(&cfg);
    (a, b, o, gw)
}

async fn post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_endpoints_plain_and_streaming() {
    let (_a, b, o, gw) = two_nodes_and_openai().await;

    // Chat, not streaming, to an Ollama node through its /v1 API.
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
    assert_eq!(r.status(), 200);
    assert!(!header(&r, "x-request-id").is_empty());
    assert!(["gpu-a", "gpu-b"].contains(&header(&r, "x-llmux-upstream").as_str()));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    // Chat, streaming, to the OpenAI upstream: SSE ending in [DONE], with the provider key sent.
    let r = post(&gw, "/v1/chat/completions", &chat("gpt-4o-mini", true)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "openai");
    assert!(header(&r, "content-type").starts_with("text/event-stream"));
    let text = r.text().await.unwrap();
    assert!(text.contains("chat.completion.chunk"));
    assert!(text.trim_end().ends_with("data: [DONE]"));
    assert_eq!(
        o.stats().last_authorization.as_deref(),
        Some("Bearer sk-provider")
    );

    // Pinned to an upstream: the prefix is stripped before the upstream sees the body.
    let r = post(&gw, "/v1/chat/completions", &chat("gpu-b/llama3", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
    assert_eq!(b.stats().last_body.unwrap()["model"], "llama3");
    let r = post(
        &gw,
        "/v1/chat/completions",
        &chat("openai/gpt-4o-mini", false),
    )
    .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4o-mini");
    let seen = o.stats().last_body.unwrap();
    assert_eq!(seen["model"], "gpt-4o-mini");
    // Nothing but the model was touched.
    assert_eq!(seen["messages"], chat("x", false)["messages"]);

    // Legacy completions, both ways.
    let body = json!({"model": "llama3", "prompt": "say hi"});
    let r = post(&gw, "/v1/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    let body = json!({"model": "llama3", "prompt": "say hi", "stream": true});
    let text = post(&gw, "/v1/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"));

    // Embeddings.
    let body = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
    let v: Value = post(&gw, "/v1/embeddings", &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"].as_array().unwrap().len(), 2);

    // Models: the union, each once.
    let v: Value = client()
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "gpt-4o-mini",
            "llama3:latest",
            "mistral:latest",
            "nomic-embed-text:latest",
            "text-embedding-3-small"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_endpoints_plain_and_streaming() {
    let (a, b, _o, gw) = two_nodes_and_openai().await;

    // /api/chat streams NDJSON by default; the last line is done=true with counts.
    let r = post(
        &gw,
        "/api/chat",
        &json!({"model": "mistral", "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
    assert!(header(&r, "content-type").starts_with("application/x-ndjson"));
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines.last().unwrap()["eval_count"].as_u64().unwrap() > 0);

    // Non-streaming chat and generate.
    let v: Value = post(&gw, "/api/chat", &chat("llama3", false))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["done"], true);
    assert_eq!(v["message"]["role"], "assistant");
    let v: Value = post(
        &gw,
        "/api/generate",
        &json!({"model": "llama3", "prompt": "hi", "stream": false}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["done"], true);
    assert!(v["response"].as_str().unwrap().len() > 1);
    let text = post(
        &gw,
        "/api/generate",
        &json!({"model": "llama3:latest", "prompt": "hi"}),
    )
    .await
    .text()
    .await
    .unwrap();
    assert!(text.lines().count() > 2);

    // Embeddings, both generations of the API.
    let v: Value = post(
        &gw,
        "/api/embed",
        &json!({"model": "nomic-embed-text", "input": ["x", "y"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 2);
    let v: Value = post(
        &gw,
        "/api/embeddings",
        &json!({"model": "nomic-embed-text", "prompt": "x"}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert!(!v["embedding"].as_array().unwrap().is_empty());

    // /api/show goes to a node that has the model (older clients send `name`).
    let r = post(&gw, "/api/show", &json!({"name": "mistral"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
    let v: Value = r.json().await.unwrap();
    assert!(v.get("details").is_some());

    // Tags: every reachable model once — the Ollama nodes' own entries, then the other
    // upstreams' models (reached through translation).
    let v: Value = client()
        .get(gw.url("/api/tags"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut names: Vec<&str> = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "gpt-4o-mini",
            "llama3:latest",
            "mistral:latest",
            "nomic-embed-text:latest",
            "text-embedding-3-small"
        ]
    );
    let entry = v["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "llama3:latest")
        .unwrap();
    assert_eq!(
        entry["details"]["family"], "llama",
        "node entries are passed on as the node sent them"
    );

    // ps, version, banner.
    let v: Value = client()
        .get(gw.url("/api/ps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["models"].is_array());
    let v: Value = client()
        .get(gw.url("/api/version"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v["version"].as_str().unwrap().starts_with("0."));
    let text = client()
        .get(gw.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "Ollama is running");

    // Ollama-native calls reach the OpenAI-kind upstream too, translated both ways.
    let r = post(&gw, "/api/chat", &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "openai");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["done"], true);
    assert!(v["message"]["content"]
        .as_str()
        .unwrap()
        .contains("[openai]"));
    let v: Value = post(
        &gw,
        "/api/embed",
        &json!({"model": "text-embedding-3-small", "input": ["x"]}),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(v["embeddings"].as_array().unwrap().len(), 1);

    assert!(a.stats().generations + b.stats().generations >= 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_on_one_node_is_always_served_there() {
    let (a, b, _o, gw) = two_nodes_and_openai().await;
    for i in 0..12 {
        let stream = i % 2 == 0;
        let r = post(&gw, "/v1/chat/completions", &chat("mistral", stream)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "gpu-b");
        r.bytes().await.unwrap();
    }
    assert_eq!(a.stats().generations, 0);
    assert_eq!(b.stats().generations, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_in_the_callers_dialect() {
    let (_a, _b, _o, gw) = two_nodes_and_openai().await;
    let c = client();
    let send = |path: &str, body: &'static str, ct: &'static str| {
        c.post(gw.url(path))
            .header("content-type", ct)
            .body(body)
            .send()
    };

    // OpenAI shape: {"error":{"message","type","code"}}
    let r = send("/v1/chat/completions", "{not json", "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"));

    let r = send(
        "/v1/chat/completions",
        r#"{"messages":[]}"#,
        "application/json",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("model"));

    let r = send(
        "/v1/chat/completions",
        r#"{"model":"llama3"}"#,
        "text/plain",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("content type"));

    let r = post(&gw, "/v1/chat/completions", &chat("no-such-model", false)).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "model_not_found");

    // Ollama shape: {"error":"..."}
    let r = send("/api/chat", "[1,2", "application/json").await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    let r = post(
        &gw,
        "/api/generate",
        &json!({"model": "nope", "prompt": "x"}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("nope"));

    // Over server.max_body (32 MiB by default).
    let big = "x".repeat(33 * 1024 * 1024);
    let r = c
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(format!(r#"{{"model":"llama3","pad":"{big}"}}"#))
        .send()
        .await;
    // The server may answer 413 before reading the whole body; either way it is refused.
    if let Ok(r) = r {
        assert_eq!(r.status(), 413);
    }

    // Unknown route, admin without a token.
    let r = c.get(gw.url("/v1/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = c.get(gw.url("/admin/v1/upstreams")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Still serving after all of that.
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_upstreams_reports_state() {
    let mut ca = node("gpu-a", &["llama3:latest", "qwen2.5:0.5b"]);
    ca.loaded = vec!["llama3:latest".into()];
    let a = MockServer::start(ca).await.unwrap();
    let gw = Llmux::start(&ollama("gpu-a", &a.url()));
    let ups = gw.upstreams().await;
    let u = &ups[0];
    assert_eq!(u["name"], "gpu-a");
    assert_eq!(u["kind"], "ollama");
    assert_eq!(u["url"], a.url());
    assert_eq!(u["pool"], "active");
    assert!(u["latency_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(u["active_requests"], 0);
    assert_eq!(u["models"], json!(["llama3:latest", "qwen2.5:0.5b"]));
    assert_eq!(u["loaded_models"], json!(["llama3:latest"]));
    assert!(u["last_error"].is_null());

    let r = client().get(gw.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(gw.url("/admin/v1/upstreams"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_per_upstream_in_prometheus_text() {
    let (_a, b, _o, gw) = two_nodes_and_openai().await;
    for stream in [false, true, false] {
        let r = post(&gw, "/v1/chat/completions", &chat("mistral", stream)).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    // One call translated (Ollama client → OpenAI upstream) reports tokens.
    let r = post(&gw, "/api/chat", &chat("gpt-4o-mini", false)).await;
    assert_eq!(r.status(), 200);
    let r = post(&gw, "/v1/chat/completions", &chat("nope", false)).await;
    assert_eq!(r.status(), 404);
    assert!(gw.wait_idle(Duration::from_secs(1)).await);

    let r = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/plain; version=0.0.4"));
    let text = r.text().await.unwrap();
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no metric line {line_start} in:\n{text}"))
    };
    assert_eq!(
        value("llmux_calls_total{upstream=\"gpu-b\",endpoint=\"chat.completions\",outcome=\"ok\"}"),
        3.0
    );
    assert_eq!(
        value("llmux_call_duration_seconds_count{upstream=\"gpu-b\"}"),
        3.0
    );
    assert_eq!(value("llmux_ttft_seconds_count{upstream=\"gpu-b\"}"), 3.0);
    assert_eq!(value("llmux_upstream_up{upstream=\"gpu-a\"}"), 1.0);
    assert_eq!(value("llmux_upstream_in_flight{upstream=\"gpu-b\"}"), 0.0);
    assert_eq!(
        value("llmux_breaker_state{upstream=\"gpu-b\",state=\"closed\"}"),
        1.0
    );
    assert!(value("llmux_tokens_total{upstream=\"openai\",direction=\"output\"}") > 0.0);
    assert!(value("llmux_http_responses_total{class=\"4xx\"}") >= 1.0);
    assert!(value("llmux_http_responses_total{class=\"2xx\"}") >= 4.0);
    // Nothing per request or per key in the labels.
    assert!(!text.contains("req_"));
    assert_eq!(b.stats().generations, 3);
}

/// A forward proxy for the test: `CONNECT host:port` opens a tunnel; any other request (in
/// absolute form, as clients send to a proxy) is passed to the host its URI names. Counts both.
async fn forward_proxy() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if client.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let text = String::from_utf8_lossy(&head).to_string();
                let line = text.lines().next().unwrap_or_default().to_string();
                let mut parts = line.split(' ');
                let (method, target) = (parts.next().unwrap(), parts.next().unwrap());
                log.lock().unwrap().push(format!("{method} {target}"));
                let host = match method {
                    "CONNECT" => target.to_string(),
                    _ => target
                        .trim_start_matches("http://")
                        .split('/')
                        .next()
                        .unwrap()
                        .to_string(),
                };
                let Ok(mut up) = tokio::net::TcpStream::connect(&host).await else {
                    return;
                };
                if method == "CONNECT" {
                    client
                        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                        .await
                        .unwrap();
                } else {
                    up.write_all(&head).await.unwrap();
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            });
        }
    });
    (url, seen)
}

/// Calls go through the proxy the environment names, as the probes do (through a `CONNECT`
/// tunnel for calls), and `NO_PROXY` exempts an upstream from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_go_through_the_environments_proxy() {
    let node = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let (proxy, seen) = forward_proxy().await;
    let gw = Llmux::start_opts(Opts {
        body: format!(
            "[health]\ninterval = \"60s\"\n{}",
            ollama("gpu-a", &node.url())
        ),
        env: vec![("HTTP_PROXY".into(), proxy.clone())],
        ..Opts::default()
    });
    let r = post_chat(&gw, "llama3", false).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let addr = node.url().trim_start_matches("http://").to_string();
    let log = seen.lock().unwrap().clone();
    assert!(
        log.contains(&format!("CONNECT {addr}")),
        "the call went through a tunnel at the proxy: {log:?}"
    );

    // Exempted by NO_PROXY: straight to the node.
    let (proxy, seen) = forward_proxy().await;
    let gw = Llmux::start_opts(Opts {
        body: format!(
            "[health]\ninterval = \"60s\"\n{}",
            ollama("gpu-a", &node.url())
        ),
        env: vec![
            ("HTTP_PROXY".into(), proxy),
            ("NO_PROXY".into(), "127.0.0.1".into()),
        ],
        ..Opts::default()
    });
    let r = post_chat(&gw, "llama3", false).await;
    assert_eq!(r.status(), 200);
    assert!(
        seen.lock().unwrap().is_empty(),
        "{:?}",
        seen.lock().unwrap()
    );
}
