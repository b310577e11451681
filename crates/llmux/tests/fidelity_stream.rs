//! End-to-end (issue #17, response side): what the upstream says reaches the client whole or
//! visibly broken — a stream the upstream ends cleanly without its final event ends with the
//! client dialect's error event (translated or passed through) and is logged as an error.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The four upstream kinds, each a mock serving one model: (kind, model, url suffix).
const KINDS: [(&str, &str, &str); 4] = [
    ("ollama", "llama3:latest", ""),
    ("openai", "gpt-4o-mini", "/v1"),
    ("anthropic", "claude-sonnet-4", ""),
    ("gemini", "gemini-2.0-flash", ""),
];

/// Mocks of every kind with `faults`, and the config blocks naming them.
async fn upstreams(faults: llmux_mock::Faults) -> (Vec<llmux_mock::MockServer>, String) {
    let mut mocks = Vec::new();
    let mut blocks = String::new();
    for (kind, model, suffix) in KINDS {
        let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
            faults: faults.clone(),
            chunks: 6,
            ..node(&format!("{kind}-up"), &[model])
        })
        .await
        .unwrap();
        blocks.push_str(&format!(
            "[[upstreams]]\nname = \"{kind}-up\"\nkind = \"{kind}\"\nurl = \"{}{suffix}\"\nkeys = [\"k\"]\n",
            m.url()
        ));
        mocks.push(m);
    }
    (mocks, blocks)
}

/// A streamed chat call of `client`'s dialect for `model`: (path, body).
fn stream_call(client: &str, model: &str) -> (String, Value) {
    let messages = json!([{"role": "user", "content": "hello there"}]);
    match client {
        "openai" => (
            "/v1/chat/completions".into(),
            json!({"model": model, "stream": true, "messages": messages}),
        ),
        "anthropic" => (
            "/v1/messages".into(),
            json!({"model": model, "stream": true, "max_tokens": 200, "messages": messages}),
        ),
        "ollama" => (
            "/api/chat".into(),
            json!({"model": model, "stream": true, "messages": messages}),
        ),
        _ => (
            format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
            json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}),
        ),
    }
}

/// The last event (SSE `data:` / NDJSON line) of a stream, and whether the text shows the
/// client dialect's mark of a whole answer.
fn last_and_whole(client: &str, text: &str) -> (Value, bool) {
    let datas: Vec<&str> = text
        .lines()
        .map(|l| l.strip_prefix("data:").unwrap_or(l).trim())
        .filter(|l| !l.is_empty() && !l.starts_with("event:"))
        .collect();
    let last = datas
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    let whole = match client {
        "openai" => text.contains("[DONE]") || text.contains("\"finish_reason\":\""),
        "anthropic" => text.contains("message_stop") || text.contains("\"stop_reason\":\""),
        "ollama" => text.contains("\"done\":true"),
        _ => text.contains("finishReason"),
    };
    (last, whole)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_upstream_ends_early_ends_with_an_error_in_every_dialect() {
    let faults = llmux_mock::Faults {
        truncate_after: Some(3),
        ..llmux_mock::Faults::default()
    };
    let (_mocks, blocks) = upstreams(faults).await;
    let gw = Llmux::start(&blocks);
    let mut calls = 0;
    for (kind, model, _) in KINDS {
        for client in ["openai", "anthropic", "ollama", "gemini"] {
            let (path, body) = stream_call(client, model);
            let resp = client_post(&gw, &path, &body).await;
            assert_eq!(resp.status(), 200, "{client} → {kind}");
            let text = resp.text().await.unwrap();
            let (last, whole) = last_and_whole(client, &text);
            assert!(!whole, "{client} → {kind}: reads as whole:\n{text}");
            let err = &last["error"];
            assert!(!err.is_null(), "{client} → {kind}: no error last:\n{text}");
            let message = err.get("message").unwrap_or(err).to_string();
            assert!(
                message.contains("final event"),
                "{client} → {kind}: {message}"
            );
            calls += 1;
        }
    }
    // The call log records each as an upstream error, not a success.
    let rows = eventually(Duration::from_secs(15), "every call logged", async || {
        let (s, page) = admin(&gw, "GET", "/calls?limit=100", None).await;
        assert_eq!(s, 200, "{page}");
        let rows = page["calls"].as_array().cloned().unwrap_or_default();
        (rows.len() >= calls).then_some(rows)
    })
    .await;
    for row in rows {
        assert_eq!(row["error_class"], "upstream_error", "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_streams_still_end_cleanly_in_every_dialect() {
    let (_mocks, blocks) = upstreams(llmux_mock::Faults::default()).await;
    let gw = Llmux::start(&blocks);
    for (kind, model, _) in KINDS {
        for client in ["openai", "anthropic", "ollama", "gemini"] {
            let (path, body) = stream_call(client, model);
            let resp = client_post(&gw, &path, &body).await;
            assert_eq!(resp.status(), 200, "{client} → {kind}");
            let text = resp.text().await.unwrap();
            let (last, whole) = last_and_whole(client, &text);
            assert!(whole, "{client} → {kind}:\n{text}");
            assert!(last.get("error").is_none(), "{client} → {kind}:\n{text}");
        }
    }
}

async fn client_post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}
