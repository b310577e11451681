//! Ollama's model management: `POST /api/pull` (NDJSON progress, or one answer with
//! `"stream": false`) and `DELETE /api/delete`, with the shapes and words of Ollama 0.12.
//!
//! A pull succeeds for a model the mock's registry (`MockConfig::registry`) or the node
//! itself has; the node then serves it (`/api/tags` lists it). Anything else fails as real
//! Ollama fails a name the registry lacks.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use crate::handler::OLLAMA_JSON;
use crate::reply::{bad_request, ollama_error, respond};
use crate::state::{with_tag, Shared};
use crate::{handler::Dialect, util};

/// What real Ollama answers for a name its registry does not have.
pub const NOT_IN_REGISTRY: &str = "pull model manifest: file does not exist";

/// Progress lines per layer (0 %, 25 %, 50 %, 75 %, 100 %).
const STEPS: u64 = 4;

#[derive(Deserialize, Default)]
#[serde(default)]
struct ModelReq {
    model: Option<String>,
    /// Older clients send `name`.
    name: Option<String>,
    stream: Option<bool>,
}

fn parse(bytes: &Bytes) -> Result<(String, bool), Box<Response>> {
    let req: ModelReq = serde_json::from_slice(bytes)
        .map_err(|e| Box::new(bad_request(Dialect::Ollama, &e.to_string())))?;
    let stream = req.stream.unwrap_or(true);
    match req.model.or(req.name).filter(|m| !m.is_empty()) {
        Some(m) => Ok((m, stream)),
        None => Err(Box::new(ollama_error(
            StatusCode::BAD_REQUEST,
            "model is required",
        ))),
    }
}

/// The name a pull of `wanted` installs, when the registry (or the node) has it.
fn find(st: &Shared, wanted: &str) -> Option<String> {
    if let Some(m) = st.resolve(wanted) {
        return Some(m);
    }
    let want = with_tag(wanted);
    st.registry
        .iter()
        .find(|m| with_tag(m) == want)
        .map(|_| want.into_owned())
}

/// The progress lines of pulling `model`: a model blob and a small params blob, each from 0 to
/// its size, then verification and the manifest.
fn progress(model: &str) -> Vec<String> {
    let size = 1_000_000_000 + util::fnv1a(model.as_bytes()) % 4_000_000_000;
    let mut lines = vec![json!({"status": "pulling manifest"}).to_string()];
    for (layer, total) in [("model", size), ("params", 110)] {
        let digest = util::digest(&format!("{model}/{layer}"));
        for step in 0..=STEPS {
            let completed = total * step / STEPS;
            let mut line = json!({
                "status": format!("pulling {}", &digest[..12]),
                "digest": format!("sha256:{digest}"),
                "total": total,
            });
            // Ollama leaves `completed` out while it is 0 (`omitempty`).
            if completed > 0 {
                line["completed"] = json!(completed);
            }
            lines.push(line.to_string());
        }
    }
    lines.push(json!({"status": "verifying sha256 digest"}).to_string());
    lines.push(json!({"status": "writing manifest"}).to_string());
    lines.push(json!({"status": "success"}).to_string());
    lines
}

/// `POST /api/pull`.
pub(crate) fn pull(st: &Arc<Shared>, bytes: &Bytes) -> Response {
    let (wanted, stream) = match parse(bytes) {
        Ok(r) => r,
        Err(resp) => return *resp,
    };
    let found = find(st, &wanted);
    if !stream {
        // Whole answers: the pull runs (instantly) and one line says how it went.
        return match found {
            Some(model) => {
                st.install(&model);
                respond(StatusCode::OK, OLLAMA_JSON, r#"{"status":"success"}"#)
            }
            None => ollama_error(StatusCode::INTERNAL_SERVER_ERROR, NOT_IN_REGISTRY),
        };
    }
    let lines = match &found {
        Some(model) => progress(model),
        None => vec![
            json!({"status": "pulling manifest"}).to_string(),
            json!({"error": NOT_IN_REGISTRY}).to_string(),
        ],
    };
    let state = (lines.into_iter(), Arc::clone(st), found, st.pull_step, true);
    let body =
        futures_util::stream::unfold(state, |(mut lines, st, found, step, first)| async move {
            let line = lines.next()?;
            if !first && !step.is_zero() {
                tokio::time::sleep(step).await;
            }
            // The model is served once its manifest is written, before `success` is sent.
            if line.contains(r#""status":"success""#) {
                if let Some(m) = &found {
                    st.install(m);
                }
            }
            let chunk = Ok::<_, std::io::Error>(Bytes::from(line + "\n"));
            Some((chunk, (lines, st, found, step, false)))
        });
    respond(
        StatusCode::OK,
        "application/x-ndjson",
        Body::from_stream(body),
    )
}

/// `DELETE /api/delete`: 200 with no body, or 404 naming the model.
pub(crate) fn delete(st: &Arc<Shared>, bytes: &Bytes) -> Response {
    let wanted = match parse(bytes) {
        Ok((m, _)) => m,
        Err(resp) => return *resp,
    };
    match st.resolve(&wanted) {
        Some(model) => {
            st.uninstall(&model);
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        None => ollama_error(
            StatusCode::NOT_FOUND,
            &format!("model '{wanted}' not found"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn progress_lines_are_ollamas() {
        let lines: Vec<Value> = progress("llama3:latest")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        assert_eq!(lines[0], json!({"status": "pulling manifest"}));
        let first = &lines[1];
        let digest = first["digest"].as_str().unwrap_or("");
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{first}"
        );
        assert_eq!(first["status"], format!("pulling {}", &digest[7..19]));
        assert!(first.get("completed").is_none(), "omitted while 0");
        assert_eq!(lines[5]["completed"], lines[5]["total"]);
        let tail: Vec<&str> = lines[lines.len() - 3..]
            .iter()
            .filter_map(|l| l["status"].as_str())
            .collect();
        assert_eq!(
            tail,
            ["verifying sha256 digest", "writing manifest", "success"]
        );
    }
}
