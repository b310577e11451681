//! `ControlPlane`: file config + API-managed state → the gateway's running config, with revisions,
//! rollback and reload from the file.
//!
//! One truth, two sources: the file declares upstreams and settings (read-only through the API),
//! the store holds what the API manages. The effective config is always recomputed from both
//! ([`compose`]) and handed to `Gateway::apply`; every applied change is a stored revision.
//! Changes are serialized by one async mutex (`state`), so an API write, a file reload and a
//! rollback never interleave their store writes and swaps.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use llmux_config::{Config, Secret, Strategy, UpstreamConfig};
use llmux_gateway::routing::Overlay;
use llmux_gateway::Gateway;
use llmux_store::{
    Alias, MasterKeys, Model, NewAuditEvent, NewConfigRevision, RoutingSnapshot, Source, Store,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::MutexGuard;

use crate::error::{ApiError, ApiResult};
use crate::time::rfc3339_ms;
use llmux_hub::keycache::KeyCache;

/// The setting that overrides `routing.strategy`.
pub const STRATEGY_SETTING: &str = "routing.strategy";

/// Associated data binding a sealed config-file text to its purpose.
const FILE_AAD: &[u8] = b"config_revision:file";

/// Reads an environment variable for `${VAR}` in the config file.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// What the file side of the config currently is.
pub(crate) struct FileState {
    /// The text in force (`None`: no config file, built-in defaults).
    pub(crate) text: Option<String>,
    /// That text, validated.
    pub(crate) config: Config,
    /// (mtime, len) of the file when it was last read, to notice edits.
    pub(crate) fingerprint: Option<(SystemTime, u64)>,
}

/// How the last reload went, for `GET /admin/v1/config`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ReloadStatus {
    /// Newest revision applied.
    pub revision: Option<i64>,
    /// When the file was last applied successfully (RFC 3339).
    pub last_reload_at: Option<String>,
    /// The last refused change of the file and why; cleared by the next successful reload.
    pub last_reload_error: Option<Value>,
}

/// The control plane: the store, the master keys, the gateway it drives and the file it watches.
pub struct ControlPlane {
    pub(crate) store: Store,
    pub(crate) keys: MasterKeys,
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) keycache: Arc<KeyCache>,
    pub(crate) jwt_secret: [u8; 32],
    /// Sign-in limits of `POST /login`.
    pub(crate) login: crate::login::Throttle,
    /// What `GET /admin/v1/cluster` answers from (see [`crate::cluster_api`]).
    pub(crate) cluster: std::sync::OnceLock<Arc<dyn crate::cluster_api::ClusterView>>,
    pub(crate) file_path: Option<PathBuf>,
    pub(crate) env: Env,
    pub(crate) state: tokio::sync::Mutex<FileState>,
    pub(crate) status: Mutex<ReloadStatus>,
    /// Credits and budgets for the data plane; also queues call records for the writer.
    pub(crate) ledger: Arc<llmux_hub::ledger::Ledger>,
    /// The writer's end of the call-log queue, until [`ControlPlane::start_accounting`] takes it.
    call_log_rx: Mutex<Option<tokio::sync::mpsc::Receiver<llmux_store::CallRecord>>>,
    call_log_queue: Arc<llmux_hub::calllog::Queue>,
    /// This process's side of the change stream between instances (`sync`).
    pub(crate) sync: crate::sync::SyncState,
}

/// The API-managed state that feeds the running config, with provider keys decrypted.
pub(crate) struct ApiState {
    pub(crate) upstreams: Vec<(llmux_store::Upstream, Vec<Secret>)>,
    pub(crate) models: Vec<Model>,
    pub(crate) aliases: Vec<Alias>,
    pub(crate) strategy: Option<Strategy>,
    /// Upstreams drained for maintenance (runtime switches, by name).
    pub(crate) drained: BTreeSet<String>,
}

/// Loads what the API manages from the store (decrypting provider keys in memory only).
pub(crate) async fn load_api_state(store: &Store, keys: &MasterKeys) -> ApiResult<ApiState> {
    let upstreams = store.list_upstreams().await?;
    let mut secrets: HashMap<String, Vec<Secret>> = HashMap::new();
    for (key, secret) in store.reveal_provider_keys(keys, None).await? {
        if key.state == llmux_store::KeyState::Ok {
            secrets.entry(key.upstream_id).or_default().push(secret);
        }
    }
    let strategy = match store.get_setting(STRATEGY_SETTING).await? {
        Some(Value::String(s)) => Some(
            s.parse()
                .map_err(|e: llmux_config::ValueError| ApiError::Internal(e.to_string()))?,
        ),
        _ => None,
    };
    Ok(ApiState {
        upstreams: upstreams
            .into_iter()
            .filter(|u| u.source == Source::Api)
            .map(|u| {
                let keys = secrets.remove(&u.id).unwrap_or_default();
                (u, keys)
            })
            .collect(),
        models: store.list_models(None).await?,
        aliases: store.list_aliases().await?,
        strategy,
        drained: store
            .list_drains()
            .await?
            .into_iter()
            .map(|d| d.upstream)
            .collect(),
    })
}

/// The effective config: the file's, plus API upstreams (enabled ones), plus the strategy
/// override; and the overlay (aliases, disabled models, which upstreams came from the API).
pub(crate) fn compose(file: &Config, api: &ApiState) -> ApiResult<(Config, Overlay)> {
    let mut config = file.clone();
    let mut overlay = Overlay::default();
    let mut ids = HashMap::new();
    for (u, keys) in &api.upstreams {
        ids.insert(u.id.clone(), u.name.clone());
        if file.upstream(&u.name).is_some() {
            return Err(ApiError::Conflict(format!(
                "upstream {:?} is declared both in the config file and through the admin API",
                u.name
            )));
        }
        overlay.api_upstreams.insert(u.name.clone());
        if u.enabled {
            config.upstreams.push(upstream_config(u, keys)?);
        }
    }
    if let Some(strategy) = api.strategy {
        config.routing.strategy = strategy;
    }
    overlay.drained = api.drained.clone();
    for m in &api.models {
        let upstream = m.upstream_id.as_ref().and_then(|id| ids.get(id)).cloned();
        // A renamed model is switched off (and sent upstream) under the name the upstream knows.
        let served = m.original_name.clone().unwrap_or_else(|| m.name.clone());
        if let Some(original) = &m.original_name {
            overlay
                .renames
                .push((upstream.clone(), original.clone(), m.name.clone()));
        }
        if !m.enabled {
            overlay.disabled_models.push((upstream, served));
        }
    }
    overlay.aliases = api
        .aliases
        .iter()
        .map(|a| (a.name.clone(), a.targets.clone()))
        .collect::<BTreeMap<_, _>>();
    Ok((config, overlay))
}

/// A timeout that is neither a duration string nor whole seconds (`1.5`, `9300000000000000000`,
/// `true`): what to send instead, with the bound.
const NOT_A_DURATION: &str =
    "not a duration: send a string such as \"500ms\", \"5s\", \"1m30s\" or whole seconds, at most 24h";

/// Validates an API upstream exactly as the config file would be validated, by writing it as
/// one `[[upstreams]]` table and loading that: one set of rules for both sources. Errors name
/// the field (`url: invalid URL …`).
pub(crate) fn upstream_config(
    u: &llmux_store::Upstream,
    keys: &[Secret],
) -> ApiResult<UpstreamConfig> {
    let mut table = toml::Table::new();
    table.insert("name".into(), text(&u.name));
    table.insert("kind".into(), text(&u.kind));
    table.insert("url".into(), text(&u.url));
    table.insert("weight".into(), toml::Value::Integer(u.weight));
    if let Some(models) = &u.models {
        table.insert(
            "models".into(),
            toml::Value::Array(models.iter().map(|m| text(m)).collect()),
        );
    }
    table.insert(
        "keys".into(),
        toml::Value::Array(keys.iter().map(|k| text(k.expose())).collect()),
    );
    if let Some(v) = &u.api_version {
        table.insert("api_version".into(), text(v));
    }
    // The translation options, read by the config file's own rules (a wrong value is named).
    for key in ["max_tokens_field", "max_output_tokens"] {
        match u.options.get(key) {
            None | Some(Value::Null) => {}
            Some(v) => {
                let v =
                    toml::Value::try_from(v).map_err(|e| ApiError::field(key, e.to_string()))?;
                table.insert(key.into(), v);
            }
        }
    }
    if let Some(obj) = u.timeouts.as_object() {
        let mut timeouts = toml::Table::new();
        for (k, v) in obj {
            let v = match v {
                Value::String(s) => text(s),
                Value::Number(n) => match n.as_i64() {
                    Some(i) => toml::Value::Integer(i),
                    None => return Err(ApiError::field(&format!("timeouts.{k}"), NOT_A_DURATION)),
                },
                Value::Null => continue,
                _ => return Err(ApiError::field(&format!("timeouts.{k}"), NOT_A_DURATION)),
            };
            timeouts.insert(k.clone(), v);
        }
        table.insert("timeouts".into(), toml::Value::Table(timeouts));
    }
    let mut doc = toml::Table::new();
    doc.insert(
        "upstreams".into(),
        toml::Value::Array(vec![toml::Value::Table(table)]),
    );
    let config = Config::from_toml_str(&doc.to_string(), &|_| None).map_err(|e| {
        let field = e.path.strip_prefix("upstreams[0].").unwrap_or(&e.path);
        ApiError::field(field, &e.message)
    })?;
    config
        .upstreams
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::Internal("upstream vanished in validation".into()))
}

/// A TOML string whose `${` cannot be taken for an environment reference: values from the API
/// are literal (`$${` is the config file's escape for a literal `${`).
fn text(s: &str) -> toml::Value {
    toml::Value::String(s.replace("${", "$${"))
}

/// What a revision stores: the file text (sealed: a config file may hold provider keys in the
/// clear) and the API-managed routing state (provider keys as ciphertext only).
#[derive(Serialize, Deserialize)]
struct RevisionContent {
    version: u32,
    file_path: Option<String>,
    file_sealed: Option<String>,
    routing: RoutingSnapshot,
}

impl ControlPlane {
    /// Builds the control plane over a gateway already running `file_config` composed with the
    /// store's state (see [`initial_config`]).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Store,
        keys: MasterKeys,
        gateway: Arc<Gateway>,
        file_path: Option<PathBuf>,
        file_text: Option<String>,
        file_config: Config,
        env: Env,
    ) -> Arc<ControlPlane> {
        // Tokens must survive restarts but die with the master key: derive, don't store.
        let jwt_secret =
            crate::jwt::hmac_sha256(keys.current().to_base64().as_bytes(), b"llmux admin jwt v1");
        let fingerprint = file_path.as_deref().and_then(crate::watch::fingerprint);
        let keycache = Arc::new(KeyCache::new(store.clone()));
        let (call_log_queue, call_log_rx) = llmux_hub::calllog::Queue::new();
        let ledger = llmux_hub::ledger::Ledger::new(store.clone(), Arc::clone(&call_log_queue));
        gateway.set_authenticator(Arc::clone(&keycache) as Arc<dyn llmux_gateway::auth::Authenticator>);
        let cp = Arc::new(ControlPlane {
            store,
            keys,
            gateway,
            keycache,
            jwt_secret,
            login: crate::login::Throttle::default(),
            cluster: std::sync::OnceLock::new(),
            file_path,
            env,
            state: tokio::sync::Mutex::new(FileState {
                text: file_text,
                config: file_config,
                fingerprint,
            }),
            status: Mutex::new(ReloadStatus::default()),
            ledger,
            call_log_rx: Mutex::new(Some(call_log_rx)),
            call_log_queue,
            sync: crate::sync::SyncState::new(),
        });
        // Ollama model management on the data plane is admin-only when auth is on.
        let gate = crate::session::AdminGate(Arc::downgrade(&cp));
        cp.gateway.set_admin_check(Arc::new(gate));
        cp
    }

    /// Starts accounting: loads the API's price overrides, installs the ledger as the gateway's
    /// accountant, and spawns on `tasks` the call-log writer (which drains its queue once
    /// `stop` is cancelled — cancel it only after the last call has finished), the retention
    /// task (`[logs] retention_days`) and the writer of virtual keys' `last_used_at`. Only the first call does anything.
    pub async fn start_accounting(
        self: &Arc<Self>,
        tasks: &tokio_util::task::TaskTracker,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let Some(rx) = self.call_log_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        match crate::pricing::load(&self.store).await {
            Ok(prices) => self
                .gateway
                .accounting
                .set_api_prices(prices, &self.gateway.config().pricing),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the price overrides; using the file's")
            }
        }
        self.gateway.accounting.set_accountant(
            Arc::clone(&self.ledger) as Arc<dyn llmux_gateway::accounting::Accountant>
        );
        // Records the last run could not write at its shutdown go in before any new ones.
        let spill = llmux_hub::calllog::spill_file(&self.gateway.config().store.url);
        if let Some(path) = spill.as_deref() {
            llmux_hub::calllog::replay_spill(&self.store, &*self.ledger, path).await;
        }
        tasks.spawn(llmux_hub::calllog::run(
            Arc::clone(&self.call_log_queue),
            rx,
            Arc::new(self.store.clone()),
            Arc::clone(&self.ledger) as Arc<dyn llmux_hub::calllog::Flushed>,
            stop.clone(),
            spill,
        ));
        tasks.spawn(llmux_hub::retention::run(
            Arc::clone(&self.gateway),
            self.store.clone(),
            stop.clone(),
        ));
        // Virtual keys' `last_used_at`, written in batches off the request path.
        tasks.spawn(llmux_hub::keycache::run_touch(
            Arc::clone(&self.keycache),
            stop,
        ));
    }

    /// The data plane's ledger (credits and budgets), for cluster mode to share.
    pub fn ledger(&self) -> &Arc<llmux_hub::ledger::Ledger> {
        &self.ledger
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// How the last reload went.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Notes `id` as the newest revision applied (a change heard from another instance).
    pub(crate) fn set_revision(&self, id: i64) {
        self.set_status(|s| s.revision = Some(id));
    }

    fn set_status(&self, f: impl FnOnce(&mut ReloadStatus)) {
        if let Ok(mut s) = self.status.lock() {
            f(&mut s);
        }
    }

    /// Records the state at start-up as a revision, unless it is the newest one already (so
    /// restarts do not pile up identical revisions).
    pub async fn record_startup(&self) -> ApiResult<()> {
        let fs = self.state.lock().await;
        // The store's own words (as before), not the API's "store: …" 500.
        let routing = self
            .store
            .routing_snapshot()
            .await
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Ok(Some(latest)) = self.store.latest_config_revision().await {
            if let Ok(content) = serde_json::from_str::<RevisionContent>(&latest.content) {
                let same_file = self.open_file(&content).ok() == Some(fs.text.clone());
                if same_file && content.routing == routing {
                    self.set_status(|s| s.revision = Some(latest.id));
                    return Ok(());
                }
            }
        }
        self.record_revision(&fs, "llmux", Source::File, Some("startup"))
            .await
            .map(|_| ())
    }

    fn open_file(&self, content: &RevisionContent) -> ApiResult<Option<String>> {
        content
            .file_sealed
            .as_deref()
            .map(|sealed| {
                let plain = self.keys.decrypt(sealed, FILE_AAD)?;
                String::from_utf8(plain)
                    .map_err(|_| ApiError::Internal("revision file text is not UTF-8".into()))
            })
            .transpose()
    }

    /// Takes the change lock: hold it across a store write and [`ControlPlane::apply_locked`].
    pub(crate) async fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().await
    }

    /// Recomposes the running config from the store's API-managed state and `fs` (the file
    /// side) and swaps it into the gateway.
    pub(crate) async fn apply_composed(&self, fs: &FileState) -> ApiResult<()> {
        let api = load_api_state(&self.store, &self.keys).await?;
        let (config, overlay) = compose(&fs.config, &api)?;
        self.gateway
            .apply(config, overlay)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))
    }

    /// Recomputes the effective config from `fs` and the store, applies it, and records a
    /// revision. Call with the change lock held.
    pub(crate) async fn apply_locked(
        &self,
        fs: &FileState,
        actor: &str,
        source: Source,
        note: Option<&str>,
    ) -> ApiResult<i64> {
        self.apply_composed(fs).await?;
        let revision = self.record_revision(fs, actor, source, note).await?;
        self.publish(llmux_store::ChangeKind::Config, None).await;
        Ok(revision)
    }

    async fn record_revision(
        &self,
        fs: &FileState,
        actor: &str,
        source: Source,
        note: Option<&str>,
    ) -> ApiResult<i64> {
        let file_sealed = fs
            .text
            .as_ref()
            .map(|t| self.keys.encrypt(t.as_bytes(), FILE_AAD))
            .transpose()?;
        let content = RevisionContent {
            version: 1,
            file_path: self.file_path.as_ref().map(|p| p.display().to_string()),
            file_sealed,
            routing: self.store.routing_snapshot().await?,
        };
        let content =
            serde_json::to_string(&content).map_err(|e| ApiError::Internal(e.to_string()))?;
        let rev = self
            .store
            .create_config_revision(&NewConfigRevision {
                actor: actor.to_owned(),
                source,
                content,
                note: note.map(str::to_owned),
            })
            .await?;
        self.set_status(|s| s.revision = Some(rev.id));
        Ok(rev.id)
    }

    /// Appends an audit event; a failure is logged, not returned (the change itself happened).
    pub(crate) async fn audit(
        &self,
        actor: &str,
        action: &str,
        target_type: &str,
        target_id: Option<&str>,
        before: Option<Value>,
        after: Option<Value>,
    ) {
        let event = NewAuditEvent {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id: target_id.map(str::to_owned),
            before: before.map(mask_secrets),
            after: after.map(mask_secrets),
        };
        if let Err(e) = self.store.record_audit_event(&event).await {
            tracing::error!(error = %e, action, "cannot record audit event");
        }
    }

    /// Re-reads the config file and applies it when it changed (or always, with `force`). An
    /// invalid file is refused with the reason (logged, remembered in the status, returned);
    /// the running config keeps serving.
    pub async fn reload_file(&self, actor: &str, force: bool) -> ApiResult<Value> {
        let Some(path) = self.file_path.clone() else {
            return Err(ApiError::BadRequest(
                "llmux was started without a config file: nothing to reload".into(),
            ));
        };
        let mut fs = self.lock().await;
        fs.fingerprint = crate::watch::fingerprint(&path);
        let outcome = self.reload_locked(&mut fs, &path, actor, force).await;
        match &outcome {
            Ok(v) if v["changed"] == json!(true) => {
                tracing::info!(file = %path.display(), revision = %v["revision"], actor, "config reloaded");
                self.set_status(|s| {
                    s.last_reload_at = Some(rfc3339_ms(llmux_store::now_ms()));
                    s.last_reload_error = None;
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "config change refused; the running config keeps serving");
                let error =
                    json!({ "at": rfc3339_ms(llmux_store::now_ms()), "message": e.to_string() });
                self.set_status(|s| s.last_reload_error = Some(error));
            }
        }
        outcome
    }

    async fn reload_locked(
        &self,
        fs: &mut FileState,
        path: &std::path::Path,
        actor: &str,
        force: bool,
    ) -> ApiResult<Value> {
        let text = tokio::fs::read_to_string(path)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read {}: {e}", path.display())))?;
        if !force && fs.text.as_deref() == Some(text.as_str()) {
            return Ok(json!({ "changed": false, "revision": self.status().revision }));
        }
        let env = Arc::clone(&self.env);
        let config = Config::from_toml_str(&text, &|name| env(name)).map_err(|e| {
            ApiError::BadRequest(format!(
                "{}: {e} (the change was not applied; the running config keeps serving)",
                path.display()
            ))
        })?;
        let api = load_api_state(&self.store, &self.keys).await?;
        let (effective, overlay) = compose(&config, &api).map_err(|e| {
            ApiError::BadRequest(format!(
                "{}: {e} (the change was not applied; the running config keeps serving)",
                path.display()
            ))
        })?;
        self.gateway
            .apply(effective, overlay)
            .await
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        fs.text = Some(text);
        fs.config = config;
        let revision = self
            .record_revision(fs, actor, Source::File, Some("config file reloaded"))
            .await?;
        self.publish(llmux_store::ChangeKind::Config, None).await;
        Ok(json!({ "changed": true, "revision": revision }))
    }

    /// Restores the routing of revision `id` (API-managed entities and the file's settings) and
    /// records that as a new revision. The file on disk is not rewritten: the restored file
    /// settings hold until the file changes again (or `POST /reload`).
    pub async fn rollback(&self, id: i64, actor: &str) -> ApiResult<Value> {
        let mut fs = self.lock().await;
        let revision = self
            .store
            .get_config_revision(id)
            .await
            .map_err(|_| ApiError::NotFound(format!("no config revision {id}")))?;
        let content: RevisionContent = serde_json::from_str(&revision.content)
            .map_err(|e| ApiError::Internal(format!("revision {id} is unreadable: {e}")))?;
        let text = self.open_file(&content)?;
        let config = match &text {
            None => Config::default(),
            Some(t) => {
                let env = Arc::clone(&self.env);
                Config::from_toml_str(t, &|name| env(name)).map_err(|e| {
                    ApiError::BadRequest(format!(
                        "revision {id}: its config file no longer validates: {e}"
                    ))
                })?
            }
        };
        self.store
            .restore_routing_snapshot(&content.routing)
            .await?;
        fs.text = text;
        fs.config = config;
        let note = format!("rollback to revision {id}");
        let new = self
            .apply_locked(&fs, actor, Source::Api, Some(&note))
            .await?;
        Ok(json!({ "revision": new, "restored": id }))
    }

    /// Names of the upstreams declared in the config file in force.
    pub(crate) async fn file_upstreams(&self) -> BTreeSet<String> {
        let fs = self.state.lock().await;
        fs.config.upstreams.iter().map(|u| u.name.clone()).collect()
    }
}

/// Records the store's routing state as a revision, for a change made without a running
/// control plane (`llmux import --apply`): the same content as the admin API records, so a
/// rollback to it works. Returns the revision's id.
pub async fn record_revision_offline(
    store: &Store,
    keys: &MasterKeys,
    file: Option<(&std::path::Path, &str)>,
    actor: &str,
    note: &str,
) -> ApiResult<i64> {
    let content = RevisionContent {
        version: 1,
        file_path: file.map(|(p, _)| p.display().to_string()),
        file_sealed: file
            .map(|(_, t)| keys.encrypt(t.as_bytes(), FILE_AAD))
            .transpose()?,
        routing: store.routing_snapshot().await?,
    };
    let content = serde_json::to_string(&content).map_err(|e| ApiError::Internal(e.to_string()))?;
    let rev = store
        .create_config_revision(&NewConfigRevision {
            actor: actor.to_owned(),
            source: Source::Api,
            content,
            note: Some(note.to_owned()),
        })
        .await?;
    Ok(rev.id)
}

/// The config the gateway starts with: `file` composed with the store's API-managed state.
pub async fn initial_config(
    store: &Store,
    keys: &MasterKeys,
    file: &Config,
) -> ApiResult<(Config, Overlay)> {
    let api = load_api_state(store, keys).await?;
    compose(file, &api)
}

/// Replaces anything that looks like a secret in an audit snapshot with `***`: fields named
/// like one, and strings that are provider or virtual keys. Our own JSON views already hold
/// masked values only; this is the belt to those braces.
pub(crate) fn mask_secrets(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let secret_name = matches!(
                        k.as_str(),
                        "key" | "password" | "secret" | "token" | "ciphertext" | "api_key"
                    );
                    if secret_name && v.is_string() {
                        (k, Value::String("***".into()))
                    } else {
                        (k, mask_secrets(v))
                    }
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(mask_secrets).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn stored(name: &str, url: &str) -> llmux_store::Upstream {
        llmux_store::Upstream {
            id: format!("up_{name}"),
            name: name.into(),
            kind: "openai".into(),
            url: url.into(),
            weight: 2,
            models: Some(vec!["gpt-4o".into()]),
            timeouts: json!({"connect": "2s"}),
            enabled: true,
            source: Source::Api,
            api_version: None,
            options: Value::Null,
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn api_upstreams_follow_the_file_rules_and_stay_literal() {
        let keys = [Secret::new("sk-${HOME}-literal")];
        let cfg = upstream_config(&stored("a", "https://api.example.com/v1/"), &keys).unwrap();
        assert_eq!(cfg.keys[0].expose(), "sk-${HOME}-literal");
        assert_eq!(cfg.url, "https://api.example.com/v1");
        assert_eq!(cfg.weight, 2);
        assert_eq!(cfg.timeouts.connect, std::time::Duration::from_secs(2));
        let err = upstream_config(&stored("a", "ftp://x"), &[]).unwrap_err();
        assert!(err.to_string().starts_with("url: "), "{err}");
        let mut bad = stored("a b", "https://x");
        assert!(upstream_config(&bad, &[])
            .unwrap_err()
            .to_string()
            .starts_with("name: "));
        bad.name = "ok".into();
        bad.timeouts = json!({"connect": "soon"});
        assert!(upstream_config(&bad, &[])
            .unwrap_err()
            .to_string()
            .starts_with("timeouts.connect: "));
    }

    #[test]
    fn api_timeouts_are_bounded_and_name_the_field() {
        let mut u = stored("a", "https://x.example.com/v1");
        for (field, v) in [
            ("first_byte", json!("9300000000000000000")),
            ("idle", json!(9_223_372_036_854_775_807_i64)),
            ("connect", json!("25h")),
            ("total", json!(86_401)),
        ] {
            u.timeouts = json!({ field: v });
            let err = upstream_config(&u, &[]).unwrap_err();
            assert!(matches!(err, ApiError::BadRequest(_)), "{field}: {err}");
            let text = err.to_string();
            assert!(text.starts_with(&format!("timeouts.{field}: ")), "{text}");
            assert!(text.contains("maximum of 24h"), "{text}");
        }
        // Beyond i64 or fractional: not the file's syntax, and the answer says what is.
        for v in [
            json!(9_300_000_000_000_000_000_u64),
            json!(1.5),
            json!(true),
        ] {
            u.timeouts = json!({ "idle": v });
            let text = upstream_config(&u, &[]).unwrap_err().to_string();
            assert!(text.starts_with("timeouts.idle: "), "{text}");
            assert!(text.contains("\"5s\"") && text.contains("24h"), "{text}");
        }
        u.timeouts = json!({ "first_byte": "24h", "idle": 86_400 });
        let cfg = upstream_config(&u, &[]).unwrap();
        assert_eq!(cfg.timeouts.first_byte, llmux_config::MAX_DURATION);
    }

    /// Random JSON values in every timeout field: a clear 400 or a value within bounds,
    /// never a panic.
    #[test]
    fn api_timeouts_fuzz() {
        let mut x: u64 = 0xad01_2345_6789_abcd;
        let mut next = move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut u = stored("a", "https://x.example.com/v1");
        for _ in 0..1_000 {
            let r = next();
            let shift = (r >> 8) % 64;
            let v = match r % 7 {
                0 => json!(next() >> shift),
                1 => json!((next() as i64) >> shift),
                2 => json!(f64::from_bits(next())),
                3 => json!(format!("{}ms", next() >> shift)),
                4 => json!(format!("{}.{}h", next() >> shift, next() % 100)),
                5 => json!(format!("{}", next() >> shift)),
                _ => json!(["5s"]),
            };
            let field = ["connect", "first_byte", "idle", "total"][(next() % 4) as usize];
            u.timeouts = json!({ field: v });
            match upstream_config(&u, &[]) {
                Ok(cfg) => {
                    let t = &cfg.timeouts;
                    for d in [t.connect, t.first_byte, t.idle, t.total.unwrap_or_default()] {
                        assert!(d <= llmux_config::MAX_DURATION, "{v}");
                    }
                }
                Err(e) => assert!(matches!(e, ApiError::BadRequest(_)), "{v}: {e}"),
            }
        }
    }

    #[test]
    fn compose_adds_api_state_and_refuses_name_clashes() {
        let file = Config::from_toml_str(
            "[[upstreams]]\nname = \"f\"\nkind = \"ollama\"\nurl = \"http://10.0.0.1:11434\"\n",
            &|_| None,
        )
        .unwrap();
        let mut off = stored("off", "https://off.example.com/v1");
        off.enabled = false;
        let api = ApiState {
            upstreams: vec![
                (stored("a", "https://a.example.com/v1"), vec![]),
                (off, vec![]),
            ],
            models: vec![Model {
                id: "md_1".into(),
                name: "gpt-4o".into(),
                upstream_id: Some("up_a".into()),
                enabled: false,
                origin: llmux_store::ModelOrigin::Declared,
                created_at: 0,
                original_name: None,
            }],
            aliases: vec![],
            strategy: Some(Strategy::Weighted),
            drained: ["f".to_string()].into_iter().collect(),
        };
        let (config, overlay) = compose(&file, &api).unwrap();
        let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(names, ["f", "a"], "disabled API upstreams do not run");
        assert_eq!(config.routing.strategy, Strategy::Weighted);
        assert!(overlay.api_upstreams.contains("off"));
        assert!(
            overlay.drained.contains("f"),
            "drains reach the routing overlay"
        );
        assert_eq!(
            overlay.disabled_models,
            vec![(Some("a".to_string()), "gpt-4o".to_string())]
        );
        let clash = ApiState {
            upstreams: vec![(stored("f", "https://f.example.com/v1"), vec![])],
            models: vec![],
            aliases: vec![],
            strategy: None,
            drained: BTreeSet::new(),
        };
        assert!(matches!(compose(&file, &clash), Err(ApiError::Conflict(_))));
    }

    #[test]
    fn audit_snapshots_are_masked() {
        let v = mask_secrets(
            json!({"name": "x", "key": "sk-1", "nested": [{"password": "p"}],
            "keys": [{"id": "pk_1", "masked": "…1234"}]}),
        );
        assert_eq!(v["key"], "***");
        assert_eq!(v["nested"][0]["password"], "***");
        assert_eq!(v["keys"][0]["masked"], "…1234");
    }
}
