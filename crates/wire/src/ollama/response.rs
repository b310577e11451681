//! Whole Ollama answers ⇄ the canonical form, and error bodies.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

use crate::canonical::{FinishReason, ToolCall, Usage};
use crate::time::rfc3339;

pub(super) fn done_reason(f: &FinishReason) -> &'static str {
    match f {
        // An unfinished turn is one cut short, as far as Ollama can say.
        FinishReason::Length | FinishReason::Paused | FinishReason::MalformedToolCall => "length",
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::ContentFilter => "stop",
    }
}

pub(super) fn map_done_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

pub(super) fn decode_usage(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("prompt_eval_count"),
        output_tokens: n("eval_count"),
        ..Usage::default()
    }
}

pub(super) fn error_of(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(match e {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_string),
    })
}

/// An answer's (text, tool calls) from an Ollama chat `message` or generate `response`.
pub(super) fn answer_of(v: &Value, token: &str, first_index: usize) -> (String, Vec<ToolCall>) {
    if let Some(r) = v.get("response").and_then(Value::as_str) {
        return (r.to_string(), Vec::new());
    }
    let Some(m) = v.get("message") else {
        return (String::new(), Vec::new());
    };
    let text = m
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut calls = Vec::new();
    for c in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(f) = c.get("function") else {
            continue;
        };
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let arguments = match f.get("arguments") {
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => "{}".to_string(),
        };
        let n = first_index + calls.len();
        let id = match c.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("call_{token}_{n}"),
        };
        calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    (text, calls)
}

/// The timing fields of a `done` line.
#[derive(Clone, Copy, Default)]
pub(super) struct Timing {
    pub(super) total: u64,
    pub(super) prompt_eval: u64,
    pub(super) eval: u64,
}

pub(super) fn done_fields(
    line: &mut Map<String, Value>,
    finish: &FinishReason,
    usage: Usage,
    t: Timing,
) {
    line.insert("done".to_string(), json!(true));
    line.insert("done_reason".to_string(), json!(done_reason(finish)));
    line.insert("total_duration".to_string(), json!(t.total));
    line.insert("load_duration".to_string(), json!(0));
    line.insert("prompt_eval_count".to_string(), json!(usage.input_tokens));
    line.insert("prompt_eval_duration".to_string(), json!(t.prompt_eval));
    line.insert("eval_count".to_string(), json!(usage.output_tokens));
    line.insert("eval_duration".to_string(), json!(t.eval));
}

pub(super) fn base_line(model: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("model".to_string(), json!(model));
    m.insert("created_at".to_string(), json!(rfc3339(SystemTime::now())));
    m
}
