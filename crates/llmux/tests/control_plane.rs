//! End-to-end: the control plane of the real binary — admin API, store (SQLite and, with
//! LLMUX_TEST_POSTGRES_URL, PostgreSQL), virtual keys, roles, hot reload, rollback, audit.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use sqlx::{AssertSqlSafe, Connection as _};
use std::time::Duration;

const PROVIDER_KEY: &str = "sk-live-provider-secret-4242";

/// One store under test: its url, and for PostgreSQL the schema to drop afterwards.
struct Backend {
    label: &'static str,
    url: Option<String>,
    /// Dropped with the backend.
    _pg: Option<PgSchema>,
}

/// SQLite (a file in the test's directory), plus PostgreSQL in a fresh schema when
/// `LLMUX_TEST_POSTGRES_URL` is set.
async fn backends() -> Vec<Backend> {
    let mut out = vec![Backend {
        label: "sqlite",
        url: None,
        _pg: None,
    }];
    match PgSchema::create("llmux_cp").await {
        Some(pg) => out.push(Backend {
            label: "postgres",
            url: Some(pg.url.clone()),
            _pg: Some(pg),
        }),
        None => eprintln!("note: LLMUX_TEST_POSTGRES_URL is unset, skipping PostgreSQL"),
    }
    out
}

fn opts(backend: &Backend, body: String, admin_extra: &str) -> Opts {
    Opts {
        body,
        admin_extra: admin_extra.to_string(),
        store_url: backend.url.clone(),
        ..Opts::default()
    }
}

async fn admin(
    gw: &Llmux,
    method: &str,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = client()
        .request(method.parse().unwrap(), gw.url(&format!("/admin/v1{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn chat_status(gw: &Llmux, model: &str, key: Option<&str>) -> (u16, Value, String) {
    let mut req = client()
        .post(gw.url("/v1/chat/completions"))
        .json(&chat(model, false));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let upstream = header(&resp, "x-llmux-upstream");
    (status, resp.json().await.unwrap_or(Value::Null), upstream)
}

/// Everything the store holds, as text: the SQLite file (with its WAL) or every PostgreSQL table.
async fn stored_text(gw: &Llmux, backend: &Backend) -> String {
    match &backend.url {
        None => {
            let mut bytes = Vec::new();
            for name in ["llmux.db", "llmux.db-wal"] {
                if let Ok(b) = std::fs::read(gw.dir.path().join("data").join(name)) {
                    bytes.extend(b);
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Some(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let mut out = String::new();
            for table in [
                "upstreams",
                "provider_keys",
                "models",
                "aliases",
                "settings",
                "audit_events",
                "config_revisions",
            ] {
                let rows: Vec<(String,)> =
                    sqlx::query_as(AssertSqlSafe(format!("SELECT t::text FROM {table} t")))
                        .fetch_all(&mut c)
                        .await
                        .unwrap();
                for (r,) in rows {
                    out.push_str(&r);
                    out.push('\n');
                }
            }
            out
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_upstream_serves_at_once_is_encrypted_and_survives_restart() {
    for backend in backends().await {
        let label = backend.label;
        let mut oc = node("prov", &["gpt-4o-mini"]);
        oc.api_key = Some(PROVIDER_KEY.into());
        let o = llmux_mock::MockServer::start(oc).await.unwrap();
        let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
            .await
            .unwrap();
        let gw = Llmux::start_opts(opts(
            &backend,
            ollama("gpu-a", &a.url()),
            "allow_private_upstreams = true",
        ));

        let (s, _, _) = chat_status(&gw, "gpt-4o-mini", None).await;
        assert_eq!(s, 404, "{label}: not served before it is created");
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(
                json!({"name": "prov", "kind": "openai", "url": format!("{}/v1", o.url()),
                    "keys": [PROVIDER_KEY], "models": ["gpt-4o-mini"], "weight": 2}),
            ),
        )
        .await;
        assert_eq!(s, 201, "{label}: {v}");
        assert_eq!(v["source"], "api");
        assert_eq!(v["keys"][0]["masked"], "…4242");
        assert!(!v.to_string().contains(PROVIDER_KEY));

        // Served at once, with the key, without a restart.
        let (s, _, up) = chat_status(&gw, "gpt-4o-mini", None).await;
        assert_eq!((s, up.as_str()), (200, "prov"), "{label}");
        assert_eq!(
            o.stats().last_authorization.as_deref(),
            Some(format!("Bearer {PROVIDER_KEY}").as_str())
        );

        // The list keeps its runtime fields, file and API upstreams together, as an array.
        let (_, list) = admin(&gw, "GET", "/upstreams", ADMIN, None).await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        let file = list.iter().find(|u| u["name"] == "gpu-a").unwrap();
        assert_eq!(file["source"], "file");
        for field in [
            "pool",
            "breaker",
            "latency_ms",
            "active_requests",
            "models",
            "keys",
        ] {
            assert!(file.get(field).is_some(), "{field}");
        }

        // Conflicts and validation.
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(json!({"name": "gpu-a", "kind": "ollama", "url": a.url()})),
        )
        .await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(json!({"name": "prov", "kind": "openai", "url": format!("{}/v1", o.url())})),
        )
        .await;
        assert_eq!(s, 409, "{v}");
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(json!({"name": "bad", "kind": "openai", "url": "ftp://x"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("url:"),
            "{v}"
        );
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(json!({"name": "bad", "kind": "nope", "url": "http://127.0.0.1:1"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("kind:"),
            "{v}"
        );
        // Durations are bounded (they would overflow the clock): a 400 naming the field.
        for (method, path, body) in [
            (
                "POST",
                "/upstreams",
                json!({"name": "slow", "kind": "openai", "url": "http://127.0.0.1:1/v1",
                    "timeouts": {"first_byte": "9300000000000000000"}}),
            ),
            (
                "PATCH",
                "/upstreams/prov",
                json!({"timeouts": {"idle": "25h"}}),
            ),
        ] {
            let (s, v) = admin(&gw, method, path, ADMIN, Some(body)).await;
            assert_eq!(s, 400, "{method} {path}: {v}");
            let message = v["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("timeouts."), "{v}");
            assert!(message.contains("maximum of 24h"), "{v}");
        }
        let (s, v) = admin(
            &gw,
            "POST",
            "/upstreams",
            ADMIN,
            Some(json!({"name": "meta", "kind": "openai", "url": "http://169.254.169.254/v1"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("link-local"),
            "{v}"
        );
        let (s, _) = admin(
            &gw,
            "PATCH",
            "/upstreams/gpu-a",
            ADMIN,
            Some(json!({"weight": 3})),
        )
        .await;
        assert_eq!(s, 409, "file upstreams are read-only");

        // A second key through the sub-resource, then removed again.
        let (s, k) = admin(
            &gw,
            "POST",
            "/upstreams/prov/keys",
            ADMIN,
            Some(json!({"key": "sk-second-key-000000"})),
        )
        .await;
        assert_eq!(s, 201, "{k}");
        let (_, v) = admin(&gw, "GET", "/upstreams/prov", ADMIN, None).await;
        assert_eq!(v["keys"].as_array().unwrap().len(), 2);
        let key_id = k["id"].as_str().unwrap();
        let (s, _) = admin(
            &gw,
            "DELETE",
            &format!("/upstreams/prov/keys/{key_id}"),
            ADMIN,
            None,
        )
        .await;
        assert_eq!(s, 204);
        let (s, _) = admin(
            &gw,
            "POST",
            &format!(
                "/upstreams/prov/keys/{}/enable",
                v["keys"][0]["id"].as_str().unwrap()
            ),
            ADMIN,
            None,
        )
        .await;
        assert_eq!(s, 200);

        // No provider key in the clear anywhere in the store.
        let stored = stored_text(&gw, &backend).await;
        assert!(
            stored.contains("…4242") || stored.contains("4242"),
            "{label}: the store was read"
        );
        assert!(
            !stored.contains(PROVIDER_KEY),
            "{label}: plaintext provider key in the store"
        );
        assert!(!stored.contains("sk-second-key-000000"), "{label}");

        // The audit log has each change, by whom, secrets masked.
        let (_, audit) = admin(&gw, "GET", "/audit", ADMIN, None).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for a in [
            "upstream.create",
            "upstream.key.create",
            "upstream.key.delete",
            "upstream.key.enable",
        ] {
            assert!(actions.contains(&a), "{label}: {actions:?}");
        }
        assert!(audit
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "admin-token"));
        assert!(!audit.to_string().contains(PROVIDER_KEY));
        assert!(!audit.to_string().contains("sk-second-key-000000"));

        // Entities survive a restart, and the key still decrypts.
        let gw = gw.restart(&[]);
        let (s, _, up) = chat_status(&gw, "gpt-4o-mini", None).await;
        assert_eq!((s, up.as_str()), (200, "prov"), "{label}: after restart");
        let (_, v) = admin(&gw, "GET", "/upstreams/prov", ADMIN, None).await;
        assert_eq!(v["source"], "api");
        assert_eq!(v["weight"], 2);

        // Patched: switched off and on, reweighted; a metadata URL is refused.
        let (s, v) = admin(
            &gw,
            "PATCH",
            "/upstreams/prov",
            ADMIN,
            Some(json!({"enabled": false})),
        )
        .await;
        assert_eq!(
            (s, v["pool"].as_str()),
            (200, Some("disabled")),
            "{label}: {v}"
        );
        assert_eq!(chat_status(&gw, "gpt-4o-mini", None).await.0, 404);
        let (s, v) = admin(
            &gw,
            "PATCH",
            "/upstreams/prov",
            ADMIN,
            Some(json!({"enabled": true, "weight": 5})),
        )
        .await;
        assert_eq!((s, v["weight"].as_i64()), (200, Some(5)), "{v}");
        assert_eq!(chat_status(&gw, "gpt-4o-mini", None).await.0, 200);
        let (s, v) = admin(
            &gw,
            "PATCH",
            "/upstreams/prov",
            ADMIN,
            Some(json!({"url": "http://[fd00:ec2::254]/v1"})),
        )
        .await;
        assert_eq!(s, 400, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("metadata"),
            "{v}"
        );

        // Deleting it stops the routing at once.
        let (s, _) = admin(&gw, "DELETE", "/upstreams/prov", ADMIN, None).await;
        assert_eq!(s, 204);
        let (s, _, _) = chat_status(&gw, "gpt-4o-mini", None).await;
        assert_eq!(s, 404);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_upstreams_need_the_setting() {
    let gw = Llmux::start("");
    let (s, v) = admin(
        &gw,
        "POST",
        "/upstreams",
        ADMIN,
        Some(json!({"name": "local", "kind": "ollama", "url": "http://127.0.0.1:11434"})),
    )
    .await;
    assert_eq!(s, 400);
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("url:") && m.contains("allow_private_upstreams"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_keys_on_the_data_plane() {
    for backend in backends().await {
        let label = backend.label;
        let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest", "mistral:latest"]))
            .await
            .unwrap();
        let gw = Llmux::start_opts(opts(
            &backend,
            format!("[auth]\nrequired = true\n{}", ollama("gpu-a", &a.url())),
            "",
        ));
        let (s, app) = admin(
            &gw,
            "POST",
            "/apps",
            ADMIN,
            Some(json!({"name": "team", "credits": 10.0})),
        )
        .await;
        assert_eq!(s, 201, "{app}");
        assert_eq!(app["credits"], 10.0);
        let (s, limited) = admin(&gw, "POST", "/keys", ADMIN, Some(json!({
            "name": "llama-only", "app": "team", "models": ["llama3"],
            "limits": {"rpm": 60, "tpm": 1000, "concurrency": 2}, "expires_at": "2999-01-01T00:00:00Z"
        }))).await;
        assert_eq!(s, 201, "{limited}");
        let key = limited["key"].as_str().unwrap().to_string();
        assert!(key.starts_with("sk-llmux-"));
        let (_, listed) = admin(&gw, "GET", "/keys", ADMIN, None).await;
        assert!(
            !listed.to_string().contains(&key),
            "the full key is shown once only"
        );

        // OpenAI: Bearer.
        let (s, _, _) = chat_status(&gw, "llama3", Some(&key)).await;
        assert_eq!(s, 200, "{label}");
        // Anthropic: x-api-key.
        let r = client().post(gw.url("/v1/messages")).header("x-api-key", &key)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "llama3", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), 200, "{label}");
        // A model the key may not use.
        let (s, v, _) = chat_status(&gw, "mistral", Some(&key)).await;
        assert_eq!(s, 403, "{label}: {v}");
        // Missing, wrong: 401 in the caller's dialect.
        let (s, v, _) = chat_status(&gw, "llama3", None).await;
        assert_eq!(s, 401);
        assert!(v["error"]["message"].is_string(), "{v}");
        // The right public id with a wrong secret.
        let wrong = format!(
            "{}-WrongSecret0000000000000000000000",
            key.rsplit_once('-').unwrap().0
        );
        let (s, v, _) = chat_status(&gw, "llama3", Some(&wrong)).await;
        assert_eq!(s, 401, "{v}");
        assert!(v["error"]["type"].is_string(), "OpenAI shape: {v}");
        let r = client().post(gw.url("/v1/messages")).header("x-api-key", &wrong)
            .header("anthropic-version", "2023-06-01")
            .json(&json!({"model": "llama3", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "error", "Anthropic shape: {v}");
        let r = client().post(gw.url("/api/chat")).bearer_auth(&wrong)
            .json(&json!({"model": "llama3", "stream": false, "messages": [{"role": "user", "content": "hi"}]}))
            .send().await.unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert!(v["error"].is_string(), "Ollama shape: {v}");

        // Widening the key takes effect at once (the cache is invalidated).
        let id = limited["id"].as_str().unwrap();
        let (s, _) = admin(
            &gw,
            "PATCH",
            &format!("/keys/{id}"),
            ADMIN,
            Some(json!({"models": ["llama3", "mistral"]})),
        )
        .await;
        assert_eq!(s, 200);
        let (s, _, _) = chat_status(&gw, "mistral", Some(&key)).await;
        assert_eq!(s, 200, "{label}");
        // Revoked: refused at once.
        let (s, v) = admin(&gw, "POST", &format!("/keys/{id}/revoke"), ADMIN, None).await;
        assert_eq!((s, v["status"].as_str()), (200, Some("revoked")));
        let (s, v, _) = chat_status(&gw, "llama3", Some(&key)).await;
        assert_eq!(s, 401, "{v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains("revoked"),
            "{v}"
        );

        // Expired keys are refused too.
        let (_, old) = admin(
            &gw,
            "POST",
            "/keys",
            ADMIN,
            Some(json!({
            "name": "old", "app": "team", "expires_at": 1000})),
        )
        .await;
        let (s, v, _) = chat_status(&gw, "llama3", old["key"].as_str()).await;
        assert_eq!(s, 401, "{v}");
        let (s, v) = admin(
            &gw,
            "POST",
            "/keys",
            ADMIN,
            Some(json!({"name": "x", "app": "nope"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"].as_str().unwrap().starts_with("app:"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_login_and_open_paths() {
    for backend in backends().await {
        let label = backend.label;
        let gw = Llmux::start_opts(opts(&backend, String::new(), ""));
        for (user, role) in [("alice", "admin"), ("victor", "viewer")] {
            let (s, v) = admin(
                &gw,
                "POST",
                "/users",
                ADMIN,
                Some(json!({"username": user, "password": "correct horse", "role": role})),
            )
            .await;
            assert_eq!(s, 201, "{label}: {v}");
            assert!(v.get("password").is_none());
        }
        let (s, v) = admin(
            &gw,
            "POST",
            "/users",
            ADMIN,
            Some(json!({"username": "x", "password": "short", "role": "admin"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("password:"));
        let login = |user: &'static str, password: &'static str| {
            let gw = &gw;
            async move {
                let r = client()
                    .post(gw.url("/admin/v1/login"))
                    .json(&json!({"username": user, "password": password}))
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (s, _) = login("alice", "wrong password").await;
        assert_eq!(s, 401);
        let (s, v) = login("victor", "correct horse").await;
        assert_eq!(s, 200, "{v}");
        let viewer = v["token"].as_str().unwrap().to_string();
        let (_, v) = login("alice", "correct horse").await;
        let alice = v["token"].as_str().unwrap().to_string();

        // The viewer reads but cannot write.
        let (s, _) = admin(&gw, "GET", "/upstreams", &viewer, None).await;
        assert_eq!(s, 200);
        // A single instance (no Redis) lists itself alone, as the prober.
        let (s, v) = admin(&gw, "GET", "/cluster", &viewer, None).await;
        assert_eq!(s, 200, "{label}: {v}");
        assert_eq!(v["mode"], "single", "{label}: {v}");
        let me = &v["instances"].as_array().unwrap()[..];
        assert_eq!(me.len(), 1, "{label}: {v}");
        assert_eq!(me[0]["id"], v["instance"]);
        assert_eq!(me[0]["address"], gw.addr.to_string());
        assert_eq!(me[0]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(
            (me[0]["prober"].as_bool(), me[0]["state"].as_str()),
            (Some(true), Some("live"))
        );
        assert_eq!(
            (me[0]["in_flight"].as_u64(), me[0]["calls_per_s"].as_f64()),
            (Some(0), Some(0.0))
        );
        for t in ["started", "last_heartbeat"] {
            assert!(
                me[0][t].as_str().unwrap().ends_with('Z'),
                "{label}: {t} in {v}"
            );
        }
        let (s, v) = admin(&gw, "POST", "/apps", &viewer, Some(json!({"name": "a"}))).await;
        assert_eq!(s, 403, "{v}");
        let (s, _) = admin(
            &gw,
            "PUT",
            "/routing",
            &viewer,
            Some(json!({"strategy": "weighted"})),
        )
        .await;
        assert_eq!(s, 403);
        // An admin user writes, and is the actor in the audit log.
        let (s, _) = admin(&gw, "POST", "/apps", &alice, Some(json!({"name": "a"}))).await;
        assert_eq!(s, 201);
        let (_, audit) = admin(&gw, "GET", "/audit?limit=1", &alice, None).await;
        assert_eq!(audit[0]["actor"], "alice");
        assert_eq!(audit[0]["action"], "app.create");
        let (_, audit) = admin(&gw, "GET", "/audit?limit=50", &alice, None).await;
        assert!(!audit.to_string().contains("correct horse"));
        // No or bad credentials.
        let (s, _) = admin(&gw, "GET", "/upstreams", "nope", None).await;
        assert_eq!(s, 401);
        let r = client().get(gw.url("/admin/v1/apps")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // Tokens survive a restart (the signing secret derives from the master key).
        let gw = gw.restart(&[]);
        let (s, _) = admin(&gw, "GET", "/apps", &alice, None).await;
        assert_eq!(s, 200, "{label}");
        // A deleted user's token stops working.
        let (s, _) = admin(&gw, "DELETE", "/users/victor", ADMIN, None).await;
        assert_eq!(s, 204);
        let (s, _) = admin(&gw, "GET", "/apps", &viewer, None).await;
        assert_eq!(s, 401);
        // The OpenAPI document needs no credentials.
        let r = client()
            .get(gw.url("/admin/v1/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let doc: Value = r.json().await.unwrap();
        assert_eq!(doc["openapi"], "3.0.3");
        assert!(doc["paths"]["/keys"]["post"].is_object());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_refuses_bad_edits_and_rollback_restores_routing() {
    for backend in backends().await {
        let label = backend.label;
        let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
            .await
            .unwrap();
        let b = llmux_mock::MockServer::start(node("gpu-b", &["mistral:latest"]))
            .await
            .unwrap();
        let gw = Llmux::start_opts(opts(&backend, ollama("gpu-a", &a.url()), ""));
        let (_, revs) = admin(&gw, "GET", "/config/revisions", ADMIN, None).await;
        let first = revs[0]["id"].as_i64().unwrap();

        // An API change: an alias.
        let (s, _) = admin(
            &gw,
            "POST",
            "/aliases",
            ADMIN,
            Some(json!({"name": "fast", "targets": ["llama3"]})),
        )
        .await;
        assert_eq!(s, 201);
        let (s, _, _) = chat_status(&gw, "fast", None).await;
        assert_eq!(s, 200, "{label}: alias routes");

        // A valid edit of the file is picked up without a signal.
        gw.write_config(&format!(
            "{}{}",
            ollama("gpu-a", &a.url()),
            ollama("gpu-b", &b.url())
        ));
        // The routes go live before the reload's revision is written: wait for both.
        eventually(Duration::from_secs(10), "the file edit", async || {
            let (_, revs) = admin(&gw, "GET", "/config/revisions", ADMIN, None).await;
            chat_status(&gw, "mistral", None).await.0 == 200 && revs[0]["source"] == "file"
        })
        .await;
        let (_, revs) = admin(&gw, "GET", "/config/revisions", ADMIN, None).await;
        let with_b = revs[0]["id"].as_i64().unwrap();
        assert_eq!(revs[0]["source"], "file");

        // An invalid edit is refused with the reason; the running config keeps serving.
        gw.write_config(&format!(
            "{}[[upstreams]]\nname = \"c\"\nkind = \"bogus\"\nurl = \"http://x\"\n",
            ollama("gpu-a", &a.url())
        ));
        eventually(Duration::from_secs(10), "the refusal", async || {
            let (_, c) = admin(&gw, "GET", "/config", ADMIN, None).await;
            c["last_reload_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("upstreams[2].kind") || m.contains("kind"))
        })
        .await;
        assert_eq!(chat_status(&gw, "mistral", None).await.0, 200, "{label}");
        assert_eq!(chat_status(&gw, "llama3", None).await.0, 200);
        let (s, v) = admin(&gw, "POST", "/reload", ADMIN, None).await;
        assert_eq!(s, 400);
        assert!(
            v["error"]["message"].as_str().unwrap().contains("bogus"),
            "{v}"
        );
        assert!(gw.log_text().contains("config change refused"));

        // The strategy through the API.
        let (s, v) = admin(
            &gw,
            "PUT",
            "/routing",
            ADMIN,
            Some(json!({"strategy": "round_robin"})),
        )
        .await;
        assert_eq!((s, v["strategy"].as_str()), (200, Some("round_robin")));
        let (s, v) = admin(
            &gw,
            "PUT",
            "/routing",
            ADMIN,
            Some(json!({"strategy": "fastest"})),
        )
        .await;
        assert_eq!(s, 400);
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("strategy:"));

        // Rollback to the revision with gpu-b: same upstreams, the strategy back to the file's.
        let (s, v) = admin(
            &gw,
            "POST",
            "/config/rollback",
            ADMIN,
            Some(json!({"revision": with_b})),
        )
        .await;
        assert_eq!(s, 200, "{label}: {v}");
        let (_, r) = admin(&gw, "GET", "/routing", ADMIN, None).await;
        assert_eq!(r["strategy"], "least_active");
        assert_eq!(chat_status(&gw, "fast", None).await.0, 200);
        // Rollback to the first revision: no gpu-b, no alias.
        let (s, _) = admin(
            &gw,
            "POST",
            "/config/rollback",
            ADMIN,
            Some(json!({"revision": first})),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(chat_status(&gw, "mistral", None).await.0, 404, "{label}");
        assert_eq!(chat_status(&gw, "fast", None).await.0, 404);
        assert_eq!(chat_status(&gw, "llama3", None).await.0, 200);
        let (_, revs) = admin(&gw, "GET", "/config/revisions", ADMIN, None).await;
        assert_eq!(revs[0]["note"], format!("rollback to revision {first}"));
        assert_eq!(revs[0]["current"], true);
        let (s, _) = admin(
            &gw,
            "POST",
            "/config/rollback",
            ADMIN,
            Some(json!({"revision": 99999})),
        )
        .await;
        assert_eq!(s, 404);
        let (_, audit) = admin(&gw, "GET", "/audit", ADMIN, None).await;
        let actions: Vec<&str> = audit
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        assert!(
            actions.contains(&"config.rollback")
                && actions.contains(&"alias.create")
                && actions.contains(&"routing.update"),
            "{actions:?}"
        );

        // SIGHUP re-reads the file (still the invalid edit): refused, and llmux keeps serving.
        gw.signal("HUP");
        eventually(Duration::from_secs(10), "the SIGHUP reload", async || {
            gw.log_text().contains("SIGHUP")
        })
        .await;
        assert_eq!(chat_status(&gw, "llama3", None).await.0, 200, "{label}");
        // Fixing the file brings its upstreams back.
        gw.write_config(&format!(
            "{}{}",
            ollama("gpu-a", &a.url()),
            ollama("gpu-b", &b.url())
        ));
        // The new routes go live before the reload's revision and status are written: wait
        // for the status too, or a loaded machine sees the routes first.
        eventually(Duration::from_secs(10), "the fixed file", async || {
            let (_, c) = admin(&gw, "GET", "/config", ADMIN, None).await;
            c["last_reload_error"].is_null() && chat_status(&gw, "mistral", None).await.0 == 200
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_rotate_and_a_store_that_cannot_open() {
    let mut oc = node("prov", &["gpt-4o-mini"]);
    oc.api_key = Some(PROVIDER_KEY.into());
    let o = llmux_mock::MockServer::start(oc).await.unwrap();
    let gw = Llmux::start_opts(Opts {
        admin_extra: "allow_private_upstreams = true".into(),
        ..Opts::default()
    });
    let (s, _) = admin(
        &gw,
        "POST",
        "/upstreams",
        ADMIN,
        Some(json!({"name": "prov", "kind": "openai",
        "url": format!("{}/v1", o.url()), "keys": [PROVIDER_KEY], "models": ["gpt-4o-mini"]})),
    )
    .await;
    assert_eq!(s, 201);
    let key_file = gw.dir.path().join("data").join("master.key");
    assert!(gw.log_text().contains("master key file"));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = gw.config_path();
    let config = config.to_str().unwrap();

    let (ok, out, err) = gw.run_cli(&["migrate", "--config", config]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = gw.run_cli(&["secrets", "rotate", "--config", config]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("re-encrypted 1 provider key"), "{out}");
    let keys: Vec<String> = std::fs::read_to_string(&key_file)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_string)
        .collect();
    assert_eq!(keys.len(), 2, "new key first, the old one kept");
    let gw = gw.restart(&[]);
    let (s, _, up) = chat_status(&gw, "gpt-4o-mini", None).await;
    assert_eq!(
        (s, up.as_str()),
        (200, "prov"),
        "decrypts under the new key after restart"
    );

    // A store that cannot be opened is a clear start-up error.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        // Port 0: the check must not depend on 127.0.0.1:4000 being free on the machine.
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nurl = \"postgres://nobody@127.0.0.1:1/none\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot open the store at postgres://***@127.0.0.1:1/none"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_switch_off_and_aliases_route() {
    for backend in backends().await {
        let label = backend.label;
        let a = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest", "mistral:latest"]))
            .await
            .unwrap();
        let gw = Llmux::start_opts(opts(&backend, ollama("gpu-a", &a.url()), ""));
        let (_, models) = admin(&gw, "GET", "/models", ADMIN, None).await;
        assert!(
            models
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["name"] == "mistral:latest"
                    && m["origin"] == "discovered"
                    && m["upstream"] == "gpu-a"),
            "{label}: {models}"
        );
        // Off everywhere, then on again.
        let (s, m) = admin(
            &gw,
            "POST",
            "/models",
            ADMIN,
            Some(json!({"name": "mistral", "enabled": false})),
        )
        .await;
        assert_eq!(s, 201, "{m}");
        assert_eq!(chat_status(&gw, "mistral", None).await.0, 404, "{label}");
        assert_eq!(chat_status(&gw, "llama3", None).await.0, 200);
        let id = m["id"].as_str().unwrap();
        let (s, _) = admin(
            &gw,
            "PATCH",
            &format!("/models/{id}"),
            ADMIN,
            Some(json!({"enabled": true})),
        )
        .await;
        assert_eq!(s, 200);
        assert_eq!(chat_status(&gw, "mistral", None).await.0, 200);
        let (s, v) = admin(
            &gw,
            "POST",
            "/models",
            ADMIN,
            Some(json!({"name": "mistral", "upstream": "gpu-a", "enabled": false})),
        )
        .await;
        assert_eq!(s, 400, "file upstreams cannot carry stored models: {v}");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("upstream:"));
        // An alias, retargeted live, then removed.
        let (s, _) = admin(
            &gw,
            "POST",
            "/aliases",
            ADMIN,
            Some(json!({"name": "smart", "targets": ["llama3"]})),
        )
        .await;
        assert_eq!(s, 201);
        let (s, _, _) = chat_status(&gw, "smart", None).await;
        assert_eq!(s, 200);
        assert_eq!(a.stats().last_body.unwrap()["model"], "llama3");
        let (s, _) = admin(
            &gw,
            "PATCH",
            "/aliases/smart",
            ADMIN,
            Some(json!({"targets": ["mistral"]})),
        )
        .await;
        assert_eq!(s, 200);
        chat_status(&gw, "smart", None).await;
        assert_eq!(a.stats().last_body.unwrap()["model"], "mistral");
        let (s, v) = admin(
            &gw,
            "POST",
            "/aliases",
            ADMIN,
            Some(json!({"name": "smart", "targets": ["x"]})),
        )
        .await;
        assert_eq!(s, 409, "{v}");
        let (s, _) = admin(&gw, "DELETE", "/aliases/smart", ADMIN, None).await;
        assert_eq!(s, 204);
        assert_eq!(chat_status(&gw, "smart", None).await.0, 404);
        // Unknown admin paths answer in JSON.
        let (s, v) = admin(&gw, "GET", "/nope", ADMIN, None).await;
        assert_eq!(s, 404);
        assert!(v["error"]["message"].is_string());
    }
}

/// API-made upstreams take the translation options a `[[upstreams]]` table takes: an
/// OpenAI-compatible server that knows only `max_tokens` gets it, an Anthropic upstream's
/// per-model output limit applies; a wrong value is a 400 naming the field, and `null` puts
/// the kind's default back. They survive a restart (they live in the store).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_upstreams_take_the_translation_options() {
    let m = llmux_mock::MockServer::start(node("m", &["old-vllm-model", "claude-custom"]))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/llmux.db", dir.path().display());
    let start = || {
        Llmux::start_opts(Opts {
            admin_extra: "allow_private_upstreams = true".into(),
            store_url: Some(url.clone()),
            ..Opts::default()
        })
    };
    let gw = start();
    let (s, v) = admin(
        &gw,
        "POST",
        "/upstreams",
        ADMIN,
        Some(
            json!({"name": "vllm", "kind": "openai", "url": format!("{}/v1", m.url()),
                    "models": ["old-vllm-model"], "max_tokens_field": "max_tokens"}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["max_tokens_field"], "max_tokens", "{v}");
    let (s, v) = admin(
        &gw,
        "POST",
        "/upstreams",
        ADMIN,
        Some(
            json!({"name": "claude", "kind": "anthropic", "url": m.url(),
                    "models": ["claude-custom"], "max_output_tokens": {"claude-custom": 12345}}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    // An Anthropic client's limit reaches the vLLM server as max_tokens.
    let anthropic = |model: &str| {
        client()
            .post(gw.url("/v1/messages"))
            .json(&json!({"model": model, "max_tokens": 77,
                          "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(anthropic("old-vllm-model").await.unwrap().status(), 200);
    let body = m.stats().last_body.unwrap();
    assert_eq!(
        (body.get("max_tokens"), body.get("max_completion_tokens")),
        (Some(&json!(77)), None),
        "{body}"
    );
    // An OpenAI client without a limit reaches the Anthropic upstream with the set maximum.
    assert_eq!(chat_status(&gw, "claude-custom", None).await.0, 200);
    assert_eq!(m.stats().last_body.unwrap()["max_tokens"], 12345);

    // Wrong values are named; nothing changes.
    for (bad, field) in [
        (
            json!({"max_tokens_field": "max_tokenz"}),
            "max_tokens_field",
        ),
        (
            json!({"max_output_tokens": {"claude-custom": 0}}),
            "max_output_tokens",
        ),
    ] {
        let (s, v) = admin(&gw, "PATCH", "/upstreams/claude", ADMIN, Some(bad.clone())).await;
        assert_eq!(s, 400, "{bad}: {v}");
        assert!(v.to_string().contains(field), "{bad}: {v}");
    }
    // Kept across a restart, then put back to the kind's default with null.
    drop(gw);
    let gw = start();
    let (_, v) = admin(&gw, "GET", "/upstreams/vllm", ADMIN, None).await;
    assert_eq!(v["max_tokens_field"], "max_tokens", "{v}");
    let (s, v) = admin(
        &gw,
        "PATCH",
        "/upstreams/vllm",
        ADMIN,
        Some(json!({"max_tokens_field": null})),
    )
    .await;
    assert_eq!((s, &v["max_tokens_field"]), (200, &Value::Null), "{v}");
    let r = client()
        .post(gw.url("/v1/messages"))
        .json(&json!({"model": "old-vllm-model", "max_tokens": 77,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = m.stats().last_body.unwrap();
    assert_eq!(
        body.get("max_completion_tokens"),
        Some(&json!(77)),
        "{body}"
    );
}
