//! llmux configuration: the TOML file, `${ENV}` interpolation and validation into typed settings.

mod cache;
mod error;
mod hooks;
mod interpolate;
mod raw;
mod secret;
mod translation;
mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

pub use cache::{CacheBackend, CacheConfig};
pub use error::{ConfigError, ValueError};
pub use hooks::{ExternalHook, HookConfig, HookFail, HookScope, HookSet};
pub use secret::Secret;
pub use translation::TranslationConfig;
pub use units::{bounded_duration, parse_duration, parse_size, MAX_DURATION};

/// Highest price a model may be given, in USD per million tokens (a dollar a token, far above
/// any real price): a call's cost then stays finite, where an infinite one would turn its app's
/// balance into an infinity that reads back as "not metered".
pub const MAX_PRICE_PER_MTOK: f64 = 1e6;

/// Whether `v` is a price [`MAX_PRICE_PER_MTOK`] and [`Config`] accept: finite, 0 to the maximum.
pub fn valid_price(v: f64) -> bool {
    (0.0..=MAX_PRICE_PER_MTOK).contains(&v)
}

/// The whole llmux configuration, validated.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub auth: AuthConfig,
    pub routing: RoutingConfig,
    pub health: HealthConfig,
    pub limits: LimitsConfig,
    pub upstreams: Vec<UpstreamConfig>,
    /// `[[pricing]]`: model prices that replace or add to the shipped defaults.
    pub pricing: Vec<PricingConfig>,
    pub logs: LogsConfig,
    pub alerts: AlertsConfig,
    pub telemetry: TelemetryConfig,
    pub cluster: ClusterConfig,
    /// `[catalog]`: how model names are normalised.
    pub catalog: CatalogConfig,
    /// `[translation]`: what llmux fetches itself for translated calls.
    pub translation: TranslationConfig,
    /// `[[hooks]]`: checks and changes around each model call, in file order (docs/hooks.md).
    pub hooks: Vec<HookConfig>,
    /// `[cache]`: the response cache (off unless enabled).
    pub cache: CacheConfig,
}

impl Config {
    /// Cluster mode: a PostgreSQL store and a Redis URL (`limits.redis_url`), unless
    /// `cluster.enabled = false`. Then instances share config changes, probing, passive
    /// signals, in-flight counts, key concurrency and credit reservations (docs/cluster.md).
    pub fn cluster_mode(&self) -> bool {
        self.cluster.enabled != Some(false)
            && self.store.is_postgres()
            && self.limits.redis_url.is_some()
    }
}

/// `[cluster]`: tuning of cluster mode (see [`Config::cluster_mode`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// `None`: on when the store is PostgreSQL and `limits.redis_url` is set; `Some(false)`
    /// keeps instances apart even then; `Some(true)` makes a missing piece a config error.
    pub enabled: Option<bool>,
    /// Every Redis key and channel of the cluster starts with `{prefix}:`; two clusters on one
    /// Redis need two prefixes.
    pub prefix: String,
    /// The address other instances and operators see in the registry; default: the listen
    /// address (with the host name when it listens on every interface).
    pub advertise: Option<String>,
    /// How often an instance renews its lease and heartbeat.
    pub heartbeat: Duration,
    /// How long an instance's lease (its in-flight counts, its prober lease) outlives its last
    /// heartbeat; at least three heartbeats.
    pub lease: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            prefix: "llmux".to_string(),
            advertise: None,
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(10),
        }
    }
}

/// `[telemetry]`: traces over OTLP.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryConfig {
    /// OTLP/HTTP collector base URL (spans go to `{url}/v1/traces`); `None` disables tracing.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "llmux".to_string(),
        }
    }
}

/// `[alerts]`: where operator alerts go, and when the error-rate alert fires.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertsConfig {
    /// JSON events are POSTed here; `None` disables alerts.
    pub webhook_url: Option<String>,
    /// Failure rate of an upstream's calls (0..=1) that fires the error-rate alert…
    pub error_rate: f64,
    /// …over this window…
    pub window: Duration,
    /// …with at least this many calls in it.
    pub min_calls: u64,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        Self {
            webhook_url: None,
            error_rate: 0.5,
            window: Duration::from_secs(300),
            min_calls: 20,
        }
    }
}

/// One `[[pricing]]` entry: USD per million tokens for `model`.
#[derive(Clone, Debug, PartialEq)]
pub struct PricingConfig {
    pub model: String,
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
    /// Prompt tokens read from the provider's cache; `None`: charged at `input_per_mtok`.
    pub cached_input_per_mtok: Option<f64>,
    /// Prompt tokens written to the provider's cache; `None`: charged at `input_per_mtok`.
    pub cache_write_per_mtok: Option<f64>,
}

/// `[logs]`: the call log.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct LogsConfig {
    /// Whether prompts and answers are stored (secrets redacted). Default false.
    pub bodies: bool,
    /// Rows older than this many days are deleted; `None` keeps everything.
    pub retention_days: Option<u32>,
}

/// `[server]`: the listening HTTP side.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest accepted request body, in bytes.
    pub max_body: usize,
    /// Largest upstream answer llmux holds whole in memory (to translate it), in bytes.
    pub max_upstream_body: usize,
    /// How long in-flight requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// Whether responses carry `x-llmux-upstream` naming the upstream that served them.
    pub upstream_header: bool,
    /// How long a client may take to send a request's headers, from its first byte (or from
    /// connecting); a connection that has not finished them by then is closed.
    pub header_timeout: Duration,
    /// How long a connection may sit with no call in progress before it is closed.
    pub idle_timeout: Duration,
    /// Connections held open at once; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Connection workers (one thread with its own event loop each; a connection and its calls
    /// stay on one): `None` is one per core, `Some(0)` serves on the shared multi-thread
    /// runtime instead. Read at start-up; a reload does not change it.
    pub workers: Option<usize>,
    /// Whether JSON answers of 1 KiB or more are compressed (gzip or brotli) for clients whose
    /// `Accept-Encoding` allows it; streams never are. Default true.
    pub compression: bool,
    /// `[server.tls]`: serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with these PEM files.
    pub tls: Option<TlsConfig>,
    /// `[server.cors]`: which browser origins may call llmux.
    pub cors: CorsConfig,
}

/// `[server.tls]`: the certificate chain and private key, PEM files (relative paths are from
/// the working directory). Both are re-read on SIGHUP and when either file changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// `[server.cors]`: cross-origin calls from browsers. Off (no CORS headers, preflights not
/// answered) while no origin is allowed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CorsConfig {
    /// Origins (`https://app.example.com`, normalised) whose calls and preflights are allowed.
    pub allowed_origins: Vec<String>,
    /// `allowed_origins = ["*"]`: every origin (answered `Access-Control-Allow-Origin: *`).
    pub any_origin: bool,
    /// How long a browser may cache a preflight's answer (`Access-Control-Max-Age`).
    pub max_age: Duration,
}

impl CorsConfig {
    /// Whether CORS is on at all.
    pub fn enabled(&self) -> bool {
        self.any_origin || !self.allowed_origins.is_empty()
    }

    /// Whether a browser on `origin` (the `Origin` header as sent) may call llmux.
    pub fn allows(&self, origin: &str) -> bool {
        self.any_origin
            || self
                .allowed_origins
                .iter()
                .any(|o| o.eq_ignore_ascii_case(origin))
    }
}

impl Default for CorsConfig {
    fn default() -> Self {
        Self {
            allowed_origins: Vec::new(),
            any_origin: false,
            max_age: Duration::from_secs(600),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            max_body: 32 << 20,
            max_upstream_body: 64 << 20,
            shutdown_grace: Duration::from_secs(30),
            upstream_header: true,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            workers: None,
            compression: true,
            tls: None,
            cors: CorsConfig::default(),
        }
    }
}

/// `[admin]`: access to the admin API.
#[derive(Clone, Debug, Default)]
pub struct AdminConfig {
    /// `None` when unset or empty after interpolation.
    pub token: Option<Secret>,
    /// Whether upstreams created through the admin API may point at loopback or private
    /// addresses (link-local and cloud metadata addresses are refused regardless). Default false.
    pub allow_private_upstreams: bool,
}

/// `[store]`: where persistent state lives.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// `sqlite:...`, `postgres://...` or `postgresql://...`.
    pub url: String,
}

impl StoreConfig {
    /// Whether the store is PostgreSQL (the store a cluster shares).
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://llmux-data/llmux.db".to_owned(),
        }
    }
}

/// `[auth]`: client authentication.
#[derive(Clone, Debug, Default)]
pub struct AuthConfig {
    /// Whether clients must present an API key.
    pub required: bool,
}

/// A rate: `count` events per `per` (`"600/min"`, `"2000/s"`, `"100/h"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// At least 1.
    pub count: u64,
    /// One second, minute or hour.
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ValueError::Rate(s.to_owned());
        let (n, unit) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        let per = match unit.trim() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        if count == 0 {
            return Err(ValueError::RateZero(s.to_owned()));
        }
        Ok(Rate { count, per })
    }
}

/// Where rate-limit counters live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LimitsBackend {
    /// In this process: each instance limits on its own.
    #[default]
    Memory,
    /// In Redis, shared by every instance pointing at it.
    Redis,
}

/// `[limits]`: rate limits in front of authentication (per client IP, global); per-key limits
/// are stored with each virtual key.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Calls per client IP; `None`: unlimited.
    pub ip: Option<Rate>,
    /// Calls over all clients; `None`: unlimited.
    pub global: Option<Rate>,
    pub backend: LimitsBackend,
    /// Required with the Redis backend; may carry a password, hence a secret.
    pub redis_url: Option<Secret>,
    /// When the shared backend cannot be reached: serve on local limits (true) or refuse (false).
    pub fail_open: bool,
    /// Take the client IP from `X-Forwarded-For` (only behind a proxy you run): the entry
    /// appended by the nearest hop that is not a trusted proxy.
    pub trust_forwarded_for: bool,
    /// Proxies whose `X-Forwarded-For` entries are skipped, read from the right. Empty: only
    /// the direct peer is trusted, so the rightmost entry is the client.
    pub trusted_proxies: Vec<Cidr>,
}

/// An address block, `10.0.0.0/8` or `fd00::/8`; a bare address is a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 form).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Cidr, ValueError> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| ValueError::Cidr(s.to_owned()))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| ValueError::CidrPrefix(s.to_owned(), max))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            ip: None,
            global: None,
            backend: LimitsBackend::Memory,
            redis_url: None,
            fail_open: true,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[routing]`: how requests are spread over upstreams.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    pub strategy: Strategy,
    /// Model name to the models to try, in order, when it cannot be served.
    pub fallbacks: BTreeMap<String, Vec<String>>,
    /// Upper bound on upstream attempts per request (per model of a fallback chain), 1..=10.
    pub max_attempts: u32,
    /// Retries allowed as a fraction of calls (plus a small floor), 0..=1.
    pub retry_budget: f64,
    /// How long a rate-limited key rests when the 429 carries no `Retry-After`.
    pub cooldown: Duration,
    /// Upper bound on any key cooldown, whatever `Retry-After` says.
    pub max_cooldown: Duration,
    pub breaker: BreakerConfig,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            fallbacks: BTreeMap::new(),
            max_attempts: 3,
            retry_budget: 0.2,
            cooldown: Duration::from_secs(60),
            max_cooldown: Duration::from_secs(300),
            breaker: BreakerConfig::default(),
        }
    }
}

/// `[routing.breaker]`: when an upstream is ejected from rotation, and for how long.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerConfig {
    /// Opens after this many failures in a row.
    pub consecutive_failures: u32,
    /// ...or when at least this fraction of the calls in `window` failed...
    pub failure_rate: f64,
    /// ...over at least this many calls.
    pub min_calls: u32,
    pub window: Duration,
    /// First ejection; each consecutive one lasts this times the number of openings.
    pub open_for: Duration,
    pub max_open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            min_calls: 20,
            window: Duration::from_secs(30),
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
        }
    }
}

/// One rule by which a requested name also matches a served model (`[catalog] normalize`).
/// Ollama's own `:latest` rule (`llama3` is `llama3:latest`) always applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NormalizeRule {
    /// Names match whatever their letters' case (`GPT-4o` is `gpt-4o`).
    Case,
    /// Gemini's `models/` prefix is dropped (`models/gemini-2.0-flash`).
    GeminiPrefix,
    /// A provider kind as prefix is dropped (`openai/gpt-4o`), unless it names an upstream
    /// (then it pins that upstream, as always).
    ProviderPrefix,
    /// A dated snapshot (`gpt-4o-2024-08-06`, `claude-3-5-sonnet-20241022`) also answers to
    /// its undated name when nothing is served under that name exactly.
    DatedSnapshots,
}

impl NormalizeRule {
    /// Every rule, in the order they apply; all are on by default.
    pub const ALL: [NormalizeRule; 4] = [
        NormalizeRule::Case,
        NormalizeRule::GeminiPrefix,
        NormalizeRule::ProviderPrefix,
        NormalizeRule::DatedSnapshots,
    ];

    /// The rule's name in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            NormalizeRule::Case => "case",
            NormalizeRule::GeminiPrefix => "gemini_prefix",
            NormalizeRule::ProviderPrefix => "provider_prefix",
            NormalizeRule::DatedSnapshots => "dated_snapshots",
        }
    }
}

/// `[catalog]`: the model catalogue's name normalisation (docs/catalog.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogConfig {
    /// The rules on; default: every rule.
    pub normalize: Vec<NormalizeRule>,
}

impl Default for CatalogConfig {
    fn default() -> Self {
        Self {
            normalize: NormalizeRule::ALL.to_vec(),
        }
    }
}

impl CatalogConfig {
    /// Whether `rule` is on.
    pub fn has(&self, rule: NormalizeRule) -> bool {
        self.normalize.contains(&rule)
    }
}

/// `[health]`: background upstream health checks.
#[derive(Clone, Debug)]
pub struct HealthConfig {
    pub interval: Duration,
    /// Never zero and never longer than `interval`.
    pub timeout: Duration,
    /// How often a disabled key is re-checked with a cheap request.
    pub key_recheck: Duration,
    /// At most this many upstreams are probed (and their models listed) at once.
    pub discovery_concurrency: u32,
    /// A healthy upstream is not listed again sooner than this by the scheduled rounds
    /// (an admin refresh is not held back; a standby upstream is re-probed on its own
    /// backoff). Longer than `interval`: listed every few rounds; zero: every round.
    pub min_discovery_interval: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
            key_recheck: Duration::from_secs(300),
            discovery_concurrency: 10,
            min_discovery_interval: Duration::from_secs(1),
        }
    }
}

/// One `[[upstreams]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct UpstreamConfig {
    /// Unique, 1..=64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
    pub kind: UpstreamKind,
    /// Normalized http(s) base URL without a trailing slash, query or fragment.
    pub url: String,
    /// API keys to use, possibly empty.
    pub keys: Vec<Secret>,
    /// Static model list; `None` means ask the upstream.
    pub models: Option<Vec<String>>,
    /// Relative weight for the weighted strategy, 1..=1000.
    pub weight: u32,
    pub timeouts: Timeouts,
    /// API version sent to upstreams that want one: Azure's `api-version` query
    /// (default `2024-10-21`), Anthropic's `anthropic-version` header (default `2023-06-01`).
    pub api_version: Option<String>,
    /// Which field carries the output limit of translated calls to an OpenAI-style API
    /// (`max_tokens_field`): `max_completion_tokens` for kinds openai and azure, `max_tokens`
    /// for ollama (its OpenAI-compatible API) unless the config says otherwise.
    pub max_tokens_field: MaxTokensField,
    /// `max_output_tokens` (kind anthropic): model name → the `max_tokens` sent when a
    /// translated call sets no limit, over the shipped table of Claude models.
    pub max_output_tokens: BTreeMap<String, u32>,
}

/// The request field that carries the output limit to an OpenAI-style chat API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MaxTokensField {
    /// What OpenAI's reasoning models require (and every current OpenAI model accepts).
    #[default]
    MaxCompletionTokens,
    /// The older field, for OpenAI-compatible servers that know no other.
    MaxTokens,
}

impl MaxTokensField {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::MaxCompletionTokens => "max_completion_tokens",
            Self::MaxTokens => "max_tokens",
        }
    }

    /// The default for an upstream of `kind`.
    pub fn default_for(kind: UpstreamKind) -> MaxTokensField {
        match kind {
            UpstreamKind::Ollama => Self::MaxTokens,
            _ => Self::MaxCompletionTokens,
        }
    }
}

/// Per-upstream timeouts.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    pub connect: Duration,
    /// Until the response headers / first byte arrive.
    pub first_byte: Duration,
    /// Longest gap between body chunks.
    pub idle: Duration,
    /// Whole request; `None` means no limit (long streams are normal for LLMs).
    pub total: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            first_byte: Duration::from_secs(60),
            idle: Duration::from_secs(30),
            total: None,
        }
    }
}

/// The API dialect an upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UpstreamKind {
    Ollama,
    /// OpenAI or any OpenAI-compatible server (vLLM, LM Studio, …); `url` includes `/v1`.
    Openai,
    /// Anthropic Messages API; `url` is the API root (`https://api.anthropic.com`).
    Anthropic,
    /// Google Gemini API; `url` is the API root (`https://generativelanguage.googleapis.com`).
    Gemini,
    /// Azure OpenAI; `url` is the resource (`https://NAME.openai.azure.com`), models are deployment names.
    Azure,
}

impl UpstreamKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ollama => "ollama",
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Azure => "azure",
        }
    }
}

impl fmt::Display for UpstreamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpstreamKind {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ollama" => Ok(Self::Ollama),
            "openai" => Ok(Self::Openai),
            "anthropic" => Ok(Self::Anthropic),
            "gemini" => Ok(Self::Gemini),
            "azure" => Ok(Self::Azure),
            _ => Err(ValueError::Kind(s.to_owned())),
        }
    }
}

/// How an upstream is picked among those that can serve a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Strategy {
    #[default]
    LeastActive,
    LowestLatency,
    RoundRobin,
    Weighted,
    /// The lowest price per million tokens (`[[pricing]]`, then the shipped defaults; an
    /// `upstream/model` entry prices one deployment), ties broken by fewest calls in flight.
    Cheapest,
}

impl Strategy {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LeastActive => "least_active",
            Self::LowestLatency => "lowest_latency",
            Self::RoundRobin => "round_robin",
            Self::Weighted => "weighted",
            Self::Cheapest => "cheapest",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "least_active" => Ok(Self::LeastActive),
            "lowest_latency" => Ok(Self::LowestLatency),
            "round_robin" => Ok(Self::RoundRobin),
            "weighted" => Ok(Self::Weighted),
            "cheapest" => Ok(Self::Cheapest),
            _ => Err(ValueError::Strategy(s.to_owned())),
        }
    }
}

impl Config {
    /// Parses and validates config text. `env` resolves `${VAR}` references; it is a parameter
    /// so callers (and tests) control the environment.
    pub fn from_toml_str(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        // Loading runs in stages so that every error can name the key it is about: parse into a
        // `toml::Table`, expand `${VAR}` in string values, deserialize into the private `Raw*`
        // structs (unknown keys rejected, path tracked by `serde_path_to_error`), then validate
        // and convert into the public structs.
        // toml's own message carries the line, column and a source snippet: keep it whole.
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("", e.to_string().trim_end()))?;
        interpolate::interpolate_table(&mut table, "", env)?;
        let raw: raw::RawConfig =
            serde_path_to_error::deserialize(table).map_err(raw::serde_error)?;
        raw.into_config()
    }

    /// Reads and validates the config file at `path`, resolving `${VAR}` from the process
    /// environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        // A variable that is not valid Unicode cannot be put in a string setting; treating it
        // as unset gives the "is not set" error, which names the variable.
        Self::from_toml_str(&text, &|name| std::env::var(name).ok())
    }

    /// The upstream called `name`, if any.
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

#[cfg(test)]
mod tests;
