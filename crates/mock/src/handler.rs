//! Request entry point: bookkeeping, auth, fault injection, body parsing and dispatch to the two dialects.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::state::{InFlight, Shared};
use crate::stream::Pace;
use crate::{ollama, openai, Faults, KeyRules};

/// Largest request body accepted; far above any real prompt the tests send.
const BODY_LIMIT: usize = 64 << 20;

pub(crate) const OLLAMA_JSON: &str = "application/json; charset=utf-8";
pub(crate) const OPENAI_JSON: &str = "application/json";

static X_MOCK_NODE: HeaderName = HeaderName::from_static("x-mock-node");

/// Which API family a path belongs to; decides error body shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Ollama,
    OpenAi,
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

/// Which generation endpoint a POST hit.
#[derive(Clone, Copy)]
enum Gen {
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
    OllamaEmbeddings,
    OpenAiChat,
    OpenAiCompletions,
    OpenAiEmbeddings,
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
    st.note_request(path, parts.headers.get(header::AUTHORIZATION));
    let guard = InFlight::new(st);
    let dialect = if path.starts_with("/v1/") {
        Dialect::OpenAi
    } else {
        Dialect::Ollama
    };

    let rules = st.keys();
    if rules.enforced() && (path.starts_with("/v1/") || path.starts_with("/api/")) {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        st.note_key(given);
        if rules.revoked.iter().any(|k| k == given) {
            return unauthorized(dialect, given);
        }
        if rules.limited.iter().any(|k| k == given) {
            let limited = Faults {
                fail_status: 429,
                retry_after: Some(st.faults().retry_after.unwrap_or(20)),
                ..Faults::default()
            };
            return injected_failure(dialect, &limited);
        }
        if !rules.valid.iter().any(|k| k == given) {
            return unauthorized(dialect, given);
        }
    }

    let bytes = if method == Method::POST {
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

    let gen = match (method, path) {
        (&Method::GET | &Method::HEAD, "/") => return ollama::root(method == Method::HEAD),
        (&Method::GET, "/api/version") => return ollama::version(),
        (&Method::GET, "/api/tags") => return ollama::tags(st),
        (&Method::GET, "/api/ps") => return ollama::ps(st),
        (&Method::POST, "/api/show") => return ollama::show(st, &bytes),
        (&Method::GET, "/v1/models") => return openai::models(st),
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            return openai::model(st, &p["/v1/models/".len()..]);
        }
        (&Method::POST, "/api/chat") => Gen::OllamaChat,
        (&Method::POST, "/api/generate") => Gen::OllamaGenerate,
        (&Method::POST, "/api/embed") => Gen::OllamaEmbed,
        (&Method::POST, "/api/embeddings") => Gen::OllamaEmbeddings,
        (&Method::POST, "/v1/chat/completions") => Gen::OpenAiChat,
        (&Method::POST, "/v1/completions") => Gen::OpenAiCompletions,
        (&Method::POST, "/v1/embeddings") => Gen::OpenAiEmbeddings,
        _ => return not_routed(dialect, method, path),
    };
    generation(st, dialect, gen, &bytes, guard).await
}

/// Shared prologue of every generation call: count, inject faults, parse, resolve the model.
async fn generation(
    st: &Arc<Shared>,
    dialect: Dialect,
    gen: Gen,
    bytes: &Bytes,
    guard: InFlight,
) -> Response {
    let start = Instant::now();
    let faults = st.faults();
    let fail = st.note_generation(&faults);
    if faults.hang {
        // Never answers; hyper drops this future when the connection closes or the server stops.
        std::future::pending::<()>().await;
    }
    if fail {
        return injected_failure(dialect, &faults);
    }
    let req: GenReq = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => return bad_request(dialect, &e.to_string()),
    };
    let Some(model) = req.model.clone().filter(|m| !m.is_empty()) else {
        return missing_model(dialect);
    };
    let Some(canonical) = st.resolve(&model) else {
        return model_not_found(dialect, &model);
    };
    st.mark_loaded(&canonical);

    let streams = match gen {
        Gen::OllamaChat | Gen::OllamaGenerate => req.stream.unwrap_or(true),
        Gen::OpenAiChat | Gen::OpenAiCompletions => req.stream.unwrap_or(false),
        _ => false,
    };
    // Streams sleep for ttft before their first frame; whole replies sleep here instead.
    if !streams && !st.ttft.is_zero() {
        tokio::time::sleep(st.ttft).await;
    }
    let call = Call {
        st: st.clone(),
        guard,
        faults,
        start,
        model,
    };
    match gen {
        Gen::OllamaChat => ollama::chat(call, &req, streams),
        Gen::OllamaGenerate => ollama::generate(call, &req, streams),
        Gen::OllamaEmbed => ollama::embed(call, &req),
        Gen::OllamaEmbeddings => ollama::embeddings(call, &req),
        Gen::OpenAiChat => openai::chat(call, &req, streams),
        Gen::OpenAiCompletions => openai::completions(call, &req, streams),
        Gen::OpenAiEmbeddings => openai::embeddings(call, &req),
    }
}

/// `/_mock/*`: lets a test drive a mock running in another process.
async fn control(st: &Arc<Shared>, method: &Method, what: &str, body: Body) -> Response {
    match (method, what) {
        (&Method::GET, "stats") => {
            let body = serde_json::to_vec(&st.snapshot()).unwrap_or_default();
            respond(StatusCode::OK, OPENAI_JSON, body)
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

pub(crate) fn respond(status: StatusCode, ctype: &'static str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

pub(crate) fn ok_json(dialect: Dialect, body: impl Into<Body>) -> Response {
    let ctype = match dialect {
        Dialect::Ollama => OLLAMA_JSON,
        Dialect::OpenAi => OPENAI_JSON,
    };
    respond(StatusCode::OK, ctype, body)
}

pub(crate) fn ollama_error(status: StatusCode, msg: &str) -> Response {
    let body = serde_json::to_vec(&json!({ "error": msg })).unwrap_or_default();
    respond(status, OLLAMA_JSON, body)
}

pub(crate) fn openai_error(
    status: StatusCode,
    msg: &str,
    kind: &str,
    param: Option<&str>,
    code: Option<&str>,
) -> Response {
    let body = json!({"error": {"message": msg, "type": kind, "param": param, "code": code}});
    respond(
        status,
        OPENAI_JSON,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// What Go's default mux (and so Ollama) says for an unknown route.
fn not_found_text() -> Response {
    respond(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        "404 page not found",
    )
}

fn not_routed(dialect: Dialect, method: &Method, path: &str) -> Response {
    match dialect {
        Dialect::Ollama => not_found_text(),
        Dialect::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("Invalid URL ({method} {path})"),
            "invalid_request_error",
            None,
            None,
        ),
    }
}

fn unauthorized(dialect: Dialect, given: &str) -> Response {
    // OpenAI shows only the ends of a wrong key.
    let shown = if given.len() > 8 && given.is_ascii() {
        format!("{}***{}", &given[..3], &given[given.len() - 4..])
    } else {
        given.to_owned()
    };
    let msg = format!(
        "Incorrect API key provided: {shown}. You can find your API key at https://platform.openai.com/account/api-keys."
    );
    match dialect {
        Dialect::OpenAi => openai_error(
            StatusCode::UNAUTHORIZED,
            &msg,
            "invalid_request_error",
            None,
            Some("invalid_api_key"),
        ),
        Dialect::Ollama => ollama_error(StatusCode::UNAUTHORIZED, &msg),
    }
}

pub(crate) fn bad_request(dialect: Dialect, detail: &str) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(StatusCode::BAD_REQUEST, detail),
        Dialect::OpenAi => openai_error(
            StatusCode::BAD_REQUEST,
            &format!("We could not parse the JSON body of your request. ({detail})"),
            "invalid_request_error",
            None,
            None,
        ),
    }
}

fn missing_model(dialect: Dialect) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(StatusCode::BAD_REQUEST, "model is required"),
        Dialect::OpenAi => openai_error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
            None,
        ),
    }
}

pub(crate) fn model_not_found(dialect: Dialect, model: &str) -> Response {
    match dialect {
        Dialect::Ollama => ollama_error(
            StatusCode::NOT_FOUND,
            &format!("model \"{model}\" not found, try pulling it first"),
        ),
        Dialect::OpenAi => openai_error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            None,
            Some("model_not_found"),
        ),
    }
}

fn injected_failure(dialect: Dialect, faults: &Faults) -> Response {
    let status = StatusCode::from_u16(faults.fail_status)
        .ok()
        .filter(|s| s.as_u16() >= 100 && faults.fail_status != 0)
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = match dialect {
        Dialect::Ollama => ollama_error(status, &format!("mock: injected failure ({status})")),
        Dialect::OpenAi if status == StatusCode::TOO_MANY_REQUESTS => openai_error(
            status,
            "Rate limit reached (mock: injected failure).",
            "requests",
            None,
            Some("rate_limit_exceeded"),
        ),
        Dialect::OpenAi => openai_error(
            status,
            &format!("The server had an error while processing your request. (mock: injected failure, {status})"),
            "server_error",
            None,
            None,
        ),
    };
    if let Some(secs) = faults.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}
