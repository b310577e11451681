//! Whether a passed-through stream reached its dialect's final event: a stream the upstream
//! closed cleanly half-way must not reach the client as a whole answer.
//!
//! Cheap enough for the passthrough hot path: lines are scanned for the final event's
//! marker and parsed only when they mention it; once the end is seen nothing more is read.

use serde_json::Value;

use crate::Dialect;

/// What the relay says when an upstream's stream ended without its final event.
pub const CUT_SHORT: &str = "the stream ended before its final event: the answer is incomplete";

/// Lines longer than this are skipped (no final event comes near it).
const MAX_LINE: usize = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Chat completions and legacy completions: a `finish_reason`, `[DONE]` or an error.
    OpenAi,
    /// The Responses API: `response.completed` / `.incomplete` / `.failed` or an error.
    Responses,
    /// `message_stop` or an `error` event.
    Anthropic,
    /// A candidate's `finishReason`, a blocked prompt, or an error.
    Gemini,
    /// `"done": true` or an error.
    Ollama,
}

/// Watches a stream's bytes for the event that ends it in its dialect.
#[derive(Debug)]
pub struct EndWatch {
    kind: Kind,
    partial: Vec<u8>,
    overflow: bool,
    ended: bool,
}

impl EndWatch {
    /// A watch for a stream in `dialect` (`responses`: OpenAI's Responses API).
    pub fn new(dialect: Dialect, responses: bool) -> EndWatch {
        let kind = match dialect {
            Dialect::OpenAi if responses => Kind::Responses,
            Dialect::OpenAi => Kind::OpenAi,
            Dialect::Anthropic => Kind::Anthropic,
            Dialect::Gemini => Kind::Gemini,
            Dialect::Ollama => Kind::Ollama,
        };
        EndWatch {
            kind,
            partial: Vec::new(),
            overflow: false,
            ended: false,
        }
    }

    /// Whether the final event (or an error event) was seen.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads the bytes as they pass; a line cut by a chunk boundary waits for its end.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !self.ended {
            let Some(nl) = rest.iter().position(|b| *b == b'\n') else {
                break;
            };
            let (line, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.overflow {
                self.overflow = false;
                continue;
            }
            if self.partial.is_empty() {
                self.line(line);
            } else {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                self.line(&whole);
            }
        }
        if self.ended || rest.is_empty() || self.overflow {
            return;
        }
        if self.partial.len() + rest.len() > MAX_LINE {
            self.overflow = true;
            self.partial.clear();
        } else {
            self.partial.extend_from_slice(rest);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = name.trim_ascii();
            self.ended = match self.kind {
                Kind::Anthropic => name == b"message_stop" || name == b"error",
                Kind::Responses => FINAL_RESPONSES.iter().any(|f| name == f.as_bytes()),
                _ => false,
            };
            return;
        }
        let json = line.strip_prefix(b"data:").unwrap_or(line).trim_ascii();
        if self.kind == Kind::OpenAi && json == b"[DONE]" {
            self.ended = true;
            return;
        }
        let marker: &[&[u8]] = match self.kind {
            Kind::OpenAi => &[b"finish_reason", b"\"error\""],
            Kind::Responses => &[
                b"response.completed",
                b"response.incomplete",
                b"response.failed",
                b"\"error\"",
            ],
            Kind::Anthropic => &[b"message_stop", b"\"error\""],
            Kind::Gemini => &[b"finishReason", b"blockReason", b"\"error\""],
            Kind::Ollama => &[b"\"done\"", b"\"error\""],
        };
        let mentions = |m: &[u8]| json.windows(m.len()).any(|w| w == m);
        if !marker.iter().any(|m| mentions(m)) {
            return;
        }
        // OpenAI names `finish_reason` in every chunk and Ollama `done` in every line: the
        // ones that say `null` / `false` are not final, and parsing each (about 17 allocations
        // a chunk) was most of what a passed-through stream allocated.
        let routine: Option<(&[u8], &[u8])> = match self.kind {
            Kind::OpenAi => Some((b"\"finish_reason\"", b"null")),
            Kind::Ollama => Some((b"\"done\"", b"false")),
            _ => None,
        };
        if let Some((key, value)) = routine {
            if !mentions(b"\"error\"") && every_value_is(json, key, value) {
                return;
            }
        }
        if let Ok(v) = serde_json::from_slice::<Value>(json) {
            self.ended = self.is_final(&v);
        }
    }

    fn is_final(&self, v: &Value) -> bool {
        if v.get("error").is_some_and(|e| !e.is_null()) {
            return true;
        }
        let str_at = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        match self.kind {
            Kind::OpenAi => v
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(|cs| cs.iter().any(|c| str_at(c, "finish_reason").is_some())),
            Kind::Responses => {
                str_at(v, "type").is_some_and(|t| FINAL_RESPONSES.contains(&t.as_str()))
            }
            Kind::Anthropic => {
                str_at(v, "type").is_some_and(|t| t == "message_stop" || t == "error")
            }
            Kind::Gemini => {
                let finished = v
                    .get("candidates")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| cs.iter().any(|c| str_at(c, "finishReason").is_some()));
                finished || v.pointer("/promptFeedback/blockReason").is_some()
            }
            Kind::Ollama => v.get("done").and_then(Value::as_bool) == Some(true),
        }
    }
}

/// Whether `key` occurs in `json` and each time as a key whose value starts with `value`;
/// anything else (another value, the key's text inside a string) is left to the parser.
fn every_value_is(json: &[u8], key: &[u8], value: &[u8]) -> bool {
    let mut rest = json;
    let mut seen = false;
    while let Some(at) = rest.windows(key.len()).position(|w| w == key) {
        rest = &rest[at + key.len()..];
        let Some(after) = rest.trim_ascii_start().strip_prefix(b":") else {
            return false;
        };
        if !after.trim_ascii_start().starts_with(value) {
            return false;
        }
        seen = true;
    }
    seen
}

/// The Responses API's final events.
const FINAL_RESPONSES: [&str; 4] = [
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of cutting `stream` in two gives the same verdict.
    fn verdict(dialect: Dialect, responses: bool, stream: &str) -> bool {
        let whole = {
            let mut w = EndWatch::new(dialect, responses);
            w.feed(stream.as_bytes());
            w.ended()
        };
        for cut in 0..stream.len() {
            let mut w = EndWatch::new(dialect, responses);
            w.feed(&stream.as_bytes()[..cut]);
            w.feed(&stream.as_bytes()[cut..]);
            assert_eq!(w.ended(), whole, "cut at {cut} of {stream:?}");
        }
        whole
    }

    #[test]
    fn openai_ends_with_a_finish_reason_or_done() {
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"finish_reason\"},\"finish_reason\":null}]}\n\n";
        assert!(!verdict(Dialect::OpenAi, false, text));
        let fin = "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert!(verdict(Dialect::OpenAi, false, &format!("{text}{fin}")));
        assert!(verdict(
            Dialect::OpenAi,
            false,
            &format!("{text}data: [DONE]\n\n")
        ));
        let err = "data: {\"error\":{\"message\":\"overloaded\"}}\n\n";
        assert!(verdict(Dialect::OpenAi, false, &format!("{text}{err}")));
    }

    #[test]
    fn routine_values_are_not_final_and_anything_else_is_parsed() {
        let key = b"\"finish_reason\"".as_slice();
        assert!(every_value_is(
            br#"{"a":1,"finish_reason": null}"#,
            key,
            b"null"
        ));
        let two = br#"{"choices":[{"finish_reason":null},{"finish_reason":"stop"}]}"#;
        assert!(!every_value_is(two, key, b"null"));
        // The key's text quoted inside a string is escaped, so it is not the key.
        let quoted = br#"{"delta":{"content":"\"finish_reason\":\"stop\""},"finish_reason":null}"#;
        assert!(every_value_is(quoted, key, b"null"));
        // The key's text as a value is not followed by a colon: parsed.
        let value = br#"{"tags":["finish_reason"],"finish_reason":null}"#;
        assert!(!every_value_is(value, key, b"null"));
        assert!(!every_value_is(br#"{"delta":{}}"#, key, b"null"));
        // Two choices, the second one finished: final.
        let n2 = "data: {\"choices\":[{\"index\":0,\"finish_reason\":null},{\"index\":1,\"finish_reason\":\"length\"}]}\n\n";
        assert!(verdict(Dialect::OpenAi, false, n2));
        // A routine chunk that carries an error is still read.
        let err = "data: {\"finish_reason\":null,\"error\":{\"message\":\"overloaded\"}}\n\n";
        assert!(verdict(Dialect::OpenAi, false, err));
        let ollama = "{\"message\":{\"content\":\"x\"},\"done\" : false}\n";
        assert!(!verdict(Dialect::Ollama, false, ollama));
        let spaced = "{\"message\":{\"content\":\"\"},\"done\" : true}\n";
        assert!(verdict(Dialect::Ollama, false, spaced));
    }

    #[test]
    fn anthropic_ends_with_message_stop() {
        let delta = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"}}\n\n";
        assert!(!verdict(Dialect::Anthropic, false, delta));
        let stop = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        assert!(verdict(
            Dialect::Anthropic,
            false,
            &format!("{delta}{stop}")
        ));
        // Without the `event:` line, the data's type says it.
        assert!(verdict(
            Dialect::Anthropic,
            false,
            "data: {\"type\":\"message_stop\"}\n\n"
        ));
    }

    #[test]
    fn gemini_ollama_and_responses_final_events() {
        let part =
            "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"finishReason\"}]}}]}\n\n";
        assert!(!verdict(Dialect::Gemini, false, part));
        let fin =
            "data: {\"candidates\":[{\"content\":{\"parts\":[]},\"finishReason\":\"STOP\"}]}\n\n";
        assert!(verdict(Dialect::Gemini, false, &format!("{part}{fin}")));
        let line = "{\"message\":{\"content\":\"done\"},\"done\":false}\n";
        assert!(!verdict(Dialect::Ollama, false, line));
        let done = "{\"message\":{\"content\":\"\"},\"done\":true}\n";
        assert!(verdict(Dialect::Ollama, false, &format!("{line}{done}")));
        let delta = "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"x\"}\n\n";
        assert!(!verdict(Dialect::OpenAi, true, delta));
        let done = "event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n";
        assert!(verdict(Dialect::OpenAi, true, &format!("{delta}{done}")));
    }
}
