//! An Ollama NDJSON stream → canonical stream events.

use serde_json::Value;

use crate::canonical::{StreamEvent, TranslateError};
use crate::ids::fresh_token;
use crate::json::bad;
use crate::stream::decoder::{cut_short, FrameDecoder};
use crate::stream::framing::LineSplitter;

use super::response::{answer_of, decode_usage, error_of, map_done_reason};

#[derive(Default)]
pub(super) struct OllamaStreamDecoder {
    started: bool,
    token: String,
    calls: usize,
    done: bool,
}

impl FrameDecoder for OllamaStreamDecoder {
    type Framing = LineSplitter;

    fn frame(&mut self, line: &String, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bad("", format!("Ollama stream line is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            // An error ends the stream as surely as `done: true`.
            self.done = true;
            out.push(StreamEvent::Error(msg));
            return Ok(());
        }
        if !v.is_object() {
            return Err(bad("", "Ollama stream line is not a JSON object"));
        }
        if !self.started {
            self.started = true;
            self.token = fresh_token();
            out.push(StreamEvent::Start {
                id: format!("ollama-{}", self.token),
                model: v
                    .get("model")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        let (text, calls) = answer_of(&v, &self.token, self.calls);
        if !text.is_empty() {
            out.push(StreamEvent::Text(text));
        }
        for c in calls {
            let index = self.calls;
            self.calls += 1;
            out.push(StreamEvent::ToolCallStart {
                index,
                id: c.id,
                name: c.name,
            });
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: c.arguments,
            });
        }
        if v.get("done").and_then(Value::as_bool) == Some(true) && !self.done {
            self.done = true;
            out.push(StreamEvent::Finish(map_done_reason(
                v.get("done_reason").and_then(Value::as_str),
                self.calls > 0,
            )));
            out.push(StreamEvent::Usage(decode_usage(&v)));
        }
        Ok(())
    }

    fn end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.done {
            Ok(())
        } else {
            Err(cut_short("`\"done\": true`"))
        }
    }
}
