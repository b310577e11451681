//! gzip / brotli for JSON answers (`server.compression`), through tower-http's compression
//! layer with our own rule of what qualifies: a JSON body whose whole size is known and at
//! least [`MIN_SIZE`]. A stream (SSE, NDJSON, Gemini's streamed JSON array) has no known size,
//! so it is never held back in a compressor; tiny bodies gain nothing.

use crate::Gateway;
use axum::http::{header, Response};
use std::sync::Arc;
use tower_http::compression::predicate::Predicate;
use tower_http::compression::{Compression, CompressionLevel};

/// Smallest body worth compressing, in bytes.
pub const MIN_SIZE: u64 = 1024;

/// The layer around `inner`: brotli or gzip as the client's `Accept-Encoding` prefers (brotli
/// first on a tie), at level 4, which keeps brotli fast (its default, 11, costs milliseconds per
/// answer).
pub fn layer<S>(gw: Arc<Gateway>, inner: S) -> Compression<S, WholeJson> {
    Compression::new(inner)
        .quality(CompressionLevel::Precise(4))
        .compress_when(WholeJson { gw })
}

/// A response extension that keeps a body uncompressed: a stream replayed whole (a cache hit
/// answered as a stream has a known size, and Gemini's streamed JSON array is
/// `application/json`), which must reach the client as the stream it is.
#[derive(Clone, Copy, Debug)]
pub struct AsStream;

/// Compresses JSON bodies of a known size of at least [`MIN_SIZE`] while
/// `server.compression` is on (read per answer, so a reload turns it off or on).
#[derive(Clone)]
pub struct WholeJson {
    gw: Arc<Gateway>,
}

impl Predicate for WholeJson {
    fn should_compress<B: http_body::Body>(&self, response: &Response<B>) -> bool {
        if !self.gw.config().server.compression || response.extensions().get::<AsStream>().is_some()
        {
            return false;
        }
        let json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|ct| ct == "application/json" || ct.ends_with("+json"));
        let size = response.body().size_hint().exact().or_else(|| {
            response
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        });
        json && size.is_some_and(|n| n >= MIN_SIZE)
    }
}
