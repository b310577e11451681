//! Whole OpenAI answers (chat and legacy completions) ⇄ the canonical form, and error bodies.

use serde_json::{json, Map, Value};

use crate::canonical::{ChatResponse, FinishReason, Op, TranslateError, Usage};
use crate::ids::{new_id, now_secs};
use crate::json::{as_obj, count, error_message, field, opt_array, opt_str, parse_object, path};

use super::request_decode::{decode_content, decode_tool_calls, text_only};
use super::request_encode::tool_call_json;

pub(super) fn finish_from_openai(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub(super) fn finish_to_openai(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        // OpenAI has no word for an unfinished turn: `length` is the one that tells a client
        // the answer is incomplete (never `stop`, which reads as a whole answer).
        FinishReason::Paused | FinishReason::MalformedToolCall => "length",
    }
}

pub(super) fn usage_json(u: &Usage) -> Value {
    let mut o = json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    });
    // OpenAI has no count of cache writes: they stay in `prompt_tokens` only.
    if u.cached_input_tokens > 0 {
        o["prompt_tokens_details"] = json!({"cached_tokens": u.cached_input_tokens});
    }
    if u.reasoning_tokens > 0 {
        o["completion_tokens_details"] = json!({"reasoning_tokens": u.reasoning_tokens});
    }
    o
}

pub(super) fn usage_from(v: &Value) -> Usage {
    let detail = |outer: &str, key: &str| v.get(outer).map_or(0, |d| count(d, key));
    Usage {
        input_tokens: count(v, "prompt_tokens"),
        output_tokens: count(v, "completion_tokens"),
        cached_input_tokens: detail("prompt_tokens_details", "cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: detail("completion_tokens_details", "reasoning_tokens"),
    }
}

pub(super) fn decode_chat_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if let Some(msg) = error_of(&Value::Object(o.clone())) {
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: field(&o, "created").and_then(Value::as_u64).unwrap_or(0),
        ..ChatResponse::default()
    };
    let choices = opt_array(&o, "", "choices")?
        .ok_or_else(|| TranslateError::new("choices", "is required"))?;
    let choice = choices
        .first()
        .ok_or_else(|| TranslateError::new("choices", "is empty"))?;
    let c = as_obj(choice, "choices[0]")?;
    if let Some(Value::String(text)) = field(c, "text") {
        resp.text = text.clone();
    }
    if let Some(m) = field(c, "message") {
        let mp = "choices[0].message";
        let m = as_obj(m, mp)?;
        resp.text = text_only(
            decode_content(field(m, "content"), &path(mp, "content"), false)?,
            "",
        );
        if resp.text.is_empty() {
            resp.text = opt_str(m, mp, "refusal")?.unwrap_or_default();
        }
        resp.tool_calls = decode_tool_calls(m, mp)?;
    }
    resp.finish = match opt_str(c, "choices[0]", "finish_reason")? {
        Some(f) => finish_from_openai(&f),
        None => FinishReason::Stop,
    };
    if resp.finish == FinishReason::Stop && !resp.tool_calls.is_empty() {
        resp.finish = FinishReason::ToolCalls;
    }
    if let Some(u) = field(&o, "usage") {
        resp.usage = usage_from(u);
    }
    Ok(resp)
}

pub(super) fn encode_chat_response(op: Op, resp: &ChatResponse) -> Value {
    let created = if resp.created == 0 {
        now_secs()
    } else {
        resp.created
    };
    match op {
        Op::Completion => json!({
            "id": if resp.id.is_empty() { new_id("cmpl-") } else { resp.id.clone() },
            "object": "text_completion",
            "created": created,
            "model": resp.model,
            "choices": [{
                "text": resp.text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_to_openai(&resp.finish),
            }],
            "usage": usage_json(&resp.usage),
        }),
        Op::Chat => {
            let mut message = Map::new();
            message.insert("role".into(), json!("assistant"));
            message.insert(
                "content".into(),
                if resp.text.is_empty() && !resp.tool_calls.is_empty() {
                    Value::Null
                } else {
                    json!(resp.text)
                },
            );
            message.insert("refusal".into(), Value::Null);
            if !resp.tool_calls.is_empty() {
                message.insert(
                    "tool_calls".into(),
                    Value::Array(resp.tool_calls.iter().map(tool_call_json).collect()),
                );
            }
            json!({
                "id": if resp.id.is_empty() { new_id("chatcmpl-") } else { resp.id.clone() },
                "object": "chat.completion",
                "created": created,
                "model": resp.model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish_to_openai(&resp.finish),
                }],
                "usage": usage_json(&resp.usage),
            })
        }
    }
}

/// `{"error":{"message":…}}` (or `{"error":"…"}`, as some compatible servers write it).
pub(super) fn error_of(v: &Value) -> Option<String> {
    error_message(v.get("error")?)
}
