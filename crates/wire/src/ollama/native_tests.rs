//! What only Ollama's native API carries (`think`, `keep_alive`, runner options, `top_k`), sent
//! by clients of other dialects: carried into `/api/chat`, refused by the other targets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};

use crate::anthropic::AnthropicCodec;
use crate::canonical::{ChatRequest, Codec, Op, Think};
use crate::gemini::GeminiCodec;
use crate::openai::OpenAiCodec;

use super::OllamaCodec;

fn openai(extra: &str) -> Result<ChatRequest, crate::canonical::TranslateError> {
    let body = format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{extra}}}"#);
    OpenAiCodec.decode_request(Op::Chat, body.as_bytes())
}

fn to_ollama(req: &ChatRequest) -> Value {
    serde_json::from_slice(&OllamaCodec.encode_request(req).unwrap()).unwrap()
}

#[test]
fn openai_extra_body_reaches_ollama_options() {
    let req = openai(
        r#""top_k":40,"temperature":0.5,"options":{"num_ctx":8192,"repeat_penalty":1.1,"temperature":0.9},"keep_alive":"5m","reasoning_effort":"high""#,
    )
    .unwrap();
    let body = to_ollama(&req);
    assert_eq!(body["options"]["num_ctx"], 8192);
    assert_eq!(body["options"]["repeat_penalty"], 1.1);
    assert_eq!(body["options"]["top_k"], 40);
    // The standard field wins over the same member of `options`.
    assert_eq!(body["options"]["temperature"], 0.5);
    assert_eq!(body["keep_alive"], "5m");
    assert_eq!(body["think"], "high");
}

#[test]
fn openai_think_and_reasoning_effort_levels() {
    for (extra, think) in [
        (r#""think":true"#, json!(true)),
        (r#""think":false"#, json!(false)),
        (r#""think":"low""#, json!("low")),
        (r#""reasoning_effort":"none""#, json!(false)),
        (r#""reasoning_effort":"minimal""#, json!("low")),
        (r#""reasoning_effort":"medium""#, json!("medium")),
        (r#""keep_alive":300"#, Value::Null),
    ] {
        let body = to_ollama(&openai(extra).unwrap());
        assert_eq!(
            body.get("think").cloned().unwrap_or(Value::Null),
            think,
            "{extra}"
        );
    }
    for (extra, field) in [
        (r#""think":"max""#, "think"),
        (r#""think":true,"reasoning_effort":"low""#, "think"),
        (r#""keep_alive":true"#, "keep_alive"),
        (r#""options":[1]"#, "options"),
    ] {
        assert_eq!(openai(extra).unwrap_err().field, field, "{extra}");
    }
}

#[test]
fn anthropic_thinking_and_top_k_reach_ollama() {
    let body = br#"{"model":"m","max_tokens":64,"top_k":7,"thinking":{"type":"enabled","budget_tokens":2000},"messages":[{"role":"user","content":"hi"}]}"#;
    let req = AnthropicCodec.decode_request(Op::Chat, body).unwrap();
    assert_eq!(req.ollama.think, Some(Think::On));
    let out = to_ollama(&req);
    assert_eq!(out["think"], true);
    assert_eq!(out["options"]["top_k"], 7);
    assert_eq!(out["options"]["num_predict"], 64);
    let off = br#"{"model":"m","max_tokens":64,"thinking":{"type":"disabled"},"messages":[{"role":"user","content":"hi"}]}"#;
    let req = AnthropicCodec.decode_request(Op::Chat, off).unwrap();
    assert_eq!(to_ollama(&req)["think"], false);
}

#[test]
fn other_targets_refuse_thinking_and_runner_options_but_not_keep_alive() {
    let thinking = openai(r#""reasoning_effort":"low""#).unwrap();
    let options = openai(r#""options":{"num_ctx":4096}"#).unwrap();
    let keep = openai(r#""keep_alive":"1h","think":false"#).unwrap();
    let targets: [&dyn Codec; 3] = [&OpenAiCodec, &AnthropicCodec, &GeminiCodec];
    for codec in targets {
        assert_eq!(codec.encode_request(&thinking).unwrap_err().field, "think");
        let err = codec.encode_request(&options).unwrap_err();
        assert_eq!(err.field, "options.num_ctx", "{err}");
        let body: Value = serde_json::from_slice(&codec.encode_request(&keep).unwrap()).unwrap();
        assert!(body.get("keep_alive").is_none() && body.get("think").is_none());
    }
}

#[test]
fn legacy_generate_carries_keep_alive() {
    let body = br#"{"model":"m","prompt":"hi","keep_alive":"10m","top_k":3}"#;
    let req = OpenAiCodec.decode_request(Op::Completion, body).unwrap();
    let out = to_ollama(&req);
    assert_eq!(out["prompt"], "hi");
    assert_eq!(out["keep_alive"], "10m");
    assert_eq!(out["options"]["top_k"], 3);
}
