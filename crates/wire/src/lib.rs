//! Wire formats of the four API dialects llmux speaks — OpenAI (chat, legacy completions and the
//! Responses API), Anthropic Messages, Gemini and Ollama — and the canonical form that
//! translates between them.
//!
//! Layout: one folder per dialect (`openai/` with `responses/`, `anthropic/`, `gemini/`,
//! `ollama/`), each with `request_decode`, `request_encode`, `response`, `stream_decode`,
//! `stream_encode`, `embed` and its `tests`; `canonical` (the common form and the `Codec`
//! traits), `json` and `ids` (what the codecs share), `stream` (SSE / NDJSON framing and the
//! decoder shell), `body` (request peeking and model rewrite), `dialect` (error bodies),
//! `model` (model names). `translate` keeps the paths the gateway uses. To add a dialect: a
//! folder with a `Codec`, an arm in `translate::codec` and in `Dialect`.
//!
//! Pure: no I/O, no async runtime. Everything here runs on the hot path or in parsers that are
//! fuzzed, so it never panics on any input.

pub mod anthropic;
pub mod body;
pub mod canonical;
pub mod dialect;
pub mod embed;
#[cfg(test)]
mod fidelity_response_tests;
#[cfg(test)]
mod fidelity_tests;
pub mod fuzzing;
pub mod gemini;
mod ids;
mod json;
pub mod model;
pub mod ollama;
pub mod openai;
pub mod stream;
#[cfg(test)]
mod testing;
pub mod time;
pub mod translate;

pub use body::{BodyError, Peek};
pub use dialect::{Dialect, ErrorKind};
