//! How a call leaves for an upstream of each kind: the dialect it speaks, its URLs and its auth headers.

use crate::upstream::Upstream;
use llmux_config::UpstreamKind;
use llmux_wire::canonical::{ChatRequest, Op};
use llmux_wire::Dialect;

/// Anthropic's API version header when the config names none.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";
/// Azure OpenAI's `api-version` when the config names none.
pub const AZURE_API_VERSION: &str = "2024-10-21";

/// The dialect a call to an upstream of `kind` is written in, for a client speaking `ingress`.
/// Ollama nodes take Ollama's own API from Ollama clients and their OpenAI-compatible `/v1`
/// from everyone else (one translation instead of two), unless the call carries what only the
/// native API can say ([`needs_ollama_native`]: the call then goes to `/api/chat`).
pub fn dialect_for(kind: UpstreamKind, ingress: Dialect) -> Dialect {
    match kind {
        UpstreamKind::Ollama if ingress == Dialect::Ollama => Dialect::Ollama,
        UpstreamKind::Ollama | UpstreamKind::Openai | UpstreamKind::Azure => Dialect::OpenAi,
        UpstreamKind::Anthropic => Dialect::Anthropic,
        UpstreamKind::Gemini => Dialect::Gemini,
    }
}

/// Whether a call to an Ollama node must use Ollama's native `/api/chat` (or `/api/generate`)
/// rather than its OpenAI-compatible `/v1`: it carries what only the native API can say —
/// `top_k`, `think`, `keep_alive` or runner options such as `num_ctx`.
pub fn needs_ollama_native(req: &ChatRequest) -> bool {
    req.top_k.is_some() || !req.ollama.is_empty()
}

/// Top-level members of an OpenAI body that only Ollama's native API carries.
const OLLAMA_NATIVE_MEMBERS: [&str; 4] = ["top_k", "options", "keep_alive", "think"];

/// Whether an OpenAI body names a top-level member only Ollama's native API carries. A byte
/// scan first, so a body that does not mention them is never parsed.
pub fn names_ollama_native(body: &[u8]) -> bool {
    let mentioned = OLLAMA_NATIVE_MEMBERS.iter().any(|m| {
        let quoted = format!("\"{m}\"");
        body.windows(quoted.len()).any(|w| w == quoted.as_bytes())
    });
    mentioned
        && serde_json::from_slice::<std::collections::HashMap<String, serde::de::IgnoredAny>>(body)
            .is_ok_and(|top| OLLAMA_NATIVE_MEMBERS.iter().any(|m| top.contains_key(*m)))
}

/// The root of the upstream's OpenAI-style API (`…/v1` for OpenAI kinds, `…/v1` under an Ollama node).
fn openai_root(up: &Upstream) -> String {
    match up.kind {
        UpstreamKind::Ollama => format!("{}/v1", up.base),
        _ => up.base.clone(),
    }
}

fn azure_version(up: &Upstream) -> &str {
    up.api_version.as_deref().unwrap_or(AZURE_API_VERSION)
}

/// URL of a chat or completion call written in `dialect`.
pub fn chat_url(up: &Upstream, dialect: Dialect, op: Op, model: &str, stream: bool) -> String {
    match (dialect, up.kind) {
        (Dialect::OpenAi, UpstreamKind::Azure) => format!(
            "{}/openai/deployments/{model}/{}?api-version={}",
            up.base,
            if op == Op::Completion {
                "completions"
            } else {
                "chat/completions"
            },
            azure_version(up)
        ),
        (Dialect::OpenAi, _) => format!(
            "{}/{}",
            openai_root(up),
            if op == Op::Completion {
                "completions"
            } else {
                "chat/completions"
            }
        ),
        (Dialect::Ollama, _) => format!(
            "{}/api/{}",
            up.base,
            if op == Op::Completion {
                "generate"
            } else {
                "chat"
            }
        ),
        (Dialect::Anthropic, _) => format!("{}/v1/messages", up.base),
        (Dialect::Gemini, _) if stream => {
            format!(
                "{}/v1beta/models/{model}:streamGenerateContent?alt=sse",
                up.base
            )
        }
        (Dialect::Gemini, _) => format!("{}/v1beta/models/{model}:generateContent", up.base),
    }
}

/// URL of an embeddings call written in `dialect`.
pub fn embed_url(up: &Upstream, dialect: Dialect, model: &str) -> String {
    match (dialect, up.kind) {
        (Dialect::OpenAi, UpstreamKind::Azure) => format!(
            "{}/openai/deployments/{model}/embeddings?api-version={}",
            up.base,
            azure_version(up)
        ),
        (Dialect::OpenAi, _) => format!("{}/embeddings", openai_root(up)),
        (Dialect::Ollama, _) => format!("{}/api/embed", up.base),
        (Dialect::Gemini, _) => format!("{}/v1beta/models/{model}:batchEmbedContents", up.base),
        // Anthropic has no embeddings API; routing never sends embeddings there.
        (Dialect::Anthropic, _) => format!("{}/v1/embeddings", up.base),
    }
}

/// The listing call the prober uses: cheap, authenticated, and it names the models.
pub fn listing_url(up: &Upstream) -> String {
    match up.kind {
        UpstreamKind::Ollama => format!("{}/api/tags", up.base),
        UpstreamKind::Openai => format!("{}/models", up.base),
        UpstreamKind::Anthropic => format!("{}/v1/models?limit=1000", up.base),
        UpstreamKind::Gemini => format!("{}/v1beta/models?pageSize=1000", up.base),
        UpstreamKind::Azure => format!(
            "{}/openai/models?api-version={}",
            up.base,
            azure_version(up)
        ),
    }
}

/// Model names out of a listing reply.
pub fn listed_models(kind: UpstreamKind, v: &serde_json::Value) -> Vec<String> {
    let (array, field) = match kind {
        UpstreamKind::Ollama => ("models", "name"),
        UpstreamKind::Gemini => ("models", "name"),
        _ => ("data", "id"),
    };
    v.get(array)
        .and_then(|a| a.as_array())
        .map(|items| {
            items
                .iter()
                .filter_map(|m| {
                    m.get(field)
                        .or_else(|| m.get("model"))
                        .and_then(|n| n.as_str())
                })
                // Gemini names models `models/gemini-…`; clients address them without the prefix.
                .map(|n| n.strip_prefix("models/").unwrap_or(n).to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether an upstream of `kind` reports a stream's usage when asked with OpenAI's
/// `stream_options.include_usage` (OpenAI, Azure, and Ollama's OpenAI-compatible `/v1`).
pub fn reports_stream_usage(kind: UpstreamKind) -> bool {
    matches!(
        kind,
        UpstreamKind::Openai | UpstreamKind::Azure | UpstreamKind::Ollama
    )
}

/// An OpenAI request body that asks for the stream's usage (`stream_options.include_usage`),
/// for accounting. A body without `stream_options` gets the member inserted after its opening
/// brace (every other byte kept as sent); one with `stream_options` is re-serialized with the
/// flag set. `None`: not a JSON object.
pub fn with_include_usage(body: &[u8]) -> Option<bytes::Bytes> {
    const MEMBER: &[u8] = br#""stream_options":{"include_usage":true},"#;
    let has_options = body
        .windows(b"\"stream_options\"".len())
        .any(|w| w == b"\"stream_options\"");
    if !has_options {
        let open = body.iter().position(|b| !b.is_ascii_whitespace())?;
        if body[open] != b'{' {
            return None;
        }
        let mut out = Vec::with_capacity(body.len() + MEMBER.len());
        out.extend_from_slice(&body[..=open]);
        out.extend_from_slice(MEMBER);
        out.extend_from_slice(&body[open + 1..]);
        return Some(bytes::Bytes::from(out));
    }
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    let opts = obj
        .entry("stream_options")
        .or_insert_with(|| serde_json::json!({}));
    if !opts.is_object() {
        *opts = serde_json::json!({});
    }
    opts.as_object_mut()?
        .insert("include_usage".into(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok().map(bytes::Bytes::from)
}

/// Adds the upstream's authentication (and version headers) to a probe's or a management
/// call's request.
pub fn authorize(
    req: reqwest::RequestBuilder,
    up: &Upstream,
    key: Option<&str>,
) -> reqwest::RequestBuilder {
    let mut headers = http::HeaderMap::new();
    authorize_headers(&mut headers, up, key);
    req.headers(headers)
}

/// The upstream's authentication (and version headers), added to `headers`. A key that
/// cannot be a header value (a control character in the config) is left out: the upstream
/// refuses the call as unauthenticated, and the key's failure shows where.
pub fn authorize_headers(headers: &mut http::HeaderMap, up: &Upstream, key: Option<&str>) {
    use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
    if up.kind == UpstreamKind::Anthropic {
        let version = up.api_version.as_deref().unwrap_or(ANTHROPIC_VERSION);
        if let Ok(v) = HeaderValue::from_str(version) {
            headers.insert(HeaderName::from_static("anthropic-version"), v);
        }
    }
    let Some(key) = key else { return };
    let (name, value) = match up.kind {
        UpstreamKind::Ollama | UpstreamKind::Openai => (
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")),
        ),
        UpstreamKind::Azure => (
            HeaderName::from_static("api-key"),
            HeaderValue::from_str(key),
        ),
        UpstreamKind::Anthropic => (
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_str(key),
        ),
        UpstreamKind::Gemini => (
            HeaderName::from_static("x-goog-api-key"),
            HeaderValue::from_str(key),
        ),
    };
    if let Ok(mut value) = value {
        value.set_sensitive(true);
        headers.insert(name, value);
    }
}

/// An upstream URL as the client sends it: parsed (and normalised, percent-encoding what a
/// model name in the path needs) by the URL standard's rules, then taken as an HTTP URI.
pub fn parse_uri(text: &str) -> Result<http::Uri, String> {
    let url = url::Url::parse(text).map_err(|e| format!("bad upstream URL {text}: {e}"))?;
    http::Uri::try_from(url.as_str()).map_err(|e| format!("bad upstream URL {text}: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn include_usage_is_added_keeping_the_clients_bytes() {
        let body = br#" {"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#;
        let out = with_include_usage(body).unwrap();
        assert_eq!(
            &out[..],
            &br#" {"stream_options":{"include_usage":true},"model":"m","stream":true,"messages":[{"role":"user","content":"x"}]}"#[..]
        );
        for body in [
            &br#"{"model":"m","stream_options":{"include_usage":false}}"#[..],
            &br#"{"model":"m","stream_options":null}"#[..],
        ] {
            let v: serde_json::Value =
                serde_json::from_slice(&with_include_usage(body).unwrap()).unwrap();
            assert_eq!(v["stream_options"]["include_usage"], true);
            assert_eq!(v["model"], "m");
        }
        assert!(with_include_usage(b"[1]").is_none());
    }

    #[test]
    fn ollama_native_members_are_top_level_ones() {
        assert!(names_ollama_native(br#"{"model":"m","top_k":4}"#));
        assert!(names_ollama_native(
            br#"{"options":{"num_ctx":8},"model":"m"}"#
        ));
        assert!(names_ollama_native(br#"{"keep_alive":"5m"}"#));
        assert!(names_ollama_native(br#"{"think":false}"#));
        // Named only inside a message, or not at all: the passthrough stays.
        assert!(!names_ollama_native(
            br#"{"model":"m","messages":[{"role":"user","content":"think"}]}"#
        ));
        assert!(!names_ollama_native(
            br#"{"model":"m","reasoning_effort":"low"}"#
        ));
        assert!(!names_ollama_native(br#"{"top_k":"#));
    }
}
