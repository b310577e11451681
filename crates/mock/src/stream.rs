//! Paced streaming bodies: frames are produced lazily, one per poll, with ttft/chunk delays and drop/stall/truncate faults.

use std::io;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;

use crate::state::InFlight;

/// Timing and stream faults for one response.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pace {
    pub(crate) ttft: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) drop_after: Option<usize>,
    pub(crate) stall_after: Option<usize>,
    pub(crate) truncate_after: Option<usize>,
    /// Frames from this index on follow at once, not `chunk_delay` apart: what a provider sends
    /// after the last generated frame (OpenAI's usage chunk and `[DONE]` come right after the
    /// finish chunk, not one token's time later).
    pub(crate) unpaced_from: Option<usize>,
}

struct State<F> {
    i: usize,
    done: bool,
    gen: F,
    pace: Pace,
    _guard: InFlight,
}

/// A 200 response whose body is `gen(0), gen(1), …` until `gen` returns None.
///
/// Frames are generated on demand rather than up front so a slow stream holds no buffered
/// text, and each one is yielded separately so hyper writes it as its own chunk.
pub(crate) fn streaming<F>(
    content_type: &'static str,
    pace: Pace,
    guard: InFlight,
    gen: F,
) -> Response
where
    F: FnMut(usize) -> Option<String> + Send + 'static,
{
    let state = State {
        i: 0,
        done: false,
        gen,
        pace,
        _guard: guard,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if st.pace.truncate_after == Some(st.i) {
            // A clean end of the body (the terminating chunk is sent) without the final frames.
            return None;
        }
        let frame = (st.gen)(st.i)?;
        if st.pace.stall_after == Some(st.i) {
            // Keep the connection open and silent; it ends when the client or server goes away.
            std::future::pending::<()>().await;
        }
        if st.pace.drop_after == Some(st.i) {
            // Give hyper one Pending so it flushes the frames already buffered, then fail the
            // body: hyper aborts the connection without the terminating chunk.
            tokio::task::yield_now().await;
            st.done = true;
            let err = io::Error::new(io::ErrorKind::ConnectionAborted, "mock: drop_after");
            return Some((Err(err), st));
        }
        let delay = if st.i == 0 {
            st.pace.ttft
        } else if st.pace.unpaced_from.is_some_and(|n| st.i >= n) {
            Duration::ZERO
        } else {
            st.pace.chunk_delay
        };
        // Zero-delay mode must not touch the timer wheel: this is the benchmark's hot path.
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        st.i += 1;
        Some((Ok::<_, io::Error>(bytes::Bytes::from(frame)), st))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
