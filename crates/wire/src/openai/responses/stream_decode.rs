//! A Responses API event stream → canonical stream events.

use serde_json::Value;

use crate::canonical::{FinishReason, StreamEvent, TranslateError};
use crate::stream::decoder::FrameDecoder;
use crate::stream::framing::{SseEvent, SseParser};

use super::response::{finish_from, usage_from};

#[derive(Default)]
pub(super) struct ResponsesStreamDecoder {
    /// Output item id → canonical tool call index.
    calls: Vec<String>,
    started: bool,
    done: bool,
}

/// `v[key]` as a string, empty when absent.
fn str_at<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

impl ResponsesStreamDecoder {
    fn item_added(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let item = v.get("item").cloned().unwrap_or(Value::Null);
        if item.get("type").and_then(Value::as_str) != Some("function_call") {
            return;
        }
        let index = self.calls.len();
        self.calls.push(str_at(&item, "id").to_string());
        out.push(StreamEvent::ToolCallStart {
            index,
            id: str_at(&item, "call_id").to_string(),
            name: str_at(&item, "name").to_string(),
        });
        let args = str_at(&item, "arguments");
        if !args.is_empty() {
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: args.to_string(),
            });
        }
    }

    fn arguments_delta(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        let item = str_at(v, "item_id");
        let index = self
            .calls
            .iter()
            .position(|c| c == item)
            .unwrap_or(self.calls.len().saturating_sub(1));
        out.push(StreamEvent::ToolCallArgs {
            index,
            fragment: str_at(v, "delta").to_string(),
        });
    }

    fn completed(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
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

    fn failed(&mut self, msg: Option<&str>, otherwise: &str, out: &mut Vec<StreamEvent>) {
        out.push(StreamEvent::Error(msg.unwrap_or(otherwise).to_string()));
        self.done = true;
    }

    fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if data.trim().is_empty() || data.trim() == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::new("stream", format!("invalid event JSON: {e}")))?;
        match str_at(&v, "type") {
            "response.created" => {
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                self.started = true;
                out.push(StreamEvent::Start {
                    id: str_at(&r, "id").to_string(),
                    model: str_at(&r, "model").to_string(),
                });
            }
            "response.output_text.delta" => {
                out.push(StreamEvent::Text(str_at(&v, "delta").to_string()))
            }
            "response.output_item.added" => self.item_added(&v, out),
            "response.function_call_arguments.delta" => self.arguments_delta(&v, out),
            "response.completed" | "response.incomplete" => self.completed(&v, out),
            "response.failed" => {
                let msg = v
                    .get("response")
                    .and_then(|r| r.get("error"))
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str);
                self.failed(msg, "the response failed", out);
            }
            "error" => {
                let msg = v
                    .get("message")
                    .or_else(|| v.get("error").and_then(|e| e.get("message")))
                    .and_then(Value::as_str);
                self.failed(msg, "upstream error", out);
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
