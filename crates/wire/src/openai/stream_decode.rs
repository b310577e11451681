//! An OpenAI SSE stream (chat or legacy completions) → canonical stream events.

use serde_json::Value;

use crate::canonical::{FinishReason, StreamEvent, TranslateError, Usage};
use crate::ids::new_id;
use crate::stream::decoder::{cut_short, FrameDecoder};
use crate::stream::framing::{SseEvent, SseParser};

use super::response::{error_of, finish_from_openai, usage_from};

fn stream_error(message: impl Into<String>) -> TranslateError {
    TranslateError::new("stream", message)
}

#[derive(Default)]
pub(super) struct OpenAiStreamDecoder {
    started: bool,
    done: bool,
    /// OpenAI tool call index (or `None` when the server sent none) → canonical index.
    tools: Vec<(Option<u64>, usize)>,
    /// The id of the last call started, for servers that send no index.
    last_tool: Option<(String, usize)>,
    usage: Option<Usage>,
    usage_sent: bool,
    /// A `finish_reason` arrived: the answer is whole even if `[DONE]` never comes.
    finished: bool,
}

impl OpenAiStreamDecoder {
    fn flush_usage(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.usage_sent {
            if let Some(u) = self.usage {
                out.push(StreamEvent::Usage(u));
                self.usage_sent = true;
            }
        }
    }

    fn data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = data.trim();
        if data.is_empty() || self.done {
            return Ok(());
        }
        if data == "[DONE]" {
            self.flush_usage(out);
            self.done = true;
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| stream_error(format!("invalid JSON in an OpenAI stream chunk: {e}")))?;
        if !v.is_object() {
            return Err(stream_error("an OpenAI stream chunk must be a JSON object"));
        }
        if let Some(msg) = error_of(&v) {
            out.push(StreamEvent::Error(msg));
            self.done = true;
            return Ok(());
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: v
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                model: v
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            if !self.usage_sent {
                self.usage = Some(usage_from(u));
            }
        }
        let choices = v.get("choices").and_then(Value::as_array);
        let Some(choices) = choices.filter(|c| !c.is_empty()) else {
            // The usage-only chunk (`"choices":[]`, or null on some servers).
            self.flush_usage(out);
            return Ok(());
        };
        for c in choices {
            if c.get("index").and_then(Value::as_u64).unwrap_or(0) != 0 {
                continue;
            }
            self.choice(c, out);
        }
        Ok(())
    }

    fn choice(&mut self, c: &Value, out: &mut Vec<StreamEvent>) {
        if let Some(t) = c.get("text").and_then(Value::as_str) {
            if !t.is_empty() {
                out.push(StreamEvent::Text(t.to_string()));
            }
        }
        if let Some(delta) = c.get("delta") {
            for key in ["content", "refusal"] {
                if let Some(t) = delta.get(key).and_then(Value::as_str) {
                    if !t.is_empty() {
                        out.push(StreamEvent::Text(t.to_string()));
                    }
                }
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for tc in calls {
                    self.tool_delta(tc, out);
                }
            }
        }
        if let Some(f) = c.get("finish_reason").and_then(Value::as_str) {
            let mut finish = finish_from_openai(f);
            if finish == FinishReason::Stop && !self.tools.is_empty() {
                finish = FinishReason::ToolCalls;
            }
            self.finished = true;
            out.push(StreamEvent::Finish(finish));
        }
    }

    fn tool_delta(&mut self, tc: &Value, out: &mut Vec<StreamEvent>) {
        let oi = tc.get("index").and_then(Value::as_u64);
        let id = tc
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let f = tc.get("function");
        let name = f
            .and_then(|f| f.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let known = match oi {
            Some(_) => self.tools.iter().find(|(k, _)| *k == oi).map(|(_, c)| *c),
            None => match (&self.last_tool, id) {
                (Some((last, c)), Some(id)) if last == id => Some(*c),
                (Some((_, c)), None) => Some(*c),
                _ => None,
            },
        };
        let index = match known {
            Some(c) => c,
            None => {
                let c = self.tools.len();
                let id = id.map_or_else(|| new_id("call_"), str::to_string);
                self.tools.push((oi, c));
                self.last_tool = Some((id.clone(), c));
                out.push(StreamEvent::ToolCallStart {
                    index: c,
                    id,
                    name: name.unwrap_or("").to_string(),
                });
                c
            }
        };
        let args = match f.and_then(|f| f.get("arguments")) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        if !args.is_empty() {
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: args,
            });
        }
    }
}

impl FrameDecoder for OpenAiStreamDecoder {
    type Framing = SseParser;

    fn frame(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.data(&ev.data, out)
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if !self.done {
            self.flush_usage(out);
        }
        if self.done || self.finished {
            Ok(())
        } else {
            Err(cut_short("`finish_reason` or `[DONE]`"))
        }
    }
}
