//! Alerts: events an operator wants pushed (an upstream lost or back, a key disabled, an error
//! rate past its threshold, an app's budget at 80 % and 100 %), posted as JSON to a webhook.
//!
//! Emitting never blocks and never fails the caller: events go through a bounded queue to one
//! background sender (retried with backoff, dropped and counted when the queue is full).

use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// Something worth telling an operator.
#[derive(Clone, Debug, PartialEq)]
pub enum Alert {
    UpstreamDown {
        upstream: String,
        reason: String,
    },
    UpstreamUp {
        upstream: String,
    },
    KeyDisabled {
        upstream: String,
        key_id: String,
        reason: String,
    },
    ErrorRate {
        upstream: String,
        rate: f64,
        calls: u64,
        window_s: u64,
    },
    /// An app crossed `percent` (80 or 100) of its balance or budget.
    Budget {
        app: String,
        percent: u32,
        detail: String,
    },
}

impl Alert {
    fn event(&self) -> &'static str {
        match self {
            Alert::UpstreamDown { .. } => "upstream_down",
            Alert::UpstreamUp { .. } => "upstream_up",
            Alert::KeyDisabled { .. } => "key_disabled",
            Alert::ErrorRate { .. } => "error_rate",
            Alert::Budget { .. } => "budget",
        }
    }

    /// A one-line human summary; also the `text` field, which Slack-style webhooks display.
    pub fn text(&self) -> String {
        match self {
            Alert::UpstreamDown { upstream, reason } => {
                format!("llmux: upstream {upstream} moved to standby ({reason})")
            }
            Alert::UpstreamUp { upstream } => format!("llmux: upstream {upstream} is back in the active pool"),
            Alert::KeyDisabled { upstream, key_id, reason } => {
                format!("llmux: key {key_id} of upstream {upstream} disabled ({reason})")
            }
            Alert::ErrorRate { upstream, rate, calls, window_s } => format!(
                "llmux: upstream {upstream} failed {:.0} % of {calls} calls in the last {window_s} s",
                rate * 100.0
            ),
            Alert::Budget { app, percent, detail } => {
                format!("llmux: app {app} reached {percent} % of its budget ({detail})")
            }
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        let mut v = match self {
            Alert::UpstreamDown { upstream, reason } => {
                json!({ "upstream": upstream, "reason": reason })
            }
            Alert::UpstreamUp { upstream } => json!({ "upstream": upstream }),
            Alert::KeyDisabled {
                upstream,
                key_id,
                reason,
            } => {
                json!({ "upstream": upstream, "key_id": key_id, "reason": reason })
            }
            Alert::ErrorRate {
                upstream,
                rate,
                calls,
                window_s,
            } => {
                json!({ "upstream": upstream, "error_rate": rate, "calls": calls, "window_s": window_s })
            }
            Alert::Budget {
                app,
                percent,
                detail,
            } => json!({ "app": app, "percent": percent, "detail": detail }),
        };
        v["event"] = json!(self.event());
        v["text"] = json!(self.text());
        v["at"] = json!(llmux_wire::time::rfc3339(std::time::SystemTime::now()));
        v
    }
}

static SINK: OnceLock<mpsc::Sender<Alert>> = OnceLock::new();
/// Where alerts go (`alerts.webhook_url`): set at start and on every reload, read per alert.
static WEBHOOK: std::sync::RwLock<Option<String>> = std::sync::RwLock::new(None);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);

const QUEUE: usize = 1024;

/// Sets (or clears) the webhook; the sender reads it for every alert, so a reload that
/// changes `alerts.webhook_url` takes effect with the next one.
pub fn configure(webhook_url: Option<String>) {
    if let Ok(mut w) = WEBHOOK.write() {
        *w = webhook_url;
    }
}

fn webhook() -> Option<String> {
    WEBHOOK.read().ok().and_then(|w| w.clone())
}

/// Queues an alert for the webhook; a no-op when no webhook is configured.
pub fn emit(alert: Alert) {
    tracing::info!(event = alert.event(), "{}", alert.text());
    if webhook().is_none() {
        return;
    }
    if let Some(tx) = SINK.get() {
        if tx.try_send(alert).is_err() {
            DROPPED.fetch_add(1, Relaxed);
        }
    }
}

/// (sent, dropped) since start, for `/metrics`.
pub fn counts() -> (u64, u64) {
    (SENT.load(Relaxed), DROPPED.load(Relaxed))
}

/// Starts the sender (once per process), posting to the webhook [`configure`] set last.
/// Returns the task to track, or `None` when a sender already runs.
pub fn start(
    cancel: tokio_util::sync::CancellationToken,
) -> Option<impl std::future::Future<Output = ()> + Send> {
    let (tx, mut rx) = mpsc::channel::<Alert>(QUEUE);
    SINK.set(tx).ok()?;
    // The webhook comes from the config file, so private hosts are fine; but its name is
    // resolved again at every connection, and must never land on a metadata or link-local
    // address (DNS rebinding).
    let guard = crate::ssrf_dns::PolicyCell::new(crate::ssrf_dns::Policy::Guarded {
        allow_private: true,
    });
    let client = reqwest::Client::builder()
        .dns_resolver(std::sync::Arc::new(crate::ssrf_dns::GuardedResolver::new(
            guard,
        )))
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .ok()?;
    Some(async move {
        loop {
            let alert = tokio::select! {
                _ = cancel.cancelled() => return,
                a = rx.recv() => match a { Some(a) => a, None => return },
            };
            // The webhook was removed by a reload since this alert was queued.
            let Some(webhook_url) = webhook() else {
                continue;
            };
            let body = alert.to_json();
            let mut delay = Duration::from_millis(200);
            for attempt in 1..=4 {
                match client.post(&webhook_url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => {
                        SENT.fetch_add(1, Relaxed);
                        break;
                    }
                    outcome => {
                        let why = match outcome {
                            Ok(r) => format!("HTTP {}", r.status().as_u16()),
                            Err(e) => e.to_string(),
                        };
                        if attempt == 4 {
                            DROPPED.fetch_add(1, Relaxed);
                            tracing::warn!(why, "alert webhook failed; alert dropped");
                        } else {
                            tokio::time::sleep(delay).await;
                            delay *= 3;
                        }
                    }
                }
            }
        }
    })
}

/// Watches each upstream's failure rate over `alerts.window` and alerts when it crosses
/// `alerts.error_rate` (with at least `alerts.min_calls` calls); alerts again only after it has
/// gone back under. The settings are read each window, so a reload changes them.
pub async fn watch_error_rates(
    gw: std::sync::Arc<crate::Gateway>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last: std::collections::HashMap<String, (u64, u64)> = Default::default();
    let mut firing: std::collections::HashSet<String> = Default::default();
    loop {
        let settings = gw.config().alerts.clone();
        let (threshold, window, min_calls) =
            (settings.error_rate, settings.window, settings.min_calls);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(window) => {}
        }
        for up in gw.routes().upstreams.iter() {
            let (total, failed) = up.metrics.totals();
            // Counters start at zero with the upstream, so a first sighting counts from zero.
            let (t0, f0) = last
                .insert(up.name.clone(), (total, failed))
                .unwrap_or((0, 0));
            let (calls, fails) = (total.saturating_sub(t0), failed.saturating_sub(f0));
            let rate = if calls == 0 {
                0.0
            } else {
                fails as f64 / calls as f64
            };
            if calls >= min_calls && rate >= threshold {
                if firing.insert(up.name.clone()) {
                    emit(Alert::ErrorRate {
                        upstream: up.name.clone(),
                        rate,
                        calls,
                        window_s: window.as_secs(),
                    });
                }
            } else {
                firing.remove(&up.name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_event_text_and_time() {
        let a = Alert::KeyDisabled {
            upstream: "openai".into(),
            key_id: "k1".into(),
            reason: "HTTP 401".into(),
        };
        let v = a.to_json();
        assert_eq!(v["event"], "key_disabled");
        assert_eq!(v["key_id"], "k1");
        assert!(v["text"].as_str().unwrap_or("").contains("k1"));
        assert!(v["at"].as_str().unwrap_or("").ends_with('Z'));
    }
}
