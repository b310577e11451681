//! Entry points the fuzz targets (`crates/wire/fuzz`) and the seed-corpus test share: every parser
//! of untrusted bytes, fed arbitrary input. Each must return (an error is fine) and never panic.

use crate::canonical::{Codec, Op};
use crate::translate::{anthropic, embed, framing, gemini, ollama, openai, responses};
use crate::Peek;

/// Every codec: the four dialects' and OpenAI's Responses API.
const CODECS: [&dyn Codec; 5] = [
    &openai::OpenAiCodec,
    &anthropic::AnthropicCodec,
    &gemini::GeminiCodec,
    &ollama::OllamaCodec,
    &responses::ResponsesCodec,
];

/// Request peeking and the model rewrite.
pub fn peek(data: &[u8]) {
    if let Ok(p) = Peek::parse(data) {
        let body = bytes::Bytes::copy_from_slice(data);
        let _ = p.with_model(&body, "fuzz-model");
    }
}

/// Every dialect's request and response decoders, and error-message readers.
pub fn decoders(data: &[u8]) {
    for c in CODECS {
        for op in [Op::Chat, Op::Completion] {
            if let Ok(req) = c.decode_request(op, data) {
                // What decodes must also encode in every dialect (or fail cleanly).
                for target in CODECS {
                    let _ = target.encode_request(&req);
                }
            }
        }
        if let Ok(resp) = c.decode_response(data) {
            for target in CODECS {
                let _ = target.encode_response(Op::Chat, &resp);
            }
        }
        let _ = c.error_message(data);
    }
    let _ = embed::decode_openai_request(data);
    let _ = embed::decode_openai_response(data);
    let _ = embed::decode_ollama_request(data);
    let _ = embed::decode_ollama_response(data);
    let _ = embed::decode_ollama_legacy_request(data);
    let _ = embed::decode_gemini_request(data);
    let _ = embed::decode_gemini_batch_request(data);
    let _ = embed::decode_gemini_batch_response(data);
}

/// Every dialect's stream decoder, fed the input in two pieces split at its first byte value,
/// and the SSE / NDJSON framers; decoded events are re-encoded in every dialect.
pub fn streams(data: &[u8]) {
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    for c in CODECS {
        let mut dec = c.stream_decoder();
        let mut events = Vec::new();
        let ok = dec.feed(a, &mut events).is_ok()
            && dec.feed(b, &mut events).is_ok()
            && dec.finish(&mut events).is_ok();
        let _ = ok;
        for target in CODECS {
            let mut enc = target.stream_encoder(Op::Chat);
            let mut out = Vec::new();
            for e in &events {
                enc.encode(e, &mut out);
            }
            enc.finish(&mut out);
        }
    }
    let mut sse = framing::SseParser::new();
    let mut out = Vec::new();
    sse.feed(a, &mut out);
    sse.feed(b, &mut out);
    sse.finish(&mut out);
    let mut lines = framing::LineSplitter::new();
    let mut out = Vec::new();
    lines.feed(a, &mut out);
    lines.feed(b, &mut out);
    lines.finish(&mut out);
}
