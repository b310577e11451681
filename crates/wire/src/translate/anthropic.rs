//! Anthropic Messages (API version 2023-06-01) ⇄ the canonical form: requests, answers and SSE streams.
//!
//! Decoding a client body refuses, naming the field, what the canonical form cannot carry:
//! extended `thinking`, `mcp_servers`, `container`, `context_management`, `output_format`,
//! `tool_choice.disable_parallel_tool_use`, server tools (a `tools[i].type` other than
//! `custom`), and content blocks other than text, image (base64 or URL), tool_use and
//! tool_result. Ignored as harmless: `cache_control` anywhere, `service_tier`, metadata other
//! than `user_id`, citations, a tool result's `is_error` (its content still says what failed),
//! and `thinking` / `redacted_thinking` blocks in past assistant turns.
//!
//! Encoding an upstream request writes `max_tokens` [`DEFAULT_MAX_TOKENS`] when the canonical
//! request has none, lifts tool results into user turns, merges consecutive same-role turns
//! (tool results first, as Anthropic requires) and refuses `response_format` JSON modes, `seed`
//! and non-zero frequency / presence penalties.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamDecoder, StreamEncoder, StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::translate::framing::{write_sse, SseEvent, SseParser};
use crate::translate::openai::{
    as_obj, count, empty_schema, field, new_id, now_secs, opt_array, opt_bool, opt_f64, opt_str,
    opt_u32, parse_object, path, req_str, Obj,
};

/// The Anthropic codec (`/v1/messages`).
pub struct AnthropicCodec;

/// `max_tokens` sent upstream when the client did not say (Anthropic requires the field).
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

// ---------------------------------------------------------------------------------------------
// Requests: Anthropic → canonical.

fn reject_fields(o: &Obj) -> Result<(), TranslateError> {
    if let Some(t) = field(o, "thinking") {
        if t.get("type").and_then(Value::as_str) != Some("disabled") {
            return Err(TranslateError::new(
                "thinking",
                "extended thinking cannot be translated",
            ));
        }
    }
    if let Some(m) = field(o, "mcp_servers") {
        if m.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(TranslateError::new(
                "mcp_servers",
                "MCP servers cannot be translated",
            ));
        }
    }
    for key in ["container", "context_management", "output_format"] {
        if field(o, key).is_some() {
            return Err(TranslateError::new(key, "this field cannot be translated"));
        }
    }
    Ok(())
}

fn decode_image(b: &Obj, at: &str) -> Result<Image, TranslateError> {
    let sp = path(at, "source");
    let src = as_obj(
        field(b, "source").ok_or_else(|| TranslateError::new(&sp, "is required"))?,
        &sp,
    )?;
    let ty = req_str(src, &sp, "type")?;
    match ty.as_str() {
        "base64" => Ok(Image::Base64 {
            media_type: req_str(src, &sp, "media_type")?,
            data: req_str(src, &sp, "data")?,
        }),
        "url" => Ok(Image::Url(req_str(src, &sp, "url")?)),
        other => Err(TranslateError::new(
            path(&sp, "type"),
            format!("image source `{other}` cannot be translated"),
        )),
    }
}

/// A tool result's content: a string or text / image blocks.
fn decode_tool_result_content(v: Option<&Value>, at: &str) -> Result<Vec<Part>, TranslateError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![Part::Text(s.clone())]),
        Some(Value::Array(blocks)) => {
            let mut out = Vec::with_capacity(blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                let bp = format!("{at}[{k}]");
                let bo = as_obj(b, &bp)?;
                match req_str(bo, &bp, "type")?.as_str() {
                    "text" => out.push(Part::Text(req_str(bo, &bp, "text")?)),
                    "image" => out.push(Part::Image(decode_image(bo, &bp)?)),
                    other => {
                        return Err(TranslateError::new(
                            bp,
                            format!("`{other}` blocks in a tool result cannot be translated"),
                        ))
                    }
                }
            }
            Ok(out)
        }
        Some(_) => Err(TranslateError::new(
            at,
            "must be a string or an array of blocks",
        )),
    }
}

fn user_message(content: Vec<Part>) -> Message {
    Message {
        role: Role::User,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// One Anthropic message → canonical messages (a user turn splits around its tool results).
fn decode_message(
    m: &Obj,
    p: &str,
    names: &mut Vec<(String, String)>,
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let role = req_str(m, p, "role")?;
    let cp = path(p, "content");
    let blocks: Vec<Value> = match field(m, "content") {
        Some(Value::String(s)) if s.is_empty() => Vec::new(),
        Some(Value::String(s)) => vec![json!({"type": "text", "text": s})],
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            return Err(TranslateError::new(
                &cp,
                "must be a string or an array of blocks",
            ))
        }
        None => return Err(TranslateError::new(&cp, "is required")),
    };
    match role.as_str() {
        "user" => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("{cp}[{j}]");
                let bo = as_obj(b, &bp)?;
                match req_str(bo, &bp, "type")?.as_str() {
                    "text" => {
                        let t = req_str(bo, &bp, "text")?;
                        if !t.is_empty() {
                            parts.push(Part::Text(t));
                        }
                    }
                    "image" => parts.push(Part::Image(decode_image(bo, &bp)?)),
                    "tool_result" => {
                        if !parts.is_empty() {
                            out.push(user_message(std::mem::take(&mut parts)));
                        }
                        let id = req_str(bo, &bp, "tool_use_id")?;
                        let name = names
                            .iter()
                            .rev()
                            .find(|(cid, _)| *cid == id)
                            .map(|(_, n)| n.clone());
                        out.push(Message {
                            role: Role::Tool,
                            content: decode_tool_result_content(
                                field(bo, "content"),
                                &path(&bp, "content"),
                            )?,
                            tool_calls: Vec::new(),
                            tool_call_id: Some(id),
                            name,
                        });
                    }
                    other => {
                        return Err(TranslateError::new(
                            bp,
                            format!("`{other}` blocks cannot be translated"),
                        ))
                    }
                }
            }
            if !parts.is_empty() {
                out.push(user_message(parts));
            }
        }
        "assistant" => {
            let mut content = Vec::new();
            let mut tool_calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let bp = format!("{cp}[{j}]");
                let bo = as_obj(b, &bp)?;
                match req_str(bo, &bp, "type")?.as_str() {
                    "text" => {
                        let t = req_str(bo, &bp, "text")?;
                        if !t.is_empty() {
                            content.push(Part::Text(t));
                        }
                    }
                    "tool_use" => {
                        let id = req_str(bo, &bp, "id")?;
                        let name = req_str(bo, &bp, "name")?;
                        let arguments = match field(bo, "input") {
                            None => "{}".to_string(),
                            Some(v) => v.to_string(),
                        };
                        names.push((id.clone(), name.clone()));
                        tool_calls.push(ToolCall {
                            id,
                            name,
                            arguments,
                        });
                    }
                    "thinking" | "redacted_thinking" => {}
                    other => {
                        return Err(TranslateError::new(
                            bp,
                            format!("`{other}` blocks cannot be translated"),
                        ))
                    }
                }
            }
            out.push(Message {
                role: Role::Assistant,
                content,
                tool_calls,
                tool_call_id: None,
                name: None,
            });
        }
        other => {
            return Err(TranslateError::new(
                path(p, "role"),
                format!("unknown role `{other}` (Anthropic has user and assistant)"),
            ))
        }
    }
    Ok(())
}

fn decode_system(o: &Obj) -> Result<Option<String>, TranslateError> {
    match field(o, "system") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Array(blocks)) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, b) in blocks.iter().enumerate() {
                let bp = format!("system[{i}]");
                let bo = as_obj(b, &bp)?;
                let ty = req_str(bo, &bp, "type")?;
                if ty != "text" {
                    return Err(TranslateError::new(
                        path(&bp, "type"),
                        "system blocks must be text",
                    ));
                }
                texts.push(req_str(bo, &bp, "text")?);
            }
            Ok(if texts.is_empty() {
                None
            } else {
                Some(texts.join("\n"))
            })
        }
        Some(_) => Err(TranslateError::new(
            "system",
            "must be a string or an array of text blocks",
        )),
    }
}

fn decode_tools(o: &Obj) -> Result<Vec<Tool>, TranslateError> {
    let Some(tools) = opt_array(o, "", "tools")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(tools.len());
    for (i, t) in tools.iter().enumerate() {
        let tp = format!("tools[{i}]");
        let t = as_obj(t, &tp)?;
        if let Some(ty) = opt_str(t, &tp, "type")? {
            if ty != "custom" {
                return Err(TranslateError::new(
                    path(&tp, "type"),
                    format!("server tool `{ty}` cannot be translated"),
                ));
            }
        }
        out.push(Tool {
            name: req_str(t, &tp, "name")?,
            description: opt_str(t, &tp, "description")?,
            parameters: field(t, "input_schema")
                .cloned()
                .unwrap_or_else(empty_schema),
        });
    }
    Ok(out)
}

fn decode_tool_choice(o: &Obj) -> Result<Option<ToolChoice>, TranslateError> {
    let Some(tc) = field(o, "tool_choice") else {
        return Ok(None);
    };
    let tc = as_obj(tc, "tool_choice")?;
    if opt_bool(tc, "tool_choice", "disable_parallel_tool_use")? == Some(true) {
        return Err(TranslateError::new(
            "tool_choice.disable_parallel_tool_use",
            "disabling parallel tool use cannot be translated",
        ));
    }
    let ty = req_str(tc, "tool_choice", "type")?;
    match ty.as_str() {
        "auto" => Ok(Some(ToolChoice::Auto)),
        "any" => Ok(Some(ToolChoice::Required)),
        "none" => Ok(Some(ToolChoice::None)),
        "tool" => Ok(Some(ToolChoice::Tool(req_str(tc, "tool_choice", "name")?))),
        other => Err(TranslateError::new(
            "tool_choice.type",
            format!("unknown tool_choice type `{other}`"),
        )),
    }
}

fn decode_request(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_fields(o)?;
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        max_tokens: opt_u32(o, "", "max_tokens")?,
        system: decode_system(o)?,
        // Anthropic streams always report usage.
        include_usage: true,
        ..ChatRequest::default()
    };
    let msgs = opt_array(o, "", "messages")?
        .ok_or_else(|| TranslateError::new("messages", "is required"))?;
    let mut names = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        decode_message(as_obj(m, &p)?, &p, &mut names, &mut req.messages)?;
    }
    req.temperature = opt_f64(o, "", "temperature")?;
    req.top_p = opt_f64(o, "", "top_p")?;
    req.top_k = opt_u32(o, "", "top_k")?;
    if let Some(stops) = opt_array(o, "", "stop_sequences")? {
        for (k, s) in stops.iter().enumerate() {
            let s = s.as_str().ok_or_else(|| {
                TranslateError::new(format!("stop_sequences[{k}]"), "must be a string")
            })?;
            req.stop.push(s.to_string());
        }
    }
    req.stream = opt_bool(o, "", "stream")?.unwrap_or(false);
    req.tools = decode_tools(o)?;
    req.tool_choice = decode_tool_choice(o)?;
    if let Some(md) = field(o, "metadata") {
        req.user = opt_str(as_obj(md, "metadata")?, "metadata", "user_id")?;
    }
    Ok(req)
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → Anthropic.

fn image_block(img: &Image) -> Value {
    match img {
        Image::Url(u) => json!({"type": "image", "source": {"type": "url", "url": u}}),
        Image::Base64 { media_type, data } => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
    }
}

fn content_blocks(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) if t.is_empty() => None,
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Image(img) => Some(image_block(img)),
        })
        .collect()
}

/// Tool call arguments (JSON text) → the `input` object Anthropic wants.
fn arguments_object(args: &str) -> Option<Value> {
    if args.trim().is_empty() {
        return Some(json!({}));
    }
    match serde_json::from_str::<Value>(args) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

fn tool_use_id(id: &str) -> String {
    if id.is_empty() {
        new_id("toolu_")
    } else {
        id.to_string()
    }
}

fn encode_messages(req: &ChatRequest) -> Result<Vec<Value>, TranslateError> {
    // (role, blocks), consecutive same-role turns merged.
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::User => ("user", content_blocks(&m.content)),
            Role::Assistant => {
                let mut blocks = Vec::new();
                for (j, p) in m.content.iter().enumerate() {
                    match p {
                        Part::Text(t) if t.is_empty() => {}
                        Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                        Part::Image(_) => {
                            return Err(TranslateError::new(
                                format!("messages[{i}].content[{j}]"),
                                "Anthropic assistant turns cannot carry images",
                            ))
                        }
                    }
                }
                for (j, c) in m.tool_calls.iter().enumerate() {
                    let input = arguments_object(&c.arguments).ok_or_else(|| {
                        TranslateError::new(
                            format!("messages[{i}].tool_calls[{j}].arguments"),
                            "tool call arguments must be a JSON object",
                        )
                    })?;
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": tool_use_id(&c.id),
                        "name": c.name,
                        "input": input,
                    }));
                }
                ("assistant", blocks)
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::new(
                        format!("messages[{i}].tool_call_id"),
                        "a tool result must name the call it answers",
                    )
                })?;
                let content = match m.content.as_slice() {
                    [] => json!(""),
                    [Part::Text(t)] => json!(t),
                    parts => Value::Array(content_blocks(parts)),
                };
                let block = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                ("user", vec![block])
            }
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some((r, b)) if *r == role => b.extend(blocks),
            _ => turns.push((role, blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, blocks)| {
            // Tool results must open a user turn.
            let (mut results, rest): (Vec<Value>, Vec<Value>) = blocks
                .into_iter()
                .partition(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"));
            results.extend(rest);
            json!({"role": role, "content": results})
        })
        .collect())
}

fn encode_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    match &req.response_format {
        Some(ResponseFormat::JsonObject) | Some(ResponseFormat::JsonSchema { .. }) => {
            return Err(TranslateError::new(
                "response_format",
                "Anthropic Messages has no JSON response format",
            ))
        }
        Some(ResponseFormat::Text) | None => {}
    }
    if req.seed.is_some() {
        return Err(TranslateError::new(
            "seed",
            "Anthropic Messages has no seed",
        ));
    }
    if req.frequency_penalty.is_some_and(|p| p != 0.0) {
        return Err(TranslateError::new(
            "frequency_penalty",
            "Anthropic Messages has no frequency penalty",
        ));
    }
    if req.presence_penalty.is_some_and(|p| p != 0.0) {
        return Err(TranslateError::new(
            "presence_penalty",
            "Anthropic Messages has no presence penalty",
        ));
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    o.insert(
        "max_tokens".into(),
        json!(req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)),
    );
    if let Some(s) = req.system.as_deref().filter(|s| !s.is_empty()) {
        o.insert("system".into(), json!(s));
    }
    o.insert("messages".into(), Value::Array(encode_messages(req)?));
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if let Some(k) = req.top_k {
        o.insert("top_k".into(), json!(k));
    }
    if !req.stop.is_empty() {
        o.insert("stop_sequences".into(), json!(req.stop));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = Map::new();
                v.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    v.insert("description".into(), json!(d));
                }
                let schema = if t.parameters.is_null() {
                    empty_schema()
                } else {
                    t.parameters.clone()
                };
                v.insert("input_schema".into(), schema);
                Value::Object(v)
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!({"type": "auto"}),
            ToolChoice::None => json!({"type": "none"}),
            ToolChoice::Required => json!({"type": "any"}),
            ToolChoice::Tool(name) => json!({"type": "tool", "name": name}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(u) = &req.user {
        o.insert("metadata".into(), json!({"user_id": u}));
    }
    Ok(Value::Object(o))
}

// ---------------------------------------------------------------------------------------------
// Answers.

fn finish_from_anthropic(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        // end_turn, stop_sequence, pause_turn
        _ => FinishReason::Stop,
    }
}

fn finish_to_anthropic(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

/// Input tokens as OpenAI counts them: Anthropic reports cache reads and writes apart.
fn input_tokens(usage: &Value) -> u64 {
    count(usage, "input_tokens")
        + count(usage, "cache_creation_input_tokens")
        + count(usage, "cache_read_input_tokens")
}

fn error_of(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    match e {
        Value::Object(_) => Some(
            e.get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string(),
        ),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if field(&o, "type").and_then(Value::as_str) == Some("error") {
        let msg = error_of(&Value::Object(o.clone())).unwrap_or_else(|| "upstream error".into());
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: now_secs(),
        ..ChatResponse::default()
    };
    let blocks = opt_array(&o, "", "content")?
        .ok_or_else(|| TranslateError::new("content", "is required"))?;
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("content[{j}]");
        let bo = as_obj(b, &bp)?;
        match opt_str(bo, &bp, "type")?.as_deref() {
            Some("text") => resp.text.push_str(&req_str(bo, &bp, "text")?),
            Some("tool_use") => resp.tool_calls.push(ToolCall {
                id: req_str(bo, &bp, "id")?,
                name: req_str(bo, &bp, "name")?,
                arguments: field(bo, "input").map_or_else(|| "{}".to_string(), Value::to_string),
            }),
            // thinking, redacted_thinking and server tool blocks carry nothing canonical.
            _ => {}
        }
    }
    resp.finish = match opt_str(&o, "", "stop_reason")? {
        Some(s) => finish_from_anthropic(&s),
        None if !resp.tool_calls.is_empty() => FinishReason::ToolCalls,
        None => FinishReason::Stop,
    };
    if let Some(u) = field(&o, "usage") {
        resp.usage = Usage {
            input_tokens: input_tokens(u),
            output_tokens: count(u, "output_tokens"),
        };
    }
    Ok(resp)
}

fn encode_response(resp: &ChatResponse) -> Value {
    let mut content = Vec::new();
    if !resp.text.is_empty() {
        content.push(json!({"type": "text", "text": resp.text}));
    }
    for c in &resp.tool_calls {
        content.push(json!({
            "type": "tool_use",
            "id": tool_use_id(&c.id),
            "name": c.name,
            // Infallible here: arguments that are not a JSON object become `{}`.
            "input": arguments_object(&c.arguments).unwrap_or_else(|| json!({})),
        }));
    }
    json!({
        "id": if resp.id.is_empty() { new_id("msg_") } else { resp.id.clone() },
        "type": "message",
        "role": "assistant",
        "model": resp.model,
        "content": content,
        "stop_reason": finish_to_anthropic(&resp.finish),
        "stop_sequence": null,
        "usage": {
            "input_tokens": resp.usage.input_tokens,
            "output_tokens": resp.usage.output_tokens,
        },
    })
}

impl Codec for AnthropicCodec {
    fn decode_request(&self, _op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        decode_request(&parse_object(body)?)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        let v = encode_request(req)?;
        serde_json::to_vec(&v).map_err(|e| TranslateError::new("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_response(body)
    }

    /// Anthropic has one answer shape: `op` is ignored.
    fn encode_response(&self, _op: Op, resp: &ChatResponse) -> Vec<u8> {
        serde_json::to_vec(&encode_response(resp)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStreamDecoder::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(AnthropicStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: Anthropic SSE → events.

#[derive(Default)]
struct AnthropicStreamDecoder {
    sse: SseParser,
    frames: Vec<SseEvent>,
    /// Input tokens from `message_start`, reported with the output tokens of `message_delta`.
    input_tokens: u64,
    /// Content block index → canonical tool call index.
    tools: Vec<(u64, usize)>,
    /// An error ended the stream.
    done: bool,
}

impl AnthropicStreamDecoder {
    fn frame(&mut self, ev: &SseEvent, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        if self.done || ev.data.trim().is_empty() {
            return Ok(());
        }
        let v: Value = serde_json::from_str(&ev.data).map_err(|e| {
            TranslateError::new("stream", format!("invalid JSON in an Anthropic event: {e}"))
        })?;
        if !v.is_object() {
            return Err(TranslateError::new(
                "stream",
                "an Anthropic stream event must be a JSON object",
            ));
        }
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or("");
        let str_of =
            |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        match ty {
            "message_start" => {
                let m = v.get("message").unwrap_or(&Value::Null);
                if let Some(u) = m.get("usage") {
                    self.input_tokens = input_tokens(u);
                }
                out.push(StreamEvent::Start {
                    id: str_of(m, "id"),
                    model: str_of(m, "model"),
                });
            }
            "content_block_start" => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let cb = v.get("content_block").unwrap_or(&Value::Null);
                match cb.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let index = self.tools.len();
                        self.tools.push((block, index));
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: str_of(cb, "id"),
                            name: str_of(cb, "name"),
                        });
                        if let Some(input) = cb.get("input").and_then(Value::as_object) {
                            if !input.is_empty() {
                                out.push(StreamEvent::ToolCallArgs {
                                    index,
                                    fragment: Value::Object(input.clone()).to_string(),
                                });
                            }
                        }
                    }
                    Some("text") => {
                        let t = str_of(cb, "text");
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let block = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                let d = v.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = str_of(d, "text");
                        if !t.is_empty() {
                            out.push(StreamEvent::Text(t));
                        }
                    }
                    Some("input_json_delta") => {
                        let fragment = str_of(d, "partial_json");
                        let index = self
                            .tools
                            .iter()
                            .find(|(b, _)| *b == block)
                            .map(|(_, i)| *i);
                        if let (Some(index), false) = (index, fragment.is_empty()) {
                            out.push(StreamEvent::ToolCallArgs { index, fragment });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(r) = v
                    .get("delta")
                    .and_then(|d| d.get("stop_reason"))
                    .and_then(Value::as_str)
                {
                    out.push(StreamEvent::Finish(finish_from_anthropic(r)));
                }
                if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
                    let input = if u.get("input_tokens").is_some_and(Value::is_u64) {
                        input_tokens(u)
                    } else {
                        self.input_tokens
                    };
                    out.push(StreamEvent::Usage(Usage {
                        input_tokens: input,
                        output_tokens: count(u, "output_tokens"),
                    }));
                }
            }
            "error" => {
                let msg = error_of(&v).unwrap_or_else(|| "upstream error".to_string());
                out.push(StreamEvent::Error(msg));
                self.done = true;
            }
            // ping, content_block_stop, message_stop and anything newer.
            _ => {}
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let frames = std::mem::take(&mut self.frames);
        let mut result = Ok(());
        for f in &frames {
            if let Err(e) = self.frame(f, out) {
                result = Err(e);
                break;
            }
        }
        self.frames = frames;
        self.frames.clear();
        result
    }
}

impl StreamDecoder for AnthropicStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut frames = std::mem::take(&mut self.frames);
        self.sse.feed(chunk, &mut frames);
        self.frames = frames;
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let mut frames = std::mem::take(&mut self.frames);
        self.sse.finish(&mut frames);
        self.frames = frames;
        self.drain(out)
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: events → Anthropic SSE.

#[derive(Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Tool,
}

/// Writes the real API's event sequence. `message_delta` waits until both the finish reason
/// and the usage are known (OpenAI sends usage after the finish) or the stream ends; text and
/// tool deltas are never held.
#[derive(Default)]
struct AnthropicStreamEncoder {
    started: bool,
    /// The open content block: its index and kind.
    open: Option<(usize, BlockKind)>,
    next_block: usize,
    /// Canonical tool call index → content block index.
    tool_blocks: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// `message_stop` or an error was written.
    done: bool,
}

fn event(out: &mut Vec<u8>, name: &str, data: &Value) {
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
                    "usage": {"input_tokens": 0, "output_tokens": 0},
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
            Some(u) => json!({"input_tokens": u.input_tokens, "output_tokens": u.output_tokens}),
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
            StreamEvent::Text(t) => {
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
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.finish.is_some() {
                    return;
                }
                self.start("", "", out);
                let block = self.open_block(
                    BlockKind::Tool,
                    json!({"type": "tool_use", "id": tool_use_id(id), "name": name, "input": {}}),
                    out,
                );
                self.tool_blocks.push((*index, block));
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if fragment.is_empty() || self.finish.is_some() {
                    return;
                }
                // Arguments of an earlier call (a server interleaving calls) still go to its
                // block; the SDKs accumulate deltas by index.
                let Some(block) = self
                    .tool_blocks
                    .iter()
                    .rev()
                    .find(|(c, _)| c == index)
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

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::translate::openai::OpenAiCodec;

    const REQUEST: &str = include_str!("../../tests/fixtures/anthropic/messages_request.json");
    const RESPONSE: &str = include_str!("../../tests/fixtures/anthropic/messages_response.json");
    const RESPONSE_TOOL: &str =
        include_str!("../../tests/fixtures/anthropic/messages_response_tool_use.json");
    const STREAM: &str = include_str!("../../tests/fixtures/anthropic/messages_stream.sse");
    const STREAM_TOOL: &str =
        include_str!("../../tests/fixtures/anthropic/messages_stream_tool_use.sse");
    const ERROR: &str = include_str!("../../tests/fixtures/anthropic/error.json");
    const OPENAI_STREAM: &str = include_str!("../../tests/fixtures/openai/chat_stream.sse");
    const OPENAI_STREAM_TOOLS: &str =
        include_str!("../../tests/fixtures/openai/chat_stream_tool_calls.sse");

    fn decode_with(dec: &mut dyn StreamDecoder, bytes: &[u8], cuts: &[usize]) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        let mut at = 0;
        for &c in cuts {
            dec.feed(&bytes[at..c], &mut out).unwrap();
            at = c;
        }
        dec.feed(&bytes[at..], &mut out).unwrap();
        dec.finish(&mut out).unwrap();
        out
    }

    fn decode(bytes: &[u8]) -> Vec<StreamEvent> {
        decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &[])
    }

    fn encode(enc: &mut dyn StreamEncoder, events: &[StreamEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            enc.encode(e, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    /// (event name, data) of every SSE event.
    fn sse(bytes: &[u8]) -> Vec<(String, Value)> {
        let mut p = SseParser::new();
        let mut ev = Vec::new();
        p.feed(bytes, &mut ev);
        p.finish(&mut ev);
        ev.into_iter()
            .map(|e| {
                (
                    e.event.unwrap_or_default(),
                    serde_json::from_str(&e.data).unwrap(),
                )
            })
            .collect()
    }

    fn user(text: &str) -> Message {
        Message {
            role: Role::User,
            content: vec![Part::Text(text.into())],
            tool_calls: vec![],
            tool_call_id: None,
            name: None,
        }
    }

    #[test]
    fn decodes_documented_request() {
        let req = AnthropicCodec
            .decode_request(Op::Chat, REQUEST.as_bytes())
            .unwrap();
        assert_eq!(req.model, "claude-sonnet-4-20250514");
        assert_eq!(req.max_tokens, Some(1024));
        assert_eq!(
            req.system.as_deref(),
            Some("You are a weather bot.\nBe brief.")
        );
        assert_eq!(req.messages.len(), 5);
        assert_eq!(
            req.messages[0].content,
            vec![
                Part::Image(Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQSkZJRg==".into()
                }),
                Part::Image(Image::Url("https://upload.wikimedia.org/a.jpg".into())),
                Part::Text("Describe these, then check the weather in San Francisco.".into()),
            ]
        );
        let a = &req.messages[1];
        assert_eq!(a.role, Role::Assistant);
        assert_eq!(
            a.content,
            vec![Part::Text("I'll check the weather.".into())]
        );
        assert_eq!(
            a.tool_calls,
            vec![ToolCall {
                id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"San Francisco, CA","unit":"celsius"}"#.into(),
            }]
        );
        let t = &req.messages[2];
        assert_eq!(t.role, Role::Tool);
        assert_eq!(
            t.tool_call_id.as_deref(),
            Some("toolu_01A09q90qw90lq917835lq9")
        );
        assert_eq!(t.name.as_deref(), Some("get_weather"));
        assert_eq!(t.content, vec![Part::Text("15 degrees".into())]);
        assert_eq!(req.messages[3], user("And tomorrow?"));
        assert_eq!(req.messages[4].role, Role::Assistant);
        assert_eq!(req.temperature, Some(0.5));
        assert_eq!(req.top_p, Some(0.9));
        assert_eq!(req.top_k, Some(40));
        assert_eq!(req.stop, vec!["\n\nHuman:".to_string()]);
        assert!(req.stream);
        assert!(req.include_usage);
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tools[0].name, "get_weather");
        assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(
            req.user.as_deref(),
            Some("13803d75-b4b5-4c3e-b2a2-6f21399b021b")
        );
    }

    #[test]
    fn request_round_trips_through_canonical() {
        let req = AnthropicCodec
            .decode_request(Op::Chat, REQUEST.as_bytes())
            .unwrap();
        let body = AnthropicCodec.encode_request(&req).unwrap();
        let again = AnthropicCodec.decode_request(Op::Chat, &body).unwrap();
        assert_eq!(again, req);
        let original: Value = serde_json::from_str(REQUEST).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["messages"][1], original["messages"][1]);
        assert_eq!(v["tools"], original["tools"]);
        assert_eq!(v["tool_choice"], original["tool_choice"]);
        assert_eq!(v["metadata"], original["metadata"]);
    }

    #[test]
    fn tool_choices_and_tool_result_blocks() {
        for (tc, want) in [
            (r#"{"type":"any"}"#, ToolChoice::Required),
            (r#"{"type":"none"}"#, ToolChoice::None),
            (
                r#"{"type":"tool","name":"f"}"#,
                ToolChoice::Tool("f".into()),
            ),
        ] {
            let body =
                format!(r#"{{"model":"m","max_tokens":5,"messages":[],"tool_choice":{tc}}}"#);
            let req = AnthropicCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap();
            assert_eq!(req.tool_choice, Some(want.clone()));
            let v: Value =
                serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
            assert_eq!(v["tool_choice"], serde_json::from_str::<Value>(tc).unwrap());
        }
        let body = br#"{"model":"m","max_tokens":5,"messages":[
            {"role":"user","content":[
                {"type":"text","text":"before"},
                {"type":"tool_result","tool_use_id":"toolu_1","is_error":true,
                 "content":[{"type":"text","text":"boom"},{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]},
                {"type":"text","text":"after","cache_control":{"type":"ephemeral"}}]}]}"#;
        let req = AnthropicCodec.decode_request(Op::Chat, body).unwrap();
        assert_eq!(req.messages.len(), 3);
        assert_eq!(req.messages[0], user("before"));
        assert_eq!(req.messages[1].role, Role::Tool);
        assert_eq!(req.messages[1].name, None);
        assert_eq!(
            req.messages[1].content,
            vec![
                Part::Text("boom".into()),
                Part::Image(Image::Url("https://x/y.png".into()))
            ]
        );
        assert_eq!(req.messages[2], user("after"));
        // Re-encoded: one user turn, the tool result first.
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
        let turns = v["messages"].as_array().unwrap();
        assert_eq!(turns.len(), 1);
        let kinds: Vec<&str> = turns[0]["content"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["type"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["tool_result", "text", "text"]);
        assert_eq!(
            turns[0]["content"][0]["content"][1]["source"]["type"],
            "url"
        );
    }

    #[test]
    fn inexpressible_fields_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                r#""thinking":{"type":"enabled","budget_tokens":2000}"#,
                "thinking",
            ),
            (
                r#""mcp_servers":[{"type":"url","url":"https://m","name":"m"}]"#,
                "mcp_servers",
            ),
            (r#""container":"c""#, "container"),
            (
                r#""tools":[{"type":"web_search_20250305","name":"web_search"}]"#,
                "tools[0].type",
            ),
            (
                r#""tool_choice":{"type":"auto","disable_parallel_tool_use":true}"#,
                "tool_choice.disable_parallel_tool_use",
            ),
            (r#""stop_sequences":[1]"#, "stop_sequences[0]"),
            (r#""system":[{"type":"image"}]"#, "system[0].type"),
        ];
        for (extra, field) in cases {
            let body = format!(
                r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi"}}],{extra}}}"#
            );
            let err = AnthropicCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap_err();
            assert_eq!(err.field, *field, "{extra}: {err}");
        }
        let msgs: &[(&str, &str)] = &[
            (
                r#"{"role":"user","content":[{"type":"document","source":{"type":"base64","media_type":"application/pdf","data":"x"}}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}"#,
                "messages[0].content[0].source.type",
            ),
            (r#"{"role":"system","content":"x"}"#, "messages[0].role"),
            (r#"{"role":"user"}"#, "messages[0].content"),
        ];
        for (m, field) in msgs {
            let body = format!(r#"{{"model":"m","max_tokens":5,"messages":[{m}]}}"#);
            let err = AnthropicCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap_err();
            assert_eq!(err.field, *field, "{m}: {err}");
        }
        let base = ChatRequest {
            model: "m".into(),
            messages: vec![user("hi")],
            ..ChatRequest::default()
        };
        let encode_err = |req: ChatRequest| AnthropicCodec.encode_request(&req).unwrap_err().field;
        assert_eq!(
            encode_err(ChatRequest {
                response_format: Some(ResponseFormat::JsonObject),
                ..base.clone()
            }),
            "response_format"
        );
        assert_eq!(
            encode_err(ChatRequest {
                response_format: Some(ResponseFormat::JsonSchema {
                    name: "n".into(),
                    schema: json!({}),
                    strict: true
                }),
                ..base.clone()
            }),
            "response_format"
        );
        assert_eq!(
            encode_err(ChatRequest {
                seed: Some(1),
                ..base.clone()
            }),
            "seed"
        );
        assert_eq!(
            encode_err(ChatRequest {
                frequency_penalty: Some(0.5),
                ..base.clone()
            }),
            "frequency_penalty"
        );
        assert_eq!(
            encode_err(ChatRequest {
                presence_penalty: Some(-1.0),
                ..base.clone()
            }),
            "presence_penalty"
        );
        // Zero penalties and a text response format say nothing: accepted.
        let ok = ChatRequest {
            frequency_penalty: Some(0.0),
            presence_penalty: Some(0.0),
            response_format: Some(ResponseFormat::Text),
            ..base.clone()
        };
        assert!(AnthropicCodec.encode_request(&ok).is_ok());
        let mut bad_args = base.clone();
        bad_args.messages.push(Message {
            role: Role::Assistant,
            content: vec![],
            tool_calls: vec![ToolCall {
                id: "c".into(),
                name: "f".into(),
                arguments: "{not json".into(),
            }],
            tool_call_id: None,
            name: None,
        });
        assert_eq!(
            encode_err(bad_args.clone()),
            "messages[1].tool_calls[0].arguments"
        );
        bad_args.messages[1].tool_calls[0].arguments = "[1,2]".into();
        assert_eq!(encode_err(bad_args), "messages[1].tool_calls[0].arguments");
        // The OpenAI fixture asks for a JSON schema and a seed: Anthropic cannot.
        let openai = include_str!("../../tests/fixtures/openai/chat_request.json");
        let req = OpenAiCodec
            .decode_request(Op::Chat, openai.as_bytes())
            .unwrap();
        assert_eq!(
            AnthropicCodec.encode_request(&req).unwrap_err().field,
            "response_format"
        );
    }

    #[test]
    fn openai_request_to_anthropic() {
        let body = br#"{
            "model": "gpt-4o",
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/map.png"}}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
                {"role": "user", "content": "Which is warmer?"},
                {"role": "developer", "content": "Use Celsius."}
            ],
            "temperature": 0.3,
            "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather by city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "user": "u-1",
            "stream": true,
            "frequency_penalty": 0
        }"#;
        let req = OpenAiCodec.decode_request(Op::Chat, body).unwrap();
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(v["system"], "Be terse.\n\nUse Celsius.");
        assert_eq!(v["temperature"], 0.3);
        assert_eq!(v["stop_sequences"], json!(["END"]));
        assert_eq!(v["stream"], true);
        assert_eq!(v["tool_choice"], json!({"type": "any"}));
        assert_eq!(v["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            v["tools"],
            json!([{"name": "weather", "description": "Weather by city",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}])
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Paris and Rome?"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
                    {"type": "text", "text": "Which is warmer?"}
                ]}
            ])
        );
        let roles: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["role"].as_str().unwrap())
            .collect();
        assert!(roles.windows(2).all(|w| w[0] != w[1]), "{roles:?}");
        // max_tokens passes through when given.
        let req = ChatRequest {
            max_tokens: Some(77),
            ..req
        };
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(v["max_tokens"], 77);
    }

    #[test]
    fn anthropic_request_to_openai() {
        let mut req = AnthropicCodec
            .decode_request(Op::Chat, REQUEST.as_bytes())
            .unwrap();
        assert_eq!(OpenAiCodec.encode_request(&req).unwrap_err().field, "top_k");
        req.top_k = None;
        let v: Value = serde_json::from_slice(&OpenAiCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(v["model"], "claude-sonnet-4-20250514");
        assert_eq!(v["max_tokens"], 1024);
        assert_eq!(v["stop"], json!(["\n\nHuman:"]));
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["user"], "13803d75-b4b5-4c3e-b2a2-6f21399b021b");
        assert_eq!(v["tools"][0]["function"]["name"], "get_weather");
        assert_eq!(
            v["tools"][0]["function"]["parameters"]["required"],
            json!(["location"])
        );
        assert_eq!(
            v["messages"],
            json!([
                {"role": "system", "content": "You are a weather bot.\nBe brief."},
                {"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQSkZJRg=="}},
                    {"type": "image_url", "image_url": {"url": "https://upload.wikimedia.org/a.jpg"}},
                    {"type": "text", "text": "Describe these, then check the weather in San Francisco."}
                ]},
                {"role": "assistant", "content": "I'll check the weather.", "tool_calls": [
                    {"id": "toolu_01A09q90qw90lq917835lq9", "type": "function", "function": {
                        "name": "get_weather", "arguments": "{\"location\":\"San Francisco, CA\",\"unit\":\"celsius\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_01A09q90qw90lq917835lq9", "content": "15 degrees"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "assistant", "content": "Let me check."}
            ])
        );
        // And back: OpenAI → canonical gives the same conversation.
        let back = OpenAiCodec
            .decode_request(Op::Chat, &serde_json::to_vec(&v).unwrap())
            .unwrap();
        assert_eq!(back.messages, req.messages);
        assert_eq!(back.system, req.system);
    }

    #[test]
    fn decodes_documented_responses() {
        let r = AnthropicCodec.decode_response(RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.id, "msg_013Zva2CMHLNnXjNJJKqJ2EF");
        assert_eq!(r.model, "claude-3-7-sonnet-20250219");
        assert_eq!(r.text, "Hi! My name is Claude.");
        assert_eq!(r.finish, FinishReason::Stop);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 2095,
                output_tokens: 503
            }
        );
        assert!(r.tool_calls.is_empty());
        let r = AnthropicCodec
            .decode_response(RESPONSE_TOOL.as_bytes())
            .unwrap();
        assert_eq!(
            r.text,
            "I'll check the current weather in San Francisco for you."
        );
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(
            r.tool_calls,
            vec![ToolCall {
                id: "toolu_01A09q90qw90lq917835lq9".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"San Francisco, CA"}"#.into(),
            }]
        );
        // Cache reads and writes count as input.
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 472 + 100 + 20,
                output_tokens: 89
            }
        );
        for (reason, want) in [
            ("max_tokens", FinishReason::Length),
            ("stop_sequence", FinishReason::Stop),
            ("end_turn", FinishReason::Stop),
            ("tool_use", FinishReason::ToolCalls),
        ] {
            let body = format!(
                r#"{{"id":"m","type":"message","role":"assistant","model":"c","content":[],"stop_reason":"{reason}","stop_sequence":null,"usage":{{"input_tokens":1,"output_tokens":1}}}}"#
            );
            assert_eq!(
                AnthropicCodec
                    .decode_response(body.as_bytes())
                    .unwrap()
                    .finish,
                want
            );
        }
    }

    #[test]
    fn encodes_responses_like_anthropic() {
        let r = OpenAiCodec
            .decode_response(
                include_str!("../../tests/fixtures/openai/chat_response_tool_calls.json")
                    .as_bytes(),
            )
            .unwrap();
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_response(Op::Chat, &r)).unwrap();
        assert_eq!(v["id"], "chatcmpl-abc123");
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["stop_reason"], "tool_use");
        assert_eq!(v["stop_sequence"], Value::Null);
        assert_eq!(
            v["content"],
            json!([{"type": "tool_use", "id": "call_abc123", "name": "get_current_weather", "input": {"location": "Boston, MA"}}])
        );
        assert_eq!(v["usage"], json!({"input_tokens": 82, "output_tokens": 17}));
        let resp = ChatResponse {
            text: "hi".into(),
            finish: FinishReason::Length,
            tool_calls: vec![ToolCall {
                id: String::new(),
                name: "f".into(),
                arguments: String::new(),
            }],
            ..ChatResponse::default()
        };
        let v: Value =
            serde_json::from_slice(&AnthropicCodec.encode_response(Op::Chat, &resp)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(v["content"][0], json!({"type": "text", "text": "hi"}));
        assert!(v["content"][1]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_"));
        assert_eq!(v["content"][1]["input"], json!({}));
        assert_eq!(v["stop_reason"], "max_tokens");
        let back = AnthropicCodec
            .decode_response(&serde_json::to_vec(&v).unwrap())
            .unwrap();
        assert_eq!(back.text, "hi");
        assert_eq!(back.finish, FinishReason::Length);
    }

    #[test]
    fn decodes_documented_streams() {
        assert_eq!(
            decode(STREAM.as_bytes()),
            vec![
                StreamEvent::Start {
                    id: "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY".into(),
                    model: "claude-opus-4-20250514".into()
                },
                StreamEvent::Text("Hello".into()),
                StreamEvent::Text("!".into()),
                StreamEvent::Finish(FinishReason::Stop),
                StreamEvent::Usage(Usage {
                    input_tokens: 25,
                    output_tokens: 15
                }),
            ]
        );
        assert_eq!(
            decode(STREAM_TOOL.as_bytes()),
            vec![
                StreamEvent::Start {
                    id: "msg_014p7gG3wDgGV9EUtLvnow3U".into(),
                    model: "claude-opus-4-20250514".into()
                },
                StreamEvent::Text("Okay".into()),
                StreamEvent::Text(", let's check the weather for San Francisco, CA:".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "{\"location\":".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: " \"San Fra".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "ncisco, CA\"".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: ", \"unit\": \"fahrenheit\"}".into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 472,
                    output_tokens: 89
                }),
            ]
        );
        let ev = decode(
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"model\":\"c\",\"usage\":{\"input_tokens\":3}}}\n\n\
              event: error\ndata: {\"type\": \"error\", \"error\": {\"type\": \"overloaded_error\", \"message\": \"Overloaded\"}}\n\n",
        );
        assert_eq!(ev.last(), Some(&StreamEvent::Error("Overloaded".into())));
    }

    #[test]
    fn stream_split_at_every_byte_gives_the_same_events() {
        for sample in [STREAM, STREAM_TOOL] {
            let bytes = sample.as_bytes();
            let whole = decode(bytes);
            for cut in 0..bytes.len() {
                assert_eq!(
                    decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &[cut]),
                    whole,
                    "cut at {cut}"
                );
            }
            let cuts: Vec<usize> = (1..bytes.len()).step_by(5).collect();
            assert_eq!(
                decode_with(AnthropicCodec.stream_decoder().as_mut(), bytes, &cuts),
                whole
            );
        }
    }

    #[test]
    fn encoder_writes_the_exact_event_sequence() {
        let events = vec![
            StreamEvent::Start {
                id: "msg_1".into(),
                model: "claude".into(),
            },
            StreamEvent::Text("Let me ".into()),
            StreamEvent::Text("check.".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "toolu_1".into(),
                name: "weather".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"city\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "\"Paris\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: String::new(),
                name: "time".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 1,
                fragment: "{}".into(),
            },
            StreamEvent::Text("Done".into()),
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 10,
                output_tokens: 20,
            }),
        ];
        let bytes = encode(AnthropicCodec.stream_encoder(Op::Chat).as_mut(), &events);
        let ev = sse(&bytes);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        for (name, data) in &ev {
            assert_eq!(data["type"], name.as_str());
        }
        let m = &ev[0].1["message"];
        assert_eq!(m["id"], "msg_1");
        assert_eq!(m["content"], json!([]));
        assert_eq!(m["stop_reason"], Value::Null);
        assert!(
            m["usage"]["input_tokens"].is_u64()
                && m["usage"]["output_tokens"].as_u64().unwrap() <= 1
        );
        assert_eq!(
            ev[2].1,
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
        );
        assert_eq!(
            ev[3].1["delta"],
            json!({"type": "text_delta", "text": "Let me "})
        );
        assert_eq!(
            ev[6].1,
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}})
        );
        assert_eq!(
            ev[7].1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"city\":"})
        );
        assert_eq!(ev[10].1["index"], 2);
        assert!(ev[10].1["content_block"]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_"));
        assert_eq!(ev[13].1["index"], 3);
        assert_eq!(ev[13].1["content_block"]["type"], "text");
        assert_eq!(
            ev[16].1["delta"],
            json!({"stop_reason": "tool_use", "stop_sequence": null})
        );
        assert_eq!(ev[16].1["usage"]["output_tokens"], 20);
        // Our decoder reads it back (the generated tool id aside).
        let mut back = decode(&bytes);
        if let StreamEvent::ToolCallStart { id, .. } = &mut back[6] {
            assert!(id.starts_with("toolu_"));
            id.clear();
        }
        assert_eq!(back, events);
    }

    #[test]
    fn encoder_holds_message_delta_for_usage_but_not_text() {
        let mut enc = AnthropicCodec.stream_encoder(Op::Chat);
        let mut out = Vec::new();
        enc.encode(
            &StreamEvent::Start {
                id: "a".into(),
                model: "b".into(),
            },
            &mut out,
        );
        enc.encode(&StreamEvent::Text("x".into()), &mut out);
        assert!(sse(&out)
            .iter()
            .any(|(n, d)| n == "content_block_delta" && d["delta"]["text"] == "x"));
        enc.encode(&StreamEvent::Finish(FinishReason::Stop), &mut out);
        let names: Vec<String> = sse(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.last().map(String::as_str), Some("content_block_stop"));
        enc.encode(
            &StreamEvent::Usage(Usage {
                input_tokens: 7,
                output_tokens: 8,
            }),
            &mut out,
        );
        enc.finish(&mut out);
        let ev = sse(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
        assert_eq!(names.iter().filter(|n| **n == "message_stop").count(), 1);
        assert_eq!(
            ev[ev.len() - 2].1["usage"],
            json!({"input_tokens": 7, "output_tokens": 8})
        );

        // No usage at all: finish() still ends the message properly.
        let bytes = encode(
            AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
            &[
                StreamEvent::Text("y".into()),
                StreamEvent::Finish(FinishReason::Length),
            ],
        );
        let ev = sse(&bytes);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(ev[0].1["message"]["id"]
            .as_str()
            .unwrap()
            .starts_with("msg_"));
        assert_eq!(ev[5].1["delta"]["stop_reason"], "max_tokens");

        // Errors: `event: error`, no message_stop after.
        let bytes = encode(
            AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
            &[
                StreamEvent::Start {
                    id: "a".into(),
                    model: "b".into(),
                },
                StreamEvent::Error("cut".into()),
            ],
        );
        let ev = sse(&bytes);
        assert_eq!(ev.last().unwrap().0, "error");
        assert_eq!(
            ev.last().unwrap().1,
            json!({"type": "error", "error": {"type": "api_error", "message": "cut"}})
        );
        assert!(!ev.iter().any(|(n, _)| n == "message_stop"));
        assert_eq!(
            decode(&bytes).last(),
            Some(&StreamEvent::Error("cut".into()))
        );
    }

    /// Decodes `bytes` with `from` fed in pieces, encodes with `to`, decodes that with `back`.
    fn transcode(
        from: &dyn Codec,
        to: &mut dyn StreamEncoder,
        bytes: &[u8],
        cuts: &[usize],
    ) -> (Vec<StreamEvent>, Vec<u8>) {
        let mut dec = from.stream_decoder();
        let mut events = Vec::new();
        let mut wire = Vec::new();
        let mut at = 0;
        for &c in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let mut ev = Vec::new();
            dec.feed(&bytes[at..c], &mut ev).unwrap();
            for e in &ev {
                to.encode(e, &mut wire);
            }
            events.extend(ev);
            at = c;
        }
        let mut ev = Vec::new();
        dec.finish(&mut ev).unwrap();
        for e in &ev {
            to.encode(e, &mut wire);
        }
        events.extend(ev);
        to.finish(&mut wire);
        (events, wire)
    }

    #[test]
    fn openai_stream_to_anthropic_stream() {
        for (sample, extra_usage) in [(OPENAI_STREAM, false), (OPENAI_STREAM_TOOLS, true)] {
            let bytes = sample.as_bytes();
            let (reference, reference_wire) = transcode(
                &OpenAiCodec,
                AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
                bytes,
                &[],
            );
            let mut expected = reference.clone();
            if extra_usage {
                // No usage upstream: the Anthropic stream still reports (zero) usage.
                expected.push(StreamEvent::Usage(Usage::default()));
            }
            assert_eq!(decode(&reference_wire), expected);
            let names: Vec<String> = sse(&reference_wire).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names[..2], ["message_start", "ping"]);
            assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
            for cut in 0..bytes.len() {
                let (ev, wire) = transcode(
                    &OpenAiCodec,
                    AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
                    bytes,
                    &[cut],
                );
                assert_eq!(ev, reference, "cut at {cut}");
                assert_eq!(decode(&wire), expected, "cut at {cut}");
            }
            let cuts: Vec<usize> = (3..bytes.len()).step_by(11).collect();
            let (_, wire) = transcode(
                &OpenAiCodec,
                AnthropicCodec.stream_encoder(Op::Chat).as_mut(),
                bytes,
                &cuts,
            );
            assert_eq!(decode(&wire), expected);
        }
    }

    #[test]
    fn anthropic_stream_to_openai_stream() {
        let openai_decode = |b: &[u8]| {
            let mut d = OpenAiCodec.stream_decoder();
            let mut out = Vec::new();
            d.feed(b, &mut out).unwrap();
            d.finish(&mut out).unwrap();
            out
        };
        for sample in [STREAM, STREAM_TOOL] {
            let bytes = sample.as_bytes();
            let (reference, wire) = transcode(
                &AnthropicCodec,
                OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
                bytes,
                &[],
            );
            assert_eq!(openai_decode(&wire), reference);
            assert!(wire.ends_with(b"data: [DONE]\n\n"));
            for cut in 0..bytes.len() {
                let (ev, wire) = transcode(
                    &AnthropicCodec,
                    OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
                    bytes,
                    &[cut],
                );
                assert_eq!(ev, reference, "cut at {cut}");
                assert_eq!(openai_decode(&wire), reference, "cut at {cut}");
            }
            // Without include_usage the client sees everything but the usage.
            let (_, wire) = transcode(
                &AnthropicCodec,
                OpenAiCodec.stream_encoder_with(Op::Chat, false).as_mut(),
                bytes,
                &[],
            );
            let without: Vec<StreamEvent> = reference
                .iter()
                .filter(|e| !matches!(e, StreamEvent::Usage(_)))
                .cloned()
                .collect();
            assert_eq!(openai_decode(&wire), without);
        }
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            AnthropicCodec.error_message(ERROR.as_bytes()).as_deref(),
            Some("The requested resource could not be found.")
        );
        assert_eq!(AnthropicCodec.error_message(b"<html>"), None);
        assert_eq!(AnthropicCodec.error_message(br#"{"type":"message"}"#), None);
        let err = AnthropicCodec
            .decode_response(ERROR.as_bytes())
            .unwrap_err();
        assert_eq!(err.field, "error");
        assert!(err.message.contains("could not be found"));
    }

    #[test]
    fn decoders_never_panic_on_truncated_or_garbage_input() {
        let garbage: [&[u8]; 8] = [
            b"\xff\xfe\x00event: x\ndata: {",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":-1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":5}}\n\n",
            b"data: {\"type\":\"message_start\",\"message\":7}\n\n",
            b"data: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"input\":[1]}}\n\n",
            b"data: {\"type\":\"message_delta\",\"delta\":null,\"usage\":{\"input_tokens\":\"x\"}}\n\n",
            b"data: [DONE]\n\n",
            b"event: error\ndata: {\"type\":\"error\",\"error\":42}\n\n",
            b"\r\r\n\n:\ndata\n\ndata: null\n\n",
        ];
        for s in [STREAM, STREAM_TOOL] {
            for end in 0..=s.len() {
                let mut d = AnthropicCodec.stream_decoder();
                let mut out = Vec::new();
                let _ = d.feed(&s.as_bytes()[..end], &mut out);
                let _ = d.finish(&mut out);
            }
        }
        for g in garbage {
            let mut d = AnthropicCodec.stream_decoder();
            let mut out = Vec::new();
            let _ = d.feed(g, &mut out);
            let _ = d.feed(g, &mut out);
            let _ = d.finish(&mut out);
        }
        for s in [REQUEST, RESPONSE, RESPONSE_TOOL, ERROR] {
            for end in 0..=s.len() {
                let b = &s.as_bytes()[..end];
                let _ = AnthropicCodec.decode_request(Op::Chat, b);
                let _ = AnthropicCodec.decode_response(b);
                let _ = AnthropicCodec.error_message(b);
            }
        }
        for g in garbage {
            let _ = AnthropicCodec.decode_request(Op::Chat, g);
            let _ = AnthropicCodec.decode_response(g);
        }
        // Encoders accept any event order without panicking.
        let mut enc = AnthropicCodec.stream_encoder(Op::Chat);
        let mut out = Vec::new();
        for e in [
            StreamEvent::ToolCallArgs {
                index: 9,
                fragment: "x".into(),
            },
            StreamEvent::Usage(Usage::default()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Text("late".into()),
            StreamEvent::Start {
                id: "late".into(),
                model: String::new(),
            },
        ] {
            enc.encode(&e, &mut out);
        }
        enc.finish(&mut out);
        enc.finish(&mut out);
        assert_eq!(
            sse(&out)
                .iter()
                .filter(|(n, _)| n == "message_stop")
                .count(),
            1
        );
    }
}
