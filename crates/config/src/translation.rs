//! `[translation]`: what llmux fetches itself for translated calls; parsed in
//! `raw/translation.rs`.

use std::time::Duration;

/// `[translation]`: images given by URL to upstreams that take only inline bytes (Gemini,
/// Ollama) are fetched by llmux — through the SSRF guard of `admin.allow_private_upstreams` —
/// and inlined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TranslationConfig {
    /// Largest image fetched, in bytes. Default 20 MiB.
    pub image_fetch_max: usize,
    /// How long one image may take to arrive whole. Default 10 s.
    pub image_fetch_timeout: Duration,
    /// Most images fetched for one request (0: never fetch; URL images are then refused).
    /// Default 8.
    pub image_fetch_max_count: usize,
}

impl Default for TranslationConfig {
    fn default() -> Self {
        Self {
            image_fetch_max: 20 << 20,
            image_fetch_timeout: Duration::from_secs(10),
            image_fetch_max_count: 8,
        }
    }
}
