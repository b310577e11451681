//! A cached answer: the canonical answer (not any dialect's bytes), so that one entry can be
//! rendered whole or as a stream in the dialect of the call that hits it. Stored as a small
//! versioned JSON document (the Redis backend keeps these bytes; the memory backend the
//! decoded value).

use llmux_wire::canonical::{ChatResponse, FinishReason, ToolCall, Usage};
use serde_json::{json, Value};

/// Bumped when the document's shape changes: older entries then read as misses.
const VERSION: u64 = 1;

/// One answer in the cache.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The target that answered (the model name sent upstream, as `x-llmux-model` showed it).
    pub model: String,
    pub answer: ChatResponse,
}

impl Entry {
    pub fn to_bytes(&self) -> Vec<u8> {
        let a = &self.answer;
        let calls: Vec<Value> = a
            .tool_calls
            .iter()
            .map(|c| json!({"id": c.id, "name": c.name, "arguments": c.arguments}))
            .collect();
        let doc = json!({
            "v": VERSION,
            "model": self.model,
            "id": a.id,
            "answer_model": a.model,
            "created": a.created,
            "text": a.text,
            "tool_calls": calls,
            "finish": finish_str(&a.finish),
            "input_tokens": a.usage.input_tokens,
            "output_tokens": a.usage.output_tokens,
            "cached_input_tokens": a.usage.cached_input_tokens,
            "cache_write_tokens": a.usage.cache_write_tokens,
            "reasoning_tokens": a.usage.reasoning_tokens,
        });
        serde_json::to_vec(&doc).unwrap_or_default()
    }

    /// `None`: not an entry of this version (written by another llmux, or damaged).
    pub fn from_bytes(bytes: &[u8]) -> Option<Entry> {
        let v: Value = serde_json::from_slice(bytes).ok()?;
        if v.get("v")?.as_u64()? != VERSION {
            return None;
        }
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let n = |k: &str| v.get(k).and_then(Value::as_u64);
        let mut tool_calls = Vec::new();
        for c in v.get("tool_calls")?.as_array()? {
            let f = |k: &str| c.get(k).and_then(Value::as_str).map(str::to_string);
            tool_calls.push(ToolCall {
                id: f("id")?,
                name: f("name")?,
                arguments: f("arguments")?,
            });
        }
        Some(Entry {
            model: s("model")?,
            answer: ChatResponse {
                id: s("id")?,
                model: s("answer_model")?,
                created: n("created")?,
                text: s("text")?,
                tool_calls,
                finish: finish_of(&s("finish")?)?,
                usage: Usage {
                    input_tokens: n("input_tokens")?,
                    output_tokens: n("output_tokens")?,
                    cached_input_tokens: n("cached_input_tokens").unwrap_or(0),
                    cache_write_tokens: n("cache_write_tokens").unwrap_or(0),
                    reasoning_tokens: n("reasoning_tokens").unwrap_or(0),
                },
            },
        })
    }
}

/// Whether an answer that ended this way is worth serving again: a complete one (stopped, at
/// its length limit, or calling tools), never one a content filter cut, one paused by the
/// provider or one with a malformed tool call.
pub fn cacheable_finish(f: &FinishReason) -> bool {
    matches!(
        f,
        FinishReason::Stop | FinishReason::Length | FinishReason::ToolCalls
    )
}

fn finish_str(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Paused => "paused",
        FinishReason::MalformedToolCall => "malformed_tool_call",
    }
}

fn finish_of(s: &str) -> Option<FinishReason> {
    Some(match s {
        "stop" => FinishReason::Stop,
        "length" => FinishReason::Length,
        "tool_calls" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        "paused" => FinishReason::Paused,
        "malformed_tool_call" => FinishReason::MalformedToolCall,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let e = Entry {
            model: "gpt-4o".into(),
            answer: ChatResponse {
                id: "chatcmpl-1".into(),
                model: "gpt-4o-2024-08-06".into(),
                created: 1_700_000_000,
                text: "héllo \"x\"".into(),
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "f".into(),
                    arguments: "{\"a\":1}".into(),
                }],
                finish: FinishReason::ToolCalls,
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 5,
                    cached_input_tokens: 2,
                    cache_write_tokens: 1,
                    reasoning_tokens: 4,
                },
            },
        };
        assert_eq!(Entry::from_bytes(&e.to_bytes()), Some(e));
    }

    #[test]
    fn other_versions_and_garbage_are_misses() {
        assert_eq!(Entry::from_bytes(b"{\"v\":2}"), None);
        assert_eq!(Entry::from_bytes(b"not json"), None);
    }
}
