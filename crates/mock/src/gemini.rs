//! Google Gemini API (`/v1beta/models…`): generateContent, streamGenerateContent (SSE or a JSON array), embeddings, token counting and models.

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::anthropic::display_name;
use crate::handler::{Admitted, Dialect, GEMINI_JSON};
use crate::ollama::{push_token, TOOL_ARGS};
use crate::reply::{bad_request, gemini_error, ok_json};
use crate::state::Shared;
use crate::stream::streaming;
use crate::util::{self, js};

const SSE: &str = "text/event-stream";

/// The `:method` of a `POST /v1beta/models/{model}:method` call.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    Generate,
    /// `sse` is `?alt=sse`; without it Gemini streams one JSON array.
    Stream {
        sse: bool,
    },
    Embed,
    BatchEmbed,
    CountTokens,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Generate => "generateContent",
            Method::Stream { .. } => "streamGenerateContent",
            Method::Embed => "embedContent",
            Method::BatchEmbed => "batchEmbedContents",
            Method::CountTokens => "countTokens",
        }
    }
}

/// Splits `{model}:{method}` (the part after `/v1beta/models/`) on its last ':', since model
/// names may hold ':' themselves.
pub(crate) fn target(rest: &str, query: Option<&str>) -> Option<(Method, String)> {
    let rest = if rest.contains('%') {
        rest.replace("%3A", ":").replace("%3a", ":")
    } else {
        rest.to_owned()
    };
    let (model, method) = rest.rsplit_once(':')?;
    let method = match method {
        "generateContent" => Method::Generate,
        "streamGenerateContent" => Method::Stream {
            sse: crate::handler::query_param(query, "alt") == Some("sse"),
        },
        "embedContent" => Method::Embed,
        "batchEmbedContents" => Method::BatchEmbed,
        "countTokens" => Method::CountTokens,
        _ => return None,
    };
    Some((method, model.to_owned()))
}

pub(crate) fn not_found(model: &str, method: &str) -> Response {
    gemini_error(
        StatusCode::NOT_FOUND,
        &format!("models/{model} is not found for API version v1beta, or is not supported for {method}. Call ListModels to see the list of available models and their supported methods."),
        Vec::new(),
    )
}

fn invalid(msg: &str) -> Response {
    gemini_error(StatusCode::BAD_REQUEST, msg, Vec::new())
}

/// The GenerateContentRequest fields the mock reads (camelCase as the SDKs send, snake_case accepted too).
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct GenerateReq {
    contents: Option<Vec<Value>>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<Value>,
    tools: Option<Vec<Value>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<Value>,
    #[serde(alias = "generation_config")]
    generation_config: Option<Value>,
}

/// `obj[camel]`, or `obj[snake]` as protobuf JSON also accepts.
fn field<'a>(obj: Option<&'a Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    let obj = obj?;
    obj.get(camel).or_else(|| obj.get(snake))
}

impl GenerateReq {
    /// Name of the function the mock "calls": the first allowed or declared one, unless mode is NONE.
    fn function_name(&self) -> Option<String> {
        let config = field(
            self.tool_config.as_ref(),
            "functionCallingConfig",
            "function_calling_config",
        );
        if field(config, "mode", "mode").and_then(Value::as_str) == Some("NONE") {
            return None;
        }
        let allowed = field(config, "allowedFunctionNames", "allowed_function_names")
            .and_then(|a| a.get(0))
            .and_then(Value::as_str);
        if let Some(name) = allowed {
            return Some(name.to_owned());
        }
        let first = self.tools.as_ref()?.iter().find_map(|t| {
            field(Some(t), "functionDeclarations", "function_declarations")?.get(0)
        })?;
        let name = first.get("name").and_then(Value::as_str).unwrap_or("tool");
        Some(name.to_owned())
    }

    fn max_output_tokens(&self) -> Option<i64> {
        field(
            self.generation_config.as_ref(),
            "maxOutputTokens",
            "max_output_tokens",
        )
        .and_then(Value::as_i64)
    }

    /// Words of the system instruction and of every content's text parts, at least 1.
    fn prompt_tokens(&self) -> u64 {
        let contents = self.contents.as_deref().unwrap_or(&[]);
        (contents.iter().map(content_words).sum::<u64>()
            + self.system_instruction.as_ref().map_or(0, content_words))
        .max(1)
    }
}

/// Words in a Content's text parts.
fn content_words(content: &Value) -> u64 {
    content.get("parts").map_or(0, util::content_words)
}

/// A Content's text parts joined by spaces: what gets embedded.
fn content_text(content: &Value) -> String {
    let parts = content.get("parts").and_then(Value::as_array);
    parts
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(" ")
}

pub(crate) async fn generation(
    adm: Admitted,
    method: Method,
    model: String,
    bytes: &Bytes,
) -> Response {
    match method {
        Method::Embed | Method::BatchEmbed => embed(adm, method, model, bytes).await,
        _ => generate(adm, method, model, bytes).await,
    }
}

/// A text part holding the words `tokens` of the answer.
fn text_part(name_json: &str, tokens: std::ops::Range<usize>) -> String {
    let mut p = String::from(r#"{"text":""#);
    tokens.for_each(|i| push_token(&mut p, name_json, i));
    p.push_str("\"}");
    p
}

/// What every GenerateContentResponse of one call shares.
struct Envelope {
    /// `usageMetadata`.
    usage: String,
    /// `modelVersion` and `responseId`, and the closing brace.
    tail: String,
    finish: &'static str,
}

impl Envelope {
    /// A whole GenerateContentResponse holding `parts`; the last one carries finish and usage.
    fn wrap(&self, parts: &str, last: bool) -> String {
        let mut s = String::with_capacity(parts.len() + self.usage.len() + self.tail.len() + 128);
        s.push_str(r#"{"candidates":[{"content":{"parts":["#);
        s.push_str(parts);
        s.push_str(r#"],"role":"model"},"#);
        if last {
            s.push_str(r#""finishReason":""#);
            s.push_str(self.finish);
            s.push_str(r#"","index":0}],"usageMetadata":"#);
            s.push_str(&self.usage);
        } else {
            s.push_str(r#""index":0}]"#);
        }
        s.push_str(&self.tail);
        s
    }
}

async fn generate(adm: Admitted, method: Method, model: String, bytes: &Bytes) -> Response {
    let req: GenerateReq = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(Dialect::Gemini, &e.to_string()),
    };
    if req.contents.as_ref().is_none_or(Vec::is_empty) {
        return invalid("* GenerateContentRequest.contents: contents is not specified\n");
    }
    if adm.load(&model).is_none() {
        return not_found(&model, method.name());
    }
    let sse = match method {
        Method::Stream { sse } => Some(sse),
        _ => None,
    };
    let call = adm.into_call(model, sse.is_some()).await;
    let st = call.st.clone();
    let prompt = req.prompt_tokens();
    let function = req.function_name();
    let (n, reason) = call.budget(req.max_output_tokens());
    let (completion, finish) = match function {
        Some(_) => (1, "STOP"),
        None if reason == "length" => (n, "MAX_TOKENS"),
        None => (n, "STOP"),
    };
    let usage = format!(
        r#"{{"promptTokenCount":{prompt},"candidatesTokenCount":{completion},"totalTokenCount":{}}}"#,
        prompt + completion as u64
    );
    let tail = format!(
        r#","modelVersion":{},"responseId":"{}"}}"#,
        js(&call.model),
        st.next_id(22)
    );
    let call_part = function.map(|f| {
        format!(
            r#"{{"functionCall":{{"name":{},"args":{TOOL_ARGS}}}}}"#,
            js(&f)
        )
    });
    let envelope = Envelope {
        usage,
        tail,
        finish,
    };
    let response = move |parts: &str, last: bool| envelope.wrap(parts, last);

    let Some(sse) = sse else {
        let parts = call_part.unwrap_or_else(|| text_part(&st.name_json, 0..n));
        return ok_json(Dialect::Gemini, response(&parts, true));
    };

    let frames = if call_part.is_some() { 1 } else { n.max(1) };
    let pace = call.pace();
    let ctype = if sse { SSE } else { GEMINI_JSON };
    streaming(ctype, pace, call.guard, move |i| {
        if i >= frames {
            return None;
        }
        let part = call_part
            .clone()
            .unwrap_or_else(|| text_part(&st.name_json, i..(i + 1).min(n)));
        let last = i + 1 == frames;
        let body = response(&part, last);
        Some(if sse {
            // Google's front ends end SSE lines with CRLF.
            format!("data: {body}\r\n\r\n")
        } else {
            let open = if i == 0 { "[" } else { ",\r\n" };
            let close = if last { "\n]" } else { "\n" };
            format!("{open}{body}{close}")
        })
    })
}

/// The EmbedContentRequest fields the mock reads; BatchEmbedContentsRequest is a list of them.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct EmbedReq {
    content: Option<Value>,
    #[serde(alias = "output_dimensionality")]
    output_dimensionality: Option<usize>,
    requests: Option<Vec<EmbedReq>>,
}

impl EmbedReq {
    fn values(&self, content: &Value, default_dims: usize) -> Value {
        let dims = self
            .output_dimensionality
            .filter(|d| *d > 0)
            .unwrap_or(default_dims);
        json!({ "values": util::embedding(&content_text(content), dims) })
    }
}

async fn embed(adm: Admitted, method: Method, model: String, bytes: &Bytes) -> Response {
    let req: EmbedReq = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(Dialect::Gemini, &e.to_string()),
    };
    let batch = method == Method::BatchEmbed;
    if batch {
        let requests = req.requests.as_deref().unwrap_or(&[]);
        if requests.is_empty() {
            return invalid("* BatchEmbedContentsRequest.requests: requests is not specified\n");
        }
        if let Some(i) = requests.iter().position(|r| r.content.is_none()) {
            return invalid(&format!(
                "* BatchEmbedContentsRequest.requests[{i}].content: content is not specified\n"
            ));
        }
    } else if req.content.is_none() {
        return invalid("* EmbedContentRequest.content: content is not specified\n");
    }
    if adm.load(&model).is_none() {
        return not_found(&model, method.name());
    }
    let call = adm.into_call(model, false).await;
    let dims = call.st.dims;
    let body = if batch {
        let embeddings: Vec<Value> = req
            .requests
            .iter()
            .flatten()
            .filter_map(|r| Some(r.values(r.content.as_ref()?, dims)))
            .collect();
        json!({ "embeddings": embeddings })
    } else {
        let content = req.content.as_ref().unwrap_or(&Value::Null);
        json!({ "embedding": req.values(content, dims) })
    };
    ok_json(Dialect::Gemini, body.to_string())
}

/// `:countTokens`: not a generation, so neither counted nor failed.
pub(crate) fn count_tokens(st: &Shared, model: &str, bytes: &Bytes) -> Response {
    #[derive(Deserialize, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct CountReq {
        contents: Option<Vec<Value>>,
        #[serde(alias = "generate_content_request")]
        generate_content_request: Option<GenerateReq>,
    }
    let req: CountReq = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(Dialect::Gemini, &e.to_string()),
    };
    if st.resolve(model).is_none() {
        return not_found(model, Method::CountTokens.name());
    }
    let total = match (req.contents, req.generate_content_request) {
        (_, Some(g)) => g.prompt_tokens(),
        (Some(c), None) => c.iter().map(content_words).sum::<u64>(),
        (None, None) => 0,
    };
    ok_json(Dialect::Gemini, format!(r#"{{"totalTokens":{total}}}"#))
}

fn model_object(st: &Shared, id: &str) -> Value {
    json!({
        "name": format!("models/{id}"),
        "version": "001",
        "displayName": display_name(id),
        "description": format!("Mock model served by {}.", st.name),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 8192,
        "supportedGenerationMethods": [
            "generateContent",
            "countTokens",
            "embedContent",
            "batchEmbedContents",
        ],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 40,
        "maxTemperature": 2.0,
    })
}

/// `GET /v1beta/models`: every model on one page (no `nextPageToken`).
pub(crate) fn models(st: &Shared) -> Response {
    let models: Vec<Value> = st.models().iter().map(|m| model_object(st, m)).collect();
    ok_json(Dialect::Gemini, json!({ "models": models }).to_string())
}

pub(crate) fn model(st: &Shared, id: &str) -> Response {
    let id = id.strip_prefix("models/").unwrap_or(id);
    match st.resolve(id) {
        Some(m) => ok_json(Dialect::Gemini, model_object(st, &m).to_string()),
        None => gemini_error(
            StatusCode::NOT_FOUND,
            &format!("Model is not found: models/{id} for api version v1beta"),
            Vec::new(),
        ),
    }
}
