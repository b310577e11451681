//! The health prober: checks every upstream concurrently, refreshes its models, moves it between pools.

use crate::upstream::{index_models, unix_now, Pool, Upstream};
use crate::Gateway;
use config::UpstreamKind;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio_util::sync::CancellationToken;

/// What one probe learned.
struct Probe {
    latency: Duration,
    /// `None` when the upstream's models are declared in config.
    models: Option<Vec<String>>,
    tags: Vec<Value>,
    ps: Vec<Value>,
}

/// Probes every upstream once, all at the same time, each bounded by `timeout`.
pub async fn probe_all(gw: &Gateway) {
    let routes = gw.routes();
    let timeout = routes.config.health.timeout;
    let probes = routes.upstreams.iter().map(|u| probe_one(u, timeout));
    futures_util::future::join_all(probes).await;
}

/// Runs probes every `health.interval` until `cancel` fires.
pub async fn run(gw: Arc<Gateway>, cancel: CancellationToken) {
    loop {
        let interval = gw.routes().config.health.interval;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = probe_all(&gw) => {}
        }
    }
}

async fn probe_one(up: &Arc<Upstream>, timeout: Duration) {
    let result = match tokio::time::timeout(timeout, check(up)).await {
        Ok(r) => r,
        Err(_) => Err(format!("health check timed out after {timeout:?}")),
    };
    let before = up.state().pool;
    match result {
        Ok(probe) => {
            let ms = probe.latency.as_secs_f64() * 1000.0;
            up.update(|s| {
                s.pool = Pool::Active;
                s.last_error = None;
                s.last_check = Some(SystemTime::now());
                // EWMA, alpha 0.3: smooths one slow probe without hiding a lasting change for long.
                s.latency_ms = Some(match s.latency_ms {
                    Some(old) => old * 0.7 + ms * 0.3,
                    None => ms,
                });
                if let Some(models) = &probe.models {
                    if *models != s.model_list {
                        let (map, list) = index_models(models.clone());
                        s.models = map;
                        s.model_list = list;
                        s.models_seen_at = unix_now();
                    }
                }
                if up.kind == UpstreamKind::Ollama {
                    s.tags = probe.tags.clone();
                    s.ps = probe.ps.clone();
                    s.loaded = probe
                        .ps
                        .iter()
                        .filter_map(|m| m.get("name").or_else(|| m.get("model")))
                        .filter_map(Value::as_str)
                        .map(|n| wire::model::model_key(n).into_owned())
                        .collect();
                }
            });
            if before == Pool::Standby {
                tracing::info!(upstream = %up.name, latency_ms = ms, "upstream healthy again: back to active");
            }
        }
        Err(reason) => {
            up.update(|s| {
                s.pool = Pool::Standby;
                s.last_error = Some(reason.clone());
                s.last_check = Some(SystemTime::now());
            });
            if before == Pool::Active {
                tracing::warn!(upstream = %up.name, reason, "health check failed: upstream moved to standby");
            }
        }
    }
}

async fn check(up: &Upstream) -> Result<Probe, String> {
    let started = Instant::now();
    match up.kind {
        UpstreamKind::Ollama => {
            let tags = get_json(up, &format!("{}/api/tags", up.base)).await?;
            let latency = started.elapsed();
            let tags = list(&tags, "models");
            // /api/ps is informative (warm models); an old node without it is still healthy.
            let ps = match get_json(up, &format!("{}/api/ps", up.base)).await {
                Ok(v) => list(&v, "models"),
                Err(_) => Vec::new(),
            };
            let models = match &up.static_models {
                Some(_) => None,
                None => Some(names(&tags, &["name", "model"])),
            };
            Ok(Probe {
                latency,
                models,
                tags,
                ps,
            })
        }
        UpstreamKind::Openai => {
            let listed = get_json(up, &format!("{}/models", up.base)).await?;
            let latency = started.elapsed();
            let models = match &up.static_models {
                Some(_) => None,
                None => Some(names(&list(&listed, "data"), &["id"])),
            };
            Ok(Probe {
                latency,
                models,
                tags: Vec::new(),
                ps: Vec::new(),
            })
        }
    }
}

async fn get_json(up: &Upstream, url: &str) -> Result<Value, String> {
    let mut req = up.client.get(url);
    if let Some(key) = up.keys().first() {
        req = req.bearer_auth(key.expose());
    }
    let resp = req.send().await.map_err(|e| {
        if e.is_connect() {
            "connection failed".to_string()
        } else {
            format!("request failed: {e}")
        }
    })?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("health check got HTTP {}", status.as_u16()));
    }
    resp.json::<Value>()
        .await
        .map_err(|e| format!("health check reply is not JSON: {e}"))
}

fn list(v: &Value, field: &str) -> Vec<Value> {
    v.get(field)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn names(entries: &[Value], fields: &[&str]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|e| {
            fields
                .iter()
                .find_map(|f| e.get(*f).and_then(Value::as_str))
        })
        .map(str::to_string)
        .collect()
}
