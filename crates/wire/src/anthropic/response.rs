//! Whole Anthropic answers ⇄ the canonical form, and error bodies.

use serde_json::{json, Value};

use crate::canonical::{ChatResponse, FinishReason, ToolCall, TranslateError, Usage};
use crate::ids::{new_id, now_secs};
use crate::json::{
    arguments_value, as_obj, count, error_message, field, opt_array, opt_str, parse_object, req_str,
};

use super::request_encode::tool_use_id;

pub(super) fn finish_from_anthropic(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        "pause_turn" => FinishReason::Paused,
        // end_turn, stop_sequence
        _ => FinishReason::Stop,
    }
}

pub(super) fn finish_to_anthropic(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
        // Both mean "send the conversation back to go on" (for a malformed call: to retry it).
        FinishReason::Paused | FinishReason::MalformedToolCall => "pause_turn",
    }
}

/// Input tokens as OpenAI counts them: Anthropic reports cache reads and writes apart.
pub(super) fn input_tokens(usage: &Value) -> u64 {
    count(usage, "input_tokens")
        + count(usage, "cache_creation_input_tokens")
        + count(usage, "cache_read_input_tokens")
}

/// An Anthropic `usage` object → canonical (input tokens with the cache reads and writes).
pub(super) fn usage_from(u: &Value) -> Usage {
    Usage {
        input_tokens: input_tokens(u),
        output_tokens: count(u, "output_tokens"),
        cached_input_tokens: count(u, "cache_read_input_tokens"),
        cache_write_tokens: count(u, "cache_creation_input_tokens"),
        reasoning_tokens: 0,
    }
}

/// Canonical usage → Anthropic's `usage` (whose `input_tokens` leaves out cache reads and writes).
pub(super) fn usage_json(u: &Usage) -> Value {
    let mut o = json!({
        "input_tokens": u.uncached_input_tokens(),
        "output_tokens": u.output_tokens,
    });
    if u.cached_input_tokens > 0 || u.cache_write_tokens > 0 {
        o["cache_creation_input_tokens"] = json!(u.cache_write_tokens);
        o["cache_read_input_tokens"] = json!(u.cached_input_tokens);
    }
    o
}

pub(super) fn error_of(v: &Value) -> Option<String> {
    error_message(v.get("error")?)
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if field(&o, "type").and_then(Value::as_str) == Some("error") {
        let msg = error_of(&Value::Object(o.clone())).unwrap_or_else(|| "upstream error".into());
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: now_secs(),
        ..ChatResponse::default()
    };
    let blocks = opt_array(&o, "", "content")?
        .ok_or_else(|| TranslateError::new("content", "is required"))?;
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("content[{j}]");
        let bo = as_obj(b, &bp)?;
        match opt_str(bo, &bp, "type")?.as_deref() {
            Some("text") => resp.text.push_str(&req_str(bo, &bp, "text")?),
            Some("tool_use") => resp.tool_calls.push(ToolCall {
                id: req_str(bo, &bp, "id")?,
                name: req_str(bo, &bp, "name")?,
                arguments: field(bo, "input").map_or_else(|| "{}".to_string(), Value::to_string),
            }),
            // thinking, redacted_thinking and server tool blocks carry nothing canonical.
            _ => {}
        }
    }
    resp.finish = match opt_str(&o, "", "stop_reason")? {
        Some(s) => finish_from_anthropic(&s),
        None if !resp.tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    if let Some(u) = field(&o, "usage") {
        resp.usage = usage_from(u);
    }
    Ok(resp)
}

pub(super) fn encode_response(resp: &ChatResponse) -> Value {
    let mut content = Vec::new();
    if !resp.text.is_empty() {
        content.push(json!({"type": "text", "text": resp.text}));
    }
    for c in &resp.tool_calls {
        content.push(json!({
            "type": "tool_use",
            "id": tool_use_id(&c.id),
            "name": c.name,
            // Arguments that are no JSON object (cut by `max_tokens`, say) are kept as text
            // under `arguments`, never dropped.
            "input": arguments_value(&c.arguments),
        }));
    }
    json!({
        "id": if resp.id.is_empty() { new_id("msg_") } else { resp.id.clone() },
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": finish_to_anthropic(&resp.finish),
        "stop_sequence": null,
        "usage": usage_json(&resp.usage),
    })
}
