//! Request entry point: bookkeeping, auth, fault injection, body parsing and dispatch to the
//! four dialects (the replies' shapes are in `reply`).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;

use crate::reply::{
    anthropic_error, bad_request, injected_failure, missing_model, model_not_found, not_found_text,
    not_routed, ollama_error, openai_error, respond, unauthorized,
};
use crate::state::{InFlight, Shared};
use crate::stream::Pace;
use crate::{anthropic, gemini, ollama, openai, responses, Faults, KeyRules};

/// Largest request body accepted; far above any real prompt the tests send.
const BODY_LIMIT: usize = 64 << 20;

pub(crate) const OLLAMA_JSON: &str = "application/json; charset=utf-8";
pub(crate) const OPENAI_JSON: &str = "application/json";
pub(crate) const GEMINI_JSON: &str = "application/json; charset=UTF-8";

static X_MOCK_NODE: HeaderName = HeaderName::from_static("x-mock-node");
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static X_GOOG_API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// Which API family a request belongs to; decides error body shapes and how keys are carried.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Ollama,
    OpenAi,
    Anthropic,
    Gemini,
}

impl Dialect {
    /// The name `/_mock/script` replies select the dialect by.
    fn name(self) -> &'static str {
        match self {
            Dialect::Ollama => "ollama",
            Dialect::OpenAi => "openai",
            Dialect::Anthropic => "anthropic",
            Dialect::Gemini => "gemini",
        }
    }

    /// `/v1/models` is shared by three APIs: Anthropic clients send `anthropic-version`, Gemini
    /// clients (google-genai defaults to API version v1) send their key in `x-goog-api-key` or
    /// `?key=`, and Gemini's `{model}:{method}` calls are POSTs no OpenAI route takes (a GET of
    /// `/v1/models/llama3:latest` stays OpenAI's).
    fn of(method: &Method, path: &str, headers: &HeaderMap, query: Option<&str>) -> Self {
        let under = |prefix: &str| {
            path.strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        let models = under("/v1/models");
        if path.starts_with("/v1beta/") {
            Dialect::Gemini
        } else if under("/v1/messages") || (models && headers.contains_key(&ANTHROPIC_VERSION)) {
            Dialect::Anthropic
        } else if models
            && (method == Method::POST
                || headers.contains_key(&X_GOOG_API_KEY)
                || query_param(query, "key").is_some())
        {
            Dialect::Gemini
        } else if path.starts_with("/v1/") || path.starts_with("/openai/") {
            // `/openai/…` is Azure OpenAI: OpenAI's API under deployment paths.
            Dialect::OpenAi
        } else {
            Dialect::Ollama
        }
    }
}

/// The key a request presents, carried the way its dialect carries it.
struct Credential<'a> {
    /// What `last_authorization` records: the header the key came in (or the `?key=` value).
    shown: Option<Cow<'a, HeaderValue>>,
    /// Empty when there is none.
    key: &'a str,
}

impl<'a> Credential<'a> {
    fn of(dialect: Dialect, headers: &'a HeaderMap, query: Option<&'a str>) -> Self {
        let authorization = headers.get(header::AUTHORIZATION);
        let own = match dialect {
            Dialect::Anthropic => headers.get(&X_API_KEY),
            Dialect::Gemini => headers.get(&X_GOOG_API_KEY),
            // Azure OpenAI sends its key in `api-key`.
            Dialect::OpenAi => headers.get("api-key"),
            Dialect::Ollama => None,
        };
        if let Some(h) = own {
            return Self {
                shown: Some(Cow::Borrowed(h)),
                key: h.to_str().map(str::trim).unwrap_or(""),
            };
        }
        if dialect == Dialect::Gemini {
            if let Some(k) = query_param(query, "key") {
                return Self {
                    shown: HeaderValue::from_str(k).ok().map(Cow::Owned),
                    key: k,
                };
            }
            // Gemini takes only OAuth tokens as bearer credentials, never API keys.
            return Self {
                shown: authorization.map(Cow::Borrowed),
                key: "",
            };
        }
        Self {
            shown: authorization.map(Cow::Borrowed),
            key: authorization
                .and_then(|h| h.to_str().ok())
                .and_then(bearer)
                .unwrap_or(""),
        }
    }
}

/// Value of `name` in a query string (not percent-decoded: keys and `alt` never need it).
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// Union of the request fields the mock reads from any endpoint; unknown fields are ignored
/// like the real servers do.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct GenReq {
    pub(crate) model: Option<String>,
    /// `/api/show` historically takes `name`.
    pub(crate) name: Option<String>,
    pub(crate) messages: Option<Vec<Value>>,
    pub(crate) prompt: Option<Value>,
    pub(crate) system: Option<String>,
    pub(crate) input: Option<Value>,
    pub(crate) stream: Option<bool>,
    pub(crate) stream_options: Option<StreamOptions>,
    pub(crate) tools: Option<Vec<Value>>,
    pub(crate) tool_choice: Option<Value>,
    pub(crate) options: Option<Value>,
    pub(crate) max_tokens: Option<i64>,
    pub(crate) max_completion_tokens: Option<i64>,
    /// Responses API.
    pub(crate) max_output_tokens: Option<i64>,
    pub(crate) instructions: Option<String>,
    pub(crate) encoding_format: Option<String>,
    pub(crate) dimensions: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct StreamOptions {
    pub(crate) include_usage: Option<bool>,
}

impl GenReq {
    /// Name of the tool the mock "calls": the first declared one, unless tools are off.
    pub(crate) fn tool_name(&self) -> Option<String> {
        if self.tool_choice.as_ref().and_then(Value::as_str) == Some("none") {
            return None;
        }
        let first = self.tools.as_ref()?.first()?;
        let name = first
            .pointer("/function/name")
            .or_else(|| first.get("name"))
            .and_then(Value::as_str)
            .unwrap_or("tool");
        Some(name.to_owned())
    }
}

/// Everything a dialect builder needs about an admitted generation call.
pub(crate) struct Call {
    pub(crate) st: Arc<Shared>,
    pub(crate) guard: InFlight,
    pub(crate) faults: Arc<Faults>,
    pub(crate) start: Instant,
    /// The model name as the client spelled it (both servers echo it back).
    pub(crate) model: String,
}

impl Call {
    pub(crate) fn pace(&self) -> Pace {
        Pace {
            ttft: self.st.ttft,
            chunk_delay: self.st.chunk_delay,
            drop_after: self.faults.drop_after,
            stall_after: self.faults.stall_after,
            truncate_after: self.faults.truncate_after,
            unpaced_from: None,
        }
    }

    /// Tokens to produce and the finish reason, honouring a client-side token limit.
    pub(crate) fn budget(&self, limit: Option<i64>) -> (usize, &'static str) {
        let chunks = self.st.chunks;
        match limit {
            Some(l) if l > 0 && (l as u64) < chunks as u64 => (l as usize, "length"),
            _ => (chunks, "stop"),
        }
    }
}

/// A generation call that was counted and survived fault injection; its request is not checked yet.
pub(crate) struct Admitted {
    pub(crate) st: Arc<Shared>,
    guard: InFlight,
    faults: Arc<Faults>,
    start: Instant,
}

impl Admitted {
    /// The configured name serving `model`, now marked loaded; None when the node does not serve it.
    pub(crate) fn load(&self, model: &str) -> Option<String> {
        let canonical = self.st.resolve(model)?;
        self.st.mark_loaded(&canonical);
        Some(canonical)
    }

    /// Streams sleep for ttft before their first frame; whole replies sleep here instead.
    pub(crate) async fn into_call(self, model: String, streams: bool) -> Call {
        if !streams && !self.st.ttft.is_zero() {
            tokio::time::sleep(self.st.ttft).await;
        }
        Call {
            st: self.st,
            guard: self.guard,
            faults: self.faults,
            start: self.start,
            model,
        }
    }
}

/// Which Ollama or OpenAI generation endpoint a POST hit (the other dialects read their own request shapes).
#[derive(Clone, Copy)]
enum Gen {
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
    OpenAiResponses,
}

pub(crate) async fn handle(State(st): State<Arc<Shared>>, req: Request) -> Response {
    let mut resp = route(&st, req).await;
    resp.headers_mut()
        .insert(X_MOCK_NODE.clone(), st.node_header.clone());
    resp
}

async fn route(st: &Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let method = &parts.method;
    if let Some(ctl) = path.strip_prefix("/_mock/") {
        return control(st, method, ctl, body).await;
    }
    if path == "/hook" && method == Method::POST {
        return match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => crate::hook::answer(st, &b).await,
            Err(e) => ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
    }
    let dialect = Dialect::of(method, path, &parts.headers, parts.uri.query());
    let cred = Credential::of(dialect, &parts.headers, parts.uri.query());
    st.note_request(path, cred.shown.as_deref());
    st.note_traceparent(parts.headers.get("traceparent"));
    st.note_headers(&parts.headers);
    let guard = InFlight::new(st);

    if let Some(refused) = check_key(st, dialect, path, &cred) {
        return refused;
    }
    if dialect == Dialect::Anthropic
        && st.strict_anthropic_version
        && !parts.headers.contains_key(&ANTHROPIC_VERSION)
    {
        return anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }

    let bytes = if method == Method::POST || method == Method::DELETE {
        match axum::body::to_bytes(body, BODY_LIMIT).await {
            Ok(b) => b,
            Err(e) => return bad_request(dialect, &format!("failed to read body: {e}")),
        }
    } else {
        Bytes::new()
    };
    if !bytes.is_empty() {
        st.note_body(&bytes);
    }

    if dialect == Dialect::Gemini {
        return gemini_route(st, method, path, parts.uri.query(), &bytes, guard).await;
    }
    if let Some(rest) = path.strip_prefix("/openai/") {
        return azure_route(st, method, rest, parts.uri.query(), &bytes, guard).await;
    }
    dispatch(st, dialect, method, path, &bytes, guard).await
}

/// The configured key rules (`KeyRules`) on the API paths: a refusal, or None to go on.
fn check_key(
    st: &Arc<Shared>,
    dialect: Dialect,
    path: &str,
    cred: &Credential<'_>,
) -> Option<Response> {
    let rules = st.keys();
    let api_path = path.starts_with("/v1/")
        || path.starts_with("/api/")
        || path.starts_with("/v1beta/")
        || path.starts_with("/openai/");
    if !rules.enforced() || !api_path {
        return None;
    }
    let given = cred.key;
    st.note_key(given);
    if rules.revoked.iter().any(|k| k == given) {
        return Some(unauthorized(dialect, given, true));
    }
    if rules.limited.iter().any(|k| k == given) {
        let limited = Faults {
            fail_status: 429,
            retry_after: Some(st.faults().retry_after.unwrap_or(20)),
            ..Faults::default()
        };
        return Some(injected_failure(dialect, &limited));
    }
    if !rules.valid.iter().any(|k| k == given) {
        return Some(unauthorized(dialect, given, false));
    }
    None
}

/// Ollama's, OpenAI's and Anthropic's routes (Gemini and Azure have their own).
async fn dispatch(
    st: &Arc<Shared>,
    dialect: Dialect,
    method: &Method,
    path: &str,
    bytes: &Bytes,
    guard: InFlight,
) -> Response {
    let gen = match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => return ollama::root(method == Method::HEAD),
        (&Method::GET, "/api/version") => return ollama::version(),
        (&Method::GET, "/api/tags") => return ollama::tags(st),
        (&Method::GET, "/api/ps") => return ollama::ps(st),
        (&Method::POST, "/api/show") => return ollama::show(st, bytes),
        (&Method::POST, "/api/pull") => return crate::pull::pull(st, bytes),
        (&Method::DELETE, "/api/delete") => return crate::pull::delete(st, bytes),
        (&Method::GET, "/v1/models") if dialect == Dialect::Anthropic => {
            return anthropic::models(st)
        }
        (&Method::GET, p) if dialect == Dialect::Anthropic && p.starts_with("/v1/models/") => {
            return anthropic::model(st, &p["/v1/models/".len()..]);
        }
        (&Method::GET, "/v1/models") => return openai::models(st),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            return openai::model(st, &p["/v1/models/".len()..]);
        }
        (&Method::POST, "/v1/messages/count_tokens") => return anthropic::count_tokens(st, bytes),
        (&Method::POST, "/v1/messages") => {
            return match admit(st, dialect, guard).await {
                Ok(a) => anthropic::messages(a, bytes).await,
                Err(failure) => failure,
            };
        }
        (&Method::POST, "/api/chat") => Gen::OllamaChat,
        (&Method::POST, "/api/generate") => Gen::OllamaGenerate,
        (&Method::POST, "/api/embed") => Gen::OllamaEmbed,
        (&Method::POST, "/api/embeddings") => Gen::OllamaEmbeddings,
        (&Method::POST, "/v1/chat/completions") => Gen::OpenAiChat,
        (&Method::POST, "/v1/completions") => Gen::OpenAiCompletions,
        (&Method::POST, "/v1/embeddings") => Gen::OpenAiEmbeddings,
        (&Method::POST, "/v1/responses") => Gen::OpenAiResponses,
        _ => return not_routed(dialect, method, path),
    };
    generation(st, dialect, gen, bytes, guard).await
}

/// Azure OpenAI: `/openai/deployments/{deployment}/{chat/completions|completions|embeddings}`
/// and `/openai/models`, each with `?api-version=`, and the v1 API's `/openai/v1/responses`. The deployment names the model; the body's
/// `model` is ignored, as Azure does.
async fn azure_route(
    st: &Arc<Shared>,
    method: &Method,
    rest: &str,
    query: Option<&str>,
    bytes: &Bytes,
    guard: InFlight,
) -> Response {
    let dialect = Dialect::OpenAi;
    // Azure's v1 API: OpenAI's paths, the deployment in the body's `model`.
    if method == Method::POST && rest == "v1/responses" {
        return generation(st, dialect, Gen::OpenAiResponses, bytes, guard).await;
    }
    if query_param(query, "api-version").is_none() {
        return openai_error(
            StatusCode::NOT_FOUND,
            "Resource not found",
            "invalid_request_error",
            None,
            Some("404"),
        );
    }
    if method == Method::GET && rest == "models" {
        return openai::models(st);
    }
    let Some((deployment, op)) = rest
        .strip_prefix("deployments/")
        .and_then(|r| r.split_once('/'))
    else {
        return not_routed(dialect, method, rest);
    };
    let gen = match (method, op) {
        (&Method::POST, "chat/completions") => Gen::OpenAiChat,
        (&Method::POST, "completions") => Gen::OpenAiCompletions,
        (&Method::POST, "embeddings") => Gen::OpenAiEmbeddings,
        _ => return not_routed(dialect, method, rest),
    };
    let mut body: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return bad_request(dialect, &e.to_string()),
    };
    if let Some(obj) = body.as_object_mut() {
        obj.insert("model".into(), Value::String(deployment.to_string()));
    }
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    generation(st, dialect, gen, &bytes, guard).await
}

/// Gemini's routes, under `/v1beta/models` or (google-genai's default API version) `/v1/models`.
async fn gemini_route(
    st: &Arc<Shared>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    bytes: &Bytes,
    guard: InFlight,
) -> Response {
    let tail = path
        .strip_prefix("/v1beta/models")
        .or_else(|| path.strip_prefix("/v1/models"));
    let rest = tail.and_then(|t| t.strip_prefix('/'));
    match (method, tail, rest) {
        (&Method::GET, Some(""), _) => gemini::models(st),
        (&Method::GET, _, Some(model)) => gemini::model(st, model),
        (&Method::POST, _, Some(rest)) => match gemini::target(rest, query) {
            Some((gemini::Method::CountTokens, model)) => gemini::count_tokens(st, &model, bytes),
            Some((m, model)) => match admit(st, Dialect::Gemini, guard).await {
                Ok(a) => gemini::generation(a, m, model, bytes).await,
                Err(failure) => failure,
            },
            None => not_routed(Dialect::Gemini, method, path),
        },
        _ => not_routed(Dialect::Gemini, method, path),
    }
}

/// Counts a generation call and applies a scripted answer, the hang and the fail faults; Err is
/// the answer to send instead of the mock's own.
async fn admit(st: &Arc<Shared>, dialect: Dialect, guard: InFlight) -> Result<Admitted, Response> {
    let start = Instant::now();
    let faults = st.faults();
    let fail = st.note_generation(&faults);
    if let Some(reply) = st.script.take(dialect.name()) {
        return Err(reply.response());
    }
    if faults.hang {
        // Never answers; hyper drops this future when the connection closes or the server stops.
        std::future::pending::<()>().await;
    }
    if fail {
        return Err(injected_failure(dialect, &faults));
    }
    Ok(Admitted {
        st: st.clone(),
        guard,
        faults,
        start,
    })
}

/// Shared prologue of every Ollama/OpenAI generation call: admit, parse, resolve the model.
async fn generation(
    st: &Arc<Shared>,
    dialect: Dialect,
    gen: Gen,
    bytes: &Bytes,
    guard: InFlight,
) -> Response {
    let admitted = match admit(st, dialect, guard).await {
        Ok(a) => a,
        Err(failure) => return failure,
    };
    let req: GenReq = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(dialect, &e.to_string()),
    };
    let Some(model) = req.model.clone().filter(|m| !m.is_empty()) else {
        return missing_model(dialect);
    };
    if admitted.load(&model).is_none() {
        return model_not_found(dialect, &model);
    }

    let streams = match gen {
        Gen::OllamaChat | Gen::OllamaGenerate => req.stream.unwrap_or(true),
        Gen::OpenAiChat | Gen::OpenAiCompletions | Gen::OpenAiResponses => {
            req.stream.unwrap_or(false)
        }
        _ => false,
    };
    let call = admitted.into_call(model, streams).await;
    match gen {
        Gen::OllamaChat => ollama::chat(call, &req, streams),
        Gen::OllamaGenerate => ollama::generate(call, &req, streams),
        Gen::OllamaEmbed => ollama::embed(call, &req),
        Gen::OllamaEmbeddings => ollama::embeddings(call, &req),
        Gen::OpenAiChat => openai::chat(call, &req, streams),
        Gen::OpenAiCompletions => openai::completions(call, &req, streams),
        Gen::OpenAiEmbeddings => openai::embeddings(call, &req),
        Gen::OpenAiResponses => responses::responses(call, &req, streams),
    }
}

/// `/_mock/*`: lets a test drive a mock running in another process.
async fn control(st: &Arc<Shared>, method: &Method, what: &str, body: Body) -> Response {
    match (method, what) {
        (&Method::GET, "stats") => {
            let body = serde_json::to_vec(&st.snapshot()).unwrap_or_default();
            respond(StatusCode::OK, OPENAI_JSON, body)
        }
        (&Method::POST, "script") => {
            let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
                Ok(b) => b,
                Err(e) => return ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            match serde_json::from_slice::<Vec<crate::Scripted>>(&bytes) {
                Ok(replies) => {
                    st.script.push(replies);
                    respond(StatusCode::NO_CONTENT, OPENAI_JSON, Body::empty())
                }
                Err(e) => ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        (&Method::POST, "faults") | (&Method::POST, "models") | (&Method::POST, "keys") => {
            let bytes = match axum::body::to_bytes(body, BODY_LIMIT).await {
                Ok(b) => b,
                Err(e) => return ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            let result = match what {
                "faults" => parse_or_default::<Faults>(&bytes).map(|f| st.set_faults(f)),
                "keys" => parse_or_default::<KeyRules>(&bytes).map(|k| st.set_keys(k)),
                _ => serde_json::from_slice::<Vec<String>>(&bytes).map(|m| st.set_models(m)),
            };
            match result {
                Ok(()) => respond(StatusCode::NO_CONTENT, OPENAI_JSON, Body::empty()),
                Err(e) => ollama_error(StatusCode::BAD_REQUEST, &e.to_string()),
            }
        }
        _ => not_found_text(),
    }
}

fn parse_or_default<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> serde_json::Result<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        serde_json::from_slice(bytes)
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme is case-insensitive).
fn bearer(h: &str) -> Option<&str> {
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}
