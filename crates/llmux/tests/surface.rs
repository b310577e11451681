//! End-to-end: the routes clients call beyond chat — the Responses API, token counting, model
//! lookup, Ollama's model management — and errors in the caller's dialect on every path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::{Faults, MockServer};
use serde_json::{json, Value};

/// An `[[upstreams]]` block of any kind, with a static model list.
fn upstream(name: &str, kind: &str, url: &str, models: &[&str]) -> String {
    let url = match kind {
        "openai" => format!("{url}/v1"),
        _ => url.to_string(),
    };
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nmodels = [{}]\n",
        models.join(", ")
    )
}

/// One mock per kind: `llama3:latest` on Ollama, `gpt-4o` on OpenAI, `claude` on Anthropic,
/// `gem` on Gemini, `dep` on Azure. Each mock names itself in its first token.
async fn every_kind() -> (Vec<MockServer>, Llmux) {
    let kinds = [
        ("ol", "ollama", "llama3:latest"),
        ("oa", "openai", "gpt-4o"),
        ("an", "anthropic", "claude"),
        ("ge", "gemini", "gem"),
        ("az", "azure", "dep"),
    ];
    let mut mocks = Vec::new();
    let mut cfg = String::new();
    for (name, kind, model) in kinds {
        let m = MockServer::start(node(name, &[model])).await.unwrap();
        cfg.push_str(&upstream(name, kind, &m.url(), &[model]));
        mocks.push(m);
    }
    (mocks, Llmux::start(&cfg))
}

async fn post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

/// SSE event names and data, in order.
fn sse(text: &str) -> Vec<(String, Value)> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| {
            let mut name = String::new();
            let mut data = String::new();
            for line in e.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push_str(d);
                }
            }
            (name, serde_json::from_str(&data).unwrap_or(Value::Null))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_api_passes_through_to_openai_kinds_and_is_translated_for_the_others() {
    let (mocks, gw) = every_kind().await;
    for (model, node, passthrough) in [
        ("gpt-4o", "oa", true),
        ("dep", "az", true),
        ("llama3", "ol", false),
        ("claude", "an", false),
        ("gem", "ge", false),
    ] {
        let body = json!({"model": model, "input": "hello there", "instructions": "be brief"});
        let r = post(&gw, "/v1/responses", &body).await;
        let status = r.status();
        assert_eq!(header(&r, "x-llmux-upstream"), node);
        let text = r.text().await.unwrap();
        assert_eq!(status, 200, "{model}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["object"], "response", "{model}: {v}");
        assert_eq!(v["status"], "completed", "{model}");
        assert_eq!(v["output"][0]["type"], "message");
        let text = v["output"][0]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with(&format!("[{node}]")), "{model}: {text}");
        assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0, "{model}");
        assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0, "{model}");

        let stream = json!({"model": model, "input": "hello there", "stream": true});
        let r = post(&gw, "/v1/responses", &stream).await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "content-type").starts_with("text/event-stream"));
        let events = sse(&r.text().await.unwrap());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names.first(),
            Some(&"response.created"),
            "{model}: {names:?}"
        );
        assert_eq!(
            names.last(),
            Some(&"response.completed"),
            "{model}: {names:?}"
        );
        for required in [
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.output_item.done",
        ] {
            assert!(
                names.contains(&required),
                "{model}: {required} in {names:?}"
            );
        }
        let deltas: String = events
            .iter()
            .filter(|(n, _)| n == "response.output_text.delta")
            .map(|(_, d)| d["delta"].as_str().unwrap().to_string())
            .collect();
        assert!(
            deltas.starts_with(&format!("[{node}]")),
            "{model}: {deltas}"
        );
        let done = &events.last().unwrap().1["response"];
        assert!(done["usage"]["output_tokens"].as_u64().unwrap() > 0);

        // What the upstream saw: the Responses API itself, or chat in its own dialect.
        let at = ["ol", "oa", "an", "ge", "az"]
            .iter()
            .position(|n| *n == node)
            .unwrap();
        let paths = mocks[at].stats().by_path;
        let used_responses = paths.keys().any(|p| p.ends_with("/responses"));
        assert_eq!(used_responses, passthrough, "{model}: {paths:?}");
    }
    // A function tool comes back as a `function_call` item, translated too.
    for model in ["gpt-4o", "claude"] {
        let body = json!({"model": model, "input": "weather in Paris?",
            "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}]});
        let v: Value = post(&gw, "/v1/responses", &body)
            .await
            .json()
            .await
            .unwrap();
        let call = v["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["type"] == "function_call")
            .unwrap_or_else(|| panic!("{model}: {v}"));
        assert_eq!(call["name"], "get_weather");
        let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
        assert_eq!(args["location"], "Paris");
    }
    // What cannot be translated is a 400 naming the field, in OpenAI's shape.
    let body = json!({"model": "claude", "input": "x", "previous_response_id": "resp_1"});
    let r = post(&gw, "/v1/responses", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("previous_response_id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_model_lookup_and_hosted_show() {
    let (mocks, gw) = every_kind().await;
    // Anthropic-kind: Anthropic's own count, passed through.
    let body =
        json!({"model": "claude", "messages": [{"role": "user", "content": "hello there friend"}]});
    let r = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "an");
    let v: Value = r.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(
        mocks[2].stats().by_path.get("/v1/messages/count_tokens"),
        Some(&1)
    );
    // Other kinds: an estimate, and nothing sent upstream.
    let body = json!({"model": "gpt-4o", "system": "be brief", "messages": [{"role": "user", "content": "a fairly long question about the weather in Paris today"}]});
    let r = post(&gw, "/v1/messages/count_tokens", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    let n = v["input_tokens"].as_u64().unwrap();
    assert!((10..=40).contains(&n), "{v}");
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    )
    .await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");

    // `GET /v1/models/{id}` matches names as chat does.
    let r = client()
        .get(gw.url("/v1/models/llama3"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"], "llama3:latest");
    assert_eq!(v["object"], "model");
    let v: Value = client()
        .get(gw.url("/v1/models/oa/gpt-4o"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["id"], "gpt-4o");
    assert_eq!(v["owned_by"], "oa");
    let r = client()
        .get(gw.url("/v1/models/missing"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // `/api/show`: from the Ollama node for its models, composed for hosted ones.
    let r = post(&gw, "/api/show", &json!({"model": "llama3"})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "x-llmux-upstream"), "ol");
    let r = post(&gw, "/api/show", &json!({"name": "llama3"})).await;
    assert_eq!(r.status(), 200, "the older `name` field");
    let r = post(&gw, "/api/show", &json!({"model": "claude"})).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["details"]["family"], "anthropic");
    assert!(v["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("completion")));
    assert!(v["modelfile"].as_str().unwrap().contains("claude"));
    let r = post(&gw, "/api/show", &json!({"model": "missing"})).await;
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());

    // Model management llmux does not do: Ollama's error shape, 501.
    for path in ["/api/create", "/api/copy", "/api/push"] {
        let r = post(&gw, path, &json!({"model": "x"})).await;
        assert_eq!(r.status(), 501, "{path}");
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].as_str().unwrap().contains(path), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_routes_take_form_encoded_json_like_ollama() {
    let (_mocks, gw) = every_kind().await;
    // What `curl -d '{…}'` sends.
    let form = "application/x-www-form-urlencoded";
    let body = json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "hi"}]});
    let r = client()
        .post(gw.url("/api/chat"))
        .header("content-type", form)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert!(v["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("[ol]"));
    // Other dialects still require JSON.
    let r = client()
        .post(gw.url("/v1/chat/completions"))
        .header("content-type", form)
        .body(chat("llama3", false).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gemini_stream_without_alt_sse_is_a_json_array() {
    let (_mocks, gw) = every_kind().await;
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hello"}]}]});
    // Passed through to Gemini, and translated from an OpenAI-kind upstream.
    for (model, node) in [("gem", "ge"), ("gpt-4o", "oa"), ("claude", "an")] {
        let r = post(
            &gw,
            &format!("/v1beta/models/{model}:streamGenerateContent"),
            &body,
        )
        .await;
        assert_eq!(r.status(), 200, "{model}");
        assert!(
            header(&r, "content-type").starts_with("application/json"),
            "{model}"
        );
        let text = r.text().await.unwrap();
        let v: Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{model}: {e}: {text}"));
        let chunks = v.as_array().unwrap();
        assert!(chunks.len() > 1, "{model}: {text}");
        let first = chunks[0]["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap();
        assert!(first.starts_with(&format!("[{node}]")), "{model}: {first}");
        // And with `alt=sse`, SSE.
        let r = post(
            &gw,
            &format!("/v1beta/models/{model}:streamGenerateContent?alt=sse"),
            &body,
        )
        .await;
        assert!(
            header(&r, "content-type").starts_with("text/event-stream"),
            "{model}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_json_in_the_callers_dialect() {
    let (_mocks, gw) = every_kind().await;
    let c = client();
    // 405 per dialect.
    let r = c.get(gw.url("/v1/chat/completions")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("GET"),
        "{v}"
    );
    let r = c.get(gw.url("/api/chat")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    let r = c.get(gw.url("/v1/messages")).send().await.unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    let r = c
        .put(gw.url("/v1beta/models/gem:generateContent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], 405);
    // A path that is not valid UTF-8 once decoded.
    let r = c.get(gw.url("/v1/models/%FF%FE")).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    // Unknown routes.
    let r = c.get(gw.url("/api/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());
    // Admin: 405 and an oversized body.
    let r = c
        .delete(gw.url("/admin/v1/upstreams"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
    let ct = header(&r, "content-type");
    assert!(ct.contains("json"), "{ct}");
    // A bad query string on an admin route: the admin API's own shape, not a client dialect's.
    let r = c
        .get(gw.url("/admin/v1/calls?status=abc"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(v["error"].as_object().map(|o| o.len()), Some(1), "{v}");
    // Last: the server answers 413 without reading the body and closes that connection, which
    // a request reusing it from the pool would find cut.
    let big = json!({"name": "x".repeat(3 << 20)});
    let r = c
        .post(gw.url("/admin/v1/apps"))
        .bearer_auth(ADMIN)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_redirect_is_a_failed_attempt_not_an_answer() {
    let bad = MockServer::start(node("bad", &["gpt-4o"])).await.unwrap();
    bad.set_faults(Faults {
        fail_rate: 1.0,
        fail_status: 302,
        ..Faults::default()
    });
    let gw = Llmux::start(&upstream("bad", "openai", &bad.url(), &["gpt-4o"]));
    let r = post(&gw, "/v1/chat/completions", &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("302"),
        "{v}"
    );
    let r = post(&gw, "/api/chat", &chat("gpt-4o", false)).await;
    assert_eq!(r.status(), 502);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string());

    // With another upstream for the model, the call fails over to it.
    let good = MockServer::start(node("good", &["gpt-4o"])).await.unwrap();
    let gw = Llmux::start(&format!(
        "{}{}[routing]\nstrategy = \"round_robin\"\n",
        upstream("bad", "openai", &bad.url(), &["gpt-4o"]),
        upstream("good", "openai", &good.url(), &["gpt-4o"]),
    ));
    for _ in 0..4 {
        let r = post(&gw, "/v1/chat/completions", &chat("gpt-4o", false)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), "good");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_responses_stream_ends_with_an_error_event() {
    let mut cfg = String::new();
    let mut mocks = Vec::new();
    for (name, kind) in [("oa", "openai"), ("ol", "ollama")] {
        let m = MockServer::start(llmux_mock::MockConfig {
            chunks: 8,
            ..node(name, &["m:latest"])
        })
        .await
        .unwrap();
        m.set_faults(Faults {
            drop_after: Some(4),
            ..Faults::default()
        });
        cfg.push_str(&upstream(name, kind, &m.url(), &["m:latest"]));
        mocks.push(m);
    }
    let gw = Llmux::start(&cfg);
    for name in ["oa", "ol"] {
        let body = json!({"model": format!("{name}/m"), "input": "hi", "stream": true});
        let r = post(&gw, "/v1/responses", &body).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-llmux-upstream"), name);
        let events = sse(&r.text().await.unwrap_or_default());
        let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        assert!(!names.contains(&"response.completed"), "{name}: {names:?}");
        let error = events
            .iter()
            .find(|(n, _)| n == "error")
            .unwrap_or_else(|| panic!("{name}: no error event in {names:?}"));
        assert_eq!(error.1["type"], "error");
        assert!(
            error.1["message"].as_str().unwrap().contains(name),
            "{error:?}"
        );
    }
}

/// Token counting and model lookup check a client's model name as calls do: a name with a NUL
/// byte is a 400, and a huge name is never echoed whole (any dialect).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn count_tokens_and_model_lookup_check_and_cap_the_name() {
    let (_mocks, gw) = every_kind().await;
    let msgs = json!([{"role": "user", "content": "x"}]);
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": "cl\u{0}aude", "messages": msgs}),
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    let huge = "m".repeat(100_000);
    let r = post(
        &gw,
        "/v1/messages/count_tokens",
        &json!({"model": huge, "messages": msgs}),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().len() < 1_000);
    let long = "m".repeat(20_000);
    let r = client()
        .get(gw.url(&format!("/v1/models/{long}")))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap();
    assert!(text.len() < 1_000, "{} bytes echoed", text.len());
}
