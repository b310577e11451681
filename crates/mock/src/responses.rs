//! OpenAI Responses API (`POST /v1/responses`): a response object, or the SSE event sequence OpenAI streams.

use axum::response::Response;
use serde_json::{json, Map, Value};

use crate::handler::{Call, Dialect, GenReq};
use crate::ollama::TOOL_ARGS;
use crate::reply::ok_json;
use crate::stream::streaming;
use crate::util::{self, unix_now};

const SSE: &str = "text/event-stream";
/// How OpenAI streams `TOOL_ARGS`: fragments that only form JSON once concatenated.
const TOOL_FRAGMENTS: [&str; 5] = ["{\"", "location", "\":\"", "Paris", "\"}"];

/// Token `i` of the reply, unescaped: the first names the node that answered.
fn token(name: &str, i: usize) -> String {
    if i == 0 {
        format!("[{name}] ")
    } else {
        format!("tok{i} ")
    }
}

/// Words of `input` (a string or items) and `instructions`: the mock's prompt-token count.
fn input_tokens(req: &GenReq) -> u64 {
    let items = match &req.input {
        Some(Value::String(s)) => util::words(s),
        Some(Value::Array(items)) => items
            .iter()
            .map(|it| {
                it.get("content")
                    .or_else(|| it.get("output"))
                    .map_or(0, util::content_words)
            })
            .sum(),
        _ => 0,
    };
    (items + req.instructions.as_deref().map_or(0, util::words)).max(1)
}

fn usage(input: u64, output: u64) -> Value {
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input + output,
    })
}

/// The response object as OpenAI writes it; `output` and `usage` are filled once done.
fn response(id: &str, created: u64, model: &str, req: &GenReq) -> Map<String, Value> {
    let v = json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "background": false,
        "error": null,
        "incomplete_details": null,
        "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens,
        "model": model,
        "output": [],
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "service_tier": "default",
        "store": true,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": req.tools.clone().unwrap_or_default(),
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": null,
        "user": null,
        "metadata": {},
    });
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text})
}

fn event(seq: &mut u64, ty: &str, body: Value) -> String {
    let mut o = Map::new();
    o.insert("type".into(), json!(ty));
    o.insert("sequence_number".into(), json!(*seq));
    if let Value::Object(b) = body {
        o.extend(b);
    }
    *seq += 1;
    format!("event: {ty}\ndata: {}\n\n", Value::Object(o))
}

/// The answer's one output item: a message, or a function call when the request has tools.
struct Item {
    id: String,
    call_id: String,
    tool: Option<String>,
}

impl Item {
    fn view(&self, status: &str, text: &str, args: &str) -> Value {
        let Item { id, call_id, .. } = self;
        match &self.tool {
            Some(name) => json!({
                "id": id, "type": "function_call", "status": status,
                "arguments": args, "call_id": call_id, "name": name,
            }),
            None => json!({
                "id": id, "type": "message", "status": status,
                "content": if status == "in_progress" { json!([]) } else { json!([output_text(text)]) },
                "role": "assistant",
            }),
        }
    }
}

/// The SSE events of one streamed answer, numbered as they are added.
struct Events {
    seq: u64,
    out: Vec<String>,
    /// `item_id` and `output_index` of the item the deltas belong to.
    at: Value,
}

impl Events {
    fn push(&mut self, ty: &str, body: Value) {
        let e = event(&mut self.seq, ty, body);
        self.out.push(e);
    }

    /// An event about the output item: `extra` after its `item_id` and `output_index`.
    fn push_at(&mut self, ty: &str, extra: Value) {
        let mut o = self.at.clone();
        if let (Value::Object(o), Value::Object(e)) = (&mut o, extra) {
            o.extend(e);
        }
        self.push(ty, o);
    }
}

/// The deltas of a function call's arguments, or of a message's text part by part.
fn push_deltas(ev: &mut Events, item: &Item, words: &[String], text: &str) {
    match &item.tool {
        Some(name) => {
            for frag in TOOL_FRAGMENTS {
                ev.push_at(
                    "response.function_call_arguments.delta",
                    json!({"delta": frag}),
                );
            }
            ev.push_at(
                "response.function_call_arguments.done",
                json!({"name": name, "arguments": TOOL_ARGS}),
            );
        }
        None => {
            let part = json!({"content_index": 0, "part": output_text("")});
            ev.push_at("response.content_part.added", part);
            for word in words {
                let delta = json!({"content_index": 0, "delta": word, "logprobs": []});
                ev.push_at("response.output_text.delta", delta);
            }
            let done = json!({"content_index": 0, "text": text, "logprobs": []});
            ev.push_at("response.output_text.done", done);
            let part = json!({"content_index": 0, "part": output_text(text)});
            ev.push_at("response.content_part.done", part);
        }
    }
}

/// The whole event sequence: created, in progress, the item and its deltas, then `done`.
fn stream_events(started: Value, done: Value, item: &Item, words: &[String]) -> Vec<String> {
    let text: String = words.concat();
    let mut ev = Events {
        seq: 0,
        out: Vec::new(),
        at: json!({"item_id": item.id, "output_index": 0}),
    };
    ev.push("response.created", json!({"response": started}));
    ev.push("response.in_progress", json!({"response": started}));
    ev.push(
        "response.output_item.added",
        json!({"output_index": 0, "item": item.view("in_progress", "", "")}),
    );
    push_deltas(&mut ev, item, words, &text);
    ev.push(
        "response.output_item.done",
        json!({"output_index": 0, "item": item.view("completed", &text, TOOL_ARGS)}),
    );
    let last = if done["status"] == "incomplete" {
        "response.incomplete"
    } else {
        "response.completed"
    };
    ev.push(last, json!({"response": done}));
    ev.out
}

pub(crate) fn responses(call: Call, req: &GenReq, streams: bool) -> Response {
    let st = call.st.clone();
    let prompt = input_tokens(req);
    let tool = req.tool_name();
    let (n, reason) = call.budget(req.max_output_tokens);
    let id = format!("resp_{}", st.next_id(48));
    let item = Item {
        id: match tool {
            Some(_) => format!("fc_{}", st.next_id(48)),
            None => format!("msg_{}", st.next_id(48)),
        },
        call_id: format!("call_{}", st.next_id(24)),
        tool,
    };
    let created = unix_now();
    let words: Vec<String> = (0..n).map(|i| token(&st.name, i)).collect();
    let text = words.concat();
    let output_tokens = match item.tool {
        Some(_) => TOOL_FRAGMENTS.len() as u64,
        None => n as u64,
    };
    let incomplete = item.tool.is_none() && reason == "length";
    let mut done = response(&id, created, &call.model, req);
    let status = if incomplete {
        "incomplete"
    } else {
        "completed"
    };
    done.insert("status".into(), json!(status));
    if incomplete {
        done.insert(
            "incomplete_details".into(),
            json!({"reason": "max_output_tokens"}),
        );
    }
    let output = json!([item.view("completed", &text, TOOL_ARGS)]);
    done.insert("output".into(), output);
    done.insert("usage".into(), usage(prompt, output_tokens));

    if !streams {
        return ok_json(Dialect::OpenAi, Value::Object(done).to_string());
    }
    let started = Value::Object(response(&id, created, &call.model, req));
    let events = stream_events(started, Value::Object(done), &item, &words);
    let pace = call.pace();
    let mut events = events.into_iter();
    streaming(SSE, pace, call.guard, move |_| events.next())
}
