//! Token counts out of relayed bytes: the usage tap that reads an upstream's reported usage as
//! its answer passes (SSE, NDJSON or whole JSON), and estimates when it reports none.

use super::{estimate_tokens, Tokens};
use bytes::Bytes;
use llmux_wire::canonical::Usage;
use llmux_wire::Dialect;
use serde_json::Value;

/// Lines longer than this are not scanned for usage (no usage line comes near it).
const MAX_LINE: usize = 1 << 20;
/// Whole (non-streamed) bodies larger than this are not parsed for usage: tokens are estimated.
const MAX_BODY: usize = 8 << 20;

/// The members of a whole answer the tap reads. The rest — the generated text under
/// `choices` or `content`, which is most of a long answer — is skipped by the parser rather
/// than built into a tree of strings only to be dropped.
#[derive(serde::Deserialize)]
struct Facts {
    usage: Option<Value>,
    message: Option<Value>,
    response: Option<Value>,
    prompt_eval_count: Option<Value>,
    eval_count: Option<Value>,
    #[serde(rename = "usageMetadata")]
    usage_metadata: Option<Value>,
    model: Option<Value>,
}

impl Facts {
    fn into_value(self) -> Value {
        let members = [
            ("usage", self.usage),
            ("message", self.message),
            ("response", self.response),
            ("prompt_eval_count", self.prompt_eval_count),
            ("eval_count", self.eval_count),
            ("usageMetadata", self.usage_metadata),
            ("model", self.model),
        ];
        Value::Object(
            members
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?)))
                .collect(),
        )
    }
}

/// A whole answer reduced to the members [`UsageTap::value`] reads (an array of chunks — a
/// Gemini stream sent as JSON — item by item). What the narrow parse refuses (not an object,
/// a member given twice) is parsed whole, as before.
fn answer_facts(body: &[u8]) -> Option<Value> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace())?;
    let narrow = if *first == b'[' {
        serde_json::from_slice::<Vec<Facts>>(body)
            .ok()
            .map(|items| Value::Array(items.into_iter().map(Facts::into_value).collect()))
    } else {
        serde_json::from_slice::<Facts>(body)
            .ok()
            .map(Facts::into_value)
    };
    narrow.or_else(|| serde_json::from_slice::<Value>(body).ok())
}

/// Reads the upstream's reported usage out of the bytes as they pass, without holding any back:
/// SSE and NDJSON are scanned line by line (only lines that mention a usage field are parsed),
/// a whole JSON body is parsed once at its end.
pub struct UsageTap {
    streaming: bool,
    buf: Vec<u8>,
    overflow: bool,
    input: Option<u64>,
    output: Option<u64>,
    bytes: u64,
    /// Bytes of generated text seen in the stream (content, text and argument deltas): what an
    /// estimate of the output counts when the upstream reports no usage — never the framing.
    text_bytes: u64,
    /// Stream chunks seen (SSE events / NDJSON lines that carry data).
    chunks: u64,
    /// The model the upstream named in its answer (the first `"model"` it reported).
    reported_model: Option<String>,
    /// Cache reads and writes of the prompt, and reasoning tokens, as last reported.
    detail: Detail,
}

/// The parts of the counts that some upstreams report apart.
#[derive(Clone, Copy, Debug, Default)]
struct Detail {
    cached: u64,
    cache_write: u64,
    reasoning: u64,
}

impl UsageTap {
    /// `stream`: `Some(format)` for SSE (`OpenAi`) or NDJSON (`Ollama`) bodies, `None` for a whole JSON body.
    pub fn new(stream: Option<Dialect>) -> UsageTap {
        UsageTap {
            streaming: stream.is_some(),
            buf: Vec::new(),
            overflow: false,
            input: None,
            output: None,
            bytes: 0,
            text_bytes: 0,
            chunks: 0,
            reported_model: None,
            detail: Detail::default(),
        }
    }

    pub fn feed(&mut self, chunk: &Bytes) {
        self.bytes += chunk.len() as u64;
        if !self.streaming {
            if self.buf.len() + chunk.len() > MAX_BODY {
                self.overflow = true;
                self.buf = Vec::new();
            }
            if !self.overflow {
                self.buf.extend_from_slice(chunk);
            }
            return;
        }
        let mut rest: &[u8] = chunk;
        while let Some(nl) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(nl);
            if self.overflow {
                self.overflow = false;
            } else if self.buf.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.buf);
                whole.extend_from_slice(line);
                self.line(&whole);
                whole.clear();
                self.buf = whole;
            }
            rest = &tail[1..];
        }
        if !rest.is_empty() && !self.overflow {
            if self.buf.len() + rest.len() > MAX_LINE {
                self.overflow = true;
                self.buf.clear();
            } else {
                self.buf.extend_from_slice(rest);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let json = line.strip_prefix(b"data:").unwrap_or(line);
        let trimmed = json.trim_ascii();
        if trimmed.starts_with(b"{") || (trimmed.starts_with(b"[") && trimmed != b"[DONE]") {
            self.chunks += 1;
            self.text_bytes += text_bytes(trimmed);
            if self.reported_model.is_none() {
                self.reported_model = string_field(trimmed, b"\"model\":");
            }
        }
        let mentions = |needle: &[u8]| json.windows(needle.len()).any(|w| w == needle);
        if !(mentions(b"usage") || mentions(b"usageMetadata") || mentions(b"eval_count")) {
            return;
        }
        if let Ok(v) = serde_json::from_slice::<Value>(json.trim_ascii()) {
            self.value(&v);
        }
    }

    fn value(&mut self, v: &Value) {
        if let Value::Array(items) = v {
            // Gemini's non-SSE stream: a JSON array of chunks.
            for item in items {
                self.value(item);
            }
            return;
        }
        let num = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64);
        // OpenAI (chat, completions, embeddings), Anthropic (message, message_delta), OpenAI
        // Responses (`response.completed` carries the response object).
        let usage = v
            .get("usage")
            .or_else(|| v.get("message").and_then(|m| m.get("usage")))
            .or_else(|| v.get("response").and_then(|m| m.get("usage")));
        if let Some(u) = usage.filter(|u| u.is_object()) {
            self.usage_detail(u);
            if let Some(n) = num(u, "prompt_tokens").or_else(|| num(u, "input_tokens")) {
                // Anthropic counts cache reads and writes apart from `input_tokens`.
                let cache = num(u, "cache_read_input_tokens").unwrap_or(0)
                    + num(u, "cache_creation_input_tokens").unwrap_or(0);
                self.input = Some(n + cache);
            }
            if let Some(n) = num(u, "completion_tokens").or_else(|| num(u, "output_tokens")) {
                self.output = Some(n);
            }
        }
        // Ollama.
        if let Some(n) = num(v, "prompt_eval_count") {
            self.input = Some(n);
        }
        if let Some(n) = num(v, "eval_count") {
            self.output = Some(n);
        }
        // Gemini: cumulative in every chunk that carries it.
        if let Some(u) = v.get("usageMetadata") {
            if let Some(n) = num(u, "cachedContentTokenCount") {
                self.detail.cached = n;
            }
            if let Some(n) = num(u, "thoughtsTokenCount") {
                self.detail.reasoning = n;
            }
            if let Some(n) = num(u, "promptTokenCount") {
                self.input = Some(n);
            }
            let out = num(u, "candidatesTokenCount").unwrap_or(0)
                + num(u, "thoughtsTokenCount").unwrap_or(0);
            if u.get("candidatesTokenCount").is_some() || out > 0 {
                self.output = Some(out);
            }
        }
    }

    /// OpenAI's `*_tokens_details`, the Responses API's, and Anthropic's cache counts.
    fn usage_detail(&mut self, u: &Value) {
        let at = |outer: &str, key: &str| u.get(outer).and_then(|d| d.get(key)?.as_u64());
        let cached = at("prompt_tokens_details", "cached_tokens")
            .or_else(|| at("input_tokens_details", "cached_tokens"))
            .or_else(|| u.get("cache_read_input_tokens").and_then(Value::as_u64));
        if let Some(n) = cached {
            self.detail.cached = n;
        }
        if let Some(n) = u.get("cache_creation_input_tokens").and_then(Value::as_u64) {
            self.detail.cache_write = n;
        }
        let reasoning = at("completion_tokens_details", "reasoning_tokens")
            .or_else(|| at("output_tokens_details", "reasoning_tokens"));
        if let Some(n) = reasoning {
            self.detail.reasoning = n;
        }
    }

    /// Whether the upstream reported the input tokens (call after [`UsageTap::finish`]).
    pub fn input_reported(&self) -> bool {
        self.input.is_some()
    }

    /// Data chunks of a stream seen so far (SSE events or NDJSON lines).
    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The model the upstream named in its answer, if it named one.
    pub fn reported_model(&self) -> Option<&str> {
        self.reported_model.as_deref()
    }

    /// Reports the usage seen; missing counts are estimated from `request_bytes` and the
    /// bytes relayed, and flagged.
    pub fn finish(&mut self, request_bytes: u64) -> Tokens {
        if !self.streaming && !self.overflow && !self.buf.is_empty() {
            if let Some(v) = answer_facts(&self.buf) {
                self.value(&v);
                if let Some(m) = v.get("model").and_then(Value::as_str) {
                    self.reported_model = Some(cap(m, MAX_CLIENT_STRING).to_string());
                }
            }
            self.buf = Vec::new();
        } else if self.streaming && !self.buf.is_empty() && !self.overflow {
            let last = std::mem::take(&mut self.buf);
            self.line(&last);
        }
        // A stream's output estimate counts the generated text only: SSE framing and JSON
        // envelopes are most of a stream's bytes (an estimate from them over-charges ~70x).
        let answer_bytes = if self.streaming {
            self.text_bytes
        } else {
            self.bytes
        };
        self.with_detail(tokens(self.input, self.output, request_bytes, answer_bytes))
    }

    fn with_detail(&self, t: Tokens) -> Tokens {
        Tokens {
            cached: self.detail.cached,
            cache_write: self.detail.cache_write,
            reasoning: self.detail.reasoning,
            ..t
        }
    }

    /// What the tap knows so far without ending it: for a stream cut before its end.
    pub fn so_far(&self, request_bytes: u64) -> Tokens {
        let answer_bytes = if self.streaming {
            self.text_bytes
        } else {
            self.bytes
        };
        self.with_detail(tokens(self.input, self.output, request_bytes, answer_bytes))
    }
}

/// Keys whose string values are generated text in a stream chunk of some dialect: OpenAI
/// `content`/`text`/`arguments`/`reasoning_content`, Anthropic `text`/`partial_json`/`thinking`,
/// Ollama `content`/`response`, Gemini `text`.
const TEXT_KEYS: [&[u8]; 7] = [
    b"\"content\":",
    b"\"text\":",
    b"\"arguments\":",
    b"\"reasoning_content\":",
    b"\"partial_json\":",
    b"\"thinking\":",
    b"\"response\":",
];

/// Bytes of the string values of [`TEXT_KEYS`] in one JSON line (escapes count as one byte).
/// A byte scan, not a parse: it runs on every chunk of a stream.
fn text_bytes(json: &[u8]) -> u64 {
    let mut total = 0;
    let mut i = 0;
    while i < json.len() {
        if json[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(key) = TEXT_KEYS.iter().find(|k| json[i..].starts_with(k)) else {
            i += 1;
            continue;
        };
        i += key.len();
        while json.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        if json.get(i) != Some(&b'"') {
            continue;
        }
        i += 1;
        while i < json.len() {
            match json[i] {
                b'\\' => {
                    total += 1;
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                _ => {
                    total += 1;
                    i += 1;
                }
            }
        }
    }
    total
}

/// The first string value of `key` (e.g. `"model":`) in a JSON line, capped.
fn string_field(json: &[u8], key: &[u8]) -> Option<String> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = json[at..].trim_ascii_start();
    let mut de = serde_json::Deserializer::from_slice(rest);
    let s = <String as serde::Deserialize>::deserialize(&mut de).ok()?;
    Some(cap(&s, MAX_CLIENT_STRING).to_string())
}

/// Longest client- or upstream-supplied string llmux echoes in a message or stores in the
/// call log (models, users, ids): longer ones are cut, so a huge name cannot bloat either.
pub const MAX_CLIENT_STRING: usize = 256;

/// `s` cut to at most `max` bytes, on a character boundary.
pub fn cap(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Reported counts where known, estimates (flagged) where not.
pub fn tokens(
    input: Option<u64>,
    output: Option<u64>,
    request_bytes: u64,
    response_bytes: u64,
) -> Tokens {
    Tokens {
        input: input.unwrap_or_else(|| estimate_tokens(request_bytes)),
        output: output.unwrap_or_else(|| estimate_tokens(response_bytes)),
        estimated: input.is_none() || output.is_none(),
        ..Tokens::default()
    }
}

/// The canonical usage of a translated call (all zeros means the upstream reported none).
pub fn from_canonical(u: Option<Usage>, request_bytes: u64, response_bytes: u64) -> Tokens {
    match u {
        Some(u) if u.input_tokens > 0 || u.output_tokens > 0 => Tokens {
            input: u.input_tokens,
            output: u.output_tokens,
            estimated: false,
            cached: u.cached_input_tokens,
            cache_write: u.cache_write_tokens,
            reasoning: u.reasoning_tokens,
        },
        _ => tokens(None, None, request_bytes, response_bytes),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn tap(stream: Option<Dialect>, chunks: &[&str]) -> Tokens {
        let mut t = UsageTap::new(stream);
        for c in chunks {
            t.feed(&Bytes::copy_from_slice(c.as_bytes()));
        }
        t.finish(400)
    }

    #[test]
    fn reads_cached_and_reasoning_tokens_of_every_dialect() {
        let openai = tap(
            Some(Dialect::OpenAi),
            &["data: {\"choices\":[],\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":50,\"prompt_tokens_details\":{\"cached_tokens\":30},\"completion_tokens_details\":{\"reasoning_tokens\":20}}}\n\n"],
        );
        assert_eq!(
            (openai.input, openai.output, openai.cached, openai.reasoning),
            (100, 50, 30, 20)
        );
        let anthropic = tap(
            Some(Dialect::OpenAi),
            &[
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":60,\"cache_read_input_tokens\":30,\"cache_creation_input_tokens\":10,\"output_tokens\":1}}}\n\n",
                "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\n\n",
            ],
        );
        assert_eq!(
            (
                anthropic.input,
                anthropic.output,
                anthropic.cached,
                anthropic.cache_write
            ),
            (100, 50, 30, 10)
        );
        let gemini = tap(
            None,
            &["{\"usageMetadata\":{\"promptTokenCount\":100,\"cachedContentTokenCount\":30,\"candidatesTokenCount\":30,\"thoughtsTokenCount\":20}}"],
        );
        assert_eq!(
            (gemini.input, gemini.output, gemini.cached, gemini.reasoning),
            (100, 50, 30, 20)
        );
    }

    /// A whole answer is read through its usage members only; what it reports is what a
    /// parse of the whole tree reported, in every dialect's shape.
    #[test]
    fn whole_answers_read_as_parsed_whole() {
        let answers = [
            r#"{"id":"c","choices":[{"message":{"role":"assistant","content":"hi"}}],"model":"gpt-x","usage":{"prompt_tokens":9,"completion_tokens":7,"prompt_tokens_details":{"cached_tokens":3}}}"#,
            r#"{"type":"message","content":[{"type":"text","text":"hi"}],"model":"claude-x","usage":{"input_tokens":5,"cache_read_input_tokens":2,"output_tokens":4}}"#,
            r#"{"model":"llama3","message":{"role":"assistant","content":"hi"},"done":true,"prompt_eval_count":6,"eval_count":2}"#,
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6,"thoughtsTokenCount":1},"modelVersion":"g"}"#,
            r#"[{"candidates":[]},{"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6}}]"#,
            r#"{"usage":{"prompt_tokens":1},"usage":{"prompt_tokens":8,"completion_tokens":2}}"#,
            r#"{"response":{"usage":{"input_tokens":3,"output_tokens":5}}}"#,
            r#""just a string""#,
        ];
        for body in answers {
            let narrow = answer_facts(body.as_bytes());
            let whole: Value = serde_json::from_str(body).unwrap();
            let (mut a, mut b) = (UsageTap::new(None), UsageTap::new(None));
            a.value(&narrow.unwrap());
            b.value(&whole);
            assert_eq!((a.input, a.output), (b.input, b.output), "{body}");
            assert_eq!(
                (a.detail.cached, a.detail.reasoning),
                (b.detail.cached, b.detail.reasoning),
                "{body}"
            );
        }
        let mut t = UsageTap::new(None);
        t.feed(&Bytes::from_static(answers[0].as_bytes()));
        let tokens = t.finish(100);
        assert_eq!((tokens.input, tokens.output, tokens.cached), (9, 7, 3));
        assert_eq!(t.reported_model.as_deref(), Some("gpt-x"));
    }

    #[test]
    fn usage_in_every_dialect_split_anywhere() {
        let openai = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":7}}\n\ndata: [DONE]\n\n";
        let anthropic = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n";
        let ollama = "{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"done\":true,\"prompt_eval_count\":5,\"eval_count\":3}\n";
        let gemini = "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":2}}\r\n\r\ndata: {\"usageMetadata\":{\"promptTokenCount\":4,\"candidatesTokenCount\":6}}\r\n\r\n";
        for (text, fmt, want) in [
            (openai, Dialect::OpenAi, (12, 7)),
            (anthropic, Dialect::OpenAi, (9, 15)),
            (ollama, Dialect::Ollama, (5, 3)),
            (gemini, Dialect::OpenAi, (4, 6)),
        ] {
            for split in 1..text.len() {
                let (a, b) = text.split_at(split);
                let t = tap(Some(fmt), &[a, b]);
                assert_eq!(
                    (t.input, t.output, t.estimated),
                    (want.0, want.1, false),
                    "{text} @ {split}"
                );
            }
        }
    }

    #[test]
    fn whole_bodies_and_estimates() {
        let t = tap(
            None,
            &[
                "{\"usage\":{\"prompt_tokens\":3,",
                "\"completion_tokens\":4}}",
            ],
        );
        assert_eq!((t.input, t.output, t.estimated), (3, 4, false));
        let t = tap(
            None,
            &["[{\"usageMetadata\":{\"promptTokenCount\":1,\"candidatesTokenCount\":2}}]"],
        );
        assert_eq!((t.input, t.output), (1, 2));
        let t = tap(Some(Dialect::OpenAi), &["data: {\"choices\":[]}\n\n"]);
        assert!(t.estimated);
        assert_eq!(t.input, 100);
    }

    #[test]
    fn a_stream_without_usage_is_estimated_from_its_text_not_its_framing() {
        let mut text = String::new();
        for _ in 0..50 {
            text.push_str("data: {\"id\":\"chatcmpl-123\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word\"},\"finish_reason\":null}]}\n\n");
        }
        text.push_str("data: [DONE]\n\n");
        let mut t = UsageTap::new(Some(Dialect::OpenAi));
        t.feed(&Bytes::from(text));
        let tokens = t.finish(400);
        assert!(tokens.estimated);
        // 50 × "word" = 200 bytes of text = 50 tokens; the framing (~7 KB) does not count.
        assert_eq!(tokens.output, 50);
        assert_eq!(t.chunks(), 50);
        assert_eq!(t.reported_model(), Some("gpt-4o-mini"));
        // Escapes count as one character each.
        assert_eq!(text_bytes(br#"{"delta":{"content":"a\"b\n"}}"#), 4);
        assert_eq!(
            text_bytes(br#"{"message":{"content": "abc"},"response":"de"}"#),
            5
        );
    }

    #[test]
    fn caps_on_a_char_boundary() {
        assert_eq!(cap("héllo", 2), "h");
        assert_eq!(cap("abc", 5), "abc");
    }
}
