//! OpenAI Responses API (`/v1/responses`) ⇄ the canonical form: requests, response objects and the SSE event stream.
//!
//! Decoding a client body reads `input` (a string, or items: messages with `input_text` /
//! `input_image` / `output_text` parts, `function_call` and `function_call_output`),
//! `instructions`, `max_output_tokens`, `temperature`, `top_p`, function `tools`,
//! `tool_choice`, `text.format`, `stream` and `user`. It refuses, naming the field, what a
//! stateless translation cannot do: `previous_response_id`, `conversation`, `prompt`,
//! `background`, `reasoning`, `top_logprobs`, built-in (non-function) tools and item types
//! other than the ones above. `store`, `metadata`, `include`, `truncation`,
//! `parallel_tool_calls`, `service_tier` and `reasoning` input items are ignored.
//!
//! The stream follows OpenAI's event sequence: `response.created`, `response.in_progress`,
//! then per output item `response.output_item.added`, (`response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`)
//! or (`response.function_call_arguments.delta`…, `response.function_call_arguments.done`),
//! `response.output_item.done`, and finally `response.completed` (or `response.incomplete`).
//! A broken stream ends with an `error` event and `response.failed`. No `[DONE]` follows.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Message, Op, Part, ResponseFormat, Role,
    StreamDecoder, StreamEncoder, StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::translate::framing::{write_sse, SseParser};
use crate::translate::openai::{
    as_obj, count, empty_schema, field, image_from_url, image_to_url, new_id, now_secs, opt_array,
    opt_bool, opt_f64, opt_str, opt_u32, parse_object, path, req_str, Obj,
};

/// The Responses API codec. `Op` is ignored: every Responses call is a chat.
pub struct ResponsesCodec;

// ---------------------------------------------------------------------------------------------
// Requests: Responses → canonical.

/// Fields that need server-side state or features no other dialect has.
const REFUSED: [(&str, &str); 5] = [
    (
        "previous_response_id",
        "stored conversations cannot be translated; send the whole conversation in `input`",
    ),
    (
        "conversation",
        "stored conversations cannot be translated; send the whole conversation in `input`",
    ),
    ("prompt", "stored prompt templates cannot be translated"),
    ("reasoning", "reasoning options cannot be translated"),
    ("top_logprobs", "logprobs cannot be translated"),
];

fn reject_fields(o: &Obj) -> Result<(), TranslateError> {
    for (key, why) in REFUSED {
        if field(o, key).is_some() {
            return Err(TranslateError::new(key, why));
        }
    }
    if opt_bool(o, "", "background")? == Some(true) {
        return Err(TranslateError::new(
            "background",
            "background responses cannot be translated",
        ));
    }
    Ok(())
}

/// A message's `content`: a string or an array of `input_text` / `input_image` / `output_text` parts.
fn decode_content(v: Option<&Value>, at: &str) -> Result<Vec<Part>, TranslateError> {
    let parts = match v {
        None => return Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => return Ok(Vec::new()),
        Some(Value::String(s)) => return Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(parts)) => parts,
        Some(_) => {
            return Err(TranslateError::new(
                at,
                "must be a string or an array of content parts",
            ))
        }
    };
    let mut out = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let pp = format!("{at}[{j}]");
        let po = as_obj(part, &pp)?;
        let ty = req_str(po, &pp, "type")?;
        match ty.as_str() {
            "input_text" | "output_text" | "text" => {
                let text = req_str(po, &pp, "text")?;
                if !text.is_empty() {
                    out.push(Part::Text(text));
                }
            }
            "refusal" => out.push(Part::Text(req_str(po, &pp, "refusal")?)),
            "input_image" => match opt_str(po, &pp, "image_url")? {
                Some(url) => out.push(Part::Image(image_from_url(&url))),
                None => {
                    return Err(TranslateError::new(
                        path(&pp, "image_url"),
                        "is required (images by `file_id` cannot be translated)",
                    ))
                }
            },
            other => {
                return Err(TranslateError::new(
                    path(&pp, "type"),
                    format!("content part type `{other}` cannot be translated"),
                ))
            }
        }
    }
    Ok(out)
}

fn text_of(parts: Vec<Part>) -> String {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            Part::Image(_) => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The assistant message that collects function calls: the last message when it is the
/// assistant's, else a new one.
fn assistant_turn(messages: &mut Vec<Message>) -> &mut Message {
    let reuse = messages.last().is_some_and(|m| m.role == Role::Assistant);
    if !reuse {
        messages.push(Message {
            role: Role::Assistant,
            content: Vec::new(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        });
    }
    let last = messages.len() - 1;
    &mut messages[last]
}

fn decode_input(
    o: &Obj,
    system: &mut Vec<String>,
    messages: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let items = match field(o, "input") {
        None => return Err(TranslateError::new("input", "is required")),
        Some(Value::String(s)) => {
            messages.push(Message {
                role: Role::User,
                content: vec![Part::Text(s.clone())],
                tool_calls: Vec::new(),
                tool_call_id: None,
                name: None,
            });
            return Ok(());
        }
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(TranslateError::new(
                "input",
                "must be a string or an array of input items",
            ))
        }
    };
    // Call id → function name, so outputs can carry the name (Gemini needs it).
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let p = format!("input[{i}]");
        let it = as_obj(item, &p)?;
        let ty = opt_str(it, &p, "type")?.unwrap_or_else(|| "message".to_string());
        match ty.as_str() {
            "message" => {
                let role = req_str(it, &p, "role")?;
                let content = decode_content(field(it, "content"), &path(&p, "content"))?;
                let role = match role.as_str() {
                    "system" | "developer" => {
                        system.push(text_of(content));
                        continue;
                    }
                    "user" => Role::User,
                    "assistant" => Role::Assistant,
                    other => {
                        return Err(TranslateError::new(
                            path(&p, "role"),
                            format!("unknown role `{other}`"),
                        ))
                    }
                };
                messages.push(Message {
                    role,
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                    name: None,
                });
            }
            "function_call" => {
                let call = ToolCall {
                    id: req_str(it, &p, "call_id")?,
                    name: req_str(it, &p, "name")?,
                    arguments: opt_str(it, &p, "arguments")?.unwrap_or_else(|| "{}".into()),
                };
                names.push((call.id.clone(), call.name.clone()));
                assistant_turn(messages).tool_calls.push(call);
            }
            "function_call_output" => {
                let id = req_str(it, &p, "call_id")?;
                let content = decode_content(field(it, "output"), &path(&p, "output"))?;
                let name = names
                    .iter()
                    .rev()
                    .find(|(cid, _)| *cid == id)
                    .map(|(_, n)| n.clone());
                messages.push(Message {
                    role: Role::Tool,
                    content,
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                    name,
                });
            }
            // The model's hidden reasoning from an earlier turn: other dialects have no place for it.
            "reasoning" => {}
            other => {
                return Err(TranslateError::new(
                    path(&p, "type"),
                    format!("input item type `{other}` cannot be translated"),
                ))
            }
        }
    }
    Ok(())
}

fn decode_tools(o: &Obj) -> Result<Vec<Tool>, TranslateError> {
    let Some(tools) = opt_array(o, "", "tools")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let tp = format!("tools[{i}]");
        let t = as_obj(t, &tp)?;
        let ty = req_str(t, &tp, "type")?;
        if ty != "function" {
            return Err(TranslateError::new(
                path(&tp, "type"),
                format!("built-in tool `{ty}` cannot be translated; only function tools can"),
            ));
        }
        out.push(Tool {
            name: req_str(t, &tp, "name")?,
            description: opt_str(t, &tp, "description")?,
            parameters: field(t, "parameters").cloned().unwrap_or_else(empty_schema),
        });
    }
    Ok(out)
}

fn decode_tool_choice(o: &Obj) -> Result<Option<ToolChoice>, TranslateError> {
    match field(o, "tool_choice") {
        None => Ok(None),
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Ok(Some(ToolChoice::Auto)),
            "none" => Ok(Some(ToolChoice::None)),
            "required" => Ok(Some(ToolChoice::Required)),
            other => Err(TranslateError::new(
                "tool_choice",
                format!("unknown tool_choice `{other}`"),
            )),
        },
        Some(Value::Object(tc)) => {
            let ty = opt_str(tc, "tool_choice", "type")?.unwrap_or_default();
            if ty != "function" {
                return Err(TranslateError::new(
                    "tool_choice.type",
                    format!("tool_choice type `{ty}` cannot be translated"),
                ));
            }
            Ok(Some(ToolChoice::Tool(req_str(tc, "tool_choice", "name")?)))
        }
        Some(_) => Err(TranslateError::new(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

/// `text.format`: `{"type":"text"}`, `{"type":"json_object"}` or
/// `{"type":"json_schema","name","schema","strict"}` (flat, unlike chat's `response_format`).
fn decode_text_format(o: &Obj) -> Result<Option<ResponseFormat>, TranslateError> {
    let Some(text) = field(o, "text") else {
        return Ok(None);
    };
    let text = as_obj(text, "text")?;
    let Some(format) = field(text, "format") else {
        return Ok(None);
    };
    let at = "text.format";
    let f = as_obj(format, at)?;
    match req_str(f, at, "type")?.as_str() {
        "text" => Ok(Some(ResponseFormat::Text)),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => Ok(Some(ResponseFormat::JsonSchema {
            name: opt_str(f, at, "name")?.unwrap_or_else(|| "response".to_string()),
            schema: field(f, "schema").cloned().unwrap_or_else(|| json!({})),
            strict: opt_bool(f, at, "strict")?.unwrap_or(false),
        })),
        other => Err(TranslateError::new(
            "text.format.type",
            format!("text format `{other}` cannot be translated"),
        )),
    }
}

fn decode_request(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_fields(o)?;
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        ..ChatRequest::default()
    };
    let mut system = Vec::new();
    if let Some(instructions) = opt_str(o, "", "instructions")? {
        system.push(instructions);
    }
    decode_input(o, &mut system, &mut req.messages)?;
    if !system.is_empty() {
        req.system = Some(system.join("\n\n"));
    }
    req.max_tokens = opt_u32(o, "", "max_output_tokens")?;
    req.temperature = opt_f64(o, "", "temperature")?;
    req.top_p = opt_f64(o, "", "top_p")?;
    req.stream = opt_bool(o, "", "stream")?.unwrap_or(false);
    // The Responses API always reports usage, streamed or not.
    req.include_usage = true;
    req.user = match opt_str(o, "", "user")? {
        Some(u) => Some(u),
        None => opt_str(o, "", "safety_identifier")?,
    };
    req.tools = decode_tools(o)?;
    req.tool_choice = decode_tool_choice(o)?;
    req.response_format = decode_text_format(o)?;
    Ok(req)
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → Responses (for an upstream that speaks it).

fn encode_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    let unsupported =
        |field: &str| TranslateError::new(field, "the Responses API has no such parameter");
    if !req.stop.is_empty() {
        return Err(unsupported("stop"));
    }
    if req.seed.is_some() {
        return Err(unsupported("seed"));
    }
    if req.frequency_penalty.is_some() {
        return Err(unsupported("frequency_penalty"));
    }
    if req.presence_penalty.is_some() {
        return Err(unsupported("presence_penalty"));
    }
    if req.top_k.is_some() {
        return Err(unsupported("top_k"));
    }
    let mut input = Vec::new();
    for m in &req.messages {
        let content = |output: bool| -> Vec<Value> {
            m.content
                .iter()
                .map(|p| match p {
                    Part::Text(t) if output => json!({"type": "output_text", "text": t}),
                    Part::Text(t) => json!({"type": "input_text", "text": t}),
                    Part::Image(img) => {
                        json!({"type": "input_image", "image_url": image_to_url(img)})
                    }
                })
                .collect()
        };
        match m.role {
            Role::User => input.push(json!({"role": "user", "content": content(false)})),
            Role::Assistant => {
                if !m.content.is_empty() {
                    input.push(json!({"role": "assistant", "content": content(true)}));
                }
                for c in &m.tool_calls {
                    input.push(json!({
                        "type": "function_call",
                        "call_id": c.id,
                        "name": c.name,
                        "arguments": c.arguments,
                    }));
                }
            }
            Role::Tool => {
                let text = m
                    .content
                    .iter()
                    .filter_map(|p| match p {
                        Part::Text(t) => Some(t.as_str()),
                        Part::Image(_) => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                input.push(json!({
                    "type": "function_call_output",
                    "call_id": m.tool_call_id.clone().unwrap_or_default(),
                    "output": text,
                }));
            }
        }
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    if let Some(s) = &req.system {
        o.insert("instructions".into(), json!(s));
    }
    o.insert("input".into(), Value::Array(input));
    if let Some(n) = req.max_tokens {
        o.insert("max_output_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({
                    "type": "function",
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                })
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "name": name}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(rf) = &req.response_format {
        let format = match rf {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => json!({"type": "json_schema", "name": name, "schema": schema, "strict": strict}),
        };
        o.insert("text".into(), json!({ "format": format }));
    }
    if let Some(u) = &req.user {
        o.insert("user".into(), json!(u));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
    }
    o.insert("store".into(), json!(false));
    Ok(Value::Object(o))
}

// ---------------------------------------------------------------------------------------------
// Answers.

fn usage_json(u: Option<&Usage>) -> Value {
    match u {
        None => Value::Null,
        Some(u) => json!({
            "input_tokens": u.input_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": u.output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
        }),
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([output_text(text)])
    };
    json!({
        "id": id,
        "type": "message",
        "status": status,
        "content": content,
        "role": "assistant",
    })
}

fn function_call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": call.arguments,
        "call_id": call.id,
        "name": call.name,
    })
}

/// `status` and `incomplete_details` of a response that ended for `reason`.
fn status_of(reason: &FinishReason) -> (&'static str, Value) {
    match reason {
        FinishReason::Length => ("incomplete", json!({"reason": "max_output_tokens"})),
        FinishReason::ContentFilter => ("incomplete", json!({"reason": "content_filter"})),
        FinishReason::Stop | FinishReason::ToolCalls => ("completed", Value::Null),
    }
}

/// How a response ended: `status` (`in_progress`, `completed`, `incomplete` or `failed`),
/// `incomplete_details` and `error`.
struct Ending<'a> {
    status: &'a str,
    incomplete: Value,
    error: Value,
}

impl Ending<'_> {
    fn of(reason: &FinishReason) -> Ending<'static> {
        let (status, incomplete) = status_of(reason);
        Ending {
            status,
            incomplete,
            error: Value::Null,
        }
    }
}

/// The response object.
fn response_object(
    id: &str,
    model: &str,
    created: u64,
    output: Vec<Value>,
    usage: Option<&Usage>,
    end: Ending<'_>,
) -> Value {
    let Ending {
        status,
        incomplete,
        error,
    } = end;
    json!({
        "id": id,
        "object": "response",
        "created_at": created,
        "status": status,
        "background": false,
        "error": error,
        "incomplete_details": incomplete,
        "instructions": null,
        "max_output_tokens": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null},
        "store": false,
        "temperature": null,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": null,
        "truncation": "disabled",
        "usage": usage_json(usage),
        "user": null,
        "metadata": {},
    })
}

fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        new_id("resp_")
    }
}

fn encode_response(resp: &ChatResponse) -> Value {
    let mut output = Vec::new();
    if !resp.text.is_empty() || resp.tool_calls.is_empty() {
        output.push(message_item(&new_id("msg_"), &resp.text, "completed"));
    }
    for call in &resp.tool_calls {
        output.push(function_call_item(&new_id("fc_"), call, "completed"));
    }
    let created = if resp.created == 0 {
        now_secs()
    } else {
        resp.created
    };
    response_object(
        &response_id(&resp.id),
        &resp.model,
        created,
        output,
        Some(&resp.usage),
        Ending::of(&resp.finish),
    )
}

fn usage_from(v: &Value) -> Usage {
    Usage {
        input_tokens: count(v, "input_tokens"),
        output_tokens: count(v, "output_tokens"),
    }
}

fn finish_from(r: &Obj, tool_calls: bool) -> FinishReason {
    let reason = r
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str);
    match reason {
        Some("max_output_tokens") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        _ if tool_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if let Some(msg) = error_of(&o) {
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: field(&o, "created_at").and_then(Value::as_u64).unwrap_or(0),
        ..ChatResponse::default()
    };
    let output =
        opt_array(&o, "", "output")?.ok_or_else(|| TranslateError::new("output", "is required"))?;
    for (i, item) in output.iter().enumerate() {
        let p = format!("output[{i}]");
        let it = as_obj(item, &p)?;
        match opt_str(it, &p, "type")?.as_deref() {
            Some("message") => {
                let parts = decode_content(field(it, "content"), &path(&p, "content"))?;
                resp.text.push_str(&text_of(parts));
            }
            Some("function_call") => resp.tool_calls.push(ToolCall {
                id: req_str(it, &p, "call_id")?,
                name: req_str(it, &p, "name")?,
                arguments: opt_str(it, &p, "arguments")?.unwrap_or_default(),
            }),
            // Reasoning and built-in tool items carry nothing the canonical form holds.
            _ => {}
        }
    }
    resp.finish = finish_from(&o, !resp.tool_calls.is_empty());
    if let Some(u) = field(&o, "usage") {
        resp.usage = usage_from(u);
    }
    Ok(resp)
}

/// `{"error":{"message":…}}` of an error body, or the `error` of a failed response.
fn error_of(o: &Obj) -> Option<String> {
    match o.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(e) => Some(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string(),
        ),
        _ => None,
    }
}

impl Codec for ResponsesCodec {
    fn decode_request(&self, _op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        decode_request(&parse_object(body)?)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        encode_request(req).map(|v| v.to_string().into_bytes())
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_response(body)
    }

    fn encode_response(&self, _op: Op, resp: &ChatResponse) -> Vec<u8> {
        encode_response(resp).to_string().into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(ResponsesStreamDecoder::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(ResponsesStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let o = parse_object(body).ok()?;
        error_of(&o)
    }
}

/// The `error` event that ends a Responses stream broken mid-way when llmux relays an
/// upstream's own events (it knows neither the response id nor the sequence, so it sends no
/// `response.failed`; a translated stream gets both from the encoder).
pub fn stream_error_event(message: &str) -> Vec<u8> {
    let body = json!({
        "type": "error",
        "code": "server_error",
        "message": message,
        "param": null,
        "sequence_number": 0,
    });
    let mut out = Vec::new();
    write_sse(&mut out, Some("error"), &body.to_string());
    out
}

// ---------------------------------------------------------------------------------------------
// Streams: Responses events → canonical.

#[derive(Default)]
struct ResponsesStreamDecoder {
    sse: SseParser,
    /// Output item id → canonical tool call index.
    calls: Vec<String>,
    started: bool,
    done: bool,
}

impl ResponsesStreamDecoder {
    fn event(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if data.trim().is_empty() || data.trim() == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| TranslateError::new("stream", format!("invalid event JSON: {e}")))?;
        let ty = v.get("type").and_then(Value::as_str).unwrap_or_default();
        let str_of = |key: &str| {
            v.get(key)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match ty {
            "response.created" => {
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default();
                self.started = true;
                out.push(StreamEvent::Start {
                    id: get("id").to_string(),
                    model: get("model").to_string(),
                });
            }
            "response.output_text.delta" => out.push(StreamEvent::Text(str_of("delta"))),
            "response.output_item.added" => {
                let item = v.get("item").cloned().unwrap_or(Value::Null);
                if item.get("type").and_then(Value::as_str) == Some("function_call") {
                    let get = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or_default();
                    let index = self.calls.len();
                    self.calls.push(get("id").to_string());
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: get("call_id").to_string(),
                        name: get("name").to_string(),
                    });
                    let args = get("arguments");
                    if !args.is_empty() {
                        out.push(StreamEvent::ToolCallArgs {
                            index,
                            fragment: args.to_string(),
                        });
                    }
                }
            }
            "response.function_call_arguments.delta" => {
                let item = str_of("item_id");
                let index = self
                    .calls
                    .iter()
                    .position(|c| *c == item)
                    .unwrap_or(self.calls.len().saturating_sub(1));
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    fragment: str_of("delta"),
                });
            }
            "response.completed" | "response.incomplete" => {
                let r = v.get("response").cloned().unwrap_or(Value::Null);
                let finish = match r.as_object() {
                    Some(o) => finish_from(o, !self.calls.is_empty()),
                    None => FinishReason::Stop,
                };
                out.push(StreamEvent::Finish(finish));
                if let Some(u) = r.get("usage").filter(|u| u.is_object()) {
                    out.push(StreamEvent::Usage(usage_from(u)));
                }
                self.done = true;
            }
            "response.failed" => {
                let msg = v
                    .get("response")
                    .and_then(|r| r.get("error"))
                    .and_then(|e| e.get("message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the response failed");
                out.push(StreamEvent::Error(msg.to_string()));
                self.done = true;
            }
            "error" => {
                let msg = v
                    .get("message")
                    .or_else(|| v.get("error").and_then(|e| e.get("message")))
                    .and_then(Value::as_str)
                    .unwrap_or("upstream error");
                out.push(StreamEvent::Error(msg.to_string()));
                self.done = true;
            }
            _ => {}
        }
        Ok(())
    }
}

impl StreamDecoder for ResponsesStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut events = Vec::new();
        self.sse.feed(chunk, &mut events);
        for e in events {
            self.event(&e.data, out)?;
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut events = Vec::new();
        self.sse.finish(&mut events);
        for e in events {
            self.event(&e.data, out)?;
        }
        if self.started && !self.done {
            return Err(TranslateError::new(
                "stream",
                "the stream ended before `response.completed`",
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: canonical → Responses events.

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
struct ResponsesStreamEncoder {
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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::translate::framing::SseEvent;

    fn events(bytes: &[u8]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(bytes, &mut out);
        p.finish(&mut out);
        out
    }

    fn data(e: &SseEvent) -> Value {
        serde_json::from_str(&e.data).unwrap()
    }

    #[test]
    fn decodes_string_input_and_instructions() {
        let body = br#"{"model":"gpt-4o","input":"hi there","instructions":"be brief","max_output_tokens":50,"temperature":0.2,"stream":true,"store":true,"metadata":{"a":"b"}}"#;
        let r = ResponsesCodec.decode_request(Op::Chat, body).unwrap();
        assert_eq!(r.model, "gpt-4o");
        assert_eq!(r.system.as_deref(), Some("be brief"));
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].role, Role::User);
        assert_eq!(r.messages[0].content, vec![Part::Text("hi there".into())]);
        assert_eq!(r.max_tokens, Some(50));
        assert_eq!(r.temperature, Some(0.2));
        assert!(r.stream);
        assert!(r.include_usage);
    }

    #[test]
    fn decodes_items_with_tool_round_trip() {
        let body = json!({
            "model": "m",
            "input": [
                {"role": "developer", "content": "rules"},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "weather?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
                ]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]}
            ],
            "tools": [{"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}}
        });
        let r = ResponsesCodec
            .decode_request(Op::Chat, body.to_string().as_bytes())
            .unwrap();
        assert_eq!(r.system.as_deref(), Some("rules"));
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].content.len(), 2);
        assert_eq!(r.messages[1].role, Role::Assistant);
        assert_eq!(r.messages[1].tool_calls[0].name, "get_weather");
        assert_eq!(r.messages[2].role, Role::Tool);
        assert_eq!(r.messages[2].tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(r.messages[2].name.as_deref(), Some("get_weather"));
        assert_eq!(
            r.messages[3].content,
            vec![Part::Text("It is sunny.".into())]
        );
        assert_eq!(r.tools[0].name, "get_weather");
        assert_eq!(r.tool_choice, Some(ToolChoice::Tool("get_weather".into())));
        assert!(matches!(
            r.response_format,
            Some(ResponseFormat::JsonSchema { strict: true, .. })
        ));
    }

    #[test]
    fn refuses_what_cannot_be_translated_naming_the_field() {
        let cases = [
            (
                json!({"model":"m","input":"x","previous_response_id":"resp_1"}),
                "previous_response_id",
            ),
            (
                json!({"model":"m","input":"x","tools":[{"type":"web_search"}]}),
                "tools[0].type",
            ),
            (
                json!({"model":"m","input":[{"type":"item_reference","id":"x"}]}),
                "input[0].type",
            ),
            (json!({"model":"m"}), "input"),
            (json!({"input":"x"}), "model"),
            (
                json!({"model":"m","input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}),
                "input[0].content[0].type",
            ),
        ];
        for (body, field) in cases {
            let e = ResponsesCodec
                .decode_request(Op::Chat, body.to_string().as_bytes())
                .unwrap_err();
            assert_eq!(e.field, field, "{body}");
        }
    }

    #[test]
    fn encodes_a_response_object_like_openai() {
        let resp = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "llama3".into(),
            created: 7,
            text: "Hello".into(),
            tool_calls: vec![ToolCall {
                id: "call_9".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
            },
        };
        let v: Value =
            serde_json::from_slice(&ResponsesCodec.encode_response(Op::Chat, &resp)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("resp_"));
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["created_at"], 7);
        assert_eq!(v["output"][0]["type"], "message");
        assert_eq!(v["output"][0]["role"], "assistant");
        assert_eq!(v["output"][0]["content"][0]["type"], "output_text");
        assert_eq!(v["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(v["output"][1]["type"], "function_call");
        assert_eq!(v["output"][1]["call_id"], "call_9");
        assert_eq!(v["usage"]["input_tokens"], 3);
        assert_eq!(v["usage"]["output_tokens"], 4);
        assert_eq!(v["usage"]["total_tokens"], 7);
        // And back.
        let back = ResponsesCodec
            .decode_response(v.to_string().as_bytes())
            .unwrap();
        assert_eq!(back.text, "Hello");
        assert_eq!(back.tool_calls, resp.tool_calls);
        assert_eq!(back.finish, FinishReason::ToolCalls);
        assert_eq!(back.usage, resp.usage);
        let cut = ChatResponse {
            finish: FinishReason::Length,
            ..ChatResponse::default()
        };
        let v: Value =
            serde_json::from_slice(&ResponsesCodec.encode_response(Op::Chat, &cut)).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
    }

    fn encode(events: &[StreamEvent]) -> Vec<u8> {
        let mut enc = ResponsesCodec.stream_encoder(Op::Chat);
        let mut out = Vec::new();
        for e in events {
            enc.encode(e, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    #[test]
    fn stream_follows_openais_event_sequence() {
        let out = encode(&[
            StreamEvent::Start {
                id: "x".into(),
                model: "llama3".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Usage(Usage {
                input_tokens: 2,
                output_tokens: 5,
            }),
        ]);
        let evs = events(&out);
        let types: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            let d = data(e);
            assert_eq!(d["type"], e.event.as_deref().unwrap());
            assert_eq!(d["sequence_number"], i as u64);
        }
        assert_eq!(data(&evs[0])["response"]["status"], "in_progress");
        assert_eq!(data(&evs[4])["delta"], "Hel");
        assert_eq!(data(&evs[6])["text"], "Hello");
        let done = data(&evs[9]);
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["response"]["usage"]["total_tokens"], 7);
        assert!(!String::from_utf8_lossy(&out).contains("[DONE]"));
        // The decoder reads back what the encoder wrote.
        let mut dec = ResponsesCodec.stream_decoder();
        let mut got = Vec::new();
        for b in out.chunks(7) {
            dec.feed(b, &mut got).unwrap();
        }
        dec.finish(&mut got).unwrap();
        let text: String = got
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "Hello");
        assert!(got.contains(&StreamEvent::Usage(Usage {
            input_tokens: 2,
            output_tokens: 5
        })));
    }

    #[test]
    fn streamed_tool_calls_and_errors() {
        let out = encode(&[
            StreamEvent::Start {
                id: String::new(),
                model: "m".into(),
            },
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"city\"".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: ":\"Paris\"}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
        ]);
        let evs = events(&out);
        let types: Vec<&str> = evs.iter().map(|e| e.event.as_deref().unwrap()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let added = data(&evs[2]);
        assert_eq!(added["item"]["type"], "function_call");
        assert_eq!(added["item"]["call_id"], "call_1");
        assert_eq!(data(&evs[5])["arguments"], "{\"city\":\"Paris\"}");
        let last = data(&evs[7]);
        assert_eq!(last["response"]["output"][0]["name"], "get_weather");

        let out = encode(&[
            StreamEvent::Start {
                id: String::new(),
                model: "m".into(),
            },
            StreamEvent::Text("par".into()),
            StreamEvent::Error("upstream cut".into()),
        ]);
        let evs = events(&out);
        let n = evs.len();
        assert_eq!(evs[n - 2].event.as_deref(), Some("error"));
        assert_eq!(data(&evs[n - 2])["message"], "upstream cut");
        assert_eq!(evs[n - 1].event.as_deref(), Some("response.failed"));
        let failed = data(&evs[n - 1]);
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(failed["response"]["error"]["message"], "upstream cut");
    }

    #[test]
    fn request_encodes_for_a_responses_upstream() {
        let body = br#"{"model":"m","input":[{"role":"user","content":"q"},{"type":"function_call","call_id":"c","name":"f","arguments":"{}"},{"type":"function_call_output","call_id":"c","output":"r"}],"instructions":"s","max_output_tokens":9}"#;
        let req = ResponsesCodec.decode_request(Op::Chat, body).unwrap();
        let encoded = ResponsesCodec.encode_request(&req).unwrap();
        let again = ResponsesCodec.decode_request(Op::Chat, &encoded).unwrap();
        assert_eq!(again.messages, req.messages);
        assert_eq!(again.system, req.system);
        assert_eq!(again.max_tokens, Some(9));
    }

    #[test]
    fn decoders_never_panic_on_garbage() {
        for body in [
            &b""[..],
            b"[]",
            b"{\"output\":5}",
            b"{\"output\":[1,{}]}",
            b"\xff",
        ] {
            let _ = ResponsesCodec.decode_response(body);
            let _ = ResponsesCodec.decode_request(Op::Chat, body);
        }
        let mut dec = ResponsesCodec.stream_decoder();
        let mut out = Vec::new();
        let _ = dec.feed(b"event: x\ndata: {\"type\":\"response.function_call_arguments.delta\"}\n\ndata: nope\n\n", &mut out);
        let _ = dec.finish(&mut out);
    }
}
