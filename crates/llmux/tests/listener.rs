//! The listener end to end: HTTPS with certificates the test makes (`openssl`), HTTP/2 by
//! ALPN, certificate rotation on SIGHUP and on a file change without a restart, broken TLS
//! files refused by `llmux config check` and `llmux serve`, CORS preflights from an allowed and
//! a refused origin, and gzip / brotli on `/v1/models` but never on a stream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use llmux_mock::MockServer;
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA of its own and a server certificate for `localhost` / 127.0.0.1 signed by it (P-256):
/// (the CA's PEM, the server's chain PEM, its key PEM).
fn make_certs(dir: &Path, name: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca = format!("/CN=llmux test CA {name}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
            "-days",
            "2",
            "-subj",
            &ca,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{name}-ca.pem"),
            "-CAkey",
            &format!("{name}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
    let read = |f: String| std::fs::read(dir.join(f)).unwrap();
    (
        read(format!("{name}-ca.pem")),
        read(format!("{name}.pem")),
        read(format!("{name}.key")),
    )
}

/// Writes `pem` to `path` padded with newlines to `len` bytes and with the mtime `at`, so two
/// pairs look alike to the file poller and only a SIGHUP can tell llmux to re-read them.
fn write_alike(path: &Path, pem: &[u8], len: usize, at: SystemTime) {
    assert!(pem.len() < len, "pad length too small: {}", pem.len());
    let mut padded = pem.to_vec();
    padded.resize(len, b'\n');
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, &padded).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&tmp)
        .unwrap()
        .set_modified(at)
        .unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A client that trusts only `ca` (a fresh one per call: no pooled connection keeps an old
/// certificate).
fn trusting(ca: &[u8], http1: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca).unwrap())
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10));
    let b = if http1 { b.http1_only() } else { b };
    b.build().unwrap()
}

/// Whether a client trusting `ca` gets `/healthz` over HTTPS now.
async fn served_with(gw: &Llmux, ca: &[u8]) -> bool {
    trusting(ca, false)
        .get(gw.url("/healthz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

const CERT_LEN: usize = 4096;
const KEY_LEN: usize = 1024;

/// HTTPS: HTTP/2 by ALPN and HTTP/1.1 for clients that ask for it; plain HTTP on the port gets
/// nothing; a new certificate is served without a restart, on SIGHUP (the files made to look
/// unchanged, so the poller cannot be the one) and on a file change alone.
#[tokio::test]
async fn https_with_alpn_and_certificate_rotation() {
    let node = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let (ca1, cert1, key1) = make_certs(dir, "one");
    let (ca2, cert2, key2) = make_certs(dir, "two");
    let (ca3, cert3, key3) = make_certs(dir, "three");
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    write_alike(&cert, &cert1, CERT_LEN, at);
    write_alike(&key, &key1, KEY_LEN, at);
    let gw = Llmux::start_with_server(
        &ollama("gpu-a", &node.url()),
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert.display(),
            key.display()
        ),
    );
    assert!(gw.base.starts_with("https://"), "{}", gw.base);

    eventually(
        Duration::from_secs(10),
        "the model discovered, over h2",
        async || {
            let h2 = trusting(&ca1, false)
                .get(gw.url("/v1/models"))
                .send()
                .await
                .unwrap();
            assert_eq!(h2.version(), http_version(2), "h2 chosen by ALPN");
            let models: Value = h2.json().await.unwrap();
            models["data"][0]["id"] == "llama3:latest"
        },
    )
    .await;
    let h1 = trusting(&ca1, true)
        .get(gw.url("/v1/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(h1.version(), http_version(1));
    let chat = trusting(&ca1, false)
        .post(gw.url("/v1/chat/completions"))
        .json(&chat("llama3", true))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    assert!(
        chat.text().await.unwrap().contains("[DONE]"),
        "a stream over h2"
    );
    // curl, as an operator would check it: HTTP/2 negotiated with the CA file.
    std::fs::write(dir.join("ca1.pem"), &ca1).unwrap();
    let curl = Command::new("curl")
        .args(["-sS", "--http2", "--cacert"])
        .arg(dir.join("ca1.pem"))
        .args([
            "-o",
            "/dev/null",
            "-w",
            "%{http_version}",
            &gw.url("/healthz"),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&curl.stdout), "2", "{curl:?}");
    let plain = client()
        .get(format!("http://{}/healthz", gw.addr))
        .send()
        .await;
    assert!(
        plain.is_err() || plain.is_ok_and(|r| r.status() != 200),
        "no plain HTTP"
    );
    assert!(
        !served_with(&gw, &ca2).await,
        "a client trusting another CA is refused"
    );

    // SIGHUP: same mtimes, same lengths; only the signal can make llmux look.
    write_alike(&key, &key2, KEY_LEN, at);
    write_alike(&cert, &cert2, CERT_LEN, at);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        served_with(&gw, &ca1).await,
        "unchanged-looking files are not re-read by the poller"
    );
    let hup = Instant::now();
    let pid = gw.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    eventually(
        Duration::from_secs(10),
        "the new certificate after SIGHUP",
        async || served_with(&gw, &ca2).await,
    )
    .await;
    eprintln!("certificate served {:?} after SIGHUP", hup.elapsed());
    assert!(!served_with(&gw, &ca1).await, "the old certificate is gone");

    // A file change alone (a new mtime): picked up by the poller.
    let changed = Instant::now();
    write_alike(&key, &key3, KEY_LEN, SystemTime::now());
    write_alike(&cert, &cert3, CERT_LEN, SystemTime::now());
    eventually(
        Duration::from_secs(10),
        "the new certificate after a file change",
        async || served_with(&gw, &ca3).await,
    )
    .await;
    eprintln!(
        "certificate served {:?} after the files changed",
        changed.elapsed()
    );

    // A broken write (a key that does not go with the certificate) keeps the old pair.
    write_alike(
        &key,
        &key1,
        KEY_LEN,
        SystemTime::now() + Duration::from_secs(5),
    );
    eventually(
        Duration::from_secs(10),
        "the refused reload logged",
        async || gw.log_text().contains("TLS certificate not reloaded"),
    )
    .await;
    assert!(
        served_with(&gw, &ca3).await,
        "still the last good certificate"
    );
}

fn http_version(major: u8) -> reqwest::Version {
    match major {
        2 => reqwest::Version::HTTP_2,
        _ => reqwest::Version::HTTP_11,
    }
}

/// Runs `llmux ARGS` in `dir`: (success, stdout + stderr).
fn run(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_llmux"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A missing file, a file with no certificate, a key that is no key, and a key that does not go
/// with the certificate: each refused by `llmux config check` with the key and the file named;
/// `llmux serve` refuses to start on the last.
#[test]
fn broken_tls_files_are_config_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, cert1, key1) = make_certs(dir, "one");
    let (_, _, key2) = make_certs(dir, "two");
    std::fs::write(dir.join("c.pem"), &cert1).unwrap();
    std::fs::write(dir.join("k.pem"), &key1).unwrap();
    std::fs::write(dir.join("other.key"), &key2).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a certificate\n").unwrap();
    let check = |cert: &str, key: &str| {
        let file: PathBuf = dir.join("llmux.toml");
        std::fs::write(
            &file,
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
        )
        .unwrap();
        run(dir, &["config", "check", "llmux.toml"])
    };
    let (ok, out) = check("c.pem", "k.pem");
    assert!(ok && out.contains("tls:       c.pem + k.pem"), "{out}");
    for (cert, key, says) in [
        (
            "missing.pem",
            "k.pem",
            &["server.tls.cert", "missing.pem", "No such file"][..],
        ),
        (
            "junk.pem",
            "k.pem",
            &["server.tls.cert", "junk.pem", "no certificate"][..],
        ),
        (
            "c.pem",
            "junk.pem",
            &["server.tls.key", "junk.pem", "private key"][..],
        ),
        (
            "c.pem",
            "other.key",
            &["server.tls", "other.key", "c.pem", "does not go with"][..],
        ),
    ] {
        let (ok, out) = check(cert, key);
        assert!(!ok, "{cert} + {key} accepted: {out}");
        for s in says {
            assert!(out.contains(s), "{cert} + {key}: {s:?} missing in {out}");
        }
        eprintln!("{cert} + {key}: {}", out.trim());
    }
    let (ok, out) = run(dir, &["serve", "--config", "llmux.toml"]);
    assert!(!ok && out.contains("does not go with"), "{out}");
}

/// CORS: a preflight from an allowed origin is answered before authentication; one from a
/// refused origin gets a 403 naming the setting and no CORS header; answers carry
/// `Access-Control-Allow-Origin` for the allowed origin only (errors too, so a page can read them).
#[tokio::test]
async fn cors_preflight_from_allowed_and_refused_origins() {
    let node = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let gw = Llmux::start_with_server(
        &format!("{}[auth]\nrequired = true\n", ollama("gpu-a", &node.url())),
        "[server.cors]\nallowed_origins = [\"https://app.example.com\"]\nmax_age = \"1h\"\n",
    );
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization, content-type, x-stainless-os",
            )
            .send()
    };
    let ok = preflight("https://app.example.com").await.unwrap();
    assert_eq!(ok.status(), 204);
    assert_eq!(
        header(&ok, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&ok, "access-control-allow-methods").contains("POST"));
    assert_eq!(
        header(&ok, "access-control-allow-headers"),
        "authorization, content-type, x-stainless-os"
    );
    assert_eq!(header(&ok, "access-control-max-age"), "3600");
    assert!(header(&ok, "vary").contains("origin"));

    let refused = preflight("https://evil.example.net").await.unwrap();
    assert_eq!(refused.status(), 403);
    let cors_headers: Vec<_> = refused
        .headers()
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .collect();
    assert!(cors_headers.is_empty(), "{cors_headers:?}");
    let body: Value = refused.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("server.cors.allowed_origins") && msg.contains("evil.example.net"),
        "{msg}"
    );

    // The call itself (no key: 401) still tells the allowed page what went wrong.
    let call = |origin: &'static str| {
        client()
            .post(gw.url("/v1/chat/completions"))
            .header("origin", origin)
            .json(&chat("llama3", false))
            .send()
    };
    let allowed = call("https://app.example.com").await.unwrap();
    assert_eq!(allowed.status(), 401);
    assert_eq!(
        header(&allowed, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(&allowed, "access-control-expose-headers").contains("x-request-id"));
    let other = call("https://evil.example.net").await.unwrap();
    assert_eq!(other.status(), 401);
    assert_eq!(header(&other, "access-control-allow-origin"), "");
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// gzip and brotli on `/v1/models` (and the admin API) for clients that accept them, identity for those that do
/// not; never on a stream (SSE or NDJSON) nor on a tiny body.
#[tokio::test]
async fn compression_of_json_but_not_streams() {
    let names: Vec<String> = (0..40)
        .map(|i| format!("model-number-{i:02}:latest"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let node = MockServer::start(node("gpu-a", &refs)).await.unwrap();
    let gw = Llmux::start(&ollama("gpu-a", &node.url()));
    let get = |encoding: &'static str, path: &'static str| {
        client()
            .get(gw.url(path))
            .header("accept-encoding", encoding)
            .send()
    };
    eventually(
        Duration::from_secs(10),
        "the models discovered",
        async || {
            let models: Value = get("identity", "/v1/models")
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            models["data"].as_array().is_some_and(|d| d.len() == 40)
        },
    )
    .await;
    let plain = get("identity", "/v1/models").await.unwrap();
    assert_eq!(header(&plain, "content-encoding"), "");
    let plain = plain.bytes().await.unwrap();
    let gz = get("gzip", "/v1/models").await.unwrap();
    assert_eq!(header(&gz, "content-encoding"), "gzip");
    assert!(header(&gz, "vary").contains("accept-encoding"));
    let gz = gz.bytes().await.unwrap();
    assert_eq!(gunzip(&gz), plain, "the same JSON once unzipped");
    let br = get("gzip, deflate, br", "/v1/models").await.unwrap();
    assert_eq!(header(&br, "content-encoding"), "br");
    let br = br.bytes().await.unwrap();
    eprintln!(
        "/v1/models with {} models: {} bytes plain, {} gzip, {} brotli",
        names.len(),
        plain.len(),
        gz.len(),
        br.len()
    );
    assert!(gz.len() * 3 < plain.len() && br.len() * 3 < plain.len());
    let tags = get("gzip", "/api/tags").await.unwrap();
    assert_eq!(
        header(&tags, "content-encoding"),
        "gzip",
        "Ollama's list too"
    );
    let admin = client()
        .get(gw.url("/admin/v1/upstreams"))
        .bearer_auth(ADMIN)
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&admin, "content-encoding"),
        "gzip",
        "the admin API too"
    );
    let upstreams: Value = serde_json::from_slice(&gunzip(&admin.bytes().await.unwrap())).unwrap();
    assert_eq!(upstreams[0]["name"], "gpu-a");
    let tiny = get("gzip", "/healthz").await.unwrap();
    assert_eq!(
        header(&tiny, "content-encoding"),
        "",
        "tiny bodies stay as they are"
    );

    for (path, body, kind) in [
        (
            "/v1/chat/completions",
            chat("model-number-01", true),
            "text/event-stream",
        ),
        (
            "/api/chat",
            serde_json::json!({"model": "model-number-01", "messages": [{"role": "user", "content": "hi"}]}),
            "application/x-ndjson",
        ),
    ] {
        let resp = client()
            .post(gw.url(path))
            .header("accept-encoding", "gzip, br")
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert!(header(&resp, "content-type").starts_with(kind), "{path}");
        assert_eq!(
            header(&resp, "content-encoding"),
            "",
            "{path}: a stream is never compressed"
        );
        assert!(!resp.text().await.unwrap().is_empty());
    }
}

/// Calls to an HTTPS upstream go over TLS and verify its certificate: a gateway in front of
/// another one serving a certificate of a private CA (no public root signs it) refuses the
/// upstream, says why, and never sends the call in the clear.
#[tokio::test]
async fn an_https_upstream_is_verified() {
    let node = MockServer::start(node("gpu-a", &["llama3:latest"]))
        .await
        .unwrap();
    let certs = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = make_certs(certs.path(), "private");
    let (cert_path, key_path) = (certs.path().join("s.pem"), certs.path().join("s.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let inner = Llmux::start_with_server(
        &ollama("gpu-a", &node.url()),
        &format!(
            "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            cert_path.display(),
            key_path.display()
        ),
    );
    assert!(inner.base.starts_with("https://"), "{}", inner.base);
    let outer = Llmux::start(&format!(
        "[health]\ninterval = \"60s\"\n[[upstreams]]\nname = \"tls\"\nkind = \"openai\"\n\
         url = \"{}/v1\"\nmodels = [\"llama3\"]\n",
        inner.base
    ));
    let r = post_chat(&outer, "llama3", false).await;
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("certificate"),
        "the reason names the certificate: {body}"
    );
    assert_eq!(
        node.stats().generations,
        0,
        "no call reached the node through the inner gateway"
    );
}
