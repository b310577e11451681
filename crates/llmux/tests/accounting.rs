//! End-to-end: accounting on the real binary — usage read from every dialect (passthrough and
//! translated, streamed and not), cost, `insufficient_quota`, the call log across a graceful
//! restart, and `/admin/v1/usage` (JSON and CSV) against the rows. SQLite, and PostgreSQL when
//! `LLMUX_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// `(label, store url or None for SQLite, guard)`.
async fn backends() -> Vec<(&'static str, Option<String>, Option<PgSchema>)> {
    let mut out = vec![("sqlite", None, None)];
    if let Some(pg) = PgSchema::create("llmux_acct").await {
        out.push(("postgres", Some(pg.url.clone()), Some(pg)));
    }
    out
}

fn upstream(name: &str, kind: &str, url: &str, models: &[&str]) -> String {
    let url = match kind {
        "openai" => format!("{url}/v1"),
        _ => url.to_string(),
    };
    let models: Vec<String> = models.iter().map(|m| format!("\"{m}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nkeys = [\"k-{name}\"]\nmodels = [{}]\n",
        models.join(", ")
    )
}

/// One call as the client saw it: request id, and the usage its answer reported (`None` when
/// the answer carries none: llmux must estimate then).
struct Seen {
    request_id: String,
    usage: Option<(i64, i64)>,
}

/// The usage a client-visible answer reports, whatever its dialect and framing.
fn usage_in(text: &str) -> Option<(i64, i64)> {
    let mut input = None;
    let mut output = None;
    let values: Vec<Value> = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(a)) => a,
        Ok(v) => vec![v],
        Err(_) => text
            .lines()
            .filter_map(|l| serde_json::from_str(l.strip_prefix("data:").unwrap_or(l).trim()).ok())
            .collect(),
    };
    for v in values {
        let u = v
            .get("usage")
            .or_else(|| v.get("message").and_then(|m| m.get("usage")));
        if let Some(u) = u.filter(|u| u.is_object()) {
            if let Some(n) = u
                .get("prompt_tokens")
                .or(u.get("input_tokens"))
                .and_then(Value::as_i64)
            {
                input = Some(n);
            }
            if let Some(n) = u
                .get("completion_tokens")
                .or(u.get("output_tokens"))
                .and_then(Value::as_i64)
            {
                output = Some(n);
            }
        }
        if let Some(n) = v.get("prompt_eval_count").and_then(Value::as_i64) {
            input = Some(n);
        }
        if let Some(n) = v.get("eval_count").and_then(Value::as_i64) {
            output = Some(n);
        }
        if let Some(u) = v.get("usageMetadata") {
            if let Some(n) = u.get("promptTokenCount").and_then(Value::as_i64) {
                input = Some(n);
            }
            if let Some(n) = u.get("candidatesTokenCount").and_then(Value::as_i64) {
                output = Some(n);
            }
        }
    }
    Some((input?, output?))
}

async fn call(gw: &Llmux, key: &str, path: &str, body: Value) -> (u16, Seen, String) {
    let mut req = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .json(&body);
    if path.starts_with("/v1beta") {
        req = req.header("x-goog-api-key", key);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let request_id = header(&resp, "x-request-id");
    let text = resp.text().await.unwrap();
    (
        status,
        Seen {
            request_id,
            usage: usage_in(&text),
        },
        text,
    )
}

/// The call log of `app`, every page.
async fn calls_of(gw: &Llmux, app: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (s, page) = admin(
            gw,
            "GET",
            &format!("/calls?app={app}&limit=7&cursor={cursor}"),
            None,
        )
        .await;
        assert_eq!(s, 200, "{page}");
        out.extend(page["calls"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// The app's call records once there are `n` (or what there is after 10 s, for the caller's
/// assertion to show).
async fn wait_rows(gw: &Llmux, app: &str, n: usize) -> Vec<Value> {
    let enough = poll_until(Duration::from_secs(10), async || {
        let rows = calls_of(gw, app).await;
        (rows.len() >= n).then_some(rows)
    })
    .await;
    match enough {
        Some(rows) => rows,
        None => calls_of(gw, app).await,
    }
}

fn chat_body(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "max_tokens": 32,
           "messages": [{"role": "user", "content": "hello there, how are you"}]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_logged_with_the_upstreams_usage_and_billed() {
    for (label, store_url, _guard) in backends().await {
        let m = llmux_mock::MockServer::start(node(
            "m",
            &[
                "llama3:latest",
                "gpt-4o-mini",
                "claude-sonnet-4",
                "gemini-2.0-flash",
            ],
        ))
        .await
        .unwrap();
        let body = format!(
            "[auth]\nrequired = true\n{}{}{}{}\n[[pricing]]\nmodel = \"gpt-4o-mini\"\ninput_per_mtok = 1000.0\noutput_per_mtok = 2000.0\n",
            ollama("gpu", &m.url()),
            upstream("oai", "openai", &m.url(), &["gpt-4o-mini"]),
            upstream("ant", "anthropic", &m.url(), &["claude-sonnet-4"]),
            upstream("gem", "gemini", &m.url(), &["gemini-2.0-flash"]),
        );
        let gw = Llmux::start_opts(Opts {
            body,
            store_url: store_url.clone(),
            ..Opts::default()
        });
        let (s, rich) = admin(
            &gw,
            "POST",
            "/apps",
            Some(json!({"name": "rich", "credits": 100.0})),
        )
        .await;
        assert_eq!(s, 201, "{rich}");
        let (s, _) = admin(
            &gw,
            "POST",
            "/apps",
            Some(json!({"name": "broke", "credits": 0.0})),
        )
        .await;
        assert_eq!(s, 201);
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": "r", "app": "rich"})),
        )
        .await;
        let key = k["key"].as_str().unwrap().to_string();
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": "b", "app": "broke"})),
        )
        .await;
        let broke = k["key"].as_str().unwrap().to_string();

        // Out of credit: refused before any upstream, in each caller's dialect.
        let before = m.stats().generations;
        let (s, _, text) = call(
            &gw,
            &broke,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 429, "{label}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["error"]["type"], "insufficient_quota", "{v}");
        assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
        assert!(text.contains("credit balance is 0"), "{text}");
        let (s, _, text) = call(
            &gw,
            &broke,
            "/v1/messages",
            chat_body("claude-sonnet-4", true),
        )
        .await;
        assert_eq!(s, 429, "{text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap()["type"],
            "error"
        );
        assert_eq!(
            m.stats().generations,
            before,
            "a refused call reaches no upstream"
        );
        // A free (local) model still works for it.
        let (s, _, _) = call(&gw, &broke, "/api/chat", chat_body("llama3", false)).await;
        assert_eq!(s, 200);
        // Embeddings: the input the upstream reported, no output.
        let (s, emb, text) = call(
            &gw,
            &broke,
            "/v1/embeddings",
            json!({"model": "llama3", "input": "hello there"}),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        let reported: Value = serde_json::from_str(&text).unwrap();
        let emb_input = reported["usage"]["prompt_tokens"].as_i64().unwrap();

        // Every dialect, passthrough and translated, streamed and not.
        let openai_stream_usage = json!({"model": "gpt-4o-mini", "stream": true,
            "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
        let gemini = json!({"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]});
        let plan: Vec<(&str, Value, bool)> = vec![
            (
                "/v1/chat/completions",
                chat_body("gpt-4o-mini", false),
                true,
            ),
            ("/v1/chat/completions", openai_stream_usage.clone(), true),
            // No usage asked for: the client sees none, yet llmux bills the upstream's count
            // (it asked the upstream for usage and stripped that chunk).
            (
                "/v1/chat/completions",
                chat_body("gpt-4o-mini", true),
                false,
            ),
            ("/api/chat", chat_body("llama3", true), true),
            ("/api/chat", chat_body("llama3", false), true),
            ("/v1/messages", chat_body("claude-sonnet-4", true), true),
            ("/v1/messages", chat_body("claude-sonnet-4", false), true),
            (
                "/v1beta/models/gemini-2.0-flash:generateContent",
                gemini.clone(),
                true,
            ),
            (
                "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse",
                gemini.clone(),
                true,
            ),
            // Translated.
            (
                "/v1/chat/completions",
                chat_body("claude-sonnet-4", false),
                true,
            ),
            (
                "/v1/chat/completions",
                json!({"model": "gemini-2.0-flash", "stream": true,
                "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]}),
                true,
            ),
            ("/v1/messages", chat_body("gpt-4o-mini", true), true),
            ("/api/chat", chat_body("claude-sonnet-4", true), true),
        ];
        let mut seen: HashMap<String, (Seen, bool)> = HashMap::new();
        for (path, body, reported) in &plan {
            let (s, got, text) = call(&gw, &key, path, body.clone()).await;
            assert_eq!(s, 200, "{label} {path}: {text}");
            assert_eq!(got.usage.is_some(), *reported, "{label} {path}: {text}");
            seen.insert(got.request_id.clone(), (got, *reported));
        }
        let n = plan.len();
        let rows = wait_rows(&gw, "rich", n).await;
        assert_eq!(rows.len(), n, "{label}: {rows:#?}");
        let mut cost = 0.0;
        for row in &rows {
            let (s, reported) = seen
                .get(row["request_id"].as_str().unwrap())
                .unwrap_or_else(|| panic!("unexpected row {row}"));
            assert_eq!(row["status"], 200, "{row}");
            assert_eq!(row["tokens_estimated"], false, "{reported} {row}");
            if let Some((i, o)) = s.usage {
                assert_eq!(row["input_tokens"], i, "{label}: {row}");
                assert_eq!(row["output_tokens"], o, "{label}: {row}");
            } else {
                assert!(row["output_tokens"].as_i64().unwrap() > 0, "{row}");
            }
            assert!(
                row["upstream"].is_string() && row["virtual_key_id"].is_string(),
                "{row}"
            );
            assert!(row["ttft_ms"].is_i64(), "{row}");
            let c = row["cost"].as_f64().unwrap();
            if row["requested_model"] == "llama3" {
                assert_eq!(c, 0.0, "local models are free: {row}");
            } else {
                assert!(c > 0.0, "{row}");
            }
            cost += c;
        }

        // Usage rollups: the same sums as the rows.
        let (s, u) = admin(&gw, "GET", "/usage?group_by=app,model", None).await;
        assert_eq!(s, 200, "{u}");
        let mine: Vec<&Value> = u["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["app_id"] == rich["id"])
            .collect();
        let sum = |k: &str| mine.iter().map(|r| r[k].as_f64().unwrap()).sum::<f64>();
        let rsum = |k: &str| rows.iter().map(|r| r[k].as_f64().unwrap()).sum::<f64>();
        assert_eq!(sum("calls"), n as f64);
        assert_eq!(sum("input_tokens"), rsum("input_tokens"));
        assert_eq!(sum("output_tokens"), rsum("output_tokens"));
        assert!(
            (sum("cost") - cost).abs() < 1e-9,
            "{} vs {cost}",
            sum("cost")
        );
        assert!(mine.iter().all(|r| r["app"] == rich["name"]), "{mine:?}");
        let models = mine.iter().filter(|r| r["model"] == "gpt-4o-mini").count();
        assert_eq!(models, 1, "one row per app × model");

        // CSV, by format= and by Accept.
        let csv = client()
            .get(gw.url("/admin/v1/usage?group_by=app&format=csv"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert!(header(&csv, "content-type").starts_with("text/csv"));
        let text = csv.text().await.unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "app_id,app,calls,errors,input_tokens,output_tokens,cost"
        );
        let line = lines
            .find(|l| l.starts_with(rich["id"].as_str().unwrap()))
            .unwrap();
        assert_eq!(line.split(',').nth(1), rich["name"].as_str(), "{line}");
        assert_eq!(line.split(',').nth(2).unwrap(), n.to_string(), "{line}");
        let csv = client()
            .get(gw.url("/admin/v1/usage?group_by=model,day"))
            .header("accept", "text/csv")
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(csv.starts_with("start,model,calls"), "{csv}");

        // The balance went down by exactly the cost (charged in the writer's transaction).
        let (_, app) = admin(&gw, "GET", "/apps/rich", None).await;
        let credits = app["credits"].as_f64().unwrap();
        assert!(
            (100.0 - cost - credits).abs() < 1e-6,
            "{credits} after {cost}"
        );
        // The refused calls are logged too, with their class.
        let refused = calls_of(&gw, "broke").await;
        assert_eq!(refused.len(), 4, "{refused:#?}");
        let row = refused
            .iter()
            .find(|r| r["request_id"] == emb.request_id.as_str())
            .unwrap();
        assert_eq!(row["input_tokens"], emb_input, "{row}");
        assert_eq!(row["output_tokens"], 0, "{row}");
        assert_eq!(row["tokens_estimated"], false, "{row}");
        assert_eq!(
            refused
                .iter()
                .filter(|r| r["error_class"] == "insufficient_quota")
                .count(),
            2
        );
        // Filters.
        let (_, page) = admin(&gw, "GET", "/calls?model=llama3&status=200", None).await;
        assert_eq!(page["calls"].as_array().unwrap().len(), 4, "{page}");

        // A call refused by the rate limiter is logged too.
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": "slow", "app": "broke", "limits": {"rpm": 1}})),
        )
        .await;
        let slow = k["key"].as_str().unwrap().to_string();
        let (s, _, _) = call(&gw, &slow, "/api/chat", chat_body("llama3", false)).await;
        assert_eq!(s, 200);
        let (s, _, _) = call(&gw, &slow, "/api/chat", chat_body("llama3", false)).await;
        assert_eq!(s, 429);
        let rows = wait_rows(&gw, "broke", 6).await;
        assert_eq!(rows.len(), 6, "{rows:#?}");
        assert!(
            rows.iter()
                .any(|r| r["status"] == 429 && r["error_class"] == "rate_limited"),
            "{rows:#?}"
        );

        // A daily budget: the first call spends past it, the next is refused.
        let (s, _) = admin(
            &gw,
            "POST",
            "/apps",
            Some(json!({"name": "capped", "credits": 100.0, "daily_budget": 0.0001})),
        )
        .await;
        assert_eq!(s, 201);
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": "c", "app": "capped"})),
        )
        .await;
        let capped = k["key"].as_str().unwrap().to_string();
        let (s, _, _) = call(
            &gw,
            &capped,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 200);
        let (s, _, text) = call(
            &gw,
            &capped,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 429, "{text}");
        assert!(text.contains("daily budget"), "{text}");

        // Spending the credit gets the app refused: set it to almost nothing.
        let (s, _) = admin(&gw, "PATCH", "/apps/rich", Some(json!({"credits": 0.0}))).await;
        assert_eq!(s, 200);
        let (s, _, text) = call(
            &gw,
            &key,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 429, "{text}");
        // A top-up adds to the balance at once (and is audited).
        let (s, app) = admin(
            &gw,
            "POST",
            "/apps/rich/credits",
            Some(json!({"add": 50.0})),
        )
        .await;
        assert_eq!((s, app["credits"].as_f64()), (200, Some(50.0)), "{app}");
        let (s, _, text) = call(
            &gw,
            &key,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        let (_, audit) = admin(&gw, "GET", "/audit", None).await;
        assert!(audit.to_string().contains("app.credits"), "{audit}");
        let (s, err) = admin(&gw, "POST", "/apps/rich/credits", Some(json!({"add": "x"}))).await;
        assert_eq!(s, 400, "{err}");
        // Without credits, an app is not metered; `null` stops metering an app.
        let (s, free) = admin(&gw, "POST", "/apps", Some(json!({"name": "unmetered"}))).await;
        assert_eq!((s, &free["credits"]), (201, &Value::Null), "{free}");
        let (_, k) = admin(
            &gw,
            "POST",
            "/keys",
            Some(json!({"name": "u", "app": "unmetered"})),
        )
        .await;
        let unmetered = k["key"].as_str().unwrap().to_string();
        let (s, _, text) = call(
            &gw,
            &unmetered,
            "/v1/chat/completions",
            chat_body("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        let (s, app) = admin(&gw, "PATCH", "/apps/rich", Some(json!({"credits": null}))).await;
        assert_eq!((s, &app["credits"]), (200, &Value::Null), "{app}");
        let (_, app) = admin(&gw, "PATCH", "/apps/rich", Some(json!({"credits": 0.0}))).await;
        assert_eq!(app["credits"].as_f64(), Some(0.0), "{app}");

        // Prices set through the API apply at once.
        let (s, p) = admin(
            &gw,
            "PUT",
            "/pricing/llama3",
            Some(json!({"input_per_mtok": 1.0, "output_per_mtok": 1.0})),
        )
        .await;
        assert_eq!(s, 200, "{p}");
        let (_, table) = admin(&gw, "GET", "/pricing", None).await;
        let entry = table
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["model"] == "llama3")
            .unwrap()
            .clone();
        assert_eq!(entry["source"], "api");
        assert!(entry.get("cached_input_per_mtok").is_none(), "{entry}");
        // Cache prices through the API too; a bad one is refused naming it, and a shipped
        // price carries the provider's.
        let (s, p) = admin(
            &gw,
            "PUT",
            "/pricing/llama3",
            Some(json!({"input_per_mtok": 1.0, "output_per_mtok": 1.0,
                        "cached_input_per_mtok": 0.1, "cache_write_per_mtok": 1.25})),
        )
        .await;
        assert_eq!(
            (s, p["cached_input_per_mtok"].as_f64()),
            (200, Some(0.1)),
            "{p}"
        );
        let (s, p) = admin(
            &gw,
            "PUT",
            "/pricing/llama3",
            Some(json!({"input_per_mtok": 1.0, "output_per_mtok": 1.0,
                        "cache_write_per_mtok": -1})),
        )
        .await;
        assert_eq!(s, 400, "{p}");
        assert!(p.to_string().contains("cache_write_per_mtok"), "{p}");
        let (_, table) = admin(&gw, "GET", "/pricing", None).await;
        let find = |model: &str| {
            table
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["model"] == model)
                .unwrap()
                .clone()
        };
        let llama = find("llama3");
        assert_eq!(
            (
                llama["cached_input_per_mtok"].as_f64(),
                llama["cache_write_per_mtok"].as_f64()
            ),
            (Some(0.1), Some(1.25)),
            "{llama}"
        );
        let sonnet = find("claude-sonnet-4");
        assert_eq!(
            (
                sonnet["cached_input_per_mtok"].as_f64(),
                sonnet["source"].as_str()
            ),
            (Some(0.3), Some("default")),
            "{sonnet}"
        );
        let (s, _, _) = call(&gw, &key, "/api/chat", chat_body("llama3", false)).await;
        assert_eq!(s, 429, "llama3 is priced now, and the app has no credit");

        let metrics = metrics_text(&gw).await;
        assert!(metrics.contains("llmux_call_log_queue_depth"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_in_flight_at_sigterm_are_all_in_the_log_after_restart() {
    let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        name: "slow".into(),
        models: vec!["llama3:latest".into(), "gpt-4o-mini".into()],
        chunk_delay: Duration::from_millis(100),
        chunks: 10,
        ..llmux_mock::MockConfig::default()
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}{}",
        ollama("gpu", &m.url()),
        upstream("oai", "openai", &m.url(), &["gpt-4o-mini"]),
    ));
    let (_, _) = admin(
        &gw,
        "POST",
        "/apps",
        Some(json!({"name": "a", "credits": 1000.0})),
    )
    .await;
    let (_, k) = admin(&gw, "POST", "/keys", Some(json!({"name": "k", "app": "a"}))).await;
    let key = k["key"].as_str().unwrap().to_string();

    // 30 streams of about a second each, started together.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let url = gw.url(if i % 2 == 0 {
            "/api/chat"
        } else {
            "/v1/chat/completions"
        });
        let key = key.clone();
        let model = if i % 2 == 0 { "llama3" } else { "gpt-4o-mini" };
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .bearer_auth(&key)
                .json(&json!({"model": model, "stream": true,
                    "stream_options": {"include_usage": true},
                    "messages": [{"role": "user", "content": "x"}]}))
                .send()
                .await
                .unwrap();
            let id = header(&resp, "x-request-id");
            let mut body = resp.bytes_stream();
            let mut text = Vec::new();
            while let Some(c) = body.next().await {
                text.extend_from_slice(&c.unwrap());
            }
            (id, usage_in(&String::from_utf8_lossy(&text)))
        }));
    }
    // SIGTERM once every stream is open.
    gw.wait_in_flight(30).await;
    gw.signal("TERM");
    let mut seen = HashMap::new();
    for t in tasks {
        let (id, usage) = t.await.unwrap();
        assert!(
            usage.is_some(),
            "every stream finished within the grace period"
        );
        seen.insert(id, usage.unwrap());
    }
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", gw.log_text());

    let gw = gw.restart(&[]);
    let rows = wait_rows(&gw, "a", 30).await;
    assert_eq!(rows.len(), 30, "{}", gw.log_text());
    for row in rows {
        let (i, o) = seen[row["request_id"].as_str().unwrap()];
        assert_eq!(
            (
                row["input_tokens"].as_i64().unwrap(),
                row["output_tokens"].as_i64().unwrap()
            ),
            (i, o),
            "{row}"
        );
        assert_eq!(row["tokens_estimated"], false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_logged_only_when_asked_and_without_secrets() {
    let m = llmux_mock::MockServer::start(node("m", &["llama3:latest"]))
        .await
        .unwrap();
    for bodies in [false, true] {
        let gw = Llmux::start(&format!(
            "[auth]\nrequired = true\n[logs]\nbodies = {bodies}\nretention_days = 30\n{}",
            ollama("gpu", &m.url())
        ));
        admin(&gw, "POST", "/apps", Some(json!({"name": "a"}))).await;
        let (_, k) = admin(&gw, "POST", "/keys", Some(json!({"name": "k", "app": "a"}))).await;
        let key = k["key"].as_str().unwrap().to_string();
        let body = json!({"model": "llama3", "stream": false, "messages": [{"role": "user",
            "content": "my key is sk-proj-TOPSECRET0123456789 keep it"}]});
        let (s, _, _) = call(&gw, &key, "/api/chat", body).await;
        assert_eq!(s, 200);
        let rows = wait_rows(&gw, "a", 1).await;
        let row = &rows[0];
        if bodies {
            let req = row["request_body"].as_str().unwrap();
            assert!(
                req.contains("my key is sk-") && !req.contains("TOPSECRET"),
                "{req}"
            );
            assert!(
                row["response_body"].as_str().unwrap().contains("done"),
                "{row}"
            );
        } else {
            assert!(
                row.get("request_body").is_none() && row.get("response_body").is_none(),
                "{row}"
            );
        }
    }
}
