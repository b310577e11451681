//! End-to-end (#17 items 10 and 11): what llmux does itself for a translated call — clients of
//! other dialects reach an Ollama node's native `/api/chat` when they send what only it carries
//! (`top_k`, `num_ctx`, `keep_alive`, `think`), and images given by URL to upstreams that take
//! only inline bytes are fetched (through the SSRF guard) and inlined, or refused with a 400.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::{json, Value};

/// An `[[upstreams]]` block with a static model list.
fn upstream(name: &str, kind: &str, url: &str, model: &str) -> String {
    format!("[[upstreams]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl = \"{url}\"\nmodels = [\"{model}\"]\n")
}

async fn post(gw: &Llmux, path: &str, body: &Value) -> reqwest::Response {
    client().post(gw.url(path)).json(body).send().await.unwrap()
}

/// How many calls `path` of `mock` has received.
fn calls(mock: &MockServer, path: &str) -> u64 {
    mock.stats().by_path.get(path).copied().unwrap_or(0)
}

async fn ollama_node() -> (MockServer, Llmux) {
    let m = MockServer::start(node("ol", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start(&upstream("ol", "ollama", &m.url(), "llama3:latest"));
    (m, gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_clients_keep_v1_unless_they_send_ollama_options() {
    let (m, gw) = ollama_node().await;
    // Nothing Ollama-only: the byte passthrough to /v1.
    let r = post(&gw, "/v1/chat/completions", &chat("llama3", false)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    // What the OpenAI SDK sends with extra_body: native /api/chat, every option carried.
    let mut body = chat("llama3", false);
    body["top_k"] = json!(40);
    body["temperature"] = json!(0.3);
    body["options"] = json!({"num_ctx": 8192, "repeat_penalty": 1.1});
    body["keep_alive"] = json!("5m");
    body["reasoning_effort"] = json!("high");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion", "{v}");
    assert!(v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .starts_with("[ol]"));
    assert_eq!(calls(&m, "/api/chat"), 1);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(seen["model"], "llama3");
    assert_eq!(seen["options"]["top_k"], 40);
    assert_eq!(seen["options"]["num_ctx"], 8192);
    assert_eq!(seen["options"]["repeat_penalty"], 1.1);
    assert_eq!(seen["options"]["temperature"], 0.3);
    assert_eq!(seen["keep_alive"], "5m");
    assert_eq!(seen["think"], "high");
    assert_eq!(seen["messages"][0]["content"], "hello there");

    // Streamed, and a legacy completion (to /api/generate).
    let mut body = chat("llama3", true);
    body["options"] = json!({"num_ctx": 2048});
    let text = post(&gw, "/v1/chat/completions", &body)
        .await
        .text()
        .await
        .unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(calls(&m, "/api/chat"), 2);
    assert_eq!(m.stats().last_body.unwrap()["options"]["num_ctx"], 2048);
    let body = json!({"model": "llama3", "prompt": "say hi", "keep_alive": 0});
    let r = post(&gw, "/v1/completions", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "text_completion", "{v}");
    assert_eq!(calls(&m, "/api/generate"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(
        (seen["prompt"].clone(), seen["keep_alive"].clone()),
        (json!("say hi"), json!(0))
    );

    // A bad value is the client's 400, naming the field.
    let mut body = chat("llama3", false);
    body["think"] = json!("max");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("`think`"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_gemini_clients_reach_native_ollama_with_top_k_and_thinking() {
    let (m, gw) = ollama_node().await;
    // Plain Anthropic call: translated to /v1 as before.
    let plain = json!({"model": "llama3", "max_tokens": 50,
        "messages": [{"role": "user", "content": "hello"}]});
    let r = post(&gw, "/v1/messages", &plain).await;
    assert_eq!(r.status(), 200);
    assert_eq!(calls(&m, "/v1/chat/completions"), 1);
    // top_k was a 400 on /v1; thinking too. Now both reach /api/chat.
    let mut body = plain.clone();
    body["top_k"] = json!(12);
    body["thinking"] = json!({"type": "enabled", "budget_tokens": 1024});
    let r = post(&gw, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(calls(&m, "/api/chat"), 1);
    let seen = m.stats().last_body.unwrap();
    assert_eq!(seen["options"]["top_k"], 12);
    assert_eq!(seen["options"]["num_predict"], 50);
    assert_eq!(seen["think"], true);
    // Streamed: Anthropic's SSE, from Ollama's NDJSON.
    body["stream"] = json!(true);
    let text = post(&gw, "/v1/messages", &body).await.text().await.unwrap();
    assert!(text.contains("event: message_stop"), "{text}");
    assert_eq!(calls(&m, "/api/chat"), 2);
    assert_eq!(m.stats().last_body.unwrap()["stream"], true);

    // Gemini's topK.
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"topK": 5}});
    let r = post(&gw, "/v1beta/models/llama3:generateContent", &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls(&m, "/api/chat"), 3);
    assert_eq!(m.stats().last_body.unwrap()["options"]["top_k"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thinking_and_runner_options_are_refused_where_only_ollama_carries_them() {
    let m = MockServer::start(node("an", &["claude"])).await.unwrap();
    let gw = Llmux::start(&upstream("an", "anthropic", &m.url(), "claude"));
    let mut body = chat("claude", false);
    body["options"] = json!({"num_ctx": 8192});
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("options.num_ctx"),
        "{v}"
    );
    let mut body = chat("claude", false);
    body["reasoning_effort"] = json!("low");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    // keep_alive steers an Ollama runner only: elsewhere it is left out.
    let mut body = chat("claude", false);
    body["keep_alive"] = json!("5m");
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert!(m.stats().last_body.unwrap().get("keep_alive").is_none());
    assert_eq!(m.stats().generations, 1);
}

/// Bytes the image server answers `/cat.png` with.
const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR fake image";

/// A tiny HTTP server on 127.0.0.1: `/cat.png` (image/png), `/page.html` (text/html),
/// `/big.jpg` (image/jpeg, 200 KiB), anything else 404. Counts the requests it served.
struct Images {
    base: String,
    hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Images {
    async fn start() -> Images {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let line = String::from_utf8_lossy(&head).to_string();
                    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                    let (status, ctype, body): (&str, &str, Vec<u8>) = match path.as_str() {
                        "/cat.png" => ("200 OK", "image/png", PNG.to_vec()),
                        "/page.html" => {
                            ("200 OK", "text/html; charset=utf-8", b"<p>hi</p>".to_vec())
                        }
                        "/big.jpg" => ("200 OK", "image/jpeg", vec![1u8; 200 * 1024]),
                        _ => ("404 Not Found", "text/plain", b"no".to_vec()),
                    };
                    let head = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = sock.write_all(head.as_bytes()).await;
                    let _ = sock.write_all(&body).await;
                });
            }
        });
        Images { base, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn hits(&self) -> usize {
        self.hits.load(std::sync::atomic::Ordering::SeqCst)
    }
}

fn png_b64() -> String {
    // Standard base64 of PNG, computed here so the test does not trust the gateway's encoder.
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in PNG.chunks(3) {
        let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn openai_image(model: &str, url: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}}]}]})
}

/// An Ollama node, a Gemini upstream and an OpenAI one; private addresses allowed or not.
async fn image_stack(allow_private: bool) -> (Vec<MockServer>, Llmux) {
    let ol = MockServer::start(node("ol", &["llama3:latest"]))
        .await
        .unwrap();
    let ge = MockServer::start(node("ge", &["gem"])).await.unwrap();
    let oa = MockServer::start(node("oa", &["gpt-4o"])).await.unwrap();
    let body = format!(
        "{}{}{}[translation]\nimage_fetch_max = \"64KiB\"\nimage_fetch_timeout = \"20s\"\nimage_fetch_max_count = 2\n",
        upstream("ol", "ollama", &ol.url(), "llama3:latest"),
        upstream("ge", "gemini", &ge.url(), "gem"),
        upstream("oa", "openai", &format!("{}/v1", oa.url()), "gpt-4o"),
    );
    let gw = Llmux::start_opts(Opts {
        body,
        admin_extra: format!("allow_private_upstreams = {allow_private}"),
        ..Opts::default()
    });
    (vec![ol, ge, oa], gw)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_urls_are_fetched_and_inlined_for_ollama_and_gemini() {
    let images = Images::start().await;
    let (mocks, gw) = image_stack(true).await;
    let (ol, ge, oa) = (&mocks[0], &mocks[1], &mocks[2]);
    let cat = images.url("/cat.png");
    let data_url = format!("data:image/png;base64,{}", png_b64());

    // OpenAI client → Ollama: out of the passthrough, inlined as a data URL on /v1.
    let r = post(&gw, "/v1/chat/completions", &openai_image("llama3", &cat)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(calls(ol, "/v1/chat/completions"), 1);
    let seen = ol.stats().last_body.unwrap();
    assert_eq!(
        seen["messages"][0]["content"][1]["image_url"]["url"],
        data_url
    );

    // Inline data, even with what canonical cannot carry: still the byte passthrough.
    let mut body = openai_image("llama3", &data_url);
    body["logprobs"] = json!(true);
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 200);
    assert_eq!(calls(ol, "/v1/chat/completions"), 2);
    assert_eq!(ol.stats().last_body.unwrap()["logprobs"], true);

    // Anthropic URL image → Ollama, with top_k: native /api/chat with `images`.
    let body = json!({"model": "llama3", "max_tokens": 20, "top_k": 3, "messages": [{"role": "user",
        "content": [{"type": "image", "source": {"type": "url", "url": cat}},
                    {"type": "text", "text": "what is this?"}]}]});
    let r = post(&gw, "/v1/messages", &body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = ol.stats().last_body.unwrap();
    assert_eq!(calls(ol, "/api/chat"), 1);
    assert_eq!(seen["messages"][0]["images"], json!([png_b64()]));

    // OpenAI client → Gemini: inlineData with the answer's media type.
    let r = post(&gw, "/v1/chat/completions", &openai_image("gem", &cat)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let seen = ge.stats().last_body.unwrap();
    let part = &seen["contents"][0]["parts"][1];
    assert_eq!(part["inlineData"]["mimeType"], "image/png", "{seen}");
    assert_eq!(part["inlineData"]["data"], png_b64());

    // An OpenAI upstream takes URLs: passed as they are, nothing fetched.
    let before = images.hits();
    let r = post(&gw, "/v1/chat/completions", &openai_image("gpt-4o", &cat)).await;
    assert_eq!(r.status(), 200);
    let seen = oa.stats().last_body.unwrap();
    assert_eq!(seen["messages"][0]["content"][1]["image_url"]["url"], cat);
    assert_eq!(images.hits(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_that_cannot_be_fetched_are_the_clients_400_naming_url_and_reason() {
    let images = Images::start().await;
    let (mocks, gw) = image_stack(true).await;
    let cases = [
        ("/page.html", "not an image"),
        ("/big.jpg", "larger than 65536 bytes"),
        ("/gone.png", "HTTP 404"),
    ];
    for (path, reason) in cases {
        let url = images.url(path);
        for model in ["llama3", "gem"] {
            let r = post(&gw, "/v1/chat/completions", &openai_image(model, &url)).await;
            assert_eq!(r.status(), 400, "{model} {path}");
            let v: Value = r.json().await.unwrap();
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(
                msg.contains(&url) && msg.contains(reason),
                "{model} {path}: {msg}"
            );
        }
    }
    // In Anthropic's shape for an Anthropic client; Gemini's for a Gemini client.
    let body = json!({"model": "llama3", "max_tokens": 20, "messages": [{"role": "user",
        "content": [{"type": "image", "source": {"type": "url", "url": images.url("/page.html")}}]}]});
    let r = post(&gw, "/v1/messages", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not an image"));
    // More URL images than image_fetch_max_count (2).
    let mut body = openai_image("gem", &images.url("/cat.png"));
    let parts = body["messages"][0]["content"].as_array_mut().unwrap();
    for p in ["/a.png", "/b.png"] {
        parts.push(json!({"type": "image_url", "image_url": {"url": images.url(p)}}));
    }
    let r = post(&gw, "/v1/chat/completions", &body).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("image_fetch_max_count"),
        "{v}"
    );
    // Nothing reached an upstream.
    for m in &mocks {
        assert_eq!(m.stats().generations, 0);
    }
    // Counted by result (two clients' fetches of each bad URL, Anthropic's once more).
    let metrics = metrics_text(&gw).await;
    for line in [
        "llmux_image_fetches_total{result=\"not_image\"} 3",
        "llmux_image_fetches_total{result=\"too_big\"} 2",
        "llmux_image_fetches_total{result=\"http_status\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_image_addresses_are_refused_unless_allowed() {
    let images = Images::start().await;
    let (mocks, gw) = image_stack(false).await;
    let url = images.url("/cat.png");
    for model in ["llama3", "gem"] {
        let r = post(&gw, "/v1/chat/completions", &openai_image(model, &url)).await;
        assert_eq!(r.status(), 400, "{model}");
        let v: Value = r.json().await.unwrap();
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(&url) && msg.contains("loopback"), "{msg}");
        assert!(msg.contains("allow_private_upstreams"), "{msg}");
    }
    // By name too (checked when the name is resolved).
    let by_name = url.replace("127.0.0.1", "localhost");
    let r = post(&gw, "/v1/chat/completions", &openai_image("gem", &by_name)).await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("loopback"),
        "{v}"
    );
    // Metadata addresses never.
    let r = post(
        &gw,
        "/v1/chat/completions",
        &openai_image("gem", "http://169.254.169.254/latest/meta-data"),
    )
    .await;
    assert_eq!(r.status(), 400);
    assert_eq!(images.hits(), 0);
    for m in &mocks[..2] {
        assert_eq!(m.stats().generations, 0);
    }
}
