//! Helpers the codecs' unit tests share: a stream decoder or encoder run over a whole input,
//! and SSE read back into events.

#![allow(clippy::unwrap_used)]

use crate::canonical::{Codec, Op, StreamDecoder, StreamEncoder, StreamEvent, TranslateError};
use crate::stream::framing::{SseEvent, SseParser};

/// Feeds `bytes` to `dec` cut at each of `cuts` (ascending), then finishes.
pub(crate) fn try_decode(
    dec: &mut dyn StreamDecoder,
    bytes: &[u8],
    cuts: &[usize],
) -> Result<Vec<StreamEvent>, TranslateError> {
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        dec.feed(&bytes[at..c], &mut out)?;
        at = c;
    }
    dec.feed(&bytes[at..], &mut out)?;
    dec.finish(&mut out)?;
    Ok(out)
}

/// [`try_decode`] of input that must decode.
pub(crate) fn decode_all(
    dec: &mut dyn StreamDecoder,
    bytes: &[u8],
    cuts: &[usize],
) -> Vec<StreamEvent> {
    try_decode(dec, bytes, cuts).unwrap()
}

/// Encodes `events`, then finishes the stream.
pub(crate) fn encode_all(enc: &mut dyn StreamEncoder, events: &[StreamEvent]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in events {
        enc.encode(e, &mut out);
    }
    enc.finish(&mut out);
    out
}

/// Every SSE event of a whole stream.
pub(crate) fn sse_events(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    p.feed(bytes, &mut out);
    p.finish(&mut out);
    out
}

/// Every prefix of every sample, from empty to whole.
pub(crate) fn prefixes<'a>(samples: &'a [&'a str]) -> impl Iterator<Item = &'a [u8]> {
    samples
        .iter()
        .flat_map(|s| (0..=s.len()).map(move |end| &s.as_bytes()[..end]))
}

/// Feeds `input` to every decoder of `codec` (requests of both ops, answers, error bodies, a
/// stream) and ignores the results: only a panic fails.
pub(crate) fn exercise(codec: &dyn Codec, input: &[u8]) {
    let _ = codec.decode_request(Op::Chat, input);
    let _ = codec.decode_request(Op::Completion, input);
    let _ = codec.decode_response(input);
    let _ = codec.error_message(input);
    let _ = try_decode(codec.stream_decoder().as_mut(), input, &[]);
}

/// A stream of `chunk` sent twice, ignoring the result: only a panic fails.
pub(crate) fn stream_twice(codec: &dyn Codec, chunk: &[u8]) {
    let twice = [chunk, chunk].concat();
    let _ = try_decode(codec.stream_decoder().as_mut(), &twice, &[chunk.len()]);
}
