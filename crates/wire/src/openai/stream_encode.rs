//! Canonical stream events → OpenAI SSE chunks, `[DONE]` last.

use serde_json::{json, Map, Value};

use crate::canonical::{Op, StreamEncoder, StreamEvent, Usage};
use crate::ids::{new_id, now_secs};
use crate::stream::framing::write_sse;

use super::response::{finish_to_openai, usage_json};

pub(super) struct OpenAiStreamEncoder {
    op: Op,
    include_usage: bool,
    id: String,
    model: String,
    created: u64,
    started: bool,
    finished: bool,
    usage: Option<Usage>,
    usage_written: bool,
    /// `[DONE]` or an error was written: nothing more.
    closed: bool,
}

impl OpenAiStreamEncoder {
    pub(super) fn new(op: Op, include_usage: bool) -> OpenAiStreamEncoder {
        OpenAiStreamEncoder {
            op,
            include_usage,
            id: String::new(),
            model: String::new(),
            created: 0,
            started: false,
            finished: false,
            usage: None,
            usage_written: false,
            closed: false,
        }
    }

    fn object(&self) -> &'static str {
        match self.op {
            Op::Chat => "chat.completion.chunk",
            Op::Completion => "text_completion",
        }
    }

    fn write(&self, out: &mut Vec<u8>, choices: Value, usage: Value) {
        let mut o = Map::new();
        o.insert("id".into(), json!(self.id));
        o.insert("object".into(), json!(self.object()));
        o.insert("created".into(), json!(self.created));
        o.insert("model".into(), json!(self.model));
        o.insert("choices".into(), choices);
        if self.include_usage {
            o.insert("usage".into(), usage);
        }
        write_sse(out, None, &Value::Object(o).to_string());
    }

    /// One chunk for choice 0: `delta` (chat) or `text` (completion), and the finish reason.
    fn choice(&self, out: &mut Vec<u8>, delta: Value, text: &str, finish: Option<&str>) {
        let choice = match self.op {
            Op::Chat => json!({
                "index": 0,
                "delta": delta,
                "logprobs": null,
                "finish_reason": finish,
            }),
            Op::Completion => json!({
                "text": text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish,
            }),
        };
        self.write(out, json!([choice]), Value::Null);
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = if id.is_empty() {
            new_id(match self.op {
                Op::Chat => "chatcmpl-",
                Op::Completion => "cmpl-",
            })
        } else {
            id.to_string()
        };
        self.model = model.to_string();
        self.created = now_secs();
        if self.op == Op::Chat {
            self.choice(
                out,
                json!({"role": "assistant", "content": "", "refusal": null}),
                "",
                None,
            );
        }
    }

    fn write_usage(&mut self, out: &mut Vec<u8>) {
        if self.usage_written || !self.include_usage {
            return;
        }
        if let Some(u) = self.usage {
            self.usage_written = true;
            self.write(out, json!([]), usage_json(&u));
        }
    }
}

impl StreamEncoder for OpenAiStreamEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        if let StreamEvent::Error(msg) = event {
            let body = json!({"error": {
                "message": msg,
                "type": "server_error",
                "param": null,
                "code": null,
            }});
            write_sse(out, None, &body.to_string());
            self.closed = true;
            return;
        }
        match event {
            StreamEvent::Start { id, model } => self.start(id, model, out),
            StreamEvent::Text(t) => {
                self.start("", "", out);
                if !t.is_empty() && !self.finished {
                    self.choice(out, json!({"content": t}), t, None);
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start("", "", out);
                if self.op == Op::Chat && !self.finished {
                    let id = if id.is_empty() {
                        new_id("call_")
                    } else {
                        id.clone()
                    };
                    let delta = json!({"tool_calls": [{
                        "index": index,
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }]});
                    self.choice(out, delta, "", None);
                }
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                self.start("", "", out);
                if self.op == Op::Chat && !self.finished && !fragment.is_empty() {
                    let delta = json!({"tool_calls": [{
                        "index": index,
                        "function": {"arguments": fragment},
                    }]});
                    self.choice(out, delta, "", None);
                }
            }
            StreamEvent::Finish(reason) => {
                self.start("", "", out);
                if !self.finished {
                    self.finished = true;
                    self.choice(out, json!({}), "", Some(finish_to_openai(reason)));
                    self.write_usage(out);
                }
            }
            StreamEvent::Usage(u) => {
                if !self.usage_written {
                    self.usage = Some(*u);
                }
                if self.finished {
                    self.write_usage(out);
                }
            }
            // Reported with the rest of the usage at the end.
            StreamEvent::Error(_) | StreamEvent::Prompt(_) => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.start("", "", out);
        self.write_usage(out);
        write_sse(out, None, "[DONE]");
        self.closed = true;
    }
}
