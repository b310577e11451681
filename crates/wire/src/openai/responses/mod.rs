//! OpenAI Responses API (`/v1/responses`) ⇄ the canonical form: requests, response objects and the SSE event stream.
//!
//! Decoding a client body reads `input` (a string, or items: messages with `input_text` /
//! `input_image` / `output_text` parts, `function_call` and `function_call_output`),
//! `instructions`, `max_output_tokens`, `temperature`, `top_p`, function `tools`,
//! `tool_choice`, `text.format`, `stream` and `user` (system / developer messages after the first
//! other item keep their place; a function tool's `strict` is carried when given). It refuses, naming the field, what a
//! stateless translation cannot do: `previous_response_id`, `conversation`, `prompt`,
//! `background`, `reasoning`, `top_logprobs`, built-in (non-function) tools and item types
//! other than the ones above. `store`, `metadata`, `include`, `truncation`,
//! `parallel_tool_calls`, `service_tier` and `reasoning` input items are ignored.
//!
//! The stream follows OpenAI's event sequence: `response.created`, `response.in_progress`,
//! then per output item `response.output_item.added`, (`response.content_part.added`,
//! `response.output_text.delta`…, `response.output_text.done`, `response.content_part.done`)
//! or (`response.function_call_arguments.delta`…, `response.function_call_arguments.done`),
//! `response.output_item.done`, and finally `response.completed` (or `response.incomplete`).
//! A broken stream ends with an `error` event and `response.failed`. No `[DONE]` follows.

mod request_decode;
mod request_encode;
mod response;
mod stream_decode;
mod stream_encode;

#[cfg(test)]
mod tests;

use serde_json::json;

use crate::canonical::{
    ChatRequest, ChatResponse, Codec, Op, StreamDecoder, StreamEncoder, TranslateError,
};
use crate::json::parse_object;
use crate::stream::decoder::Framed;
use crate::stream::framing::write_sse;

use request_decode::decode_request;
use request_encode::encode_request;
use response::{decode_response, encode_response, error_of};
use stream_decode::ResponsesStreamDecoder;
use stream_encode::ResponsesStreamEncoder;

/// The Responses API codec. `Op` is ignored: every Responses call is a chat.
pub struct ResponsesCodec;

impl Codec for ResponsesCodec {
    fn decode_request(&self, _op: Op, body: &[u8]) -> Result<ChatRequest, TranslateError> {
        decode_request(&parse_object(body)?)
    }

    fn encode_request(&self, req: &ChatRequest) -> Result<Vec<u8>, TranslateError> {
        req.refuse_ollama_extras("the OpenAI Responses API")?;
        let req = &*req.without_signatures();
        encode_request(req).map(|v| v.to_string().into_bytes())
    }

    fn decode_response(&self, body: &[u8]) -> Result<ChatResponse, TranslateError> {
        decode_response(body)
    }

    fn encode_response(&self, _op: Op, resp: &ChatResponse) -> Vec<u8> {
        encode_response(resp).to_string().into_bytes()
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::new(Framed::<ResponsesStreamDecoder>::default())
    }

    fn stream_encoder(&self, _op: Op) -> Box<dyn StreamEncoder> {
        Box::new(ResponsesStreamEncoder::default())
    }

    fn error_message(&self, body: &[u8]) -> Option<String> {
        let o = parse_object(body).ok()?;
        error_of(&o)
    }
}

/// The `error` event that ends a Responses stream broken mid-way when llmux relays an
/// upstream's own events (it knows neither the response id nor the sequence, so it sends no
/// `response.failed`; a translated stream gets both from the encoder).
pub fn stream_error_event(message: &str) -> Vec<u8> {
    let body = json!({
        "type": "error",
        "code": "server_error",
        "message": message,
        "param": null,
        "sequence_number": 0,
    });
    let mut out = Vec::new();
    write_sse(&mut out, Some("error"), &body.to_string());
    out
}
