//! End-to-end: `[[hooks]]` around each model call (docs/hooks.md) — an external hook (the
//! mock's `POST /hook`) that allows, denies (403 `hook_denied` in each caller's dialect) and
//! modifies (the upstream sees the change, passed through or translated); its timeout with
//! `fail = "closed"` (refused) and `"open"` (served); built-ins that cap `max_tokens`, deny by
//! regex, add upstream headers and mask the call log; scope by model, app and key, after a hot
//! reload; the call log naming the refusing hook; and `llmux config check` naming a bad hook.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The upstreams: an Ollama node serving llama3 and an OpenAI-kind provider serving
/// gpt-4o-mini, both on mock `m` (which serves both: each upstream lists only its own).
fn upstreams(m: &MockServer) -> String {
    format!(
        "{}models = [\"llama3\"]\n[[upstreams]]\nname = \"oai\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-up\"]\nmodels = [\"gpt-4o-mini\"]\n",
        ollama("gpu", &m.url()),
        m.url()
    )
}

async fn mocks() -> (MockServer, MockServer) {
    let m = MockServer::start(node("m", &["llama3:latest", "gpt-4o-mini"]))
        .await
        .unwrap();
    let h = MockServer::start(node("hook", &[])).await.unwrap();
    (m, h)
}

/// A key of a new app `name`: (key, key id, app id).
async fn app_key(gw: &Llmux, name: &str) -> (String, String, String) {
    let (s, app) = admin(gw, "POST", "/apps", Some(json!({"name": name}))).await;
    assert_eq!(s, 201, "{app}");
    let (s, k) = admin(
        gw,
        "POST",
        "/keys",
        Some(json!({"name": name, "app": name})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let s = |v: &Value| v.as_str().unwrap().to_string();
    (s(&k["key"]), s(&k["id"]), s(&app["id"]))
}

/// POSTs `body` to `path` with `key` (when given): (status, JSON answer).
async fn post(gw: &Llmux, key: Option<&str>, path: &str, body: Value) -> (u16, Value) {
    let mut req = client().post(gw.url(path)).json(&body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn openai_chat(model: &str, prompt: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]})
}

fn anthropic_msg(model: &str, prompt: &str) -> Value {
    json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": prompt}]})
}

fn ollama_chat(prompt: &str) -> Value {
    json!({"model": "llama3", "stream": false, "options": {"num_predict": 100, "num_ctx": 2048},
           "messages": [{"role": "user", "content": prompt}]})
}

/// The call log's rows once there are `n`.
async fn rows(gw: &Llmux, n: usize) -> Vec<Value> {
    eventually(Duration::from_secs(20), "the call log's rows", async || {
        let (s, page) = admin(gw, "GET", "/calls?limit=1000", None).await;
        assert_eq!(s, 200, "{page}");
        let calls = page["calls"].as_array().unwrap().clone();
        (calls.len() >= n).then_some(calls)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_hook_allows_denies_and_modifies_in_every_dialect() {
    let (m, h) = mocks().await;
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}[[hooks]]\nname = \"guard\"\nurl = \"{}/hook\"\ntimeout = \"20s\"\n",
        upstreams(&m),
        h.url()
    ));
    let (key, key_id, app_id) = app_key(&gw, "team").await;
    let key = Some(key.as_str());

    // Allowed: served, and the hook was asked with the protocol's fields.
    let (s, v) = post(
        &gw,
        key,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "hello"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let asked = h.stats().last_hook.unwrap();
    assert_eq!(asked["hook"], "guard");
    assert_eq!(asked["model"], "gpt-4o-mini");
    assert_eq!(asked["app"], app_id.as_str());
    assert_eq!(asked["key_id"], key_id.as_str());
    assert_eq!(asked["request"]["messages"][0]["content"], "hello");
    assert_eq!(asked["request"]["max_tokens"], 100);

    // Denied: 403 with the hook's message and `hook_denied`, in each dialect; no upstream call.
    let before = m.stats().generations;
    let (s, v) = post(
        &gw,
        key,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "deny-me"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "hook_denied", "{v}");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(
        v["error"]["message"],
        "the mock hook refuses prompts that say deny-me"
    );
    let (s, v) = post(
        &gw,
        key,
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "deny-me"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "permission_error");
    assert_eq!(v["error"]["code"], "hook_denied", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("deny-me"));
    let (s, v) = post(&gw, key, "/api/chat", ollama_chat("deny-me")).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "the mock hook refuses prompts that say deny-me");
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "deny-me"}]}]});
    let (s, v) = post(&gw, key, "/v1beta/models/llama3:generateContent", gemini).await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["status"], "PERMISSION_DENIED");
    assert_eq!(v["error"]["details"][0]["reason"], "hook_denied", "{v}");
    assert_eq!(
        m.stats().generations,
        before,
        "a denied call reaches no upstream"
    );

    // Modified, passed through (OpenAI → OpenAI): the upstream gets the hook's request.
    let (s, v) = post(
        &gw,
        key,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "modify-me now"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(
        sent["messages"][0]["content"], "modified-by-hook now",
        "{sent}"
    );
    assert_eq!(sent["max_tokens"], 5, "{sent}");
    assert_eq!(sent["model"], "gpt-4o-mini");
    // Modified and translated (Anthropic → OpenAI upstream).
    let (s, v) = post(
        &gw,
        key,
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "modify-me too"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(
        sent["messages"][0]["content"], "modified-by-hook too",
        "{sent}"
    );
    // Translated to an OpenAI upstream: the limit in its current field (#17 item 4).
    assert_eq!(sent["max_completion_tokens"], 5, "{sent}");
    assert_eq!(
        v["usage"]["output_tokens"], 5,
        "the answer follows the modified request: {v}"
    );
    // Modified, passed through (Ollama → Ollama): what llmux does not model is kept.
    let (s, v) = post(&gw, key, "/api/chat", ollama_chat("modify-me here")).await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(
        sent["messages"][0]["content"], "modified-by-hook here",
        "{sent}"
    );
    assert_eq!(sent["options"]["num_predict"], 5, "{sent}");
    assert_eq!(sent["options"]["num_ctx"], 2048, "{sent}");

    // The call log names the hook that refused; the metrics count each decision.
    let calls = rows(&gw, 8).await;
    let denied: Vec<&Value> = calls.iter().filter(|c| c["status"] == 403).collect();
    assert_eq!(denied.len(), 4, "{calls:#?}");
    for c in &denied {
        assert_eq!(c["hook"], "guard", "{c}");
        assert_eq!(c["error_class"], "hook_denied", "{c}");
    }
    assert!(calls
        .iter()
        .filter(|c| c["status"] == 200)
        .all(|c| c["hook"].is_null()));
    let text = metrics_text(&gw).await;
    for (outcome, n) in [("allow", 1), ("deny", 4), ("modify", 3), ("error", 0)] {
        let line = format!("llmux_hook_calls_total{{hook=\"guard\",outcome=\"{outcome}\"}} {n}");
        assert!(text.contains(&line), "{line} in:\n{text}");
    }
    assert!(
        text.contains("llmux_hook_duration_seconds_count{hook=\"guard\"} 8"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_hook_refuses_when_closed_and_lets_through_when_open() {
    let (m, h) = mocks().await;
    let hook = |name: &str, fail: &str, model: &str| {
        format!(
            "[[hooks]]\nname = \"{name}\"\nurl = \"{}/hook\"\ntimeout = \"1s\"\nfail = \"{fail}\"\nmodels = [\"{model}\"]\n",
            h.url()
        )
    };
    let gw = Llmux::start(&format!(
        "{}{}{}",
        upstreams(&m),
        hook("strict", "closed", "gpt-4o-mini"),
        hook("lenient", "open", "llama3")
    ));
    let before = m.stats().generations;

    // Closed: a timeout is a 503 naming the hook and saying it timed out; nothing is sent.
    let started = Instant::now();
    let (s, v) = post(
        &gw,
        None,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "slow-hook"),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("hook 'strict' timed out"), "{message}");
    assert!(message.contains("fail = \"closed\""), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the timeout bounds the wait"
    );
    // Garbage and an error status are failures too.
    let (s, v) = post(
        &gw,
        None,
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "garbage-hook"),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("garbage"),
        "{v}"
    );
    let (s, v) = post(
        &gw,
        None,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "error-hook"),
    )
    .await;
    assert_eq!(s, 503, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("HTTP 500"),
        "{v}"
    );
    assert_eq!(
        m.stats().generations,
        before,
        "a refused call reaches no upstream"
    );

    // Open: the call is served unchecked, with a warning.
    let (s, v) = post(&gw, None, "/api/chat", ollama_chat("slow-hook")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&gw, None, "/api/chat", ollama_chat("error-hook")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(&gw, None, "/api/chat", ollama_chat("garbage-hook")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(m.stats().generations, before + 3);
    eventually(
        Duration::from_secs(10),
        "the fail-open warning",
        async || {
            gw.log_text().contains("fail = \\\"open\\\"")
                || gw.log_text().contains("fail = \"open\"")
        },
    )
    .await;

    // Scope by model: each hook was asked only about its own model's calls.
    assert_eq!(h.stats().hook_calls, 6);
    let text = metrics_text(&gw).await;
    for line in [
        "llmux_hook_calls_total{hook=\"strict\",outcome=\"error\"} 3",
        "llmux_hook_calls_total{hook=\"lenient\",outcome=\"error\"} 3",
        "llmux_hook_calls_total{hook=\"lenient\",outcome=\"allow\"} 0",
        "llmux_hook_duration_seconds_count{hook=\"strict\"} 3",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builtin_hooks_cap_deny_add_headers_and_mask_the_log() {
    let (m, _h) = mocks().await;
    let gw = Llmux::start(&format!(
        r#"{}[logs]
bodies = true

[[hooks]]
name = "cap"
set = {{ max_tokens = 16, temperature = 0.5 }}

[[hooks]]
name = "no-passwords"
deny_pattern = "(?i)password"
message = "prompts must not carry passwords"

[[hooks]]
name = "tag"
headers = {{ "X-Team" = "research" }}
models = ["gpt-4o-mini"]

[[hooks]]
name = "mask"
redact = ['\b\d{{3}}-\d{{2}}-\d{{4}}\b']
"#,
        upstreams(&m)
    ));

    // set: max_tokens is capped (lower of the two), temperature replaced; passthrough…
    let (s, v) = post(
        &gw,
        None,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "hi"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(
        (sent["max_tokens"].clone(), sent["temperature"].clone()),
        (json!(16), json!(0.5)),
        "{sent}"
    );
    assert_eq!(
        m.stats().last_headers.get("x-team").map(String::as_str),
        Some("research")
    );
    let mut small = openai_chat("gpt-4o-mini", "hi");
    small["max_tokens"] = json!(4);
    let (s, _) = post(&gw, None, "/v1/chat/completions", small).await;
    assert_eq!(s, 200);
    assert_eq!(
        m.stats().last_body.unwrap()["max_tokens"],
        4,
        "under the cap: the client's"
    );
    // Fields llmux cannot translate still pass through, with the hook's change.
    let mut rich = openai_chat("gpt-4o-mini", "hi");
    rich["reasoning_effort"] = json!("low");
    rich["logprobs"] = json!(true);
    let (s, v) = post(&gw, None, "/v1/chat/completions", rich).await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(sent["max_tokens"], 16, "{sent}");
    assert_eq!(
        (sent["reasoning_effort"].clone(), sent["logprobs"].clone()),
        (json!("low"), json!(true)),
        "{sent}"
    );
    // The Responses API passed through: its own field is capped.
    let responses = json!({"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 100});
    let (s, v) = post(&gw, None, "/v1/responses", responses).await;
    assert_eq!(s, 200, "{v}");
    let sent = m.stats().last_body.unwrap();
    assert_eq!(sent["max_output_tokens"], 16, "{sent}");
    assert_eq!(sent["input"], "hi", "{sent}");
    // … and translated (Anthropic → OpenAI upstream), and on Ollama's own field.
    let (s, _) = post(
        &gw,
        None,
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "hi"),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(m.stats().last_body.unwrap()["max_completion_tokens"], 16);
    let (s, v) = post(&gw, None, "/api/chat", ollama_chat("hi")).await;
    assert_eq!(s, 200, "{v}");
    let stats = m.stats();
    let sent = stats.last_body.unwrap();
    assert_eq!(sent["options"]["num_predict"], 16, "{sent}");
    assert_eq!(sent["options"]["num_ctx"], 2048, "{sent}");
    assert!(
        !stats.last_headers.contains_key("x-team"),
        "the header hook is scoped to gpt-4o-mini"
    );

    // deny_pattern: refused with the hook's message, in the caller's dialect.
    let before = m.stats().generations;
    let (s, v) = post(
        &gw,
        None,
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "my PASSWORD is hunter2"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"]["code"], "hook_denied");
    assert_eq!(v["error"]["message"], "prompts must not carry passwords");
    assert_eq!(m.stats().generations, before);

    // redact: masked in the call log, sent as written.
    let (s, _) = post(
        &gw,
        None,
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "ssn 123-45-6789 ok"),
    )
    .await;
    assert_eq!(s, 200);
    let sent = m.stats().last_body.unwrap();
    assert_eq!(sent["messages"][0]["content"], "ssn 123-45-6789 ok");
    let calls = rows(&gw, 8).await;
    let masked = calls
        .iter()
        .find(|c| {
            c["request_body"]
                .as_str()
                .is_some_and(|b| b.contains("ssn "))
        })
        .unwrap_or_else(|| panic!("no logged body: {calls:#?}"));
    let body = masked["request_body"].as_str().unwrap();
    assert!(body.contains("ssn [REDACTED] ok"), "{body}");
    assert!(!body.contains("123-45-6789"), "{body}");
    let refused = calls.iter().find(|c| c["status"] == 403).unwrap();
    assert_eq!(refused["hook"], "no-passwords", "{refused}");
    let text = metrics_text(&gw).await;
    assert!(
        text.contains("llmux_hook_calls_total{hook=\"no-passwords\",outcome=\"deny\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("llmux_hook_calls_total{hook=\"cap\",outcome=\"modify\"} 8"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_scope_by_app_and_key_and_follow_a_reload() {
    let (m, _h) = mocks().await;
    let base = format!("[auth]\nrequired = true\n{}", upstreams(&m));
    let gw = Llmux::start(&base);
    let (paused, _, paused_app) = app_key(&gw, "paused").await;
    let (open, _, _) = app_key(&gw, "open").await;
    let (s, k) = admin(
        &gw,
        "POST",
        "/keys",
        Some(json!({"name": "second", "app": "open"})),
    )
    .await;
    assert_eq!(s, 201, "{k}");
    let (blocked, blocked_id) = (
        k["key"].as_str().unwrap().to_string(),
        k["id"].as_str().unwrap().to_string(),
    );
    let call = async |key: &str| {
        post(
            &gw,
            Some(key),
            "/v1/chat/completions",
            openai_chat("gpt-4o-mini", "hi"),
        )
        .await
        .0
    };
    assert_eq!(call(&paused).await, 200, "no hook yet");

    gw.write_config(&format!(
        "{base}[[hooks]]\nname = \"pause\"\ndeny = true\napps = [\"{paused_app}\"]\nmessage = \"this app is paused\"\n\
         [[hooks]]\nname = \"one-key\"\ndeny = true\nkeys = [\"{blocked_id}\"]\n"
    ));
    eventually(Duration::from_secs(20), "the reloaded hooks", async || {
        call(&paused).await == 403
    })
    .await;
    let (s, v) = post(
        &gw,
        Some(&paused),
        "/v1/messages",
        anthropic_msg("gpt-4o-mini", "hi"),
    )
    .await;
    assert_eq!(s, 403);
    assert_eq!(v["error"]["message"], "this app is paused");
    assert_eq!(call(&open).await, 200, "another app");
    let (s, v) = post(
        &gw,
        Some(&blocked),
        "/v1/chat/completions",
        openai_chat("gpt-4o-mini", "hi"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(
        v["error"]["message"],
        "this call is refused by hook 'one-key'"
    );

    // Removed again: every key is served.
    gw.write_config(&base);
    eventually(Duration::from_secs(20), "the hooks removed", async || {
        call(&paused).await == 200
    })
    .await;
    assert_eq!(call(&blocked).await, 200);
}

#[test]
fn config_check_names_the_hook_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("llmux.toml");
    let cases = [
        (
            "name = \"guard\"\nurl = \"not a url\"\n",
            "hooks[0].url: hook \"guard\": invalid URL",
        ),
        (
            "name = \"guard\"\nurl = \"ftp://h/x\"\n",
            "scheme must be http or https",
        ),
        (
            "name = \"pii\"\nredact = [\"(unclosed\"]\n",
            "hooks[0].redact[0]: hook \"pii\": invalid regex",
        ),
        (
            "name = \"pii\"\ndeny_pattern = \"[z-a]\"\n",
            "hooks[0].deny_pattern: hook \"pii\": invalid regex",
        ),
        (
            "name = \"pii\"\ndeny_pattern = \"a*\"\n",
            "matches the empty string",
        ),
        ("name = \"idle\"\n", "hooks[0]: hook \"idle\": does nothing"),
        (
            "name = \"guard\"\nurl = \"http://h/x\"\nfail = \"maybe\"\n",
            "unknown mode \"maybe\"",
        ),
        (
            "name = \"guard\"\nurl = \"http://h/x\"\nset = { max_tokens = 5 }\n",
            "either external (url) or built-in",
        ),
        (
            "name = \"cap\"\nset = { max_tokens = 5, colour = 1 }\n",
            "colour",
        ),
        (
            "name = \"cap\"\nset = { max_tokens = 5 }\nwhatever = 1\n",
            "whatever",
        ),
        (
            "name = \"h\"\nheaders = { authorization = \"x\" }\n",
            "cannot be overridden",
        ),
        (
            "name = \"x\"\ndeny = true\n[[hooks]]\nname = \"x\"\ndeny = true\n",
            "duplicate hook name \"x\"",
        ),
    ];
    for (hook, expected) in cases {
        std::fs::write(&path, format!("[[hooks]]\n{hook}")).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(["config", "check"])
            .arg(&path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{hook}: {err}");
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }
    std::fs::write(
        &path,
        "[[hooks]]\nname = \"guard\"\nurl = \"http://10.0.0.9:9000/check?token=t\"\nfail = \"open\"\n\
         [[hooks]]\nname = \"cap\"\nset = { max_tokens = 512 }\nredact = ['\\d{4}']\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["config", "check"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hooks (2, in order):"), "{text}");
    assert!(
        text.contains(
            "guard: external http://10.0.0.9:9000/check (timeout 2s, fail open) [every call]"
        ),
        "{text}"
    );
    assert!(
        !text.contains("token=t"),
        "the URL's query is not printed: {text}"
    );
    assert!(
        text.contains("cap: max_tokens at most 512; redact 1 pattern(s) in the call log"),
        "{text}"
    );
}
