//! Wire formats of the LLM API dialects llmux speaks: request peeking and model rewrite, error bodies, model names.
//!
//! Pure: no I/O, no async runtime. Everything here runs on the hot path or in parsers that are fuzzed,
//! so it never panics on any input.

pub mod anthropic;
pub mod body;
pub mod canonical;
pub mod dialect;
pub mod embed;
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
