//! Stream plumbing shared by the codecs: SSE / NDJSON framing, what Gemini and Ollama encoders hold back, and Gemini's JSON-array re-framing.

pub(crate) mod decoder;
pub mod framing;
pub(crate) mod hold;
pub mod json_array;
