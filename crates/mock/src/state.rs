//! Per-server shared state: fixed configuration, swappable knobs (models, faults) and lock-free counters.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, SystemTime};

use axum::http::HeaderValue;
use bytes::Bytes;

use crate::{util, Faults, MockConfig, Stats};

/// Paths counted with an atomic each; anything else goes to a (rarely used) locked map.
const KNOWN_PATHS: [&str; 15] = [
    "/",
    "/api/version",
    "/api/tags",
    "/api/ps",
    "/api/show",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1beta/models",
];

/// Which API keys (bearer tokens, `x-api-key`, `x-goog-api-key` or `?key=`) the node accepts, refuses as revoked, or answers as rate-limited.
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyRules {
    pub valid: Vec<String>,
    pub revoked: Vec<String>,
    pub limited: Vec<String>,
}

impl KeyRules {
    /// Whether requests must carry a key at all.
    pub fn enforced(&self) -> bool {
        !(self.valid.is_empty() && self.revoked.is_empty() && self.limited.is_empty())
    }
}

/// Cap on distinct unknown paths remembered, so a scanner cannot grow the map without bound.
const MAX_OTHER_PATHS: usize = 256;

pub(crate) struct Shared {
    pub(crate) name: String,
    /// `name` escaped for splicing into JSON strings (done once, not per token).
    pub(crate) name_json: String,
    pub(crate) node_header: HeaderValue,
    pub(crate) ttft: Duration,
    pub(crate) chunk_delay: Duration,
    pub(crate) chunks: usize,
    pub(crate) dims: usize,
    pub(crate) strict_anthropic_version: bool,
    /// Models `/api/pull` can fetch besides the node's own.
    pub(crate) registry: Vec<String>,
    /// Pause between two `/api/pull` progress lines.
    pub(crate) pull_step: Duration,
    keys: RwLock<Arc<KeyRules>>,
    by_key: Mutex<BTreeMap<String, u64>>,
    pub(crate) started: SystemTime,
    seed: u64,
    ids: AtomicU64,
    models: RwLock<Arc<Vec<String>>>,
    faults: RwLock<Arc<Faults>>,
    loaded: Mutex<Vec<String>>,
    requests: AtomicU64,
    generations: AtomicU64,
    pub(crate) in_flight: AtomicU64,
    failed: AtomicU64,
    /// Numbering used by `fail_rate`; restarts whenever faults change so tests get a known phase.
    fault_seq: AtomicU64,
    by_path: [AtomicU64; KNOWN_PATHS.len()],
    by_path_other: Mutex<BTreeMap<String, u64>>,
    last_auth: Mutex<Option<HeaderValue>>,
    last_traceparent: Mutex<Option<HeaderValue>>,
    last_body: Mutex<Option<Bytes>>,
    /// The `x-*` headers of the last request (credentials left out).
    last_headers: Mutex<BTreeMap<String, String>>,
    hook_calls: AtomicU64,
    last_hook: Mutex<Option<serde_json::Value>>,
    /// Answers queued through `/_mock/script` for the next generation calls.
    pub(crate) script: crate::script::Script,
}

/// A poisoned lock only means another request panicked mid-update of plain data; keep serving.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(cfg: MockConfig) -> Self {
        let node_header =
            HeaderValue::from_str(&cfg.name).unwrap_or_else(|_| HeaderValue::from_static("mock"));
        let started = SystemTime::now();
        let seed = util::fnv1a(cfg.name.as_bytes())
            ^ started
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
        Self {
            name_json: util::js_inner(&cfg.name),
            name: cfg.name,
            node_header,
            ttft: cfg.ttft,
            chunk_delay: cfg.chunk_delay,
            chunks: cfg.chunks,
            dims: cfg.dims,
            strict_anthropic_version: cfg.strict_anthropic_version,
            registry: cfg.registry,
            pull_step: cfg.pull_step,
            keys: RwLock::new(Arc::new(KeyRules {
                valid: cfg.api_key.into_iter().chain(cfg.extra_keys).collect(),
                revoked: cfg.revoked_keys,
                limited: cfg.limited_keys,
            })),
            by_key: Mutex::new(BTreeMap::new()),
            started,
            seed,
            ids: AtomicU64::new(0),
            models: RwLock::new(Arc::new(cfg.models)),
            faults: RwLock::new(Arc::new(cfg.faults)),
            loaded: Mutex::new(cfg.loaded),
            requests: AtomicU64::new(0),
            generations: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            fault_seq: AtomicU64::new(0),
            by_path: Default::default(),
            by_path_other: Mutex::new(BTreeMap::new()),
            last_auth: Mutex::new(None),
            last_traceparent: Mutex::new(None),
            last_body: Mutex::new(None),
            last_headers: Mutex::new(BTreeMap::new()),
            hook_calls: AtomicU64::new(0),
            last_hook: Mutex::new(None),
            script: crate::script::Script::default(),
        }
    }

    pub(crate) fn models(&self) -> Arc<Vec<String>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_models(&self, models: Vec<String>) {
        *self.models.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(models);
    }

    /// A pulled model: served from now on (its tagged name, as `/api/tags` shows it).
    pub(crate) fn install(&self, model: &str) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        if !models.iter().any(|m| m == model) {
            let mut next = models.as_ref().clone();
            next.push(model.to_owned());
            *models = Arc::new(next);
        }
    }

    /// A deleted model: no longer served nor loaded.
    pub(crate) fn uninstall(&self, model: &str) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let next: Vec<String> = models.iter().filter(|m| *m != model).cloned().collect();
        *models = Arc::new(next);
        lock(&self.loaded).retain(|m| m != model);
    }

    pub(crate) fn faults(&self) -> Arc<Faults> {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn set_faults(&self, f: Faults) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(f);
        self.fault_seq.store(0, Relaxed);
    }

    /// Ollama's name rule: an untagged name means `:latest`; configured names win when exact.
    pub(crate) fn resolve(&self, wanted: &str) -> Option<String> {
        let models = self.models();
        if let Some(m) = models.iter().find(|m| *m == wanted) {
            return Some(m.clone());
        }
        let want = with_tag(wanted);
        models.iter().find(|m| with_tag(m) == want).cloned()
    }

    /// Real Ollama loads a model on first use, after which `/api/ps` lists it.
    pub(crate) fn mark_loaded(&self, model: &str) {
        let mut loaded = lock(&self.loaded);
        if !loaded.iter().any(|m| m == model) {
            loaded.push(model.to_owned());
        }
    }

    /// Loaded models that are still served.
    pub(crate) fn loaded(&self) -> Vec<String> {
        let loaded = lock(&self.loaded).clone();
        loaded
            .into_iter()
            .filter_map(|m| self.resolve(&m))
            .collect()
    }

    pub(crate) fn next_id(&self, len: usize) -> String {
        let n = self.ids.fetch_add(1, Relaxed);
        util::id_chars(self.seed ^ n.wrapping_mul(0x9e37_79b9_7f4a_7c15), len)
    }

    pub(crate) fn note_request(&self, path: &str, auth: Option<&HeaderValue>) {
        self.requests.fetch_add(1, Relaxed);
        if let Some(i) = KNOWN_PATHS.iter().position(|p| *p == path) {
            self.by_path[i].fetch_add(1, Relaxed);
        } else {
            let mut other = lock(&self.by_path_other);
            if let Some(n) = other.get_mut(path) {
                *n += 1;
            } else if other.len() < MAX_OTHER_PATHS {
                other.insert(path.to_owned(), 1);
            }
        }
        *lock(&self.last_auth) = auth.cloned();
    }

    pub(crate) fn keys(&self) -> Arc<KeyRules> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set_keys(&self, rules: KeyRules) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rules);
    }

    pub(crate) fn note_key(&self, key: &str) {
        let mut by_key = lock(&self.by_key);
        if let Some(n) = by_key.get_mut(key) {
            *n += 1;
        } else if by_key.len() < MAX_OTHER_PATHS {
            by_key.insert(key.to_owned(), 1);
        }
    }

    /// Remembers the W3C `traceparent` of the last request (None when it had none).
    pub(crate) fn note_traceparent(&self, v: Option<&HeaderValue>) {
        *lock(&self.last_traceparent) = v.cloned();
    }

    /// Remembers the `x-*` headers of the last request, except the ones carrying keys.
    pub(crate) fn note_headers(&self, headers: &axum::http::HeaderMap) {
        let kept = headers
            .iter()
            .filter(|(n, _)| {
                let n = n.as_str();
                n.starts_with("x-") && n != "x-api-key" && n != "x-goog-api-key"
            })
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        *lock(&self.last_headers) = kept;
    }

    /// Counts a call of the mock hook (`POST /hook`) and keeps what it was sent.
    pub(crate) fn note_hook(&self, payload: &serde_json::Value) {
        self.hook_calls.fetch_add(1, Relaxed);
        *lock(&self.last_hook) = Some(payload.clone());
    }

    pub(crate) fn note_body(&self, body: &Bytes) {
        // Bytes clone is a refcount bump; parsing waits until someone asks for stats.
        *lock(&self.last_body) = Some(body.clone());
    }

    /// Counts a generation call and says whether `fail_rate` picks it to fail.
    pub(crate) fn note_generation(&self, faults: &Faults) -> bool {
        self.generations.fetch_add(1, Relaxed);
        let n = self.fault_seq.fetch_add(1, Relaxed);
        let rate = faults.fail_rate;
        let fail = rate > 0.0 && ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
        if fail {
            self.failed.fetch_add(1, Relaxed);
        }
        fail
    }

    pub(crate) fn snapshot(&self) -> Stats {
        let mut by_path = lock(&self.by_path_other).clone();
        for (p, n) in KNOWN_PATHS.iter().zip(&self.by_path) {
            let n = n.load(Relaxed);
            if n > 0 {
                by_path.insert((*p).to_owned(), n);
            }
        }
        let last_traceparent = lock(&self.last_traceparent)
            .as_ref()
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        let last_authorization = lock(&self.last_auth)
            .as_ref()
            .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        let last_body = lock(&self.last_body)
            .as_ref()
            .and_then(|b| serde_json::from_slice(b).ok());
        Stats {
            last_traceparent,
            requests: self.requests.load(Relaxed),
            generations: self.generations.load(Relaxed),
            by_path,
            in_flight: self.in_flight.load(Relaxed),
            last_authorization,
            last_body,
            failed: self.failed.load(Relaxed),
            by_key: lock(&self.by_key).clone(),
            last_headers: lock(&self.last_headers).clone(),
            hook_calls: self.hook_calls.load(Relaxed),
            last_hook: lock(&self.last_hook).clone(),
        }
    }
}

/// `name` with an explicit tag (`:latest` when it has none); a ':' before the last '/' is a registry port.
pub(crate) fn with_tag(name: &str) -> std::borrow::Cow<'_, str> {
    let base = name.rsplit('/').next().unwrap_or(name);
    if base.contains(':') {
        name.into()
    } else {
        format!("{name}:latest").into()
    }
}

/// Counts a request as in flight until dropped; streams carry it so an open stream stays counted.
pub(crate) struct InFlight(Arc<Shared>);

impl InFlight {
    pub(crate) fn new(st: &Arc<Shared>) -> Self {
        st.in_flight.fetch_add(1, Relaxed);
        Self(st.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn resolve_follows_ollama_tag_rule() {
        let st = Shared::new(MockConfig {
            models: vec!["llama3:latest".into(), "qwen".into(), "phi3:mini".into()],
            ..MockConfig::default()
        });
        assert_eq!(st.resolve("llama3").as_deref(), Some("llama3:latest"));
        assert_eq!(
            st.resolve("llama3:latest").as_deref(),
            Some("llama3:latest")
        );
        assert_eq!(st.resolve("qwen:latest").as_deref(), Some("qwen"));
        assert_eq!(st.resolve("phi3:mini").as_deref(), Some("phi3:mini"));
        assert_eq!(st.resolve("phi3"), None);
        assert_eq!(st.resolve("llama3:8b"), None);
    }

    #[test]
    fn fail_rate_is_deterministic() {
        let st = Shared::new(MockConfig::default());
        let f = Faults {
            fail_rate: 0.3,
            ..Faults::default()
        };
        let pattern: Vec<bool> = (0..10).map(|_| st.note_generation(&f)).collect();
        assert_eq!(pattern.iter().filter(|x| **x).count(), 3);
        assert_eq!(
            pattern,
            [false, false, false, true, false, false, true, false, false, true]
        );
    }
}
