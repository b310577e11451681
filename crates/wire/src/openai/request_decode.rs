//! OpenAI chat and legacy completion request bodies → the canonical form; refuses what it cannot carry.

use serde_json::{json, Value};

use crate::canonical::{
    image_from_url, ChatRequest, Message, Part, ResponseFormat, Role, Think, Tool, ToolCall,
    ToolChoice, TranslateError,
};
use crate::ids::{call_name, new_id};
use crate::json::{
    as_obj, decode_tool, each_object, field, opt_array, opt_bool, opt_f64, opt_i64, opt_str,
    opt_u32, path, req_str, Obj,
};

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
        "verbosity",
    ] {
        if field(o, key).is_some() {
            return Err(unsupported(key, "this field cannot be translated"));
        }
    }
    Ok(())
}

/// Content (string, array of typed parts or null) → parts. Parts whose type is one of
/// `text_types` are text (empty ones are dropped), `refusal` parts are their text, and `other`
/// reads any other part (its object, path and type) or refuses it.
pub(super) fn decode_parts(
    v: Option<&Value>,
    at: &str,
    text_types: &[&str],
    other: impl Fn(&Obj, &str, &str) -> Result<Part, TranslateError>,
) -> Result<Vec<Part>, TranslateError> {
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
            t if text_types.contains(&t) => {
                let text = req_str(po, &pp, "text")?;
                if !text.is_empty() {
                    out.push(Part::Text(text));
                }
            }
            "refusal" => out.push(Part::Text(req_str(po, &pp, "refusal")?)),
            t => out.push(other(po, &pp, t)?),
        }
    }
    Ok(out)
}

/// Chat content → parts. `images`: image parts are allowed here.
pub(super) fn decode_content(
    v: Option<&Value>,
    at: &str,
    images: bool,
) -> Result<Vec<Part>, TranslateError> {
    decode_parts(v, at, &["text"], |po, pp, ty| match ty {
        "image_url" if images => {
            let url = match field(po, "image_url") {
                Some(Value::String(u)) => u.clone(),
                Some(Value::Object(iu)) => req_str(iu, &path(pp, "image_url"), "url")?,
                _ => return Err(TranslateError::new(path(pp, "image_url"), "is required")),
            };
            Ok(Part::Image(image_from_url(&url)))
        }
        other => Err(TranslateError::new(
            pp,
            format!("content part type `{other}` cannot be translated here"),
        )),
    })
}

pub(super) fn text_only(parts: Vec<Part>, sep: &str) -> String {
    parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            Part::Image(_) => None,
        })
        .collect::<Vec<_>>()
        .join(sep)
}

pub(super) fn decode_tool_calls(m: &Obj, at: &str) -> Result<Vec<ToolCall>, TranslateError> {
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
    decode_ollama_extras(o, req)
}

/// `reasoning_effort`, and what an OpenAI SDK sends in `extra_body` for an Ollama node (`think`,
/// `keep_alive`, `options`): carried to Ollama's native API, refused by the other targets
/// (`keep_alive` is left out there).
fn decode_ollama_extras(o: &Obj, req: &mut ChatRequest) -> Result<(), TranslateError> {
    let effort = match opt_str(o, "", "reasoning_effort")?.as_deref() {
        None => None,
        Some("none") => Some(Think::Off),
        // Ollama's levels are low, medium and high: minimal is nearest to low.
        Some("minimal" | "low") => Some(Think::Level("low".into())),
        Some(l @ ("medium" | "high")) => Some(Think::Level(l.into())),
        Some(other) => {
            return Err(TranslateError::new(
                "reasoning_effort",
                format!("unknown reasoning effort `{other}` (none, minimal, low, medium or high)"),
            ))
        }
    };
    let think = match field(o, "think") {
        None => None,
        Some(Value::Bool(true)) => Some(Think::On),
        Some(Value::Bool(false)) => Some(Think::Off),
        Some(Value::String(l)) if ["low", "medium", "high"].contains(&l.as_str()) => {
            Some(Think::Level(l.clone()))
        }
        Some(_) => {
            return Err(TranslateError::new(
                "think",
                "must be true, false, \"low\", \"medium\" or \"high\"",
            ))
        }
    };
    if effort.is_some() && think.is_some() {
        return Err(TranslateError::new(
            "think",
            "give reasoning_effort or think, not both",
        ));
    }
    req.ollama.think = think.or(effort);
    req.ollama.keep_alive = match field(o, "keep_alive") {
        None => None,
        Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.clone()),
        Some(_) => {
            return Err(TranslateError::new(
                "keep_alive",
                "must be a duration string (\"5m\") or a number of seconds",
            ))
        }
    };
    if let Some(opts) = field(o, "options") {
        req.ollama.options = as_obj(opts, "options")?.clone();
    }
    Ok(())
}

fn decode_tools(o: &Obj) -> Result<Vec<Tool>, TranslateError> {
    each_object(o, "tools", |t, tp| {
        if let Some(ty) = opt_str(t, tp, "type")? {
            if ty != "function" {
                return Err(TranslateError::new(
                    path(tp, "type"),
                    format!("tool type `{ty}` cannot be translated"),
                ));
            }
        }
        let fp = path(tp, "function");
        let f = as_obj(
            field(t, "function").ok_or_else(|| TranslateError::new(&fp, "is required"))?,
            &fp,
        )?;
        decode_tool(f, &fp, "parameters")
    })
}

/// `tool_choice`: `auto`, `none`, `required`, or a function object whose name `name_of`
/// reads (nested under `function` in chat, flat in the Responses API).
pub(super) fn decode_tool_choice_by(
    o: &Obj,
    name_of: fn(&Obj) -> Result<String, TranslateError>,
) -> Result<Option<ToolChoice>, TranslateError> {
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
            Ok(Some(ToolChoice::Tool(name_of(tc)?)))
        }
        Some(_) => Err(TranslateError::new(
            "tool_choice",
            "must be a string or an object",
        )),
    }
}

fn decode_tool_choice(o: &Obj) -> Result<Option<ToolChoice>, TranslateError> {
    decode_tool_choice_by(o, |tc| {
        let f = as_obj(
            field(tc, "function")
                .ok_or_else(|| TranslateError::new("tool_choice.function", "is required"))?,
            "tool_choice.function",
        )?;
        req_str(f, "tool_choice.function", "name")
    })
}

/// A `json_schema` response format's `name`, `schema` and `strict` (read from `js`, at `at`).
pub(super) fn json_schema_format(js: &Obj, at: &str) -> Result<ResponseFormat, TranslateError> {
    Ok(ResponseFormat::JsonSchema {
        name: opt_str(js, at, "name")?.unwrap_or_else(|| "response".to_string()),
        schema: field(js, "schema").cloned().unwrap_or_else(|| json!({})),
        strict: opt_bool(js, at, "strict")?.unwrap_or(false),
    })
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
            json_schema_format(js, at).map(Some)
        }
        other => Err(TranslateError::new(
            "response_format.type",
            format!("response format `{other}` cannot be translated"),
        )),
    }
}

fn decode_assistant(m: &Obj, p: &str, cp: &str) -> Result<Message, TranslateError> {
    for key in ["audio", "function_call"] {
        if field(m, key).is_some() {
            return Err(TranslateError::new(
                path(p, key),
                "this field cannot be translated",
            ));
        }
    }
    let mut msg = Message::new(
        Role::Assistant,
        decode_content(field(m, "content"), cp, false)?,
    );
    if let Some(r) = opt_str(m, p, "refusal")? {
        if !r.is_empty() && msg.content.is_empty() {
            msg.content.push(Part::Text(r));
        }
    }
    msg.tool_calls = decode_tool_calls(m, p)?;
    Ok(msg)
}

/// The messages; system and developer messages before the first other message are joined
/// into the system prompt, later ones stay in their place ([`Role::System`]).
fn decode_messages(msgs: &[Value], req: &mut ChatRequest) -> Result<(), TranslateError> {
    let mut system: Vec<String> = Vec::new();
    // Tool call id → tool name, so tool results can carry the name (Gemini needs it).
    let mut names: Vec<(String, String)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let p = format!("messages[{i}]");
        let m = as_obj(m, &p)?;
        let role = req_str(m, &p, "role")?;
        let cp = path(&p, "content");
        let content = |images| decode_content(field(m, "content"), &cp, images);
        let message = match role.as_str() {
            "system" | "developer" if req.messages.is_empty() => {
                system.push(text_only(content(false)?, "\n"));
                continue;
            }
            "system" | "developer" => {
                let text = text_only(content(false)?, "\n");
                Message::new(Role::System, vec![Part::Text(text)])
            }
            "user" => Message::new(Role::User, content(true)?),
            "assistant" => {
                let msg = decode_assistant(m, &p, &cp)?;
                names.extend(
                    msg.tool_calls
                        .iter()
                        .map(|c| (c.id.clone(), c.name.clone())),
                );
                msg
            }
            "tool" => {
                let id = req_str(m, &p, "tool_call_id")?;
                let mut msg = Message::new(Role::Tool, content(false)?);
                msg.name = call_name(&names, &id);
                msg.tool_call_id = Some(id);
                msg
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
    Ok(())
}

pub(super) fn decode_chat(o: &Obj) -> Result<ChatRequest, TranslateError> {
    reject_chat_fields(o)?;
    let mut req = ChatRequest {
        model: req_str(o, "", "model")?,
        ..ChatRequest::default()
    };
    let msgs = opt_array(o, "", "messages")?
        .ok_or_else(|| TranslateError::new("messages", "is required"))?;
    decode_messages(msgs, &mut req)?;
    decode_sampling(o, &mut req)?;
    req.tools = decode_tools(o)?;
    req.tool_choice = decode_tool_choice(o)?;
    req.response_format = decode_response_format(o)?;
    Ok(req)
}

pub(super) fn decode_completion(o: &Obj) -> Result<ChatRequest, TranslateError> {
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
            is_error: false,
        }],
        legacy_prompt: true,
        ..ChatRequest::default()
    };
    decode_sampling(o, &mut req)?;
    Ok(req)
}
