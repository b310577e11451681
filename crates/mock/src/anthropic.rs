//! Anthropic Messages API (version 2023-06-01): `/v1/messages` with its SSE event sequence, token counting and the model list.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::handler::{Admitted, Dialect};
use crate::ollama::{full_text, push_token, TOOL_ARGS};
use crate::reply::{anthropic_error, bad_request, model_not_found, ok_json};
use crate::state::Shared;
use crate::stream::streaming;
use crate::util::{self, js, rfc3339};

const SSE: &str = "text/event-stream; charset=utf-8";
/// How Anthropic streams `TOOL_ARGS`: an empty first fragment, then pieces that only form JSON
/// once concatenated.
const TOOL_FRAGMENTS: [&str; 4] = ["", "{\"loca", "tion\":\"Par", "is\"}"];
/// Frames before the first delta: `message_start`, `content_block_start`, `ping`.
const LEAD: usize = 3;

/// The Messages request fields the mock reads; unknown fields are ignored.
#[derive(Deserialize, Default)]
#[serde(default)]
struct MessagesReq {
    model: Option<String>,
    max_tokens: Option<i64>,
    messages: Option<Vec<Value>>,
    /// A string or a list of text blocks.
    system: Option<Value>,
    stream: Option<bool>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
}

impl MessagesReq {
    /// Name of the tool the mock "calls": the forced one, else the first declared, unless tools are off.
    fn tool_name(&self) -> Option<String> {
        let choice = self.tool_choice.as_ref();
        match choice.and_then(|c| c.get("type")).and_then(Value::as_str) {
            Some("none") => return None,
            Some("tool") => {
                if let Some(name) = choice.and_then(|c| c.get("name")).and_then(Value::as_str) {
                    return Some(name.to_owned());
                }
            }
            _ => {}
        }
        let first = self.tools.as_ref()?.first()?;
        let name = first.get("name").and_then(Value::as_str).unwrap_or("tool");
        Some(name.to_owned())
    }

    /// Words of the system prompt and of every message, at least 1.
    fn input_tokens(&self, messages: &[Value]) -> u64 {
        util::messages_tokens(messages) + self.system.as_ref().map_or(0, util::content_words)
    }
}

fn invalid(msg: &str) -> Response {
    anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", msg)
}

/// Parses and validates the fields both `/v1/messages` and `count_tokens` require; Err is the 400.
fn parse(bytes: &Bytes) -> Result<(MessagesReq, String), Box<Response>> {
    let req: MessagesReq = serde_json::from_slice(bytes)
        .map_err(|e| Box::new(bad_request(Dialect::Anthropic, &e.to_string())))?;
    let Some(model) = req.model.clone().filter(|m| !m.is_empty()) else {
        return Err(Box::new(invalid("model: Field required")));
    };
    match req.messages.as_deref() {
        None => Err(Box::new(invalid("messages: Field required"))),
        Some([]) => Err(Box::new(invalid(
            "messages: at least one message is required",
        ))),
        Some(_) => Ok((req, model)),
    }
}

/// One `/v1/messages` answer, whole or as its SSE event sequence.
struct Message {
    id: String,
    tool_id: String,
    /// The model, as a JSON string.
    model: String,
    /// The tool "called", or None for a text answer.
    tool: Option<String>,
    /// Text tokens (a text answer has this many words).
    n: usize,
    input: u64,
    output: usize,
    stop: &'static str,
    /// The node, whose name makes the words of a text answer.
    st: Arc<Shared>,
}

impl Message {
    fn whole(&self) -> String {
        let Message {
            id,
            tool_id,
            model,
            stop,
            input,
            output,
            ..
        } = self;
        let content = match &self.tool {
            Some(t) => format!(
                r#"{{"type":"tool_use","id":"{tool_id}","name":{},"input":{TOOL_ARGS}}}"#,
                js(t)
            ),
            None => format!(
                r#"{{"type":"text","text":"{}"}}"#,
                full_text(&self.st.name_json, self.n)
            ),
        };
        format!(
            r#"{{"id":"{id}","type":"message","role":"assistant","model":{model},"content":[{content}],"stop_reason":"{stop}","stop_sequence":null,"usage":{{"input_tokens":{input},"output_tokens":{output}}}}}"#
        )
    }

    /// The `i`th event of the stream (None after `message_stop`).
    fn event(&self, i: usize) -> Option<String> {
        let Message {
            id,
            model,
            stop,
            input,
            output,
            ..
        } = self;
        let output = *output;
        let (name, data) = match i {
            0 => (
                "message_start",
                format!(
                    r#"{{"type":"message_start","message":{{"id":"{id}","type":"message","role":"assistant","model":{model},"content":[],"stop_reason":null,"stop_sequence":null,"usage":{{"input_tokens":{input},"output_tokens":1}}}}}}"#
                ),
            ),
            1 => (
                "content_block_start",
                format!(
                    r#"{{"type":"content_block_start","index":0,"content_block":{}}}"#,
                    self.block()
                ),
            ),
            2 => ("ping", r#"{"type": "ping"}"#.to_owned()),
            i if i < LEAD + output => (
                "content_block_delta",
                format!(
                    r#"{{"type":"content_block_delta","index":0,"delta":{}}}"#,
                    self.delta(i - LEAD)
                ),
            ),
            i => match i - LEAD - output {
                0 => (
                    "content_block_stop",
                    r#"{"type":"content_block_stop","index":0}"#.to_owned(),
                ),
                1 => (
                    "message_delta",
                    format!(
                        r#"{{"type":"message_delta","delta":{{"stop_reason":"{stop}","stop_sequence":null}},"usage":{{"output_tokens":{output}}}}}"#
                    ),
                ),
                2 => ("message_stop", r#"{"type":"message_stop"}"#.to_owned()),
                _ => return None,
            },
        };
        Some(format!("event: {name}\ndata: {data}\n\n"))
    }

    /// The content block `content_block_start` opens.
    fn block(&self) -> String {
        match &self.tool {
            Some(t) => format!(
                r#"{{"type":"tool_use","id":"{}","name":{},"input":{{}}}}"#,
                self.tool_id,
                js(t)
            ),
            None => r#"{"type":"text","text":""}"#.to_owned(),
        }
    }

    /// The `k`th delta: a piece of the tool's arguments, or the `k`th word.
    fn delta(&self, k: usize) -> String {
        if self.tool.is_some() {
            format!(
                r#"{{"type":"input_json_delta","partial_json":{}}}"#,
                js(TOOL_FRAGMENTS[k])
            )
        } else {
            let mut d = String::from(r#"{"type":"text_delta","text":""#);
            push_token(&mut d, &self.st.name_json, k);
            d.push_str("\"}");
            d
        }
    }
}

pub(crate) async fn messages(adm: Admitted, bytes: &Bytes) -> Response {
    let (req, model) = match parse(bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let Some(max_tokens) = req.max_tokens else {
        return invalid("max_tokens: Field required");
    };
    if max_tokens < 1 {
        return invalid("max_tokens: Input should be greater than or equal to 1");
    }
    if adm.load(&model).is_none() {
        return model_not_found(Dialect::Anthropic, &model);
    }
    let streams = req.stream.unwrap_or(false);
    let call = adm.into_call(model, streams).await;
    let st = call.st.clone();
    let tool = req.tool_name();
    let (n, reason) = call.budget(Some(max_tokens));
    let (output, stop) = match tool {
        Some(_) => (TOOL_FRAGMENTS.len(), "tool_use"),
        None if reason == "length" => (n, "max_tokens"),
        None => (n, "end_turn"),
    };
    let message = Message {
        id: format!("msg_01{}", st.next_id(22)),
        tool_id: format!("toolu_01{}", st.next_id(22)),
        model: js(&call.model),
        tool,
        n,
        input: req.input_tokens(req.messages.as_deref().unwrap_or(&[])),
        output,
        stop,
        st,
    };
    if !streams {
        return ok_json(Dialect::Anthropic, message.whole());
    }
    let pace = call.pace();
    streaming(SSE, pace, call.guard, move |i| message.event(i))
}

/// `POST /v1/messages/count_tokens`: not a generation, so neither counted nor failed.
pub(crate) fn count_tokens(st: &Shared, bytes: &Bytes) -> Response {
    let (req, model) = match parse(bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    if st.resolve(&model).is_none() {
        return model_not_found(Dialect::Anthropic, &model);
    }
    let input = req.input_tokens(req.messages.as_deref().unwrap_or(&[]));
    ok_json(Dialect::Anthropic, format!(r#"{{"input_tokens":{input}}}"#))
}

/// "claude-3-5-haiku" → "Claude 3 5 Haiku": plausible enough for a display name.
pub(crate) fn display_name(id: &str) -> String {
    id.split(['-', '_', ':', '/'])
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn model_object(st: &Shared, id: &str) -> Value {
    json!({"type": "model", "id": id, "display_name": display_name(id), "created_at": rfc3339(st.started)})
}

/// `GET /v1/models` as Anthropic answers it (one page holding every model).
pub(crate) fn models(st: &Shared) -> Response {
    let models = st.models();
    let data: Vec<Value> = models.iter().map(|m| model_object(st, m)).collect();
    let body = json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last(),
    });
    ok_json(Dialect::Anthropic, body.to_string())
}

pub(crate) fn model(st: &Shared, id: &str) -> Response {
    match st.resolve(id) {
        Some(m) => ok_json(Dialect::Anthropic, model_object(st, &m).to_string()),
        None => model_not_found(Dialect::Anthropic, id),
    }
}
