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
    let a = mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
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
