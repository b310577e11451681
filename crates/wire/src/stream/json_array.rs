//! Gemini's stream without `alt=sse`: the chunks an SSE encoder writes, re-framed as one JSON array sent element by element.

use crate::canonical::{StreamEncoder, StreamEvent};
use crate::stream::framing::{SseEvent, SseParser};

/// Wraps an SSE stream encoder (Gemini's) and writes its events' data as the elements of a
/// JSON array (`[{…}`, `\r\n,{…}`, …, `]`), as `streamGenerateContent` answers without
/// `alt=sse`. Each element is written as soon as the inner encoder produces it.
pub struct JsonArrayEncoder {
    inner: Box<dyn StreamEncoder>,
    sse: SseParser,
    opened: bool,
    events: Vec<SseEvent>,
}

impl JsonArrayEncoder {
    pub fn new(inner: Box<dyn StreamEncoder>) -> JsonArrayEncoder {
        JsonArrayEncoder {
            inner,
            sse: SseParser::new(),
            opened: false,
            events: Vec::new(),
        }
    }

    fn reframe(&mut self, sse: &[u8], out: &mut Vec<u8>) {
        self.events.clear();
        self.sse.feed(sse, &mut self.events);
        for e in &self.events {
            if e.data.is_empty() {
                continue;
            }
            out.extend_from_slice(if self.opened { b"\r\n," } else { b"[" });
            self.opened = true;
            out.extend_from_slice(e.data.as_bytes());
        }
    }
}

impl StreamEncoder for JsonArrayEncoder {
    fn content_type(&self) -> &'static str {
        "application/json; charset=UTF-8"
    }

    fn encode(&mut self, event: &StreamEvent, out: &mut Vec<u8>) {
        let mut sse = Vec::new();
        self.inner.encode(event, &mut sse);
        self.reframe(&sse, out);
    }

    fn finish(&mut self, out: &mut Vec<u8>) {
        let mut sse = Vec::new();
        self.inner.finish(&mut sse);
        self.reframe(&sse, out);
        if !self.opened {
            out.push(b'[');
            self.opened = true;
        }
        out.extend_from_slice(b"]");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::canonical::{Codec, FinishReason, Op, Usage};
    use crate::translate::gemini::GeminiCodec;

    #[test]
    fn gemini_chunks_become_one_json_array() {
        let mut enc = JsonArrayEncoder::new(GeminiCodec.stream_encoder(Op::Chat));
        let mut out = Vec::new();
        for e in [
            StreamEvent::Start {
                id: "r".into(),
                model: "m".into(),
            },
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::Finish(FinishReason::Stop),
            StreamEvent::Usage(Usage {
                input_tokens: 1,
                output_tokens: 2,
                ..Usage::default()
            }),
        ] {
            enc.encode(&e, &mut out);
        }
        // The first element is out before the stream ends.
        assert!(out.starts_with(b"[{"));
        enc.finish(&mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let chunks = v.as_array().unwrap();
        assert!(chunks.len() >= 3);
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["text"],
            "Hel"
        );
        let last = chunks.last().unwrap();
        assert_eq!(last["usageMetadata"]["candidatesTokenCount"], 2);
        assert_eq!(enc.content_type(), "application/json; charset=UTF-8");

        let mut empty = JsonArrayEncoder::new(GeminiCodec.stream_encoder(Op::Chat));
        let mut out = Vec::new();
        empty.finish(&mut out);
        assert!(serde_json::from_slice::<serde_json::Value>(&out)
            .unwrap()
            .is_array());
    }
}
