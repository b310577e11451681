//! Whole response objects ⇄ the canonical form, and error bodies.

use serde_json::{json, Value};

use crate::canonical::{ChatResponse, FinishReason, ToolCall, TranslateError, Usage};
use crate::ids::{new_id, now_secs};
use crate::json::{
    as_obj, count, error_message, field, opt_array, opt_str, parse_object, path, req_str, Obj,
};

use super::super::request_decode::text_only;
use super::request_decode::decode_content;

fn usage_json(u: Option<&Usage>) -> Value {
    match u {
        None => Value::Null,
        Some(u) => json!({
            "input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": u.cached_input_tokens},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
            "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        }),
    }
}

pub(super) fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub(super) fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([output_text(text)])
    };
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    })
}

pub(super) fn function_call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": call.arguments,
        "call_id": call.id,
        "name": call.name,
    })
}

/// `status` and `incomplete_details` of a response that ended for `reason`.
fn status_of(reason: &FinishReason) -> (&'static str, Value) {
    match reason {
        FinishReason::Length | FinishReason::Paused | FinishReason::MalformedToolCall => {
            ("incomplete", json!({"reason": "max_output_tokens"}))
        }
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
    }
}

/// How a response ended: `status` (`in_progress`, `completed`, `incomplete` or `failed`),
/// `incomplete_details` and `error`.
pub(super) struct Ending<'a> {
    pub(super) status: &'a str,
    pub(super) incomplete: Value,
    pub(super) error: Value,
}

impl Ending<'_> {
    pub(super) fn of(reason: &FinishReason) -> Ending<'static> {
        let (status, incomplete) = status_of(reason);
        Ending {
            status,
            incomplete,
            error: Value::Null,
        }
    }
}

/// The response object.
pub(super) fn response_object(
    id: &str,
    model: &str,
    created: u64,
    output: Vec<Value>,
    usage: Option<&Usage>,
    end: Ending<'_>,
) -> Value {
    let Ending {
        status,
        incomplete,
        error,
    } = end;
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage_json(usage),
        "user": null,
        "metadata": {},
    })
}

pub(super) fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        new_id("resp_")
    }
}

pub(super) fn encode_response(resp: &ChatResponse) -> Value {
    let mut output = Vec::new();
    if !resp.text.is_empty() || resp.tool_calls.is_empty() {
        output.push(message_item(&new_id("msg_"), &resp.text, "completed"));
    }
    for call in &resp.tool_calls {
        output.push(function_call_item(&new_id("fc_"), call, "completed"));
    }
    let created = if resp.created == 0 {
        now_secs()
    } else {
        resp.created
    };
    response_object(
        &response_id(&resp.id),
        &resp.model,
        created,
        output,
        Some(&resp.usage),
        Ending::of(&resp.finish),
    )
}

pub(super) fn usage_from(v: &Value) -> Usage {
    let detail = |outer: &str, key: &str| v.get(outer).map_or(0, |d| count(d, key));
    Usage {
        input_tokens: count(v, "input_tokens"),
        output_tokens: count(v, "output_tokens"),
        cached_input_tokens: detail("input_tokens_details", "cached_tokens"),
        cache_write_tokens: 0,
        reasoning_tokens: detail("output_tokens_details", "reasoning_tokens"),
    }
}

pub(super) fn finish_from(r: &Obj, tool_calls: bool) -> FinishReason {
    let reason = r
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match reason {
        Some("max_output_tokens") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ if tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if let Some(msg) = error_of(&o) {
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: field(&o, "created_at").and_then(Value::as_u64).unwrap_or(0),
        ..ChatResponse::default()
    };
    let output =
        opt_array(&o, "", "output")?.ok_or_else(|| TranslateError::new("output", "is required"))?;
    for (i, item) in output.iter().enumerate() {
        let p = format!("output[{i}]");
        let it = as_obj(item, &p)?;
        match opt_str(it, &p, "type")?.as_deref() {
            Some("message") => {
                let parts = decode_content(field(it, "content"), &path(&p, "content"))?;
                resp.text.push_str(&text_only(parts, "\n"));
            }
            Some("function_call") => resp.tool_calls.push(ToolCall {
                id: req_str(it, &p, "call_id")?,
                name: req_str(it, &p, "name")?,
                arguments: opt_str(it, &p, "arguments")?.unwrap_or_default(),
            }),
            // Reasoning and built-in tool items carry nothing the canonical form holds.
            _ => {}
        }
    }
    resp.finish = finish_from(&o, !resp.tool_calls.is_empty());
    if let Some(u) = field(&o, "usage") {
        resp.usage = usage_from(u);
    }
    Ok(resp)
}

/// `{"error":{"message":…}}` of an error body, or the `error` of a failed response.
pub(super) fn error_of(o: &Obj) -> Option<String> {
    error_message(o.get("error")?)
}
