//! Canonical stream events → Gemini SSE chunks, tool calls whole and the finish with usage.

use serde_json::{json, Value};

use crate::canonical::{FinishReason, StreamEncoder, StreamEvent, Usage};
use crate::ids::fresh_token;
use crate::json::arguments_value;
use crate::stream::framing::write_sse;
use crate::stream::hold::{Held, PendingCall, Ready};

use super::response::chunk_json;

#[derive(Default)]
pub(super) struct GeminiStreamEncoder {
    id: String,
    model: String,
    held: Held,
    closed: bool,
}

impl GeminiStreamEncoder {
    fn chunk(
        &self,
        out: &mut Vec<u8>,
        parts: Vec<Value>,
        finish: Option<&FinishReason>,
        usage: Option<Usage>,
    ) {
        write_sse(
            out,
            None,
            &chunk_json(&self.id, &self.model, parts, finish, usage),
        );
    }

    /// Complete tool calls as `functionCall` parts (Gemini cannot stream their arguments).
    fn write_calls(&self, calls: Vec<PendingCall>, out: &mut Vec<u8>) {
        if calls.is_empty() {
            return;
        }
        let parts: Vec<Value> = calls
            .into_iter()
            .map(|c| super::request_encode::call_part(&c.id, &c.name, arguments_value(&c.args)))
            .collect();
        self.chunk(out, parts, None, None);
    }

    /// Tool calls, then the last chunk carrying `finishReason` and `usageMetadata`.
    fn write_ready(&self, ready: Ready, out: &mut Vec<u8>) {
        self.write_calls(ready.calls, out);
        if let Some((finish, usage)) = ready.last {
            self.chunk(out, vec![json!({"text": ""})], Some(&finish), Some(usage));
        }
    }
}

impl StreamEncoder for GeminiStreamEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                self.id = if id.is_empty() {
                    format!("gemini-{}", fresh_token())
                } else {
                    id.clone()
                };
                self.model = model.clone();
            }
            StreamEvent::Text(t) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                if !t.is_empty() {
                    self.chunk(out, vec![json!({ "text": t })], None, None);
                }
            }
            StreamEvent::Error(msg) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                let body = json!({"error": {"code": 500, "message": msg, "status": "INTERNAL"}});
                write_sse(out, None, &body.to_string());
                self.closed = true;
            }
            held => {
                if let Some(ready) = self.held.take(held) {
                    self.write_ready(ready, out);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        let ready = self.held.end();
        self.write_ready(ready, out);
        self.closed = true;
    }
}
