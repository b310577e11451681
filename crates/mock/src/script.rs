//! Scripted replies: `POST /_mock/script` queues raw answers (a whole body, or a stream's
//! frames) that the next generation calls get instead of the mock's own — for tests that need
//! an exact upstream answer (usage details, tool ids, thought signatures, finish reasons,
//! error bodies).

use std::collections::VecDeque;
use std::sync::Mutex;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;

/// One scripted answer.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scripted {
    /// Only calls of this dialect take it (`openai`, `anthropic`, `gemini`, `ollama`); none: any.
    pub dialect: Option<String>,
    /// HTTP status; 0 means 200.
    pub status: u16,
    /// Content type; default `application/json`, or `text/event-stream` with `chunks`.
    pub content_type: Option<String>,
    /// Extra response headers.
    pub headers: Vec<(String, String)>,
    /// A whole body, sent as it is.
    pub body: Option<String>,
    /// A stream's frames, each sent as its own chunk (ignored when `body` is set).
    pub chunks: Vec<String>,
}

/// The queue of scripted answers, in order.
#[derive(Default)]
pub(crate) struct Script {
    queue: Mutex<VecDeque<Scripted>>,
}

impl Script {
    pub(crate) fn push(&self, replies: Vec<Scripted>) {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if replies.is_empty() {
            q.clear();
        }
        q.extend(replies);
    }

    /// The first queued answer for `dialect`, taken off the queue.
    pub(crate) fn take(&self, dialect: &str) -> Option<Scripted> {
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let at = q
            .iter()
            .position(|s| s.dialect.as_deref().is_none_or(|d| d == dialect))?;
        q.remove(at)
    }
}

impl Scripted {
    /// The answer as a response.
    pub(crate) fn response(self) -> Response {
        let streams = self.body.is_none();
        let content_type = self.content_type.unwrap_or_else(|| {
            if streams {
                "text/event-stream".to_owned()
            } else {
                "application/json".to_owned()
            }
        });
        let body = match self.body {
            Some(b) => Body::from(b),
            None => {
                let frames = self
                    .chunks
                    .into_iter()
                    .map(|c| Ok::<_, std::io::Error>(Bytes::from(c)));
                Body::from_stream(futures_util::stream::iter(frames))
            }
        };
        let mut resp = Response::new(body);
        *resp.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK);
        if self.status == 0 {
            *resp.status_mut() = StatusCode::OK;
        }
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&content_type) {
            h.insert(header::CONTENT_TYPE, v);
        }
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::from_str(&v)) {
                h.insert(k, v);
            }
        }
        resp
    }
}
