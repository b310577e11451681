//! A Gemini SSE stream (`alt=sse`) → canonical stream events.

use serde_json::Value;

use crate::canonical::{FinishReason, StreamEvent, TranslateError, Usage};
use crate::json::bad;
use crate::stream::decoder::{cut_short, FrameDecoder};
use crate::stream::framing::{SseEvent, SseParser};

use super::response::{
    answer_part, blocked, candidate_parts, decode_usage, error_of, finish_reason_of, id_token,
    map_finish, AnswerPart,
};

#[derive(Default)]
pub(super) struct GeminiStreamDecoder {
    started: bool,
    token: String,
    calls: usize,
    finished: bool,
    usage: Option<Usage>,
    usage_sent: bool,
    /// The upstream reported an error: the stream ends there.
    failed: bool,
}

impl GeminiStreamDecoder {
    /// The first chunk: the prompt's counts when it has them (Gemini counts them in every
    /// chunk), then the start.
    fn start(&mut self, v: &Value, out: &mut Vec<StreamEvent>) {
        self.started = true;
        if let Some(u) = v
            .get("usageMetadata")
            .filter(|u| u.get("promptTokenCount").is_some())
        {
            let mut prompt = decode_usage(u);
            (prompt.output_tokens, prompt.reasoning_tokens) = (0, 0);
            out.push(StreamEvent::Prompt(prompt));
        }
        let response_id = v.get("responseId").and_then(Value::as_str);
        self.token = id_token(response_id);
        out.push(StreamEvent::Start {
            id: response_id
                .map(str::to_string)
                .unwrap_or_else(|| format!("gemini-{}", self.token)),
            model: v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        });
    }

    fn data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| bad("", format!("Gemini stream event is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            self.failed = true;
            out.push(StreamEvent::Error(msg));
            return Ok(());
        }
        if !v.is_object() {
            return Err(bad("", "Gemini stream event is not a JSON object"));
        }
        if !self.started {
            self.start(&v, out);
        }
        for p in candidate_parts(&v) {
            match answer_part(p) {
                Some(AnswerPart::Text(t)) if !t.is_empty() => {
                    out.push(StreamEvent::Text(t.to_string()));
                }
                Some(AnswerPart::Call {
                    id,
                    name,
                    args,
                    signature,
                }) => {
                    let index = self.calls;
                    self.calls += 1;
                    let id =
                        id.map_or_else(|| format!("call_{}_{index}", self.token), str::to_string);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: super::signature::with_signature(&id, signature),
                        name: name.to_string(),
                    });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        fragment: args,
                    });
                }
                _ => {}
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(decode_usage(u));
        }
        if !self.finished {
            let finish = if blocked(&v) {
                Some(FinishReason::ContentFilter)
            } else {
                finish_reason_of(&v).map(|r| map_finish(r, self.calls > 0))
            };
            if let Some(f) = finish {
                self.finished = true;
                out.push(StreamEvent::Finish(f));
            }
        }
        if self.finished && !self.usage_sent {
            if let Some(u) = self.usage {
                self.usage_sent = true;
                out.push(StreamEvent::Usage(u));
            }
        }
        Ok(())
    }
}

impl FrameDecoder for GeminiStreamDecoder {
    type Framing = SseParser;

    fn frame(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.data(&ev.data, out)
    }

    fn end(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.started && !self.usage_sent {
            if let Some(u) = self.usage {
                self.usage_sent = true;
                out.push(StreamEvent::Usage(u));
            }
        }
        if self.finished || self.failed {
            Ok(())
        } else {
            Err(cut_short("a candidate's `finishReason`"))
        }
    }
}
