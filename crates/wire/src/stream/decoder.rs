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
