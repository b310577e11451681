//! Canonical stream events → Ollama NDJSON lines, tool calls whole and the `done` line with usage.

use std::time::Instant;

use serde_json::{json, Map, Value};

use crate::canonical::{FinishReason, Op, StreamEncoder, StreamEvent, Usage};
use crate::json::arguments_value;
use crate::stream::hold::{Held, PendingCall, Ready};

use super::request_encode::tool_call_json;
use super::response::{base_line, done_fields, Timing};

pub(super) struct OllamaStreamEncoder {
    op: Op,
    model: String,
    held: Held,
    closed: bool,
    begun: Instant,
    first_output: Option<Instant>,
}

impl OllamaStreamEncoder {
    pub(super) fn new(op: Op) -> OllamaStreamEncoder {
        OllamaStreamEncoder {
            op,
            model: String::new(),
            held: Held::default(),
            closed: false,
            begun: Instant::now(),
            first_output: None,
        }
    }

    fn write(out: &mut Vec<u8>, line: Map<String, Value>) {
        if let Ok(bytes) = serde_json::to_vec(&Value::Object(line)) {
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
    }

    fn content_line(&mut self, out: &mut Vec<u8>, text: &str, calls: Vec<Value>) {
        self.first_output.get_or_insert_with(Instant::now);
        let mut line = base_line(&self.model);
        match self.op {
            Op::Chat => {
                let mut msg = Map::new();
                msg.insert("role".to_string(), json!("assistant"));
                msg.insert("content".to_string(), json!(text));
                if !calls.is_empty() {
                    msg.insert("tool_calls".to_string(), Value::Array(calls));
                }
                line.insert("message".to_string(), Value::Object(msg));
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(text));
            }
        }
        line.insert("done".to_string(), json!(false));
        Self::write(out, line);
    }

    /// Complete tool calls, whole, in one line (Ollama cannot stream their arguments).
    fn write_calls(&mut self, calls: Vec<PendingCall>, out: &mut Vec<u8>) {
        // `/api/generate` has no tool calls to carry them.
        if calls.is_empty() || self.op != Op::Chat {
            return;
        }
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|c| tool_call_json(Some(&c.id), &c.name, arguments_value(&c.args)))
            .collect();
        self.content_line(out, "", calls);
    }

    /// Tool calls, then (once finish and usage are known, or at the end) the `done` line.
    fn write_ready(&mut self, ready: Ready, out: &mut Vec<u8>) {
        self.write_calls(ready.calls, out);
        if let Some((finish, usage)) = ready.last {
            self.write_done(finish, usage, out);
        }
    }

    fn write_done(&mut self, finish: FinishReason, usage: Usage, out: &mut Vec<u8>) {
        let end = Instant::now();
        let first = self.first_output.unwrap_or(end);
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let timing = Timing {
            total: nanos(end.duration_since(self.begun)),
            prompt_eval: nanos(first.duration_since(self.begun)),
            eval: nanos(end.duration_since(first)),
        };
        let mut line = base_line(&self.model);
        match self.op {
            Op::Chat => {
                line.insert(
                    "message".to_string(),
                    json!({"role": "assistant", "content": ""}),
                );
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(""));
            }
        }
        done_fields(&mut line, &finish, usage, timing);
        if self.op == Op::Completion {
            line.insert("context".to_string(), json!([]));
        }
        Self::write(out, line);
        self.closed = true;
    }
}

impl StreamEncoder for OllamaStreamEncoder {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { model, .. } => self.model = model.clone(),
            StreamEvent::Text(t) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                if !t.is_empty() {
                    self.content_line(out, t, Vec::new());
                }
            }
            StreamEvent::Error(msg) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                let mut line = Map::new();
                line.insert("error".to_string(), json!(msg));
                Self::write(out, line);
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
        if !self.closed {
            let ready = self.held.end();
            self.write_ready(ready, out);
        }
    }
}
