//! Anthropic Messages request bodies → the canonical form; refuses what it cannot carry.

use serde_json::{json, Value};

use crate::canonical::{
    ChatRequest, Image, Message, Part, ResponseFormat, Role, Think, Tool, ToolCall, ToolChoice,
    TranslateError,
};
use crate::ids::call_name;
use crate::json::{
    as_obj, decode_tool, each_object, field, opt_array, opt_bool, opt_f64, opt_str, opt_u32, path,
    req_str, Obj,
};

fn reject_fields(o: &Obj) -> Result<(), TranslateError> {
    if let Some(m) = field(o, "mcp_servers") {
        if m.as_array().is_none_or(|a| !a.is_empty()) {
            return Err(TranslateError::new(
                "mcp_servers",
                "MCP servers cannot be translated",
            ));
        }
    }
    for key in ["container", "context_management"] {
        if field(o, key).is_some() {
            return Err(TranslateError::new(key, "this field cannot be translated"));
        }
    }
    Ok(())
}

/// `thinking` → canonical `think`: only Ollama's native API can carry it (as `think`); the
/// other targets refuse it when it asks for thinking.
fn decode_thinking(o: &Obj) -> Result<Option<Think>, TranslateError> {
    let Some(t) = field(o, "thinking") else {
        return Ok(None);
    };
    let t = as_obj(t, "thinking")?;
    match req_str(t, "thinking", "type")?.as_str() {
        "enabled" | "adaptive" => Ok(Some(Think::On)),
        "disabled" => Ok(Some(Think::Off)),
        other => Err(TranslateError::new(
            "thinking.type",
            format!("unknown thinking type `{other}`"),
        )),
    }
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

/// A message's `content`: a string (one text block) or an array of blocks.
fn content_blocks(m: &Obj, cp: &str) -> Result<Vec<Value>, TranslateError> {
    match field(m, "content") {
        Some(Value::String(s)) if s.is_empty() => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![json!({"type": "text", "text": s})]),
        Some(Value::Array(a)) => Ok(a.clone()),
        Some(_) => Err(TranslateError::new(
            cp,
            "must be a string or an array of blocks",
        )),
        None => Err(TranslateError::new(cp, "is required")),
    }
}

fn untranslatable_block(bp: String, kind: &str) -> TranslateError {
    TranslateError::new(bp, format!("`{kind}` blocks cannot be translated"))
}

/// A text block's text, `None` when it is empty.
fn block_text(bo: &Obj, bp: &str) -> Result<Option<Part>, TranslateError> {
    let t = req_str(bo, bp, "text")?;
    Ok((!t.is_empty()).then_some(Part::Text(t)))
}

/// A `tool_result` block → a tool message, named from the call it answers when known.
fn tool_result(bo: &Obj, bp: &str, names: &[(String, String)]) -> Result<Message, TranslateError> {
    let id = req_str(bo, bp, "tool_use_id")?;
    let name = call_name(names, &id);
    Ok(Message {
        role: Role::Tool,
        content: decode_tool_result_content(field(bo, "content"), &path(bp, "content"))?,
        tool_calls: Vec::new(),
        tool_call_id: Some(id),
        name,
        is_error: opt_bool(bo, bp, "is_error")?.unwrap_or(false),
    })
}

/// A user turn: its parts, split around its tool results (each a message of its own).
fn decode_user(
    blocks: &[Value],
    cp: &str,
    names: &[(String, String)],
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{cp}[{j}]");
        let bo = as_obj(b, &bp)?;
        match req_str(bo, &bp, "type")?.as_str() {
            "text" => parts.extend(block_text(bo, &bp)?),
            "image" => parts.push(Part::Image(decode_image(bo, &bp)?)),
            "tool_result" => {
                if !parts.is_empty() {
                    out.push(Message::new(Role::User, std::mem::take(&mut parts)));
                }
                out.push(tool_result(bo, &bp, names)?);
            }
            other => return Err(untranslatable_block(bp, other)),
        }
    }
    if !parts.is_empty() {
        out.push(Message::new(Role::User, parts));
    }
    Ok(())
}

/// An assistant turn; the names of its tool calls are recorded for the results that follow.
fn decode_assistant(
    blocks: &[Value],
    cp: &str,
    names: &mut Vec<(String, String)>,
) -> Result<Message, TranslateError> {
    let mut m = Message::new(Role::Assistant, Vec::new());
    for (j, b) in blocks.iter().enumerate() {
        let bp = format!("{cp}[{j}]");
        let bo = as_obj(b, &bp)?;
        match req_str(bo, &bp, "type")?.as_str() {
            "text" => m.content.extend(block_text(bo, &bp)?),
            "tool_use" => {
                let id = req_str(bo, &bp, "id")?;
                let name = req_str(bo, &bp, "name")?;
                let arguments = match field(bo, "input") {
                    None => "{}".to_string(),
                    Some(v) => v.to_string(),
                };
                names.push((id.clone(), name.clone()));
                m.tool_calls.push(ToolCall {
                    id,
                    name,
                    arguments,
                });
            }
            "thinking" | "redacted_thinking" => {}
            other => return Err(untranslatable_block(bp, other)),
        }
    }
    Ok(m)
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
    let blocks = content_blocks(m, &cp)?;
    match role.as_str() {
        "user" => decode_user(&blocks, &cp, names, out),
        "assistant" => {
            out.push(decode_assistant(&blocks, &cp, names)?);
            Ok(())
        }
        other => Err(TranslateError::new(
            path(p, "role"),
            format!("unknown role `{other}` (Anthropic has user and assistant)"),
        )),
    }
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
    each_object(o, "tools", |t, tp| {
        if let Some(ty) = opt_str(t, tp, "type")? {
            if ty != "custom" {
                return Err(TranslateError::new(
                    path(tp, "type"),
                    format!("server tool `{ty}` cannot be translated"),
                ));
            }
        }
        decode_tool(t, tp, "input_schema")
    })
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

/// A structured-output `format` (at `at`): `{"type": "json_schema", "schema": …}`.
fn decode_format(f: &Value, at: &str) -> Result<ResponseFormat, TranslateError> {
    let f = as_obj(f, at)?;
    let ty = req_str(f, at, "type")?;
    if ty != "json_schema" {
        return Err(TranslateError::new(
            path(at, "type"),
            format!("output format `{ty}` cannot be translated (only json_schema)"),
        ));
    }
    let sp = path(at, "schema");
    let schema = field(f, "schema").ok_or_else(|| TranslateError::new(&sp, "is required"))?;
    as_obj(schema, &sp)?;
    Ok(ResponseFormat::JsonSchema {
        // OpenAI requires a name; Anthropic's format has none.
        name: "response".to_string(),
        schema: schema.clone(),
        // Carried as a plain schema: OpenAI's strict mode demands more of a schema (every
        // property required) than Anthropic does, and would refuse many valid ones.
        strict: false,
    })
}

/// `output_config.format` (or the older top-level `output_format`); other `output_config`
/// keys (`effort`) are refused.
fn decode_output_config(o: &Obj) -> Result<Option<ResponseFormat>, TranslateError> {
    let mut format = None;
    if let Some(oc) = field(o, "output_config") {
        for (key, value) in as_obj(oc, "output_config")? {
            let at = path("output_config", key);
            match key.as_str() {
                "format" if !value.is_null() => format = Some(decode_format(value, &at)?),
                "format" => {}
                _ => return Err(TranslateError::new(at, "this field cannot be translated")),
            }
        }
    }
    match field(o, "output_format") {
        Some(f) if format.is_none() => Ok(Some(decode_format(f, "output_format")?)),
        Some(_) => Err(TranslateError::new(
            "output_format",
            "give either output_format or output_config.format, not both",
        )),
        None => Ok(format),
    }
}

pub(super) fn decode_request(o: &Obj) -> Result<ChatRequest, TranslateError> {
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
    req.ollama.think = decode_thinking(o)?;
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
    req.response_format = decode_output_config(o)?;
    Ok(req)
}
