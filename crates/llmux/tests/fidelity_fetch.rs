//! End-to-end (#17 items 10 and 11): what llmux does itself for a translated call — clients of
//! other dialects reach an Ollama node's native `/api/chat` when they send what only it carries
//! (`top_k`, `num_ctx`, `keep_alive`, `think`), and images given by URL to upstreams that take
//! only inline bytes are fetched (through the SSRF guard) and inlined, or refused with a 400.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::{json, Value};

/// An `[[upstreams]]` block with a static model list.
fn upstream(name: &str, kind: &str, url: &str, model: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nmodels = [\"{model}\"]\n")
}

async fn post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

/// How many calls `path` of `mock` has received.
fn calls(mock: &MockServer, path: &str) -> u64 {
    mock.stats().by_path.get(path).copied().unwrap_or(0)
}

async fn ollama_node() -> (MockServer, Llmux) {
    let m = MockServer::start(node("ol", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&upstream("ol", "ollama", &m.url(), "llama3:latest"));
    (m, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_keep_v1_unless_they_send_ollama_options() {
    let (m, gw) = ollama_node().await;
    // Nothing Ollama-only: the byte passthrough to /v1.
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    // What the OpenAI SDK sends with extra_body: native /api/chat, every option carried.
    let mut body = chat("llama3", false);
    body["top_k"] = json!(40);
    body["temperature"] = json!(0.3);
    body["options"] = json!({"num_ctx": 8192, "repeat_penalty": 1.1});
    body["keep_alive"] = json!("5m");
    body["reasoning_effort"] = json!("high");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("[ol]"));
    assert_eq!(calls(&m, "/api/chat"), 1);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(seen["model"], "llama3");
    assert_eq!(seen["options"]["top_k"], 40);
    assert_eq!(seen["options"]["num_ctx"], 8192);
    assert_eq!(seen["options"]["repeat_penalty"], 1.1);
    assert_eq!(seen["options"]["temperature"], 0.3);
    assert_eq!(seen["keep_alive"], "5m");
    assert_eq!(seen["think"], "high");
    assert_eq!(seen["messages"][0]["content"], "hello there");

    // Streamed, and a legacy completion (to /api/generate).
    let mut body = chat("llama3", true);
    body["options"] = json!({"num_ctx": 2048});
    let text = post(&gw, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(calls(&m, "/api/chat"), 2);
    assert_eq!(m.stats().last_body.unwrap()["options"]["num_ctx"], 2048);
    let body = json!({"model": "llama3", "prompt": "say hi", "keep_alive": 0});
    let r = post(&gw, "/v1/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(calls(&m, "/api/generate"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(
        (seen["prompt"].clone(), seen["keep_alive"].clone()),
        (json!("say hi"), json!(0))
    );

    // A bad value is the client's 400, naming the field.
    let mut body = chat("llama3", false);
    body["think"] = json!("max");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`think`"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_gemini_clients_reach_native_ollama_with_top_k_and_thinking() {
    let (m, gw) = ollama_node().await;
    // Plain Anthropic call: translated to /v1 as before.
    let plain = json!({"model": "llama3", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello"}]});
    let r = post(&gw, "/v1/messages", &plain).await;
    assert_eq!(r.status(), 200);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    // top_k was a 400 on /v1; thinking too. Now both reach /api/chat.
    let mut body = plain.clone();
    body["top_k"] = json!(12);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let r = post(&gw, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(calls(&m, "/api/chat"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(seen["options"]["top_k"], 12);
    assert_eq!(seen["options"]["num_predict"], 50);
    assert_eq!(seen["think"], true);
    // Streamed: Anthropic's SSE, from Ollama's NDJSON.
    body["stream"] = json!(true);
    let text = post(&gw, "/v1/messages", &body).await.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(calls(&m, "/api/chat"), 2);
    assert_eq!(m.stats().last_body.unwrap()["stream"], true);

    // Gemini's topK.
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"topK": 5}});
    let r = post(&gw, "/v1beta/models/llama3:generateContent", &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls(&m, "/api/chat"), 3);
    assert_eq!(m.stats().last_body.unwrap()["options"]["top_k"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_and_runner_options_are_refused_where_only_ollama_carries_them() {
    let m = MockServer::start(node("an", &["claude"])).await.unwrap();
    let gw = Llmux::start(&upstream("an", "anthropic", &m.url(), "claude"));
    let mut body = chat("claude", false);
    body["options"] = json!({"num_ctx": 8192});
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("options.num_ctx"),
        "{v}"
    );
    let mut body = chat("claude", false);
    body["reasoning_effort"] = json!("low");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    // keep_alive steers an Ollama runner only: elsewhere it is left out.
    let mut body = chat("claude", false);
    body["keep_alive"] = json!("5m");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert!(m.stats().last_body.unwrap().get("keep_alive").is_none());
    assert_eq!(m.stats().generations, 1);
}
