//! The file's shape as serde sees it (`Raw*`, unknown keys rejected) and its validation into
//! the public types. `[routing]`/`[health]` and `[[upstreams]]` have files of their own.

mod cache;
mod catalog;
mod cluster;
mod de;
mod hooks;
mod listener;
mod routing;
mod translation;
mod upstream;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

pub(crate) use de::serde_error;
use de::{Dur, Size};
use routing::{RawHealth, RawRouting};
use upstream::{normalize_url, RawUpstream};

use crate::error::{join_index, ConfigError};
use crate::{
    AdminConfig, AuthConfig, Config, LimitsBackend, LimitsConfig, LogsConfig, PricingConfig, Rate,
    Secret, ServerConfig, StoreConfig,
};

// Every field is optional (or defaulted) here so that defaults are applied in one place, the
// conversion below, from the public `Default` impls.

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(crate) struct RawConfig {
    server: RawServer,
    admin: RawAdmin,
    store: RawStore,
    auth: RawAuth,
    routing: RawRouting,
    health: RawHealth,
    pricing: Vec<RawPricing>,
    logs: RawLogs,
    limits: RawLimits,
    upstreams: Vec<RawUpstream>,
    alerts: RawAlerts,
    telemetry: RawTelemetry,
    cluster: cluster::RawCluster,
    catalog: catalog::RawCatalog,
    translation: translation::RawTranslation,
    hooks: Vec<hooks::RawHook>,
    cache: cache::RawCache,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawTelemetry {
    otlp_endpoint: Option<String>,
    service_name: Option<String>,
}

impl RawTelemetry {
    fn into_config(self) -> Result<crate::TelemetryConfig, ConfigError> {
        let default = crate::TelemetryConfig::default();
        let otlp_endpoint = match self.otlp_endpoint.filter(|u| !u.is_empty()) {
            None => None,
            Some(u) => Some(normalize_url(&u).map_err(|reason| {
                ConfigError::new(
                    "telemetry.otlp_endpoint",
                    format!("invalid URL {u:?}: {reason}"),
                )
            })?),
        };
        let service_name = match self.service_name {
            None => default.service_name,
            Some(n) if !n.trim().is_empty() => n,
            Some(_) => {
                return Err(ConfigError::new(
                    "telemetry.service_name",
                    "must not be empty",
                ))
            }
        };
        Ok(crate::TelemetryConfig {
            otlp_endpoint,
            service_name,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawAlerts {
    webhook_url: Option<String>,
    error_rate: Option<f64>,
    window: Option<Dur>,
    min_calls: Option<i64>,
}

impl RawAlerts {
    fn into_config(self) -> Result<crate::AlertsConfig, ConfigError> {
        let default = crate::AlertsConfig::default();
        let webhook_url = match self.webhook_url.filter(|u| !u.is_empty()) {
            None => None,
            Some(u) => Some(normalize_url(&u).map_err(|reason| {
                ConfigError::new("alerts.webhook_url", format!("invalid URL {u:?}: {reason}"))
            })?),
        };
        let error_rate = match self.error_rate {
            None => default.error_rate,
            Some(r) if r > 0.0 && r <= 1.0 => r,
            Some(r) => {
                return Err(ConfigError::new(
                    "alerts.error_rate",
                    format!("must be above 0 and at most 1 (got {r})"),
                ))
            }
        };
        let window = match self.window {
            None => default.window,
            Some(Dur(d)) if d >= Duration::from_secs(1) => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "alerts.window",
                    format!("must be at least 1s (got {d:?})"),
                ))
            }
        };
        let min_calls = match self.min_calls {
            None => default.min_calls,
            Some(n) => u64::try_from(n).ok().filter(|n| *n >= 1).ok_or_else(|| {
                ConfigError::new("alerts.min_calls", format!("must be at least 1 (got {n})"))
            })?,
        };
        Ok(crate::AlertsConfig {
            webhook_url,
            error_rate,
            window,
            min_calls,
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawLimits {
    ip: Option<String>,
    global: Option<String>,
    backend: Option<String>,
    redis_url: Option<String>,
    fail_open: Option<bool>,
    trust_forwarded_for: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawServer {
    listen: Option<String>,
    max_body: Option<Size>,
    max_upstream_body: Option<Size>,
    shutdown_grace: Option<Dur>,
    upstream_header: Option<bool>,
    header_timeout: Option<Dur>,
    idle_timeout: Option<Dur>,
    max_connections: Option<usize>,
    workers: Option<usize>,
    compression: Option<bool>,
    tls: Option<listener::RawTls>,
    cors: listener::RawCors,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawAdmin {
    token: Option<String>,
    allow_private_upstreams: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawStore {
    url: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawAuth {
    required: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPricing {
    model: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
    #[serde(default)]
    cached_input_per_mtok: Option<f64>,
    #[serde(default)]
    cache_write_per_mtok: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawLogs {
    bodies: Option<bool>,
    retention_days: Option<u32>,
}

impl RawLogs {
    fn into_config(self) -> Result<LogsConfig, ConfigError> {
        if self.retention_days == Some(0) {
            return Err(ConfigError::new(
                "logs.retention_days",
                "must be at least 1 (leave it out to keep every row)",
            ));
        }
        Ok(LogsConfig {
            bodies: self.bodies.unwrap_or(false),
            retention_days: self.retention_days,
        })
    }
}

fn pricing_config(raw: Vec<RawPricing>) -> Result<Vec<PricingConfig>, ConfigError> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            let path = join_index("pricing", i);
            if p.model.trim().is_empty() {
                return Err(ConfigError::new(
                    format!("{path}.model"),
                    "must not be empty",
                ));
            }
            let optional = [
                ("cached_input_per_mtok", p.cached_input_per_mtok),
                ("cache_write_per_mtok", p.cache_write_per_mtok),
            ];
            let given = optional.into_iter().filter_map(|(f, v)| v.map(|v| (f, v)));
            for (field, v) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ]
            .into_iter()
            .chain(given)
            {
                if !crate::valid_price(v) {
                    return Err(ConfigError::new(
                        format!("{path}.{field}"),
                        format!("must be a price from 0 to 1000000 (got {v})"),
                    ));
                }
            }
            if !seen.insert(p.model.clone()) {
                return Err(ConfigError::new(
                    format!("{path}.model"),
                    format!("duplicate pricing for model {:?}", p.model),
                ));
            }
            Ok(PricingConfig {
                model: p.model,
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
                cached_input_per_mtok: p.cached_input_per_mtok,
                cache_write_per_mtok: p.cache_write_per_mtok,
            })
        })
        .collect()
}

fn positive(path: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(ConfigError::new(path, "must be greater than zero"))
    } else {
        Ok(d)
    }
}

impl RawConfig {
    pub(crate) fn into_config(self) -> Result<Config, ConfigError> {
        let server = self.server.into_config()?;
        let admin = AdminConfig {
            // An empty token (e.g. `${LLMUX_ADMIN_TOKEN:-}`) means "no admin token", so one file
            // serves both setups.
            token: self.admin.token.filter(|t| !t.is_empty()).map(Secret::new),
            allow_private_upstreams: self.admin.allow_private_upstreams.unwrap_or(false),
        };
        let store = self.store.into_config()?;
        let auth = AuthConfig {
            required: self.auth.required.unwrap_or(AuthConfig::default().required),
        };
        let routing = self.routing.into_config()?;
        let health = self.health.into_config()?;
        let pricing = pricing_config(self.pricing)?;
        let logs = self.logs.into_config()?;
        let limits = self.limits.into_config()?;

        let mut upstreams = Vec::with_capacity(self.upstreams.len());
        let mut names = HashSet::new();
        for (index, raw) in self.upstreams.into_iter().enumerate() {
            let path = join_index("upstreams", index);
            let upstream = raw.into_config(&path)?;
            if !names.insert(upstream.name.clone()) {
                return Err(ConfigError::new(
                    format!("{path}.name"),
                    format!("duplicate upstream name {:?}", upstream.name),
                ));
            }
            upstreams.push(upstream);
        }

        let alerts = self.alerts.into_config()?;
        let telemetry = self.telemetry.into_config()?;
        let cluster = self.cluster.into_config()?;
        let catalog = self.catalog.into_config()?;
        let translation = self.translation.into_config()?;
        let hooks = hooks::hooks_config(self.hooks)?;
        let cache = self.cache.into_config(limits.redis_url.is_some())?;
        if cluster.enabled == Some(true) && !(store.is_postgres() && limits.redis_url.is_some()) {
            return Err(ConfigError::new(
                "cluster.enabled",
                "cluster mode needs a PostgreSQL store (store.url = \"postgres://…\") and Redis (limits.redis_url)",
            ));
        }
        Ok(Config {
            server,
            admin,
            store,
            auth,
            routing,
            health,
            pricing,
            logs,
            limits,
            upstreams,
            alerts,
            telemetry,
            cluster,
            catalog,
            translation,
            hooks,
            cache,
        })
    }
}

impl RawServer {
    fn into_config(self) -> Result<ServerConfig, ConfigError> {
        let default = ServerConfig::default();
        let listen = match self.listen {
            None => default.listen,
            Some(s) => s.parse::<SocketAddr>().map_err(|e| {
                ConfigError::new(
                    "server.listen",
                    format!(r#"invalid listen address {s:?}: {e} (use e.g. "127.0.0.1:4000" or "[::]:4000")"#),
                )
            })?,
        };
        let max_body = match self.max_body {
            None => default.max_body,
            Some(Size(0)) => {
                return Err(ConfigError::new(
                    "server.max_body",
                    "must be greater than zero",
                ))
            }
            Some(Size(n)) => n,
        };
        let max_upstream_body = match self.max_upstream_body {
            None => default.max_upstream_body,
            Some(Size(0)) => {
                return Err(ConfigError::new(
                    "server.max_upstream_body",
                    "must be greater than zero",
                ))
            }
            Some(Size(n)) => n,
        };
        let positive = |key: &str, v: Option<Dur>, default: Duration| match v {
            None => Ok(default),
            Some(Dur(d)) if d.is_zero() => Err(ConfigError::new(
                format!("server.{key}"),
                "must be greater than zero",
            )),
            Some(Dur(d)) => Ok(d),
        };
        let header_timeout = positive(
            "header_timeout",
            self.header_timeout,
            default.header_timeout,
        )?;
        let idle_timeout = positive("idle_timeout", self.idle_timeout, default.idle_timeout)?;
        let max_connections = match self.max_connections {
            None => default.max_connections,
            Some(0) => {
                return Err(ConfigError::new(
                    "server.max_connections",
                    "must be greater than zero",
                ))
            }
            Some(n) => n,
        };
        Ok(ServerConfig {
            listen,
            max_body,
            max_upstream_body,
            header_timeout,
            idle_timeout,
            max_connections,
            workers: self.workers,
            // Zero is allowed: it means "stop immediately".
            shutdown_grace: self.shutdown_grace.map_or(default.shutdown_grace, |d| d.0),
            upstream_header: self.upstream_header.unwrap_or(default.upstream_header),
            compression: self.compression.unwrap_or(default.compression),
            tls: self.tls.map(listener::RawTls::into_config).transpose()?,
            cors: self.cors.into_config()?,
        })
    }
}

impl RawStore {
    fn into_config(self) -> Result<StoreConfig, ConfigError> {
        let Some(url) = self.url else {
            return Ok(StoreConfig::default());
        };
        let rest = ["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .find_map(|prefix| url.strip_prefix(prefix));
        match rest {
            Some(rest) if !rest.is_empty() => Ok(StoreConfig { url }),
            _ => Err(ConfigError::new(
                "store.url",
                format!(
                    "unsupported store URL {url:?} (expected sqlite:PATH, postgres://... or postgresql://...)"
                ),
            )),
        }
    }
}

impl RawLimits {
    fn into_config(self) -> Result<LimitsConfig, ConfigError> {
        let default = LimitsConfig::default();
        let rate = |key: &str, v: Option<String>| -> Result<Option<Rate>, ConfigError> {
            v.map(|s| s.parse::<Rate>())
                .transpose()
                .map_err(|e| ConfigError::new(format!("limits.{key}"), e))
        };
        let backend = match self.backend.as_deref() {
            None | Some("memory") => LimitsBackend::Memory,
            Some("redis") => LimitsBackend::Redis,
            Some(other) => {
                return Err(ConfigError::new(
                    "limits.backend",
                    format!("unknown backend {other:?} (expected memory or redis)"),
                ))
            }
        };
        let redis_url = self.redis_url.filter(|u| !u.is_empty());
        if let Some(u) = &redis_url {
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    "limits.redis_url",
                    "must start with redis:// or rediss:// (TLS)",
                ));
            }
            if u.starts_with("rediss://") && u.ends_with("#insecure") {
                return Err(ConfigError::new(
                    "limits.redis_url",
                    "#insecure would skip checking the server's certificate: give llmux the CA \
                     instead (SSL_CERT_FILE=/path/to/ca.pem)",
                ));
            }
        }
        if backend == LimitsBackend::Redis && redis_url.is_none() {
            return Err(ConfigError::new(
                "limits.redis_url",
                "is required when limits.backend = \"redis\"",
            ));
        }
        Ok(LimitsConfig {
            ip: rate("ip", self.ip)?,
            global: rate("global", self.global)?,
            backend,
            redis_url: redis_url.map(Secret::new),
            fail_open: self.fail_open.unwrap_or(default.fail_open),
            trust_forwarded_for: self
                .trust_forwarded_for
                .unwrap_or(default.trust_forwarded_for),
            trusted_proxies: self
                .trusted_proxies
                .unwrap_or_default()
                .iter()
                .map(|c| c.parse())
                .collect::<Result<_, crate::ValueError>>()
                .map_err(|e| ConfigError::new("limits.trusted_proxies", e))?,
        })
    }
}
