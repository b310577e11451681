//! `llmux config check [FILE]`: validate a config file, print the routing table it compiles to, and warn about upstream URLs that will not work.

use llmux_config::{Config, UpstreamKind};
use std::io::Write;
use std::path::Path;

pub fn run(file: &Path) -> Result<(), String> {
    let cfg = Config::load(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // The files were read and parsed by the config; that the key goes with the certificate
    // (and that rustls takes them) is checked as `llmux serve` would.
    if let Some(tls) = &cfg.server.tls {
        llmux_gateway::tls::server_config(tls).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    let text = render(&cfg);
    // Valid but probably wrong: said on stderr, and the exit stays 0.
    let mut err = std::io::stderr().lock();
    for w in url_warnings(&cfg)
        .into_iter()
        .chain(collision_warnings(&cfg))
    {
        let _ = writeln!(err, "warning: {w}");
    }
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// `llmux config check` without a file: `./llmux.toml`, and when there is none, what to do
/// (rather than "cannot read llmux.toml", which reads as a broken file).
pub fn run_local() -> Result<(), String> {
    let local = Path::new("llmux.toml");
    if !local.exists() {
        return Err(
            "no llmux.toml in this directory: name the file (`llmux config check FILE`); \
             `llmux serve` without a config runs on built-in defaults"
                .into(),
        );
    }
    run(local)
}

/// Whether instances on this config behave as one, and if not, what is missing.
fn cluster_line(cfg: &Config) -> String {
    let c = &cfg.cluster;
    if cfg.cluster_mode() {
        return format!(
            "on (PostgreSQL store + limits.redis_url; prefix {:?}, heartbeat {:?}, lease {:?})",
            c.prefix, c.heartbeat, c.lease
        );
    }
    let missing = match (cfg.store.is_postgres(), cfg.limits.redis_url.is_some()) {
        _ if c.enabled == Some(false) => "cluster.enabled = false",
        (false, _) => "the store is SQLite: one instance",
        (true, false) => "no limits.redis_url: instances share the store only",
        (true, true) => "off",
    };
    format!("off ({missing})")
}

/// The response cache's settings in one line (docs/cache.md).
fn cache_line(cfg: &Config) -> String {
    let c = &cfg.cache;
    if !c.enabled {
        return "off".to_string();
    }
    let models = if c.models.is_empty() {
        "every model".to_string()
    } else {
        c.models.join(", ")
    };
    let size = match c.backend {
        llmux_config::CacheBackend::Memory => format!(", at most {} answers", c.max_entries),
        llmux_config::CacheBackend::Redis => format!(", shared under {:?}", cfg.cluster.prefix),
    };
    format!(
        "{} for {:?}{size}; {models}; coalescing {}",
        c.backend.as_str(),
        c.ttl,
        if c.coalesce { "on" } else { "off" }
    )
}

/// The compiled routing table as text: what each upstream serves and how calls are spread.
pub fn render(cfg: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(out, "listen:    {}", cfg.server.listen);
    if let Some(tls) = &cfg.server.tls {
        let _ = writeln!(
            out,
            "tls:       {} + {} (h2, http/1.1)",
            tls.cert.display(),
            tls.key.display()
        );
    }
    let _ = writeln!(out, "strategy:  {}", cfg.routing.strategy.as_str());
    let _ = writeln!(out, "attempts:  {} per call", cfg.routing.max_attempts);
    let _ = writeln!(
        out,
        "health:    every {:?}, timeout {:?}",
        cfg.health.interval, cfg.health.timeout
    );
    let _ = writeln!(
        out,
        "admin API: {}",
        if cfg.admin.token.is_some() {
            "enabled"
        } else {
            "disabled (no admin.token)"
        }
    );
    let _ = writeln!(out, "cluster:   {}", cluster_line(cfg));
    let _ = writeln!(out, "cache:     {}", cache_line(cfg));
    let rules: Vec<&str> = cfg.catalog.normalize.iter().map(|r| r.as_str()).collect();
    let _ = writeln!(
        out,
        "catalog:   normalize {} (+ Ollama's :latest); discovery at most {} at once, each upstream at most every {:?}",
        if rules.is_empty() { "off".to_string() } else { rules.join(", ") },
        cfg.health.discovery_concurrency,
        cfg.health.min_discovery_interval
    );
    let _ = writeln!(out, "images:    {}", image_fetch_line(cfg));
    let _ = writeln!(out, "\nupstreams ({}):", cfg.upstreams.len());
    for u in &cfg.upstreams {
        render_upstream(&mut out, u);
    }
    if !cfg.routing.fallbacks.is_empty() {
        let _ = writeln!(out, "\nfallbacks:");
        for (model, chain) in &cfg.routing.fallbacks {
            let _ = writeln!(out, "  {model} -> {}", chain.join(" -> "));
        }
    }
    render_hooks(&mut out, cfg);
    out
}

/// `bytes` as a person writes a size in the config: `20 MiB`, `64 KiB`, or bytes.
fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// What happens to images given by URL to upstreams that take only inline bytes.
fn image_fetch_line(cfg: &Config) -> String {
    let t = &cfg.translation;
    if t.image_fetch_max_count == 0 {
        return "URLs to Gemini and Ollama upstreams refused (translation.image_fetch_max_count = 0)"
            .to_string();
    }
    format!(
        "URLs to Gemini and Ollama upstreams fetched and inlined: at most {} per call, {} and {:?} each, {}",
        t.image_fetch_max_count,
        size(t.image_fetch_max),
        t.image_fetch_timeout,
        if cfg.admin.allow_private_upstreams {
            "private addresses allowed"
        } else {
            "public addresses only"
        }
    )
}

/// `[[hooks]]` in the order they run: what each does and its scope (docs/hooks.md). A URL's
/// query string (which may hold a token) is not printed.
fn render_hooks(out: &mut String, cfg: &Config) {
    use std::fmt::Write as _;
    if cfg.hooks.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nhooks ({}, in order):", cfg.hooks.len());
    for h in &cfg.hooks {
        let mut does = Vec::new();
        if let Some(e) = &h.external {
            let url = e.url.split('?').next().unwrap_or_default();
            does.push(format!(
                "external {url} (timeout {:?}, fail {})",
                e.timeout,
                e.fail.as_str()
            ));
        }
        if h.deny {
            does.push("deny".into());
        }
        if let Some(p) = &h.deny_pattern {
            does.push(format!("deny_pattern {p:?}"));
        }
        if let Some(n) = h.set.max_tokens {
            does.push(format!("max_tokens at most {n}"));
        }
        let set = &h.set;
        let replaced = [
            ("temperature", set.temperature.is_some()),
            ("top_p", set.top_p.is_some()),
            ("top_k", set.top_k.is_some()),
            ("seed", set.seed.is_some()),
            ("frequency_penalty", set.frequency_penalty.is_some()),
            ("presence_penalty", set.presence_penalty.is_some()),
        ];
        let replaced: Vec<&str> = replaced
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| *k)
            .collect();
        if !replaced.is_empty() {
            does.push(format!("set {}", replaced.join(", ")));
        }
        if !h.headers.is_empty() {
            let names: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
            does.push(format!("headers {}", names.join(", ")));
        }
        if !h.redact.is_empty() {
            does.push(format!(
                "redact {} pattern(s) in the call log",
                h.redact.len()
            ));
        }
        let s = &h.scope;
        let mut scope = Vec::new();
        for (what, list) in [("models", &s.models), ("apps", &s.apps), ("keys", &s.keys)] {
            if !list.is_empty() {
                scope.push(format!("{what} {}", list.join(", ")));
            }
        }
        let scope = if scope.is_empty() {
            "every call".to_string()
        } else {
            scope.join("; ")
        };
        let _ = writeln!(out, "  {}: {} [{scope}]", h.name, does.join("; "));
    }
}

/// One upstream of the routing table: where it is, what it serves, its keys and timeouts.
fn render_upstream(out: &mut String, u: &llmux_config::UpstreamConfig) {
    use std::fmt::Write as _;

    let models = match &u.models {
        Some(m) => m.join(", "),
        None => match u.kind {
            UpstreamKind::Ollama => "discovered from /api/tags".to_string(),
            UpstreamKind::Openai => "discovered from /models".to_string(),
            UpstreamKind::Anthropic => "discovered from /v1/models".to_string(),
            UpstreamKind::Gemini => "discovered from /v1beta/models".to_string(),
            UpstreamKind::Azure => "the listed deployments".to_string(),
        },
    };
    let keys: Vec<String> = u.keys.iter().map(|k| k.masked()).collect();
    let _ = writeln!(out, "  {} ({}) {}", u.name, u.kind.as_str(), u.url);
    let _ = writeln!(out, "    models:   {models}");
    let _ = writeln!(out, "    weight:   {}", u.weight);
    let _ = writeln!(
        out,
        "    keys:     {}",
        if keys.is_empty() {
            "none".to_string()
        } else {
            keys.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "    timeouts: connect {:?}, first byte {:?}, idle {:?}, total {}",
        u.timeouts.connect,
        u.timeouts.first_byte,
        u.timeouts.idle,
        u.timeouts
            .total
            .map_or("none".to_string(), |t| format!("{t:?}"))
    );
    render_limits(out, u);
}

/// How translated calls carry their output limit to this upstream (docs/compatibility.md).
fn render_limits(out: &mut String, u: &llmux_config::UpstreamConfig) {
    use std::fmt::Write as _;

    match u.kind {
        UpstreamKind::Openai | UpstreamKind::Azure | UpstreamKind::Ollama => {
            let field = u.max_tokens_field.as_str();
            let _ = writeln!(out, "    limit:    sent as {field} when translated");
        }
        UpstreamKind::Anthropic => {
            let overrides: Vec<String> = u
                .max_output_tokens
                .iter()
                .map(|(m, n)| format!("{m} = {n}"))
                .collect();
            let shown = if overrides.is_empty() {
                "the shipped table".to_string()
            } else {
                format!("{} (else the shipped table)", overrides.join(", "))
            };
            let _ = writeln!(out, "    limit:    none given: {shown}");
        }
        UpstreamKind::Gemini => {}
    }
}

/// Declared model names (`models = [...]`) that normalise alike under `[catalog] normalize`:
/// a request by the shared name matches several of them (discovered names are reported by
/// the admin API's `GET /admin/v1/models/collisions`).
pub fn collision_warnings(cfg: &Config) -> Vec<String> {
    let declared: Vec<(String, String)> = cfg
        .upstreams
        .iter()
        .flat_map(|u| {
            u.models
                .iter()
                .flatten()
                .map(|m| (u.name.clone(), m.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let rules = llmux_gateway::routing::rules_of(&cfg.catalog);
    llmux_gateway::catalog::collisions(&declared, rules)
        .into_iter()
        .map(|c| {
            let names: Vec<String> = c.models.iter().map(|(u, m)| format!("{u}/{m}")).collect();
            format!(
                "model name collision ({}): {} all answer to {:?}; a request by that name goes to {:?} \
                 (rename one through the admin API, or turn the rule off in [catalog] normalize)",
                c.rule,
                names.join(", "),
                c.normalized,
                c.routes_to
            )
        })
        .collect()
}

/// The path of a URL (`/v1` of `https://api.openai.com/v1/`), without query and trailing `/`.
fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['?', '#']).next().unwrap_or(rest);
    rest.find('/')
        .map_or("", |i| &rest[i..])
        .trim_end_matches('/')
}

/// Upstream URLs whose shape will not work for their kind: llmux appends each API's paths
/// itself (`/api/chat`, `/v1/chat/completions` under an Ollama node, `/v1/messages`,
/// `/v1beta/models/…`, `/openai/deployments/…`), except for `openai`, whose URL is the API
/// base and so names its version (`…/v1`).
pub fn url_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    for u in &cfg.upstreams {
        let path = url_path(&u.url);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let versioned = segments.iter().any(|s| {
            s.strip_prefix('v')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        });
        let at = format!("upstream '{}' ({}) url {}", u.name, u.kind.as_str(), u.url);
        let problem = match u.kind {
            UpstreamKind::Openai if !versioned => Some(
                "has no API version in its path; an OpenAI-compatible URL is the API base, \
                 usually ending in /v1 (https://api.openai.com/v1, http://host:8000/v1)"
                    .to_string(),
            ),
            UpstreamKind::Azure if !segments.is_empty() => Some(format!(
                "has a path ({path}); use the resource root (https://NAME.openai.azure.com): \
                 llmux adds /openai/deployments/… itself"
            )),
            UpstreamKind::Ollama if segments.last() == Some(&"v1") || segments.last() == Some(&"api") => {
                Some(format!(
                    "ends in {path}; use the node's root (http://host:11434): llmux adds /api/… and /v1/… itself"
                ))
            }
            UpstreamKind::Anthropic if segments.last() == Some(&"v1") => Some(
                "ends in /v1; use https://api.anthropic.com: llmux adds /v1/messages itself"
                    .to_string(),
            ),
            UpstreamKind::Gemini if segments.last().is_some_and(|s| s.starts_with("v1")) => Some(
                "ends in an API version; use https://generativelanguage.googleapis.com: llmux adds /v1beta/models/… itself"
                    .to_string(),
            ),
            _ => None,
        };
        if let Some(p) = problem {
            out.push(format!("{at} {p}"));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn warnings(kind: &str, url: &str) -> Vec<String> {
        let text = format!(
            "[[upstreams]]\nname = \"u\"\nkind = \"{kind}\"\nurl = \"{url}\"\nmodels = [\"m\"]\n"
        );
        let cfg = Config::from_toml_str(&text, &|_| None).unwrap();
        url_warnings(&cfg)
    }

    #[test]
    fn image_fetching_is_shown() {
        let cfg = Config::from_toml_str("", &|_| None).unwrap();
        let out = render(&cfg);
        assert!(out.contains("images:    URLs to Gemini and Ollama upstreams fetched and inlined: at most 8 per call, 20 MiB and 10s each, public addresses only"), "{out}");
        let cfg =
            Config::from_toml_str("[translation]\nimage_fetch_max_count = 0\n", &|_| None).unwrap();
        assert!(render(&cfg).contains("refused (translation.image_fetch_max_count = 0)"));
    }

    #[test]
    fn url_shapes_that_will_not_work_are_warned_about() {
        for (kind, url) in [
            ("openai", "https://api.openai.com"),
            ("openai", "http://10.0.0.7:8000/"),
            ("azure", "https://x.openai.azure.com/openai/v1"),
            ("ollama", "http://10.0.0.5:11434/v1"),
            ("ollama", "http://10.0.0.5:11434/v1/"),
            ("anthropic", "https://api.anthropic.com/v1"),
            ("gemini", "https://generativelanguage.googleapis.com/v1beta"),
        ] {
            let w = warnings(kind, url);
            assert_eq!(w.len(), 1, "{kind} {url}: {w:?}");
            assert!(w[0].contains("upstream 'u'"), "{w:?}");
        }
        for (kind, url) in [
            ("openai", "https://api.openai.com/v1"),
            ("openai", "https://api.groq.com/openai/v1"),
            (
                "openai",
                "https://generativelanguage.googleapis.com/v1beta/openai/",
            ),
            ("azure", "https://x.openai.azure.com"),
            ("ollama", "http://10.0.0.5:11434"),
            ("anthropic", "https://api.anthropic.com"),
            ("gemini", "https://generativelanguage.googleapis.com"),
        ] {
            assert!(warnings(kind, url).is_empty(), "{kind} {url}");
        }
    }

    #[test]
    fn the_output_limit_rules_are_shown() {
        let shown = |kind: &str, extra: &str| {
            let text = format!(
                "[[upstreams]]\nname = \"u\"\nkind = \"{kind}\"\nurl = \"http://h/v1\"\nmodels = [\"m\"]\n{extra}"
            );
            let cfg = Config::from_toml_str(&text, &|_| None).unwrap();
            let mut out = String::new();
            render_limits(&mut out, &cfg.upstreams[0]);
            out
        };
        assert!(shown("openai", "").contains("sent as max_completion_tokens"));
        assert!(shown("ollama", "").contains("sent as max_tokens"));
        let vllm = shown("openai", "max_tokens_field = \"max_tokens\"\n");
        assert!(
            vllm.contains("sent as max_tokens when translated"),
            "{vllm}"
        );
        assert!(shown("anthropic", "").contains("the shipped table"));
        let over = shown("anthropic", "max_output_tokens = { m = 900 }\n");
        assert!(over.contains("m = 900 (else the shipped table)"), "{over}");
        assert!(shown("gemini", "").is_empty());
    }
}
