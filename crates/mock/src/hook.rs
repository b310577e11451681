//! `POST /hook`: an external hook for llmux's `[[hooks]]` (docs/hooks.md), answering what a
//! marker in the prompt asks for, so one mock serves every case a test needs:
//!
//! | the prompt contains | the answer |
//! |---|---|
//! | `deny-me` | `{"action":"deny","message":"the mock hook refuses prompts that say deny-me"}` |
//! | `modify-me` | `{"action":"modify","request":…}`: the request with `modify-me` replaced by `modified-by-hook` in every message and `max_tokens` set to 5 |
//! | `slow-hook` | no answer for 30 s, then allow (a hook that times out) |
//! | `garbage-hook` | 200 with a body that is not JSON |
//! | `error-hook` | 500 |
//! | anything else | `{"action":"allow"}` |
//!
//! The request must be llmux's: a JSON object with `hook`, `model` and a `request` object
//! holding `messages` (else 400). The last one is kept for `GET /_mock/stats` (`last_hook`).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::handler::OPENAI_JSON;
use crate::reply::respond;
use crate::state::Shared;

/// How long a `slow-hook` prompt keeps the hook from answering.
pub(crate) const SLOW_HOOK: Duration = Duration::from_secs(30);

pub(crate) async fn answer(st: &Arc<Shared>, body: &Bytes) -> Response {
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return bad(&format!("the hook request is not JSON: {e}")),
    };
    for field in ["hook", "model"] {
        if !payload.get(field).is_some_and(Value::is_string) {
            return bad(&format!("the hook request has no string \"{field}\""));
        }
    }
    let Some(messages) = payload
        .pointer("/request/messages")
        .and_then(Value::as_array)
    else {
        return bad("the hook request has no \"request\" with \"messages\"");
    };
    let text = messages
        .iter()
        .map(message_text)
        .collect::<Vec<_>>()
        .join("\n");
    st.note_hook(&payload);
    if text.contains("slow-hook") {
        tokio::time::sleep(SLOW_HOOK).await;
        return json_answer(&json!({"action": "allow"}));
    }
    if text.contains("garbage-hook") {
        return respond(
            StatusCode::OK,
            OPENAI_JSON,
            "this is not what a hook answers",
        );
    }
    if text.contains("error-hook") {
        return respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            OPENAI_JSON,
            r#"{"error":"the mock hook failed"}"#,
        );
    }
    if text.contains("deny-me") {
        return json_answer(&json!({
            "action": "deny",
            "message": "the mock hook refuses prompts that say deny-me",
        }));
    }
    if text.contains("modify-me") {
        let mut request = payload["request"].clone();
        if let Some(ms) = request.get_mut("messages").and_then(Value::as_array_mut) {
            ms.iter_mut().for_each(rewrite_message);
        }
        request["max_tokens"] = json!(5);
        return json_answer(&json!({"action": "modify", "request": request}));
    }
    json_answer(&json!({"action": "allow"}))
}

/// A message's text: its string content, or its text parts.
fn message_text(m: &Value) -> String {
    match m.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn rewrite_message(m: &mut Value) {
    let swap = |s: &str| s.replace("modify-me", "modified-by-hook");
    match m.get_mut("content") {
        Some(Value::String(s)) => *s = swap(s),
        Some(Value::Array(parts)) => {
            for p in parts {
                if let Some(Value::String(t)) = p.get_mut("text") {
                    *t = swap(t);
                }
            }
        }
        _ => {}
    }
}

fn json_answer(v: &Value) -> Response {
    respond(
        StatusCode::OK,
        OPENAI_JSON,
        serde_json::to_vec(v).unwrap_or_default(),
    )
}

fn bad(message: &str) -> Response {
    let body = serde_json::to_vec(&json!({"error": message})).unwrap_or_default();
    respond(StatusCode::BAD_REQUEST, OPENAI_JSON, body)
}
