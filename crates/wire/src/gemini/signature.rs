//! Gemini's thought signatures carried in tool-call ids.
//!
//! Gemini 3 models put a `thoughtSignature` on the part of each function call and refuse the
//! next turn unless that part comes back with it. Clients of other dialects only keep a call's
//! id, so the signature rides in it: `<id>__gts_<signature, base64url>`. The id is opaque to
//! clients (any dialect allows these characters, Anthropic's `^[a-zA-Z0-9_-]+$` included), and
//! when the call comes back llmux splits it and restores the signature on the `functionCall`
//! part it sends to Gemini.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Between the call's own id and its signature. Neither Gemini's ids nor llmux's generated
/// ones (`call_<token>_<n>`) contain it, so the first one is the split.
const MARK: &str = "__gts_";

/// The id a client gets for a call with `signature`.
pub(crate) fn with_signature(id: &str, signature: Option<&str>) -> String {
    match signature.filter(|s| !s.is_empty()) {
        Some(s) => format!("{id}{MARK}{}", URL_SAFE_NO_PAD.encode(s.as_bytes())),
        None => id.to_string(),
    }
}

/// A client's call id → the call's own id and the signature it carries, if any. An id that
/// only looks like one (its tail is not valid base64url text) is taken whole.
pub(crate) fn split(id: &str) -> (&str, Option<String>) {
    let Some((base, sig)) = id.split_once(MARK) else {
        return (id, None);
    };
    match URL_SAFE_NO_PAD
        .decode(sig)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(s) => (base, Some(s)),
        None => (id, None),
    }
}

/// A client's body (any dialect but Gemini's, passed through as sent) with the thought
/// signatures taken out of its call ids: every `id`, `tool_call_id`, `tool_use_id` and `call_id`
/// string that carries one. `None`: none does (or the body is not JSON), send it as it is.
/// Cheap when there is nothing to do: the body is only parsed when it holds the marker.
pub fn strip_from_body(body: &[u8]) -> Option<Vec<u8>> {
    // memchr's SIMD search: a 100 KB prompt is scanned in microseconds.
    memchr::memmem::find(body, MARK.as_bytes())?;
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let mut changed = false;
    strip_ids(&mut v, &mut changed);
    changed.then(|| serde_json::to_vec(&v).ok()).flatten()
}

fn strip_ids(v: &mut serde_json::Value, changed: &mut bool) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match value {
                    Value::String(id)
                        if matches!(
                            key.as_str(),
                            "id" | "tool_call_id" | "tool_use_id" | "call_id"
                        ) =>
                    {
                        let (base, sig) = split(id);
                        if sig.is_some() {
                            *id = base.to_string();
                            *changed = true;
                        }
                    }
                    other => strip_ids(other, changed),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| strip_ids(i, changed)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trips_and_leaves_plain_ids_alone() {
        let sig = "CiQBcsjafE3+/k9Q==";
        let id = with_signature("fc_1", Some(sig));
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{id}"
        );
        assert_eq!(split(&id), ("fc_1", Some(sig.to_string())));
        assert_eq!(with_signature("fc_1", None), "fc_1");
        assert_eq!(split("call_abc_0"), ("call_abc_0", None));
        assert_eq!(split("x__gts_!!"), ("x__gts_!!", None));
    }

    #[test]
    fn bodies_lose_signatures_from_their_ids_only() {
        let id = with_signature("fc_1", Some("sig"));
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "assistant", "tool_calls": [{"id": id, "type": "function",
                    "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": id, "content": format!("text {id}")},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id}]},
            ],
        });
        let out = strip_from_body(body.to_string().as_bytes()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["messages"][0]["tool_calls"][0]["id"], "fc_1");
        assert_eq!(v["messages"][1]["tool_call_id"], "fc_1");
        assert_eq!(v["messages"][2]["content"][0]["tool_use_id"], "fc_1");
        // Text is the client's: never touched.
        assert_eq!(v["messages"][1]["content"], format!("text {id}"));
        assert_eq!(strip_from_body(br#"{"model":"m","messages":[]}"#), None);
        assert_eq!(strip_from_body(br#"{"id":"x__gts_!!"}"#), None);
    }
}
