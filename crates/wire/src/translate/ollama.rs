//! Ollama's native `/api/chat` and `/api/generate` (0.12) ⇄ canonical, NDJSON streams included.
//!
//! Decisions worth knowing:
//! - `stream` defaults to true when absent, as in Ollama; Ollama always reports usage, so a decoded
//!   request asks for it (`include_usage`).
//! - Ignored on decode: `keep_alive` and `think` (they steer the Ollama runner, not the answer's
//!   content), and options canonical has no field for (`num_ctx`, `repeat_penalty`, `min_p`, …):
//!   Ollama itself only warns about options it does not use. `logprobs: true`, and on `/api/generate`
//!   a non-empty `suffix`, `template` or `context` or `raw: true`, cannot be translated and are rejected.
//! - `encode_request` writes an `/api/generate` body when the request is a `legacy_prompt` (it must be
//!   one user message) and an `/api/chat` body otherwise; the caller picks the path the same way.
//! - Tool calls have no ids in Ollama: decoded requests number them `call_0`, `call_1`, … in order and a
//!   `tool` message answers the earliest unanswered call named by its `tool_name`; decoded answers use
//!   `call_<token>_<n>`. Encoded tool messages carry `tool_name` when it is known.
//! - `tool_choice`: `auto` is Ollama's only behaviour and `none` is sent as no tools; `required` or a
//!   named tool cannot be expressed and is rejected.
//! - Durations: a stream encoder reports the wall time it saw; a whole answer has no timing, so its
//!   durations are 0.
//! - A streamed tool call is written whole in one line's `message.tool_calls` once the next different
//!   event (or the end) shows its arguments are complete; text is never held. The `done` line waits
//!   for usage (or the end) so that it carries the counts.

use std::time::{Instant, SystemTime};

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamDecoder, StreamEncoder, StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::time::rfc3339;
use crate::translate::framing::LineSplitter;

/// The Ollama codec.
pub struct OllamaCodec;

fn bad(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// A short unique token for ids the upstream did not give (shared with the other codecs).
fn fresh_token() -> String {
    super::openai::new_id("")
}

use super::hold::{Held, PendingCall, Ready};
use super::openai::now_secs;

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Typed reads of one JSON object's fields, errors naming `path.key`; nulls count as absent.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
}

impl<'a> Obj<'a> {
    fn of(v: &'a Value, path: &str) -> Result<Obj<'a>, TranslateError> {
        match v {
            Value::Object(map) => Ok(Obj {
                path: path.to_string(),
                map,
            }),
            _ => Err(bad(path, "expected a JSON object")),
        }
    }

    fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(self.at(key), "expected a string")),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(bad(self.at(key), "expected true or false")),
        }
    }

    fn f64(&self, key: &str) -> Result<Option<f64>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(self.at(key), "expected a number")),
        }
    }

    fn i64(&self, key: &str) -> Result<Option<i64>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match (v.as_i64(), v.as_f64()) {
                (Some(i), _) => Ok(Some(i)),
                (None, Some(f)) if f.fract() == 0.0 && f.abs() < 9.0e18 => Ok(Some(f as i64)),
                _ => Err(bad(self.at(key), "expected an integer")),
            },
        }
    }

    fn array(&self, key: &str) -> Result<&'a [Value], TranslateError> {
        match self.get(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(bad(self.at(key), "expected an array")),
        }
    }

    /// A string or an array of strings.
    fn strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        if let Some(Value::String(s)) = self.get(key) {
            return Ok(vec![s.clone()]);
        }
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{}[{i}]", self.at(key)), "expected a string")),
            })
            .collect()
    }
}

/// The image type a base64 payload starts with; Ollama sends no type. JPEG when unknown.
fn sniff_mime(b64: &str) -> &'static str {
    if b64.starts_with("iVBORw0KGgo") {
        "image/png"
    } else if b64.starts_with("R0lGOD") {
        "image/gif"
    } else if b64.starts_with("UklGR") {
        "image/webp"
    } else {
        "image/jpeg"
    }
}

fn decode_images(o: &Obj, key: &str) -> Result<Vec<Part>, TranslateError> {
    let mut parts = Vec::new();
    for (i, data) in o.strings(key)?.into_iter().enumerate() {
        if data.is_empty() {
            return Err(bad(format!("{}[{i}]", o.at(key)), "empty image"));
        }
        // Some clients send data URLs; Ollama's own clients send bare base64.
        let img = match data
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
        {
            Some((mime, payload)) => Image::Base64 {
                media_type: mime.to_string(),
                data: payload.to_string(),
            },
            None => Image::Base64 {
                media_type: sniff_mime(&data).to_string(),
                data,
            },
        };
        parts.push(Part::Image(img));
    }
    Ok(parts)
}

fn message(role: Role, content: Vec<Part>) -> Message {
    Message {
        role,
        content,
        tool_calls: Vec::new(),
        tool_call_id: None,
        name: None,
    }
}

/// Ollama tool-call arguments (an object; some clients send JSON text) → canonical JSON text.
fn arguments_text(v: Option<&Value>, path: &str) -> Result<String, TranslateError> {
    match v {
        None | Some(Value::Null) => Ok("{}".to_string()),
        Some(a @ Value::Object(_)) => Ok(a.to_string()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(path, "expected a JSON object")),
    }
}

struct CallRecord {
    id: String,
    name: String,
    answered: bool,
}

fn decode_messages(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut system: Vec<String> = Vec::new();
    let mut calls: Vec<CallRecord> = Vec::new();
    let mut next = 0usize;
    let mut gen_id = || {
        let id = format!("call_{next}");
        next += 1;
        id
    };
    for (i, m) in o.array("messages")?.iter().enumerate() {
        let mo = Obj::of(m, &format!("messages[{i}]"))?;
        let role = mo
            .str("role")?
            .ok_or_else(|| bad(mo.at("role"), "missing required field"))?;
        let text = mo.str("content")?.unwrap_or_default().to_string();
        let images = decode_images(&mo, "images")?;
        match role {
            "system" => {
                if !images.is_empty() {
                    return Err(bad(mo.at("images"), "a system message cannot hold images"));
                }
                system.push(text);
            }
            "user" => {
                let mut content = Vec::new();
                if !text.is_empty() || images.is_empty() {
                    content.push(Part::Text(text));
                }
                content.extend(images);
                req.messages.push(message(Role::User, content));
            }
            "assistant" => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(Part::Text(text));
                }
                content.extend(images);
                let mut msg = message(Role::Assistant, content);
                for (j, c) in mo.array("tool_calls")?.iter().enumerate() {
                    let cpath = format!("{}[{j}]", mo.at("tool_calls"));
                    let co = Obj::of(c, &cpath)?;
                    let f = co
                        .get("function")
                        .ok_or_else(|| bad(co.at("function"), "missing required field"))?;
                    let fo = Obj::of(f, &co.at("function"))?;
                    let name = fo
                        .str("name")?
                        .ok_or_else(|| bad(fo.at("name"), "missing required field"))?
                        .to_string();
                    let arguments = arguments_text(fo.get("arguments"), &fo.at("arguments"))?;
                    let id = match co.str("id")? {
                        Some(id) if !id.is_empty() => id.to_string(),
                        _ => gen_id(),
                    };
                    calls.push(CallRecord {
                        id: id.clone(),
                        name: name.clone(),
                        answered: false,
                    });
                    msg.tool_calls.push(ToolCall {
                        id,
                        name,
                        arguments,
                    });
                }
                if msg.content.is_empty() && msg.tool_calls.is_empty() {
                    // An empty assistant turn still takes its place in the conversation.
                    msg.content.push(Part::Text(String::new()));
                }
                req.messages.push(msg);
            }
            "tool" => {
                if !images.is_empty() {
                    return Err(bad(mo.at("images"), "tool results cannot hold images"));
                }
                let name = match mo.str("tool_name")? {
                    Some(n) => Some(n),
                    None => mo.str("name")?,
                }
                .map(str::to_string);
                let given = mo.str("tool_call_id")?;
                let by_id = given.and_then(|id| calls.iter().position(|c| c.id == id));
                let found = by_id.or_else(|| {
                    let n = name.as_deref()?;
                    calls.iter().position(|c| !c.answered && c.name == n)
                });
                let call_id = match found.and_then(|k| calls.get_mut(k)) {
                    Some(rec) => {
                        rec.answered = true;
                        rec.id.clone()
                    }
                    None => given.map_or_else(&mut gen_id, str::to_string),
                };
                let mut msg = message(Role::Tool, vec![Part::Text(text)]);
                msg.tool_call_id = Some(call_id);
                msg.name = name;
                req.messages.push(msg);
            }
            other => {
                return Err(bad(
                    mo.at("role"),
                    format!("unknown role `{other}` (expected system, user, assistant or tool)"),
                ))
            }
        }
    }
    if !system.is_empty() {
        req.system = Some(system.join("\n"));
    }
    Ok(())
}

fn decode_tools(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    for (i, t) in o.array("tools")?.iter().enumerate() {
        let to = Obj::of(t, &format!("tools[{i}]"))?;
        if let Some(kind) = to.str("type")? {
            if kind != "function" {
                return Err(bad(
                    to.at("type"),
                    format!("`{kind}` tools cannot be translated"),
                ));
            }
        }
        let f = to
            .get("function")
            .ok_or_else(|| bad(to.at("function"), "missing required field"))?;
        let fo = Obj::of(f, &to.at("function"))?;
        req.tools.push(Tool {
            name: fo
                .str("name")?
                .ok_or_else(|| bad(fo.at("name"), "missing required field"))?
                .to_string(),
            description: fo.str("description")?.map(str::to_string),
            parameters: fo
                .get("parameters")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    Ok(())
}

fn decode_format(o: &Obj) -> Result<Option<ResponseFormat>, TranslateError> {
    match o.get("format") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(ResponseFormat::JsonObject)),
        Some(Value::Object(_)) => Ok(Some(ResponseFormat::JsonSchema {
            name: "response".to_string(),
            schema: o.get("format").cloned().unwrap_or_default(),
            strict: false,
        })),
        Some(_) => Err(bad(
            o.at("format"),
            "expected \"json\" or a JSON schema object",
        )),
    }
}

fn decode_options(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let Some(v) = o.get("options") else {
        return Ok(());
    };
    let opts = Obj::of(v, &o.at("options"))?;
    req.temperature = opts.f64("temperature")?;
    req.top_p = opts.f64("top_p")?;
    req.top_k = match opts.i64("top_k")? {
        Some(k) if k > 0 => Some(u32::try_from(k).unwrap_or(u32::MAX)),
        _ => None,
    };
    // Ollama: -1 generates until the model stops, -2 until the context is full.
    req.max_tokens = match opts.i64("num_predict")? {
        Some(n) if n >= 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
        _ => None,
    };
    req.stop = opts.strings("stop")?;
    req.seed = opts.i64("seed")?;
    req.frequency_penalty = opts.f64("frequency_penalty")?;
    req.presence_penalty = opts.f64("presence_penalty")?;
    Ok(())
}

fn decode_generate(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    if o.str("suffix")?.is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            o.at("suffix"),
            "fill-in-the-middle cannot be translated",
        ));
    }
    if o.str("template")?.is_some_and(|s| !s.is_empty()) {
        return Err(bad(
            o.at("template"),
            "a prompt template cannot be translated",
        ));
    }
    if !o.array("context")?.is_empty() {
        return Err(bad(
            o.at("context"),
            "Ollama's token context cannot be translated",
        ));
    }
    if o.bool("raw")? == Some(true) {
        return Err(bad(o.at("raw"), "raw prompts cannot be translated"));
    }
    req.legacy_prompt = true;
    req.system = o.str("system")?.map(str::to_string);
    let text = o.str("prompt")?.unwrap_or_default().to_string();
    let images = decode_images(o, "images")?;
    let mut content = Vec::new();
    if !text.is_empty() || images.is_empty() {
        content.push(Part::Text(text));
    }
    content.extend(images);
    req.messages.push(message(Role::User, content));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// canonical → Ollama

fn image_data(img: &Image) -> Option<&str> {
    match img {
        Image::Base64 { data, .. } => Some(data),
        Image::Url(url) => url
            .strip_prefix("data:")
            .and_then(|r| r.split_once(";base64,"))
            .map(|(_, d)| d),
    }
}

/// A message's text (parts joined by newlines) and base64 images.
fn split_content(m: &Message, i: usize) -> Result<(String, Vec<Value>), TranslateError> {
    let mut texts: Vec<&str> = Vec::new();
    let mut images = Vec::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => texts.push(t),
            Part::Image(img) => match image_data(img) {
                Some(d) => images.push(Value::String(d.to_string())),
                None => {
                    return Err(bad(
                        format!("messages[{i}].content[{j}]"),
                        "Ollama takes images only as base64 data, not as URLs",
                    ))
                }
            },
        }
    }
    Ok((texts.join("\n"), images))
}

fn args_object(arguments: &str) -> Option<Value> {
    let t = arguments.trim();
    if t.is_empty() {
        return Some(json!({}));
    }
    match serde_json::from_str::<Value>(t) {
        Ok(v @ Value::Object(_)) => Some(v),
        _ => None,
    }
}

/// For answers, which cannot fail: arguments that are no JSON object are kept under `arguments`.
fn args_value(arguments: &str) -> Value {
    args_object(arguments).unwrap_or_else(|| json!({ "arguments": arguments }))
}

fn tool_call_json(name: &str, args: Value) -> Value {
    json!({"function": {"name": name, "arguments": args}})
}

fn tool_name(req: &ChatRequest, i: usize) -> Option<String> {
    let m = req.messages.get(i)?;
    if let Some(n) = &m.name {
        return Some(n.clone());
    }
    let id = m.tool_call_id.as_deref()?;
    req.messages
        .get(..i)?
        .iter()
        .rev()
        .flat_map(|m| m.tool_calls.iter())
        .find(|c| c.id == id)
        .map(|c| c.name.clone())
}

fn encode_messages(req: &ChatRequest) -> Result<Vec<Value>, TranslateError> {
    let mut out = Vec::new();
    if let Some(s) = &req.system {
        out.push(json!({"role": "system", "content": s}));
    }
    for (i, m) in req.messages.iter().enumerate() {
        let (text, images) = split_content(m, i)?;
        let mut msg = Map::new();
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        msg.insert("role".to_string(), json!(role));
        msg.insert("content".to_string(), json!(text));
        if !images.is_empty() {
            if m.role == Role::Tool {
                return Err(bad(
                    format!("messages[{i}].content"),
                    "Ollama tool results cannot hold images",
                ));
            }
            msg.insert("images".to_string(), Value::Array(images));
        }
        if !m.tool_calls.is_empty() {
            let mut calls = Vec::new();
            for (j, c) in m.tool_calls.iter().enumerate() {
                let args = args_object(&c.arguments).ok_or_else(|| {
                    bad(
                        format!("messages[{i}].tool_calls[{j}].arguments"),
                        "Ollama needs the arguments as a JSON object",
                    )
                })?;
                calls.push(tool_call_json(&c.name, args));
            }
            msg.insert("tool_calls".to_string(), Value::Array(calls));
        }
        if m.role == Role::Tool {
            if let Some(name) = tool_name(req, i) {
                msg.insert("tool_name".to_string(), json!(name));
            }
        }
        out.push(Value::Object(msg));
    }
    Ok(out)
}

fn encode_options(req: &ChatRequest) -> Map<String, Value> {
    let mut o = Map::new();
    if let Some(t) = req.temperature {
        o.insert("temperature".to_string(), json!(t));
    }
    if let Some(p) = req.top_p {
        o.insert("top_p".to_string(), json!(p));
    }
    if let Some(k) = req.top_k {
        o.insert("top_k".to_string(), json!(k));
    }
    if let Some(n) = req.max_tokens {
        o.insert("num_predict".to_string(), json!(n));
    }
    if !req.stop.is_empty() {
        o.insert("stop".to_string(), json!(req.stop));
    }
    if let Some(s) = req.seed {
        o.insert("seed".to_string(), json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        o.insert("frequency_penalty".to_string(), json!(p));
    }
    if let Some(p) = req.presence_penalty {
        o.insert("presence_penalty".to_string(), json!(p));
    }
    o
}

fn encode_tools(req: &ChatRequest) -> Result<Option<Value>, TranslateError> {
    match &req.tool_choice {
        Some(ToolChoice::Required) | Some(ToolChoice::Tool(_)) => {
            return Err(bad(
                "tool_choice",
                "Ollama cannot be made to call a tool; only `auto` and `none` translate",
            ))
        }
        Some(ToolChoice::None) => return Ok(None),
        Some(ToolChoice::Auto) | None => {}
    }
    if req.tools.is_empty() {
        return Ok(None);
    }
    let tools = req
        .tools
        .iter()
        .map(|t| {
            let mut f = Map::new();
            f.insert("name".to_string(), json!(t.name));
            if let Some(d) = &t.description {
                f.insert("description".to_string(), json!(d));
            }
            f.insert("parameters".to_string(), t.parameters.clone());
            json!({"type": "function", "function": Value::Object(f)})
        })
        .collect();
    Ok(Some(Value::Array(tools)))
}

// ---------------------------------------------------------------------------------------------
// Answers

fn done_reason(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Length => "length",
        FinishReason::Stop | FinishReason::ToolCalls | FinishReason::ContentFilter => "stop",
    }
}

fn map_done_reason(reason: Option<&str>, has_calls: bool) -> FinishReason {
    match reason {
        Some("length") => FinishReason::Length,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn decode_usage(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("prompt_eval_count"),
        output_tokens: n("eval_count"),
    }
}

fn error_of(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(match e {
        Value::String(s) => s.clone(),
        other => other
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| other.to_string(), str::to_string),
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2023-08-04T19:22:45.499127Z` or `…-07:00` → Unix seconds.
fn parse_rfc3339(s: &str) -> Option<u64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(r) = rest.strip_prefix('.') {
        rest = r.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = if rest.eq_ignore_ascii_case("z") {
        0
    } else {
        let sign = match rest.get(..1)? {
            "+" => 1,
            "-" => -1,
            _ => return None,
        };
        let oh: i64 = rest.get(1..3)?.parse().ok()?;
        let om: i64 = rest.get(4..6)?.parse().ok()?;
        sign * (oh * 3600 + om * 60)
    };
    let t = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    u64::try_from(t).ok()
}

/// An answer's (text, tool calls) from an Ollama chat `message` or generate `response`.
fn answer_of(v: &Value, token: &str, first_index: usize) -> (String, Vec<ToolCall>) {
    if let Some(r) = v.get("response").and_then(Value::as_str) {
        return (r.to_string(), Vec::new());
    }
    let Some(m) = v.get("message") else {
        return (String::new(), Vec::new());
    };
    let text = m
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut calls = Vec::new();
    for c in m
        .get("tool_calls")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
    {
        let Some(f) = c.get("function") else {
            continue;
        };
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let arguments = match f.get("arguments") {
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => "{}".to_string(),
        };
        let n = first_index + calls.len();
        let id = match c.get("id").and_then(Value::as_str) {
            Some(id) if !id.is_empty() => id.to_string(),
            _ => format!("call_{token}_{n}"),
        };
        calls.push(ToolCall {
            id,
            name: name.to_string(),
            arguments,
        });
    }
    (text, calls)
}

/// The timing fields of a `done` line.
#[derive(Clone, Copy, Default)]
struct Timing {
    total: u64,
    prompt_eval: u64,
    eval: u64,
}

fn done_fields(line: &mut Map<String, Value>, finish: &FinishReason, usage: Usage, t: Timing) {
    line.insert("done".to_string(), json!(true));
    line.insert("done_reason".to_string(), json!(done_reason(finish)));
    line.insert("total_duration".to_string(), json!(t.total));
    line.insert("load_duration".to_string(), json!(0));
    line.insert("prompt_eval_count".to_string(), json!(usage.input_tokens));
    line.insert("prompt_eval_duration".to_string(), json!(t.prompt_eval));
    line.insert("eval_count".to_string(), json!(usage.output_tokens));
    line.insert("eval_duration".to_string(), json!(t.eval));
}

fn base_line(model: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("model".to_string(), json!(model));
    m.insert("created_at".to_string(), json!(rfc3339(SystemTime::now())));
    m
}

impl Codec for OllamaCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("request body is not valid JSON: {e}")))?;
        let o = Obj::of(&v, "")?;
        if o.bool("logprobs")? == Some(true) {
            return Err(bad("logprobs", "log probabilities cannot be translated"));
        }
        let mut req = ChatRequest {
            model: o.str("model")?.unwrap_or_default().to_string(),
            stream: o.bool("stream")?.unwrap_or(true),
            include_usage: true,
            response_format: decode_format(&o)?,
            ..ChatRequest::default()
        };
        decode_options(&o, &mut req)?;
        match op {
            Op::Chat => {
                decode_messages(&o, &mut req)?;
                decode_tools(&o, &mut req)?;
            }
            Op::Completion => decode_generate(&o, &mut req)?,
        }
        Ok(req)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        let mut body = Map::new();
        body.insert("model".to_string(), json!(req.model));
        if req.legacy_prompt {
            let [m] = req.messages.as_slice() else {
                return Err(bad(
                    "messages",
                    "an /api/generate prompt must be exactly one user message",
                ));
            };
            if m.role != Role::User || !m.tool_calls.is_empty() {
                return Err(bad(
                    "messages[0]",
                    "an /api/generate prompt must be a user message",
                ));
            }
            let (text, images) = split_content(m, 0)?;
            body.insert("prompt".to_string(), json!(text));
            if let Some(s) = &req.system {
                body.insert("system".to_string(), json!(s));
            }
            if !images.is_empty() {
                body.insert("images".to_string(), Value::Array(images));
            }
        } else {
            body.insert("messages".to_string(), Value::Array(encode_messages(req)?));
            if let Some(tools) = encode_tools(req)? {
                body.insert("tools".to_string(), tools);
            }
        }
        match &req.response_format {
            None | Some(ResponseFormat::Text) => {}
            Some(ResponseFormat::JsonObject) => {
                body.insert("format".to_string(), json!("json"));
            }
            Some(ResponseFormat::JsonSchema { schema, .. }) => {
                body.insert("format".to_string(), schema.clone());
            }
        }
        let options = encode_options(req);
        if !options.is_empty() {
            body.insert("options".to_string(), Value::Object(options));
        }
        body.insert("stream".to_string(), json!(req.stream));
        serde_json::to_vec(&Value::Object(body)).map_err(|e| bad("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("Ollama answer is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            return Err(bad("", format!("Ollama error: {msg}")));
        }
        if !v.is_object() {
            return Err(bad("", "Ollama answer is not a JSON object"));
        }
        let token = fresh_token();
        let (text, tool_calls) = answer_of(&v, &token, 0);
        let finish = map_done_reason(
            v.get("done_reason").and_then(Value::as_str),
            !tool_calls.is_empty(),
        );
        Ok(ChatResponse {
            id: format!("ollama-{token}"),
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            created: v
                .get("created_at")
                .and_then(Value::as_str)
                .and_then(parse_rfc3339)
                .unwrap_or_else(now_secs),
            text,
            tool_calls,
            finish,
            usage: decode_usage(&v),
        })
    }

    fn encode_response(&self, op: Op, resp: &ChatResponse) -> Vec<u8> {
        let mut line = base_line(&resp.model);
        match op {
            Op::Chat => {
                let mut msg = Map::new();
                msg.insert("role".to_string(), json!("assistant"));
                msg.insert("content".to_string(), json!(resp.text));
                if !resp.tool_calls.is_empty() {
                    let calls = resp
                        .tool_calls
                        .iter()
                        .map(|c| tool_call_json(&c.name, args_value(&c.arguments)))
                        .collect();
                    msg.insert("tool_calls".to_string(), Value::Array(calls));
                }
                line.insert("message".to_string(), Value::Object(msg));
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(resp.text));
                line.insert("context".to_string(), json!([]));
            }
        }
        done_fields(&mut line, &resp.finish, resp.usage, Timing::default());
        serde_json::to_vec(&Value::Object(line)).unwrap_or_default()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(OllamaStreamDecoder::default())
    }

    fn stream_encoder(&self, op: Op) -> Box<dyn StreamEncoder> {
        Box::new(OllamaStreamEncoder::new(op))
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[derive(Default)]
struct OllamaStreamDecoder {
    splitter: LineSplitter,
    lines: Vec<String>,
    started: bool,
    token: String,
    calls: usize,
    done: bool,
}

impl OllamaStreamDecoder {
    fn line(&mut self, line: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let v: Value = serde_json::from_str(line)
            .map_err(|e| bad("", format!("Ollama stream line is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
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

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let lines = std::mem::take(&mut self.lines);
        let mut result = Ok(());
        for l in &lines {
            if let Err(e) = self.line(l, out) {
                result = Err(e);
                break;
            }
        }
        self.lines = lines;
        self.lines.clear();
        result
    }
}

impl StreamDecoder for OllamaStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.splitter.feed(chunk, &mut self.lines);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.splitter.finish(&mut self.lines);
        self.drain(out)
    }
}

struct OllamaStreamEncoder {
    op: Op,
    model: String,
    held: Held,
    closed: bool,
    begun: Instant,
    first_output: Option<Instant>,
}

impl OllamaStreamEncoder {
    fn new(op: Op) -> OllamaStreamEncoder {
        OllamaStreamEncoder {
            op,
            model: String::new(),
            held: Held::default(),
            closed: false,
            begun: Instant::now(),
            first_output: None,
        }
    }

    fn write(out: &mut Vec<u8>, line: Map<String, Value>) {
        if let Ok(bytes) = serde_json::to_vec(&Value::Object(line)) {
            out.extend_from_slice(&bytes);
            out.push(b'\n');
        }
    }

    fn content_line(&mut self, out: &mut Vec<u8>, text: &str, calls: Vec<Value>) {
        self.first_output.get_or_insert_with(Instant::now);
        let mut line = base_line(&self.model);
        match self.op {
            Op::Chat => {
                let mut msg = Map::new();
                msg.insert("role".to_string(), json!("assistant"));
                msg.insert("content".to_string(), json!(text));
                if !calls.is_empty() {
                    msg.insert("tool_calls".to_string(), Value::Array(calls));
                }
                line.insert("message".to_string(), Value::Object(msg));
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(text));
            }
        }
        line.insert("done".to_string(), json!(false));
        Self::write(out, line);
    }

    /// Complete tool calls, whole, in one line (Ollama cannot stream their arguments).
    fn write_calls(&mut self, calls: Vec<PendingCall>, out: &mut Vec<u8>) {
        // `/api/generate` has no tool calls to carry them.
        if calls.is_empty() || self.op != Op::Chat {
            return;
        }
        let calls: Vec<Value> = calls
            .into_iter()
            .map(|c| tool_call_json(&c.name, args_value(&c.args)))
            .collect();
        self.content_line(out, "", calls);
    }

    /// Tool calls, then (once finish and usage are known, or at the end) the `done` line.
    fn write_ready(&mut self, ready: Ready, out: &mut Vec<u8>) {
        self.write_calls(ready.calls, out);
        if let Some((finish, usage)) = ready.last {
            self.write_done(finish, usage, out);
        }
    }

    fn write_done(&mut self, finish: FinishReason, usage: Usage, out: &mut Vec<u8>) {
        let end = Instant::now();
        let first = self.first_output.unwrap_or(end);
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let timing = Timing {
            total: nanos(end.duration_since(self.begun)),
            prompt_eval: nanos(first.duration_since(self.begun)),
            eval: nanos(end.duration_since(first)),
        };
        let mut line = base_line(&self.model);
        match self.op {
            Op::Chat => {
                line.insert(
                    "message".to_string(),
                    json!({"role": "assistant", "content": ""}),
                );
            }
            Op::Completion => {
                line.insert("response".to_string(), json!(""));
            }
        }
        done_fields(&mut line, &finish, usage, timing);
        if self.op == Op::Completion {
            line.insert("context".to_string(), json!([]));
        }
        Self::write(out, line);
        self.closed = true;
    }
}

impl StreamEncoder for OllamaStreamEncoder {
    fn content_type(&self) -> &'static str {
        "application/x-ndjson"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { model, .. } => self.model = model.clone(),
            StreamEvent::Text(t) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                if !t.is_empty() {
                    self.content_line(out, t, Vec::new());
                }
            }
            StreamEvent::Error(msg) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                let mut line = Map::new();
                line.insert("error".to_string(), json!(msg));
                Self::write(out, line);
                self.closed = true;
            }
            held => {
                if let Some(ready) = self.held.take(held) {
                    self.write_ready(ready, out);
                }
            }
        }
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.closed {
            let ready = self.held.end();
            self.write_ready(ready, out);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const CHAT_REQUEST: &str = include_str!("../../tests/fixtures/ollama/chat_request.json");
    const GENERATE_REQUEST: &str =
        include_str!("../../tests/fixtures/ollama/generate_request.json");
    const CHAT_RESPONSE: &str = include_str!("../../tests/fixtures/ollama/chat_response.json");
    const CHAT_RESPONSE_TOOLS: &str =
        include_str!("../../tests/fixtures/ollama/chat_response_tool_calls.json");
    const GENERATE_RESPONSE: &str =
        include_str!("../../tests/fixtures/ollama/generate_response.json");
    const CHAT_STREAM: &str = include_str!("../../tests/fixtures/ollama/chat_stream.ndjson");
    const CHAT_STREAM_TOOLS: &str =
        include_str!("../../tests/fixtures/ollama/chat_stream_tool_calls.ndjson");
    const GENERATE_STREAM: &str =
        include_str!("../../tests/fixtures/ollama/generate_stream.ndjson");
    const ERROR: &str = include_str!("../../tests/fixtures/ollama/error.json");

    fn text(s: &str) -> Part {
        Part::Text(s.to_string())
    }

    fn stream(bytes: &[u8], cut: Option<usize>) -> Result<Vec<StreamEvent>, TranslateError> {
        let mut d = OllamaCodec.stream_decoder();
        let mut out = Vec::new();
        match cut {
            Some(c) => {
                d.feed(&bytes[..c], &mut out)?;
                d.feed(&bytes[c..], &mut out)?;
            }
            None => d.feed(bytes, &mut out)?,
        }
        d.finish(&mut out)?;
        Ok(out)
    }

    /// Generated ids differ from decoder to decoder; the rest must not.
    fn without_ids(events: Vec<StreamEvent>) -> Vec<StreamEvent> {
        events
            .into_iter()
            .map(|e| match e {
                StreamEvent::Start { model, .. } => StreamEvent::Start {
                    id: String::new(),
                    model,
                },
                StreamEvent::ToolCallStart { index, name, .. } => StreamEvent::ToolCallStart {
                    index,
                    id: String::new(),
                    name,
                },
                other => other,
            })
            .collect()
    }

    fn encode_events(op: Op, events: &[StreamEvent]) -> Vec<u8> {
        let mut e = OllamaCodec.stream_encoder(op);
        assert_eq!(e.content_type(), "application/x-ndjson");
        let mut out = Vec::new();
        for ev in events {
            e.encode(ev, &mut out);
        }
        e.finish(&mut out);
        out
    }

    fn lines(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn decodes_chat_request() {
        let req = OllamaCodec
            .decode_request(Op::Chat, CHAT_REQUEST.as_bytes())
            .unwrap();
        assert_eq!(req.model, "llama3.2");
        assert!(req.stream, "stream defaults to true");
        assert!(req.include_usage);
        assert!(!req.legacy_prompt);
        assert_eq!(req.system.as_deref(), Some("You are terse."));
        assert_eq!(req.temperature, Some(0.5));
        assert_eq!(req.top_p, Some(0.9));
        assert_eq!(req.top_k, Some(20));
        assert_eq!(req.max_tokens, Some(128));
        assert_eq!(req.stop, ["\n\n"]);
        assert_eq!(req.seed, Some(42));
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(req.messages.len(), 4);
        assert_eq!(
            req.messages[0].content,
            [text("What is the weather today in Paris?")]
        );
        let asst = &req.messages[1];
        assert_eq!(asst.role, Role::Assistant);
        assert!(asst.content.is_empty());
        assert_eq!(asst.tool_calls[0].id, "call_0");
        assert_eq!(asst.tool_calls[0].name, "get_current_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&asst.tool_calls[0].arguments).unwrap(),
            json!({"format": "celsius", "location": "Paris, FR"})
        );
        let tool = &req.messages[2];
        assert_eq!(tool.role, Role::Tool);
        assert_eq!(tool.tool_call_id.as_deref(), Some("call_0"));
        assert_eq!(tool.name.as_deref(), Some("get_current_weather"));
        assert_eq!(tool.content, [text("22 degrees celsius")]);
        assert_eq!(
            req.messages[3].content,
            [
                text("what is in this image?"),
                Part::Image(Image::Base64 {
                    media_type: "image/png".into(),
                    data: "iVBORw0KGgoAAAANSUhEUgAAAG0AAABmCAYAAADBPx".into()
                })
            ]
        );
        assert_eq!(req.tools.len(), 1);
        assert_eq!(req.tools[0].name, "get_current_weather");
        assert_eq!(
            req.tools[0].parameters["required"],
            json!(["location", "format"])
        );
    }

    #[test]
    fn decodes_generate_request() {
        let req = OllamaCodec
            .decode_request(Op::Completion, GENERATE_REQUEST.as_bytes())
            .unwrap();
        assert!(req.legacy_prompt);
        assert!(!req.stream);
        assert_eq!(req.system.as_deref(), Some("Answer briefly."));
        assert_eq!(req.messages.len(), 1);
        assert_eq!(req.messages[0].role, Role::User);
        assert_eq!(req.messages[0].content, [text("Why is the sky blue?")]);
        assert_eq!(req.max_tokens, Some(100));
        assert_eq!(req.temperature, Some(0.0));
        let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format else {
            unreachable!("a schema format: {:?}", req.response_format);
        };
        assert_eq!(schema["required"], json!(["age", "available"]));
        // Encoded back it is a generate body again.
        let v: Value = serde_json::from_slice(&OllamaCodec.encode_request(&req).unwrap()).unwrap();
        assert_eq!(v["prompt"], "Why is the sky blue?");
        assert_eq!(v["system"], "Answer briefly.");
        assert_eq!(v["stream"], false);
        assert_eq!(v["format"], *schema);
        assert_eq!(
            v["options"],
            json!({"num_predict": 100, "temperature": 0.0})
        );
        assert!(v.get("messages").is_none());
    }

    #[test]
    fn decodes_responses() {
        let r = OllamaCodec
            .decode_response(CHAT_RESPONSE.as_bytes())
            .unwrap();
        assert_eq!(r.model, "llama3.2");
        assert_eq!(r.text, "Hello! How are you today?");
        assert_eq!(r.finish, FinishReason::Stop);
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 26,
                output_tokens: 298
            }
        );
        assert_eq!(r.created, 1_702_390_423);

        let r = OllamaCodec
            .decode_response(CHAT_RESPONSE_TOOLS.as_bytes())
            .unwrap();
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(r.tool_calls.len(), 1);
        assert_eq!(r.tool_calls[0].name, "get_current_weather");
        assert!(r.tool_calls[0].id.starts_with("call_"));
        assert_eq!(
            serde_json::from_str::<Value>(&r.tool_calls[0].arguments).unwrap(),
            json!({"format": "celsius", "location": "Paris, FR"})
        );

        let r = OllamaCodec
            .decode_response(GENERATE_RESPONSE.as_bytes())
            .unwrap();
        assert_eq!(
            r.text,
            "The sky is blue because it is the color of the sky."
        );
        assert_eq!(r.finish, FinishReason::Length);
        assert_eq!(r.usage.output_tokens, 290);
        assert_eq!(r.created, 1_691_176_965);
    }

    #[test]
    fn rfc3339_parsing() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("2023-08-04T08:52:19.385406455-07:00"),
            Some(1_691_164_339)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00+01:30"),
            Some(1_709_202_600)
        );
        for bad in [
            "",
            "2023",
            "2023-08-04T08:52:19",
            "2023-13-04T08:52:19Z",
            "xxxx-08-04T08:52:19Z",
            "2023-08-04T08:52:19+0",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
        let now = SystemTime::now();
        let secs = now.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(parse_rfc3339(&rfc3339(now)), Some(secs));
    }

    #[test]
    fn decodes_streams_split_anywhere() {
        let cases: [(&str, Vec<StreamEvent>); 3] = [
            (
                CHAT_STREAM,
                vec![
                    StreamEvent::Start {
                        id: String::new(),
                        model: "llama3.2".into(),
                    },
                    StreamEvent::Text("The".into()),
                    StreamEvent::Text(" sky".into()),
                    StreamEvent::Finish(FinishReason::Stop),
                    StreamEvent::Usage(Usage {
                        input_tokens: 26,
                        output_tokens: 282,
                    }),
                ],
            ),
            (
                CHAT_STREAM_TOOLS,
                vec![
                    StreamEvent::Start {
                        id: String::new(),
                        model: "qwen3".into(),
                    },
                    StreamEvent::ToolCallStart {
                        index: 0,
                        id: String::new(),
                        name: "get_temperature".into(),
                    },
                    StreamEvent::ToolCallArgs {
                        index: 0,
                        fragment: r#"{"city":"Toronto"}"#.into(),
                    },
                    StreamEvent::Finish(FinishReason::ToolCalls),
                    StreamEvent::Usage(Usage {
                        input_tokens: 189,
                        output_tokens: 27,
                    }),
                ],
            ),
            (
                GENERATE_STREAM,
                vec![
                    StreamEvent::Start {
                        id: String::new(),
                        model: "llama3.2".into(),
                    },
                    StreamEvent::Text("The".into()),
                    StreamEvent::Text(" sky".into()),
                    StreamEvent::Finish(FinishReason::Length),
                    StreamEvent::Usage(Usage {
                        input_tokens: 26,
                        output_tokens: 259,
                    }),
                ],
            ),
        ];
        for (sample, expected) in cases {
            let bytes = sample.as_bytes();
            let whole = stream(bytes, None).unwrap();
            assert!(
                matches!(&whole[0], StreamEvent::Start { id, .. } if id.starts_with("ollama-"))
            );
            assert_eq!(without_ids(whole), expected);
            for cut in 0..=bytes.len() {
                assert_eq!(
                    without_ids(stream(bytes, Some(cut)).unwrap()),
                    expected,
                    "cut at {cut}"
                );
            }
        }
    }

    #[test]
    fn stream_encoder_chat() {
        let events = [
            StreamEvent::Start {
                id: "x".into(),
                model: "gpt-4o".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_1".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"city\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "\"Paris\"}".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 7,
                output_tokens: 9,
            }),
        ];
        let out = encode_events(Op::Chat, &events);
        assert!(out.ends_with(b"\n"));
        let ls = lines(&out);
        assert_eq!(ls.len(), 4);
        for l in &ls[..3] {
            assert_eq!(l["model"], "gpt-4o");
            assert_eq!(l["done"], false);
            assert!(l["created_at"].as_str().unwrap().ends_with('Z'));
            assert_eq!(l["message"]["role"], "assistant");
        }
        assert_eq!(ls[0]["message"]["content"], "Hel");
        assert_eq!(ls[1]["message"]["content"], "lo");
        assert_eq!(
            ls[2]["message"]["tool_calls"],
            json!([{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])
        );
        let done = &ls[3];
        assert_eq!(done["done"], true);
        assert_eq!(done["done_reason"], "stop");
        assert_eq!(done["message"], json!({"role": "assistant", "content": ""}));
        assert_eq!(done["prompt_eval_count"], 7);
        assert_eq!(done["eval_count"], 9);
        for k in [
            "total_duration",
            "load_duration",
            "prompt_eval_duration",
            "eval_duration",
        ] {
            assert!(done[k].is_u64(), "{k}");
        }

        let back = without_ids(stream(&out, None).unwrap());
        assert_eq!(
            back,
            [
                StreamEvent::Start {
                    id: String::new(),
                    model: "gpt-4o".into()
                },
                StreamEvent::Text("Hel".into()),
                StreamEvent::Text("lo".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: String::new(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: r#"{"city":"Paris"}"#.into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 7,
                    output_tokens: 9
                }),
            ]
        );
    }

    #[test]
    fn stream_encoder_generate_and_endings() {
        let out = encode_events(
            Op::Completion,
            &[
                StreamEvent::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
                StreamEvent::Text("Hi".into()),
                StreamEvent::Finish(FinishReason::Length),
            ],
        );
        let ls = lines(&out);
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0]["response"], "Hi");
        assert_eq!(ls[1]["done"], true);
        assert_eq!(ls[1]["done_reason"], "length");
        assert_eq!(ls[1]["response"], "");
        assert_eq!(ls[1]["context"], json!([]));
        assert_eq!(ls[1]["eval_count"], 0);

        // A stream that just stops still ends with a done line.
        let out = encode_events(
            Op::Chat,
            &[
                StreamEvent::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
                StreamEvent::Text("Hi".into()),
            ],
        );
        assert_eq!(lines(&out).last().unwrap()["done"], true);

        // An error is the last line, and no done line follows.
        let out = encode_events(
            Op::Chat,
            &[
                StreamEvent::Start {
                    id: "x".into(),
                    model: "m".into(),
                },
                StreamEvent::Text("Hi".into()),
                StreamEvent::Error("upstream went away".into()),
                StreamEvent::Text("late".into()),
            ],
        );
        let ls = lines(&out);
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[1], json!({"error": "upstream went away"}));
        let back = stream(&out, None).unwrap();
        assert_eq!(
            back.last(),
            Some(&StreamEvent::Error("upstream went away".into()))
        );
    }

    fn canonical_request() -> ChatRequest {
        ChatRequest {
            model: "llama3.2".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("Describe this, then get the weather."),
                        Part::Image(Image::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgoAAAANSUhEUg".into(),
                        }),
                    ],
                    tool_calls: vec![],
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::Assistant,
                    content: vec![text("A chart.")],
                    tool_calls: vec![ToolCall {
                        id: "toolu_9".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Oslo"}"#.into(),
                    }],
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::Tool,
                    content: vec![text("-3C")],
                    tool_calls: vec![],
                    tool_call_id: Some("toolu_9".into()),
                    name: None,
                },
            ],
            max_tokens: Some(64),
            temperature: Some(0.3),
            top_p: Some(0.5),
            top_k: Some(8),
            stop: vec!["###".into()],
            seed: Some(1234),
            frequency_penalty: Some(0.2),
            presence_penalty: Some(0.4),
            stream: false,
            include_usage: true,
            tools: vec![Tool {
                name: "get_weather".into(),
                description: Some("Weather".into()),
                parameters: json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
            }],
            tool_choice: Some(ToolChoice::Auto),
            response_format: Some(ResponseFormat::JsonObject),
            user: None,
            legacy_prompt: false,
        }
    }

    #[test]
    fn request_round_trip() {
        let req = canonical_request();
        let body = OllamaCodec.encode_request(&req).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["messages"][1]["images"],
            json!(["iVBORw0KGgoAAAANSUhEUg"])
        );
        assert_eq!(
            v["messages"][2]["tool_calls"],
            json!([{"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}])
        );
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "content": "-3C", "tool_name": "get_weather"})
        );
        assert_eq!(v["format"], "json");
        assert_eq!(v["stream"], false);
        assert_eq!(v["options"]["num_predict"], 64);
        assert_eq!(v["tools"][0]["type"], "function");

        let back = OllamaCodec.decode_request(Op::Chat, &body).unwrap();
        assert_eq!(back.model, req.model);
        assert_eq!(back.system, req.system);
        assert_eq!(back.stream, req.stream);
        assert_eq!(back.max_tokens, req.max_tokens);
        assert_eq!(back.temperature, req.temperature);
        assert_eq!(back.top_p, req.top_p);
        assert_eq!(back.top_k, req.top_k);
        assert_eq!(back.stop, req.stop);
        assert_eq!(back.seed, req.seed);
        assert_eq!(back.frequency_penalty, req.frequency_penalty);
        assert_eq!(back.presence_penalty, req.presence_penalty);
        assert_eq!(back.tools, req.tools);
        assert_eq!(back.response_format, req.response_format);
        assert_eq!(back.messages.len(), 3);
        assert_eq!(back.messages[0], req.messages[0]);
        let asst = &back.messages[1];
        assert_eq!(asst.content, req.messages[1].content);
        assert_eq!(asst.tool_calls[0].name, "get_weather");
        assert_eq!(asst.tool_calls[0].arguments, r#"{"city":"Oslo"}"#);
        let tool = &back.messages[2];
        assert_eq!(tool.content, req.messages[2].content);
        assert_eq!(tool.tool_call_id.as_ref(), Some(&asst.tool_calls[0].id));
        assert_eq!(tool.name.as_deref(), Some("get_weather"));

        // JSON schema formats survive too.
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        let req = ChatRequest {
            response_format: Some(ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: schema.clone(),
                strict: true,
            }),
            ..canonical_request()
        };
        let back = OllamaCodec
            .decode_request(Op::Chat, &OllamaCodec.encode_request(&req).unwrap())
            .unwrap();
        assert!(
            matches!(back.response_format, Some(ResponseFormat::JsonSchema { schema: s, .. }) if s == schema)
        );
    }

    #[test]
    fn response_round_trip() {
        for (finish, reason) in [
            (FinishReason::Stop, "stop"),
            (FinishReason::Length, "length"),
            (FinishReason::ToolCalls, "stop"),
        ] {
            let calls = if finish == FinishReason::ToolCalls {
                vec![ToolCall {
                    id: "c".into(),
                    name: "f".into(),
                    arguments: r#"{"x":1}"#.into(),
                }]
            } else {
                vec![]
            };
            let resp = ChatResponse {
                id: "id".into(),
                model: "gpt-4o".into(),
                created: 5,
                text: "hello".into(),
                tool_calls: calls.clone(),
                finish: finish.clone(),
                usage: Usage {
                    input_tokens: 3,
                    output_tokens: 4,
                },
            };
            let body = OllamaCodec.encode_response(Op::Chat, &resp);
            let v: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["done"], true);
            assert_eq!(v["done_reason"], reason);
            assert_eq!(v["message"]["role"], "assistant");
            assert!(v["created_at"].as_str().unwrap().ends_with('Z'));
            let back = OllamaCodec.decode_response(&body).unwrap();
            assert_eq!(back.text, "hello");
            assert_eq!(back.model, "gpt-4o");
            assert_eq!(back.finish, finish);
            assert_eq!(back.usage, resp.usage);
            assert_eq!(back.tool_calls.len(), calls.len());
            if let (Some(a), Some(b)) = (back.tool_calls.first(), calls.first()) {
                assert_eq!((&a.name, &a.arguments), (&b.name, &b.arguments));
            }
        }
        let resp = ChatResponse {
            text: "done".into(),
            finish: FinishReason::Length,
            ..ChatResponse::default()
        };
        let v: Value =
            serde_json::from_slice(&OllamaCodec.encode_response(Op::Completion, &resp)).unwrap();
        assert_eq!(v["response"], "done");
        assert_eq!(v["context"], json!([]));
        assert!(v.get("message").is_none());
        let back = OllamaCodec
            .decode_response(&OllamaCodec.encode_response(Op::Completion, &resp))
            .unwrap();
        assert_eq!(back.finish, FinishReason::Length);
    }

    #[test]
    fn untranslatable_fields_are_named() {
        let gen = |body: &str| {
            OllamaCodec
                .decode_request(Op::Completion, body.as_bytes())
                .unwrap_err()
                .field
        };
        assert_eq!(gen(r#"{"model":"m","prompt":"a","suffix":"b"}"#), "suffix");
        assert_eq!(gen(r#"{"model":"m","prompt":"a","raw":true}"#), "raw");
        assert_eq!(
            gen(r#"{"model":"m","prompt":"a","template":"{{ .Prompt }}"}"#),
            "template"
        );
        assert_eq!(
            gen(r#"{"model":"m","prompt":"a","context":[1,2]}"#),
            "context"
        );
        assert_eq!(
            gen(r#"{"model":"m","prompt":"a","images":[5]}"#),
            "images[0]"
        );
        // Empty values of those fields are fine.
        assert!(OllamaCodec
            .decode_request(
                Op::Completion,
                br#"{"model":"m","prompt":"a","suffix":"","raw":false,"context":[],"template":""}"#
            )
            .is_ok());
        let chat = |body: &str| {
            OllamaCodec
                .decode_request(Op::Chat, body.as_bytes())
                .unwrap_err()
                .field
        };
        assert_eq!(
            chat(r#"{"model":"m","messages":[{"role":"bot","content":"a"}]}"#),
            "messages[0].role"
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[],"logprobs":true}"#),
            "logprobs"
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[],"format":"yaml"}"#),
            "format"
        );
        assert_eq!(
            chat(r#"{"model":"m","messages":[],"options":{"temperature":"hot"}}"#),
            "options.temperature"
        );
        assert_eq!(
            chat(
                r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"function":{"arguments":{}}}]}]}"#
            ),
            "messages[0].tool_calls[0].function.name"
        );

        let url_image = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![text("a"), Part::Image(Image::Url("https://x/y.png".into()))],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            }],
            ..ChatRequest::default()
        };
        assert_eq!(
            OllamaCodec.encode_request(&url_image).unwrap_err().field,
            "messages[0].content[1]"
        );
        // A data URL is base64 all the same.
        let data_image = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![Part::Image(Image::Url("data:image/png;base64,AAAA".into()))],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            }],
            ..ChatRequest::default()
        };
        let v: Value =
            serde_json::from_slice(&OllamaCodec.encode_request(&data_image).unwrap()).unwrap();
        assert_eq!(v["messages"][0]["images"], json!(["AAAA"]));

        for choice in [ToolChoice::Required, ToolChoice::Tool("get_weather".into())] {
            let req = ChatRequest {
                tool_choice: Some(choice),
                ..canonical_request()
            };
            assert_eq!(
                OllamaCodec.encode_request(&req).unwrap_err().field,
                "tool_choice"
            );
        }
        let req = ChatRequest {
            tool_choice: Some(ToolChoice::None),
            ..canonical_request()
        };
        let v: Value = serde_json::from_slice(&OllamaCodec.encode_request(&req).unwrap()).unwrap();
        assert!(v.get("tools").is_none());

        let req = ChatRequest {
            legacy_prompt: true,
            ..canonical_request()
        };
        assert_eq!(
            OllamaCodec.encode_request(&req).unwrap_err().field,
            "messages"
        );
        let mut req = canonical_request();
        req.messages[1].tool_calls[0].arguments = "not json".into();
        assert_eq!(
            OllamaCodec.encode_request(&req).unwrap_err().field,
            "messages[1].tool_calls[0].arguments"
        );
    }

    #[test]
    fn lenient_shapes() {
        let req = OllamaCodec
            .decode_request(
                Op::Chat,
                br#"{"model":"m","stream":true,"messages":[
                    {"role":"system","content":"a"},{"role":"system","content":"b"},
                    {"role":"assistant","content":null,"tool_calls":[{"id":"t1","function":{"name":"f","arguments":"{\"k\":2}"}}]},
                    {"role":"tool","content":"ok","tool_call_id":"t1"},
                    {"role":"user","images":["data:image/gif;base64,R0lGODlh"]}],
                    "options":{"num_predict":-1,"stop":"END","num_ctx":8192,"repeat_penalty":1.1},
                    "keep_alive":0,"think":true}"#,
            )
            .unwrap();
        assert_eq!(req.system.as_deref(), Some("a\nb"));
        assert_eq!(req.max_tokens, None);
        assert_eq!(req.stop, ["END"]);
        assert_eq!(req.messages[0].tool_calls[0].id, "t1");
        assert_eq!(req.messages[0].tool_calls[0].arguments, r#"{"k":2}"#);
        assert_eq!(req.messages[1].tool_call_id.as_deref(), Some("t1"));
        assert_eq!(
            req.messages[2].content,
            [Part::Image(Image::Base64 {
                media_type: "image/gif".into(),
                data: "R0lGODlh".into()
            })]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(
            OllamaCodec.error_message(ERROR.as_bytes()).as_deref(),
            Some("model 'llama9' not found, try pulling it first")
        );
        assert_eq!(
            OllamaCodec
                .error_message(br#"{"error":{"message":"nested"}}"#)
                .as_deref(),
            Some("nested")
        );
        assert_eq!(OllamaCodec.error_message(CHAT_RESPONSE.as_bytes()), None);
        assert_eq!(OllamaCodec.error_message(b"not json"), None);
        assert!(OllamaCodec.decode_response(ERROR.as_bytes()).is_err());
        let events = stream(b"{\"model\":\"m\",\"message\":{\"content\":\"a\"},\"done\":false}\n{\"error\":\"out of memory\"}\n", None).unwrap();
        assert_eq!(
            events.last(),
            Some(&StreamEvent::Error("out of memory".into()))
        );
    }

    #[test]
    fn never_panics_on_truncated_or_garbage_input() {
        let samples = [
            CHAT_REQUEST,
            GENERATE_REQUEST,
            CHAT_RESPONSE,
            CHAT_RESPONSE_TOOLS,
            GENERATE_RESPONSE,
            CHAT_STREAM,
            CHAT_STREAM_TOOLS,
            GENERATE_STREAM,
            ERROR,
        ];
        for s in samples {
            let b = s.as_bytes();
            for end in 0..=b.len() {
                let p = &b[..end];
                let _ = OllamaCodec.decode_request(Op::Chat, p);
                let _ = OllamaCodec.decode_request(Op::Completion, p);
                let _ = OllamaCodec.decode_response(p);
                let _ = OllamaCodec.error_message(p);
                let _ = stream(p, None);
            }
        }
        let garbage: &[&[u8]] = &[
            b"",
            b"\xff\xfe",
            b"null",
            b"[1]",
            b"{\"messages\":{}}",
            b"{\"messages\":[null]}",
            b"{\"messages\":[{\"role\":5}]}",
            b"{\"messages\":[{\"role\":\"user\",\"images\":5}]}",
            b"{\"tools\":[{\"function\":5}]}",
            b"{\"options\":{\"top_k\":1e300,\"num_predict\":-1e300,\"seed\":1.5}}",
            b"{\"created_at\":\"9999-99-99T99:99:99Z\",\"message\":{\"tool_calls\":[5,{\"function\":{}}]}}",
            b"{\"created_at\":\"\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9-01-01T00:00:00Z\"}",
            b"{\"done\":true}\n{\"done\":true}\n5\n",
            b"\n\n{}\n",
        ];
        for g in garbage {
            let _ = OllamaCodec.decode_request(Op::Chat, g);
            let _ = OllamaCodec.decode_request(Op::Completion, g);
            let _ = OllamaCodec.decode_response(g);
            let _ = OllamaCodec.error_message(g);
            let _ = stream(g, None);
        }
    }
}
