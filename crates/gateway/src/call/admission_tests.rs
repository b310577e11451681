//! In-process tests of admission and settlement: credit reservations, permissions and limits
//! checked before a call reaches an upstream, and what is settled when the client hangs up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::admission::RESERVED_OUTPUT_TOKENS;
use super::*;
use crate::accounting::{self, Accountant, AdmitFuture, CallRecord, Refusal, Tokens};
use crate::auth::Identity;
use std::sync::Mutex;
use std::time::Duration;

/// Holds reservations like the ledger does and keeps every record.
#[derive(Default)]
pub(crate) struct Book {
    pub reserved: Mutex<f64>,
    pub admitted: Mutex<Vec<(String, f64, bool)>>,
    pub records: Mutex<Vec<CallRecord>>,
}

impl Accountant for Book {
    fn admit<'a>(&'a self, app_id: &'a str, reserve: f64, priced: bool) -> AdmitFuture<'a> {
        *self.reserved.lock().unwrap() += reserve;
        self.admitted
            .lock()
            .unwrap()
            .push((app_id.to_string(), reserve, priced));
        Box::pin(async { Ok::<(), Refusal>(()) })
    }
    fn record(&self, record: CallRecord) {
        *self.reserved.lock().unwrap() -= record.reserved;
        self.records.lock().unwrap().push(record);
    }
}

/// A TCP server that accepts connections and never answers.
pub(crate) async fn silent_upstream() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

pub(crate) fn gateway(toml: &str) -> (Arc<Gateway>, Arc<Book>) {
    let config = llmux_config::Config::from_toml_str(toml, &|_| None).unwrap();
    let gw = Gateway::new(config).unwrap();
    let book = Arc::new(Book::default());
    gw.accounting
        .set_accountant(Arc::clone(&book) as Arc<dyn Accountant>);
    (gw, book)
}

pub(crate) fn identity(models: &[&str]) -> Identity {
    Identity {
        key_id: "vk_1".into(),
        app_id: "app_1".into(),
        key_name: "k".into(),
        models: models.iter().map(|m| m.to_string()).collect(),
        limits: Default::default(),
    }
}

pub(crate) fn chat(model: &str, id: Option<Identity>) -> Request {
    let body = chat_body(model);
    let mut req = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    if let Some(id) = id {
        req.extensions_mut().insert(id);
    }
    req
}

#[tokio::test]
async fn a_hang_up_before_the_first_byte_releases_the_reservation_and_logs_client_closed() {
    let (addr, _server) = silent_upstream().await;
    let (gw, book) = gateway(&format!(
        "[[upstreams]]\nname = \"slow\"\nkind = \"openai\"\nurl = \"http://{addr}/v1\"\nmodels = [\"gpt-4o\"]\n"
    ));
    let call = handle(
        Arc::clone(&gw),
        Endpoint::ChatCompletions,
        chat("gpt-4o", Some(identity(&[]))),
    );
    // The client gives up while llmux waits for the upstream's first byte.
    assert!(tokio::time::timeout(Duration::from_millis(300), call)
        .await
        .is_err());
    let admitted = book.admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), 1);
    assert!(
        admitted[0].1 > 0.0,
        "gpt-4o is priced: something is reserved"
    );
    let records = book.records.lock().unwrap().clone();
    assert_eq!(records.len(), 1, "the hang-up is logged");
    assert_eq!(records[0].status, 499);
    assert_eq!(records[0].error_class.as_deref(), Some("client_closed"));
    assert_eq!(records[0].app_id.as_deref(), Some("app_1"));
    assert!(
        book.reserved.lock().unwrap().abs() < 1e-12,
        "reservation released"
    );
}

/// A gateway whose one upstream (silent) serves gpt-4o and llama3, with `aliases`.
async fn aliased(
    extra: &str,
    aliases: &[(&str, &[&str])],
) -> (Arc<Gateway>, Arc<Book>, tokio::task::JoinHandle<()>) {
    let (addr, server) = silent_upstream().await;
    let text = format!(
        "{extra}\n[[upstreams]]\nname = \"up\"\nkind = \"openai\"\nurl = \"http://{addr}/v1\"\nmodels = [\"gpt-4o\", \"llama3\", \"claude-opus-4\"]\n"
    );
    let (gw, book) = gateway(&text);
    let overlay = crate::routing::Overlay {
        aliases: aliases
            .iter()
            .map(|(a, t)| (a.to_string(), t.iter().map(|m| m.to_string()).collect()))
            .collect(),
        ..Default::default()
    };
    let config = llmux_config::Config::from_toml_str(&text, &|_| None).unwrap();
    gw.apply(config, overlay).await.unwrap();
    (gw, book, server)
}

/// Runs a call for a moment: `Some` when it answered (a refusal), `None` when it went on to
/// the (silent) upstream.
async fn try_call(gw: &Arc<Gateway>, model: &str, id: Identity) -> Option<Response<Body>> {
    let call = handle(
        Arc::clone(gw),
        Endpoint::ChatCompletions,
        chat(model, Some(id)),
    );
    tokio::time::timeout(Duration::from_millis(200), call)
        .await
        .ok()
}

#[tokio::test]
async fn an_alias_of_a_priced_model_reserves_for_its_dearest_target() {
    let (gw, book, _s) = aliased(
        "",
        &[
            ("cheap", &["llama3"]),
            ("smart", &["llama3", "claude-opus-4", "gpt-4o"]),
        ],
    )
    .await;
    assert!(try_call(&gw, "cheap", identity(&[])).await.is_none());
    assert!(try_call(&gw, "smart", identity(&[])).await.is_none());
    let admitted = book.admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), 2);
    assert!(!admitted[0].2, "llama3 is free: never refused for money");
    assert!(admitted[1].2, "an alias of priced models is priced");
    let opus = gw.accounting.pricing().price("claude-opus-4").unwrap();
    let want = opus.cost(Tokens {
        input: accounting::estimate_tokens(chat_body("smart").len() as u64),
        output: RESERVED_OUTPUT_TOKENS,
        estimated: true,
        ..Tokens::default()
    });
    assert!(
        (admitted[1].1 - want).abs() < 1e-12,
        "{} vs {want}",
        admitted[1].1
    );
}

fn chat_body(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#)
}

#[tokio::test]
async fn a_model_priced_at_zero_is_free() {
    let (gw, book, _s) = aliased(
        "[[pricing]]\nmodel = \"gpt-4o\"\ninput_per_mtok = 0.0\noutput_per_mtok = 0.0\n",
        &[],
    )
    .await;
    assert!(try_call(&gw, "gpt-4o", identity(&[])).await.is_none());
    let admitted = book.admitted.lock().unwrap().clone();
    assert_eq!(admitted, [("app_1".to_string(), 0.0, false)]);
}

#[tokio::test]
async fn an_alias_is_permitted_by_its_targets() {
    let (gw, _book, _s) = aliased(
        "",
        &[
            ("both", &["gpt-4o", "llama3"]),
            ("opus", &["claude-opus-4"]),
        ],
    )
    .await;
    // Every target allowed: the alias is.
    assert!(try_call(&gw, "both", identity(&["gpt-4o", "llama3"]))
        .await
        .is_none());
    // Some allowed: the others are skipped.
    assert!(try_call(&gw, "both", identity(&["llama3"])).await.is_none());
    // None allowed: 403.
    let r = try_call(&gw, "opus", identity(&["gpt-4o"])).await.unwrap();
    assert_eq!(r.status(), 403);
    // A key that names the alias may use its targets.
    assert!(try_call(&gw, "opus", identity(&["opus"])).await.is_none());
}

#[tokio::test]
async fn an_alias_does_not_escape_its_targets_rpm() {
    let (gw, _book, _s) = aliased("", &[("fast", &["gpt-4o"])]).await;
    let mut id = identity(&[]);
    let mut limits = crate::limits::KeyLimits::default();
    limits.models.insert(
        "gpt-4o".into(),
        crate::limits::ModelLimits {
            rpm: Some(1),
            tpm: None,
        },
    );
    id.limits = Arc::new(limits);
    assert!(try_call(&gw, "fast", id.clone()).await.is_none());
    let r = try_call(&gw, "fast", id.clone()).await.unwrap();
    assert_eq!(r.status(), 429);
    let r = try_call(&gw, "gpt-4o", id).await.unwrap();
    assert_eq!(r.status(), 429);
}

/// An upstream that reports absurd token counts (`eval_count: 18446744073709551615`) cannot
/// overflow the settlement (a panic is an outage) nor bill a finite app an infinite amount.
#[test]
fn absurd_upstream_token_counts_are_capped_when_settled() {
    let book = Arc::new(Book::default());
    let pricing = Arc::new(accounting::Pricing::build(&[], &Default::default()));
    let mut d = Draft::new(
        CallRecord {
            requested_model: "gpt-4o".into(),
            ..CallRecord::default()
        },
        10,
        Instant::now(),
        pricing,
        Arc::clone(&book) as Arc<dyn Accountant>,
        false,
    );
    // As the call's rate-limit reconciliation does with the settled tokens.
    d.on_settle = Some(Box::new(|t: Tokens, _grant| {
        let _ = t.input + t.output;
    }));
    let absurd = Tokens {
        input: u64::MAX,
        output: u64::MAX,
        estimated: false,
        ..Tokens::default()
    };
    d.finish(200, None, None, absurd, None);
    let r = book.records.lock().unwrap().pop().unwrap();
    assert!(
        r.tokens.input <= accounting::MAX_CALL_TOKENS,
        "{:?}",
        r.tokens
    );
    assert!(
        r.tokens.output <= accounting::MAX_CALL_TOKENS,
        "{:?}",
        r.tokens
    );
    assert!(i64::try_from(r.tokens.input + r.tokens.output).is_ok());
    assert!(r.cost.is_finite() && r.cost > 0.0, "{}", r.cost);
}

/// A refused model name is described, never repeated (it may be anything a client sent).
#[test]
fn model_names_are_refused_without_repeating_them() {
    assert_eq!(check_model("llama3:8b"), Ok(()));
    let long = "m".repeat(MAX_MODEL_LEN + 1);
    assert_eq!(
        check_model(&long).unwrap_err().to_string(),
        "invalid `model`: 257 bytes long; the limit is 256"
    );
    assert_eq!(
        check_model("a\0b").unwrap_err().to_string(),
        "invalid `model`: contains control characters"
    );
}

/// Two nodes that answer every call with a 503: the call fails over until `max_attempts`, and
/// its record says what its answer's headers say (attempts, the upstream that answered last),
/// lists every attempt, and keeps no upstream model or key (no upstream served it).
#[tokio::test]
async fn a_call_every_upstream_fails_is_recorded_with_each_attempt() {
    let failing = |name: &str| llmux_mock::MockConfig {
        name: name.into(),
        faults: llmux_mock::Faults {
            fail_rate: 1.0,
            fail_status: 503,
            ..Default::default()
        },
        ..Default::default()
    };
    let a = llmux_mock::MockServer::start(failing("a")).await.unwrap();
    let b = llmux_mock::MockServer::start(failing("b")).await.unwrap();
    let node = |name: &str, url: String| {
        format!("[[upstreams]]\nname = \"{name}\"\nkind = \"ollama\"\nurl = \"{url}\"\nmodels = [\"llama3:latest\"]\n")
    };
    let (gw, book) = gateway(&format!(
        "[routing]\nmax_attempts = 3\n{}{}",
        node("a", a.url()),
        node("b", b.url())
    ));
    let resp = handle(
        Arc::clone(&gw),
        Endpoint::ChatCompletions,
        chat("llama3", None),
    )
    .await;
    assert_eq!(resp.status(), 503, "the last upstream's own answer");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("x-llmux-attempts").as_deref(), Some("3"));
    let records = book.records.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r.status, 503);
    assert_eq!(r.attempts, 3);
    assert_eq!(r.upstream, header("x-llmux-upstream"));
    assert!(r.upstream.is_some());
    assert_eq!(r.upstream_model, None);
    assert_eq!(r.provider_key_id, None);
    assert_eq!(r.attempt_log.len(), 3, "{:?}", r.attempt_log);
    for attempt in &r.attempt_log {
        assert_eq!(attempt.status, Some(503));
        assert_eq!(attempt.error_class.as_deref(), Some("unavailable"));
    }
    let upstreams: Vec<&str> = r.attempt_log.iter().map(|a| a.upstream.as_str()).collect();
    assert!(
        upstreams.contains(&"a") && upstreams.contains(&"b"),
        "{upstreams:?}"
    );
}
