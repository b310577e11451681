//! What a call asks of the cache (`cache-control`), and its key: a SHA-256 over the kind of
//! call and the request body as the client sent it, in a canonical form — object keys sorted,
//! the model replaced by the one asked for, and the fields that do not change the answer left
//! out (`stream`, `stream_options`, `user`, `metadata`, Ollama's `keep_alive`).

use crate::endpoint::Endpoint;
use axum::http::{header, HeaderMap};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bumped when the key's composition changes (old entries are then never found).
const KEY_VERSION: &str = "llmux-cache-v1";

/// Top-level fields that never change the answer.
const IGNORED: [&str; 6] = [
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "keep_alive",
];

/// What the client's `cache-control` asks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directive {
    /// `no-cache` (or `no-store`): do not answer from the cache.
    pub no_read: bool,
    /// `no-store`: do not keep this answer either.
    pub no_write: bool,
}

impl Directive {
    pub fn of(headers: &HeaderMap) -> Directive {
        let mut d = Directive::default();
        for v in headers.get_all(header::CACHE_CONTROL) {
            let Ok(v) = v.to_str() else { continue };
            for token in v.split(',') {
                let name = token.split('=').next().unwrap_or("").trim();
                if name.eq_ignore_ascii_case("no-cache") {
                    d.no_read = true;
                } else if name.eq_ignore_ascii_case("no-store") {
                    d.no_read = true;
                    d.no_write = true;
                }
            }
        }
        d
    }
}

/// The key of a call to `endpoint` for `model` with `body`; `None` when the body is not a
/// JSON object (the call then fails on its own, uncached) or asks for more than one entry
/// keeps (several choices, log probabilities).
pub fn key_for(endpoint: Endpoint, model: &str, body: &[u8]) -> Option<[u8; 32]> {
    let Ok(Value::Object(mut o)) = serde_json::from_slice::<Value>(body) else {
        return None;
    };
    if !fits_one_entry(&o) {
        return None;
    }
    for f in IGNORED {
        o.remove(f);
    }
    // A Gemini stream and a whole Gemini call ask the same: one entry serves both.
    let kind = match endpoint {
        Endpoint::GeminiStream => Endpoint::GeminiGenerate,
        e => e,
    };
    let mut text = String::with_capacity(body.len() + 64);
    text.push_str(KEY_VERSION);
    text.push('\n');
    text.push_str(kind.as_str());
    text.push('\n');
    // As a JSON string, so that no model name can run into what follows.
    text.push_str(&Value::String(model.to_string()).to_string());
    text.push('\n');
    canonical(&Value::Object(o), &mut text);
    Some(Sha256::digest(text.as_bytes()).into())
}

/// Whether the answer fits the canonical form an entry keeps: one choice, no log
/// probabilities (a request for several choices — OpenAI `n`, Gemini `candidateCount` — or for
/// `logprobs` would be answered with less than it asked for, so it is not cached).
fn fits_one_entry(o: &serde_json::Map<String, Value>) -> bool {
    let more_than_one = |v: Option<&Value>| v.and_then(Value::as_u64).is_some_and(|n| n > 1);
    let candidates = o
        .get("generationConfig")
        .and_then(|g| g.get("candidateCount"));
    let logprobs = o
        .get("logprobs")
        .is_some_and(|v| v.as_bool() != Some(false) && !v.is_null());
    !more_than_one(o.get("n")) && !more_than_one(candidates) && !logprobs
}

/// `v` as JSON with every object's keys in sorted order, whatever serde_json's map keeps.
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(o) => {
            let mut keys: Vec<&String> = o.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                if let Some(x) = o.get(k) {
                    canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn key(body: &str) -> [u8; 32] {
        key_for(Endpoint::ChatCompletions, "gpt-4o", body.as_bytes()).unwrap_or_default()
    }

    #[test]
    fn ignores_order_stream_and_user() {
        let a = key(r#"{"model":"x","messages":[{"role":"user","content":"hi"}],"temperature":0}"#);
        let b = key(
            r#"{"temperature":0,"stream":true,"user":"u1","messages":[{"content":"hi","role":"user"}]}"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn parameters_messages_endpoint_and_model_matter() {
        let base = r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0}"#;
        let a = key(base);
        assert_ne!(
            a,
            key(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":1}"#)
        );
        assert_ne!(
            a,
            key(r#"{"messages":[{"role":"user","content":"ho"}],"temperature":0}"#)
        );
        assert_ne!(
            a,
            key(r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0,"max_tokens":5}"#)
        );
        let other = key_for(Endpoint::AnthropicMessages, "gpt-4o", base.as_bytes());
        assert_ne!(Some(a), other);
        let model = key_for(Endpoint::ChatCompletions, "gpt-4o-mini", base.as_bytes());
        assert_ne!(Some(a), model);
    }

    #[test]
    fn several_choices_or_logprobs_are_not_cached() {
        let m = r#""messages":[{"role":"user","content":"hi"}]"#;
        for extra in [r#""n":3"#, r#""logprobs":true"#] {
            let body = format!("{{{m},{extra}}}");
            assert!(
                key_for(Endpoint::ChatCompletions, "m", body.as_bytes()).is_none(),
                "{body}"
            );
        }
        let body = format!(r#"{{{m},"n":1,"logprobs":false}}"#);
        assert!(key_for(Endpoint::ChatCompletions, "m", body.as_bytes()).is_some());
        let gemini = r#"{"contents":[],"generationConfig":{"candidateCount":2}}"#;
        assert!(key_for(Endpoint::GeminiGenerate, "m", gemini.as_bytes()).is_none());
    }

    #[test]
    fn not_an_object_has_no_key() {
        assert!(key_for(Endpoint::ChatCompletions, "m", b"[1]").is_none());
        assert!(key_for(Endpoint::ChatCompletions, "m", b"{").is_none());
    }

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(Directive::of(&h), Directive::default());
        h.insert(
            header::CACHE_CONTROL,
            "max-age=0, No-Cache".parse().unwrap(),
        );
        assert_eq!(
            Directive::of(&h),
            Directive {
                no_read: true,
                no_write: false
            }
        );
        h.insert(header::CACHE_CONTROL, "no-store".parse().unwrap());
        assert_eq!(
            Directive::of(&h),
            Directive {
                no_read: true,
                no_write: true
            }
        );
    }
}
