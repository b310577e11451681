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
//!   anything else as `{"result": …}`; a failed tool's result (`Message::is_error`) as
//!   `{"error": …}`. Decoding unwraps a lone `result` again, and a lone `error` as a failed result.
//! - System instructions are top-level only: a mid-conversation system message (`Role::System`)
//!   is sent in its place as a user turn `<system>\n…\n</system>` (`system_turn_text`). Tools'
//!   `strict` has no Gemini field and is not sent.
//! - Schemas: `parameters` / `responseSchema` take an OpenAPI subset (upper-case `type`, `nullable`).
//!   A JSON Schema that fits it (after dropping `$schema`, boolean `additionalProperties`, unsupported
//!   `format`s and other pure annotations) is sent there; any other goes whole as `parametersJsonSchema` /
//!   `responseJsonSchema`. Decoding turns the subset back into plain JSON Schema.
//! - A streamed tool call is written as one `functionCall` part once the next different event (or the
//!   end) shows its arguments are complete; text is never held. `finishReason` is held until usage
//!   arrives (or the stream ends) so that the last chunk carries both, as Gemini's does.

pub mod embed;
mod request_decode;
mod request_encode;
mod response;
pub(crate) mod signature;
pub use response::retry_delay;
pub use signature::strip_from_body as strip_signatures_from_body;
mod stream_decode;
mod stream_encode;

#[cfg(test)]
mod tests;

use serde_json::{json, Map, Value};

use crate::canonical::{
    system_turn_text, ChatRequest, ChatResponse, Codec, FinishReason, Op, Role, StreamDecoder,
    StreamEncoder, ToolCall, TranslateError,
};
use crate::ids::now_secs;
use crate::json::{arguments_value, bad, Fields};
use crate::stream::decoder::Framed;

use request_decode::{decode_contents, decode_generation_config, decode_system, decode_tools};
use request_encode::{
    encode_function_response, encode_generation_config, encode_parts, encode_tools,
};
use response::{
    answer_part, blocked, candidate_parts, chunk_json, decode_usage, error_of, finish_reason_of,
    id_token, map_finish, AnswerPart,
};
use stream_decode::GeminiStreamDecoder;
use stream_encode::GeminiStreamEncoder;

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

/// Rejects any field of `f` outside `known` and `ignored`, naming it.
pub(super) fn only(f: &Fields, known: &[&str], ignored: &[&str]) -> Result<(), TranslateError> {
    match f.unknown(known, ignored) {
        Some(at) => Err(bad(
            at,
            "this Gemini field cannot be translated to another dialect",
        )),
        None => Ok(()),
    }
}

impl Codec for GeminiCodec {
    fn decode_request(&self, op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        if op == Op::Completion {
            return Err(bad("", "Gemini has no legacy completion call"));
        }
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| bad("", format!("request body is not valid JSON: {e}")))?;
        let top = Fields::any_case(&v, "")?;
        only(
            &top,
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
        req.refuse_ollama_extras("Gemini")?;
        let mut contents: Vec<(&'static str, Vec<Value>)> = Vec::new();
        for (i, m) in req.messages.iter().enumerate() {
            let (role, parts) = match m.role {
                Role::User => ("user", encode_parts(m, i)?),
                Role::Assistant => ("model", encode_parts(m, i)?),
                Role::Tool => ("user", vec![encode_function_response(req, m, i)?]),
                Role::System => ("user", vec![json!({ "text": system_turn_text(m) })]),
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
                Some(AnswerPart::Call {
                    id,
                    name,
                    args,
                    signature,
                }) => {
                    let n = resp.tool_calls.len();
                    let id = id.map_or_else(|| format!("call_{token}_{n}"), str::to_string);
                    resp.tool_calls.push(ToolCall {
                        id: signature::with_signature(&id, signature),
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
            parts.push(request_encode::call_part(
                &c.id,
                &c.name,
                arguments_value(&c.arguments),
            ));
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
        Box::new(Framed::<GeminiStreamDecoder>::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(GeminiStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: Value = serde_json::from_slice(body).ok()?;
        error_of(&v)
    }
}
