//! Canonical stream events → Anthropic's SSE event sequence.

use serde_json::{json, Value};

use crate::canonical::{FinishReason, StreamEncoder, StreamEvent, Usage};
use crate::ids::new_id;
use crate::stream::framing::write_sse;

use super::request_encode::tool_use_id;
use super::response::{finish_to_anthropic, usage_json};

#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Tool,
}

/// Writes the real API's event sequence. `message_delta` waits until both the finish reason
/// and the usage are known (OpenAI sends usage after the finish) or the stream ends; text and
/// tool deltas are never held.
#[derive(Default)]
pub(super) struct AnthropicStreamEncoder {
    started: bool,
    /// The open content block: its index and kind.
    open: Option<(usize, BlockKind)>,
    next_block: usize,
    /// Canonical tool call index → content block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// Input counts known before `message_start` was written.
    prompt: Option<Usage>,
    /// `message_stop` or an error was written.
    done: bool,
}

pub(super) fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
    write_sse(out, Some(name), &data.to_string());
}

impl AnthropicStreamEncoder {
    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let id = if id.is_empty() {
            new_id("msg_")
        } else {
            id.to_string()
        };
        event(
            out,
            "message_start",
            &json!({
                "type": "message_start",
                "message": {
                    "id": id,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": usage_json(&self.prompt.unwrap_or_default()),
                },
            }),
        );
        event(out, "ping", &json!({"type": "ping"}));
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if let Some((index, _)) = self.open.take() {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
        }
    }

    fn open_block(&mut self, kind: BlockKind, block: Value, out: &mut Vec<u8>) -> usize {
        self.close_block(out);
        let index = self.next_block;
        self.next_block += 1;
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = Some((index, kind));
        index
    }

    fn end(&mut self, out: &mut Vec<u8>) {
        let reason = self.finish.clone().unwrap_or_default();
        let usage = match self.usage {
            Some(u) => usage_json(&u),
            None => json!({"output_tokens": 0}),
        };
        event(
            out,
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": finish_to_anthropic(&reason), "stop_sequence": null},
                "usage": usage,
            }),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
        self.done = true;
    }
}

impl AnthropicStreamEncoder {
    fn text(&mut self, t: &str, out: &mut Vec<u8>) {
        if t.is_empty() || self.finish.is_some() {
            return;
        }
        self.start("", "", out);
        let index = match self.open {
            Some((i, BlockKind::Text)) => i,
            _ => self.open_block(BlockKind::Text, json!({"type": "text", "text": ""}), out),
        };
        event(
            out,
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "text_delta", "text": t},
            }),
        );
    }

    fn tool_start(&mut self, index: usize, id: &str, name: &str, out: &mut Vec<u8>) {
        if self.finish.is_some() {
            return;
        }
        self.start("", "", out);
        let block = self.open_block(
            BlockKind::Tool,
            json!({"type": "tool_use", "id": tool_use_id(id), "name": name, "input": {}}),
            out,
        );
        self.tool_blocks.push((index, block));
    }

    fn tool_args(&mut self, index: usize, fragment: &str, out: &mut Vec<u8>) {
        if fragment.is_empty() || self.finish.is_some() {
            return;
        }
        // Arguments of an earlier call (a server interleaving calls) still go to its
        // block; the SDKs accumulate deltas by index.
        let Some(block) = self
            .tool_blocks
            .iter()
            .rev()
            .find(|(c, _)| *c == index)
            .map(|(_, b)| *b)
        else {
            return;
        };
        event(
            out,
            "content_block_delta",
            &json!({
                "type": "content_block_delta",
                "index": block,
                "delta": {"type": "input_json_delta", "partial_json": fragment},
            }),
        );
    }
}

impl StreamEncoder for AnthropicStreamEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, model } => self.start(id, model, out),
            StreamEvent::Text(t) => self.text(t, out),
            StreamEvent::ToolCallStart { index, id, name } => {
                self.tool_start(*index, id, name, out)
            }
            StreamEvent::ToolCallArgs { index, fragment } => self.tool_args(*index, fragment, out),
            StreamEvent::Finish(reason) => {
                if self.finish.is_some() {
                    return;
                }
                self.start("", "", out);
                self.close_block(out);
                self.finish = Some(reason.clone());
                if self.usage.is_some() {
                    self.end(out);
                }
            }
            StreamEvent::Usage(u) => {
                self.usage = Some(*u);
                if self.finish.is_some() {
                    self.end(out);
                }
            }
            StreamEvent::Prompt(u) if !self.started => self.prompt = Some(*u),
            StreamEvent::Prompt(_) => {}
            StreamEvent::Error(msg) => {
                event(
                    out,
                    "error",
                    &json!({"type": "error", "error": {"type": "api_error", "message": msg}}),
                );
                self.done = true;
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start("", "", out);
        self.close_block(out);
        self.end(out);
    }
}
