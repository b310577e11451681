//! An Anthropic SSE stream → canonical stream events.

use super::response::{error_of, finish_from_anthropic, input_tokens};
use crate::canonical::{StreamEvent, TranslateError, Usage};
use crate::json::count;
use crate::stream::decoder::FrameDecoder;
use crate::stream::framing::{SseEvent, SseParser};
use serde_json::Value;

#[derive(Default)]
pub(super) struct AnthropicStreamDecoder {
    /// Input tokens from `message_start`, reported with the output tokens of `message_delta`.
    input_tokens: u64,
    /// Content block index → canonical tool call index.
    tools: Vec<(u64, usize)>,
    /// An error ended the stream.
    done: bool,
}

impl FrameDecoder for AnthropicStreamDecoder {
    type Framing = SseParser;

    fn frame(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.done || ev.data.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            TranslateError::new("stream", format!("invalid JSON in an Anthropic event: {e}"))
        })?;
        if !v.is_object() {
            return Err(TranslateError::new(
                "stream",
                "an Anthropic stream event must be a JSON object",
            ));
        }
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        let str_of =
            |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        match ty {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(u) = m.get("usage") {
                    self.input_tokens = input_tokens(u);
                }
                out.push(StreamEvent::Start {
                    id: str_of(m, "id"),
                    model: str_of(m, "model"),
                });
            }
            "content_block_start" => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let cb = v.get("content_block").unwrap_or(&Value::Null);
                match cb.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        self.tools.push((block, index));
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: str_of(cb, "id"),
                            name: str_of(cb, "name"),
                        });
                        if let Some(input) = cb.get("input").and_then(Value::as_object) {
                            if !input.is_empty() {
                                out.push(StreamEvent::ToolCallArgs {
                                    index,
                                    fragment: Value::Object(input.clone()).to_string(),
                                });
                            }
                        }
                    }
                    Some("text") => {
                        let t = str_of(cb, "text");
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = str_of(d, "text");
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = str_of(d, "partial_json");
                        let index = self
                            .tools
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map(|(_, i)| *i);
                        if let (Some(index), false) = (index, fragment.is_empty()) {
                            out.push(StreamEvent::ToolCallArgs { index, fragment });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(StreamEvent::Finish(finish_from_anthropic(r)));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    let input = if u.get("input_tokens").is_some_and(Value::is_u64) {
                        input_tokens(u)
                    } else {
                        self.input_tokens
                    };
                    out.push(StreamEvent::Usage(Usage {
                        input_tokens: input,
                        output_tokens: count(u, "output_tokens"),
                    }));
                }
            }
            "error" => {
                let msg = error_of(&v).unwrap_or_else(|| "upstream error".to_string());
                out.push(StreamEvent::Error(msg));
                self.done = true;
            }
            // ping, content_block_stop, message_stop and anything newer.
            _ => {}
        }
        Ok(())
    }
}
