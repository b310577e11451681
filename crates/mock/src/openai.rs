//! OpenAI API (`/v1/*`): models, chat completions, legacy completions and embeddings, streamed as SSE like OpenAI does.

use std::time::UNIX_EPOCH;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use crate::handler::{Call, Dialect, GenReq};
use crate::ollama::{full_text, push_token, TOOL_ARGS};
use crate::reply::{model_not_found, ok_json, openai_error};
use crate::state::Shared;
use crate::stream::{streaming, Pace};
use crate::util::{self, js, unix_now};

const SSE: &str = "text/event-stream";
const DONE: &str = "data: [DONE]\n\n";
/// How OpenAI streams `TOOL_ARGS`: a few fragments that only form JSON once concatenated.
const TOOL_FRAGMENTS: [&str; 5] = ["{\"", "location", "\":\"", "Paris", "\"}"];

fn created_of(st: &Shared) -> u64 {
    st.started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn model_object(st: &Shared, id: &str) -> Value {
    json!({"id": id, "object": "model", "created": created_of(st), "owned_by": st.name})
}

pub(crate) fn models(st: &Shared) -> Response {
    let data: Vec<Value> = st.models().iter().map(|m| model_object(st, m)).collect();
    ok_json(
        Dialect::OpenAi,
        json!({"object": "list", "data": data}).to_string(),
    )
}

pub(crate) fn model(st: &Shared, id: &str) -> Response {
    match st.resolve(id) {
        Some(m) => ok_json(Dialect::OpenAi, model_object(st, &m).to_string()),
        None => model_not_found(Dialect::OpenAi, id),
    }
}

fn usage(prompt: u64, completion: u64) -> String {
    format!(
        r#"{{"prompt_tokens":{prompt},"completion_tokens":{completion},"total_tokens":{}}}"#,
        prompt + completion
    )
}

fn include_usage(req: &GenReq) -> bool {
    req.stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false)
}

fn limit(req: &GenReq) -> Option<i64> {
    req.max_completion_tokens.or(req.max_tokens)
}

/// One streamed choice; `delta_or_text` is the already-encoded `"delta":…` or `"text":…` member.
fn choice(member: &str, finish: Option<&str>) -> String {
    match finish {
        Some(f) => format!(r#"{{"index":0,{member},"logprobs":null,"finish_reason":"{f}"}}"#),
        None => format!(r#"{{"index":0,{member},"logprobs":null,"finish_reason":null}}"#),
    }
}

/// Frame layout shared by both streaming endpoints: `body_frames` chunks from `body`, then the
/// finish chunk, the usage chunk when asked for, and `[DONE]`.
struct Sse {
    /// `data: {"id":…,"choices":[` — everything before the choices.
    head: String,
    include_usage: bool,
    body_frames: usize,
    finish: String,
    usage: String,
}

impl Sse {
    fn frame(&self, i: usize, body: impl FnOnce(usize) -> String) -> Option<String> {
        let wrap = |choice: String| {
            let tail = if self.include_usage {
                // OpenAI sends `"usage":null` on every chunk but the last when usage is requested.
                "],\"usage\":null}\n\n"
            } else {
                "]}\n\n"
            };
            let mut s = String::with_capacity(self.head.len() + choice.len() + tail.len());
            s.push_str(&self.head);
            s.push_str(&choice);
            s.push_str(tail);
            s
        };
        let after = i.checked_sub(self.body_frames);
        match after {
            None => Some(wrap(body(i))),
            Some(0) => Some(wrap(self.finish.clone())),
            Some(1) if self.include_usage => {
                Some(format!("{}],\"usage\":{}}}\n\n", self.head, self.usage))
            }
            Some(k) if k == 1 + usize::from(self.include_usage) => Some(DONE.to_owned()),
            _ => None,
        }
    }
}

pub(crate) fn chat(call: Call, req: &GenReq, streams: bool) -> Response {
    let st = call.st.clone();
    let prompt = util::messages_tokens(req.messages.as_deref().unwrap_or(&[]));
    let tool = req.tool_name();
    let (n, reason) = call.budget(limit(req));
    let id = format!("chatcmpl-{}", st.next_id(29));
    let call_id = format!("call_{}", st.next_id(24));
    let created = unix_now();
    let model = js(&call.model);
    let (completion, finish) = match tool {
        Some(_) => (TOOL_FRAGMENTS.len(), "tool_calls"),
        None => (n, reason),
    };
    let usage = usage(prompt, completion as u64);

    if !streams {
        let message = match &tool {
            Some(t) => format!(
                r#"{{"role":"assistant","content":null,"tool_calls":[{{"id":"{call_id}","type":"function","function":{{"name":{},"arguments":{}}}}}],"refusal":null}}"#,
                js(t),
                js(TOOL_ARGS)
            ),
            None => format!(
                r#"{{"role":"assistant","content":"{}","refusal":null}}"#,
                full_text(&st.name_json, n)
            ),
        };
        let body = format!(
            r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":{model},"system_fingerprint":"fp_mock","choices":[{{"index":0,"message":{message},"logprobs":null,"finish_reason":"{finish}"}}],"usage":{usage}}}"#
        );
        return ok_json(Dialect::OpenAi, body);
    }

    let sse = Sse {
        head: format!(
            r#"data: {{"id":"{id}","object":"chat.completion.chunk","created":{created},"model":{model},"system_fingerprint":"fp_mock","choices":["#
        ),
        include_usage: include_usage(req),
        // Role chunk first, then one chunk per token or argument fragment.
        body_frames: 1 + completion,
        finish: choice(r#""delta":{}"#, Some(finish)),
        usage,
    };
    let first = match &tool {
        Some(t) => format!(
            r#""delta":{{"role":"assistant","content":null,"tool_calls":[{{"index":0,"id":"{call_id}","type":"function","function":{{"name":{},"arguments":""}}}}],"refusal":null}}"#,
            js(t)
        ),
        None => r#""delta":{"role":"assistant","content":"","refusal":null}"#.to_owned(),
    };
    let is_tool = tool.is_some();
    // The usage chunk and `[DONE]` follow the finish chunk at once.
    let pace = Pace {
        unpaced_from: Some(sse.body_frames + 1),
        ..call.pace()
    };
    streaming(SSE, pace, call.guard, move |i| {
        sse.frame(i, |i| {
            if i == 0 {
                choice(&first, None)
            } else if is_tool {
                let frag = js(TOOL_FRAGMENTS[i - 1]);
                choice(
                    &format!(
                        r#""delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{frag}}}}}]}}"#
                    ),
                    None,
                )
            } else {
                let mut m = String::from(r#""delta":{"content":""#);
                push_token(&mut m, &st.name_json, i - 1);
                m.push_str("\"}");
                choice(&m, None)
            }
        })
    })
}

/// Prompt-token estimate for the legacy `prompt`: text, texts, token ids or lists of token ids.
fn legacy_prompt_tokens(prompt: Option<&Value>) -> u64 {
    fn one(v: &Value) -> u64 {
        match v {
            Value::String(s) => util::words(s),
            Value::Number(_) => 1,
            Value::Array(a) => a.iter().map(one).sum(),
            _ => 0,
        }
    }
    prompt.map_or(0, one).max(1)
}

pub(crate) fn completions(call: Call, req: &GenReq, streams: bool) -> Response {
    let st = call.st.clone();
    let prompt = legacy_prompt_tokens(req.prompt.as_ref());
    let (n, reason) = call.budget(limit(req));
    let id = format!("cmpl-{}", st.next_id(29));
    let created = unix_now();
    let model = js(&call.model);
    let usage = usage(prompt, n as u64);
    if !streams {
        let body = format!(
            r#"{{"id":"{id}","object":"text_completion","created":{created},"model":{model},"system_fingerprint":"fp_mock","choices":[{{"text":"{}","index":0,"logprobs":null,"finish_reason":"{reason}"}}],"usage":{usage}}}"#,
            full_text(&st.name_json, n)
        );
        return ok_json(Dialect::OpenAi, body);
    }
    let text_choice = |text: &str, finish: Option<&str>| {
        let member = format!(r#""text":"{text}""#);
        match finish {
            Some(f) => format!(r#"{{{member},"index":0,"logprobs":null,"finish_reason":"{f}"}}"#),
            None => format!(r#"{{{member},"index":0,"logprobs":null,"finish_reason":null}}"#),
        }
    };
    let sse = Sse {
        head: format!(
            r#"data: {{"id":"{id}","object":"text_completion","created":{created},"model":{model},"system_fingerprint":"fp_mock","choices":["#
        ),
        include_usage: include_usage(req),
        body_frames: n,
        finish: text_choice("", Some(reason)),
        usage,
    };
    let pace = Pace {
        unpaced_from: Some(sse.body_frames + 1),
        ..call.pace()
    };
    streaming(SSE, pace, call.guard, move |i| {
        sse.frame(i, |i| {
            let mut tok = String::new();
            push_token(&mut tok, &st.name_json, i);
            text_choice(&tok, None)
        })
    })
}

/// `input` as texts plus a token estimate: a string, strings, token ids or lists of token ids.
fn embedding_inputs(input: Option<&Value>) -> Option<(Vec<String>, u64)> {
    let ids = |a: &[Value]| -> Option<String> {
        let ids: Option<Vec<String>> = a
            .iter()
            .map(|v| v.as_u64().map(|n| n.to_string()))
            .collect();
        ids.map(|v| v.join(" "))
    };
    match input? {
        Value::String(s) => Some((vec![s.clone()], util::words(s))),
        Value::Array(a) if a.is_empty() => None,
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let texts: Vec<String> = a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            let tokens = texts.iter().map(|t| util::words(t)).sum();
            Some((texts, tokens))
        }
        Value::Array(a) if a.iter().all(Value::is_number) => Some((vec![ids(a)?], a.len() as u64)),
        Value::Array(a) => {
            let mut texts = Vec::with_capacity(a.len());
            let mut tokens = 0;
            for v in a {
                let inner = v.as_array()?;
                tokens += inner.len() as u64;
                texts.push(ids(inner)?);
            }
            Some((texts, tokens))
        }
        _ => None,
    }
}

pub(crate) fn embeddings(call: Call, req: &GenReq) -> Response {
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return openai_error(
                StatusCode::BAD_REQUEST,
                &format!("'{other}' is not one of ['float', 'base64'] - 'encoding_format'"),
                "invalid_request_error",
                Some("encoding_format"),
                None,
            )
        }
    };
    let Some((texts, tokens)) = embedding_inputs(req.input.as_ref()) else {
        return openai_error(
            StatusCode::BAD_REQUEST,
            "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference.",
            "invalid_request_error",
            None,
            None,
        );
    };
    let dims = req.dimensions.filter(|d| *d > 0).unwrap_or(call.st.dims);
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let v = util::embedding(t, dims);
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(util::base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = tokens.max(1);
    let body = json!({
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    ok_json(Dialect::OpenAi, body.to_string())
}
