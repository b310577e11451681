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

/// A Gemini 429 whose body carries `RetryInfo` (and no `Retry-After` header).
fn gemini_throttled() -> llmux_mock::Scripted {
    llmux_mock::Scripted {
        dialect: Some("gemini".into()),
        status: 429,
        body: Some(
            json!({"error": {"code": 429, "message": "Resource has been exhausted",
                "status": "RESOURCE_EXHAUSTED", "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "13s"}]}})
            .to_string(),
        ),
        ..llmux_mock::Scripted::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gemini_retry_delay_reaches_every_client_as_retry_after_and_rests_the_key() {
    let (mocks, blocks) = upstreams(llmux_mock::Faults::default()).await;
    let gemini = &mocks[3];
    let gw = Llmux::start(&blocks);
    let mut last = std::time::Instant::now();
    for client in ["openai", "anthropic", "ollama", "gemini"] {
        gemini.script(vec![gemini_throttled()]);
        let (path, mut body) = stream_call(client, "gemini-2.0-flash");
        body["stream"] = json!(false);
        let path = path.replace(":streamGenerateContent?alt=sse", ":generateContent");
        let resp = client_post(&gw, &path, &body).await;
        last = std::time::Instant::now();
        assert_eq!(resp.status(), 429, "{client}: {}", gw.log_text());
        assert_eq!(header(&resp, "retry-after"), "13", "{client}");
    }
    // The key rests for the 13 s Google asked for, not the default 60 s cooldown.
    let key_state = async || {
        let ups = gw.upstreams().await;
        let up = ups
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["name"] == "gemini-up")
            .cloned();
        up.map(|u| u["keys"][0]["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert_eq!(key_state().await, "cooling");
    eventually(
        Duration::from_secs(30),
        "the key back after 13 s",
        async || key_state().await == "ok",
    )
    .await;
    let rested = last.elapsed();
    assert!(rested >= Duration::from_secs(12), "{rested:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_and_reasoning_tokens_reach_the_client_and_the_call_log() {
    let (mocks, blocks) = upstreams(llmux_mock::Faults::default()).await;
    let pricing = "[[pricing]]\nmodel = \"claude-sonnet-4\"\ninput_per_mtok = 3.0\n\
        output_per_mtok = 15.0\ncached_input_per_mtok = 0.3\ncache_write_per_mtok = 3.75\n";
    let gw = Llmux::start(&format!("{blocks}{pricing}"));
    let anthropic_answer = json!({"id": "msg_1", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4", "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 60, "cache_read_input_tokens": 30,
                  "cache_creation_input_tokens": 10, "output_tokens": 5}});
    mocks[2].script(vec![llmux_mock::Scripted {
        body: Some(anthropic_answer.to_string()),
        ..llmux_mock::Scripted::default()
    }]);
    let (path, mut body) = stream_call("openai", "claude-sonnet-4");
    body["stream"] = json!(false);
    let resp = client_post(&gw, &path, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["prompt_tokens"], 100, "{v}");
    assert_eq!(
        v["usage"]["prompt_tokens_details"]["cached_tokens"], 30,
        "{v}"
    );

    let openai_answer = json!({"id": "c1", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini", "choices": [{"index": 0, "finish_reason": "stop",
        "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 50, "total_tokens": 150,
                  "prompt_tokens_details": {"cached_tokens": 40},
                  "completion_tokens_details": {"reasoning_tokens": 20}}});
    mocks[1].script(vec![llmux_mock::Scripted {
        body: Some(openai_answer.to_string()),
        ..llmux_mock::Scripted::default()
    }]);
    let (path, body) = stream_call("anthropic", "gpt-4o-mini");
    let mut body = body;
    body["stream"] = json!(false);
    let resp = client_post(&gw, &path, &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["usage"]["input_tokens"], 60, "{v}");
    assert_eq!(v["usage"]["cache_read_input_tokens"], 40, "{v}");

    let rows = eventually(Duration::from_secs(15), "both calls logged", async || {
        let (_, page) = admin(&gw, "GET", "/calls?limit=10", None).await;
        let rows = page["calls"].as_array().cloned().unwrap_or_default();
        (rows.len() >= 2).then_some(rows)
    })
    .await;
    // Newest first: the OpenAI-upstream call, then the Anthropic one.
    assert_eq!(rows[0]["cached_tokens"], 40, "{}", rows[0]);
    assert_eq!(rows[0]["reasoning_tokens"], 20, "{}", rows[0]);
    assert_eq!(rows[1]["input_tokens"], 100, "{}", rows[1]);
    assert_eq!(rows[1]["cached_tokens"], 30, "{}", rows[1]);
    assert_eq!(rows[1]["cache_write_tokens"], 10, "{}", rows[1]);
    // Cache reads and writes at their own prices: 60 plain + 30 read + 10 written, 5 out.
    let want = (60.0 * 3.0 + 30.0 * 0.3 + 10.0 * 3.75 + 5.0 * 15.0) / 1e6;
    let cost = rows[1]["cost"].as_f64().unwrap();
    assert!((cost - want).abs() < 1e-12, "{cost} != {want}");
    let (_, prices) = admin(&gw, "GET", "/pricing", None).await;
    let row = prices
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["model"] == "claude-sonnet-4")
        .cloned()
        .unwrap();
    assert_eq!(row["cached_input_per_mtok"], 0.3, "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_embeddings_report_the_model_and_usage() {
    let (_mocks, blocks) = upstreams(llmux_mock::Faults::default()).await;
    let gw = Llmux::start(&blocks);
    let body = json!({"model": "gemini-2.0-flash", "input": ["hello there", "general kenobi"]});
    let resp = client_post(&gw, "/v1/embeddings", &body).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gemini-2.0-flash", "{v}");
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) > 0, "{v}");
    assert_eq!(v["data"].as_array().map(Vec::len), Some(2), "{v}");
}
