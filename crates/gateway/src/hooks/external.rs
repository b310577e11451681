//! The external hook protocol: llmux POSTs `{"hook","model","app","key_id","request"}` (the
//! request in OpenAI chat-completions form, whatever the caller's dialect) and reads back
//! `{"action":"allow"}`, `{"action":"deny","message":"…"}` or
//! `{"action":"modify","request":{…}}`. Anything else is a failure of the hook.

use super::rewrite;
use super::Hooks;
use llmux_config::ExternalHook;
use llmux_wire::canonical::ChatRequest;
use serde_json::{json, Value};

/// Largest answer read from a hook (a modified request is about as large as the prompt).
const MAX_ANSWER: usize = 32 * 1024 * 1024;
/// Longest deny message passed on to the client.
const MAX_MESSAGE: usize = 2048;

/// What an external hook decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    Allow,
    Deny(String),
    Modify(Box<ChatRequest>),
}

/// Who is calling, for the hook.
pub(crate) struct Caller<'a> {
    pub hook: &'a str,
    pub model: &'a str,
    pub app: Option<&'a str>,
    pub key_id: Option<&'a str>,
}

/// Asks the hook about `req`; `Err` says why it failed, in words that fit after "hook 'x' ".
pub(crate) async fn ask(
    hooks: &Hooks,
    ext: &ExternalHook,
    caller: &Caller<'_>,
    req: &ChatRequest,
) -> Result<Verdict, String> {
    let request =
        rewrite::to_hook_json(req).map_err(|e| format!("could not be sent the request: {e}"))?;
    let payload = json!({
        "hook": caller.hook,
        "model": caller.model,
        "app": caller.app,
        "key_id": caller.key_id,
        "request": request,
    });
    let client = hooks.client()?;
    let timeout = ext.timeout;
    let exchange = async {
        let resp = client
            .post(&ext.url)
            .json(&payload)
            .send()
            .await
            .map_err(|e| format!("could not be reached: {}", error_chain(&e)))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("answered HTTP {}", status.as_u16()));
        }
        if resp.content_length().is_some_and(|n| n > MAX_ANSWER as u64) {
            return Err(format!("answered more than {MAX_ANSWER} bytes"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("broke off its answer: {}", error_chain(&e)))?;
        if body.len() > MAX_ANSWER {
            return Err(format!("answered more than {MAX_ANSWER} bytes"));
        }
        parse_verdict(&body, req)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(verdict) => verdict,
        Err(_) => Err(format!("timed out: no answer within {:?}", timeout)),
    }
}

/// The error and its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The hook's answer; anything but one of the three actions is garbage.
pub(crate) fn parse_verdict(body: &[u8], original: &ChatRequest) -> Result<Verdict, String> {
    let garbage = |why: &str| format!("answered garbage ({why})");
    let v: Value = serde_json::from_slice(body).map_err(|_| garbage("not JSON"))?;
    let action = v
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| garbage("no string \"action\""))?;
    match action {
        "allow" => Ok(Verdict::Allow),
        "deny" => {
            let message = match v.get("message") {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(m)) => m.trim().chars().take(MAX_MESSAGE).collect(),
                Some(_) => return Err(garbage("\"message\" is not a string")),
            };
            Ok(Verdict::Deny(message))
        }
        "modify" => {
            let request = v
                .get("request")
                .filter(|r| r.is_object())
                .ok_or_else(|| garbage("\"modify\" without a \"request\" object"))?;
            let modified = rewrite::from_hook_json(request, original)
                .map_err(|e| garbage(&format!("its request is invalid: {e}")))?;
            Ok(Verdict::Modify(Box::new(modified)))
        }
        other => Err(garbage(&format!(
            "unknown action {:?}",
            other.chars().take(40).collect::<String>()
        ))),
    }
}
