//! The request as hooks see and change it: the canonical form, shown to external hooks as an
//! OpenAI chat-completions body; `set` applied to it; and a changed request written back into
//! the client's own body (for a call passed through untranslated) without losing what the
//! canonical form does not hold.

use crate::endpoint::Endpoint;
use bytes::Bytes;
use llmux_config::HookSet;
use llmux_wire::canonical::{ChatRequest, Codec, Op, Part, TranslateError};
use llmux_wire::translate;
use llmux_wire::Dialect;
use serde_json::{Map, Value};

/// `set`: `max_tokens` is a cap (the lower of the client's and the hook's), the rest replace
/// the client's values. Whether anything changed.
pub(crate) fn apply_set(req: &mut ChatRequest, set: &HookSet) -> bool {
    let before = req.clone();
    if let Some(cap) = set.max_tokens {
        req.max_tokens = Some(req.max_tokens.map_or(cap, |m| m.min(cap)));
    }
    if set.temperature.is_some() {
        req.temperature = set.temperature;
    }
    if set.top_p.is_some() {
        req.top_p = set.top_p;
    }
    if set.top_k.is_some() {
        req.top_k = set.top_k;
    }
    if set.seed.is_some() {
        req.seed = set.seed;
    }
    if set.frequency_penalty.is_some() {
        req.frequency_penalty = set.frequency_penalty;
    }
    if set.presence_penalty.is_some() {
        req.presence_penalty = set.presence_penalty;
    }
    *req != before
}

/// The prompt's text as `deny_pattern` reads it: the system prompt and every text part of
/// every message, one per line.
pub(crate) fn prompt_text(req: &ChatRequest) -> String {
    let mut out = req.system.clone().unwrap_or_default();
    for m in &req.messages {
        for p in &m.content {
            if let Part::Text(t) = p {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(t);
            }
        }
    }
    out
}

/// `req` encoded by `codec`; `top_k`, which OpenAI's chat completions lack but OpenAI-style
/// servers (vLLM, llama.cpp) and OpenAI's own decoder accept, is added by hand. Options only
/// Ollama's native API carries (`reasoning_effort` read as `think`, runner `options`) are left
/// out when the codec refuses them: a passthrough body keeps them as sent, and hooks do not
/// change them.
fn encode(codec: &dyn Codec, req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut r = req.clone();
    let extras = std::mem::take(&mut r.ollama) != Default::default();
    let top_k = r.top_k.take();
    let bytes = match codec.encode_request(req) {
        Ok(b) => b,
        Err(_) if top_k.is_some() || extras => codec.encode_request(&r)?,
        Err(e) => return Err(e),
    };
    let mut v: Value = serde_json::from_slice(&bytes)
        .map_err(|e| TranslateError::new("", format!("encoded request is not JSON: {e}")))?;
    if let (Some(k), Some(o)) = (top_k, v.as_object_mut()) {
        o.entry("top_k").or_insert(Value::from(k));
    }
    Ok(v)
}

/// The request as an external hook receives it: an OpenAI chat-completions body, its output
/// limit as the classic `max_tokens` (a hook may answer either spelling).
pub(crate) fn to_hook_json(req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut shown = req.clone();
    shown.legacy_max_tokens = true;
    encode(translate::codec(Dialect::OpenAi), &shown)
}

/// A hook's modified request (OpenAI chat-completions form) in canonical form. The model, the
/// stream flag and the call's kind stay the client's: routing and the answer's shape were
/// decided by them.
pub(crate) fn from_hook_json(
    request: &Value,
    original: &ChatRequest,
) -> Result<ChatRequest, TranslateError> {
    let mut v = request.clone();
    if let Some(o) = v.as_object_mut() {
        o.insert("model".into(), Value::from(original.model.clone()));
    }
    let bytes = serde_json::to_vec(&v).map_err(|e| TranslateError::new("", e.to_string()))?;
    let mut req = translate::codec(Dialect::OpenAi).decode_request(Op::Chat, &bytes)?;
    keep_call_shape(&mut req, original);
    Ok(req)
}

/// What a hook cannot change: the model, streaming, usage reporting, legacy prompt form.
pub(crate) fn keep_call_shape(req: &mut ChatRequest, original: &ChatRequest) {
    req.model.clone_from(&original.model);
    req.stream = original.stream;
    req.include_usage = original.include_usage;
    req.legacy_prompt = original.legacy_prompt;
    req.ollama.clone_from(&original.ollama);
}

/// The client's `body` with the changes from `original` to `changed` written in, in the
/// client's own dialect: fields the canonical form does not hold are kept as sent, fields the
/// change did not touch keep their original spelling, changed ones take the new value.
pub(crate) fn reencode(
    endpoint: Endpoint,
    body: &[u8],
    original: &ChatRequest,
    changed: &ChatRequest,
) -> Result<Bytes, TranslateError> {
    let codec = endpoint.codec();
    let mut sent: Value = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new("", format!("request body is not JSON: {e}")))?;
    // The output limit keeps the client's spelling (OpenAI's `max_tokens` or
    // `max_completion_tokens`), so a cap lands in the field the upstream reads.
    let legacy = sent.get("max_tokens").is_some() && sent.get("max_completion_tokens").is_none();
    let (mut original, mut changed) = (original.clone(), changed.clone());
    original.legacy_max_tokens = legacy;
    changed.legacy_max_tokens = legacy;
    let base = encode(codec, &original)?;
    let new = encode(codec, &changed)?;
    if let (Some(s), Some(b), Some(n)) = (sent.as_object_mut(), base.as_object(), new.as_object()) {
        merge(s, b, n);
        // A legacy completion carries its prompt as `prompt`, not as chat messages.
        if endpoint == Endpoint::Completions {
            if let Some(Value::Array(_)) = s.remove("messages") {
                s.insert("prompt".into(), Value::from(prompt_text(&changed)));
            }
        }
    }
    serde_json::to_vec(&sent)
        .map(Bytes::from)
        .map_err(|e| TranslateError::new("", e.to_string()))
}

/// Writes into `sent` what differs between `base` (the original, encoded) and `new` (the
/// changed request, encoded); objects are merged key by key, so an Ollama `options` or a
/// Gemini `generationConfig` keeps the keys llmux does not model.
fn merge(sent: &mut Map<String, Value>, base: &Map<String, Value>, new: &Map<String, Value>) {
    for (k, nv) in new {
        let bv = base.get(k);
        if bv == Some(nv) {
            continue;
        }
        match (sent.get_mut(k), bv, nv) {
            (Some(Value::Object(s)), Some(Value::Object(b)), Value::Object(n)) => merge(s, b, n),
            _ => {
                sent.insert(k.clone(), nv.clone());
            }
        }
    }
    for k in base.keys() {
        if !new.contains_key(k) {
            sent.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn decode(endpoint: Endpoint, body: &Value) -> ChatRequest {
        let op = endpoint.op().unwrap();
        endpoint
            .codec()
            .decode_request(op, &serde_json::to_vec(body).unwrap())
            .unwrap()
    }

    #[test]
    fn set_caps_max_tokens_and_replaces_the_rest() {
        let mut req = ChatRequest {
            max_tokens: Some(1000),
            temperature: Some(1.5),
            ..ChatRequest::default()
        };
        let set = HookSet {
            max_tokens: Some(512),
            temperature: Some(0.2),
            ..HookSet::default()
        };
        assert!(apply_set(&mut req, &set));
        assert_eq!((req.max_tokens, req.temperature), (Some(512), Some(0.2)));
        // Under the cap: the client's own value stays, and nothing changed.
        req.max_tokens = Some(100);
        assert!(!apply_set(&mut req, &set));
        assert_eq!(req.max_tokens, Some(100));
        req.max_tokens = None;
        assert!(apply_set(&mut req, &set));
        assert_eq!(req.max_tokens, Some(512));
    }

    #[test]
    fn reencode_keeps_what_the_canonical_form_lacks() {
        let body = json!({
            "model": "llama3", "stream": false,
            "messages": [{"role": "user", "content": "hi"}],
            "options": {"num_predict": 900, "num_ctx": 8192, "mirostat": 1},
            "keep_alive": "5m"
        });
        let original = decode(Endpoint::OllamaChat, &body);
        let mut changed = original.clone();
        changed.max_tokens = Some(64);
        let out = reencode(
            Endpoint::OllamaChat,
            &serde_json::to_vec(&body).unwrap(),
            &original,
            &changed,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["options"]["num_predict"], 64);
        assert_eq!(v["options"]["num_ctx"], 8192);
        assert_eq!(v["options"]["mirostat"], 1);
        assert_eq!(v["keep_alive"], "5m");
        assert_eq!(v["messages"], body["messages"]);
    }

    #[test]
    fn reencode_a_legacy_completion_keeps_its_prompt_form() {
        let body =
            json!({"model": "m", "prompt": "say hi", "max_tokens": 10, "user": "u1", "seed": 3});
        let original = decode(Endpoint::Completions, &body);
        let mut changed = original.clone();
        changed.messages[0].content = vec![Part::Text("say bye".into())];
        let out = reencode(
            Endpoint::Completions,
            &serde_json::to_vec(&body).unwrap(),
            &original,
            &changed,
        )
        .unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["prompt"], "say bye");
        assert!(v.get("messages").is_none());
        assert_eq!(
            (v["user"].clone(), v["seed"].clone()),
            (json!("u1"), json!(3))
        );
    }

    #[test]
    fn hook_json_round_trips_and_keeps_the_call_shape() {
        let body = json!({
            "model": "claude", "max_tokens": 300, "stream": true, "system": "be brief", "top_k": 5,
            "messages": [{"role": "user", "content": "hello"}]
        });
        let original = decode(Endpoint::AnthropicMessages, &body);
        let mut shown = to_hook_json(&original).unwrap();
        assert_eq!(
            shown["messages"][0],
            json!({"role": "system", "content": "be brief"})
        );
        assert_eq!(shown["top_k"], 5);
        shown["model"] = json!("other");
        shown["stream"] = json!(false);
        shown["max_tokens"] = json!(20);
        let back = from_hook_json(&shown, &original).unwrap();
        assert_eq!(back.model, "claude");
        assert!(back.stream);
        assert_eq!(back.max_tokens, Some(20));
        assert_eq!(back.top_k, Some(5));
        assert_eq!(back.system.as_deref(), Some("be brief"));
    }
}
