//! `llmux config check FILE`: validate a config file and print the routing table it compiles to.

use config::{Config, UpstreamKind};
use std::io::Write;
use std::path::Path;

pub fn run(file: &Path) -> Result<(), String> {
    let cfg = Config::load(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let text = render(&cfg);
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .map_err(|e| format!("cannot write to stdout: {e}"))
}

/// The compiled routing table as text: what each upstream serves and how calls are spread.
pub fn render(cfg: &Config) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "config OK");
    let _ = writeln!(out, "listen:    {}", cfg.server.listen);
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
    let _ = writeln!(out, "\nupstreams ({}):", cfg.upstreams.len());
    for u in &cfg.upstreams {
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
    }
    if !cfg.routing.fallbacks.is_empty() {
        let _ = writeln!(out, "\nfallbacks:");
        for (model, chain) in &cfg.routing.fallbacks {
            let _ = writeln!(out, "  {model} -> {}", chain.join(" -> "));
        }
    }
    out
}
