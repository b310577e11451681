//! End-to-end: the call log cannot be stopped or lost — a bad model name is refused at the edge,
//! streams are billed with the upstream's own usage, streams cut at shutdown are logged, records
//! the store cannot take at shutdown are spilled and replayed — and the log lines and key
//! signals operators read. SQLite, and PostgreSQL when `LLMUX_TEST_POSTGRES_URL` is set.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, Connection as _};
use std::time::{Duration, Instant};

/// A key of a new app `a` with plenty of credit.
async fn app_key(gw: &Llmux) -> String {
    let (s, _) = admin(
        gw,
        "POST",
        "/apps",
        Some(json!({"name": "a", "credits": 1000.0})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, k) = admin(gw, "POST", "/keys", Some(json!({"name": "k", "app": "a"}))).await;
    k["key"].as_str().unwrap().to_string()
}

fn oai(name: &str, url: &str, keys: &[&str]) -> String {
    let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
    format!(
        "[[upstreams]]\nname = \"{name}\"\nkind = \"openai\"\nurl = \"{url}/v1\"\nkeys = [{}]\nmodels = [\"gpt-4o-mini\"]\n",
        keys.join(", ")
    )
}

async fn rows(gw: &Llmux) -> Vec<Value> {
    let (s, page) = admin(gw, "GET", "/calls?limit=1000", None).await;
    assert_eq!(s, 200, "{page}");
    page["calls"].as_array().unwrap().clone()
}

/// The call records once there are `n` (or what there is after 15 s, for the caller's
/// assertion to show).
async fn wait_rows(gw: &Llmux, n: usize) -> Vec<Value> {
    let enough = poll_until(Duration::from_secs(15), async || {
        let r = rows(gw).await;
        (r.len() >= n).then_some(r)
    })
    .await;
    match enough {
        Some(r) => r,
        None => rows(gw).await,
    }
}

/// Sends the chat call and reads the whole answer: (status, request id, text).
async fn chat_call(gw: &Llmux, key: &str, path: &str, body: Value) -> (u16, String, String) {
    let resp = client()
        .post(gw.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = header(&resp, "x-request-id");
    (status, id, resp.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_model_names_are_refused_and_cannot_stop_the_call_log() {
    let m = llmux_mock::MockServer::start(node("m", &["gpt-4o-mini"]))
        .await
        .unwrap();
    /// `(store url, PostgreSQL schema dropped after its run)`; `None` url: SQLite.
    type Backend = (Option<String>, Option<PgSchema>);
    let mut stores: Vec<Backend> = vec![(None, None)];
    if let Some(pg) = PgSchema::create("llmux_rec").await {
        stores.push((Some(pg.url.clone()), Some(pg)));
    }
    for (store_url, pg) in stores {
        let gw = Llmux::start_opts(Opts {
            body: format!("[auth]\nrequired = true\n{}", oai("oai", &m.url(), &["k1"])),
            store_url,
            ..Opts::default()
        });
        let key = app_key(&gw).await;
        for (path, model) in [
            ("/v1/chat/completions", "gpt-4o-mini\u{0}x".to_string()),
            ("/v1/chat/completions", "m".repeat(30_000)),
            ("/api/chat", "llama\u{1}3".to_string()),
        ] {
            let (status, _, text) = chat_call(&gw, &key, path, chat(&model, false)).await;
            assert_eq!(status, 400, "{text}");
            assert!(text.contains("`model`"), "names the field: {text}");
            assert!(
                text.len() < 500,
                "the name is not echoed: {} bytes",
                text.len()
            );
        }
        // A Gemini model in the path is checked the same way.
        let long = "g".repeat(1000);
        let resp = client()
            .post(gw.url(&format!("/v1beta/models/{long}:generateContent")))
            .header("x-goog-api-key", &key)
            .json(&json!({"contents": [{"parts": [{"text": "hi"}]}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 400);
        assert!(resp.text().await.unwrap().len() < 500);
        // Names in paths are not echoed whole either.
        let resp = client()
            .get(gw.url(&format!("/v1/models/{}", "x".repeat(5000))))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 404);
        assert!(resp.text().await.unwrap().len() < 600);
        // The log goes on: later calls are logged and billed.
        for _ in 0..3 {
            let (status, _, text) = chat_call(
                &gw,
                &key,
                "/v1/chat/completions",
                chat("gpt-4o-mini", false),
            )
            .await;
            assert_eq!(status, 200, "{text}");
        }
        let r = wait_rows(&gw, 3).await;
        assert_eq!(r.len(), 3, "{}", gw.log_text());
        drop(gw);
        drop(pg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_billed_with_the_upstreams_usage_and_the_client_sees_no_usage_chunk() {
    let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        chunks: 40,
        ..node("m", &["gpt-4o-mini"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}",
        oai("oai", &m.url(), &["k1"])
    ));
    let key = app_key(&gw).await;
    let mut asked = chat("gpt-4o-mini", true);
    asked["stream_options"] = json!({"include_usage": true});
    let (s, asked_id, text) = chat_call(&gw, &key, "/v1/chat/completions", asked).await;
    assert_eq!(s, 200);
    let usage = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.strip_prefix("data: ")?).ok())
        .find_map(|v| v.get("usage").filter(|u| u.is_object()).cloned())
        .expect("the client that asked sees usage");
    let want = (
        usage["prompt_tokens"].as_i64().unwrap(),
        usage["completion_tokens"].as_i64().unwrap(),
    );
    let (s, plain_id, text) =
        chat_call(&gw, &key, "/v1/chat/completions", chat("gpt-4o-mini", true)).await;
    assert_eq!(s, 200);
    assert!(!text.contains("\"usage\":{"), "no usage chunk: {text}");
    assert!(!text.contains("\"choices\":[]"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    let r = wait_rows(&gw, 2).await;
    for id in [&asked_id, &plain_id] {
        let row = r.iter().find(|r| r["request_id"] == **id).unwrap();
        assert_eq!(
            (
                row["input_tokens"].as_i64().unwrap(),
                row["output_tokens"].as_i64().unwrap()
            ),
            want,
            "{row}"
        );
        assert_eq!(row["tokens_estimated"], false, "{row}");
        assert!(row["chunks"].as_i64().unwrap() >= 40, "{row}");
        assert_eq!(row["reported_model"], "gpt-4o-mini", "{row}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_open_at_the_end_of_the_grace_period_are_cut_logged_and_billed() {
    let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        chunk_delay: Duration::from_millis(100),
        chunks: 300,
        ..node("m", &["gpt-4o-mini", "llama3:latest"])
    })
    .await
    .unwrap();
    let gw = Llmux::start_with_server(
        &format!(
            "[auth]\nrequired = true\n{}{}",
            oai("oai", &m.url(), &["k1"]),
            ollama("gpu", &m.url())
        ),
        "shutdown_grace = \"1s\"",
    );
    let key = app_key(&gw).await;
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (path, model) = if i % 2 == 0 {
            ("/v1/chat/completions", "gpt-4o-mini")
        } else {
            ("/api/chat", "llama3")
        };
        let url = gw.url(path);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .bearer_auth(&key)
                .json(&chat(model, true))
                .send()
                .await
                .unwrap();
            let mut body = resp.bytes_stream();
            let mut n = 0;
            while let Some(Ok(c)) = body.next().await {
                n += c.len();
            }
            n
        }));
    }
    // SIGTERM once every stream is open.
    gw.wait_in_flight(6).await;
    gw.signal("TERM");
    let stopped = Instant::now();
    for t in tasks {
        assert!(t.await.unwrap() > 0);
    }
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", gw.log_text());
    assert!(
        stopped.elapsed() < Duration::from_secs(6),
        "{:?}",
        stopped.elapsed()
    );
    let gw = gw.restart(&[]);
    let r = wait_rows(&gw, 6).await;
    assert_eq!(r.len(), 6, "{}", gw.log_text());
    for row in r {
        assert_eq!(row["status"], 200, "{row}");
        assert_eq!(row["error_class"], "shutdown", "{row}");
        assert!(row["output_tokens"].as_i64().unwrap() > 0, "{row}");
        assert!(row["cost"].as_f64().unwrap() >= 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_the_store_cannot_take_at_shutdown_are_spilled_and_replayed() {
    let m = llmux_mock::MockServer::start(node("m", &["gpt-4o-mini"]))
        .await
        .unwrap();
    let gw = Llmux::start_with_server(
        &format!("[auth]\nrequired = true\n{}", oai("oai", &m.url(), &["k1"])),
        "shutdown_grace = \"2s\"",
    );
    let key = app_key(&gw).await;
    let db = format!("sqlite://{}/data/llmux.db", gw.dir.path().display());
    let rename = |from: &'static str, to: &'static str| {
        let db = db.clone();
        async move {
            let mut c = sqlx::SqliteConnection::connect(&db).await.unwrap();
            sqlx::query(AssertSqlSafe(format!("ALTER TABLE {from} RENAME TO {to}")))
                .execute(&mut c)
                .await
                .unwrap();
            c.close().await.unwrap();
        }
    };
    // The store cannot take call records any more (every write fails), calls go on.
    rename("call_log", "call_log_away").await;
    let n = 200;
    for _ in 0..n {
        let (s, _, t) = chat_call(
            &gw,
            &key,
            "/v1/chat/completions",
            chat("gpt-4o-mini", false),
        )
        .await;
        assert_eq!(s, 200, "{t}");
    }
    gw.signal("TERM");
    let stopped = Instant::now();
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    let took = stopped.elapsed();
    assert_eq!(status.code(), Some(0), "{}", gw.log_text());
    // Grace (nothing open: ends at once) + the writer's bound (3 s) + a margin.
    assert!(took < Duration::from_secs(6), "exit took {took:?}");
    let spill = gw.dir.path().join("data").join("call-log-spill.jsonl");
    let text = std::fs::read_to_string(&spill).unwrap_or_else(|e| panic!("{e}: {}", gw.log_text()));
    assert_eq!(text.lines().count(), n, "{}", gw.log_text());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&spill).unwrap().permissions().mode() & 0o777,
        0o600
    );
    eprintln!("store down at SIGTERM: {n} records spilled, exit in {took:?}");
    rename("call_log_away", "call_log").await;
    let gw = gw.restart(&[]);
    let r = wait_rows(&gw, n).await;
    assert_eq!(r.len(), n, "{}", gw.log_text());
    assert!(!spill.exists(), "a replayed spill file is removed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_logs_one_json_line() {
    let m = llmux_mock::MockServer::start(node("m", &["gpt-4o-mini"]))
        .await
        .unwrap();
    // Streams of this one break after two chunks.
    let broken = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        faults: llmux_mock::Faults {
            drop_after: Some(2),
            ..llmux_mock::Faults::default()
        },
        ..node("b", &["broken"])
    })
    .await
    .unwrap();
    let gw = Llmux::start_opts(Opts {
        body: format!(
            "{}[[upstreams]]\nname = \"b\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"k\"]\nmodels = [\"broken\"]\n",
            oai("oai", &m.url(), &["k1"]),
            broken.url()
        ),
        env: vec![("LLMUX_LOG_FORMAT".into(), "json".into())],
        ..Opts::default()
    });
    let mut ids = Vec::new();
    for (model, stream) in [
        ("gpt-4o-mini", false),
        ("gpt-4o-mini", true),
        ("no-such-model", false),
        ("bad\u{0}model", false),
        ("broken", true),
    ] {
        let (_, id, _) = chat_call(&gw, "x", "/v1/chat/completions", chat(model, stream)).await;
        ids.push(id);
    }
    // The call lines are written as each call ends, the broken stream's last.
    eventually(
        Duration::from_secs(5),
        "a call line for each call",
        async || {
            let calls: Vec<Value> = gw
                .log
                .lock()
                .unwrap()
                .iter()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|v| v["fields"]["message"] == "call")
                .collect();
            ids.iter()
                .all(|id| calls.iter().any(|v| v["fields"]["request_id"] == *id))
        },
    )
    .await;
    let log = gw.log.lock().unwrap().clone();
    for line in &log {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
    }
    for id in &ids {
        let calls: Vec<Value> = log
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "call" && v["fields"]["request_id"] == *id)
            .collect();
        assert_eq!(calls.len(), 1, "one call line for {id}: {log:#?}");
        assert!(calls[0]["fields"]["duration_ms"].is_u64(), "{}", calls[0]);
    }
    // The stream that broke half-way (after its 200) is logged as a failure.
    let broke: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "call" && v["fields"]["request_id"] == ids[4])
        .collect();
    assert_eq!(broke[0]["level"], "ERROR", "{}", broke[0]);
    assert_eq!(broke[0]["fields"]["outcome"], "upstream_error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_states_show_success_rate_and_latency_and_retries_are_counted() {
    // Every second generation call is refused with 429 (health checks are not): the second
    // call's first attempt fails on one key and is retried on the other.
    let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        faults: llmux_mock::Faults {
            fail_rate: 0.5,
            fail_status: 429,
            ..llmux_mock::Faults::default()
        },
        ..node("m", &["gpt-4o-mini"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&oai("oai", &m.url(), &["ka", "kb"]));
    for _ in 0..2 {
        let (s, _, t) =
            chat_call(&gw, "x", "/v1/chat/completions", chat("gpt-4o-mini", false)).await;
        assert_eq!(s, 200, "{t}");
    }
    let ups = gw.upstreams().await;
    let list = ups
        .as_array()
        .cloned()
        .or_else(|| ups["upstreams"].as_array().cloned())
        .unwrap();
    let keys = list[0]["keys"].as_array().unwrap().clone();
    let rates: Vec<f64> = keys
        .iter()
        .filter_map(|k| k["success_rate"].as_f64())
        .collect();
    assert_eq!(rates.len(), 2, "{keys:?}");
    assert!(rates.contains(&1.0), "{keys:?}");
    assert!(rates.iter().any(|r| *r < 1.0), "{keys:?}");
    assert!(
        keys.iter()
            .any(|k| k["latency_ms"].as_f64().is_some_and(|l| l > 0.0)),
        "{keys:?}"
    );
    let metrics = metrics_text(&gw).await;
    assert!(
        metrics.contains("llmux_retries_total{outcome=\"success\"} 1"),
        "{metrics}"
    );
}

/// Measures the loss window under SIGKILL (reported in docs/accounting.md): ~1,000 calls from
/// 20 clients, SIGKILL right after the last answer, then count the rows after a restart.
/// `cargo test -p llmux --test records sigkill -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn sigkill_loss_window() {
    let m = llmux_mock::MockServer::start(node("m", &["gpt-4o-mini"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[auth]\nrequired = true\n{}",
        oai("oai", &m.url(), &["k1"])
    ));
    let key = app_key(&gw).await;
    let url = gw.url("/v1/chat/completions");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (url, key) = (url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..50 {
                let r = client()
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&chat("gpt-4o-mini", false))
                    .send()
                    .await
                    .unwrap();
                if r.status().is_success() && r.bytes().await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut answered = 0;
    for t in tasks {
        answered += t.await.unwrap();
    }
    let mut gw = gw;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();
    let gw = gw.restart(&[]);
    let logged = wait_rows(&gw, answered).await.len();
    eprintln!(
        "SIGKILL after {answered} answered calls: {logged} logged, {} lost",
        answered - logged
    );
}

#[test]
fn with_json_logs_start_up_errors_are_json_lines_too() {
    for args in [
        &["serv"][..],
        &["serve", "--config", "/nonexistent/llmux.toml"][..],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(args)
            .env("LLMUX_LOG_FORMAT", "json")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty());
        for line in err.lines() {
            let v: Value =
                serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            assert_eq!(v["level"], "ERROR", "{line}");
        }
    }
}

/// A refused call's line names the model asked for, and a client that hangs up while llmux waits
/// for the first byte (the handler is dropped) still gets its one `client_closed` line.
/// Calls refused before their handler runs — a wrong key (401), the per-IP limit (429) — log
/// their one `call` line too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_refused_before_their_handler_log_one_line_too() {
    let m = llmux_mock::MockServer::start(node("m", &["gpt-4o-mini"]))
        .await
        .unwrap();
    let gw = Llmux::start_opts(Opts {
        body: format!(
            "[auth]\nrequired = true\n[limits]\nip = \"2/min\"\n{}",
            oai("oai", &m.url(), &["k1"])
        ),
        env: vec![("LLMUX_LOG_FORMAT".into(), "json".into())],
        ..Opts::default()
    });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (s, _, _) = chat_call(
            &gw,
            "sk-llmux-wrong-key",
            "/v1/chat/completions",
            chat("gpt-4o-mini", false),
        )
        .await;
        statuses.push(s);
    }
    assert_eq!(statuses, [401, 401, 429]);
    let lines = || -> Vec<Value> {
        gw.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "call")
            .collect()
    };
    poll_until(Duration::from_secs(3), async || lines().len() >= 3).await;
    let got: Vec<(Value, Value)> = lines()
        .iter()
        .map(|v| {
            (
                v["fields"]["status"].clone(),
                v["fields"]["outcome"].clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (json!(401), json!("refused")),
            (json!(401), json!("refused")),
            (json!(429), json!("refused"))
        ],
        "{}",
        gw.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_hung_up_calls_log_their_line_with_the_model() {
    let slow = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        ttft: Duration::from_secs(5),
        ..node("slow", &["gpt-4o-mini"])
    })
    .await
    .unwrap();
    let gw = Llmux::start_opts(Opts {
        body: oai("slow", &slow.url(), &["k1"]),
        env: vec![("LLMUX_LOG_FORMAT".into(), "json".into())],
        ..Opts::default()
    });
    let (s, refused, _) = chat_call(
        &gw,
        "x",
        "/v1/chat/completions",
        chat("no-such-model", false),
    )
    .await;
    assert_eq!(s, 404);
    let hung = client()
        .post(gw.url("/v1/chat/completions"))
        .timeout(Duration::from_millis(500))
        .json(&chat("gpt-4o-mini", false))
        .send()
        .await;
    assert!(hung.is_err(), "the client gave up first");
    let lines = |id: Option<&str>| -> Vec<Value> {
        gw.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["fields"]["message"] == "call")
            .filter(|v| id.is_none_or(|id| v["fields"]["request_id"] == id))
            .collect()
    };
    poll_until(Duration::from_secs(3), async || lines(None).len() >= 2).await;
    let r = lines(Some(&refused));
    assert_eq!(r.len(), 1, "{}", gw.log_text());
    assert_eq!(r[0]["fields"]["model"], "no-such-model", "{}", r[0]);
    let all = lines(None);
    assert_eq!(all.len(), 2, "one line per call: {}", gw.log_text());
    let h = all
        .iter()
        .find(|v| v["fields"]["request_id"] != refused.as_str())
        .unwrap();
    assert_eq!(h["fields"]["outcome"], "client_closed", "{h}");
    assert_eq!(h["fields"]["model"], "gpt-4o-mini", "{h}");
    assert_eq!(h["fields"]["status"], 499, "{h}");
}

/// Calls still waiting for their upstream's first byte when the grace period ends (a slow
/// upstream; here one answered whole and translated, one passed through) are answered 503 in
/// their dialect and logged and recorded as `shutdown`, before the call-log writer stops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_waiting_at_the_end_of_the_grace_period_are_answered_and_recorded() {
    let m = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        ttft: Duration::from_secs(30),
        ..node("m", &["gpt-4o-mini"])
    })
    .await
    .unwrap();
    let gw = Llmux::start_with_server(
        &format!("[auth]\nrequired = true\n{}", oai("oai", &m.url(), &["k1"])),
        "shutdown_grace = \"1s\"",
    );
    let key = app_key(&gw).await;
    let mut tasks = Vec::new();
    for path in ["/v1/chat/completions", "/api/chat"] {
        let url = gw.url(path);
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let resp = client()
                .post(url)
                .bearer_auth(&key)
                .json(&chat("gpt-4o-mini", false))
                .send()
                .await;
            resp.map(|r| r.status().as_u16()).unwrap_or(0)
        }));
    }
    // SIGTERM once both prompts have reached the upstream.
    eventually(
        Duration::from_secs(10),
        "both calls at the upstream",
        async || m.stats().in_flight >= 2,
    )
    .await;
    gw.signal("TERM");
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let mut gw = gw;
    let status = gw.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{}", gw.log_text());
    let log = gw.log_text();
    assert_eq!(log.matches("outcome=\"shutdown\"").count(), 2, "{log}");
    let gw = gw.restart(&[]);
    let r = wait_rows(&gw, 2).await;
    assert_eq!(r.len(), 2, "{}", gw.log_text());
    for row in r {
        assert_eq!(row["status"], 503, "{row}");
        assert_eq!(row["error_class"], "shutdown", "{row}");
        // The prompt had reached the upstream: the record says where (and charges it).
        assert_eq!(row["upstream"], "oai", "{row}");
    }
}
