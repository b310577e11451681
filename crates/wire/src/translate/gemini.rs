//! Google Gemini v1beta `generateContent` / `streamGenerateContent?alt=sse` ⇄ canonical, and the `GET /v1beta/models` list.
//!
//! Decisions worth knowing:
//! - The model is in the URL path, not the body: `decode_request` leaves `model` empty and `stream`
//!   false (the gateway sets both from the URL); `encode_request` writes neither. Gemini always
//!   reports usage, so a decoded request asks for it (`include_usage`).
//! - Field names are read in camelCase or snake_case. A field that cannot be translated is rejected,
//!   naming it, except hints that do not change what the answer says and that SDKs send routinely:
//!   `safetySettings`, `labels`, `generationConfig.thinkingConfig`, `generationConfig.mediaResolution`,
//!   `generationConfig.responseModalities: ["TEXT"]`, `toolConfig.retrievalConfig`, thought parts and
//!   `thoughtSignature`s. Canonical `user` has no Gemini field and is dropped.
//! - Gemini tool calls carry no ids (except the optional `functionCall.id`, honoured when present).
//!   Decoded requests number calls `call_0`, `call_1`, … in order, stable from turn to turn so upstream
//!   prompt caches keep hitting; a `functionResponse` answers the earliest unanswered call of its name.
//!   Decoded answers use `call_<responseId>_<n>`. Encoded bodies carry no ids, and each
//!   `functionResponse` is named from `Message::name` or from the assistant call it answers.
//! - `functionResponse.response` must be an object: tool text that is a JSON object is sent as is,
//!   anything else as `{"result": …}`; decoding unwraps a lone `result` again.
//! - Schemas: `parameters` / `responseSchema` take an OpenAPI subset (upper-case `type`, `nullable`).
//!   A JSON Schema that fits it (after dropping `$schema`, boolean `additionalProperties`, unsupported
//!   `format`s and other pure annotations) is sent there; any other goes whole as `parametersJsonSchema` /
//!   `responseJsonSchema`. Decoding turns the subset back into plain JSON Schema.
//! - A streamed tool call is written as one `functionCall` part once the next different event (or the
//!   end) shows its arguments are complete; text is never held. `finishReason` is held until usage
//!   arrives (or the stream ends) so that the last chunk carries both, as Gemini's does.

use serde_json::{json, Map, Value};

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, FinishReason, Image, Message, Op, Part, ResponseFormat, Role,
    StreamDecoder, StreamEncoder, StreamEvent, Tool, ToolCall, ToolChoice, TranslateError, Usage,
};
use crate::translate::framing::{write_sse, SseEvent, SseParser};

/// The Gemini codec.
pub struct GeminiCodec;

/// `GET /v1beta/models`: the `(id, owner)` pairs the gateway serves, as Gemini's `ListModelsResponse`.
pub fn models_list(models: &[(String, String)]) -> Value {
    let list: Vec<Value> = models
        .iter()
        .map(|(id, owner)| {
            json!({
                "name": format!("models/{id}"),
                "baseModelId": id,
                "version": "llmux",
                "displayName": id,
                "description": format!("{id}, served by {owner}"),
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"],
            })
        })
        .collect();
    json!({ "models": list })
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

/// A short unique token for ids the upstream did not give (shared with the other codecs).
fn fresh_token() -> String {
    super::openai::new_id("")
}

use super::hold::{Held, PendingCall, Ready};
use super::openai::now_secs;

/// `max_output_tokens` → `maxOutputTokens`; camelCase keys are returned as they are.
fn camel(key: &str) -> String {
    if !key.contains('_') {
        return key.to_string();
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for (i, c) in key.chars().enumerate() {
        if c == '_' && i > 0 {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A JSON object of the Gemini request, keys read in camelCase whatever case was sent; nulls count as absent.
struct Fields<'a> {
    path: String,
    items: Vec<(String, &'a Value)>,
}

impl<'a> Fields<'a> {
    fn of(v: &'a Value, path: &str) -> Result<Fields<'a>, TranslateError> {
        let Value::Object(map) = v else {
            return Err(bad(path, "expected a JSON object"));
        };
        Ok(Fields {
            path: path.to_string(),
            items: map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (camel(k), v))
                .collect(),
        })
    }

    fn at(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.items.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// Rejects any field outside `known` and `ignored`.
    fn only(&self, known: &[&str], ignored: &[&str]) -> Result<(), TranslateError> {
        for (k, _) in &self.items {
            if !known.contains(&k.as_str()) && !ignored.contains(&k.as_str()) {
                return Err(bad(
                    self.at(k),
                    "this Gemini field cannot be translated to another dialect",
                ));
            }
        }
        Ok(())
    }

    fn str(&self, key: &str) -> Result<Option<&'a str>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(bad(self.at(key), "expected a string")),
        }
    }

    fn need_str(&self, key: &str) -> Result<&'a str, TranslateError> {
        self.str(key)?
            .ok_or_else(|| bad(self.at(key), "missing required field"))
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

    /// A non-negative integer; SDKs may send `40.0` for an integer field.
    fn u32(&self, key: &str) -> Result<Option<u32>, TranslateError> {
        match self.f64(key)? {
            None => Ok(None),
            Some(f) if f >= 0.0 && f <= f64::from(u32::MAX) && f.fract() == 0.0 => {
                Ok(Some(f as u32))
            }
            Some(_) => Err(bad(self.at(key), "expected a non-negative integer")),
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

    fn strings(&self, key: &str) -> Result<Vec<String>, TranslateError> {
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(bad(format!("{}[{i}]", self.at(key)), "expected a string")),
            })
            .collect()
    }

    fn obj(&self, key: &str) -> Result<Option<Fields<'a>>, TranslateError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => Fields::of(v, &self.at(key)).map(Some),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Requests: Gemini → canonical

/// One part of a Gemini `Content`, as far as the canonical form can hold it.
enum GPart {
    Text(String),
    Image(Image),
    Call {
        id: Option<String>,
        name: String,
        args: String,
    },
    Response {
        id: Option<String>,
        name: String,
        text: String,
    },
}

/// `None` for parts that carry nothing translatable (thoughts, empty parts).
fn decode_part(v: &Value, path: &str) -> Result<Option<GPart>, TranslateError> {
    let f = Fields::of(v, path)?;
    f.only(
        &[
            "text",
            "inlineData",
            "fileData",
            "functionCall",
            "functionResponse",
        ],
        &[
            "thought",
            "thoughtSignature",
            "videoMetadata",
            "partMetadata",
            "mediaResolution",
        ],
    )?;
    if f.get("thought").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    if let Some(t) = f.str("text")? {
        return Ok(Some(GPart::Text(t.to_string())));
    }
    if let Some(d) = f.obj("inlineData")? {
        d.only(&["mimeType", "data"], &["displayName"])?;
        let mime = d.need_str("mimeType")?;
        if !mime.starts_with("image/") {
            return Err(bad(
                d.at("mimeType"),
                format!("inline `{mime}` data cannot be translated; only images can"),
            ));
        }
        let data = d.need_str("data")?;
        return Ok(Some(GPart::Image(Image::Base64 {
            media_type: mime.to_string(),
            data: data.to_string(),
        })));
    }
    if let Some(d) = f.obj("fileData")? {
        d.only(&["mimeType", "fileUri"], &["displayName"])?;
        if let Some(mime) = d.str("mimeType")? {
            if !mime.starts_with("image/") {
                return Err(bad(
                    d.at("mimeType"),
                    format!("`{mime}` files cannot be translated; only images can"),
                ));
            }
        }
        let uri = d.need_str("fileUri")?;
        return Ok(Some(GPart::Image(Image::Url(uri.to_string()))));
    }
    if let Some(c) = f.obj("functionCall")? {
        c.only(&["name", "args", "id"], &[])?;
        let name = c.need_str("name")?.to_string();
        let args = match c.get("args") {
            None => "{}".to_string(),
            Some(a @ Value::Object(_)) => a.to_string(),
            Some(_) => return Err(bad(c.at("args"), "expected a JSON object")),
        };
        let id = c.str("id")?.map(str::to_string);
        return Ok(Some(GPart::Call { id, name, args }));
    }
    if let Some(r) = f.obj("functionResponse")? {
        r.only(&["name", "response", "id"], &["willContinue", "scheduling"])?;
        let name = r.need_str("name")?.to_string();
        let text = r.get("response").map(tool_text).unwrap_or_default();
        let id = r.str("id")?.map(str::to_string);
        return Ok(Some(GPart::Response { id, name, text }));
    }
    Ok(None)
}

/// The tool result text carried by a `functionResponse.response` (a lone `result` is unwrapped).
fn tool_text(v: &Value) -> String {
    if let Value::Object(m) = v {
        if m.len() == 1 {
            if let Some(r) = m.get("result") {
                return match r {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
            }
        }
    }
    v.to_string()
}

fn decode_system(v: &Value, path: &str) -> Result<Option<String>, TranslateError> {
    if let Value::String(s) = v {
        return Ok(Some(s.clone()));
    }
    let f = Fields::of(v, path)?;
    f.only(&["parts", "role"], &[])?;
    let mut texts = Vec::new();
    for (j, p) in f.array("parts")?.iter().enumerate() {
        let ppath = format!("{}[{j}]", f.at("parts"));
        match decode_part(p, &ppath)? {
            Some(GPart::Text(t)) => texts.push(t),
            None => {}
            Some(_) => return Err(bad(ppath, "a system instruction can only hold text")),
        }
    }
    Ok(if texts.is_empty() {
        None
    } else {
        Some(texts.join("\n"))
    })
}

struct CallRecord {
    id: String,
    name: String,
    answered: bool,
}

fn decode_contents(contents: &[Value], out: &mut Vec<Message>) -> Result<(), TranslateError> {
    let mut calls: Vec<CallRecord> = Vec::new();
    let mut next = 0usize;
    let mut gen_id = || {
        let id = format!("call_{next}");
        next += 1;
        id
    };
    for (i, c) in contents.iter().enumerate() {
        let path = format!("contents[{i}]");
        let cf = Fields::of(c, &path)?;
        cf.only(&["role", "parts"], &[])?;
        let is_model = match cf.str("role")?.unwrap_or("user") {
            "model" => true,
            "user" | "function" | "tool" => false,
            other => {
                return Err(bad(
                    cf.at("role"),
                    format!("unknown role `{other}` (expected `user` or `model`)"),
                ))
            }
        };
        let mut content: Vec<Part> = Vec::new();
        let mut tool_calls: Vec<ToolCall> = Vec::new();
        for (j, p) in cf.array("parts")?.iter().enumerate() {
            let ppath = format!("{path}.parts[{j}]");
            let Some(part) = decode_part(p, &ppath)? else {
                continue;
            };
            match part {
                GPart::Text(t) => match content.last_mut() {
                    // The model's text arrives split in many parts; one string reads better.
                    Some(Part::Text(prev)) if is_model => prev.push_str(&t),
                    _ => content.push(Part::Text(t)),
                },
                GPart::Image(img) => content.push(Part::Image(img)),
                GPart::Call { id, name, args } => {
                    if !is_model {
                        return Err(bad(
                            format!("{ppath}.functionCall"),
                            "only a `model` turn can hold a functionCall",
                        ));
                    }
                    let id = id.unwrap_or_else(&mut gen_id);
                    calls.push(CallRecord {
                        id: id.clone(),
                        name: name.clone(),
                        answered: false,
                    });
                    tool_calls.push(ToolCall {
                        id,
                        name,
                        arguments: args,
                    });
                }
                GPart::Response { id, name, text } => {
                    if is_model {
                        return Err(bad(
                            format!("{ppath}.functionResponse"),
                            "a functionResponse belongs in a `user` turn",
                        ));
                    }
                    if !content.is_empty() {
                        out.push(message(Role::User, std::mem::take(&mut content)));
                    }
                    let by_id = id
                        .as_deref()
                        .and_then(|id| calls.iter().position(|c| c.id == id));
                    let found =
                        by_id.or_else(|| calls.iter().position(|c| !c.answered && c.name == name));
                    let call_id = match found.and_then(|k| calls.get_mut(k)) {
                        Some(rec) => {
                            rec.answered = true;
                            rec.id.clone()
                        }
                        None => id.unwrap_or_else(&mut gen_id),
                    };
                    let mut m = message(Role::Tool, vec![Part::Text(text)]);
                    m.tool_call_id = Some(call_id);
                    m.name = Some(name);
                    out.push(m);
                }
            }
        }
        if is_model {
            if !content.is_empty() || !tool_calls.is_empty() {
                let mut m = message(Role::Assistant, content);
                m.tool_calls = tool_calls;
                out.push(m);
            }
        } else if !content.is_empty() {
            out.push(message(Role::User, content));
        }
    }
    Ok(())
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

fn decode_generation_config(g: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    g.only(
        &[
            "maxOutputTokens",
            "temperature",
            "topP",
            "topK",
            "stopSequences",
            "seed",
            "candidateCount",
            "responseMimeType",
            "responseSchema",
            "responseJsonSchema",
            "frequencyPenalty",
            "presencePenalty",
            "responseModalities",
        ],
        &["thinkingConfig", "mediaResolution"],
    )?;
    req.max_tokens = g.u32("maxOutputTokens")?;
    req.temperature = g.f64("temperature")?;
    req.top_p = g.f64("topP")?;
    req.top_k = g.u32("topK")?;
    req.stop = g.strings("stopSequences")?;
    req.seed = g.i64("seed")?;
    req.frequency_penalty = g.f64("frequencyPenalty")?;
    req.presence_penalty = g.f64("presencePenalty")?;
    if let Some(n) = g.u32("candidateCount")? {
        if n > 1 {
            return Err(bad(
                g.at("candidateCount"),
                "only one candidate can be translated",
            ));
        }
    }
    for (i, m) in g.strings("responseModalities")?.iter().enumerate() {
        if !m.eq_ignore_ascii_case("TEXT") {
            return Err(bad(
                format!("{}[{i}]", g.at("responseModalities")),
                format!("`{m}` output cannot be translated; only TEXT can"),
            ));
        }
    }
    let mime = g.str("responseMimeType")?;
    let schema = match (g.get("responseJsonSchema"), g.get("responseSchema")) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(s)) => Some(from_gemini_schema(s)),
        (None, None) => None,
    };
    req.response_format = match (mime, schema) {
        (Some(m), Some(_)) if m != "application/json" => {
            return Err(bad(
                g.at("responseMimeType"),
                "a response schema needs `application/json`",
            ))
        }
        (_, Some(schema)) => Some(ResponseFormat::JsonSchema {
            name: "response".to_string(),
            schema,
            strict: false,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        (Some("text/plain"), None) => Some(ResponseFormat::Text),
        (Some(other), None) => {
            return Err(bad(
                g.at("responseMimeType"),
                format!("`{other}` cannot be translated (only text/plain and application/json)"),
            ))
        }
        (None, None) => None,
    };
    Ok(())
}

fn decode_tools(top: &Fields, req: &mut ChatRequest) -> Result<(), TranslateError> {
    for (i, t) in top.array("tools")?.iter().enumerate() {
        let tf = Fields::of(t, &format!("tools[{i}]"))?;
        tf.only(&["functionDeclarations"], &[])?;
        for (j, d) in tf.array("functionDeclarations")?.iter().enumerate() {
            let df = Fields::of(d, &format!("tools[{i}].functionDeclarations[{j}]"))?;
            df.only(
                &["name", "description", "parameters", "parametersJsonSchema"],
                &["response", "responseJsonSchema", "behavior"],
            )?;
            let parameters = match (df.get("parametersJsonSchema"), df.get("parameters")) {
                (Some(s), _) => s.clone(),
                (None, Some(s)) => from_gemini_schema(s),
                (None, None) => json!({"type": "object", "properties": {}}),
            };
            req.tools.push(Tool {
                name: df.need_str("name")?.to_string(),
                description: df.str("description")?.map(str::to_string),
                parameters,
            });
        }
    }
    let Some(tc) = top.obj("toolConfig")? else {
        return Ok(());
    };
    tc.only(&["functionCallingConfig"], &["retrievalConfig"])?;
    let Some(fc) = tc.obj("functionCallingConfig")? else {
        return Ok(());
    };
    fc.only(&["mode", "allowedFunctionNames"], &[])?;
    let names = fc.strings("allowedFunctionNames")?;
    let mode = fc.str("mode")?.unwrap_or("AUTO").to_ascii_uppercase();
    req.tool_choice = Some(match mode.as_str() {
        "NONE" => ToolChoice::None,
        "AUTO" | "VALIDATED" | "MODE_UNSPECIFIED" if names.is_empty() => ToolChoice::Auto,
        "ANY" => match names.as_slice() {
            [] => ToolChoice::Required,
            [one] => ToolChoice::Tool(one.clone()),
            many if req.tools.iter().all(|t| many.contains(&t.name)) => ToolChoice::Required,
            _ => {
                return Err(bad(
                    fc.at("allowedFunctionNames"),
                    "a subset of several functions cannot be translated",
                ))
            }
        },
        "AUTO" | "VALIDATED" | "MODE_UNSPECIFIED" => {
            return Err(bad(
                fc.at("allowedFunctionNames"),
                "allowed function names without mode ANY cannot be translated",
            ))
        }
        other => return Err(bad(fc.at("mode"), format!("unknown mode `{other}`"))),
    });
    Ok(())
}

/// Gemini's OpenAPI-subset schema → plain JSON Schema: lower-case types, `nullable` as a `null` type.
fn from_gemini_schema(v: &Value) -> Value {
    let Value::Object(m) = v else {
        return v.clone();
    };
    let mut out = Map::new();
    let mut nullable = false;
    for (k, val) in m {
        let key = camel(k);
        match key.as_str() {
            "type" => match val {
                Value::String(t) if t.eq_ignore_ascii_case("TYPE_UNSPECIFIED") => {}
                Value::String(t) => {
                    out.insert(key, Value::String(t.to_ascii_lowercase()));
                }
                other => {
                    out.insert(key, other.clone());
                }
            },
            "nullable" => nullable = val.as_bool() == Some(true),
            "propertyOrdering" => {}
            "properties" => {
                let props = match val {
                    Value::Object(p) => Value::Object(
                        p.iter()
                            .map(|(name, s)| (name.clone(), from_gemini_schema(s)))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                out.insert(key, props);
            }
            "items" => {
                out.insert(key, from_gemini_schema(val));
            }
            "anyOf" => {
                let list = match val {
                    Value::Array(a) => Value::Array(a.iter().map(from_gemini_schema).collect()),
                    other => other.clone(),
                };
                out.insert(key, list);
            }
            _ => {
                out.insert(key, val.clone());
            }
        }
    }
    if nullable {
        if let Some(Value::String(t)) = out.get("type").cloned() {
            out.insert("type".to_string(), json!([t, "null"]));
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------------------------
// Requests: canonical → Gemini

/// JSON Schema → Gemini's OpenAPI subset, or `None` when the schema uses something the subset lacks.
fn to_gemini_schema(v: &Value) -> Option<Value> {
    let m = v.as_object()?;
    let mut out = Map::new();
    for (k, val) in m {
        match k.as_str() {
            "type" => match val {
                Value::String(t) => {
                    out.insert(k.clone(), Value::String(t.to_ascii_uppercase()));
                }
                Value::Array(ts) => {
                    let non_null: Vec<&str> = ts
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|t| *t != "null")
                        .collect();
                    if non_null.len() + usize::from(non_null.len() < ts.len()) != ts.len() {
                        return None;
                    }
                    let [one] = non_null.as_slice() else {
                        return None;
                    };
                    out.insert(k.clone(), Value::String(one.to_ascii_uppercase()));
                    if non_null.len() < ts.len() {
                        out.insert("nullable".to_string(), Value::Bool(true));
                    }
                }
                _ => return None,
            },
            "properties" => {
                let props = val.as_object()?;
                let mut conv = Map::new();
                for (name, s) in props {
                    conv.insert(name.clone(), to_gemini_schema(s)?);
                }
                out.insert(k.clone(), Value::Object(conv));
            }
            "items" => {
                out.insert(k.clone(), to_gemini_schema(val)?);
            }
            "anyOf" => {
                let list = val.as_array()?;
                let conv: Option<Vec<Value>> = list.iter().map(to_gemini_schema).collect();
                out.insert(k.clone(), Value::Array(conv?));
            }
            "enum" => {
                if !val.as_array()?.iter().all(Value::is_string) {
                    return None;
                }
                out.insert(k.clone(), val.clone());
            }
            "const" => {
                let s = val.as_str()?;
                out.insert("enum".to_string(), json!([s]));
            }
            "format" => {
                if matches!(
                    val.as_str(),
                    Some("enum" | "date-time" | "int32" | "int64" | "float" | "double")
                ) {
                    out.insert(k.clone(), val.clone());
                }
            }
            "additionalProperties" => {
                if !val.is_boolean() {
                    return None;
                }
            }
            "description" | "title" | "pattern" | "required" | "nullable" | "minimum"
            | "maximum" | "minItems" | "maxItems" | "minLength" | "maxLength" | "minProperties"
            | "maxProperties" | "example" | "propertyOrdering" => {
                out.insert(k.clone(), val.clone());
            }
            "$schema" | "$id" | "$comment" | "strict" | "examples" | "default" | "readOnly"
            | "writeOnly" | "deprecated" | "exclusiveMinimum" | "exclusiveMaximum" => {}
            _ => return None,
        }
    }
    // Gemini rejects an OBJECT with no properties; plain JSON Schema says it the same way.
    let is_object = out.get("type").and_then(Value::as_str) == Some("OBJECT");
    let empty = out
        .get("properties")
        .and_then(Value::as_object)
        .is_none_or(Map::is_empty);
    if is_object && empty {
        return None;
    }
    Some(Value::Object(out))
}

/// A tool taking no arguments: Gemini wants `parameters` left out rather than an empty object.
fn is_empty_schema(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => {
            m.keys().all(|k| {
                matches!(
                    k.as_str(),
                    "type" | "properties" | "$schema" | "additionalProperties" | "required"
                )
            }) && m.get("type").is_none_or(|t| t == "object")
                && m.get("properties")
                    .is_none_or(|p| p.as_object().is_some_and(Map::is_empty))
                && m.get("required")
                    .is_none_or(|r| r.as_array().is_some_and(Vec::is_empty))
        }
        _ => false,
    }
}

/// `image/png` for `….png`, and so on; `image/jpeg` when the extension says nothing.
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "bmp" => "image/bmp",
        "svg" => "image/svg+xml",
        _ => "image/jpeg",
    }
}

fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let mime = meta.strip_suffix(";base64")?;
    Some((if mime.is_empty() { "image/jpeg" } else { mime }, data))
}

fn image_part(img: &Image) -> Value {
    match img {
        Image::Base64 { media_type, data } => {
            json!({"inlineData": {"mimeType": media_type, "data": data}})
        }
        Image::Url(url) => match parse_data_url(url) {
            Some((mime, data)) => json!({"inlineData": {"mimeType": mime, "data": data}}),
            None => json!({"fileData": {"mimeType": guess_mime(url), "fileUri": url}}),
        },
    }
}

/// Tool-call argument text → the object Gemini wants; `None` when it is not a JSON object.
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

/// Like `args_object` for answers, which cannot fail: text that is no object is kept under `arguments`.
fn args_value(arguments: &str) -> Value {
    args_object(arguments).unwrap_or_else(|| json!({ "arguments": arguments }))
}

fn tool_response_value(text: &str) -> Value {
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => v,
        Ok(v) => json!({ "result": v }),
        Err(_) => json!({ "result": text }),
    }
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

fn encode_parts(m: &Message, i: usize) -> Result<Vec<Value>, TranslateError> {
    let mut parts = Vec::new();
    for p in &m.content {
        match p {
            Part::Text(t) if t.is_empty() => {}
            Part::Text(t) => parts.push(json!({ "text": t })),
            Part::Image(img) => parts.push(image_part(img)),
        }
    }
    for (j, c) in m.tool_calls.iter().enumerate() {
        let args = args_object(&c.arguments).ok_or_else(|| {
            bad(
                format!("messages[{i}].tool_calls[{j}].arguments"),
                "Gemini needs the arguments as a JSON object",
            )
        })?;
        parts.push(json!({"functionCall": {"name": c.name, "args": args}}));
    }
    Ok(parts)
}

fn encode_function_response(
    req: &ChatRequest,
    m: &Message,
    i: usize,
) -> Result<Value, TranslateError> {
    let name = tool_name(req, i).ok_or_else(|| {
        bad(
            format!("messages[{i}].tool_call_id"),
            "Gemini needs the tool's name and no earlier assistant tool call has this id",
        )
    })?;
    let mut text = String::new();
    for (j, p) in m.content.iter().enumerate() {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Image(_) => {
                return Err(bad(
                    format!("messages[{i}].content[{j}]"),
                    "Gemini tool results cannot hold images",
                ))
            }
        }
    }
    Ok(json!({"functionResponse": {"name": name, "response": tool_response_value(&text)}}))
}

fn encode_generation_config(req: &ChatRequest) -> Result<Map<String, Value>, TranslateError> {
    let mut g = Map::new();
    let mut put = |k: &str, v: Value| {
        g.insert(k.to_string(), v);
    };
    if let Some(n) = req.max_tokens {
        put("maxOutputTokens", json!(n));
    }
    if let Some(t) = req.temperature {
        put("temperature", json!(t));
    }
    if let Some(p) = req.top_p {
        put("topP", json!(p));
    }
    if let Some(k) = req.top_k {
        put("topK", json!(k));
    }
    if !req.stop.is_empty() {
        put("stopSequences", json!(req.stop));
    }
    if let Some(s) = req.seed {
        let s = i32::try_from(s).map_err(|_| {
            bad(
                "seed",
                "Gemini takes a 32-bit seed; this one is out of range",
            )
        })?;
        put("seed", json!(s));
    }
    if let Some(p) = req.frequency_penalty {
        put("frequencyPenalty", json!(p));
    }
    if let Some(p) = req.presence_penalty {
        put("presencePenalty", json!(p));
    }
    match &req.response_format {
        None => {}
        Some(ResponseFormat::Text) => put("responseMimeType", json!("text/plain")),
        Some(ResponseFormat::JsonObject) => put("responseMimeType", json!("application/json")),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            put("responseMimeType", json!("application/json"));
            match to_gemini_schema(schema) {
                Some(s) => put("responseSchema", s),
                None => put("responseJsonSchema", schema.clone()),
            }
        }
    }
    Ok(g)
}

fn encode_tools(req: &ChatRequest, body: &mut Map<String, Value>) {
    if req.tools.is_empty() {
        return;
    }
    let decls: Vec<Value> = req
        .tools
        .iter()
        .map(|t| {
            let mut d = Map::new();
            d.insert("name".to_string(), json!(t.name));
            if let Some(desc) = &t.description {
                d.insert("description".to_string(), json!(desc));
            }
            if !is_empty_schema(&t.parameters) {
                match to_gemini_schema(&t.parameters) {
                    Some(s) => d.insert("parameters".to_string(), s),
                    None => d.insert("parametersJsonSchema".to_string(), t.parameters.clone()),
                };
            }
            Value::Object(d)
        })
        .collect();
    body.insert(
        "tools".to_string(),
        json!([{ "functionDeclarations": decls }]),
    );
    let config = match &req.tool_choice {
        None => return,
        Some(ToolChoice::Auto) => json!({"mode": "AUTO"}),
        Some(ToolChoice::None) => json!({"mode": "NONE"}),
        Some(ToolChoice::Required) => json!({"mode": "ANY"}),
        Some(ToolChoice::Tool(name)) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
    };
    body.insert(
        "toolConfig".to_string(),
        json!({ "functionCallingConfig": config }),
    );
}

// ---------------------------------------------------------------------------------------------
// Answers

fn map_finish(reason: &str, has_calls: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY"
        | "RECITATION"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "IMAGE_SAFETY"
        | "IMAGE_PROHIBITED_CONTENT"
        | "IMAGE_RECITATION" => FinishReason::ContentFilter,
        _ if has_calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

fn finish_str(f: &FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
    }
}

pub(crate) fn usage_json(u: Usage) -> Value {
    json!({
        "promptTokenCount": u.input_tokens,
        "candidatesTokenCount": u.output_tokens,
        "totalTokenCount": u.input_tokens.saturating_add(u.output_tokens),
    })
}

fn decode_usage(v: &Value) -> Usage {
    let n = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("promptTokenCount"),
        // Thinking tokens are output the caller pays for, as OpenAI counts reasoning tokens.
        output_tokens: n("candidatesTokenCount") + n("thoughtsTokenCount"),
    }
}

/// `{"error":{"message"}}` (or Google's array-wrapped form) → the message.
fn error_of(v: &Value) -> Option<String> {
    let v = match v {
        Value::Array(a) => a.first()?,
        other => other,
    };
    let e = v.get("error")?;
    Some(match e.get("message").and_then(Value::as_str) {
        Some(m) => m.to_string(),
        None => match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
    })
}

/// An id token for generated tool-call ids: the response id when it is safe in an id, else fresh.
fn id_token(response_id: Option<&str>) -> String {
    match response_id {
        Some(r)
            if !r.is_empty()
                && r.len() <= 48
                && r.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            r.to_string()
        }
        _ => fresh_token(),
    }
}

fn candidate_parts(v: &Value) -> &[Value] {
    v.get("candidates")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("content"))
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn finish_reason_of(v: &Value) -> Option<&str> {
    v.get("candidates")
        .and_then(|c| c.get(0))
        .and_then(|c| c.get("finishReason"))
        .and_then(Value::as_str)
}

fn blocked(v: &Value) -> bool {
    let no_candidates = v
        .get("candidates")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty);
    no_candidates
        && v.get("promptFeedback")
            .and_then(|p| p.get("blockReason"))
            .is_some()
}

/// What a response part says, for answers (lenient: unknown parts are skipped).
enum AnswerPart<'a> {
    Text(&'a str),
    Call {
        id: Option<&'a str>,
        name: &'a str,
        args: String,
    },
}

fn answer_part(p: &Value) -> Option<AnswerPart<'_>> {
    if p.get("thought").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    if let Some(t) = p.get("text").and_then(Value::as_str) {
        return Some(AnswerPart::Text(t));
    }
    let fc = p.get("functionCall").or_else(|| p.get("function_call"))?;
    let name = fc.get("name").and_then(Value::as_str)?;
    let args = match fc.get("args") {
        Some(a @ Value::Object(_)) => a.to_string(),
        _ => "{}".to_string(),
    };
    Some(AnswerPart::Call {
        id: fc.get("id").and_then(Value::as_str),
        name,
        args,
    })
}

fn chunk_json(
    id: &str,
    model: &str,
    parts: Vec<Value>,
    finish: Option<&FinishReason>,
    usage: Option<Usage>,
) -> String {
    let mut cand = Map::new();
    cand.insert(
        "content".to_string(),
        json!({"parts": parts, "role": "model"}),
    );
    if let Some(f) = finish {
        cand.insert("finishReason".to_string(), json!(finish_str(f)));
    }
    cand.insert("index".to_string(), json!(0));
    let mut root = Map::new();
    root.insert("candidates".to_string(), json!([Value::Object(cand)]));
    if let Some(u) = usage {
        root.insert("usageMetadata".to_string(), usage_json(u));
    }
    if !model.is_empty() {
        root.insert("modelVersion".to_string(), json!(model));
    }
    if !id.is_empty() {
        root.insert("responseId".to_string(), json!(id));
    }
    Value::Object(root).to_string()
}

impl Codec for GeminiCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        if op == Op::Completion {
            return Err(bad("", "Gemini has no legacy completion call"));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("request body is not valid JSON: {e}")))?;
        let top = Fields::of(&v, "")?;
        top.only(
            &[
                "contents",
                "systemInstruction",
                "generationConfig",
                "tools",
                "toolConfig",
            ],
            &["safetySettings", "labels", "model"],
        )?;
        let mut req = ChatRequest {
            include_usage: true,
            ..ChatRequest::default()
        };
        if let Some(s) = top.get("systemInstruction") {
            req.system = decode_system(s, "systemInstruction")?;
        }
        decode_contents(top.array("contents")?, &mut req.messages)?;
        if let Some(g) = top.obj("generationConfig")? {
            decode_generation_config(&g, &mut req)?;
        }
        decode_tools(&top, &mut req)?;
        Ok(req)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for (i, m) in req.messages.iter().enumerate() {
            let (role, parts) = match m.role {
                Role::User => ("user", encode_parts(m, i)?),
                Role::Assistant => ("model", encode_parts(m, i)?),
                Role::Tool => ("user", vec![encode_function_response(req, m, i)?]),
            };
            if parts.is_empty() {
                continue;
            }
            // Gemini wants turns to alternate: consecutive turns of one role become one.
            match contents.last_mut() {
                Some((r, p)) if *r == role => p.extend(parts),
                _ => contents.push((role, parts)),
            }
        }
        let mut body = Map::new();
        body.insert(
            "contents".to_string(),
            Value::Array(
                contents
                    .into_iter()
                    .map(|(role, parts)| json!({"role": role, "parts": parts}))
                    .collect(),
            ),
        );
        if let Some(s) = &req.system {
            body.insert(
                "systemInstruction".to_string(),
                json!({"parts": [{"text": s}]}),
            );
        }
        let g = encode_generation_config(req)?;
        if !g.is_empty() {
            body.insert("generationConfig".to_string(), Value::Object(g));
        }
        encode_tools(req, &mut body);
        serde_json::to_vec(&Value::Object(body)).map_err(|e| bad("", e.to_string()))
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("Gemini answer is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            return Err(bad("", format!("Gemini error: {msg}")));
        }
        if !v.is_object() {
            return Err(bad("", "Gemini answer is not a JSON object"));
        }
        let response_id = v.get("responseId").and_then(Value::as_str);
        let token = id_token(response_id);
        let mut resp = ChatResponse {
            id: response_id
                .map(str::to_string)
                .unwrap_or_else(|| format!("gemini-{token}")),
            model: v
                .get("modelVersion")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            created: now_secs(),
            ..ChatResponse::default()
        };
        for p in candidate_parts(&v) {
            match answer_part(p) {
                Some(AnswerPart::Text(t)) => resp.text.push_str(t),
                Some(AnswerPart::Call { id, name, args }) => {
                    let n = resp.tool_calls.len();
                    resp.tool_calls.push(ToolCall {
                        id: id.map_or_else(|| format!("call_{token}_{n}"), str::to_string),
                        name: name.to_string(),
                        arguments: args,
                    });
                }
                None => {}
            }
        }
        let has_calls = !resp.tool_calls.is_empty();
        resp.finish = if blocked(&v) {
            FinishReason::ContentFilter
        } else {
            map_finish(finish_reason_of(&v).unwrap_or("STOP"), has_calls)
        };
        if let Some(u) = v.get("usageMetadata") {
            resp.usage = decode_usage(u);
        }
        Ok(resp)
    }

    fn encode_response(&self, _op: Op, resp: &ChatResponse) -> Vec<u8> {
        let mut parts = Vec::new();
        if !resp.text.is_empty() || resp.tool_calls.is_empty() {
            parts.push(json!({ "text": resp.text }));
        }
        for c in &resp.tool_calls {
            parts.push(json!({"functionCall": {"name": c.name, "args": args_value(&c.arguments)}}));
        }
        chunk_json(
            &resp.id,
            &resp.model,
            parts,
            Some(&resp.finish),
            Some(resp.usage),
        )
        .into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStreamDecoder::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}

// ---------------------------------------------------------------------------------------------
// Streaming

#[derive(Default)]
struct GeminiStreamDecoder {
    sse: SseParser,
    events: Vec<SseEvent>,
    started: bool,
    token: String,
    calls: usize,
    finished: bool,
    usage: Option<Usage>,
    usage_sent: bool,
}

impl GeminiStreamDecoder {
    fn data(&mut self, data: &str, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| bad("", format!("Gemini stream event is not valid JSON: {e}")))?;
        if let Some(msg) = error_of(&v) {
            out.push(StreamEvent::Error(msg));
            return Ok(());
        }
        if !v.is_object() {
            return Err(bad("", "Gemini stream event is not a JSON object"));
        }
        if !self.started {
            self.started = true;
            let response_id = v.get("responseId").and_then(Value::as_str);
            self.token = id_token(response_id);
            out.push(StreamEvent::Start {
                id: response_id
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("gemini-{}", self.token)),
                model: v
                    .get("modelVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
            });
        }
        for p in candidate_parts(&v) {
            match answer_part(p) {
                Some(AnswerPart::Text(t)) if !t.is_empty() => {
                    out.push(StreamEvent::Text(t.to_string()));
                }
                Some(AnswerPart::Call { id, name, args }) => {
                    let index = self.calls;
                    self.calls += 1;
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id: id
                            .map_or_else(|| format!("call_{}_{index}", self.token), str::to_string),
                        name: name.to_string(),
                    });
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        fragment: args,
                    });
                }
                _ => {}
            }
        }
        if let Some(u) = v.get("usageMetadata") {
            self.usage = Some(decode_usage(u));
        }
        if !self.finished {
            let finish = if blocked(&v) {
                Some(FinishReason::ContentFilter)
            } else {
                finish_reason_of(&v).map(|r| map_finish(r, self.calls > 0))
            };
            if let Some(f) = finish {
                self.finished = true;
                out.push(StreamEvent::Finish(f));
            }
        }
        if self.finished && !self.usage_sent {
            if let Some(u) = self.usage {
                self.usage_sent = true;
                out.push(StreamEvent::Usage(u));
            }
        }
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let events = std::mem::take(&mut self.events);
        let mut result = Ok(());
        for e in &events {
            if let Err(err) = self.data(&e.data, out) {
                result = Err(err);
                break;
            }
        }
        self.events = events;
        self.events.clear();
        result
    }
}

impl StreamDecoder for GeminiStreamDecoder {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.sse.feed(chunk, &mut self.events);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.sse.finish(&mut self.events);
        self.drain(out)?;
        if self.started && !self.usage_sent {
            if let Some(u) = self.usage {
                self.usage_sent = true;
                out.push(StreamEvent::Usage(u));
            }
        }
        Ok(())
    }
}

#[derive(Default)]
struct GeminiStreamEncoder {
    id: String,
    model: String,
    held: Held,
    closed: bool,
}

impl GeminiStreamEncoder {
    fn chunk(
        &self,
        out: &mut Vec<u8>,
        parts: Vec<Value>,
        finish: Option<&FinishReason>,
        usage: Option<Usage>,
    ) {
        write_sse(
            out,
            None,
            &chunk_json(&self.id, &self.model, parts, finish, usage),
        );
    }

    /// Complete tool calls as `functionCall` parts (Gemini cannot stream their arguments).
    fn write_calls(&self, calls: Vec<PendingCall>, out: &mut Vec<u8>) {
        if calls.is_empty() {
            return;
        }
        let parts: Vec<Value> = calls
            .into_iter()
            .map(|c| json!({"functionCall": {"name": c.name, "args": args_value(&c.args)}}))
            .collect();
        self.chunk(out, parts, None, None);
    }

    /// Tool calls, then the last chunk carrying `finishReason` and `usageMetadata`.
    fn write_ready(&self, ready: Ready, out: &mut Vec<u8>) {
        self.write_calls(ready.calls, out);
        if let Some((finish, usage)) = ready.last {
            self.chunk(out, vec![json!({"text": ""})], Some(&finish), Some(usage));
        }
    }
}

impl StreamEncoder for GeminiStreamEncoder {
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match event {
            StreamEvent::Start { id, model } => {
                self.id = if id.is_empty() {
                    format!("gemini-{}", fresh_token())
                } else {
                    id.clone()
                };
                self.model = model.clone();
            }
            StreamEvent::Text(t) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                if !t.is_empty() {
                    self.chunk(out, vec![json!({ "text": t })], None, None);
                }
            }
            StreamEvent::Error(msg) => {
                let calls = self.held.calls();
                self.write_calls(calls, out);
                let body = json!({"error": {"code": 500, "message": msg, "status": "INTERNAL"}});
                write_sse(out, None, &body.to_string());
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
        if self.closed {
            return;
        }
        let ready = self.held.end();
        self.write_ready(ready, out);
        self.closed = true;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const REQUEST_SDK: &str = include_str!("../../tests/fixtures/gemini/request_sdk.json");
    const REQUEST_SNAKE: &str = include_str!("../../tests/fixtures/gemini/request_rest_snake.json");
    const RESPONSE_TEXT: &str = include_str!("../../tests/fixtures/gemini/response_text.json");
    const RESPONSE_CALL: &str =
        include_str!("../../tests/fixtures/gemini/response_function_call.json");
    const STREAM_TEXT: &str = include_str!("../../tests/fixtures/gemini/stream_text.sse");
    const STREAM_CALL: &str = include_str!("../../tests/fixtures/gemini/stream_function_call.sse");
    const ERROR: &str = include_str!("../../tests/fixtures/gemini/error.json");

    fn text(s: &str) -> Part {
        Part::Text(s.to_string())
    }

    fn decode(body: &str) -> Result<ChatRequest, TranslateError> {
        GeminiCodec.decode_request(Op::Chat, body.as_bytes())
    }

    fn decode_err(body: &str) -> TranslateError {
        decode(body).expect_err("should not translate")
    }

    fn stream(bytes: &[u8], cut: Option<usize>) -> Result<Vec<StreamEvent>, TranslateError> {
        let mut d = GeminiCodec.stream_decoder();
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

    fn encode_events(events: &[StreamEvent]) -> Vec<u8> {
        let mut e = GeminiCodec.stream_encoder(Op::Chat);
        let mut out = Vec::new();
        for ev in events {
            e.encode(ev, &mut out);
        }
        e.finish(&mut out);
        out
    }

    fn sse_json(bytes: &[u8]) -> Vec<Value> {
        let mut p = SseParser::new();
        let mut events = Vec::new();
        p.feed(bytes, &mut events);
        p.finish(&mut events);
        events
            .iter()
            .map(|e| serde_json::from_str(&e.data).unwrap())
            .collect()
    }

    #[test]
    fn decodes_sdk_request() {
        let req = decode(REQUEST_SDK).unwrap();
        assert_eq!(req.model, "");
        assert!(!req.stream);
        assert!(req.include_usage);
        assert_eq!(req.system.as_deref(), Some("You are a weather bot."));
        assert_eq!(req.temperature, Some(0.2));
        assert_eq!(req.top_p, Some(0.95));
        assert_eq!(req.top_k, Some(40));
        assert_eq!(req.max_tokens, Some(256));
        assert_eq!(req.stop, ["END"]);
        assert_eq!(req.seed, Some(7));
        assert_eq!(req.presence_penalty, Some(0.5));
        assert_eq!(req.frequency_penalty, Some(0.25));
        assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
        assert_eq!(req.messages.len(), 4);

        let user = &req.messages[0];
        assert_eq!(user.role, Role::User);
        assert_eq!(
            user.content,
            [text("What's the weather in Boston and in Paris?")]
        );

        let asst = &req.messages[1];
        assert_eq!(asst.role, Role::Assistant);
        assert!(asst.content.is_empty());
        assert_eq!(asst.tool_calls.len(), 2);
        assert_eq!(asst.tool_calls[0].id, "call_0");
        assert_eq!(asst.tool_calls[0].name, "get_weather");
        assert_eq!(
            serde_json::from_str::<Value>(&asst.tool_calls[0].arguments).unwrap(),
            json!({"location": "Boston, MA"})
        );
        assert_eq!(asst.tool_calls[1].id, "call_1");

        // Same-named responses answer the calls in order.
        let r0 = &req.messages[2];
        assert_eq!(r0.role, Role::Tool);
        assert_eq!(r0.tool_call_id.as_deref(), Some("call_0"));
        assert_eq!(r0.name.as_deref(), Some("get_weather"));
        assert_eq!(r0.content, [text("72F and sunny")]);
        let r1 = &req.messages[3];
        assert_eq!(r1.tool_call_id.as_deref(), Some("call_1"));
        assert_eq!(
            serde_json::from_str::<Value>(match &r1.content[0] {
                Part::Text(t) => t,
                Part::Image(_) => unreachable!("text expected"),
            })
            .unwrap(),
            json!({"temperature": 18, "unit": "C"})
        );

        assert_eq!(req.tools.len(), 1);
        let tool = &req.tools[0];
        assert_eq!(tool.name, "get_weather");
        assert_eq!(
            tool.description.as_deref(),
            Some("Get the current weather in a given location")
        );
        assert_eq!(
            tool.parameters,
            json!({
                "type": "object",
                "properties": {
                    "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                    "unit": {"type": ["string", "null"], "enum": ["C", "F"]}
                },
                "required": ["location"]
            })
        );
    }

    #[test]
    fn decodes_snake_case_rest_request() {
        let req = decode(REQUEST_SNAKE).unwrap();
        assert_eq!(
            req.system.as_deref(),
            Some("You are a cat. Your name is Neko.")
        );
        assert_eq!(req.messages.len(), 1);
        assert_eq!(
            req.messages[0].content,
            [
                text("List a few popular cookie recipes shown in this picture."),
                Part::Image(Image::Base64 {
                    media_type: "image/jpeg".into(),
                    data: "/9j/4AAQSkZJRgABAQAAAQABAAD".into()
                })
            ]
        );
        assert_eq!(req.stop, ["Title"]);
        assert_eq!(req.temperature, Some(1.0));
        assert_eq!(req.max_tokens, Some(800));
        assert_eq!(req.top_p, Some(0.8));
        assert_eq!(req.top_k, Some(10));
        let Some(ResponseFormat::JsonSchema { schema, .. }) = &req.response_format else {
            unreachable!("schema expected: {:?}", req.response_format);
        };
        assert_eq!(
            *schema,
            json!({
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "recipe_name": {"type": "string"},
                        "ingredients": {"type": "array", "items": {"type": "string"}}
                    }
                }
            })
        );
    }

    #[test]
    fn decodes_responses() {
        let r = GeminiCodec
            .decode_response(RESPONSE_TEXT.as_bytes())
            .unwrap();
        assert_eq!(r.id, "mXNmaK-4Np6-nvgP0ZmH8Aw");
        assert_eq!(r.model, "gemini-2.5-flash");
        assert_eq!(r.text, "The sky is blue because of Rayleigh scattering.");
        assert!(r.tool_calls.is_empty());
        assert_eq!(r.finish, FinishReason::Stop);
        // Thinking tokens count as output.
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 6,
                output_tokens: 24
            }
        );
        assert!(r.created > 1_700_000_000);

        let r = GeminiCodec
            .decode_response(RESPONSE_CALL.as_bytes())
            .unwrap();
        assert_eq!(r.finish, FinishReason::ToolCalls);
        assert_eq!(r.text, "");
        assert_eq!(
            r.tool_calls,
            [ToolCall {
                id: "call_abc123_0".into(),
                name: "get_weather".into(),
                arguments: r#"{"location":"Boston, MA"}"#.into()
            }]
        );
        assert_eq!(
            r.usage,
            Usage {
                input_tokens: 40,
                output_tokens: 7
            }
        );
    }

    #[test]
    fn finish_reasons() {
        let body = |reason: &str| {
            format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}],"role":"model"}},"finishReason":"{reason}"}}]}}"#
            )
        };
        let finish = |reason: &str| {
            GeminiCodec
                .decode_response(body(reason).as_bytes())
                .unwrap()
                .finish
        };
        assert_eq!(finish("STOP"), FinishReason::Stop);
        assert_eq!(finish("MAX_TOKENS"), FinishReason::Length);
        for r in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            assert_eq!(finish(r), FinishReason::ContentFilter, "{r}");
        }
        let blocked =
            r#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":3}}"#;
        let r = GeminiCodec.decode_response(blocked.as_bytes()).unwrap();
        assert_eq!(r.finish, FinishReason::ContentFilter);
        assert_eq!(r.usage.input_tokens, 3);
        for (f, s) in [
            (FinishReason::Stop, "STOP"),
            (FinishReason::ToolCalls, "STOP"),
            (FinishReason::Length, "MAX_TOKENS"),
            (FinishReason::ContentFilter, "SAFETY"),
        ] {
            let resp = ChatResponse {
                finish: f,
                ..ChatResponse::default()
            };
            let v: Value =
                serde_json::from_slice(&GeminiCodec.encode_response(Op::Chat, &resp)).unwrap();
            assert_eq!(v["candidates"][0]["finishReason"], s);
        }
    }

    #[test]
    fn decodes_text_stream_split_anywhere() {
        let bytes = STREAM_TEXT.as_bytes();
        let whole = stream(bytes, None).unwrap();
        assert_eq!(
            whole,
            [
                StreamEvent::Start {
                    id: "Yt7nZ4qVF5ul1MkPqv6W0Qg".into(),
                    model: "gemini-2.0-flash".into()
                },
                StreamEvent::Text("The".into()),
                StreamEvent::Text(" sky is blue".into()),
                StreamEvent::Text(".".into()),
                StreamEvent::Finish(FinishReason::Stop),
                StreamEvent::Usage(Usage {
                    input_tokens: 5,
                    output_tokens: 8
                }),
            ]
        );
        for cut in 0..=bytes.len() {
            assert_eq!(stream(bytes, Some(cut)).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn decodes_function_call_stream_split_anywhere() {
        let bytes = STREAM_CALL.as_bytes();
        let whole = stream(bytes, None).unwrap();
        assert_eq!(
            whole,
            [
                StreamEvent::Start {
                    id: "fc-stream-1".into(),
                    model: "gemini-2.5-flash".into()
                },
                StreamEvent::Text("Let me check.".into()),
                StreamEvent::ToolCallStart {
                    index: 0,
                    id: "call_fc-stream-1_0".into(),
                    name: "get_weather".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 0,
                    fragment: r#"{"location":"Boston, MA"}"#.into()
                },
                StreamEvent::ToolCallStart {
                    index: 1,
                    id: "call_fc-stream-1_1".into(),
                    name: "get_time".into()
                },
                StreamEvent::ToolCallArgs {
                    index: 1,
                    fragment: r#"{"tz":"America/New_York"}"#.into()
                },
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 40,
                    output_tokens: 12
                }),
            ]
        );
        for cut in 0..=bytes.len() {
            assert_eq!(stream(bytes, Some(cut)).unwrap(), whole, "cut at {cut}");
        }
    }

    #[test]
    fn stream_error_event() {
        let bytes = b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}],\"responseId\":\"r1\"}\n\ndata: {\"error\":{\"code\":500,\"message\":\"boom\",\"status\":\"INTERNAL\"}}\n\n";
        let events = stream(bytes, None).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[1], StreamEvent::Text("Hi".into()));
        assert_eq!(events[2], StreamEvent::Error("boom".into()));

        let out = encode_events(&[
            StreamEvent::Start {
                id: "r1".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hi".into()),
            StreamEvent::Error("upstream died".into()),
            StreamEvent::Text("ignored".into()),
        ]);
        let chunks = sse_json(&out);
        assert_eq!(chunks.len(), 2);
        assert_eq!(
            chunks[1],
            json!({"error": {"code": 500, "message": "upstream died", "status": "INTERNAL"}})
        );
        let back = stream(&out, None).unwrap();
        assert_eq!(
            back.last(),
            Some(&StreamEvent::Error("upstream died".into()))
        );
    }

    #[test]
    fn stream_encoder_buffers_tool_calls_and_ends_with_usage() {
        let events = [
            StreamEvent::Start {
                id: "resp-9".into(),
                model: "gpt-4o".into(),
            },
            StreamEvent::Text("Checking".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "call_x".into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"loc".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "ation\":\"Paris\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_y".into(),
                name: "no_args".into(),
            },
            StreamEvent::Finish(FinishReason::ToolCalls),
            StreamEvent::Usage(Usage {
                input_tokens: 11,
                output_tokens: 22,
            }),
        ];
        let out = encode_events(&events);
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.starts_with("data: {"));
        assert!(!text.contains("[DONE]"));
        let chunks = sse_json(&out);
        assert_eq!(chunks.len(), 3, "{text}");
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
            "Checking"
        );
        assert_eq!(chunks[0]["candidates"][0]["content"]["role"], "model");
        assert_eq!(chunks[0]["responseId"], "resp-9");
        assert_eq!(chunks[0]["modelVersion"], "gpt-4o");
        let parts = &chunks[1]["candidates"][0]["content"]["parts"];
        assert_eq!(
            *parts,
            json!([
                {"functionCall": {"name": "get_weather", "args": {"location": "Paris"}}},
                {"functionCall": {"name": "no_args", "args": {}}}
            ])
        );
        let last = &chunks[2];
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(
            last["usageMetadata"],
            json!({"promptTokenCount": 11, "candidatesTokenCount": 22, "totalTokenCount": 33})
        );

        // And it reads back.
        let back = stream(&out, None).unwrap();
        assert_eq!(
            back[0],
            StreamEvent::Start {
                id: "resp-9".into(),
                model: "gpt-4o".into()
            }
        );
        assert_eq!(back[1], StreamEvent::Text("Checking".into()));
        assert!(
            matches!(&back[2], StreamEvent::ToolCallStart { index: 0, name, .. } if name == "get_weather")
        );
        assert_eq!(
            back[3],
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: r#"{"location":"Paris"}"#.into()
            }
        );
        assert!(
            matches!(&back[4], StreamEvent::ToolCallStart { index: 1, name, .. } if name == "no_args")
        );
        assert_eq!(
            &back[6..],
            [
                StreamEvent::Finish(FinishReason::ToolCalls),
                StreamEvent::Usage(Usage {
                    input_tokens: 11,
                    output_tokens: 22
                })
            ]
        );
    }

    #[test]
    fn stream_encoder_finish_without_usage_still_reports_usage() {
        let out = encode_events(&[
            StreamEvent::Start {
                id: "a".into(),
                model: "b".into(),
            },
            StreamEvent::Text("hi".into()),
            StreamEvent::Finish(FinishReason::Length),
        ]);
        let chunks = sse_json(&out);
        let last = chunks.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "MAX_TOKENS");
        assert_eq!(last["usageMetadata"]["totalTokenCount"], 0);
        // Usage before Finish (some upstreams) ends up in the same last chunk.
        let out = encode_events(&[
            StreamEvent::Start {
                id: "a".into(),
                model: "b".into(),
            },
            StreamEvent::Usage(Usage {
                input_tokens: 1,
                output_tokens: 2,
            }),
            StreamEvent::Finish(FinishReason::Stop),
        ]);
        let chunks = sse_json(&out);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0]["usageMetadata"]["candidatesTokenCount"], 2);
        assert_eq!(chunks[0]["candidatesTokenCount"], Value::Null);
    }

    fn canonical_request() -> ChatRequest {
        ChatRequest {
            model: "gpt-4o".into(),
            system: Some("Be brief.".into()),
            messages: vec![
                Message {
                    role: Role::User,
                    content: vec![
                        text("What is in this picture, and the weather?"),
                        Part::Image(Image::Base64 {
                            media_type: "image/png".into(),
                            data: "iVBORw0KGgoAAAANSUhEUg".into(),
                        }),
                        Part::Image(Image::Url("https://example.com/cat.webp?x=1".into())),
                    ],
                    tool_calls: vec![],
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::Assistant,
                    content: vec![text("A cat. Checking the weather.")],
                    tool_calls: vec![ToolCall {
                        id: "toolu_01".into(),
                        name: "get_weather".into(),
                        arguments: r#"{"city":"Paris"}"#.into(),
                    }],
                    tool_call_id: None,
                    name: None,
                },
                Message {
                    role: Role::Tool,
                    content: vec![text("sunny")],
                    tool_calls: vec![],
                    tool_call_id: Some("toolu_01".into()),
                    name: None,
                },
                Message {
                    role: Role::User,
                    content: vec![text("Thanks. And tomorrow?")],
                    tool_calls: vec![],
                    tool_call_id: None,
                    name: None,
                },
            ],
            max_tokens: Some(100),
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(5),
            stop: vec!["STOP".into()],
            seed: Some(-3),
            frequency_penalty: Some(0.1),
            presence_penalty: Some(-0.1),
            stream: true,
            include_usage: true,
            tools: vec![
                Tool {
                    name: "get_weather".into(),
                    description: Some("Weather by city".into()),
                    parameters: json!({
                        "type": "object",
                        "properties": {"city": {"type": "string", "description": "City"}},
                        "required": ["city"]
                    }),
                },
                Tool {
                    name: "now".into(),
                    description: None,
                    parameters: json!({"type": "object", "properties": {}}),
                },
            ],
            tool_choice: Some(ToolChoice::Tool("get_weather".into())),
            response_format: Some(ResponseFormat::JsonSchema {
                name: "answer".into(),
                schema: json!({
                    "type": "object",
                    "properties": {"text": {"type": "string"}},
                    "required": ["text"],
                    "additionalProperties": false
                }),
                strict: true,
            }),
            user: Some("u1".into()),
            legacy_prompt: false,
        }
    }

    #[test]
    fn request_round_trip() {
        let req = canonical_request();
        let body = GeminiCodec.encode_request(&req).unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("model").is_none());
        assert_eq!(
            v["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            v["contents"][0]["parts"][2],
            json!({"fileData": {"mimeType": "image/webp", "fileUri": "https://example.com/cat.webp?x=1"}})
        );
        assert_eq!(
            v["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}},
                {"text": "Thanks. And tomorrow?"}
            ]})
        );
        assert_eq!(
            v["tools"][0]["functionDeclarations"][0]["parameters"]["type"],
            "OBJECT"
        );
        assert!(v["tools"][0]["functionDeclarations"][1]
            .get("parameters")
            .is_none());
        assert_eq!(
            v["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}})
        );
        assert_eq!(
            v["generationConfig"]["responseMimeType"],
            "application/json"
        );
        assert!(v["generationConfig"]["responseSchema"].is_object());

        let back = decode(std::str::from_utf8(&body).unwrap()).unwrap();
        assert_eq!(back.system, req.system);
        assert_eq!(back.max_tokens, req.max_tokens);
        assert_eq!(back.temperature, req.temperature);
        assert_eq!(back.top_p, req.top_p);
        assert_eq!(back.top_k, req.top_k);
        assert_eq!(back.stop, req.stop);
        assert_eq!(back.seed, req.seed);
        assert_eq!(back.frequency_penalty, req.frequency_penalty);
        assert_eq!(back.presence_penalty, req.presence_penalty);
        assert_eq!(back.tools, req.tools);
        assert_eq!(back.tool_choice, req.tool_choice);
        let Some(ResponseFormat::JsonSchema { schema, .. }) = &back.response_format else {
            unreachable!("schema expected");
        };
        // `additionalProperties: false` is not in Gemini's subset; the rest survives.
        assert_eq!(
            *schema,
            json!({"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]})
        );

        assert_eq!(back.messages.len(), 4);
        assert_eq!(back.messages[0], req.messages[0]);
        let asst = &back.messages[1];
        assert_eq!(asst.content, req.messages[1].content);
        assert_eq!(asst.tool_calls.len(), 1);
        assert_eq!(asst.tool_calls[0].name, "get_weather");
        assert_eq!(asst.tool_calls[0].arguments, r#"{"city":"Paris"}"#);
        let tool = &back.messages[2];
        assert_eq!(tool.role, Role::Tool);
        assert_eq!(tool.content, [text("sunny")]);
        assert_eq!(tool.tool_call_id.as_ref(), Some(&asst.tool_calls[0].id));
        assert_eq!(tool.name.as_deref(), Some("get_weather"));
        assert_eq!(back.messages[3], req.messages[3]);
    }

    #[test]
    fn tool_results_wrap_and_unwrap() {
        for (result, response, back) in [
            ("sunny", json!({"result": "sunny"}), "sunny"),
            ("42", json!({"result": 42}), "42"),
            ("[1,2]", json!({"result": [1, 2]}), "[1,2]"),
            (r#"{"t":1}"#, json!({"t": 1}), r#"{"t":1}"#),
            ("", json!({"result": ""}), ""),
        ] {
            let req = ChatRequest {
                messages: vec![Message {
                    role: Role::Tool,
                    content: vec![text(result)],
                    tool_calls: vec![],
                    tool_call_id: Some("c".into()),
                    name: Some("f".into()),
                }],
                ..ChatRequest::default()
            };
            let v: Value =
                serde_json::from_slice(&GeminiCodec.encode_request(&req).unwrap()).unwrap();
            assert_eq!(
                v["contents"][0]["parts"][0]["functionResponse"]["response"],
                response
            );
            let decoded = decode(&v.to_string()).unwrap();
            assert_eq!(decoded.messages[0].content, [text(back)]);
        }
    }

    #[test]
    fn schemas_outside_the_subset_go_as_json_schema() {
        let schema = json!({
            "type": "object",
            "properties": {"node": {"$ref": "#/$defs/node"}},
            "$defs": {"node": {"type": "object", "properties": {"v": {"type": "integer"}}}}
        });
        let req = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![text("hi")],
                tool_calls: vec![],
                tool_call_id: None,
                name: None,
            }],
            tools: vec![Tool {
                name: "t".into(),
                description: None,
                parameters: schema.clone(),
            }],
            response_format: Some(ResponseFormat::JsonSchema {
                name: "x".into(),
                schema: schema.clone(),
                strict: false,
            }),
            ..ChatRequest::default()
        };
        let v: Value = serde_json::from_slice(&GeminiCodec.encode_request(&req).unwrap()).unwrap();
        let decl = &v["tools"][0]["functionDeclarations"][0];
        assert!(decl.get("parameters").is_none());
        assert_eq!(decl["parametersJsonSchema"], schema);
        assert_eq!(v["generationConfig"]["responseJsonSchema"], schema);
        let back = decode(&v.to_string()).unwrap();
        assert_eq!(back.tools[0].parameters, schema);

        // Nullable via type arrays, `const`, and dropped annotations.
        let s = json!({"type": ["string", "null"], "const": "a", "format": "uri", "$schema": "x"});
        assert_eq!(
            to_gemini_schema(&s),
            Some(json!({"type": "STRING", "nullable": true, "enum": ["a"]}))
        );
        assert_eq!(
            to_gemini_schema(&json!({"type": ["string", "integer"]})),
            None
        );
        assert_eq!(
            to_gemini_schema(
                &json!({"type": "object", "additionalProperties": {"type": "string"}})
            ),
            None
        );
    }

    #[test]
    fn response_round_trip() {
        let resp = ChatResponse {
            id: "chatcmpl-1".into(),
            model: "gpt-4o".into(),
            created: 1,
            text: "Let me look.".into(),
            tool_calls: vec![ToolCall {
                id: "call_a".into(),
                name: "search".into(),
                arguments: r#"{"q":"rust"}"#.into(),
            }],
            finish: FinishReason::ToolCalls,
            usage: Usage {
                input_tokens: 12,
                output_tokens: 34,
            },
        };
        let body = GeminiCodec.encode_response(Op::Chat, &resp);
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["responseId"], "chatcmpl-1");
        assert_eq!(v["modelVersion"], "gpt-4o");
        assert_eq!(v["candidates"][0]["index"], 0);
        assert_eq!(v["usageMetadata"]["totalTokenCount"], 46);
        let back = GeminiCodec.decode_response(&body).unwrap();
        assert_eq!(back.id, resp.id);
        assert_eq!(back.model, resp.model);
        assert_eq!(back.text, resp.text);
        assert_eq!(back.tool_calls.len(), 1);
        assert_eq!(back.tool_calls[0].name, "search");
        assert_eq!(back.tool_calls[0].arguments, r#"{"q":"rust"}"#);
        assert_eq!(back.finish, FinishReason::ToolCalls);
        assert_eq!(back.usage, resp.usage);

        for finish in [
            FinishReason::Stop,
            FinishReason::Length,
            FinishReason::ContentFilter,
        ] {
            let r = ChatResponse {
                text: "x".into(),
                finish: finish.clone(),
                ..ChatResponse::default()
            };
            let back = GeminiCodec
                .decode_response(&GeminiCodec.encode_response(Op::Chat, &r))
                .unwrap();
            assert_eq!(back.finish, finish);
        }
    }

    #[test]
    fn untranslatable_fields_are_named() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"contents":[],"generationConfig":{"candidateCount":2}}"#,
                "generationConfig.candidateCount",
            ),
            (
                r#"{"contents":[],"generation_config":{"response_logprobs":true}}"#,
                "generationConfig.responseLogprobs",
            ),
            (
                r#"{"contents":[],"cachedContent":"cachedContents/x"}"#,
                "cachedContent",
            ),
            (
                r#"{"contents":[],"tools":[{"codeExecution":{}}]}"#,
                "tools[0].codeExecution",
            ),
            (
                r#"{"contents":[{"parts":[{"text":"a"},{"inlineData":{"mimeType":"audio/wav","data":"AA"}}]}]}"#,
                "contents[0].parts[1].inlineData.mimeType",
            ),
            (
                r#"{"contents":[{"parts":[{"executableCode":{"code":"1"}}]}]}"#,
                "contents[0].parts[0].executableCode",
            ),
            (
                r#"{"contents":[{"role":"system","parts":[{"text":"a"}]}]}"#,
                "contents[0].role",
            ),
            (
                r#"{"contents":[{"role":"user","parts":[{"functionCall":{"name":"f"}}]}]}"#,
                "contents[0].parts[0].functionCall",
            ),
            (
                r#"{"contents":[],"generationConfig":{"responseModalities":["TEXT","IMAGE"]}}"#,
                "generationConfig.responseModalities[1]",
            ),
            (
                r#"{"contents":[],"tools":[{"functionDeclarations":[{"name":"a"},{"name":"b"},{"name":"c"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}}"#,
                "toolConfig.functionCallingConfig.allowedFunctionNames",
            ),
            (
                r#"{"contents":[],"generationConfig":{"temperature":"hot"}}"#,
                "generationConfig.temperature",
            ),
        ];
        for (body, field) in cases {
            assert_eq!(decode_err(body).field, *field, "{body}");
        }
        assert!(GeminiCodec
            .decode_request(Op::Completion, b"{\"contents\":[]}")
            .is_err());
        // Allowed names that cover every tool mean "any tool".
        let req = decode(r#"{"contents":[],"tools":[{"functionDeclarations":[{"name":"a"},{"name":"b"}]}],"toolConfig":{"functionCallingConfig":{"mode":"ANY","allowedFunctionNames":["a","b"]}}}"#).unwrap();
        assert_eq!(req.tool_choice, Some(ToolChoice::Required));

        let tool_msg = |id: &str, name: Option<&str>| Message {
            role: Role::Tool,
            content: vec![text("r")],
            tool_calls: vec![],
            tool_call_id: Some(id.into()),
            name: name.map(str::to_string),
        };
        let err = GeminiCodec
            .encode_request(&ChatRequest {
                messages: vec![tool_msg("nope", None)],
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "messages[0].tool_call_id");
        let err = GeminiCodec
            .encode_request(&ChatRequest {
                messages: vec![Message {
                    role: Role::Assistant,
                    content: vec![],
                    tool_calls: vec![ToolCall {
                        id: "a".into(),
                        name: "f".into(),
                        arguments: "[1]".into(),
                    }],
                    tool_call_id: None,
                    name: None,
                }],
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "messages[0].tool_calls[0].arguments");
        let err = GeminiCodec
            .encode_request(&ChatRequest {
                seed: Some(1 << 40),
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "seed");
        let err = GeminiCodec
            .encode_request(&ChatRequest {
                messages: vec![Message {
                    role: Role::Tool,
                    content: vec![Part::Image(Image::Url("https://x/y.png".into()))],
                    tool_calls: vec![],
                    tool_call_id: Some("c".into()),
                    name: Some("f".into()),
                }],
                ..ChatRequest::default()
            })
            .unwrap_err();
        assert_eq!(err.field, "messages[0].content[0]");
    }

    #[test]
    fn snake_case_and_lenient_shapes() {
        let req = decode(
            r#"{"contents":[{"parts":[{"text":"hi"},{"file_data":{"file_uri":"gs://b/cat.png","mime_type":"image/png"}}]}],
                "system_instruction":"plain string",
                "tool_config":{"function_calling_config":{"mode":"none"}},
                "tools":[{"function_declarations":[{"name":"f","parameters_json_schema":{"type":"object","properties":{"a":{"type":"integer"}}}}]}],
                "generation_config":{"response_mime_type":"application/json","seed":null}}"#,
        )
        .unwrap();
        assert_eq!(req.system.as_deref(), Some("plain string"));
        assert_eq!(
            req.messages[0].content[1],
            Part::Image(Image::Url("gs://b/cat.png".into()))
        );
        assert_eq!(req.tool_choice, Some(ToolChoice::None));
        assert_eq!(
            req.tools[0].parameters["properties"]["a"]["type"],
            "integer"
        );
        assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
        assert_eq!(req.seed, None);
        // Thought parts are not content.
        let req = decode(
            r#"{"contents":[{"role":"model","parts":[{"text":"hmm","thought":true},{"text":"Hel"},{"text":"lo"}]}]}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].content, [text("Hello")]);
        // A response that names its call by id.
        let req = decode(
            r#"{"contents":[{"role":"model","parts":[{"functionCall":{"name":"f","id":"x1"}},{"functionCall":{"name":"f","id":"x2"}}]},
                {"role":"user","parts":[{"functionResponse":{"name":"f","id":"x2","response":{"ok":true}}}]}]}"#,
        )
        .unwrap();
        assert_eq!(req.messages[0].tool_calls[0].arguments, "{}");
        assert_eq!(req.messages[1].tool_call_id.as_deref(), Some("x2"));
    }

    #[test]
    fn errors_and_models() {
        assert_eq!(
            GeminiCodec.error_message(ERROR.as_bytes()).as_deref(),
            Some("Resource has been exhausted (e.g. check quota).")
        );
        assert_eq!(
            GeminiCodec
                .error_message(br#"[{"error":{"code":400,"message":"bad"}}]"#)
                .as_deref(),
            Some("bad")
        );
        assert_eq!(GeminiCodec.error_message(b"<html>"), None);
        assert_eq!(GeminiCodec.error_message(RESPONSE_TEXT.as_bytes()), None);
        let err = GeminiCodec.decode_response(ERROR.as_bytes()).unwrap_err();
        assert!(err.message.contains("exhausted"));

        let v = models_list(&[
            ("gemini-pro".into(), "google".into()),
            ("llama3".into(), "gpu-a".into()),
        ]);
        assert_eq!(v["models"][0]["name"], "models/gemini-pro");
        assert_eq!(v["models"][1]["displayName"], "llama3");
        assert_eq!(
            v["models"][1]["supportedGenerationMethods"],
            json!(["generateContent", "streamGenerateContent"])
        );
    }

    #[test]
    fn never_panics_on_truncated_or_garbage_input() {
        let samples = [
            REQUEST_SDK,
            REQUEST_SNAKE,
            RESPONSE_TEXT,
            RESPONSE_CALL,
            STREAM_TEXT,
            STREAM_CALL,
            ERROR,
        ];
        for s in samples {
            let b = s.as_bytes();
            for end in 0..=b.len() {
                let p = &b[..end];
                let _ = GeminiCodec.decode_request(Op::Chat, p);
                let _ = GeminiCodec.decode_response(p);
                let _ = GeminiCodec.error_message(p);
                let _ = stream(p, None);
            }
        }
        let garbage: &[&[u8]] = &[
            b"",
            b"\xff\xfe\x00",
            b"null",
            b"[]",
            b"42",
            b"\"s\"",
            b"{\"contents\":5}",
            b"{\"contents\":[5]}",
            b"{\"contents\":[{\"parts\":[{\"text\":5}]}]}",
            b"{\"contents\":[{\"parts\":[{\"inlineData\":5}]}]}",
            b"{\"generationConfig\":{\"topK\":-1,\"maxOutputTokens\":1e40}}",
            b"{\"tools\":[{\"functionDeclarations\":[{}]}]}",
            b"{\"candidates\":5}",
            b"{\"candidates\":[{\"content\":{\"parts\":[5,{\"functionCall\":{}}]}}]}",
            b"data: {\"candidates\":[null]}\n\ndata: nope\n\n",
            b"data: [DONE]\n\ndata: 5\n\n",
            b"data: {\"error\":5}\n\n",
        ];
        for g in garbage {
            let _ = GeminiCodec.decode_request(Op::Chat, g);
            let _ = GeminiCodec.decode_response(g);
            let _ = GeminiCodec.error_message(g);
            let _ = stream(g, None);
        }
    }
}
