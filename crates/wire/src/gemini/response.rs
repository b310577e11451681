//! Whole Gemini answers ⇄ the canonical form, and error bodies.

use serde_json::{json, Map, Value};

use crate::canonical::{FinishReason, Usage};
use crate::ids::fresh_token;

pub(super) fn map_finish(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "MALFORMED_FUNCTION_CALL" | "UNEXPECTED_TOOL_CALL" => FinishReason::MalformedToolCall,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn finish_str(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
        FinishReason::MalformedToolCall => "MALFORMED_FUNCTION_CALL",
        // Gemini has no pause: an unfinished answer is the nearest.
        FinishReason::Paused => "MAX_TOKENS",
    }
}

pub(crate) fn usage_json(u: Usage) -> Value {
    // Gemini counts thoughts apart from the candidates; canonical output includes them.
    let thoughts = u.reasoning_tokens.min(u.output_tokens);
    let mut o = json!({
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": u.output_tokens - thoughts,
        "totalTokenCount": u.input_tokens.saturating_add(u.output_tokens),
    });
    if thoughts > 0 {
        o["thoughtsTokenCount"] = json!(thoughts);
    }
    if u.cached_input_tokens > 0 {
        o["cachedContentTokenCount"] = json!(u.cached_input_tokens);
    }
    o
}

pub(super) fn decode_usage(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        // Thinking tokens are output the caller pays for, as OpenAI counts reasoning tokens.
        output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
        cached_input_tokens: n("cachedContentTokenCount"),
        cache_write_tokens: 0,
        reasoning_tokens: n("thoughtsTokenCount"),
    }
}

/// `{"error":{"message"}}` (or Google's array-wrapped form) → the message.
pub(super) fn error_of(v: &Value) -> Option<String> {
    let v = match v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    let e = v.get("error")?;
    Some(match e.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    })
}

/// An id token for generated tool-call ids: the response id when it is safe in an id, else fresh.
pub(super) fn id_token(response_id: Option<&str>) -> String {
    match response_id {
        Some(r)
            if !r.is_empty()
                && r.len() <= 48
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            r.to_string()
        }
        _ => fresh_token(),
    }
}

pub(super) fn candidate_parts(v: &Value) -> &[Value] {
    v.get("candidates")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub(super) fn finish_reason_of(v: &Value) -> Option<&str> {
    v.get("candidates")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
}

pub(super) fn blocked(v: &Value) -> bool {
    let no_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    no_candidates
        && v.get("promptFeedback")
            .and_then(|p| p.get("blockReason"))
            .is_some()
}

/// What a response part says, for answers (lenient: unknown parts are skipped).
pub(super) enum AnswerPart<'a> {
    Text(&'a str),
    Call {
        id: Option<&'a str>,
        name: &'a str,
        args: String,
        /// The part's `thoughtSignature` (Gemini 3), which the next turn must send back.
        signature: Option<&'a str>,
    },
}

pub(super) fn answer_part(p: &Value) -> Option<AnswerPart<'_>> {
    if p.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    if let Some(t) = p.get("text").and_then(Value::as_str) {
        return Some(AnswerPart::Text(t));
    }
    let fc = p.get("functionCall").or_else(|| p.get("function_call"))?;
    let name = fc.get("name").and_then(Value::as_str)?;
    let args = match fc.get("args") {
        Some(a @ Value::Object(_)) => a.to_string(),
        _ => "{}".to_string(),
    };
    Some(AnswerPart::Call {
        id: fc.get("id").and_then(Value::as_str),
        name,
        args,
        signature: p
            .get("thoughtSignature")
            .or_else(|| p.get("thought_signature"))
            .and_then(Value::as_str),
    })
}

pub(super) fn chunk_json(
    id: &str,
    model: &str,
    parts: Vec<Value>,
    finish: Option<&FinishReason>,
    usage: Option<Usage>,
) -> String {
    let mut cand = Map::new();
    cand.insert(
        "content".to_string(),
        json!({"parts": parts, "role": "model"}),
    );
    if let Some(f) = finish {
        cand.insert("finishReason".to_string(), json!(finish_str(f)));
    }
    cand.insert("index".to_string(), json!(0));
    let mut root = Map::new();
    root.insert("candidates".to_string(), json!([Value::Object(cand)]));
    if let Some(u) = usage {
        root.insert("usageMetadata".to_string(), usage_json(u));
    }
    if !model.is_empty() {
        root.insert("modelVersion".to_string(), json!(model));
    }
    if !id.is_empty() {
        root.insert("responseId".to_string(), json!(id));
    }
    Value::Object(root).to_string()
}

/// The delay Google asks for in an error body — `error.details[]` of type
/// `google.rpc.RetryInfo`, `retryDelay` such as `"13s"` or `"0.5s"` — in seconds.
pub fn retry_delay(body: &[u8]) -> Option<f64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let v = match &v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    let retry_info = |d: &&Value| {
        d.get("@type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
    };
    v.pointer("/error/details")?
        .as_array()?
        .iter()
        .filter(retry_info)
        .find_map(|d| {
            let s = d.get("retryDelay")?.as_str()?.trim().strip_suffix('s')?;
            s.parse::<f64>().ok()
        })
        .filter(|s| s.is_finite() && *s >= 0.0)
}
