//! An Anthropic SSE stream → canonical stream events.

use serde_json::Value;

use crate::canonical::{StreamEvent, TranslateError, Usage};
use crate::json::count;
use crate::stream::decoder::{cut_short, FrameDecoder};
use crate::stream::framing::{SseEvent, SseParser};

use super::response::{error_of, finish_from_anthropic, usage_from};

#[derive(Default)]
pub(super) struct AnthropicStreamDecoder {
    /// Input counts from `message_start`, reported with the output tokens of `message_delta`.
    input: Usage,
    /// Content block index → canonical tool call index.
    tools: Vec<(u64, usize)>,
    /// An error or `message_stop` ended the stream.
    done: bool,
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).unwrap_or("").to_string()
}

/// Text, unless it is empty.
fn push_text(t: String, out: &mut Vec<StreamEvent>) {
    if !t.is_empty() {
        out.push(StreamEvent::Text(t));
    }
}

impl AnthropicStreamDecoder {
    fn message_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let m = v.get("message").unwrap_or(&Value::Null);
        if let Some(u) = m.get("usage") {
            self.input = usage_from(u);
            self.input.output_tokens = 0;
        }
        out.push(StreamEvent::Start {
            id: str_of(m, "id"),
            model: str_of(m, "model"),
        });
    }

    fn block_start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
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
            Some("text") => push_text(str_of(cb, "text"), out),
            _ => {}
        }
    }

    fn block_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
        let d = v.get("delta").unwrap_or(&Value::Null);
        match d.get("type").and_then(Value::as_str) {
            Some("text_delta") => push_text(str_of(d, "text"), out),
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

    fn message_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        if let Some(r) = v
            .get("delta")
            .and_then(|d| d.get("stop_reason"))
            .and_then(Value::as_str)
        {
            out.push(StreamEvent::Finish(finish_from_anthropic(r)));
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            // Newer servers repeat the input counts here; older ones only in `message_start`.
            let mut usage = if u.get("input_tokens").is_some_and(Value::is_u64) {
                usage_from(u)
            } else {
                self.input
            };
            usage.output_tokens = count(u, "output_tokens");
            out.push(StreamEvent::Usage(usage));
        }
    }
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
        match ty {
            "message_start" => self.message_start(&v, out),
            "content_block_start" => self.block_start(&v, out),
            "content_block_delta" => self.block_delta(&v, out),
            "message_delta" => self.message_delta(&v, out),
            "error" => {
                let msg = error_of(&v).unwrap_or_else(|| "upstream error".to_string());
                out.push(StreamEvent::Error(msg));
                self.done = true;
            }
            "message_stop" => self.done = true,
            // ping, content_block_stop and anything newer.
            _ => {}
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.done {
            Ok(())
        } else {
            Err(cut_short("`message_stop`"))
        }
    }
}
