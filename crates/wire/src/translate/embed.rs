//! Embeddings ⇄ canonical for OpenAI `/v1/embeddings`, Ollama `/api/embed` and `/api/embeddings`, and Gemini `:embedContent` / `:batchEmbedContents`.
//!
//! Every dialect has `decode_X_request`, `encode_X_request`, `decode_X_response` and
//! `encode_X_response`, X being `openai`, `ollama` (`/api/embed`), `ollama_legacy` (`/api/embeddings`),
//! `gemini` (`:embedContent`) or `gemini_batch` (`:batchEmbedContents`).
//!
//! - OpenAI token-array inputs cannot be translated (another dialect takes text) and are rejected.
//!   A decoded OpenAI request returns its `encoding_format` so the answer can be written in it;
//!   encoded OpenAI requests always ask for floats.
//! - Ignored on decode: OpenAI `user`; Ollama `truncate`, `options`, `keep_alive`; Gemini `taskType`
//!   and `title` (hints that canonical has no field for).
//! - Gemini: the model is in the URL; a `model` in the body (`models/x`) is read without its prefix,
//!   else left empty for the gateway. Several text parts of one `content` are one input, joined by
//!   newlines. Gemini reports no token counts (they decode as 0).
//! - Vectors are `f32`, written in their shortest exact decimal form.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::{EmbedRequest, EmbedResponse, TranslateError};

/// OpenAI's `encoding_format`: how the client wants the vectors written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncodingFormat {
    #[default]
    Float,
    /// Little-endian `f32`s, base64-encoded.
    Base64,
}

fn bad(field: impl Into<String>, message: impl Into<String>) -> TranslateError {
    TranslateError::new(field, message)
}

fn parse(body: &[u8]) -> Result<Value, TranslateError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad("", format!("body is not valid JSON: {e}")))?;
    if let Some(e) = v.get("error") {
        let msg = match e {
            Value::String(s) => s.clone(),
            other => other
                .get("message")
                .and_then(Value::as_str)
                .map_or_else(|| other.to_string(), str::to_string),
        };
        return Err(bad("", format!("upstream error: {msg}")));
    }
    if !v.is_object() {
        return Err(bad("", "body is not a JSON object"));
    }
    Ok(v)
}

/// A field read by its camelCase or snake_case name (Gemini clients send either); null counts as absent.
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel)
        .filter(|x| !x.is_null())
        .or_else(|| v.get(snake).filter(|x| !x.is_null()))
}

fn opt_str<'a>(v: &'a Value, key: &str, path: &str) -> Result<Option<&'a str>, TranslateError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(path, "expected a string")),
    }
}

fn opt_u32(v: Option<&Value>, path: &str) -> Result<Option<u32>, TranslateError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(path, "expected a non-negative integer")),
    }
}

fn to_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

/// A JSON array of numbers → a vector.
fn vector(v: &Value, path: &str) -> Result<Vec<f32>, TranslateError> {
    let Value::Array(a) = v else {
        return Err(bad(path, "expected an array of numbers"));
    };
    a.iter()
        .enumerate()
        .map(|(i, x)| {
            x.as_f64()
                .map(|f| f as f32)
                .ok_or_else(|| bad(format!("{path}[{i}]"), "expected a number"))
        })
        .collect()
}

/// `input` (or `prompt`) as a list of texts: a string or an array of strings.
fn texts(v: Option<&Value>, path: &str) -> Result<Vec<String>, TranslateError> {
    match v {
        None | Some(Value::Null) => Err(bad(path, "missing required field")),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.is_empty() => Err(bad(path, "must not be empty")),
        Some(Value::Array(a)) => a
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Value::String(s) => Ok(s.clone()),
                Value::Number(_) | Value::Array(_) => Err(bad(
                    path,
                    "token arrays cannot be translated; send the input as text",
                )),
                _ => Err(bad(format!("{path}[{i}]"), "expected a string")),
            })
            .collect(),
        Some(_) => Err(bad(path, "expected a string or an array of strings")),
    }
}

// ---------------------------------------------------------------------------------------------
// base64 (standard alphabet, padded), for OpenAI's `encoding_format: "base64"`

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (k, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if k <= chunk.len() {
                out.push(char::from(B64[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            b'=' | b'\n' | b'\r' | b' ' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xFF) as u8);
        }
    }
    Some(out)
}

fn floats_to_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    base64_encode(&bytes)
}

fn base64_to_floats(text: &str, path: &str) -> Result<Vec<f32>, TranslateError> {
    let bytes = base64_decode(text).ok_or_else(|| bad(path, "invalid base64"))?;
    if bytes.len() % 4 != 0 {
        return Err(bad(path, "base64 data is not a whole number of f32s"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

// ---------------------------------------------------------------------------------------------
// OpenAI /v1/embeddings

/// OpenAI request → canonical, with the `encoding_format` the answer must use.
pub fn decode_openai_request(
    body: &[u8],
) -> Result<(EmbedRequest, EncodingFormat), TranslateError> {
    let v = parse(body)?;
    let format = match opt_str(&v, "encoding_format", "encoding_format")? {
        None | Some("float") => EncodingFormat::Float,
        Some("base64") => EncodingFormat::Base64,
        Some(other) => {
            return Err(bad(
                "encoding_format",
                format!("unknown encoding format `{other}` (expected float or base64)"),
            ))
        }
    };
    let req = EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: texts(v.get("input"), "input")?,
        dimensions: opt_u32(v.get("dimensions"), "dimensions")?,
    };
    Ok((req, format))
}

pub fn encode_openai_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let mut body = json!({
        "model": req.model,
        "input": req.inputs,
        "encoding_format": "float",
    });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("dimensions".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_openai_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(data)) = v.get("data") else {
        return Err(bad("data", "expected an array"));
    };
    let mut indexed: Vec<(u64, Vec<f32>)> = Vec::with_capacity(data.len());
    for (i, d) in data.iter().enumerate() {
        let path = format!("data[{i}].embedding");
        let vec = match d.get("embedding") {
            Some(Value::String(s)) => base64_to_floats(s, &path)?,
            Some(e) => vector(e, &path)?,
            None => return Err(bad(path, "missing required field")),
        };
        let index = d.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
        indexed.push((index, vec));
    }
    indexed.sort_by_key(|(i, _)| *i);
    Ok(EmbedResponse {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        vectors: indexed.into_iter().map(|(_, v)| v).collect(),
        input_tokens: v
            .get("usage")
            .and_then(|u| u.get("prompt_tokens"))
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

#[derive(Serialize)]
#[serde(untagged)]
enum OpenAiVector<'a> {
    Float(&'a [f32]),
    Base64(String),
}

#[derive(Serialize)]
struct OpenAiDatum<'a> {
    object: &'static str,
    index: usize,
    embedding: OpenAiVector<'a>,
}

#[derive(Serialize)]
struct OpenAiUsage {
    prompt_tokens: u64,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OpenAiEmbedResponse<'a> {
    object: &'static str,
    data: Vec<OpenAiDatum<'a>>,
    model: &'a str,
    usage: OpenAiUsage,
}

pub fn encode_openai_response(resp: &EmbedResponse, format: EncodingFormat) -> Vec<u8> {
    let data = resp
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| OpenAiDatum {
            object: "embedding",
            index,
            embedding: match format {
                EncodingFormat::Float => OpenAiVector::Float(v),
                EncodingFormat::Base64 => OpenAiVector::Base64(floats_to_base64(v)),
            },
        })
        .collect();
    to_bytes(&OpenAiEmbedResponse {
        object: "list",
        data,
        model: &resp.model,
        usage: OpenAiUsage {
            prompt_tokens: resp.input_tokens,
            total_tokens: resp.input_tokens,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Ollama /api/embed

pub fn decode_ollama_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    Ok(EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: texts(v.get("input"), "input")?,
        dimensions: opt_u32(v.get("dimensions"), "dimensions")?,
    })
}

pub fn encode_ollama_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let mut body = json!({ "model": req.model, "input": req.inputs });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("dimensions".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_ollama_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(list)) = v.get("embeddings") else {
        return Err(bad("embeddings", "expected an array"));
    };
    Ok(EmbedResponse {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        vectors: list
            .iter()
            .enumerate()
            .map(|(i, e)| vector(e, &format!("embeddings[{i}]")))
            .collect::<Result<_, _>>()?,
        input_tokens: v
            .get("prompt_eval_count")
            .and_then(Value::as_u64)
            .unwrap_or(0),
    })
}

#[derive(Serialize)]
struct OllamaEmbedResponse<'a> {
    model: &'a str,
    embeddings: &'a [Vec<f32>],
    total_duration: u64,
    load_duration: u64,
    prompt_eval_count: u64,
}

pub fn encode_ollama_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&OllamaEmbedResponse {
        model: &resp.model,
        embeddings: &resp.vectors,
        total_duration: 0,
        load_duration: 0,
        prompt_eval_count: resp.input_tokens,
    })
}

// ---------------------------------------------------------------------------------------------
// Ollama /api/embeddings (the older, one-prompt call)

pub fn decode_ollama_legacy_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let prompt =
        opt_str(&v, "prompt", "prompt")?.ok_or_else(|| bad("prompt", "missing required field"))?;
    Ok(EmbedRequest {
        model: opt_str(&v, "model", "model")?
            .unwrap_or_default()
            .to_string(),
        inputs: vec![prompt.to_string()],
        dimensions: None,
    })
}

pub fn encode_ollama_legacy_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    let [prompt] = req.inputs.as_slice() else {
        return Err(bad(
            "input",
            "/api/embeddings takes exactly one prompt; use /api/embed for several",
        ));
    };
    if req.dimensions.is_some() {
        return Err(bad("dimensions", "/api/embeddings cannot set dimensions"));
    }
    Ok(to_bytes(&json!({ "model": req.model, "prompt": prompt })))
}

pub fn decode_ollama_legacy_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let e = v
        .get("embedding")
        .ok_or_else(|| bad("embedding", "missing required field"))?;
    Ok(EmbedResponse {
        model: String::new(),
        vectors: vec![vector(e, "embedding")?],
        input_tokens: 0,
    })
}

#[derive(Serialize)]
struct OllamaLegacyResponse<'a> {
    embedding: &'a [f32],
}

/// `{"embedding":[…]}` of the first vector (the call embeds one prompt).
pub fn encode_ollama_legacy_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&OllamaLegacyResponse {
        embedding: resp.vectors.first().map(Vec::as_slice).unwrap_or(&[]),
    })
}

// ---------------------------------------------------------------------------------------------
// Gemini :embedContent and :batchEmbedContents

fn gemini_model(v: &Value, path: &str) -> Result<String, TranslateError> {
    let m = opt_str(v, "model", path)?.unwrap_or_default();
    Ok(m.strip_prefix("models/").unwrap_or(m).to_string())
}

/// One `EmbedContentRequest` → (model, text, dimensions).
fn gemini_one(v: &Value, path: &str) -> Result<(String, String, Option<u32>), TranslateError> {
    if !v.is_object() {
        return Err(bad(path, "expected a JSON object"));
    }
    let at = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    let model = gemini_model(v, &at("model"))?;
    let content = field(v, "content", "content")
        .ok_or_else(|| bad(at("content"), "missing required field"))?;
    let parts = match content.get("parts") {
        Some(Value::Array(p)) => p,
        _ => return Err(bad(at("content.parts"), "expected an array")),
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, p) in parts.iter().enumerate() {
        match p.get("text") {
            Some(Value::String(t)) => texts.push(t.as_str()),
            _ => {
                return Err(bad(
                    at(&format!("content.parts[{j}]")),
                    "only text parts can be embedded through another dialect",
                ))
            }
        }
    }
    let dims = opt_u32(
        field(v, "outputDimensionality", "output_dimensionality"),
        &at("outputDimensionality"),
    )?;
    Ok((model, texts.join("\n"), dims))
}

pub fn decode_gemini_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let (model, text, dimensions) = gemini_one(&v, "")?;
    Ok(EmbedRequest {
        model,
        inputs: vec![text],
        dimensions,
    })
}

pub fn encode_gemini_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    let [text] = req.inputs.as_slice() else {
        return Err(bad(
            "input",
            ":embedContent takes exactly one input; use :batchEmbedContents for several",
        ));
    };
    let mut body = json!({ "content": { "parts": [{ "text": text }] } });
    if let (Some(d), Some(m)) = (req.dimensions, body.as_object_mut()) {
        m.insert("outputDimensionality".to_string(), json!(d));
    }
    Ok(to_bytes(&body))
}

pub fn decode_gemini_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let values = v
        .get("embedding")
        .and_then(|e| e.get("values"))
        .ok_or_else(|| bad("embedding.values", "missing required field"))?;
    Ok(EmbedResponse {
        model: String::new(),
        vectors: vec![vector(values, "embedding.values")?],
        input_tokens: 0,
    })
}

#[derive(Serialize)]
struct GeminiValues<'a> {
    values: &'a [f32],
}

#[derive(Serialize)]
struct GeminiEmbedResponse<'a> {
    embedding: GeminiValues<'a>,
}

pub fn encode_gemini_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&GeminiEmbedResponse {
        embedding: GeminiValues {
            values: resp.vectors.first().map(Vec::as_slice).unwrap_or(&[]),
        },
    })
}

pub fn decode_gemini_batch_request(body: &[u8]) -> Result<EmbedRequest, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(requests)) = v.get("requests") else {
        return Err(bad("requests", "expected an array"));
    };
    if requests.is_empty() {
        return Err(bad("requests", "must not be empty"));
    }
    let mut req = EmbedRequest::default();
    for (i, r) in requests.iter().enumerate() {
        let path = format!("requests[{i}]");
        let (model, text, dims) = gemini_one(r, &path)?;
        if i == 0 {
            req.model = model;
            req.dimensions = dims;
        } else if dims != req.dimensions {
            return Err(bad(
                format!("{path}.outputDimensionality"),
                "every request of a batch must ask for the same dimensions",
            ));
        } else if !model.is_empty() && !req.model.is_empty() && model != req.model {
            return Err(bad(
                format!("{path}.model"),
                "every request of a batch must name the same model",
            ));
        }
        req.inputs.push(text);
    }
    Ok(req)
}

pub fn encode_gemini_batch_request(req: &EmbedRequest) -> Result<Vec<u8>, TranslateError> {
    if req.inputs.is_empty() {
        return Err(bad("input", "must not be empty"));
    }
    let model = format!("models/{}", req.model);
    let requests: Vec<Value> = req
        .inputs
        .iter()
        .map(|text| {
            let mut r = json!({ "model": model, "content": { "parts": [{ "text": text }] } });
            if let (Some(d), Some(m)) = (req.dimensions, r.as_object_mut()) {
                m.insert("outputDimensionality".to_string(), json!(d));
            }
            r
        })
        .collect();
    Ok(to_bytes(&json!({ "requests": requests })))
}

pub fn decode_gemini_batch_response(body: &[u8]) -> Result<EmbedResponse, TranslateError> {
    let v = parse(body)?;
    let Some(Value::Array(list)) = v.get("embeddings") else {
        return Err(bad("embeddings", "expected an array"));
    };
    Ok(EmbedResponse {
        model: String::new(),
        vectors: list
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let path = format!("embeddings[{i}].values");
                vector(
                    e.get("values")
                        .ok_or_else(|| bad(path.clone(), "missing required field"))?,
                    &path,
                )
            })
            .collect::<Result<_, _>>()?,
        input_tokens: 0,
    })
}

#[derive(Serialize)]
struct GeminiBatchResponse<'a> {
    embeddings: Vec<GeminiValues<'a>>,
}

pub fn encode_gemini_batch_response(resp: &EmbedResponse) -> Vec<u8> {
    to_bytes(&GeminiBatchResponse {
        embeddings: resp
            .vectors
            .iter()
            .map(|v| GeminiValues { values: v })
            .collect(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    // Shaped after the public API references' examples.
    const OPENAI_RESPONSE: &str = r#"{
      "object": "list",
      "data": [
        {"object": "embedding", "embedding": [0.5, -0.25, 0.125], "index": 1},
        {"object": "embedding", "embedding": [0.0023064255, -0.009327292, -0.0028842222], "index": 0}
      ],
      "model": "text-embedding-3-small",
      "usage": {"prompt_tokens": 8, "total_tokens": 8}
    }"#;
    const OLLAMA_EMBED_RESPONSE: &str = r#"{
      "model": "all-minilm",
      "embeddings": [[0.010071029, -0.0017594862, 0.05007221], [-0.0098027075, 0.06042469, 0.025453766]],
      "total_duration": 14143917,
      "load_duration": 1019500,
      "prompt_eval_count": 8
    }"#;
    const OLLAMA_LEGACY_RESPONSE: &str =
        r#"{"embedding": [0.5670403838157654, 0.009260174818336964, 0.23178744316101074]}"#;
    const GEMINI_REQUEST: &str = r#"{"model": "models/text-embedding-004", "content": {"parts": [{"text": "What is the meaning of life?"}]}, "taskType": "RETRIEVAL_QUERY", "outputDimensionality": 256}"#;
    const GEMINI_BATCH_REQUEST: &str = r#"{"requests": [
      {"model": "models/text-embedding-004", "content": {"parts": [{"text": "What is the meaning of life?"}]}},
      {"model": "models/text-embedding-004", "content": {"parts": [{"text": "How much wood would a woodchuck chuck?"}]}}
    ]}"#;
    const GEMINI_RESPONSE: &str =
        r#"{"embedding": {"values": [0.013168523, -0.008711934, -0.046782676]}}"#;
    const GEMINI_BATCH_RESPONSE: &str =
        r#"{"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, 0.4]}]}"#;

    fn resp() -> EmbedResponse {
        EmbedResponse {
            model: "m".into(),
            vectors: vec![vec![1.0, -0.5, 0.1], vec![0.25, 3.5, -2.0]],
            input_tokens: 6,
        }
    }

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn base64_known_values_and_round_trip() {
        assert_eq!(floats_to_base64(&[1.0]), "AACAPw==");
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(
                base64_decode(&base64_encode(s.as_bytes())).unwrap(),
                s.as_bytes()
            );
        }
        let v = vec![0.1f32, -3.25, f32::MAX, 0.0];
        assert_eq!(base64_to_floats(&floats_to_base64(&v), "x").unwrap(), v);
        assert!(base64_decode("a*b").is_none());
        assert!(base64_to_floats("Zg==", "x").is_err());
    }

    #[test]
    fn openai() {
        let (req, fmt) = decode_openai_request(
            br#"{"model":"text-embedding-3-small","input":"The food was delicious","encoding_format":"base64","dimensions":256,"user":"u"}"#,
        )
        .unwrap();
        assert_eq!(fmt, EncodingFormat::Base64);
        assert_eq!(req.model, "text-embedding-3-small");
        assert_eq!(req.inputs, ["The food was delicious"]);
        assert_eq!(req.dimensions, Some(256));
        let (req, fmt) = decode_openai_request(br#"{"model":"m","input":["a","b"]}"#).unwrap();
        assert_eq!(fmt, EncodingFormat::Float);
        assert_eq!(req.inputs, ["a", "b"]);

        for (body, field) in [
            (r#"{"model":"m","input":[1,2,3]}"#, "input"),
            (r#"{"model":"m","input":[[1,2],[3]]}"#, "input"),
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m"}"#, "input"),
            (r#"{"model":"m","input":["a",null]}"#, "input[1]"),
            (
                r#"{"model":"m","input":"a","encoding_format":"int8"}"#,
                "encoding_format",
            ),
            (r#"{"model":"m","input":"a","dimensions":-1}"#, "dimensions"),
        ] {
            assert_eq!(
                decode_openai_request(body.as_bytes()).unwrap_err().field,
                field,
                "{body}"
            );
        }

        let v = json_of(&encode_openai_request(&req).unwrap());
        assert_eq!(
            v,
            json!({"model": "m", "input": ["a", "b"], "encoding_format": "float"})
        );

        let r = decode_openai_response(OPENAI_RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.model, "text-embedding-3-small");
        assert_eq!(r.input_tokens, 8);
        // Ordered by `index`.
        assert_eq!(r.vectors[0], [0.0023064255, -0.009327292, -0.0028842222]);
        assert_eq!(r.vectors[1], [0.5, -0.25, 0.125]);

        let float = encode_openai_response(&resp(), EncodingFormat::Float);
        let text = std::str::from_utf8(&float).unwrap();
        assert!(text.contains("[1.0,-0.5,0.1]"), "shortest f32 form: {text}");
        let v = json_of(&float);
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][1]["object"], "embedding");
        assert_eq!(v["data"][1]["index"], 1);
        assert_eq!(v["usage"], json!({"prompt_tokens": 6, "total_tokens": 6}));
        assert_eq!(decode_openai_response(&float).unwrap(), resp());

        let b64 = encode_openai_response(&resp(), EncodingFormat::Base64);
        let v = json_of(&b64);
        assert!(v["data"][0]["embedding"].is_string());
        assert_eq!(decode_openai_response(&b64).unwrap(), resp());
    }

    #[test]
    fn ollama() {
        let req = decode_ollama_request(br#"{"model":"all-minilm","input":["Why is the sky blue?","Why is the grass green?"],"truncate":true,"keep_alive":"5m"}"#).unwrap();
        assert_eq!(req.model, "all-minilm");
        assert_eq!(req.inputs.len(), 2);
        let req1 = decode_ollama_request(br#"{"model":"all-minilm","input":"one"}"#).unwrap();
        assert_eq!(req1.inputs, ["one"]);
        let back = decode_ollama_request(&encode_ollama_request(&req).unwrap()).unwrap();
        assert_eq!(back, req);

        let r = decode_ollama_response(OLLAMA_EMBED_RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.model, "all-minilm");
        assert_eq!(r.vectors.len(), 2);
        assert_eq!(r.vectors[1][1], 0.060_424_69);
        assert_eq!(r.input_tokens, 8);
        let v = json_of(&encode_ollama_response(&resp()));
        assert_eq!(v["prompt_eval_count"], 6);
        assert_eq!(
            decode_ollama_response(&encode_ollama_response(&resp())).unwrap(),
            resp()
        );

        let legacy = decode_ollama_legacy_request(
            br#"{"model":"all-minilm","prompt":"Here is an article about llamas..."}"#,
        )
        .unwrap();
        assert_eq!(legacy.inputs, ["Here is an article about llamas..."]);
        assert_eq!(
            json_of(&encode_ollama_legacy_request(&legacy).unwrap()),
            json!({"model": "all-minilm", "prompt": "Here is an article about llamas..."})
        );
        assert_eq!(
            encode_ollama_legacy_request(&req).unwrap_err().field,
            "input"
        );
        assert_eq!(
            decode_ollama_legacy_request(br#"{"model":"m"}"#)
                .unwrap_err()
                .field,
            "prompt"
        );
        let r = decode_ollama_legacy_response(OLLAMA_LEGACY_RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.vectors, [vec![0.567_040_4, 0.009_260_175, 0.231_787_44]]);
        let out = encode_ollama_legacy_response(&resp());
        assert_eq!(out, br#"{"embedding":[1.0,-0.5,0.1]}"#);
        assert!(decode_ollama_response(br#"{"error":"model not found"}"#)
            .unwrap_err()
            .message
            .contains("model not found"));
    }

    #[test]
    fn gemini() {
        let req = decode_gemini_request(GEMINI_REQUEST.as_bytes()).unwrap();
        assert_eq!(req.model, "text-embedding-004");
        assert_eq!(req.inputs, ["What is the meaning of life?"]);
        assert_eq!(req.dimensions, Some(256));
        let snake = decode_gemini_request(
            br#"{"content":{"parts":[{"text":"a"},{"text":"b"}]},"output_dimensionality":8}"#,
        )
        .unwrap();
        assert_eq!(snake.model, "");
        assert_eq!(snake.inputs, ["a\nb"]);
        assert_eq!(snake.dimensions, Some(8));
        let v = json_of(&encode_gemini_request(&req).unwrap());
        assert_eq!(
            v,
            json!({"content": {"parts": [{"text": "What is the meaning of life?"}]}, "outputDimensionality": 256})
        );
        let back = decode_gemini_request(&encode_gemini_request(&req).unwrap()).unwrap();
        assert_eq!(back.inputs, req.inputs);
        assert_eq!(
            decode_gemini_request(
                br#"{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA"}}]}}"#
            )
            .unwrap_err()
            .field,
            "content.parts[0]"
        );

        let batch = decode_gemini_batch_request(GEMINI_BATCH_REQUEST.as_bytes()).unwrap();
        assert_eq!(batch.model, "text-embedding-004");
        assert_eq!(
            batch.inputs,
            [
                "What is the meaning of life?",
                "How much wood would a woodchuck chuck?"
            ]
        );
        assert_eq!(encode_gemini_request(&batch).unwrap_err().field, "input");
        let v = json_of(&encode_gemini_batch_request(&batch).unwrap());
        assert_eq!(v["requests"][1]["model"], "models/text-embedding-004");
        assert_eq!(
            v["requests"][1]["content"]["parts"][0]["text"],
            "How much wood would a woodchuck chuck?"
        );
        assert_eq!(
            decode_gemini_batch_request(&encode_gemini_batch_request(&batch).unwrap()).unwrap(),
            batch
        );
        assert_eq!(
            decode_gemini_batch_request(br#"{"requests":[{"content":{"parts":[{"text":"a"}]},"outputDimensionality":4},{"content":{"parts":[{"text":"b"}]}}]}"#).unwrap_err().field,
            "requests[1].outputDimensionality"
        );

        let r = decode_gemini_response(GEMINI_RESPONSE.as_bytes()).unwrap();
        assert_eq!(
            r.vectors,
            [vec![0.013_168_523, -0.008_711_934, -0.046_782_676]]
        );
        let r = decode_gemini_batch_response(GEMINI_BATCH_RESPONSE.as_bytes()).unwrap();
        assert_eq!(r.vectors, [vec![0.1, 0.2], vec![0.3, 0.4]]);
        let one = EmbedResponse {
            vectors: vec![vec![0.5, 1.5]],
            ..EmbedResponse::default()
        };
        assert_eq!(
            json_of(&encode_gemini_response(&one)),
            json!({"embedding": {"values": [0.5, 1.5]}})
        );
        assert_eq!(
            decode_gemini_batch_response(&encode_gemini_batch_response(&resp()))
                .unwrap()
                .vectors,
            resp().vectors
        );
        assert!(decode_gemini_response(br#"{"error":{"code":400,"message":"bad"}}"#).is_err());
    }

    #[test]
    fn never_panics_on_truncated_or_garbage_input() {
        let samples = [
            OPENAI_RESPONSE,
            OLLAMA_EMBED_RESPONSE,
            OLLAMA_LEGACY_RESPONSE,
            GEMINI_REQUEST,
            GEMINI_BATCH_REQUEST,
            GEMINI_RESPONSE,
            GEMINI_BATCH_RESPONSE,
            r#"{"data":[{"embedding":"AACAPw=="}],"model":"m"}"#,
            r#"{"data":[{"embedding":[1,"x"]},5],"requests":[5],"embeddings":[5,{"values":5}],"embedding":{"values":[null]}}"#,
            "\u{0}\u{ffff}",
        ];
        for s in samples {
            let b = s.as_bytes();
            for end in 0..=b.len() {
                let p = &b[..end];
                let _ = decode_openai_request(p);
                let _ = decode_openai_response(p);
                let _ = decode_ollama_request(p);
                let _ = decode_ollama_response(p);
                let _ = decode_ollama_legacy_request(p);
                let _ = decode_ollama_legacy_response(p);
                let _ = decode_gemini_request(p);
                let _ = decode_gemini_response(p);
                let _ = decode_gemini_batch_request(p);
                let _ = decode_gemini_batch_response(p);
            }
        }
    }
}
