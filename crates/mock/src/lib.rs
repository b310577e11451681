//! Mock LLM server speaking Ollama's, OpenAI's, Anthropic's and Gemini's wire formats on one port, with fault injection.
//
// Used by the gateway's tests, by `llmux demo` and as the benchmark's upstream, so
// replies are deterministic, byte-faithful to the real servers and cheap to produce.
// Paths: Ollama `/`, `/api/*`; OpenAI `/v1/*` (chat, completions, embeddings, responses);
// Azure OpenAI `/openai/*`; Anthropic `/v1/messages` (and `/v1/models` when asked with
// `anthropic-version`); Gemini `/v1beta/models*` (and `/v1/models*` from google-genai clients).

mod anthropic;
mod gemini;
mod handler;
mod hook;
mod ollama;
mod openai;
mod pull;
mod reply;
mod responses;
mod script;
mod server;
mod state;
mod stream;
mod util;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::time::Duration;

pub use script::Scripted;
pub use server::{serve, MockServer};
pub use state::KeyRules;

/// How a mock node behaves. `Default` gives a fast, fault-free node named "mock" serving `llama3:latest`.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// Node name: echoed in the `x-mock-node` header and in the first token of every reply.
    pub name: String,
    /// Served models. Ollama rule: a request for "llama3" matches "llama3:latest"; exact match otherwise.
    pub models: Vec<String>,
    /// Models shown by `/api/ps` at start (models also appear there once used).
    pub loaded: Vec<String>,
    /// Delay before the first streamed chunk (and before a non-stream reply).
    pub ttft: Duration,
    /// Delay between streamed chunks.
    pub chunk_delay: Duration,
    /// Tokens per reply.
    pub chunks: usize,
    /// Embedding dimensions.
    pub dims: usize,
    /// If set, `/api/*`, `/v1/*` and `/v1beta/*` require a key: `Authorization: Bearer <key>`;
    /// Anthropic also takes `x-api-key`, Gemini takes only `x-goog-api-key` or `?key=`.
    pub api_key: Option<String>,
    /// More accepted keys (a provider account with several keys).
    pub extra_keys: Vec<String>,
    /// Keys answered with 401 `invalid_api_key`, as a revoked key is (Gemini: 403 `PERMISSION_DENIED`).
    pub revoked_keys: Vec<String>,
    /// Keys answered with 429 and `Retry-After` (`faults.retry_after`, else 20 s), as a rate-limited key is.
    pub limited_keys: Vec<String>,
    /// Anthropic requests without an `anthropic-version` header get 400, as the real API does.
    pub strict_anthropic_version: bool,
    /// Initial fault injection settings.
    pub faults: Faults,
    /// Models `/api/pull` finds in the "registry" (besides the node's own); any other name
    /// fails with Ollama's `pull model manifest: file does not exist`.
    pub registry: Vec<String>,
    /// Pause between two `/api/pull` progress lines (how fast a pull goes).
    pub pull_step: Duration,
}

/// What the mock's registry has by default: common Ollama library names.
pub const DEFAULT_REGISTRY: [&str; 8] = [
    "llama3",
    "llama3.1",
    "llama3.2",
    "mistral",
    "qwen2.5",
    "phi3",
    "gemma2",
    "nomic-embed-text",
];

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            name: "mock".to_owned(),
            models: vec!["llama3:latest".to_owned()],
            loaded: Vec::new(),
            ttft: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            chunks: 8,
            dims: 8,
            api_key: None,
            extra_keys: Vec::new(),
            revoked_keys: Vec::new(),
            limited_keys: Vec::new(),
            strict_anthropic_version: false,
            faults: Faults::default(),
            registry: DEFAULT_REGISTRY.iter().map(|m| (*m).to_owned()).collect(),
            pull_step: Duration::ZERO,
        }
    }
}

/// Fault injection knobs; deserializable so `POST /_mock/faults` can set them (missing fields = default).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Fraction of generation calls answered with `fail_status`. Deterministic: call n (0-based,
    /// counted since start or the last fault change) fails iff floor((n+1)*rate) > floor(n*rate).
    pub fail_rate: f64,
    /// Status of injected failures; 0 means 500.
    pub fail_status: u16,
    /// If set, injected failures carry `Retry-After: N`.
    pub retry_after: Option<u64>,
    /// Streaming: after N chunks the connection is cut abruptly (no final chunk, no `[DONE]`).
    pub drop_after: Option<usize>,
    /// Generation calls are accepted and never answered (until the client or the server goes away).
    pub hang: bool,
    /// Streaming: after N chunks stop sending but keep the connection open.
    pub stall_after: Option<usize>,
    /// Streaming: after N chunks the body ends cleanly (a proper end of the HTTP body) but
    /// without the dialect's final event: no `finish_reason`/`[DONE]`, `message_stop`,
    /// `finishReason` or `done: true`.
    pub truncate_after: Option<usize>,
}

/// Snapshot of what a mock node has seen. Control requests (`/_mock/*`) are not counted.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// All requests to the emulated APIs.
    pub requests: u64,
    /// chat/generate/completions/messages/generateContent/embedding calls received (including failed ones).
    pub generations: u64,
    /// Requests per path.
    pub by_path: BTreeMap<String, u64>,
    /// Requests being served right now (an open stream counts until it ends).
    pub in_flight: u64,
    /// Credential of the last request as sent: its `Authorization` header, or for Anthropic its
    /// `x-api-key` and for Gemini its `x-goog-api-key` header or `?key=` value when present.
    pub last_authorization: Option<String>,
    /// JSON body of the last request that had one.
    pub last_body: Option<serde_json::Value>,
    /// Calls answered with an injected failure.
    pub failed: u64,
    /// Requests per key (bearer token, `x-api-key`, `x-goog-api-key`, `?key=`), when the node checks keys.
    #[serde(default)]
    pub by_key: BTreeMap<String, u64>,
    /// W3C `traceparent` of the last request (None when it had none).
    #[serde(default)]
    pub last_traceparent: Option<String>,
    /// The `x-*` headers of the last request (`x-api-key` and `x-goog-api-key` left out).
    #[serde(default)]
    pub last_headers: BTreeMap<String, String>,
    /// Calls of the mock hook (`POST /hook`, see the `hook` module).
    #[serde(default)]
    pub hook_calls: u64,
    /// What the mock hook was last sent.
    #[serde(default)]
    pub last_hook: Option<serde_json::Value>,
}
