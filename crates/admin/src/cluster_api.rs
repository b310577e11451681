//! `GET /admin/v1/cluster`: the instances of a cluster as the registry in Redis lists them, or
//! this instance alone when it runs by itself.
//!
//! The admin crate does not know Redis: the binary sets a [`ClusterView`] on the control plane
//! (`llmux_cluster::registry` in cluster mode, [`Local`] otherwise). Without one (an embedded
//! control plane, tests), the route answers from a [`Local`] view made on first use.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::Json;
use llmux_gateway::Gateway;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::time::rfc3339_ms;
use crate::ControlPlane;

/// What a [`ClusterView`] answers with.
pub type ViewFuture<'a> = Pin<Box<dyn Future<Output = ClusterSnapshot> + Send + 'a>>;

/// Lists the instances this one knows of.
pub trait ClusterView: Send + Sync {
    /// The instances now, this one included (a view that cannot reach the shared state lists
    /// this instance alone and says why in [`ClusterSnapshot::warning`]).
    fn snapshot(&self) -> ViewFuture<'_>;
}

/// One instance as its heartbeat describes it (what the registry stores, times in unix ms).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    pub id: String,
    /// Where it serves (`cluster.advertise`, else its listen address).
    pub address: String,
    pub version: String,
    pub started_ms: i64,
    pub last_heartbeat_ms: i64,
    /// Its heartbeat interval: it is lost after three of them without a heartbeat.
    pub heartbeat_ms: u64,
    /// Calls in flight at the last heartbeat.
    pub in_flight: u64,
    /// Calls finished per second over the last heartbeat interval.
    pub calls_per_s: f64,
    /// Whether it runs the active health checks and model discovery.
    pub prober: bool,
}

/// Whether an instance still beats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceState {
    /// Its last heartbeat is at most three heartbeat intervals old.
    Live,
    /// It missed three heartbeats: killed, partitioned, or stopped without removing its record.
    Lost,
}

impl InstanceState {
    /// `live` or `lost`, as the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Live => "live",
            InstanceState::Lost => "lost",
        }
    }
}

/// A single instance, or one of a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Single,
    Cluster,
}

/// The answer of a [`ClusterView`].
#[derive(Clone, Debug)]
pub struct ClusterSnapshot {
    pub mode: Mode,
    /// This instance's id.
    pub this: String,
    pub instances: Vec<(Instance, InstanceState)>,
    /// Why the list may be incomplete (shared state unreachable), if it may.
    pub warning: Option<String>,
}

impl ControlPlane {
    /// Sets what `GET /admin/v1/cluster` answers from; `false` when one was set (or used)
    /// already.
    pub fn set_cluster_view(&self, view: Arc<dyn ClusterView>) -> bool {
        self.cluster.set(view).is_ok()
    }
}

/// `GET /admin/v1/cluster`.
pub(crate) async fn get_cluster(State(cp): State<Arc<ControlPlane>>) -> Json<Value> {
    let view = cp.cluster.get_or_init(|| {
        let listen = cp.gateway.routes().config.server.listen.to_string();
        Arc::new(Local::new(Arc::clone(&cp.gateway), listen))
    });
    Json(render(&view.snapshot().await))
}

/// The JSON of `GET /admin/v1/cluster` (times RFC 3339), instances by address then id.
pub fn render(snap: &ClusterSnapshot) -> Value {
    let mut rows: Vec<&(Instance, InstanceState)> = snap.instances.iter().collect();
    rows.sort_by(|a, b| (&a.0.address, &a.0.id).cmp(&(&b.0.address, &b.0.id)));
    let instances: Vec<Value> = rows
        .into_iter()
        .map(|(i, state)| {
            json!({
                "id": i.id,
                "address": i.address,
                "version": i.version,
                "started": rfc3339_ms(i.started_ms),
                "last_heartbeat": rfc3339_ms(i.last_heartbeat_ms),
                "in_flight": i.in_flight,
                "calls_per_s": (i.calls_per_s * 100.0).round() / 100.0,
                "prober": i.prober,
                "state": state.as_str(),
            })
        })
        .collect();
    let mut answer = json!({
        "mode": match snap.mode { Mode::Single => "single", Mode::Cluster => "cluster" },
        "instance": snap.this,
        "instances": instances,
    });
    if let Some(w) = &snap.warning {
        answer["warning"] = w.as_str().into();
    }
    answer
}

/// Calls in flight now, and calls finished since start, over every upstream of `gw`.
pub fn local_load(gw: &Gateway) -> (u64, u64) {
    let routes = gw.routes();
    routes.upstreams.iter().fold((0, 0), |(active, done), u| {
        let now = u64::try_from(u.active_requests()).unwrap_or(u64::MAX);
        (
            active.saturating_add(now),
            done.saturating_add(u.metrics.totals().0),
        )
    })
}

/// Calls per second between two samples of a growing call count.
#[derive(Default)]
pub struct CallRate {
    last: Mutex<Option<RateSample>>,
}

#[derive(Clone, Copy)]
struct RateSample {
    at: Instant,
    total: u64,
    rate: f64,
}

impl CallRate {
    /// Takes `total` (calls finished since start) now, and answers the rate since the previous
    /// sample, if that is at least `min` old; otherwise the rate answered last (0 at first).
    /// A total that went down (an upstream removed with its counters) counts as no call.
    pub fn sample(&self, total: u64, min: Duration) -> f64 {
        let now = Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return 0.0;
        };
        let next = match *last {
            None => RateSample {
                at: now,
                total,
                rate: 0.0,
            },
            Some(prev) if now.duration_since(prev.at) < min => return prev.rate,
            Some(prev) => {
                let secs = now.duration_since(prev.at).as_secs_f64();
                let calls = total.saturating_sub(prev.total);
                #[allow(clippy::cast_precision_loss)] // counts far below 2^52
                let rate = calls as f64 / secs;
                RateSample {
                    at: now,
                    total,
                    rate,
                }
            }
        };
        *last = Some(next);
        next.rate
    }
}

/// This instance alone (mode `single`): it is its own prober, and always live.
pub struct Local {
    gw: Arc<Gateway>,
    id: String,
    address: String,
    started_ms: i64,
    rate: CallRate,
}

impl Local {
    /// This process serving on `address`, started now.
    pub fn new(gw: Arc<Gateway>, address: String) -> Local {
        Local {
            gw,
            id: instance_id(),
            address,
            started_ms: llmux_store::now_ms(),
            rate: CallRate::default(),
        }
    }
}

impl ClusterView for Local {
    fn snapshot(&self) -> ViewFuture<'_> {
        Box::pin(async move {
            let (in_flight, total) = local_load(&self.gw);
            let me = Instance {
                id: self.id.clone(),
                address: self.address.clone(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                started_ms: self.started_ms,
                last_heartbeat_ms: llmux_store::now_ms(),
                heartbeat_ms: 0,
                in_flight,
                // Over the time since the previous look, at least a second.
                calls_per_s: self.rate.sample(total, Duration::from_secs(1)),
                prober: true,
            };
            ClusterSnapshot {
                mode: Mode::Single,
                this: self.id.clone(),
                instances: vec![(me, InstanceState::Live)],
                warning: None,
            }
        })
    }
}

/// `{host}-{pid}`: how a single instance names itself.
fn instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "llmux".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn instance(id: &str, address: &str) -> Instance {
        Instance {
            id: id.into(),
            address: address.into(),
            version: "1.2.3".into(),
            started_ms: 1_700_000_000_000,
            last_heartbeat_ms: 1_700_000_060_500,
            heartbeat_ms: 500,
            in_flight: 3,
            calls_per_s: 2.456,
            prober: false,
        }
    }

    #[test]
    fn renders_the_documented_shape_sorted_by_address() {
        let snap = ClusterSnapshot {
            mode: Mode::Cluster,
            this: "b".into(),
            instances: vec![
                (instance("b", "10.0.0.2:4000"), InstanceState::Lost),
                (instance("a", "10.0.0.1:4000"), InstanceState::Live),
            ],
            warning: None,
        };
        let v = render(&snap);
        assert_eq!(v["mode"], "cluster");
        assert_eq!(v["instance"], "b");
        assert!(v.get("warning").is_none());
        let rows = v["instances"].as_array().unwrap();
        assert_eq!(rows[0]["id"], "a");
        assert_eq!(rows[0]["state"], "live");
        assert_eq!(rows[1]["state"], "lost");
        assert_eq!(rows[0]["started"], "2023-11-14T22:13:20Z");
        assert_eq!(rows[0]["last_heartbeat"], "2023-11-14T22:14:20.5Z");
        assert_eq!(rows[0]["calls_per_s"], 2.46);
        assert_eq!(rows[0]["in_flight"], 3);
        assert_eq!(rows[0]["prober"], false);
        let keys: Vec<&String> = rows[0].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 9, "{keys:?}");
    }

    #[test]
    fn call_rate_is_over_the_time_between_samples() {
        let r = CallRate::default();
        assert_eq!(r.sample(10, Duration::ZERO), 0.0);
        std::thread::sleep(Duration::from_millis(200));
        let rate = r.sample(30, Duration::ZERO);
        // 20 calls in a bit more than 0.2 s.
        assert!(rate > 50.0 && rate <= 100.0, "{rate}");
        // Too soon: the last rate again.
        assert_eq!(r.sample(1000, Duration::from_secs(60)), rate);
        // Fewer than before (counters dropped): no negative rate.
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(r.sample(0, Duration::ZERO), 0.0);
    }
}
