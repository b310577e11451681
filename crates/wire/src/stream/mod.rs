//! Stream plumbing shared by the codecs: SSE / NDJSON framing, what Gemini and Ollama encoders hold back, whether a passed-through stream reached its end, and Gemini's JSON-array re-framing.

pub(crate) mod decoder;
pub mod ending;
pub mod framing;
pub(crate) mod hold;
pub mod json_array;
