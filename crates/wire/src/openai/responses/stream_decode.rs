//! A Responses API event stream → canonical stream events.

use super::response::{finish_from, usage_from};
use crate::canonical::{FinishReason, StreamEvent, TranslateError};
use crate::stream::decoder::FrameDecoder;
use crate::stream::framing::{SseEvent, SseParser};
use serde_json::Value;

#[derive(Default)]
pub(super) struct ResponsesStreamDecoder {
    /// Output item id → canonical tool call index.
    calls: Vec<String>,
    started: bool,
    done: bool,
}

impl ResponsesStreamDecoder {
    fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if data.trim().is_empty() || data.trim() == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::new("stream", format!("invalid event JSON: {e}")))?;
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let str_of = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match ty {
            "response.created" => {
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                self.started = true;
                out.push(StreamEvent::Start {
                    id: get("id").to_string(),
                    model: get("model").to_string(),
                });
            }
            "response.output_text.delta" => out.push(StreamEvent::Text(str_of("delta"))),
            "response.output_item.added" => {
                let item = v.get("item").cloned().unwrap_or(Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let get = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
                    let index = self.calls.len();
                    self.calls.push(get("id").to_string());
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: get("call_id").to_string(),
                        name: get("name").to_string(),
                    });
                    let args = get("arguments");
                    if !args.is_empty() {
                        out.push(StreamEvent::ToolCallArgs {
                            index,
                            fragment: args.to_string(),
                        });
                    }
                }
            }
            "response.function_call_arguments.delta" => {
                let item = str_of("item_id");
                let index = self
                    .calls
                    .iter()
                    .position(|c| *c == item)
                    .unwrap_or(self.calls.len().saturating_sub(1));
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    fragment: str_of("delta"),
                });
            }
            "response.completed" | "response.incomplete" => {
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                let finish = match r.as_object() {
                    Some(o) => finish_from(o, !self.calls.is_empty()),
                    None => FinishReason::Stop,
                };
                out.push(StreamEvent::Finish(finish));
                if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
                    out.push(StreamEvent::Usage(usage_from(u)));
                }
                self.done = true;
            }
            "response.failed" => {
                let msg = v
                    .get("response")
                    .and_then(|r| r.get("error"))
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the response failed");
                out.push(StreamEvent::Error(msg.to_string()));
                self.done = true;
            }
            "error" => {
                let msg = v
                    .get("message")
                    .or_else(|| v.get("error").and_then(|e| e.get("message")))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                out.push(StreamEvent::Error(msg.to_string()));
                self.done = true;
            }
            _ => {}
        }
        Ok(())
    }
}

impl FrameDecoder for ResponsesStreamDecoder {
    type Framing = SseParser;

    fn frame(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.event(&ev.data, out)
    }

    fn end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.started && !self.done {
            return Err(TranslateError::new(
                "stream",
                "the stream ended before `response.completed`",
            ));
        }
        Ok(())
    }
}
