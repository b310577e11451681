//! Request-side translation fidelity (#17 items 2, 3, 4, 8, 9, 12): each mapping between
//! dialects, both ways, from a client body to the upstream body.

#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

use crate::anthropic::{max_output_tokens, AnthropicCodec, DEFAULT_MAX_OUTPUT_TOKENS};
use crate::canonical::{Codec, Op, ResponseFormat, Role};
use crate::gemini::GeminiCodec;
use crate::ollama::OllamaCodec;
use crate::openai::responses::ResponsesCodec;
use crate::openai::OpenAiCodec;

/// `body` decoded by `from`, encoded by `to`, as JSON.
fn translate(from: &dyn Codec, to: &dyn Codec, body: Value) -> Value {
    let req = from
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    serde_json::from_slice(&to.encode_request(&req).unwrap()).unwrap()
}

/// The field named by the error of translating `body` from `from` to `to`.
fn refused(from: &dyn Codec, to: &dyn Codec, body: Value) -> String {
    match from.decode_request(Op::Chat, body.to_string().as_bytes()) {
        Err(e) => e.field,
        Ok(req) => to.encode_request(&req).unwrap_err().field,
    }
}

fn schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
           "additionalProperties": false})
}

fn anthropic_with(extra: Value) -> Value {
    let mut b = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
                       "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

fn openai_with(extra: Value) -> Value {
    let mut b =
        json!({"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        b[k] = v.clone();
    }
    b
}

// --- item 2: structured output ---

#[test]
fn anthropic_output_config_reaches_every_target() {
    let body = anthropic_with(
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema()}}}),
    );
    let o = translate(&AnthropicCodec, &OpenAiCodec, body.clone());
    assert_eq!(
        o["response_format"],
        json!({"type": "json_schema", "json_schema": {"name": "response", "schema": schema(), "strict": false}})
    );
    let g = translate(&AnthropicCodec, &GeminiCodec, body.clone());
    assert_eq!(
        g["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert!(g["generationConfig"].get("responseSchema").is_some());
    let l = translate(&AnthropicCodec, &OllamaCodec, body.clone());
    assert_eq!(l["format"], schema());
    let a = translate(&AnthropicCodec, &AnthropicCodec, body);
    assert_eq!(
        a["output_config"],
        json!({"format": {"type": "json_schema", "schema": schema()}})
    );
    // The older top-level form means the same.
    let older =
        anthropic_with(json!({"output_format": {"type": "json_schema", "schema": schema()}}));
    let o = translate(&AnthropicCodec, &OpenAiCodec, older);
    assert_eq!(o["response_format"]["json_schema"]["schema"], schema());
}

#[test]
fn anthropic_output_config_that_cannot_be_carried_is_named() {
    let fmt = json!({"type": "json_schema", "schema": schema()});
    for (extra, field) in [
        (
            json!({"output_config": {"effort": "low"}}),
            "output_config.effort",
        ),
        (
            json!({"output_config": {"format": {"type": "regex", "schema": {}}}}),
            "output_config.format.type",
        ),
        (
            json!({"output_config": {"format": {"type": "json_schema"}}}),
            "output_config.format.schema",
        ),
        (
            json!({"output_config": {"format": fmt.clone()}, "output_format": fmt}),
            "output_format",
        ),
    ] {
        assert_eq!(
            refused(&AnthropicCodec, &OpenAiCodec, anthropic_with(extra)),
            field
        );
    }
    // A null format says nothing.
    let none = anthropic_with(json!({"output_config": {"format": null}}));
    assert!(translate(&AnthropicCodec, &OpenAiCodec, none)
        .get("response_format")
        .is_none());
}

#[test]
fn openai_response_format_reaches_anthropic_or_is_refused() {
    let rf = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": schema(), "strict": true}});
    let a = translate(
        &OpenAiCodec,
        &AnthropicCodec,
        openai_with(json!({"response_format": rf})),
    );
    assert_eq!(
        a["output_config"]["format"],
        json!({"type": "json_schema", "schema": schema()})
    );
    let obj = openai_with(json!({"response_format": {"type": "json_object"}}));
    assert_eq!(
        refused(&OpenAiCodec, &AnthropicCodec, obj),
        "response_format"
    );
    let text = openai_with(json!({"response_format": {"type": "text"}}));
    assert!(translate(&OpenAiCodec, &AnthropicCodec, text)
        .get("output_config")
        .is_none());
}

#[test]
fn gemini_and_ollama_formats_reach_anthropic_and_openai() {
    let g = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                   "generationConfig": {"responseMimeType": "application/json", "responseJsonSchema": schema()}});
    let a = translate(&GeminiCodec, &AnthropicCodec, g.clone());
    assert_eq!(a["output_config"]["format"]["schema"], schema());
    let o = translate(&GeminiCodec, &OpenAiCodec, g);
    assert_eq!(o["response_format"]["json_schema"]["schema"], schema());
    let schema_body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "format": schema()});
    let a = translate(&OllamaCodec, &AnthropicCodec, schema_body);
    assert_eq!(a["output_config"]["format"]["schema"], schema());
    let json_body =
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "format": "json"});
    let o = translate(&OllamaCodec, &OpenAiCodec, json_body.clone());
    assert_eq!(o["response_format"], json!({"type": "json_object"}));
    let g = translate(&OllamaCodec, &GeminiCodec, json_body.clone());
    assert_eq!(
        g["generationConfig"]["responseMimeType"],
        "application/json"
    );
    assert_eq!(
        refused(&OllamaCodec, &AnthropicCodec, json_body),
        "response_format"
    );
    // OpenAI json_object → Ollama "json".
    let obj = openai_with(json!({"response_format": {"type": "json_object"}}));
    assert_eq!(translate(&OpenAiCodec, &OllamaCodec, obj)["format"], "json");
}

// --- item 3: the model's maximum output instead of a fixed cap ---

#[test]
fn no_limit_reaches_anthropic_as_the_models_maximum() {
    let mut body = openai_with(json!({}));
    let a = translate(&OpenAiCodec, &AnthropicCodec, body.clone());
    assert_eq!(a["max_tokens"], 64_000);
    assert_eq!(max_output_tokens("claude-sonnet-4-5"), 64_000);
    body["model"] = json!("claude-3-5-haiku-20241022");
    assert_eq!(
        translate(&OpenAiCodec, &AnthropicCodec, body.clone())["max_tokens"],
        8192
    );
    body["model"] = json!("some-proxy-model");
    let a = translate(&OpenAiCodec, &AnthropicCodec, body.clone());
    assert_eq!(a["max_tokens"], DEFAULT_MAX_OUTPUT_TOKENS);
    body["max_completion_tokens"] = json!(77);
    assert_eq!(
        translate(&OpenAiCodec, &AnthropicCodec, body)["max_tokens"],
        77
    );
    let ollama = json!({"model": "claude-opus-4-1", "messages": [{"role": "user", "content": "hi"}],
                        "options": {"num_predict": -1}});
    assert_eq!(
        translate(&OllamaCodec, &AnthropicCodec, ollama)["max_tokens"],
        32_000
    );
}

// --- item 4: max_completion_tokens to OpenAI, max_tokens on request ---

#[test]
fn openai_upstreams_get_max_completion_tokens_unless_told_otherwise() {
    let body = anthropic_with(json!({}));
    let o = translate(&AnthropicCodec, &OpenAiCodec, body.clone());
    assert_eq!(o["max_completion_tokens"], 100);
    assert!(o.get("max_tokens").is_none());
    let mut req = AnthropicCodec
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    req.legacy_max_tokens = true;
    let o: Value = serde_json::from_slice(&OpenAiCodec.encode_request(&req).unwrap()).unwrap();
    assert_eq!(o["max_tokens"], 100);
    assert!(o.get("max_completion_tokens").is_none());
}

// --- item 8: is_error and strict ---

fn anthropic_tool_turns(is_error: Value) -> Value {
    anthropic_with(json!({
        "tools": [{"name": "weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "messages": [
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "no such city", "is_error": is_error}]}
        ]
    }))
}

#[test]
fn anthropic_is_error_survives_or_is_marked() {
    let body = anthropic_tool_turns(json!(true));
    let req = AnthropicCodec
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    assert!(req.messages[2].is_error);
    let a = translate(&AnthropicCodec, &AnthropicCodec, body.clone());
    assert_eq!(a["messages"][2]["content"][0]["is_error"], true);
    let o = translate(&AnthropicCodec, &OpenAiCodec, body.clone());
    assert_eq!(o["messages"][2]["content"], "[tool error] no such city");
    let l = translate(&AnthropicCodec, &OllamaCodec, body.clone());
    assert_eq!(l["messages"][2]["content"], "[tool error] no such city");
    let g = translate(&AnthropicCodec, &GeminiCodec, body.clone());
    let fr = &g["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(fr["response"], json!({"error": "no such city"}));
    let r = translate(&AnthropicCodec, &ResponsesCodec, body);
    let out = r["input"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["type"] == "function_call_output");
    assert_eq!(out.unwrap()["output"], "[tool error] no such city");
    // Not an error: unmarked everywhere.
    let ok = anthropic_tool_turns(json!(false));
    let o = translate(&AnthropicCodec, &OpenAiCodec, ok.clone());
    assert_eq!(o["messages"][2]["content"], "no such city");
    let a = translate(&AnthropicCodec, &AnthropicCodec, ok);
    assert!(a["messages"][2]["content"][0].get("is_error").is_none());
}

#[test]
fn gemini_error_response_is_an_anthropic_error_result() {
    let g = json!({"contents": [
        {"role": "user", "parts": [{"text": "Weather?"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "weather", "response": {"error": "no such city"}}}]}
    ]});
    let a = translate(&GeminiCodec, &AnthropicCodec, g);
    let result = &a["messages"][2]["content"][0];
    assert_eq!(result["is_error"], true);
    assert_eq!(result["content"], "no such city");
    // A JSON error object stays an object under `error`.
    let body = anthropic_tool_turns(json!(true));
    let mut req = AnthropicCodec
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    req.messages[2].content = vec![crate::canonical::Part::Text(r#"{"code":404}"#.into())];
    let g: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req).unwrap()).unwrap();
    let fr = &g["contents"][2]["parts"][0]["functionResponse"];
    assert_eq!(fr["response"], json!({"error": {"code": 404}}));
}

#[test]
fn strict_tools_map_between_openai_and_anthropic_only() {
    let tool = json!({"type": "function", "function": {"name": "w", "parameters": schema(), "strict": true}});
    let body = openai_with(json!({"tools": [tool]}));
    let a = translate(&OpenAiCodec, &AnthropicCodec, body.clone());
    assert_eq!(a["tools"][0]["strict"], true);
    let o = translate(&OpenAiCodec, &OpenAiCodec, body.clone());
    assert_eq!(o["tools"][0]["function"]["strict"], true);
    let g = translate(&OpenAiCodec, &GeminiCodec, body.clone());
    assert!(g["tools"][0]["functionDeclarations"][0]
        .get("strict")
        .is_none());
    let l = translate(&OpenAiCodec, &OllamaCodec, body);
    assert!(l["tools"][0]["function"].get("strict").is_none());
    let ant = anthropic_with(
        json!({"tools": [{"name": "w", "input_schema": schema(), "strict": false}]}),
    );
    let o = translate(&AnthropicCodec, &OpenAiCodec, ant);
    assert_eq!(o["tools"][0]["function"]["strict"], false);
    let unsaid = anthropic_with(json!({"tools": [{"name": "w", "input_schema": schema()}]}));
    let o = translate(&AnthropicCodec, &OpenAiCodec, unsaid);
    assert!(o["tools"][0]["function"].get("strict").is_none());
}

// --- item 9: system messages in the middle ---

fn middle() -> Value {
    json!([
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Weather?"}
    ])
}

#[test]
fn mid_system_messages_keep_their_place() {
    let body = openai_with(json!({"messages": middle()}));
    let req = OpenAiCodec
        .decode_request(Op::Chat, body.to_string().as_bytes())
        .unwrap();
    assert_eq!(req.system.as_deref(), Some("Be terse."));
    assert_eq!(req.messages[2].role, Role::System);
    let o = translate(&OpenAiCodec, &OpenAiCodec, body.clone());
    assert_eq!(o["messages"], middle());
    let l = translate(&OpenAiCodec, &OllamaCodec, body.clone());
    let roles: Vec<&str> = l["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "system", "user"]);
    // Ollama in, OpenAI out.
    let ollama = json!({"model": "m", "messages": middle()});
    assert_eq!(
        translate(&OllamaCodec, &OpenAiCodec, ollama)["messages"],
        middle()
    );
    // The Responses API keeps it in place too.
    let responses = json!({"model": "m", "input": middle()});
    let o = translate(&ResponsesCodec, &OpenAiCodec, responses);
    assert_eq!(o["messages"], middle());
}

#[test]
fn mid_system_messages_become_marked_user_turns_where_only_the_top_has_them() {
    let body = openai_with(json!({"messages": middle()}));
    let marked = "<system>\nAnswer in French.\n</system>";
    let a = translate(&OpenAiCodec, &AnthropicCodec, body.clone());
    assert_eq!(a["system"], "Be terse.");
    assert_eq!(
        a["messages"][2],
        json!({"role": "user", "content": [{"type": "text", "text": marked}, {"type": "text", "text": "Weather?"}]})
    );
    let g = translate(&OpenAiCodec, &GeminiCodec, body);
    assert_eq!(g["systemInstruction"]["parts"][0]["text"], "Be terse.");
    assert_eq!(
        g["contents"][2],
        json!({"role": "user", "parts": [{"text": marked}, {"text": "Weather?"}]})
    );
}

#[test]
fn leading_system_and_developer_messages_still_join_the_system_prompt() {
    let body = openai_with(json!({"messages": [
        {"role": "system", "content": "A"}, {"role": "developer", "content": "B"},
        {"role": "user", "content": "hi"}
    ]}));
    let a = translate(&OpenAiCodec, &AnthropicCodec, body);
    assert_eq!(a["system"], "A\n\nB");
    assert_eq!(a["messages"].as_array().unwrap().len(), 1);
}

// --- item 12 (request side): user ---

#[test]
fn user_maps_to_anthropic_metadata_and_back() {
    let a = translate(
        &OpenAiCodec,
        &AnthropicCodec,
        openai_with(json!({"user": "alice"})),
    );
    assert_eq!(a["metadata"], json!({"user_id": "alice"}));
    let o = translate(
        &AnthropicCodec,
        &OpenAiCodec,
        anthropic_with(json!({"metadata": {"user_id": "bob"}})),
    );
    assert_eq!(o["user"], "bob");
}

#[test]
fn response_format_variants_round_trip_through_anthropic() {
    let req = AnthropicCodec
        .decode_request(
            Op::Chat,
            anthropic_with(
                json!({"output_config": {"format": {"type": "json_schema", "schema": schema()}}}),
            )
            .to_string()
            .as_bytes(),
        )
        .unwrap();
    assert_eq!(
        req.response_format,
        Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: schema(),
            strict: false
        })
    );
}
