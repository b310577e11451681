//! End-to-end: the web console's HTTP side on the real binary — files and security headers,
//! `/` for browsers, the session cookie on the admin API with its Origin check, "check now".
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};

async fn admin_post(gw: &Llmux, path: &str, body: Value) -> u16 {
    client()
        .post(gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Signs `user` in through `POST /ui/session` and returns the cookie pair `llmux_session=…`.
async fn sign_in(gw: &Llmux, user: &str, password: &str) -> String {
    let origin = gw.url("");
    let resp = client()
        .post(gw.url("/ui/session"))
        .header("origin", origin.trim_end_matches('/'))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookie = header(&resp, "set-cookie");
    for part in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(cookie.contains(part), "{cookie}");
    }
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_files_redirect_cookie_session_and_csrf() {
    let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&ollama("gpu-a", &a.url()));
    let http = client();
    let no_redirect = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();

    // A browser asking for / goes to the console; an Ollama client keeps the banner.
    let r = no_redirect
        .get(gw.url("/"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(header(&r, "location"), "/ui/");
    let r = http.get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "Ollama is running");

    // The files, with their security headers.
    for (path, ty) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let r = http.get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert!(header(&r, "content-type").starts_with(ty), "{path}");
        assert!(header(&r, "content-security-policy").starts_with("default-src 'self'"));
        assert_eq!(header(&r, "x-frame-options"), "DENY");
        assert_eq!(header(&r, "x-content-type-options"), "nosniff");
        assert_eq!(header(&r, "referrer-policy"), "same-origin");
    }

    // First run: no user yet.
    let state: Value = http
        .get(gw.url("/ui/setup-state"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state, json!({ "users": false }));
    for (name, role) in [("ann", "admin"), ("vic", "viewer")] {
        let status = admin_post(
            &gw,
            "/users",
            json!({ "username": name, "password": "long-password-1", "role": role }),
        )
        .await;
        assert_eq!(status, 201);
    }

    // A sign-in from another site is refused (login CSRF).
    let r = http
        .post(gw.url("/ui/session"))
        .header("origin", "http://evil.example")
        .json(&json!({ "username": "ann", "password": "long-password-1" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    let ann = sign_in(&gw, "ann", "long-password-1").await;
    let origin = gw.url("").trim_end_matches('/').to_owned();
    let who: Value = http
        .get(gw.url("/ui/session"))
        .header("cookie", &ann)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(who["username"], "ann");
    assert_eq!(who["role"], "admin");
    // Reads through the cookie.
    let r = http
        .get(gw.url("/admin/v1/upstreams"))
        .header("cookie", &ann)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Writes need a same-origin Origin: a forged cross-site POST with the cookie is refused.
    let post = |cookie: &str, origin: Option<&str>, name: &str| {
        let mut req = http
            .post(gw.url("/admin/v1/apps"))
            .header("cookie", cookie.to_owned())
            .json(&json!({ "name": name }));
        if let Some(o) = origin {
            req = req.header("origin", o.to_owned());
        }
        req.send()
    };
    assert_eq!(
        post(&ann, Some("http://evil.example"), "forged")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(post(&ann, None, "forged").await.unwrap().status(), 403);
    assert_eq!(
        post(&ann, Some(&origin), "shop").await.unwrap().status(),
        201
    );
    // The viewer's cookie, same origin: read-only.
    let vic = sign_in(&gw, "vic", "long-password-1").await;
    assert_eq!(
        post(&vic, Some(&origin), "viewer-app")
            .await
            .unwrap()
            .status(),
        403
    );
    // The audit names the user behind the cookie.
    let audit: Value = http
        .get(gw.url("/admin/v1/audit?limit=1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit[0]["actor"], "ann", "{audit}");

    // "Check now".
    let r = http
        .post(gw.url("/admin/v1/upstreams/gpu-a/refresh"))
        .header("cookie", &ann)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let up: Value = r.json().await.unwrap();
    assert_eq!(up["pool"], "active");
    let r = http
        .post(gw.url("/admin/v1/upstreams/nope/refresh"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Signing out clears the cookie.
    let r = http
        .delete(gw.url("/ui/session"))
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert!(header(&r, "set-cookie").contains("Max-Age=0"));
}

async fn calls(gw: &Llmux, query: &str) -> Vec<Value> {
    let page: Value = client()
        .get(gw.url(&format!("/admin/v1/calls?{query}")))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["calls"].as_array().unwrap().clone()
}

/// The call detail's data: every attempt of a call that failed over (upstream, provider key,
/// status, error class, time), whether it streamed, and the calls filters on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_call_log_keeps_every_attempt_and_filters_on_error_class_and_stream() {
    let bad = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        faults: llmux_mock::Faults {
            fail_rate: 1.0,
            fail_status: 500,
            ..llmux_mock::Faults::default()
        },
        ..node("bad", &["gpt-4o-mini", "solo"])
    })
    .await
    .unwrap();
    let good = llmux_mock::MockServer::start(node("good", &["gpt-4o-mini"]))
        .await
        .unwrap();
    let gw = Llmux::start(&format!(
        "[routing]\nstrategy = \"round_robin\"\n{}{}",
        openai("bad", &bad.url(), "sk-bad-key-0001"),
        openai("good", &good.url(), "sk-good-key-0002")
    ));
    let http = client();
    for stream in [false, true] {
        let r = http
            .post(gw.url("/v1/chat/completions"))
            .json(&chat("gpt-4o-mini", stream))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = http
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("solo", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    r.bytes().await.unwrap();

    let rows = eventually(
        std::time::Duration::from_secs(10),
        "three call records",
        async || {
            let rows = calls(&gw, "limit=10").await;
            (rows.len() == 3).then_some(rows)
        },
    )
    .await;
    // Round robin: one of the two good calls went to `bad` first and failed over.
    let failed_over = rows
        .iter()
        .find(|c| c["requested_model"] == "gpt-4o-mini" && c["attempts"] == 2)
        .unwrap_or_else(|| panic!("no call failed over: {rows:?}"));
    let log = failed_over["attempt_log"].as_array().unwrap();
    assert_eq!(log.len(), 2, "{failed_over}");
    assert_eq!(log[0]["upstream"], "bad");
    assert_eq!(log[0]["status"], 500);
    assert_eq!(log[0]["error_class"], "server_error");
    assert!(
        log[0]["key_id"].as_str().is_some_and(|k| !k.is_empty()),
        "{log:?}"
    );
    assert!(log[0]["ms"].is_u64());
    assert_eq!(log[1]["upstream"], "good");
    assert_eq!(log[1]["status"], 200);
    assert!(log[1]["error_class"].is_null());
    assert!(log[1]["key_id"].is_string());

    // A call no upstream could serve keeps its failed attempts too (a 5xx is retried once).
    let solo = rows
        .iter()
        .find(|c| c["requested_model"] == "solo")
        .unwrap();
    let log = solo["attempt_log"].as_array().unwrap();
    assert_eq!(
        log.len() as u64,
        solo["attempts"].as_u64().unwrap(),
        "{solo}"
    );
    assert!(
        log.iter()
            .all(|a| a["upstream"] == "bad" && a["status"] == 500),
        "{solo}"
    );

    let errors = calls(&gw, "error_class=server_error").await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["requested_model"], "solo");
    let streamed = calls(&gw, "stream=true").await;
    assert_eq!(streamed.len(), 1, "{streamed:?}");
    assert_eq!(streamed[0]["stream"], true);
    assert_eq!(calls(&gw, "stream=false").await.len(), 2);
}

/// `POST …/keys/{key_id}/disable`: calls stop using the key at once, a reload keeps it out,
/// `…/enable` brings it back; both are audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_key_disabled_by_hand_gets_no_calls_until_enabled() {
    let up = llmux_mock::MockServer::start(llmux_mock::MockConfig {
        api_key: Some("sk-key-a".into()),
        extra_keys: vec!["sk-key-b".into()],
        ..node("p", &["gpt-4o-mini"])
    })
    .await
    .unwrap();
    let gw = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\n[[upstreams]]\nname = \"p\"\nkind = \"openai\"\nurl = \"{}/v1\"\nkeys = [\"sk-key-a\", \"sk-key-b\"]\n",
        up.url()
    ));
    let hits = |key: &str| up.stats().by_key.get(key).copied().unwrap_or(0);
    let calls = |n: usize| {
        let gw = &gw;
        async move {
            for _ in 0..n {
                let r = client()
                    .post(gw.url("/v1/chat/completions"))
                    .json(&chat("gpt-4o-mini", false))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
            }
        }
    };
    assert_eq!(
        admin_post(&gw, "/upstreams/p/keys/k1/disable", json!({})).await,
        200
    );
    assert_eq!(
        admin_post(&gw, "/upstreams/p/keys/k9/disable", json!({})).await,
        404
    );
    let before = hits("sk-key-b");
    calls(6).await;
    assert_eq!(hits("sk-key-b"), before, "a disabled key was used");
    // A reload rebuilds the pool: the key stays out.
    assert_eq!(admin_post(&gw, "/reload", json!({})).await, 200);
    calls(4).await;
    assert_eq!(hits("sk-key-b"), before, "the reload revived the key");
    let ups = gw.upstreams().await;
    let key = &ups.as_array().unwrap()[0]["keys"][1];
    assert_eq!(key["state"], "disabled", "{key}");
    assert!(
        key["disabled_reason"].as_str().unwrap().contains("admin"),
        "{key}"
    );
    assert_eq!(
        admin_post(&gw, "/upstreams/p/keys/k1/enable", json!({})).await,
        200
    );
    calls(6).await;
    assert!(hits("sk-key-b") > before, "the enabled key got no call");
    let audit: Value = client()
        .get(gw.url("/admin/v1/audit?limit=10"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert!(actions.contains(&"upstream.key.disable"), "{actions:?}");
}
