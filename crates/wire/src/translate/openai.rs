//! OpenAI chat completions and legacy completions ⇄ the canonical form: requests, answers and SSE streams.
//!
//! Decoding a client body refuses, naming the field, what the canonical form cannot carry:
//! `n` ≠ 1, `logprobs: true`, `top_logprobs`, `audio`, `modalities` other than `["text"]`, a
//! non-empty `logit_bias`, `parallel_tool_calls: false`, the deprecated `functions` /
//! `function_call` and the `function` role, `prediction`, `web_search_options`,
//! `reasoning_effort`, `verbosity`, audio / file content parts, non-function tools and (legacy
//! completions) `echo`, `suffix`, `best_of` > 1 and token-array prompts.
//!
//! Ignored as harmless: `store`, `metadata`, `service_tier`, `prompt_cache_key`,
//! `safety_identifier`, stream options other than `include_usage`, a message's `name`, an image
//! part's `detail`, a tool's `strict`, and any other top-level field not listed above.
//! `top_k` (a vLLM extension) is read into the canonical form.
//!
//! Encoding an upstream request always writes a chat completions body with `max_tokens` (the
//! field every OpenAI-compatible server understands) and, when streaming, asks for usage
//! (`stream_options.include_usage`) so the gateway can account for it whatever the client asked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamDecoder, StreamEncoder, StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::translate::framing::{write_sse, SseEvent, SseParser};

/// The OpenAI codec (chat completions; legacy completions with `Op::Completion`).
pub struct OpenAiCodec;

impl OpenAiCodec {
    /// A stream encoder that writes the usage-only chunk (`"choices":[]`) only when
    /// `include_usage` is true — pass the client's `stream_options.include_usage`
    /// (`ChatRequest::include_usage`). `Codec::stream_encoder` is this with `include_usage = true`.
    pub fn stream_encoder_with(&self, op: Op, include_usage: bool) -> Box<dyn StreamEncoder> {
        Box::new(OpenAiStreamEncoder::new(op, include_usage))
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers shared with the other codecs of this module tree.

pub(crate) type Obj = Map<String, Value>;

static ID_COUNTER: AtomicU64 = AtomicU64::new(0);

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh id: `prefix` and 24 base-62 characters from the clock, the process id and a
/// process-wide counter (unique within the process, unlikely to repeat across processes).
pub(crate) fn new_id(prefix: &str) -> String {
    const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let n = ID_COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut state = splitmix64(nanos ^ (u64::from(std::process::id()) << 40)) ^ n;
    let mut id = String::with_capacity(prefix.len() + 24);
    id.push_str(prefix);
    for _ in 0..4 {
        state = splitmix64(state);
        let mut x = state;
        for _ in 0..6 {
            id.push(char::from(ALPHABET[(x % 62) as usize]));
            x /= 62;
        }
    }
    id
}

/// Unix seconds now.
pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(crate) fn parse_object(body: &[u8]) -> Result<Obj, TranslateError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(TranslateError::new("", "the body must be a JSON object")),
        Err(e) => Err(TranslateError::new("", format!("invalid JSON: {e}"))),
    }
}

/// `o[key]`, with `null` read as absent.
pub(crate) fn field<'a>(o: &'a Obj, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

pub(crate) fn path(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

pub(crate) fn opt_str(o: &Obj, prefix: &str, key: &str) -> Result<Option<String>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be a string")),
    }
}

pub(crate) fn req_str(o: &Obj, prefix: &str, key: &str) -> Result<String, TranslateError> {
    opt_str(o, prefix, key)?.ok_or_else(|| TranslateError::new(path(prefix, key), "is required"))
}

pub(crate) fn opt_f64(o: &Obj, prefix: &str, key: &str) -> Result<Option<f64>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| TranslateError::new(path(prefix, key), "must be a number")),
    }
}

pub(crate) fn opt_u32(o: &Obj, prefix: &str, key: &str) -> Result<Option<u32>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                TranslateError::new(path(prefix, key), "must be a non-negative integer")
            }),
    }
}

pub(crate) fn opt_i64(o: &Obj, prefix: &str, key: &str) -> Result<Option<i64>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| TranslateError::new(path(prefix, key), "must be an integer")),
    }
}

pub(crate) fn opt_bool(o: &Obj, prefix: &str, key: &str) -> Result<Option<bool>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be a boolean")),
    }
}

pub(crate) fn opt_array<'a>(
    o: &'a Obj,
    prefix: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, TranslateError> {
    match field(o, key) {
        None => Ok(None),
        Some(Value::Array(a)) => Ok(Some(a)),
        Some(_) => Err(TranslateError::new(path(prefix, key), "must be an array")),
    }
}

pub(crate) fn as_obj<'a>(v: &'a Value, at: &str) -> Result<&'a Obj, TranslateError> {
    v.as_object()
        .ok_or_else(|| TranslateError::new(at, "must be an object"))
}

/// A `u64` member of a JSON object, 0 when absent or not a number (token counts).
pub(crate) fn count(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The JSON schema of a tool that takes no arguments.
pub(crate) fn empty_schema() -> Value {
    json!({"type": "object", "properties": {}})
}

/// `data:<media type>;base64,<data>` → its parts; anything else is a plain URL.
pub(crate) fn image_from_url(url: &str) -> Image {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((head, data)) = rest.split_once(',') {
            if let Some(media_type) = head.strip_suffix(";base64") {
                return Image::Base64 {
                    media_type: media_type.to_string(),
                    data: data.to_string(),
                };
            }
        }
    }
    Image::Url(url.to_string())
}

pub(crate) fn image_to_url(image: &Image) -> String {
    match image {
        Image::Url(u) => u.clone(),
        Image::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
    }
}

fn stream_error(message: impl Into<String>) -> TranslateError {
    TranslateError::new("stream", message)
}

// ---------------------------------------------------------------------------------------------
// Requests: OpenAI → canonical.

fn unsupported(field: &str, why: &str) -> TranslateError {
    TranslateError::new(field, why)
}

fn reject_common(o: &Obj) -> Result<(), TranslateError> {
    if let Some(n) = field(o, "n") {
        if n.as_u64() != Some(1) {
            return Err(unsupported(
                "n",
                "only one choice per request (n = 1) is supported",
            ));
        }
    }
    if let Some(lb) = field(o, "logit_bias") {
        if lb.as_object().is_none_or(|m| !m.is_empty()) {
            return Err(unsupported("logit_bias", "logit_bias cannot be translated"));
        }
    }
    Ok(())
}

fn reject_chat_fields(o: &Obj) -> Result<(), TranslateError> {
    reject_common(o)?;
    if opt_bool(o, "", "logprobs")? == Some(true) {
        return Err(unsupported(
            "logprobs",
            "log probabilities cannot be translated",
        ));
    }
    if field(o, "top_logprobs").is_some() {
        return Err(unsupported(
            "top_logprobs",
            "log probabilities cannot be translated",
        ));
    }
    if field(o, "audio").is_some() {
        return Err(unsupported("audio", "audio output cannot be translated"));
    }
    if let Some(m) = field(o, "modalities") {
        if *m != json!(["text"]) {
            return Err(unsupported(
                "modalities",
                "only the text modality can be translated",
            ));
        }
    }
    if opt_bool(o, "", "parallel_tool_calls")? == Some(false) {
        return Err(unsupported(
            "parallel_tool_calls",
            "parallel_tool_calls = false cannot be translated",
        ));
    }
    for key in [
        "functions",
        "function_call",
        "prediction",
        "web_search_options",
        "reasoning_effort",
        "verbosity",
    ] {
        if field(o, key).is_some() {
            return Err(unsupported(key, "this field cannot be translated"));
        }
    }
    Ok(())
}

/// Content (string, array of parts or null) → parts. `images`: image parts are allowed here.
fn decode_content(v: Option<&Value>, at: &str, images: bool) -> Result<Vec<Part>, TranslateError> {
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
            "text" => {
                let text = req_str(po, &pp, "text")?;
                if !text.is_empty() {
                    out.push(Part::Text(text));
                }
            }
            "refusal" => out.push(Part::Text(req_str(po, &pp, "refusal")?)),
            "image_url" if images => {
                let url = match field(po, "image_url") {
                    Some(Value::String(u)) => u.clone(),
                    Some(Value::Object(iu)) => req_str(iu, &path(&pp, "image_url"), "url")?,
                    _ => return Err(TranslateError::new(path(&pp, "image_url"), "is required")),
                };
                out.push(Part::Image(image_from_url(&url)));
            }
            other => {
                return Err(TranslateError::new(
                    pp,
                    format!("content part type `{other}` cannot be translated here"),
                ))
            }
        }
    }
    Ok(out)
}

fn text_only(parts: Vec<Part>, sep: &str) -> String {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            Part::Image(_) => None,
        })
        .collect::<Vec<_>>()
        .join(sep)
}

fn decode_tool_calls(m: &Obj, at: &str) -> Result<Vec<ToolCall>, TranslateError> {
    let Some(calls) = opt_array(m, at, "tool_calls")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(calls.len());
    for (j, tc) in calls.iter().enumerate() {
        let tp = format!("{at}.tool_calls[{j}]");
        let t = as_obj(tc, &tp)?;
        if let Some(ty) = opt_str(t, &tp, "type")? {
            if ty != "function" {
                return Err(TranslateError::new(
                    path(&tp, "type"),
                    format!("tool call type `{ty}` cannot be translated"),
                ));
            }
        }
        let fp = path(&tp, "function");
        let f = as_obj(
            field(t, "function").ok_or_else(|| TranslateError::new(&fp, "is required"))?,
            &fp,
        )?;
        let name = req_str(f, &fp, "name")?;
        let arguments = match field(f, "arguments") {
            None => "{}".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let id = opt_str(t, &tp, "id")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| new_id("call_"));
        out.push(ToolCall {
            id,
            name,
            arguments,
        });
    }
    Ok(out)
}

fn decode_sampling(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    req.max_tokens = match opt_u32(o, "", "max_completion_tokens")? {
        Some(n) => Some(n),
        None => opt_u32(o, "", "max_tokens")?,
    };
    req.temperature = opt_f64(o, "", "temperature")?;
    req.top_p = opt_f64(o, "", "top_p")?;
    req.top_k = opt_u32(o, "", "top_k")?;
    req.frequency_penalty = opt_f64(o, "", "frequency_penalty")?;
    req.presence_penalty = opt_f64(o, "", "presence_penalty")?;
    req.seed = opt_i64(o, "", "seed")?;
    req.stop = match field(o, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(k, s)| {
                s.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| TranslateError::new(format!("stop[{k}]"), "must be a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(TranslateError::new(
                "stop",
                "must be a string or an array of strings",
            ))
        }
    };
    req.stream = opt_bool(o, "", "stream")?.unwrap_or(false);
    if let Some(so) = field(o, "stream_options") {
        let so = as_obj(so, "stream_options")?;
        req.include_usage = opt_bool(so, "stream_options", "include_usage")?.unwrap_or(false);
    }
    req.user = opt_str(o, "", "user")?;
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
        if let Some(ty) = opt_str(t, &tp, "type")? {
            if ty != "function" {
                return Err(TranslateError::new(
                    path(&tp, "type"),
                    format!("tool type `{ty}` cannot be translated"),
                ));
            }
        }
        let fp = path(&tp, "function");
        let f = as_obj(
            field(t, "function").ok_or_else(|| TranslateError::new(&fp, "is required"))?,
            &fp,
        )?;
        out.push(Tool {
            name: req_str(f, &fp, "name")?,
            description: opt_str(f, &fp, "description")?,
            parameters: field(f, "parameters").cloned().unwrap_or_else(empty_schema),
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
            let f = as_obj(
                field(tc, "function")
                    .ok_or_else(|| TranslateError::new("tool_choice.function", "is required"))?,
                "tool_choice.function",
            )?;
            Ok(Some(ToolChoice::Tool(req_str(
                f,
                "tool_choice.function",
                "name",
            )?)))
        }
        Some(_) => Err(TranslateError::new(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

fn decode_response_format(o: &Obj) -> Result<Option<ResponseFormat>, TranslateError> {
    let Some(rf) = field(o, "response_format") else {
        return Ok(None);
    };
    let rf = as_obj(rf, "response_format")?;
    let ty = req_str(rf, "response_format", "type")?;
    match ty.as_str() {
        "text" => Ok(Some(ResponseFormat::Text)),
        "json_object" => Ok(Some(ResponseFormat::JsonObject)),
        "json_schema" => {
            let at = "response_format.json_schema";
            let js = as_obj(
                field(rf, "json_schema").ok_or_else(|| TranslateError::new(at, "is required"))?,
                at,
            )?;
            Ok(Some(ResponseFormat::JsonSchema {
                name: opt_str(js, at, "name")?.unwrap_or_else(|| "response".to_string()),
                schema: field(js, "schema").cloned().unwrap_or_else(|| json!({})),
                strict: opt_bool(js, at, "strict")?.unwrap_or(false),
            }))
        }
        other => Err(TranslateError::new(
            "response_format.type",
            format!("response format `{other}` cannot be translated"),
        )),
    }
}

fn decode_chat(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_chat_fields(o)?;
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        ..ChatRequest::default()
    };
    let msgs = opt_array(o, "", "messages")?
        .ok_or_else(|| TranslateError::new("messages", "is required"))?;
    let mut system: Vec<String> = Vec::new();
    // Tool call id → tool name, so tool results can carry the name (Gemini needs it).
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = as_obj(m, &p)?;
        let role = req_str(m, &p, "role")?;
        let cp = path(&p, "content");
        let message = match role.as_str() {
            "system" | "developer" => {
                let text = text_only(decode_content(field(m, "content"), &cp, false)?, "\n");
                system.push(text);
                continue;
            }
            "user" => Message {
                role: Role::User,
                content: decode_content(field(m, "content"), &cp, true)?,
                tool_calls: Vec::new(),
                tool_call_id: None,
                name: None,
            },
            "assistant" => {
                for key in ["audio", "function_call"] {
                    if field(m, key).is_some() {
                        return Err(TranslateError::new(
                            path(&p, key),
                            "this field cannot be translated",
                        ));
                    }
                }
                let mut content = decode_content(field(m, "content"), &cp, false)?;
                if let Some(r) = opt_str(m, &p, "refusal")? {
                    if !r.is_empty() && content.is_empty() {
                        content.push(Part::Text(r));
                    }
                }
                let tool_calls = decode_tool_calls(m, &p)?;
                names.extend(tool_calls.iter().map(|c| (c.id.clone(), c.name.clone())));
                Message {
                    role: Role::Assistant,
                    content,
                    tool_calls,
                    tool_call_id: None,
                    name: None,
                }
            }
            "tool" => {
                let id = req_str(m, &p, "tool_call_id")?;
                let name = names
                    .iter()
                    .rev()
                    .find(|(cid, _)| *cid == id)
                    .map(|(_, n)| n.clone());
                Message {
                    role: Role::Tool,
                    content: decode_content(field(m, "content"), &cp, false)?,
                    tool_calls: Vec::new(),
                    tool_call_id: Some(id),
                    name,
                }
            }
            "function" => {
                return Err(TranslateError::new(
                    path(&p, "role"),
                    "the deprecated `function` role cannot be translated; use `tool`",
                ))
            }
            other => {
                return Err(TranslateError::new(
                    path(&p, "role"),
                    format!("unknown role `{other}`"),
                ))
            }
        };
        req.messages.push(message);
    }
    if !system.is_empty() {
        req.system = Some(system.join("\n\n"));
    }
    decode_sampling(o, &mut req)?;
    req.tools = decode_tools(o)?;
    req.tool_choice = decode_tool_choice(o)?;
    req.response_format = decode_response_format(o)?;
    Ok(req)
}

fn decode_completion(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_common(o)?;
    if field(o, "logprobs").is_some() {
        return Err(unsupported(
            "logprobs",
            "log probabilities cannot be translated",
        ));
    }
    if opt_bool(o, "", "echo")? == Some(true) {
        return Err(unsupported("echo", "echo cannot be translated"));
    }
    if opt_str(o, "", "suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(unsupported(
            "suffix",
            "suffix (insertion) cannot be translated",
        ));
    }
    if opt_u32(o, "", "best_of")?.is_some_and(|n| n > 1) {
        return Err(unsupported("best_of", "best_of > 1 cannot be translated"));
    }
    let prompt = match field(o, "prompt") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(a)) => match a.as_slice() {
            [Value::String(s)] => s.clone(),
            _ => {
                return Err(TranslateError::new(
                    "prompt",
                    "only a single string prompt can be translated",
                ))
            }
        },
        Some(_) => {
            return Err(TranslateError::new(
                "prompt",
                "only a single string prompt can be translated",
            ))
        }
        None => return Err(TranslateError::new("prompt", "is required")),
    };
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text(prompt)],
            tool_calls: Vec::new(),
            tool_call_id: None,
            name: None,
        }],
        legacy_prompt: true,
        ..ChatRequest::default()
    };
    decode_sampling(o, &mut req)?;
    Ok(req)
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → OpenAI.

/// Text parts as a string when there is one, an array of text parts otherwise; `None` when there
/// are none. Images are refused (assistant and tool messages carry text only).
fn text_content(m: &Message, i: usize, who: &str) -> Result<Option<Value>, TranslateError> {
    let mut texts = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t.as_str()),
            Part::Image(_) => {
                return Err(TranslateError::new(
                    format!("messages[{i}].content[{j}]"),
                    format!("OpenAI {who} messages cannot carry images"),
                ))
            }
        }
    }
    Ok(match texts.as_slice() {
        [] => None,
        [one] => Some(json!(one)),
        many => Some(Value::Array(
            many.iter()
                .map(|t| json!({"type": "text", "text": t}))
                .collect(),
        )),
    })
}

fn user_content(m: &Message) -> Value {
    match m.content.as_slice() {
        [] => json!(""),
        [Part::Text(t)] => json!(t),
        parts => Value::Array(
            parts
                .iter()
                .map(|p| match p {
                    Part::Text(t) => json!({"type": "text", "text": t}),
                    Part::Image(img) => {
                        json!({"type": "image_url", "image_url": {"url": image_to_url(img)}})
                    }
                })
                .collect(),
        ),
    }
}

fn tool_call_json(c: &ToolCall) -> Value {
    let id = if c.id.is_empty() {
        new_id("call_")
    } else {
        c.id.clone()
    };
    json!({
        "id": id,
        "type": "function",
        "function": {"name": c.name, "arguments": c.arguments},
    })
}

fn encode_chat_request(req: &ChatRequest) -> Result<Value, TranslateError> {
    let mut msgs = Vec::with_capacity(req.messages.len() + 1);
    if let Some(s) = &req.system {
        msgs.push(json!({"role": "system", "content": s}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let v = match m.role {
            Role::User => json!({"role": "user", "content": user_content(m)}),
            Role::Assistant => {
                let content = text_content(m, i, "assistant")?;
                let mut a = Map::new();
                a.insert("role".into(), json!("assistant"));
                a.insert(
                    "content".into(),
                    match content {
                        Some(c) => c,
                        None if !m.tool_calls.is_empty() => Value::Null,
                        None => json!(""),
                    },
                );
                if !m.tool_calls.is_empty() {
                    a.insert(
                        "tool_calls".into(),
                        Value::Array(m.tool_calls.iter().map(tool_call_json).collect()),
                    );
                }
                Value::Object(a)
            }
            Role::Tool => {
                let id = m.tool_call_id.clone().ok_or_else(|| {
                    TranslateError::new(
                        format!("messages[{i}].tool_call_id"),
                        "a tool result must name the call it answers",
                    )
                })?;
                let content = text_content(m, i, "tool")?.unwrap_or_else(|| json!(""));
                json!({"role": "tool", "tool_call_id": id, "content": content})
            }
        };
        msgs.push(v);
    }
    if req.top_k.is_some() {
        return Err(TranslateError::new(
            "top_k",
            "OpenAI chat completions have no top_k",
        ));
    }
    let mut o = Map::new();
    o.insert("model".into(), json!(req.model));
    o.insert("messages".into(), Value::Array(msgs));
    if let Some(n) = req.max_tokens {
        o.insert("max_tokens".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        o.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        o.insert("top_p".into(), json!(t));
    }
    if !req.stop.is_empty() {
        o.insert("stop".into(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        o.insert("seed".into(), json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        o.insert("frequency_penalty".into(), json!(p));
    }
    if let Some(p) = req.presence_penalty {
        o.insert("presence_penalty".into(), json!(p));
    }
    if req.stream {
        o.insert("stream".into(), json!(true));
        o.insert("stream_options".into(), json!({"include_usage": true}));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut f = Map::new();
                f.insert("name".into(), json!(t.name));
                if let Some(d) = &t.description {
                    f.insert("description".into(), json!(d));
                }
                let params = if t.parameters.is_null() {
                    empty_schema()
                } else {
                    t.parameters.clone()
                };
                f.insert("parameters".into(), params);
                json!({"type": "function", "function": f})
            })
            .collect();
        o.insert("tools".into(), Value::Array(tools));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Tool(name) => json!({"type": "function", "function": {"name": name}}),
        };
        o.insert("tool_choice".into(), v);
    }
    if let Some(rf) = &req.response_format {
        let v = match rf {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => json!({
                "type": "json_schema",
                "json_schema": {"name": name, "schema": schema, "strict": strict},
            }),
        };
        o.insert("response_format".into(), v);
    }
    if let Some(u) = &req.user {
        o.insert("user".into(), json!(u));
    }
    Ok(Value::Object(o))
}

// ---------------------------------------------------------------------------------------------
// Answers.

fn finish_from_openai(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn finish_to_openai(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens.saturating_add(u.output_tokens),
    })
}

fn usage_from(v: &Value) -> Usage {
    Usage {
        input_tokens: count(v, "prompt_tokens"),
        output_tokens: count(v, "completion_tokens"),
    }
}

fn decode_chat_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let o = parse_object(body)?;
    if let Some(msg) = error_of(&Value::Object(o.clone())) {
        return Err(TranslateError::new("error", msg));
    }
    let mut resp = ChatResponse {
        id: opt_str(&o, "", "id")?.unwrap_or_default(),
        model: opt_str(&o, "", "model")?.unwrap_or_default(),
        created: field(&o, "created").and_then(Value::as_u64).unwrap_or(0),
        ..ChatResponse::default()
    };
    let choices = opt_array(&o, "", "choices")?
        .ok_or_else(|| TranslateError::new("choices", "is required"))?;
    let choice = choices
        .first()
        .ok_or_else(|| TranslateError::new("choices", "is empty"))?;
    let c = as_obj(choice, "choices[0]")?;
    if let Some(Value::String(text)) = field(c, "text") {
        resp.text = text.clone();
    }
    if let Some(m) = field(c, "message") {
        let mp = "choices[0].message";
        let m = as_obj(m, mp)?;
        resp.text = text_only(
            decode_content(field(m, "content"), &path(mp, "content"), false)?,
            "",
        );
        if resp.text.is_empty() {
            resp.text = opt_str(m, mp, "refusal")?.unwrap_or_default();
        }
        resp.tool_calls = decode_tool_calls(m, mp)?;
    }
    resp.finish = match opt_str(c, "choices[0]", "finish_reason")? {
        Some(f) => finish_from_openai(&f),
        None => FinishReason::Stop,
    };
    if resp.finish == FinishReason::Stop && !resp.tool_calls.is_empty() {
        resp.finish = FinishReason::ToolCalls;
    }
    if let Some(u) = field(&o, "usage") {
        resp.usage = usage_from(u);
    }
    Ok(resp)
}

fn encode_chat_response(op: Op, resp: &ChatResponse) -> Value {
    let created = if resp.created == 0 {
        now_secs()
    } else {
        resp.created
    };
    match op {
        Op::Completion => json!({
            "id": if resp.id.is_empty() { new_id("cmpl-") } else { resp.id.clone() },
            "object": "text_completion",
            "created": created,
            "model": resp.model,
            "choices": [{
                "text": resp.text,
                "index": 0,
                "logprobs": null,
                "finish_reason": finish_to_openai(&resp.finish),
            }],
            "usage": usage_json(&resp.usage),
        }),
        Op::Chat => {
            let mut message = Map::new();
            message.insert("role".into(), json!("assistant"));
            message.insert(
                "content".into(),
                if resp.text.is_empty() && !resp.tool_calls.is_empty() {
                    Value::Null
                } else {
                    json!(resp.text)
                },
            );
            message.insert("refusal".into(), Value::Null);
            if !resp.tool_calls.is_empty() {
                message.insert(
                    "tool_calls".into(),
                    Value::Array(resp.tool_calls.iter().map(tool_call_json).collect()),
                );
            }
            json!({
                "id": if resp.id.is_empty() { new_id("chatcmpl-") } else { resp.id.clone() },
                "object": "chat.completion",
                "created": created,
                "model": resp.model,
                "choices": [{
                    "index": 0,
                    "message": message,
                    "logprobs": null,
                    "finish_reason": finish_to_openai(&resp.finish),
                }],
                "usage": usage_json(&resp.usage),
            })
        }
    }
}

/// `{"error":{"message":…}}` (or `{"error":"…"}`, as some compatible servers write it).
fn error_of(v: &Value) -> Option<String> {
    match v.get("error")? {
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

impl Codec for OpenAiCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        let o = parse_object(body)?;
        match op {
            Op::Chat => decode_chat(&o),
            Op::Completion => decode_completion(&o),
        }
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        let v = encode_chat_request(req)?;
        serde_json::to_vec(&v).map_err(|e| TranslateError::new("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_chat_response(body)
    }

    fn encode_response(&self, op: Op, resp: &ChatResponse) -> Vec<u8> {
        serde_json::to_vec(&encode_chat_response(op, resp)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStreamDecoder::default())
    }

    /// Writes the usage chunk whenever a `StreamEvent::Usage` arrives; use
    /// [`OpenAiCodec::stream_encoder_with`] to honour a client that did not ask for it.
    fn stream_encoder(&self, op: Op) -> Box<dyn StreamEncoder> {
        self.stream_encoder_with(op, true)
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: OpenAI SSE → events.

#[derive(Default)]
struct OpenAiStreamDecoder {
    sse: SseParser,
    frames: Vec<SseEvent>,
    started: bool,
    done: bool,
    /// OpenAI tool call index (or `None` when the server sent none) → canonical index.
    tools: Vec<(Option<u64>, usize)>,
    /// The id of the last call started, for servers that send no index.
    last_tool: Option<(String, usize)>,
    usage: Option<Usage>,
    usage_sent: bool,
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

    fn frame(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
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

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let frames = std::mem::take(&mut self.frames);
        let mut result = Ok(());
        for f in &frames {
            if let Err(e) = self.frame(&f.data, out) {
                result = Err(e);
                break;
            }
        }
        self.frames = frames;
        self.frames.clear();
        result
    }
}

impl StreamDecoder for OpenAiStreamDecoder {
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
        self.drain(out)?;
        if !self.done {
            self.flush_usage(out);
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Streams: events → OpenAI SSE.

struct OpenAiStreamEncoder {
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
    fn new(op: Op, include_usage: bool) -> OpenAiStreamEncoder {
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
            StreamEvent::Error(_) => {}
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

// ---------------------------------------------------------------------------------------------

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// An upstream's absurd counts do not overflow the total (a panic is an outage).
    #[test]
    fn usage_total_saturates() {
        let u = Usage {
            input_tokens: u64::MAX,
            output_tokens: 5,
        };
        assert_eq!(usage_json(&u)["total_tokens"], u64::MAX);
        assert_eq!(
            crate::translate::gemini::usage_json(u)["totalTokenCount"],
            u64::MAX
        );
    }

    const CHAT_REQUEST: &str = include_str!("../../tests/fixtures/openai/chat_request.json");
    const CHAT_RESPONSE: &str = include_str!("../../tests/fixtures/openai/chat_response.json");
    const CHAT_RESPONSE_TOOLS: &str =
        include_str!("../../tests/fixtures/openai/chat_response_tool_calls.json");
    const CHAT_STREAM: &str = include_str!("../../tests/fixtures/openai/chat_stream.sse");
    const CHAT_STREAM_TOOLS: &str =
        include_str!("../../tests/fixtures/openai/chat_stream_tool_calls.sse");
    const COMPLETION_REQUEST: &str =
        include_str!("../../tests/fixtures/openai/completion_request.json");
    const COMPLETION_RESPONSE: &str =
        include_str!("../../tests/fixtures/openai/completion_response.json");
    const COMPLETION_STREAM: &str =
        include_str!("../../tests/fixtures/openai/completion_stream.sse");
    const ERROR: &str = include_str!("../../tests/fixtures/openai/error.json");

    pub(crate) fn decode_all(
        dec: &mut dyn StreamDecoder,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Vec<StreamEvent> {
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

    fn decode_stream(bytes: &[u8]) -> Vec<StreamEvent> {
        decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &[])
    }

    fn encode_stream(enc: &mut dyn StreamEncoder, events: &[StreamEvent]) -> Vec<u8> {
        let mut out = Vec::new();
        for e in events {
            enc.encode(e, &mut out);
        }
        enc.finish(&mut out);
        out
    }

    fn data_lines(bytes: &[u8]) -> Vec<String> {
        let mut p = SseParser::new();
        let mut ev = Vec::new();
        p.feed(bytes, &mut ev);
        p.finish(&mut ev);
        ev.into_iter().map(|e| e.data).collect()
    }

    #[test]
    fn decodes_documented_chat_request() {
        let req = OpenAiCodec
            .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
            .unwrap();
        assert_eq!(req.model, "gpt-4o");
        assert_eq!(
            req.system.as_deref(),
            Some("You are a helpful assistant.\n\nAnswer briefly.")
        );
        assert_eq!(req.messages.len(), 4);
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(
            req.messages[0].content,
            vec![
                Part::Text("What's in this image, and what's the weather in Paris?".into()),
                Part::Image(Image::Url(
                    "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg".into()
                )),
                Part::Image(Image::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgo=".into()
                }),
            ]
        );
        let a = &req.messages[1];
        assert_eq!(a.role, Role::Assistant);
        assert!(a.content.is_empty());
        assert_eq!(
            a.tool_calls,
            vec![ToolCall {
                id: "call_abc123".into(),
                name: "get_current_weather".into(),
                arguments: "{\"location\":\"Paris, France\"}".into(),
            }]
        );
        let t = &req.messages[2];
        assert_eq!(t.role, Role::Tool);
        assert_eq!(t.tool_call_id.as_deref(), Some("call_abc123"));
        assert_eq!(t.name.as_deref(), Some("get_current_weather"));
        assert_eq!(t.content, vec![Part::Text("{\"temperature\":22}".into())]);
        assert_eq!(req.messages[3].role, Role::User);
        assert_eq!(req.max_tokens, Some(300));
        assert_eq!(req.temperature, Some(0.2));
        assert_eq!(req.top_p, Some(0.9));
        assert_eq!(req.stop, vec!["\n\n".to_string()]);
        assert_eq!(req.seed, Some(42));
        assert_eq!(req.frequency_penalty, Some(0.5));
        assert_eq!(req.presence_penalty, Some(0.25));
        assert!(req.stream);
        assert!(req.include_usage);
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tools[0].name, "get_current_weather");
        assert_eq!(
            req.tools[0].description.as_deref(),
            Some("Get the current weather in a given location")
        );
        assert_eq!(req.tools[0].parameters["required"], json!(["location"]));
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(
            req.response_format,
            Some(ResponseFormat::JsonSchema {
                name: "weather".into(),
                schema: json!({"type": "object", "properties": {"summary": {"type": "string"}}}),
                strict: true,
            })
        );
        assert_eq!(req.user.as_deref(), Some("user-1234"));
        assert!(!req.legacy_prompt);
    }

    #[test]
    fn decodes_request_variants() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}],
            "max_tokens":10,"max_completion_tokens":20,"stop":["a","b"],
            "tool_choice":{"type":"function","function":{"name":"f"}},
            "response_format":{"type":"json_object"},"n":1,"logprobs":false,
            "store":true,"metadata":{"k":"v"},"service_tier":"auto","parallel_tool_calls":true}"#;
        let req = OpenAiCodec.decode_request(Op::Chat, body).unwrap();
        assert_eq!(req.max_tokens, Some(20));
        assert_eq!(req.stop, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(req.tool_choice, Some(ToolChoice::Tool("f".into())));
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert!(!req.stream && !req.include_usage);
        for (choice, want) in [
            ("\"none\"", ToolChoice::None),
            ("\"required\"", ToolChoice::Required),
        ] {
            let body = format!(r#"{{"model":"m","messages":[],"tool_choice":{choice}}}"#);
            let req = OpenAiCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap();
            assert_eq!(req.tool_choice, Some(want));
        }
    }

    #[test]
    fn decodes_legacy_completion_request() {
        let req = OpenAiCodec
            .decode_request(Op::Completion, COMPLETION_REQUEST.as_bytes())
            .unwrap();
        assert!(req.legacy_prompt);
        assert_eq!(req.model, "gpt-3.5-turbo-instruct");
        assert_eq!(
            req.messages,
            vec![Message {
                role: Role::User,
                content: vec![Part::Text("Say this is a test".into())],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            }]
        );
        assert_eq!(req.max_tokens, Some(7));
        assert_eq!(req.temperature, Some(0.0));
        let req = OpenAiCodec
            .decode_request(Op::Completion, br#"{"model":"m","prompt":["one"]}"#)
            .unwrap();
        assert_eq!(req.messages[0].content, vec![Part::Text("one".into())]);
        let err = OpenAiCodec
            .decode_request(Op::Completion, br#"{"model":"m","prompt":["a","b"]}"#)
            .unwrap_err();
        assert_eq!(err.field, "prompt");
        let err = OpenAiCodec
            .decode_request(Op::Completion, br#"{"model":"m","prompt":[1,2,3]}"#)
            .unwrap_err();
        assert_eq!(err.field, "prompt");
    }

    #[test]
    fn inexpressible_fields_are_named() {
        let cases: &[(&str, &str)] = &[
            (r#""n":2"#, "n"),
            (r#""logprobs":true"#, "logprobs"),
            (r#""top_logprobs":3"#, "top_logprobs"),
            (r#""audio":{"voice":"alloy","format":"wav"}"#, "audio"),
            (r#""modalities":["text","audio"]"#, "modalities"),
            (r#""logit_bias":{"50256":-100}"#, "logit_bias"),
            (r#""parallel_tool_calls":false"#, "parallel_tool_calls"),
            (r#""functions":[{"name":"f"}]"#, "functions"),
            (
                r#""prediction":{"type":"content","content":"x"}"#,
                "prediction",
            ),
            (r#""reasoning_effort":"low""#, "reasoning_effort"),
            (r#""stop":5"#, "stop"),
            (r#""temperature":"hot""#, "temperature"),
            (
                r#""tools":[{"type":"custom","custom":{"name":"x"}}]"#,
                "tools[0].type",
            ),
            (
                r#""response_format":{"type":"xml"}"#,
                "response_format.type",
            ),
        ];
        for (extra, field) in cases {
            let body =
                format!(r#"{{"model":"m","messages":[{{"role":"user","content":"hi"}}],{extra}}}"#);
            let err = OpenAiCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap_err();
            assert_eq!(err.field, *field, "{extra}: {err}");
        }
        let msgs: &[(&str, &str)] = &[
            (
                r#"{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"role":"user","content":[{"type":"file","file":{"file_id":"f"}}]}"#,
                "messages[0].content[0]",
            ),
            (
                r#"{"role":"function","name":"f","content":"x"}"#,
                "messages[0].role",
            ),
            (
                r#"{"role":"tool","content":"x"}"#,
                "messages[0].tool_call_id",
            ),
            (
                r#"{"role":"assistant","content":null,"audio":{"id":"a"}}"#,
                "messages[0].audio",
            ),
            (
                r#"{"role":"system","content":[{"type":"image_url","image_url":{"url":"u"}}]}"#,
                "messages[0].content[0]",
            ),
        ];
        for (m, field) in msgs {
            let body = format!(r#"{{"model":"m","messages":[{m}]}}"#);
            let err = OpenAiCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap_err();
            assert_eq!(err.field, *field, "{m}: {err}");
        }
        for (extra, field) in [
            (r#""echo":true"#, "echo"),
            (r#""suffix":"end""#, "suffix"),
            (r#""best_of":3"#, "best_of"),
            (r#""logprobs":2"#, "logprobs"),
            (r#""n":3"#, "n"),
        ] {
            let body = format!(r#"{{"model":"m","prompt":"p",{extra}}}"#);
            let err = OpenAiCodec
                .decode_request(Op::Completion, body.as_bytes())
                .unwrap_err();
            assert_eq!(err.field, field, "{extra}");
        }
        let err = OpenAiCodec
            .encode_request(&ChatRequest {
                model: "m".into(),
                top_k: Some(40),
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "top_k");
        let err = OpenAiCodec.decode_request(Op::Chat, b"[1]").unwrap_err();
        assert_eq!(err.field, "");
    }

    #[test]
    fn request_round_trips_through_canonical() {
        let req = OpenAiCodec
            .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
            .unwrap();
        let body = OpenAiCodec.encode_request(&req).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "You are a helpful assistant.\n\nAnswer briefly."})
        );
        assert_eq!(
            v["messages"][1]["content"][1]["image_url"]["url"],
            "https://upload.wikimedia.org/wikipedia/commons/boardwalk.jpg"
        );
        assert_eq!(
            v["messages"][1]["content"][2]["image_url"]["url"],
            "data:image/png;base64,iVBORw0KGgo="
        );
        assert_eq!(v["messages"][2]["content"], Value::Null);
        assert_eq!(v["messages"][2]["tool_calls"][0]["id"], "call_abc123");
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\":22}"})
        );
        assert_eq!(v["max_tokens"], 300);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["tool_choice"], "auto");
        assert_eq!(v["response_format"]["json_schema"]["name"], "weather");
        let again = OpenAiCodec.decode_request(Op::Chat, &body).unwrap();
        assert_eq!(again, req);
    }

    #[test]
    fn decodes_documented_responses() {
        let r = OpenAiCodec
            .decode_response(CHAT_RESPONSE.as_bytes())
            .unwrap();
        assert_eq!(r.id, "chatcmpl-123");
        assert_eq!(r.model, "gpt-4o-mini");
        assert_eq!(r.created, 1677652288);
        assert_eq!(r.text, "\n\nHello there, how may I assist you today?");
        assert_eq!(r.finish, FinishReason::Stop);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 9,
                output_tokens: 12
            }
        );

        let r = OpenAiCodec
            .decode_response(CHAT_RESPONSE_TOOLS.as_bytes())
            .unwrap();
        assert_eq!(r.text, "");
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(
            r.tool_calls,
            vec![ToolCall {
                id: "call_abc123".into(),
                name: "get_current_weather".into(),
                arguments: "{\n\"location\": \"Boston, MA\"\n}".into(),
            }]
        );
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 82,
                output_tokens: 17
            }
        );

        let r = OpenAiCodec
            .decode_response(COMPLETION_RESPONSE.as_bytes())
            .unwrap();
        assert_eq!(r.text, "\n\nThis is indeed a test");
        assert_eq!(r.finish, FinishReason::Length);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 5,
                output_tokens: 7
            }
        );
    }

    #[test]
    fn encodes_responses_like_openai() {
        let resp = ChatResponse {
            id: String::new(),
            model: "gpt-4o".into(),
            created: 0,
            text: String::new(),
            tool_calls: vec![ToolCall {
                id: "toolu_01".into(),
                name: "f".into(),
                arguments: "{\"a\":1}".into(),
            }],
            finish: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 3,
                output_tokens: 4,
            },
        };
        let v: Value =
            serde_json::from_slice(&OpenAiCodec.encode_response(Op::Chat, &resp)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 0);
        let m = &v["choices"][0]["message"];
        assert_eq!(m["role"], "assistant");
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["refusal"], Value::Null);
        assert_eq!(m["tool_calls"][0]["id"], "toolu_01");
        assert_eq!(m["tool_calls"][0]["type"], "function");
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], "{\"a\":1}");
        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            v["usage"],
            json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
        );
        assert_eq!(
            OpenAiCodec
                .decode_response(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .tool_calls,
            resp.tool_calls
        );

        let resp = ChatResponse {
            text: "hello".into(),
            finish: FinishReason::Length,
            ..ChatResponse::default()
        };
        let v: Value =
            serde_json::from_slice(&OpenAiCodec.encode_response(Op::Completion, &resp)).unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(v["object"], "text_completion");
        assert_eq!(v["choices"][0]["text"], "hello");
        assert_eq!(v["choices"][0]["finish_reason"], "length");
    }

    #[test]
    fn decodes_documented_streams() {
        let ev = decode_stream(CHAT_STREAM.as_bytes());
        assert_eq!(
            ev,
            vec![
                StreamEvent::Start {
                    id: "chatcmpl-123".into(),
                    model: "gpt-4o-mini".into()
                },
                StreamEvent::Text("Hello".into()),
                StreamEvent::Text("!".into()),
                StreamEvent::Finish(FinishReason::Stop),
                StreamEvent::Usage(Usage {
                    input_tokens: 9,
                    output_tokens: 2
                }),
            ]
        );
        let ev = decode_stream(CHAT_STREAM_TOOLS.as_bytes());
        assert_eq!(
            ev,
            vec![
                StreamEvent::Start {
                    id: "chatcmpl-9abc".into(),
                    model: "gpt-4o-2024-08-06".into()
                },
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "{\"".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "location".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "\":\"".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "Paris".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "\"}".into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "call_2".into(),
                    name: "get_time".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 1,
                    fragment: "{}".into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
            ]
        );
        let ev = decode_stream(COMPLETION_STREAM.as_bytes());
        assert_eq!(
            ev,
            vec![
                StreamEvent::Start {
                    id: "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe".into(),
                    model: "gpt-3.5-turbo-instruct".into()
                },
                StreamEvent::Text("\n\n".into()),
                StreamEvent::Text("This".into()),
                StreamEvent::Text(" is a test".into()),
                StreamEvent::Finish(FinishReason::Length),
            ]
        );
    }

    #[test]
    fn stream_split_at_every_byte_gives_the_same_events() {
        for sample in [CHAT_STREAM, CHAT_STREAM_TOOLS, COMPLETION_STREAM] {
            let bytes = sample.as_bytes();
            let whole = decode_stream(bytes);
            for cut in 0..bytes.len() {
                let ev = decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &[cut]);
                assert_eq!(ev, whole, "cut at {cut}");
            }
            let cuts: Vec<usize> = (1..bytes.len()).step_by(7).collect();
            let ev = decode_all(OpenAiCodec.stream_decoder().as_mut(), bytes, &cuts);
            assert_eq!(ev, whole);
        }
    }

    #[test]
    fn stream_error_and_servers_without_index() {
        let ev = decode_stream(
            b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n\
              data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        );
        assert_eq!(ev.last(), Some(&StreamEvent::Error("overloaded".into())));
        // A whole call in one delta, no index; usage in the finishing chunk.
        let ev = decode_stream(
            b"data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n\
              data: {\"id\":\"x\",\"model\":\"m\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\n\
              data: [DONE]\n\n",
        );
        assert_eq!(
            ev[1..],
            [
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "c1".into(),
                    name: "f".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: "{}".into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 1,
                    output_tokens: 2
                }),
            ]
        );
    }

    fn sample_events() -> Vec<StreamEvent> {
        vec![
            StreamEvent::Start {
                id: "chatcmpl-1".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "1}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 5,
                output_tokens: 6,
            }),
        ]
    }

    #[test]
    fn encoder_writes_chunks_and_done_and_usage_only_when_asked() {
        let events = sample_events();
        let bytes = encode_stream(
            OpenAiCodec.stream_encoder_with(Op::Chat, true).as_mut(),
            &events,
        );
        let data = data_lines(&bytes);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "");
        for c in &chunks {
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "chatcmpl-1");
        }
        assert_eq!(
            chunks[3]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}})
        );
        assert_eq!(
            chunks[4]["choices"][0]["delta"]["tool_calls"][0],
            json!({"index":0,"function":{"arguments":"{\"a\":"}})
        );
        let fin = &chunks[chunks.len() - 2];
        assert_eq!(fin["choices"][0]["delta"], json!({}));
        assert_eq!(fin["choices"][0]["finish_reason"], "tool_calls");
        let last = &chunks[chunks.len() - 1];
        assert_eq!(last["choices"], json!([]));
        assert_eq!(last["usage"]["total_tokens"], 11);
        // Our own decoder reads it back.
        let back = decode_stream(&bytes);
        assert_eq!(back, events);

        let bytes = encode_stream(
            OpenAiCodec.stream_encoder_with(Op::Chat, false).as_mut(),
            &events,
        );
        let data = data_lines(&bytes);
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        assert!(data.iter().all(|d| !d.contains("usage")), "{data:?}");
        assert_eq!(decode_stream(&bytes), events[..events.len() - 1]);

        // Usage before Finish is held until after the finish chunk.
        let mut reordered = events.clone();
        reordered.swap(6, 7);
        let bytes = encode_stream(OpenAiCodec.stream_encoder(Op::Chat).as_mut(), &reordered);
        assert_eq!(decode_stream(&bytes), events);
    }

    #[test]
    fn encoder_completion_chunks_and_errors() {
        let events = vec![
            StreamEvent::Start {
                id: String::new(),
                model: "m".into(),
            },
            StreamEvent::Text("a".into()),
            StreamEvent::Finish(FinishReason::Stop),
        ];
        let bytes = encode_stream(
            OpenAiCodec
                .stream_encoder_with(Op::Completion, false)
                .as_mut(),
            &events,
        );
        let data = data_lines(&bytes);
        assert_eq!(data.len(), 3);
        let first: Value = serde_json::from_str(&data[0]).unwrap();
        assert_eq!(first["object"], "text_completion");
        assert!(first["id"].as_str().unwrap().starts_with("cmpl-"));
        assert_eq!(first["choices"][0]["text"], "a");
        let back = decode_stream(&bytes);
        assert_eq!(back[1..], events[1..]);

        let mut enc = OpenAiCodec.stream_encoder(Op::Chat);
        let mut out = Vec::new();
        enc.encode(
            &StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            &mut out,
        );
        enc.encode(&StreamEvent::Error("boom".into()), &mut out);
        enc.finish(&mut out);
        let data = data_lines(&out);
        assert!(!data.iter().any(|d| d == "[DONE]"));
        let err: Value = serde_json::from_str(data.last().unwrap()).unwrap();
        assert_eq!(err["error"]["message"], "boom");
        assert_eq!(err["error"]["type"], "server_error");
        assert_eq!(
            decode_stream(&out).last(),
            Some(&StreamEvent::Error("boom".into()))
        );
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            OpenAiCodec.error_message(ERROR.as_bytes()).as_deref(),
            Some("The model `gpt-5-nope` does not exist or you do not have access to it.")
        );
        assert_eq!(
            OpenAiCodec
                .error_message(br#"{"error":"plain"}"#)
                .as_deref(),
            Some("plain")
        );
        assert_eq!(OpenAiCodec.error_message(b"not json"), None);
        assert_eq!(OpenAiCodec.error_message(br#"{"ok":1}"#), None);
        assert_eq!(
            OpenAiCodec
                .decode_response(ERROR.as_bytes())
                .unwrap_err()
                .field,
            "error"
        );
    }

    #[test]
    fn ids_are_unique_and_prefixed() {
        let a = new_id("chatcmpl-");
        let b = new_id("chatcmpl-");
        assert_ne!(a, b);
        assert!(a.starts_with("chatcmpl-"));
        assert_eq!(a.len(), "chatcmpl-".len() + 24);
        assert!(a[9..].chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn decoders_never_panic_on_truncated_or_garbage_input() {
        let garbage: [&[u8]; 8] = [
            b"\xff\xfe\x00data: {",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615}]}}]}\n\n",
            b"data: {\"choices\":\"x\",\"usage\":5}\n\n",
            b"data: []\n\ndata: 12\n\n",
            b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[null,1,{\"function\":7}]}}]}\n\n",
            b"\r\r\r\n\n:::\ndata\n\n",
            b"data: {\"error\":null,\"choices\":null}\n\n",
            b"data: [DONE]\n\ndata: garbage\n\n",
        ];
        let samples = [CHAT_STREAM, CHAT_STREAM_TOOLS, COMPLETION_STREAM];
        for s in samples {
            for end in 0..=s.len() {
                let mut d = OpenAiCodec.stream_decoder();
                let mut out = Vec::new();
                let _ = d.feed(&s.as_bytes()[..end], &mut out);
                let _ = d.finish(&mut out);
            }
        }
        for g in garbage {
            let mut d = OpenAiCodec.stream_decoder();
            let mut out = Vec::new();
            let _ = d.feed(g, &mut out);
            let _ = d.feed(g, &mut out);
            let _ = d.finish(&mut out);
        }
        for s in [
            CHAT_REQUEST,
            CHAT_RESPONSE,
            CHAT_RESPONSE_TOOLS,
            COMPLETION_REQUEST,
            COMPLETION_RESPONSE,
            ERROR,
        ] {
            for end in 0..=s.len() {
                let b = &s.as_bytes()[..end];
                let _ = OpenAiCodec.decode_request(Op::Chat, b);
                let _ = OpenAiCodec.decode_request(Op::Completion, b);
                let _ = OpenAiCodec.decode_response(b);
                let _ = OpenAiCodec.error_message(b);
            }
        }
        for g in garbage {
            let _ = OpenAiCodec.decode_request(Op::Chat, g);
            let _ = OpenAiCodec.decode_response(g);
        }
    }
}
