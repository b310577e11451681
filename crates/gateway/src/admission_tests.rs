//! In-process tests of admission and settlement: credit reservations, permissions and limits
//! checked before a call reaches an upstream, and what is settled when the client hangs up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use crate::accounting::{AdmitFuture, Refusal};
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
    let config = config::Config::from_toml_str(toml, &|_| None).unwrap();
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
    let body = format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}]}}"#);
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
