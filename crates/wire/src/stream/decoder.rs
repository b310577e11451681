//! The shell every dialect's stream decoder runs in: framing (SSE events or NDJSON lines split
//! anywhere), each complete frame handed to the dialect, and the end of the stream.

use crate::canonical::{StreamDecoder, StreamEvent, TranslateError};
use crate::stream::framing::{LineSplitter, SseEvent, SseParser};

/// How a stream's bytes are cut into frames.
pub(crate) trait Framing: Default + Send {
    type Frame: Send;
    /// Appends every frame completed by `chunk` to `out`; a partial frame is kept.
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<Self::Frame>);
    /// The stream ended: a frame left open is completed anyway.
    fn finish(&mut self, out: &mut Vec<Self::Frame>);
}

impl Framing for SseParser {
    type Frame = SseEvent;

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        SseParser::feed(self, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<SseEvent>) {
        SseParser::finish(self, out);
    }
}

impl Framing for LineSplitter {
    type Frame = String;

    fn feed(&mut self, chunk: &[u8], out: &mut Vec<String>) {
        LineSplitter::feed(self, chunk, out);
    }

    fn finish(&mut self, out: &mut Vec<String>) {
        LineSplitter::finish(self, out);
    }
}

/// What a dialect's stream decoder knows: how to read one frame, and what the end means.
pub(crate) trait FrameDecoder: Default + Send {
    type Framing: Framing;
    /// One complete frame → events. An error ends the stream: later frames are not read.
    fn frame(
        &mut self,
        frame: &<Self::Framing as Framing>::Frame,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError>;
    /// The stream ended after its last frame (a usage still held, say, or an error when it
    /// ended too early).
    fn end(&mut self, _out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        Ok(())
    }
}

/// The error of a stream that ended without the event that closes it in its dialect (`last`,
/// e.g. `message_stop`): the upstream closed the connection cleanly half-way, and what was
/// relayed must not read as a whole answer.
pub(crate) fn cut_short(last: &str) -> TranslateError {
    TranslateError::new(
        "",
        format!("the stream ended before its final event ({last}): the answer is incomplete"),
    )
}

/// A [`StreamDecoder`] made of the framing and a dialect's [`FrameDecoder`].
#[derive(Default)]
pub(crate) struct Framed<D: FrameDecoder> {
    framing: D::Framing,
    frames: Vec<<D::Framing as Framing>::Frame>,
    dialect: D,
}

impl<D: FrameDecoder> Framed<D> {
    fn drain(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        let result = self
            .frames
            .iter()
            .try_for_each(|f| self.dialect.frame(f, out));
        self.frames.clear();
        result
    }
}

impl<D: FrameDecoder> StreamDecoder for Framed<D> {
    fn feed(&mut self, chunk: &[u8], out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.framing.feed(chunk, &mut self.frames);
        self.drain(out)
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) -> Result<(), TranslateError> {
        self.framing.finish(&mut self.frames);
        self.drain(out)?;
        self.dialect.end(out)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use crate::canonical::StreamEvent;
    use crate::testing::try_decode;
    use crate::translate::codec;
    use crate::Dialect;

    /// A whole stream of each dialect, and how many bytes of it come before its final event.
    fn samples() -> Vec<(Dialect, String, usize)> {
        let openai_body = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n";
        let openai_end = "data: {\"id\":\"c\",\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let anthropic_body = concat!(
            "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg\",\"model\":\"m\",\"usage\":{\"input_tokens\":3,\"output_tokens\":0}}}\n\n",
            "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
            "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n",
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":1}}\n\n",
        );
        let anthropic_end = "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let gemini_body = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"Hi\"}]}}],\"usageMetadata\":{\"promptTokenCount\":3}}\n\n";
        let gemini_end = "data: {\"candidates\":[{\"content\":{\"role\":\"model\",\"parts\":[{\"text\":\"!\"}]},\"finishReason\":\"STOP\"}]}\n\n";
        let ollama_body = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"done\":false}\n";
        let ollama_end = "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"prompt_eval_count\":3,\"eval_count\":1}\n";
        [
            (Dialect::OpenAi, openai_body, openai_end),
            (Dialect::Anthropic, anthropic_body, anthropic_end),
            (Dialect::Gemini, gemini_body, gemini_end),
            (Dialect::Ollama, ollama_body, ollama_end),
        ]
        .into_iter()
        .map(|(d, body, end)| (d, format!("{body}{end}"), body.len()))
        .collect()
    }

    #[test]
    fn a_stream_closed_before_its_final_event_is_an_error_in_every_dialect() {
        for (dialect, whole, body) in samples() {
            let events = try_decode(
                codec(dialect).stream_decoder().as_mut(),
                whole.as_bytes(),
                &[],
            );
            let events = events.unwrap_or_else(|e| panic!("{dialect:?}: {e}"));
            assert!(
                events.iter().any(|e| matches!(e, StreamEvent::Finish(_))),
                "{dialect:?}: {events:?}"
            );
            // Every cut before the final event — including after the finish reason of
            // Anthropic's `message_delta` — fails at the end, never reads as whole.
            for cut in 0..=body {
                let part = &whole.as_bytes()[..cut];
                let r = try_decode(codec(dialect).stream_decoder().as_mut(), part, &[]);
                // A cut inside a frame is a frame that does not parse: an error as well.
                r.expect_err(&format!("{dialect:?} cut at {cut} decoded as whole"));
            }
            // Cut at a frame boundary, the error says what is missing.
            let part = &whole.as_bytes()[..body];
            let r = try_decode(codec(dialect).stream_decoder().as_mut(), part, &[]);
            let e = r.expect_err(&format!("{dialect:?} decoded as whole"));
            assert!(e.message.contains("final event"), "{dialect:?}: {e}");
            if body > 0 {
                let r = try_decode(codec(dialect).stream_decoder().as_mut(), b"", &[]);
                assert!(r.is_err(), "{dialect:?}: an empty stream is no answer");
            }
        }
    }

    #[test]
    fn an_error_event_ends_a_stream_without_a_final_event() {
        let cases = [
            (Dialect::OpenAi, "data: {\"error\":{\"message\":\"boom\"}}\n\n"),
            (
                Dialect::Anthropic,
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"boom\"}}\n\n",
            ),
            (Dialect::Gemini, "data: {\"error\":{\"code\":500,\"message\":\"boom\"}}\n\n"),
            (Dialect::Ollama, "{\"error\":\"boom\"}\n"),
        ];
        for (dialect, stream) in cases {
            let events = try_decode(
                codec(dialect).stream_decoder().as_mut(),
                stream.as_bytes(),
                &[],
            );
            let events = events.unwrap_or_else(|e| panic!("{dialect:?}: {e}"));
            assert_eq!(
                events.last(),
                Some(&StreamEvent::Error("boom".into())),
                "{dialect:?}"
            );
        }
    }
}
