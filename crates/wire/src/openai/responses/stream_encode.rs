//! Canonical stream events → the Responses API's SSE event sequence.

use serde_json::{json, Map, Value};

use crate::canonical::{FinishReason, StreamEncoder, StreamEvent, ToolCall, Usage};
use crate::ids::{new_id, now_secs};
use crate::stream::framing::write_sse;

use super::response::{
    function_call_item, message_item, output_text, response_id, response_object, Ending,
};

/// One output item of the response being streamed.
struct Item {
    id: String,
    /// `None`: a message (its text so far); `Some`: a function call (its arguments so far).
    call: Option<ToolCall>,
    /// The canonical tool-call index, for calls.
    index: usize,
    text: String,
    open: bool,
}

#[derive(Default)]
pub(super) struct ResponsesStreamEncoder {
    id: String,
    model: String,
    created: u64,
    sequence: u64,
    started: bool,
    items: Vec<Item>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// `response.completed` or `response.failed` was written: nothing more.
    closed: bool,
}

impl ResponsesStreamEncoder {
    fn emit(&mut self, out: &mut Vec<u8>, ty: &str, mut body: Map<String, Value>) {
        let mut o = Map::new();
        o.insert("type".into(), json!(ty));
        o.insert("sequence_number".into(), json!(self.sequence));
        o.append(&mut body);
        self.sequence += 1;
        write_sse(out, Some(ty), &Value::Object(o).to_string());
    }

    fn item_json(item: &Item, status: &str) -> Value {
        match &item.call {
            None => message_item(&item.id, &item.text, status),
            Some(call) => {
                let call = ToolCall {
                    arguments: item.text.clone(),
                    ..call.clone()
                };
                function_call_item(&item.id, &call, status)
            }
        }
    }

    fn response(&self, end: Ending<'_>) -> Value {
        let status = end.status;
        let output = if status == "in_progress" {
            Vec::new()
        } else {
            self.items
                .iter()
                .map(|i| Self::item_json(i, "completed"))
                .collect()
        };
        let usage = (status != "in_progress")
            .then_some(self.usage.as_ref())
            .flatten();
        response_object(&self.id, &self.model, self.created, output, usage, end)
    }

    fn start(&mut self, id: &str, model: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(id);
        self.model = model.to_string();
        self.created = now_secs();
        let r = self.response(Ending {
            status: "in_progress",
            incomplete: Value::Null,
            error: Value::Null,
        });
        let mut body = Map::new();
        body.insert("response".into(), r.clone());
        self.emit(out, "response.created", body);
        let mut body = Map::new();
        body.insert("response".into(), r);
        self.emit(out, "response.in_progress", body);
    }

    fn open_item(&mut self, item: Item, out: &mut Vec<u8>) -> usize {
        let at = self.items.len();
        let mut body = Map::new();
        body.insert("output_index".into(), json!(at));
        body.insert("item".into(), Self::item_json(&item, "in_progress"));
        let is_message = item.call.is_none();
        let id = item.id.clone();
        self.items.push(item);
        self.emit(out, "response.output_item.added", body);
        if is_message {
            let mut body = Map::new();
            body.insert("item_id".into(), json!(id));
            body.insert("output_index".into(), json!(at));
            body.insert("content_index".into(), json!(0));
            body.insert("part".into(), output_text(""));
            self.emit(out, "response.content_part.added", body);
        }
        at
    }

    fn close_item(&mut self, at: usize, out: &mut Vec<u8>) {
        let Some(item) = self.items.get_mut(at) else {
            return;
        };
        if !item.open {
            return;
        }
        item.open = false;
        let id = item.id.clone();
        let text = item.text.clone();
        let is_call = item.call.is_some();
        let name = item.call.as_ref().map(|c| c.name.clone());
        let done = Self::item_json(item, "completed");
        let mut body = Map::new();
        body.insert("item_id".into(), json!(id));
        body.insert("output_index".into(), json!(at));
        if is_call {
            body.insert("name".into(), json!(name));
            body.insert("arguments".into(), json!(text));
            self.emit(out, "response.function_call_arguments.done", body);
        } else {
            body.insert("content_index".into(), json!(0));
            body.insert("text".into(), json!(text));
            body.insert("logprobs".into(), json!([]));
            self.emit(out, "response.output_text.done", body);
            let mut body = Map::new();
            body.insert("item_id".into(), json!(id));
            body.insert("output_index".into(), json!(at));
            body.insert("content_index".into(), json!(0));
            body.insert("part".into(), output_text(&text));
            self.emit(out, "response.content_part.done", body);
        }
        let mut body = Map::new();
        body.insert("output_index".into(), json!(at));
        body.insert("item".into(), done);
        self.emit(out, "response.output_item.done", body);
    }

    fn close_all(&mut self, out: &mut Vec<u8>) {
        for at in 0..self.items.len() {
            self.close_item(at, out);
        }
    }

    /// The open message item, opened now if there is none.
    fn message(&mut self, out: &mut Vec<u8>) -> usize {
        if let Some(at) = self.items.iter().position(|i| i.open && i.call.is_none()) {
            return at;
        }
        let item = Item {
            id: new_id("msg_"),
            call: None,
            index: 0,
            text: String::new(),
            open: true,
        };
        self.open_item(item, out)
    }

    fn text(&mut self, t: &str, out: &mut Vec<u8>) {
        let at = self.message(out);
        let Some(item) = self.items.get_mut(at) else {
            return;
        };
        item.text.push_str(t);
        let id = item.id.clone();
        let mut body = Map::new();
        body.insert("item_id".into(), json!(id));
        body.insert("output_index".into(), json!(at));
        body.insert("content_index".into(), json!(0));
        body.insert("delta".into(), json!(t));
        body.insert("logprobs".into(), json!([]));
        self.emit(out, "response.output_text.delta", body);
    }

    fn tool_start(&mut self, index: usize, id: &str, name: &str, out: &mut Vec<u8>) {
        // Text said before the call is finished: OpenAI closes a message before a call item.
        if let Some(at) = self.items.iter().position(|i| i.open && i.call.is_none()) {
            self.close_item(at, out);
        }
        let call_id = if id.is_empty() {
            new_id("call_")
        } else {
            id.to_string()
        };
        let item = Item {
            id: new_id("fc_"),
            call: Some(ToolCall {
                id: call_id,
                name: name.to_string(),
                arguments: String::new(),
            }),
            index,
            text: String::new(),
            open: true,
        };
        self.open_item(item, out);
    }

    fn tool_args(&mut self, index: usize, fragment: &str, out: &mut Vec<u8>) {
        let Some(at) = self
            .items
            .iter()
            .position(|i| i.call.is_some() && i.index == index && i.open)
        else {
            return;
        };
        let item = &mut self.items[at];
        item.text.push_str(fragment);
        let id = item.id.clone();
        let mut body = Map::new();
        body.insert("item_id".into(), json!(id));
        body.insert("output_index".into(), json!(at));
        body.insert("delta".into(), json!(fragment));
        self.emit(out, "response.function_call_arguments.delta", body);
    }
}

impl StreamEncoder for ResponsesStreamEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => self.start(id, model, out),
            StreamEvent::Text(t) => {
                self.start("", "", out);
                if !t.is_empty() && self.finish.is_none() {
                    self.text(t, out);
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.start("", "", out);
                if self.finish.is_none() {
                    self.tool_start(*index, id, name, out);
                }
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if !fragment.is_empty() && self.finish.is_none() {
                    self.tool_args(*index, fragment, out);
                }
            }
            StreamEvent::Finish(reason) => {
                self.start("", "", out);
                if self.finish.is_none() {
                    self.finish = Some(reason.clone());
                    if self.items.is_empty() {
                        // An empty answer is still one (empty) message, as OpenAI sends it.
                        self.message(out);
                    }
                    self.close_all(out);
                }
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            // Reported with the rest of the usage at the end.
            StreamEvent::Prompt(_) => {}
            StreamEvent::Error(msg) => {
                self.start("", "", out);
                let mut body = Map::new();
                body.insert("code".into(), json!("server_error"));
                body.insert("message".into(), json!(msg));
                body.insert("param".into(), Value::Null);
                self.emit(out, "error", body);
                let error = json!({"code": "server_error", "message": msg});
                let mut body = Map::new();
                let failed = self.response(Ending {
                    status: "failed",
                    incomplete: Value::Null,
                    error,
                });
                body.insert("response".into(), failed);
                self.emit(out, "response.failed", body);
                self.closed = true;
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        self.start("", "", out);
        if self.items.is_empty() {
            self.message(out);
        }
        self.close_all(out);
        let end = Ending::of(&self.finish.clone().unwrap_or_default());
        let ty = if end.status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        let mut body = Map::new();
        body.insert("response".into(), self.response(end));
        self.emit(out, ty, body);
        self.closed = true;
    }
}
