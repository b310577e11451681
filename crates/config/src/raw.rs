//! The file's shape as serde sees it (`Raw*`, unknown keys rejected) and its validation into the public types.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use crate::error::{join_index, join_key, ConfigError};
use crate::{
    bounded_duration, parse_duration, parse_size, AdminConfig, AuthConfig, Config, HealthConfig,
    LimitsBackend, LimitsConfig, Rate, RoutingConfig, Secret, ServerConfig, StoreConfig, Strategy,
    Timeouts, UpstreamConfig, UpstreamKind,
};
use crate::{LogsConfig, PricingConfig};

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

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawRouting {
    strategy: Option<String>,
    fallbacks: BTreeMap<String, Vec<String>>,
    // Signed so that 0 and negatives reach the range check and get a clear message.
    max_attempts: Option<i64>,
    retry_budget: Option<f64>,
    cooldown: Option<Dur>,
    max_cooldown: Option<Dur>,
    breaker: RawBreaker,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawBreaker {
    consecutive_failures: Option<i64>,
    failure_rate: Option<f64>,
    min_calls: Option<i64>,
    window: Option<Dur>,
    open_for: Option<Dur>,
    max_open_for: Option<Dur>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawHealth {
    interval: Option<Dur>,
    timeout: Option<Dur>,
    key_recheck: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawUpstream {
    name: String,
    kind: String,
    url: String,
    #[serde(default)]
    weight: Option<i64>,
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    api_version: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
struct RawTimeouts {
    connect: Option<Dur>,
    first_byte: Option<Dur>,
    idle: Option<Dur>,
    total: Option<Dur>,
}

/// A duration given as a string ("1m30s") or an integer number of seconds. Parsing happens
/// during deserialization so that `serde_path_to_error` attaches the key path to the error.
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a duration like "5s" or "1m30s", or an integer number of seconds"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                bounded_duration(v, Duration::from_secs(v))
                    .map(Dur)
                    .map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                let secs = u64::try_from(v).map_err(|_| {
                    E::custom(format!("invalid duration {v} (must not be negative)"))
                })?;
                self.visit_u64(secs)
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// A size given as a string ("32MiB") or an integer number of bytes.
struct Size(usize);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a size like "32MiB", or an integer number of bytes"#)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                parse_size(v).map(Size).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("size {v} is too large")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                usize::try_from(v)
                    .map(Size)
                    .map_err(|_| E::custom(format!("invalid size {v} (must not be negative)")))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Turns a serde error into a `ConfigError`, rewording serde's unknown/missing field messages
/// so that the offending key becomes part of the path.
pub(crate) fn serde_error(err: serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
    use serde_path_to_error::Segment;

    let mut path = String::new();
    let mut last_key = None;
    for segment in err.path().iter() {
        last_key = match segment {
            Segment::Map { key } => Some(key.as_str()),
            _ => None,
        };
        path = match segment {
            Segment::Seq { index } => join_index(&path, *index),
            Segment::Map { key } => join_key(&path, key),
            Segment::Enum { variant } => join_key(&path, variant),
            Segment::Unknown => join_key(&path, "?"),
        };
    }
    let message = err.inner().message().trim_end();

    // serde: "unknown field `bogus`, expected one of `a`, `b`" (or "expected `a`", or
    // "there are no fields").
    if let Some((key, rest)) = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split_once('`'))
    {
        let hint = rest.trim_start_matches(", ").replace('`', "");
        let message = if hint.is_empty() {
            "unknown key".to_owned()
        } else {
            format!("unknown key ({hint})")
        };
        // serde_path_to_error already records the unknown key itself; add it only if not.
        let path = if last_key == Some(key) {
            path
        } else {
            join_key(&path, key)
        };
        return ConfigError::new(path, message);
    }
    // serde: "missing field `name`".
    if let Some((key, _)) = message
        .strip_prefix("missing field `")
        .and_then(|m| m.split_once('`'))
    {
        return ConfigError::new(join_key(&path, key), "required key is missing");
    }
    // `[upstreams]` instead of `[[upstreams]]` is an easy slip; serde alone only says "map".
    if path == "upstreams" && message.ends_with("expected a sequence") {
        return ConfigError::new(
            path,
            format!("{message} (write each upstream as an [[upstreams]] table)"),
        );
    }
    ConfigError::new(path, message)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
struct RawPricing {
    model: String,
    input_per_mtok: f64,
    output_per_mtok: f64,
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
            for (field, v) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ] {
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
            // Zero is allowed: it means "stop immediately".
            shutdown_grace: self.shutdown_grace.map_or(default.shutdown_grace, |d| d.0),
            upstream_header: self.upstream_header.unwrap_or(default.upstream_header),
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

impl RawRouting {
    fn into_config(self) -> Result<RoutingConfig, ConfigError> {
        let default = RoutingConfig::default();
        let strategy = match self.strategy {
            None => default.strategy,
            Some(s) => s
                .parse::<Strategy>()
                .map_err(|e| ConfigError::new("routing.strategy", e))?,
        };
        for (model, targets) in &self.fallbacks {
            let path = join_key("routing.fallbacks", model);
            if model.trim().is_empty() {
                return Err(ConfigError::new(path, "model name must not be empty"));
            }
            if targets.is_empty() {
                return Err(ConfigError::new(path, "fallback list must not be empty"));
            }
            if let Some(index) = targets.iter().position(|t| t.trim().is_empty()) {
                return Err(ConfigError::new(
                    join_index(&path, index),
                    "model name must not be empty",
                ));
            }
        }
        let max_attempts = match self.max_attempts {
            None => default.max_attempts,
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| (1..=10).contains(n))
                .ok_or_else(|| {
                    ConfigError::new(
                        "routing.max_attempts",
                        format!("must be between 1 and 10 (got {n})"),
                    )
                })?,
        };
        let fraction = |path: &str, v: Option<f64>, default: f64| match v {
            None => Ok(default),
            Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
            Some(f) => Err(ConfigError::new(
                path,
                format!("must be between 0 and 1 (got {f})"),
            )),
        };
        let count = |path: &str, v: Option<i64>, default: u32| match v {
            None => Ok(default),
            Some(n) => u32::try_from(n)
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| ConfigError::new(path, format!("must be at least 1 (got {n})"))),
        };
        let dur = |path: &str, v: Option<Dur>, default: Duration| match v {
            None => Ok(default),
            Some(Dur(d)) => positive(path, d),
        };
        let retry_budget = fraction(
            "routing.retry_budget",
            self.retry_budget,
            default.retry_budget,
        )?;
        let cooldown = dur("routing.cooldown", self.cooldown, default.cooldown)?;
        let max_cooldown = dur(
            "routing.max_cooldown",
            self.max_cooldown,
            default.max_cooldown,
        )?;
        let b = self.breaker;
        let db = default.breaker;
        let breaker = crate::BreakerConfig {
            consecutive_failures: count(
                "routing.breaker.consecutive_failures",
                b.consecutive_failures,
                db.consecutive_failures,
            )?,
            failure_rate: fraction(
                "routing.breaker.failure_rate",
                b.failure_rate,
                db.failure_rate,
            )?,
            min_calls: count("routing.breaker.min_calls", b.min_calls, db.min_calls)?,
            window: dur("routing.breaker.window", b.window, db.window)?,
            open_for: dur("routing.breaker.open_for", b.open_for, db.open_for)?,
            max_open_for: dur(
                "routing.breaker.max_open_for",
                b.max_open_for,
                db.max_open_for,
            )?,
        };
        if breaker.max_open_for < breaker.open_for {
            return Err(ConfigError::new(
                "routing.breaker.max_open_for",
                "must not be shorter than routing.breaker.open_for",
            ));
        }
        Ok(RoutingConfig {
            strategy,
            fallbacks: self.fallbacks,
            max_attempts,
            retry_budget,
            cooldown,
            max_cooldown,
            breaker,
        })
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
                    "must start with redis:// (rediss:// is not supported yet)",
                ));
            }
            if u.starts_with("rediss://") {
                return Err(ConfigError::new(
                    "limits.redis_url",
                    "TLS (rediss://) is not supported yet: use redis://",
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
                .collect::<Result<_, String>>()
                .map_err(|e| ConfigError::new("limits.trusted_proxies", e))?,
        })
    }
}

impl RawHealth {
    fn into_config(self) -> Result<HealthConfig, ConfigError> {
        let default = HealthConfig::default();
        let interval = self.interval.map_or(default.interval, |d| d.0);
        if interval < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "health.interval",
                format!("must be at least 1s (got {interval:?})"),
            ));
        }
        let timeout = match self.timeout {
            // Shrink the default with a short interval rather than reject a key the user never
            // wrote.
            None => default.timeout.min(interval),
            Some(Dur(t)) => {
                let t = positive("health.timeout", t)?;
                if t > interval {
                    return Err(ConfigError::new(
                        "health.timeout",
                        format!("{t:?} must not exceed health.interval ({interval:?})"),
                    ));
                }
                t
            }
        };
        let key_recheck = match self.key_recheck {
            None => default.key_recheck,
            Some(Dur(d)) => positive("health.key_recheck", d)?,
        };
        Ok(HealthConfig {
            interval,
            timeout,
            key_recheck,
        })
    }
}

impl RawUpstream {
    fn into_config(self, path: &str) -> Result<UpstreamConfig, ConfigError> {
        let name_ok = (1..=64).contains(&self.name.len())
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!(
                    "invalid upstream name {:?} (use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_', '-')",
                    self.name
                ),
            ));
        }
        let kind = self
            .kind
            .parse::<UpstreamKind>()
            .map_err(|e| ConfigError::new(format!("{path}.kind"), e))?;
        let url = normalize_url(&self.url).map_err(|reason| {
            ConfigError::new(
                format!("{path}.url"),
                format!("invalid URL {:?}: {reason}", self.url),
            )
        })?;
        let weight = match self.weight {
            None => 1,
            Some(w) => u32::try_from(w)
                .ok()
                .filter(|w| (1..=1000).contains(w))
                .ok_or_else(|| {
                    ConfigError::new(
                        format!("{path}.weight"),
                        format!("must be between 1 and 1000 (got {w})"),
                    )
                })?,
        };
        let models = match self.models {
            None => None,
            Some(models) => {
                let models_path = format!("{path}.models");
                if models.is_empty() {
                    return Err(ConfigError::new(
                        models_path,
                        "must not be empty (leave it out to ask the upstream for its models)",
                    ));
                }
                let mut seen = HashSet::new();
                for (index, model) in models.iter().enumerate() {
                    if model.trim().is_empty() {
                        return Err(ConfigError::new(
                            join_index(&models_path, index),
                            "model name must not be empty",
                        ));
                    }
                    if !seen.insert(model.as_str()) {
                        return Err(ConfigError::new(
                            join_index(&models_path, index),
                            format!("duplicate model {model:?}"),
                        ));
                    }
                }
                Some(models)
            }
        };
        let mut keys = Vec::with_capacity(self.keys.len());
        for (index, key) in self.keys.into_iter().enumerate() {
            if key.is_empty() {
                // Usually an environment variable that is set but empty.
                return Err(ConfigError::new(
                    join_index(&format!("{path}.keys"), index),
                    "key must not be empty",
                ));
            }
            keys.push(Secret::new(key));
        }
        let timeouts = self.timeouts.into_config(&format!("{path}.timeouts"))?;
        if kind == UpstreamKind::Azure && models.is_none() {
            return Err(ConfigError::new(
                format!("{path}.models"),
                "required for kind azure: list the deployment names (they are the model names)",
            ));
        }
        if let Some(v) = &self.api_version {
            if v.trim().is_empty()
                || v.contains(|c: char| c.is_whitespace() || c == '&' || c == '#')
            {
                return Err(ConfigError::new(
                    format!("{path}.api_version"),
                    format!("invalid API version {v:?}"),
                ));
            }
        }
        Ok(UpstreamConfig {
            name: self.name,
            kind,
            url,
            keys,
            models,
            weight,
            timeouts,
            api_version: self.api_version,
        })
    }
}

impl RawTimeouts {
    fn into_config(self, path: &str) -> Result<Timeouts, ConfigError> {
        let default = Timeouts::default();
        let pick = |value: Option<Dur>, key: &str, fallback: Duration| match value {
            None => Ok(fallback),
            Some(Dur(d)) => positive(&join_key(path, key), d),
        };
        Ok(Timeouts {
            connect: pick(self.connect, "connect", default.connect)?,
            first_byte: pick(self.first_byte, "first_byte", default.first_byte)?,
            idle: pick(self.idle, "idle", default.idle)?,
            total: match self.total {
                None => None,
                Some(Dur(d)) => Some(positive(&join_key(path, "total"), d)?),
            },
        })
    }
}

/// Checks an upstream base URL and returns it normalized without a trailing slash, so other
/// crates can append `/v1/...` paths directly.
fn normalize_url(raw: &str) -> Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {:?}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("missing host".to_owned());
    }
    if url.query().is_some() {
        return Err("must not have a query string".to_owned());
    }
    if url.fragment().is_some() {
        return Err("must not have a fragment".to_owned());
    }
    // The URL is logged and shown in the admin API, which is no place for a password.
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (use keys instead)".to_owned());
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}
