//! Tests for loading whole config files: the documented example, defaults and every error path.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:4000"          # SocketAddr; default 127.0.0.1:4000
max_body = "32MiB"                  # size; default 32 MiB; also accept integer bytes
shutdown_grace = "30s"              # default 30s
upstream_header = true              # send x-llmux-upstream on responses; default true

[admin]
token = "${LLMUX_ADMIN_TOKEN}"      # optional; empty string after interpolation = None

[store]
url = "sqlite://llmux-data/llmux.db"  # default; must start with sqlite: or postgres:// / postgresql://

[auth]
required = false

[routing]
strategy = "least_active"           # least_active | lowest_latency | round_robin | weighted
fallbacks = { "gpt-4o" = ["claude-sonnet-4", "llama3:70b"] }   # default empty; each list non-empty, no empty names
max_attempts = 3                    # default 3, 1..=10

[health]
interval = "60s"                    # default 60s, at least 1s
timeout = "5s"                      # default 5s, > 0 and <= interval

[[upstreams]]
name = "gpu-a"                      # required; 1..=64 chars of [A-Za-z0-9._-]; unique
kind = "ollama"                     # ollama | openai | anthropic | gemini | azure
url = "http://10.0.0.5:11434"       # http or https only, must have a host, no query/fragment; keep without trailing slash
weight = 1                          # default 1, must be 1..=1000
# models = ["llama3:latest"]        # optional static list; entries non-empty and unique
keys = ["${OPENAI_KEY_1}"]          # optional; empty strings are an error (say which index)
timeouts = { connect = "5s", first_byte = "60s", idle = "30s", total = "10m" }   # defaults 5s, 60s, 30s, none
"#;

fn test_env(name: &str) -> Option<String> {
    match name {
        "LLMUX_ADMIN_TOKEN" => Some("admin-token-123456".to_owned()),
        "OPENAI_KEY_1" => Some("sk-key-one".to_owned()),
        "HOST" => Some("10.0.0.7".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, &test_env)
}

/// Parses `text`, expecting an error, and returns (path, message).
fn fail(text: &str) -> (String, String) {
    let err = parse(text).expect_err("config should be rejected");
    (err.path, err.message)
}

const UPSTREAM: &str = "[[upstreams]]\nname = \"a\"\nkind = \"ollama\"\nurl = \"http://h:1\"\n";

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[test]
fn full_example_parses() {
    let c = parse(EXAMPLE).unwrap();
    assert_eq!(
        c.server.listen,
        "127.0.0.1:4000".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(c.server.max_body, 32 * 1024 * 1024);
    assert_eq!(c.server.shutdown_grace, secs(30));
    assert!(c.server.upstream_header);
    assert_eq!(
        c.admin.token.as_ref().unwrap().expose(),
        "admin-token-123456"
    );
    assert_eq!(c.store.url, "sqlite://llmux-data/llmux.db");
    assert!(!c.auth.required);
    assert_eq!(c.routing.strategy, Strategy::LeastActive);
    assert_eq!(c.routing.max_attempts, 3);
    assert_eq!(c.routing.fallbacks.len(), 1);
    assert_eq!(
        c.routing.fallbacks["gpt-4o"],
        vec!["claude-sonnet-4".to_owned(), "llama3:70b".to_owned()]
    );
    assert_eq!(c.health.interval, secs(60));
    assert_eq!(c.health.timeout, secs(5));

    assert_eq!(c.upstreams.len(), 1);
    let u = c.upstream("gpu-a").unwrap();
    assert_eq!(u.name, "gpu-a");
    assert_eq!(u.kind, UpstreamKind::Ollama);
    assert_eq!(u.url, "http://10.0.0.5:11434");
    assert_eq!(u.weight, 1);
    assert_eq!(u.models, None);
    assert_eq!(u.keys, vec![Secret::new("sk-key-one")]);
    assert_eq!(u.timeouts.connect, secs(5));
    assert_eq!(u.timeouts.first_byte, secs(60));
    assert_eq!(u.timeouts.idle, secs(30));
    assert_eq!(u.timeouts.total, Some(secs(600)));
    assert!(c.upstream("nope").is_none());

    // Debug output of the whole config is safe to log.
    let debug = format!("{c:?}");
    assert!(!debug.contains("admin-token-123456"), "{debug}");
    assert!(!debug.contains("sk-key-one"), "{debug}");
    assert!(debug.contains("***"));
}

#[test]
fn empty_file_gives_defaults() {
    for text in ["", "\n# just a comment\n"] {
        let c = parse(text).unwrap();
        let d = Config::default();
        assert_eq!(c.server.listen, SocketAddr::from(([127, 0, 0, 1], 4000)));
        assert_eq!(c.server.listen, d.server.listen);
        assert_eq!(c.server.max_body, 32 << 20);
        assert_eq!(c.server.max_body, d.server.max_body);
        assert_eq!(c.server.max_upstream_body, 64 << 20);
        assert_eq!(c.server.max_upstream_body, d.server.max_upstream_body);
        assert_eq!(c.server.shutdown_grace, secs(30));
        assert_eq!(c.server.shutdown_grace, d.server.shutdown_grace);
        assert!(c.server.upstream_header && d.server.upstream_header);
        assert!(c.admin.token.is_none() && d.admin.token.is_none());
        assert_eq!(c.store.url, "sqlite://llmux-data/llmux.db");
        assert_eq!(c.store.url, d.store.url);
        assert!(!c.auth.required && !d.auth.required);
        assert_eq!(c.routing.strategy, Strategy::LeastActive);
        assert_eq!(d.routing.strategy, Strategy::LeastActive);
        assert!(c.routing.fallbacks.is_empty() && d.routing.fallbacks.is_empty());
        assert_eq!((c.routing.max_attempts, d.routing.max_attempts), (3, 3));
        assert_eq!((c.health.interval, d.health.interval), (secs(60), secs(60)));
        assert_eq!((c.health.timeout, d.health.timeout), (secs(5), secs(5)));
        assert!(c.upstreams.is_empty() && d.upstreams.is_empty());
    }
}

#[test]
fn upstream_defaults_and_variants() {
    let c = parse(
        r#"
        [routing]
        strategy = "weighted"
        [server]
        max_body = 1048576
        shutdown_grace = 0
        listen = "[::]:8080"
        [store]
        url = "postgres://u:p@db/llmux"
        [[upstreams]]
        name = "a"
        kind = "ollama"
        url = "http://${HOST}:11434/"
        [[upstreams]]
        name = "oa.1_x"
        kind = "openai"
        url = "https://api.openai.com/v1/"
        weight = 1000
        models = ["gpt-4o", "gpt-4o-mini"]
        timeouts = { connect = 2, total = "1h30m" }
        "#,
    )
    .unwrap();
    assert_eq!(c.routing.strategy, Strategy::Weighted);
    assert_eq!(c.server.max_body, 1 << 20);
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);
    assert_eq!(c.server.listen.port(), 8080);
    assert!(c.server.listen.is_ipv6());
    assert_eq!(c.store.url, "postgres://u:p@db/llmux");
    let a = &c.upstreams[0];
    assert_eq!(a.url, "http://10.0.0.7:11434");
    assert_eq!(a.weight, 1);
    assert!(a.keys.is_empty());
    assert!(a.models.is_none());
    assert_eq!(a.timeouts.connect, secs(5));
    assert_eq!(a.timeouts.first_byte, secs(60));
    assert_eq!(a.timeouts.idle, secs(30));
    assert_eq!(a.timeouts.total, None);
    let b = c.upstream("oa.1_x").unwrap();
    assert_eq!(b.kind, UpstreamKind::Openai);
    assert_eq!(b.url, "https://api.openai.com/v1");
    assert_eq!(b.weight, 1000);
    assert_eq!(
        b.models.as_deref(),
        Some(&["gpt-4o".to_owned(), "gpt-4o-mini".to_owned()][..])
    );
    assert_eq!(b.timeouts.connect, secs(2));
    assert_eq!(b.timeouts.idle, secs(30));
    assert_eq!(b.timeouts.total, Some(secs(5400)));
}

#[test]
fn unknown_keys_name_the_key() {
    let (path, msg) = fail("bogus = 1");
    assert_eq!(path, "bogus");
    assert!(msg.starts_with("unknown key"), "{msg}");
    assert!(msg.contains("upstreams"), "{msg}");

    let (path, msg) = fail("[server]\nbogus = 1");
    assert_eq!(path, "server.bogus");
    assert_eq!(
        msg,
        "unknown key (expected one of listen, max_body, max_upstream_body, shutdown_grace, upstream_header, header_timeout, idle_timeout, max_connections, workers, compression, tls, cors)"
    );

    let (path, msg) = fail(&format!("{UPSTREAM}bogus = 1"));
    assert_eq!(path, "upstreams[0].bogus");
    assert!(msg.starts_with("unknown key"), "{msg}");

    let (path, msg) = fail(&format!("{UPSTREAM}timeouts = {{ conect = \"5s\" }}"));
    assert_eq!(path, "upstreams[0].timeouts.conect");
    assert!(msg.starts_with("unknown key"), "{msg}");
    assert!(msg.contains("connect, first_byte, idle, total"), "{msg}");

    let err = parse("[server]\nbogus = 1").unwrap_err();
    assert!(
        err.to_string().starts_with("server.bogus: unknown key"),
        "{err}"
    );
}

#[test]
fn missing_and_mistyped_keys() {
    let (path, msg) = fail("[[upstreams]]\nname = \"a\"\nkind = \"ollama\"");
    assert_eq!(path, "upstreams[0].url");
    assert_eq!(msg, "required key is missing");

    let (path, msg) = fail("[auth]\nrequired = \"yes\"");
    assert_eq!(path, "auth.required");
    assert!(msg.contains("invalid type"), "{msg}");

    let (path, msg) = fail("[upstreams]\nname = \"a\"");
    assert_eq!(path, "upstreams");
    assert!(msg.contains("[[upstreams]]"), "{msg}");

    let (path, msg) = fail("server = 5");
    assert_eq!(path, "server");
    assert!(msg.contains("expected a table"), "{msg}");
}

#[test]
fn duplicate_upstream_names() {
    let text = format!(
        "{UPSTREAM}[[upstreams]]\nname = \"gpu-a\"\nkind = \"ollama\"\nurl = \"http://h:2\"\n\
         [[upstreams]]\nname = \"gpu-a\"\nkind = \"openai\"\nurl = \"http://h:3\"\n"
    );
    let err = parse(&text).unwrap_err();
    assert_eq!(err.path, "upstreams[2].name");
    assert_eq!(err.message, "duplicate upstream name \"gpu-a\"");
    assert_eq!(
        err.to_string(),
        "upstreams[2].name: duplicate upstream name \"gpu-a\""
    );
}

#[test]
fn bad_upstream_names() {
    let long = "x".repeat(65);
    for name in ["", "has space", "slash/y", long.as_str()] {
        let (path, msg) = fail(&format!(
            "[[upstreams]]\nname = \"{name}\"\nkind = \"ollama\"\nurl = \"http://h\""
        ));
        assert_eq!(path, "upstreams[0].name");
        assert!(msg.starts_with("invalid upstream name"), "{msg}");
    }
    let ok = "x".repeat(64);
    assert!(parse(&format!(
        "[[upstreams]]\nname = \"{ok}\"\nkind = \"ollama\"\nurl = \"http://h\""
    ))
    .is_ok());
}

fn upstream_url(url: &str) -> (String, String) {
    fail(&format!(
        "{UPSTREAM}[[upstreams]]\nname = \"b\"\nkind = \"ollama\"\nurl = \"{url}\"\n"
    ))
}

#[test]
fn bad_urls() {
    let (path, msg) = upstream_url("htp:/x");
    assert_eq!(path, "upstreams[1].url");
    assert!(
        msg.starts_with("invalid URL \"htp:/x\": scheme must be http or https"),
        "{msg}"
    );

    let (path, msg) = upstream_url("not a url");
    assert_eq!(path, "upstreams[1].url");
    assert!(msg.starts_with("invalid URL \"not a url\": "), "{msg}");

    let (_, msg) = upstream_url("ftp://h/x");
    assert!(msg.contains("scheme must be http or https"), "{msg}");
    let (_, msg) = upstream_url("http://h/x?a=1");
    assert!(msg.contains("query"), "{msg}");
    let (_, msg) = upstream_url("http://h/x#frag");
    assert!(msg.contains("fragment"), "{msg}");
    let (_, msg) = upstream_url("http://user:pw@h/");
    assert!(msg.contains("credentials"), "{msg}");
    // Empty host.
    let (_, msg) = upstream_url("http://");
    assert!(msg.starts_with("invalid URL"), "{msg}");
}

#[test]
fn bad_durations_and_sizes() {
    let (path, msg) = fail(&format!("{UPSTREAM}timeouts = {{ connect = \"5x\" }}"));
    assert_eq!(path, "upstreams[0].timeouts.connect");
    assert_eq!(
        msg,
        r#"invalid duration "5x" (use e.g. "500ms", "5s", "1m", "1h30m")"#
    );

    let (path, msg) = fail("[server]\nshutdown_grace = -3");
    assert_eq!(path, "server.shutdown_grace");
    assert!(msg.contains("negative"), "{msg}");

    let (path, msg) = fail("[server]\nshutdown_grace = true");
    assert_eq!(path, "server.shutdown_grace");
    assert!(msg.contains("invalid type"), "{msg}");

    let (path, msg) = fail(&format!("{UPSTREAM}timeouts = {{ idle = \"0s\" }}"));
    assert_eq!(path, "upstreams[0].timeouts.idle");
    assert_eq!(msg, "must be greater than zero");

    let (path, msg) = fail("[server]\nmax_body = \"32XB\"");
    assert_eq!(path, "server.max_body");
    assert!(msg.starts_with("invalid size \"32XB\""), "{msg}");

    let (path, msg) = fail("[server]\nmax_body = 0");
    assert_eq!(path, "server.max_body");
    assert_eq!(msg, "must be greater than zero");

    let (path, msg) = fail("[server]\nmax_upstream_body = 0");
    assert_eq!(path, "server.max_upstream_body");
    assert_eq!(msg, "must be greater than zero");
    let c = parse("[server]\nmax_upstream_body = \"1GiB\"").unwrap();
    assert_eq!(c.server.max_upstream_body, 1 << 30);
}

#[test]
fn durations_longer_than_a_day_name_their_key() {
    let (path, msg) = fail(&format!(
        "{UPSTREAM}timeouts = {{ first_byte = \"9300000000000000000\" }}"
    ));
    assert_eq!(path, "upstreams[0].timeouts.first_byte");
    assert!(msg.contains("maximum of 24h"), "{msg}");
    let (path, msg) = fail(&format!(
        "{UPSTREAM}timeouts = {{ idle = 9223372036854775807 }}"
    ));
    assert_eq!(path, "upstreams[0].timeouts.idle");
    assert!(msg.contains("maximum of 24h"), "{msg}");
    for (table, key) in [
        ("server", "shutdown_grace"),
        ("routing", "cooldown"),
        ("routing", "max_cooldown"),
        ("routing.breaker", "window"),
        ("routing.breaker", "max_open_for"),
        ("health", "interval"),
        ("health", "key_recheck"),
        ("alerts", "window"),
    ] {
        let (path, msg) = fail(&format!("[{table}]\n{key} = \"25h\""));
        assert_eq!(path, format!("{table}.{key}"));
        assert!(msg.contains("maximum of 24h"), "{msg}");
    }
    let c = parse(&format!("{UPSTREAM}timeouts = {{ total = \"24h\" }}")).unwrap();
    assert_eq!(c.upstreams[0].timeouts.total, Some(MAX_DURATION));
}

/// Random integers and strings in every duration key of a file: never a panic, and what is
/// accepted stays within the bound.
#[test]
fn duration_keys_fuzz() {
    let mut x: u64 = 0x0ddb_a11c_afef_00d1;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..2_000 {
        let r = next();
        let value = match r % 4 {
            0 => (next() >> (r % 64)).to_string(),
            1 => format!("{}", (next() as i64) >> (r % 64)),
            2 => format!("\"{}ms\"", next() >> (r % 64)),
            _ => format!("\"{}.{}h\"", next() >> (r % 64), next() % 1000),
        };
        let text = format!("{UPSTREAM}timeouts = {{ first_byte = {value}, idle = {value} }}\n[routing]\ncooldown = {value}\n");
        if let Ok(c) = parse(&text) {
            let t = &c.upstreams[0].timeouts;
            assert!(
                t.first_byte <= MAX_DURATION && t.idle <= MAX_DURATION,
                "{text}"
            );
            assert!(c.routing.cooldown <= MAX_DURATION, "{text}");
        }
    }
}

#[test]
fn bad_enums_and_addresses() {
    let (path, msg) = fail("[routing]\nstrategy = \"fastest\"");
    assert_eq!(path, "routing.strategy");
    assert_eq!(
        msg,
        "unknown strategy \"fastest\" (expected least_active, lowest_latency, round_robin, weighted or cheapest)"
    );

    let (path, msg) = fail("[[upstreams]]\nname = \"a\"\nkind = \"vllm\"\nurl = \"http://h\"");
    assert_eq!(path, "upstreams[0].kind");
    assert_eq!(
        msg,
        "unsupported kind \"vllm\" (expected ollama, openai, anthropic, gemini or azure)"
    );

    let (path, msg) = fail("[server]\nlisten = \"localhost\"");
    assert_eq!(path, "server.listen");
    assert!(
        msg.starts_with("invalid listen address \"localhost\""),
        "{msg}"
    );

    let (path, msg) = fail("[store]\nurl = \"mysql://x\"");
    assert_eq!(path, "store.url");
    assert!(msg.starts_with("unsupported store URL"), "{msg}");
    assert!(parse("[store]\nurl = \"sqlite::memory:\"").is_ok());
    assert!(parse("[store]\nurl = \"postgresql://db/x\"").is_ok());
}

#[test]
fn strategy_and_kind_round_trip() {
    for s in [
        Strategy::LeastActive,
        Strategy::LowestLatency,
        Strategy::RoundRobin,
        Strategy::Weighted,
        Strategy::Cheapest,
    ] {
        assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
    }
    for k in [
        UpstreamKind::Ollama,
        UpstreamKind::Openai,
        UpstreamKind::Anthropic,
        UpstreamKind::Gemini,
        UpstreamKind::Azure,
    ] {
        assert_eq!(k.as_str().parse::<UpstreamKind>().unwrap(), k);
    }
    assert_eq!(UpstreamKind::Openai.as_str(), "openai");
    assert_eq!(Strategy::RoundRobin.as_str(), "round_robin");
}

#[test]
fn env_interpolation() {
    let err = Config::from_toml_str(EXAMPLE, &|_| None).unwrap_err();
    assert_eq!(err.path, "admin.token");
    assert_eq!(
        err.message,
        "environment variable LLMUX_ADMIN_TOKEN is not set"
    );
    assert_eq!(
        err.to_string(),
        "admin.token: environment variable LLMUX_ADMIN_TOKEN is not set"
    );

    // Default when unset, and when set but empty.
    let c = parse("[admin]\ntoken = \"${UNSET_VAR:-fallback}\"").unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), "fallback");
    let c = parse("[admin]\ntoken = \"${EMPTY:-x}\"").unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), "x");

    // Empty after interpolation means no token.
    assert!(parse("[admin]\ntoken = \"${EMPTY}\"")
        .unwrap()
        .admin
        .token
        .is_none());
    assert!(parse("[admin]\ntoken = \"${UNSET_VAR:-}\"")
        .unwrap()
        .admin
        .token
        .is_none());

    // Escape and literal dollars.
    let c = parse("[admin]\ntoken = \"$${NOT_A_VAR}$x\"").unwrap();
    assert_eq!(c.admin.token.unwrap().expose(), "${NOT_A_VAR}$x");

    // Unterminated reference.
    let (path, msg) = fail("[admin]\ntoken = \"${OOPS\"");
    assert_eq!(path, "admin.token");
    assert!(msg.starts_with("unterminated"), "{msg}");
}

#[test]
fn interpolation_in_arrays_and_inline_tables() {
    let c = parse(&format!(
        "{UPSTREAM}keys = [\"plain\", \"${{OPENAI_KEY_1}}\"]\n\
         models = [\"m-${{HOST}}\"]\n\
         timeouts = {{ connect = \"${{CONNECT:-7s}}\" }}\n\
         [routing]\nfallbacks = {{ \"a\" = [\"${{HOST}}\"] }}\n"
    ))
    .unwrap();
    let u = &c.upstreams[0];
    assert_eq!(u.keys[0].expose(), "plain");
    assert_eq!(u.keys[1].expose(), "sk-key-one");
    assert_eq!(u.models.as_deref(), Some(&["m-10.0.0.7".to_owned()][..]));
    assert_eq!(u.timeouts.connect, secs(7));
    assert_eq!(c.routing.fallbacks["a"], vec!["10.0.0.7".to_owned()]);

    // Errors inside arrays and inline tables carry the full path.
    let (path, msg) = fail(&format!("{UPSTREAM}keys = [\"a\", \"${{NO_SUCH_KEY}}\"]"));
    assert_eq!(path, "upstreams[0].keys[1]");
    assert_eq!(msg, "environment variable NO_SUCH_KEY is not set");
    let (path, _) = fail(&format!(
        "{UPSTREAM}timeouts = {{ total = \"${{NO_TOTAL}}\" }}"
    ));
    assert_eq!(path, "upstreams[0].timeouts.total");
    let (path, _) = fail("[routing]\nfallbacks = { \"llama3:70b\" = [\"${NOPE}\"] }");
    assert_eq!(path, "routing.fallbacks.\"llama3:70b\"[0]");
}

#[test]
fn empty_key_strings() {
    let (path, msg) = fail(&format!("{UPSTREAM}keys = [\"ok\", \"\"]"));
    assert_eq!(path, "upstreams[0].keys[1]");
    assert_eq!(msg, "key must not be empty");
    let (path, _) = fail(&format!("{UPSTREAM}keys = [\"${{EMPTY}}\"]"));
    assert_eq!(path, "upstreams[0].keys[0]");
}

#[test]
fn models_validation() {
    let (path, msg) = fail(&format!("{UPSTREAM}models = [\"a\", \"b\", \"a\"]"));
    assert_eq!(path, "upstreams[0].models[2]");
    assert_eq!(msg, "duplicate model \"a\"");
    let (path, _) = fail(&format!("{UPSTREAM}models = [\"a\", \" \"]"));
    assert_eq!(path, "upstreams[0].models[1]");
    let (path, _) = fail(&format!("{UPSTREAM}models = []"));
    assert_eq!(path, "upstreams[0].models");
}

#[test]
fn range_checks() {
    let (path, msg) = fail(&format!("{UPSTREAM}weight = 0"));
    assert_eq!(path, "upstreams[0].weight");
    assert_eq!(msg, "must be between 1 and 1000 (got 0)");
    let (path, _) = fail(&format!("{UPSTREAM}weight = 1001"));
    assert_eq!(path, "upstreams[0].weight");

    let (path, msg) = fail("[routing]\nmax_attempts = 0");
    assert_eq!(path, "routing.max_attempts");
    assert_eq!(msg, "must be between 1 and 10 (got 0)");
    let (path, _) = fail("[routing]\nmax_attempts = 11");
    assert_eq!(path, "routing.max_attempts");
    assert_eq!(
        parse("[routing]\nmax_attempts = 10")
            .unwrap()
            .routing
            .max_attempts,
        10
    );
}

#[test]
fn fallbacks_validation() {
    let (path, msg) = fail("[routing]\nfallbacks = { \"gpt-4o\" = [] }");
    assert_eq!(path, "routing.fallbacks.gpt-4o");
    assert_eq!(msg, "fallback list must not be empty");
    let (path, msg) = fail("[routing]\nfallbacks = { \"gpt-4o\" = [\"a\", \"\"] }");
    assert_eq!(path, "routing.fallbacks.gpt-4o[1]");
    assert_eq!(msg, "model name must not be empty");
    let (path, _) = fail("[routing]\nfallbacks = { \"\" = [\"a\"] }");
    assert_eq!(path, "routing.fallbacks.\"\"");
}

#[test]
fn health_checks() {
    let (path, msg) = fail("[health]\ninterval = \"10s\"\ntimeout = \"11s\"");
    assert_eq!(path, "health.timeout");
    assert!(msg.contains("must not exceed health.interval"), "{msg}");

    let (path, msg) = fail("[health]\ninterval = \"500ms\"");
    assert_eq!(path, "health.interval");
    assert_eq!(msg, "must be at least 1s (got 500ms)");

    let (path, msg) = fail("[health]\ntimeout = \"0s\"");
    assert_eq!(path, "health.timeout");
    assert_eq!(msg, "must be greater than zero");

    // Equal is fine; an unset timeout shrinks to a short interval instead of failing.
    let c = parse("[health]\ninterval = \"3s\"\ntimeout = 3").unwrap();
    assert_eq!((c.health.interval, c.health.timeout), (secs(3), secs(3)));
    let c = parse("[health]\ninterval = \"2s\"").unwrap();
    assert_eq!(c.health.timeout, secs(2));
}

#[test]
fn toml_syntax_error_keeps_position() {
    let err = parse("[server]\nlisten = \n").unwrap_err();
    assert_eq!(err.path, "");
    assert!(err.message.contains("line 2"), "{}", err.message);
    assert_eq!(err.to_string(), err.message);
}

#[test]
fn load_reads_files_and_reports_missing_ones() {
    let dir = std::env::temp_dir().join(format!("llmux-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("llmux.toml");
    std::fs::write(&file, "[auth]\nrequired = true\n").unwrap();
    assert!(Config::load(&file).unwrap().auth.required);
    std::fs::remove_dir_all(&dir).unwrap();

    let err = Config::load(&file).unwrap_err();
    assert_eq!(err.path, "");
    assert!(
        err.message
            .starts_with(&format!("cannot read {}: ", file.display())),
        "{}",
        err.message
    );
}

#[test]
fn resilience_settings_parse_and_validate() {
    let text = r#"
[routing]
retry_budget = 0.1
cooldown = "30s"
max_cooldown = "2m"
[routing.breaker]
consecutive_failures = 3
failure_rate = 0.25
min_calls = 10
window = "10s"
open_for = "5s"
max_open_for = "1m"
[health]
key_recheck = "2m"
"#;
    let cfg = Config::from_toml_str(text, &|_| None).unwrap();
    assert_eq!(cfg.routing.retry_budget, 0.1);
    assert_eq!(cfg.routing.cooldown, Duration::from_secs(30));
    assert_eq!(cfg.routing.max_cooldown, Duration::from_secs(120));
    assert_eq!(cfg.routing.breaker.consecutive_failures, 3);
    assert_eq!(cfg.routing.breaker.failure_rate, 0.25);
    assert_eq!(cfg.routing.breaker.window, Duration::from_secs(10));
    assert_eq!(cfg.health.key_recheck, Duration::from_secs(120));
    let d = Config::default();
    assert_eq!(d.routing.breaker.consecutive_failures, 5);
    assert_eq!(d.routing.retry_budget, 0.2);

    for (text, path) in [
        ("[routing]\nretry_budget = 1.5\n", "routing.retry_budget"),
        (
            "[routing.breaker]\nconsecutive_failures = 0\n",
            "routing.breaker.consecutive_failures",
        ),
        (
            "[routing.breaker]\nopen_for = \"10m\"\n",
            "routing.breaker.max_open_for",
        ),
        ("[routing.breaker]\nbogus = 1\n", "routing.breaker.bogus"),
        ("[health]\nkey_recheck = \"0s\"\n", "health.key_recheck"),
    ] {
        let err = Config::from_toml_str(text, &|_| None).unwrap_err();
        assert_eq!(err.path, path, "{text}: {err}");
    }
}

#[test]
fn azure_needs_its_deployments_and_api_version_is_checked() {
    let text =
        "[[upstreams]]\nname = \"az\"\nkind = \"azure\"\nurl = \"https://x.openai.azure.com\"\n";
    let err = Config::from_toml_str(text, &|_| None).unwrap_err();
    assert_eq!(err.path, "upstreams[0].models");
    let ok = format!("{text}models = [\"gpt-4o\"]\napi_version = \"2024-10-21\"\n");
    let cfg = Config::from_toml_str(&ok, &|_| None).unwrap();
    assert_eq!(cfg.upstreams[0].kind, UpstreamKind::Azure);
    assert_eq!(cfg.upstreams[0].api_version.as_deref(), Some("2024-10-21"));
    let bad = format!("{text}models = [\"m\"]\napi_version = \"a&b\"\n");
    assert_eq!(
        Config::from_toml_str(&bad, &|_| None).unwrap_err().path,
        "upstreams[0].api_version"
    );
}

#[test]
fn alerts_section() {
    let cfg = Config::from_toml_str(
        "[alerts]\nwebhook_url = \"http://hooks.example/llmux\"\nerror_rate = 0.25\nwindow = \"1m\"\nmin_calls = 5\n",
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        cfg.alerts.webhook_url.as_deref(),
        Some("http://hooks.example/llmux")
    );
    assert_eq!(cfg.alerts.error_rate, 0.25);
    assert_eq!(cfg.alerts.window, Duration::from_secs(60));
    assert_eq!(cfg.alerts.min_calls, 5);
    assert_eq!(Config::default().alerts.webhook_url, None);
    for (text, path) in [
        (
            "[alerts]\nwebhook_url = \"ftp://x\"\n",
            "alerts.webhook_url",
        ),
        ("[alerts]\nerror_rate = 0\n", "alerts.error_rate"),
        ("[alerts]\nmin_calls = 0\n", "alerts.min_calls"),
    ] {
        assert_eq!(
            Config::from_toml_str(text, &|_| None).unwrap_err().path,
            path,
            "{text}"
        );
    }
}

#[test]
fn limits_section() {
    let cfg = Config::from_toml_str(
        "[limits]\nip = \"600/min\"\nglobal = \"2000/s\"\nbackend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nfail_open = false\ntrust_forwarded_for = true\n",
        &|_| None,
    )
    .unwrap();
    let l = &cfg.limits;
    assert_eq!(
        l.ip,
        Some(Rate {
            count: 600,
            per: Duration::from_secs(60)
        })
    );
    assert_eq!(
        l.global,
        Some(Rate {
            count: 2000,
            per: Duration::from_secs(1)
        })
    );
    assert_eq!(l.backend, LimitsBackend::Redis);
    assert_eq!(
        l.redis_url.as_ref().map(Secret::expose),
        Some("redis://127.0.0.1:6379")
    );
    assert!(!l.fail_open && l.trust_forwarded_for);
    // TLS: rediss:// is accepted as it is.
    let tls = Config::from_toml_str(
        "[limits]\nbackend = \"redis\"\nredis_url = \"rediss://u:p@redis.example:6380/1\"\n",
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        tls.limits.redis_url.as_ref().map(Secret::expose),
        Some("rediss://u:p@redis.example:6380/1")
    );
    let d = Config::default().limits;
    assert!(d.ip.is_none() && d.global.is_none() && d.fail_open);
    assert_eq!(d.backend, LimitsBackend::Memory);
    assert_eq!(
        "5/h".parse::<Rate>().unwrap().per,
        Duration::from_secs(3600)
    );
    for (text, path) in [
        ("[limits]\nip = \"ten/min\"\n", "limits.ip"),
        ("[limits]\nglobal = \"0/s\"\n", "limits.global"),
        ("[limits]\nip = \"5/day\"\n", "limits.ip"),
        ("[limits]\nbackend = \"memcached\"\n", "limits.backend"),
        ("[limits]\nbackend = \"redis\"\n", "limits.redis_url"),
        ("[limits]\nredis_url = \"http://x\"\n", "limits.redis_url"),
        (
            "[limits]\nredis_url = \"rediss://x:6380/#insecure\"\n",
            "limits.redis_url",
        ),
        ("[limits]\nburst = 3\n", "limits.burst"),
    ] {
        assert_eq!(
            Config::from_toml_str(text, &|_| None).unwrap_err().path,
            path,
            "{text}"
        );
    }
}

#[test]
fn pricing_and_logs_sections() {
    let c = Config::from_toml_str(
        "[[pricing]]\nmodel = \"gpt-4o\"\ninput_per_mtok = 2.0\noutput_per_mtok = 8\n\
         [[pricing]]\nmodel = \"my-local\"\ninput_per_mtok = 0\noutput_per_mtok = 0\n\
         [logs]\nbodies = true\nretention_days = 30\n",
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.pricing.len(), 2);
    assert_eq!(c.pricing[0].model, "gpt-4o");
    assert_eq!(c.pricing[0].output_per_mtok, 8.0);
    assert!(c.logs.bodies);
    assert_eq!(c.logs.retention_days, Some(30));
    let d = Config::default();
    assert!(d.pricing.is_empty() && !d.logs.bodies && d.logs.retention_days.is_none());
    for (text, path) in [
        ("[[pricing]]\nmodel = \"m\"\ninput_per_mtok = -1\noutput_per_mtok = 0\n", "pricing[0].input_per_mtok"),
        ("[[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1e308\n", "pricing[0].output_per_mtok"),
        ("[[pricing]]\nmodel = \"\"\ninput_per_mtok = 1\noutput_per_mtok = 0\n", "pricing[0].model"),
        (
            "[[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n[[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n",
            "pricing[1].model",
        ),
        ("[[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\n", "pricing[0].output_per_mtok"),
        ("[logs]\nretention_days = 0\n", "logs.retention_days"),
        ("[logs]\nkeep = 1\n", "logs.keep"),
    ] {
        assert_eq!(
            Config::from_toml_str(text, &|_| None).unwrap_err().path,
            path,
            "{text}"
        );
    }
}

#[test]
fn pricing_cache_prices_are_optional_and_validated() {
    let c = Config::from_toml_str(
        "[[pricing]]\nmodel = \"claude-sonnet-4\"\ninput_per_mtok = 3\noutput_per_mtok = 15\n\
         cached_input_per_mtok = 0.3\ncache_write_per_mtok = 3.75\n\
         [[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n",
        &|_| None,
    )
    .unwrap();
    assert_eq!(c.pricing[0].cached_input_per_mtok, Some(0.3));
    assert_eq!(c.pricing[0].cache_write_per_mtok, Some(3.75));
    assert_eq!(c.pricing[1].cached_input_per_mtok, None);
    for (key, path) in [
        (
            "cached_input_per_mtok = -0.1",
            "pricing[0].cached_input_per_mtok",
        ),
        (
            "cache_write_per_mtok = 1e308",
            "pricing[0].cache_write_per_mtok",
        ),
        ("cache_read_per_mtok = 1", "pricing[0].cache_read_per_mtok"),
    ] {
        let text =
            format!("[[pricing]]\nmodel = \"m\"\ninput_per_mtok = 1\noutput_per_mtok = 1\n{key}\n");
        let e = Config::from_toml_str(&text, &|_| None).unwrap_err();
        assert!(e.path.starts_with(path), "{text}: {e:?}");
    }
}

#[test]
fn telemetry_section() {
    let cfg = Config::from_toml_str(
        "[telemetry]\notlp_endpoint = \"http://otel:4318\"\nservice_name = \"gw\"\n",
        &|_| None,
    )
    .unwrap();
    assert_eq!(
        cfg.telemetry.otlp_endpoint.as_deref(),
        Some("http://otel:4318")
    );
    assert_eq!(cfg.telemetry.service_name, "gw");
    assert_eq!(Config::default().telemetry.otlp_endpoint, None);
    assert_eq!(Config::default().telemetry.service_name, "llmux");
    let err = Config::from_toml_str("[telemetry]\notlp_endpoint = \"otel:4318\"\n", &|_| None)
        .unwrap_err();
    assert_eq!(err.path, "telemetry.otlp_endpoint");
}

#[test]
fn trusted_proxies_and_connection_limits() {
    let cfg = Config::from_toml_str(
        "[server]\nheader_timeout = \"5s\"\nidle_timeout = \"2m\"\nmax_connections = 500\n[limits]\ntrust_forwarded_for = true\ntrusted_proxies = [\"10.0.0.0/8\", \"fd00::/8\", \"192.0.2.7\"]\n",
        &|_| None,
    )
    .unwrap();
    let s = &cfg.server;
    assert_eq!(
        (s.header_timeout, s.idle_timeout, s.max_connections),
        (secs(5), secs(120), 500)
    );
    let d = ServerConfig::default();
    assert_eq!(
        (d.header_timeout, d.idle_timeout, d.max_connections),
        (secs(10), secs(60), 10_000)
    );
    let p = &cfg.limits.trusted_proxies;
    let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
    assert!(p[0].contains(ip("10.200.3.4")) && !p[0].contains(ip("11.0.0.1")));
    assert!(p[0].contains(ip("::ffff:10.1.1.1")), "IPv4-mapped");
    assert!(p[1].contains(ip("fd12::1")) && !p[1].contains(ip("fe80::1")));
    assert!(p[2].contains(ip("192.0.2.7")) && !p[2].contains(ip("192.0.2.8")));
    assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
    for (text, path) in [
        (
            "[limits]\ntrusted_proxies = [\"10.0.0.0/33\"]\n",
            "limits.trusted_proxies",
        ),
        (
            "[limits]\ntrusted_proxies = [\"proxy.local\"]\n",
            "limits.trusted_proxies",
        ),
        (
            "[server]\nheader_timeout = \"0s\"\n",
            "server.header_timeout",
        ),
        ("[server]\nidle_timeout = \"0s\"\n", "server.idle_timeout"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
    ] {
        assert_eq!(
            Config::from_toml_str(text, &|_| None).unwrap_err().path,
            path,
            "{text}"
        );
    }
}

#[test]
fn cluster_mode_needs_postgres_and_redis() {
    let pg = "[store]\nurl = \"postgres://u@db/llmux\"\n";
    let redis = "[limits]\nredis_url = \"redis://127.0.0.1:6379\"\n";
    assert!(!parse("").unwrap().cluster_mode());
    assert!(!parse(pg).unwrap().cluster_mode());
    assert!(!parse(redis).unwrap().cluster_mode());
    let c = parse(&format!("{pg}{redis}")).unwrap();
    assert!(c.cluster_mode());
    assert_eq!(c.cluster.prefix, "llmux");
    assert_eq!(c.cluster.heartbeat, secs(2));
    assert_eq!(c.cluster.lease, secs(10));
    let off = parse(&format!("{pg}{redis}[cluster]\nenabled = false\n")).unwrap();
    assert!(!off.cluster_mode());
    let tuned = parse(&format!(
        "{pg}{redis}[cluster]\nprefix = \"prod-eu\"\nheartbeat = \"1s\"\nadvertise = \"10.0.0.7:4000\"\n"
    ))
    .unwrap();
    assert_eq!(tuned.cluster.prefix, "prod-eu");
    // The lease defaults to 10s, and to three heartbeats when that is longer.
    assert_eq!(tuned.cluster.lease, secs(10));
    assert_eq!(
        parse(&format!("{pg}{redis}[cluster]\nheartbeat = \"5s\"\n"))
            .unwrap()
            .cluster
            .lease,
        secs(15)
    );
    for (text, path) in [
        (
            format!("{redis}[cluster]\nenabled = true\n"),
            "cluster.enabled",
        ),
        (
            format!("{pg}[cluster]\nenabled = true\n"),
            "cluster.enabled",
        ),
        (
            "[cluster]\nprefix = \"a b\"\n".to_string(),
            "cluster.prefix",
        ),
        (
            "[cluster]\nheartbeat = \"10ms\"\n".to_string(),
            "cluster.heartbeat",
        ),
        (
            "[cluster]\nheartbeat = \"2s\"\nlease = \"3s\"\n".to_string(),
            "cluster.lease",
        ),
        ("[cluster]\nleader = true\n".to_string(), "cluster.leader"),
    ] {
        assert_eq!(fail(&text).0, path, "{text}");
    }
}

#[test]
fn cors_origins_compression_and_tls_keys() {
    let d = parse("").unwrap().server;
    assert!(d.compression && d.tls.is_none() && !d.cors.enabled());
    assert_eq!(d.cors.max_age, secs(600));
    let c = parse(
        "[server]\ncompression = false\n[server.cors]\nallowed_origins = [\"https://App.Example.com/\", \"http://localhost:5173\"]\nmax_age = \"2m\"\n",
    )
    .unwrap()
    .server;
    assert!(!c.compression);
    assert_eq!(
        c.cors.allowed_origins,
        ["https://app.example.com", "http://localhost:5173"]
    );
    assert!(c.cors.allows("https://app.example.com") && !c.cors.allows("https://example.com"));
    assert_eq!(c.cors.max_age, secs(120));
    let any = parse("[server.cors]\nallowed_origins = [\"*\"]\n")
        .unwrap()
        .server
        .cors;
    assert!(any.any_origin && any.allows("https://anything.example"));
    for (text, path, says) in [
        (
            "[server.cors]\nallowed_origins = [\"https://a.example/app\"]\n",
            "server.cors.allowed_origins[0]",
            "no path",
        ),
        (
            "[server.cors]\nallowed_origins = [\"https://a.example\", \"ftp://b\"]\n",
            "server.cors.allowed_origins[1]",
            "http:// or https://",
        ),
        (
            "[server.cors]\nallowed_origins = [\"https://a.example\", \"*\"]\n",
            "server.cors.allowed_origins[1]",
            "alone",
        ),
        (
            "[server.cors]\nmax_age = \"25h\"\n",
            "server.cors.max_age",
            "",
        ),
        ("[server.cors]\norigins = []\n", "server.cors.origins", ""),
        (
            "[server.tls]\ncert = \"cert.pem\"\n",
            "server.tls.key",
            "is required",
        ),
        (
            "[server.tls]\ncert = \"/nonexistent/llmux-cert.pem\"\nkey = \"k.pem\"\n",
            "server.tls.cert",
            "cannot read /nonexistent/llmux-cert.pem",
        ),
        (
            "[server.tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\nca = \"x\"\n",
            "server.tls.ca",
            "",
        ),
    ] {
        let (p, m) = fail(text);
        assert_eq!(p, path, "{text}");
        assert!(m.contains(says), "{text}: {m}");
    }
}

#[test]
fn catalog_rules_and_discovery_keys() {
    let d = parse("").unwrap();
    assert_eq!(d.catalog.normalize, crate::NormalizeRule::ALL.to_vec());
    assert_eq!(d.health.discovery_concurrency, 10);
    assert_eq!(d.health.min_discovery_interval, secs(1));
    let c = parse(
        "[catalog]\nnormalize = [\"case\"]\n[health]\ndiscovery_concurrency = 3\nmin_discovery_interval = \"90s\"\n",
    )
    .unwrap();
    assert_eq!(c.catalog.normalize, vec![crate::NormalizeRule::Case]);
    assert_eq!(c.health.discovery_concurrency, 3);
    assert_eq!(c.health.min_discovery_interval, secs(90));
    assert!(parse("[catalog]\nnormalize = []\n")
        .unwrap()
        .catalog
        .normalize
        .is_empty());
    for (text, path) in [
        (
            "[catalog]\nnormalize = [\"cases\"]\n",
            "catalog.normalize[0]",
        ),
        (
            "[health]\ndiscovery_concurrency = 0\n",
            "health.discovery_concurrency",
        ),
        (
            "[health]\nmin_discovery_interval = \"25h\"\n",
            "health.min_discovery_interval",
        ),
        ("[catalog]\nfoo = 1\n", "catalog"),
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(err.contains(path), "{text}: {err}");
    }
}

#[test]
fn max_tokens_field_defaults_by_kind_and_is_checked() {
    let up = |kind: &str, extra: &str| {
        format!("[[upstreams]]\nname = \"u\"\nkind = \"{kind}\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n{extra}")
    };
    let field = |text: String| parse(&text).map(|c| c.upstreams[0].max_tokens_field);
    assert_eq!(
        field(up("openai", "")).unwrap(),
        MaxTokensField::MaxCompletionTokens
    );
    assert_eq!(
        field(up("azure", "")).unwrap(),
        MaxTokensField::MaxCompletionTokens
    );
    assert_eq!(field(up("ollama", "")).unwrap(), MaxTokensField::MaxTokens);
    let legacy = "max_tokens_field = \"max_tokens\"\n";
    assert_eq!(
        field(up("openai", legacy)).unwrap(),
        MaxTokensField::MaxTokens
    );
    let modern = "max_tokens_field = \"max_completion_tokens\"\n";
    assert_eq!(
        field(up("ollama", modern)).unwrap(),
        MaxTokensField::MaxCompletionTokens
    );
    for (kind, extra) in [
        ("openai", "max_tokens_field = \"maxTokens\"\n"),
        ("anthropic", legacy),
        ("gemini", legacy),
    ] {
        let err = field(up(kind, extra)).unwrap_err();
        assert_eq!(err.path, "upstreams[0].max_tokens_field", "{kind}: {err}");
    }
}

#[test]
fn max_output_tokens_only_for_anthropic_and_in_range() {
    let up = |kind: &str, extra: &str| {
        format!("[[upstreams]]\nname = \"u\"\nkind = \"{kind}\"\nurl = \"http://127.0.0.1:1\"\nmodels = [\"m\"]\n{extra}")
    };
    let cfg = parse(&up(
        "anthropic",
        "max_output_tokens = { \"claude-x\" = 32000, m = 100 }\n",
    ))
    .unwrap();
    let table = &cfg.upstreams[0].max_output_tokens;
    assert_eq!(table.get("claude-x"), Some(&32000));
    assert_eq!(table.get("m"), Some(&100));
    assert!(parse(&up("anthropic", "")).unwrap().upstreams[0]
        .max_output_tokens
        .is_empty());
    for (kind, extra, path) in [
        (
            "openai",
            "max_output_tokens = { m = 5 }\n",
            "upstreams[0].max_output_tokens",
        ),
        (
            "anthropic",
            "max_output_tokens = { m = 0 }\n",
            "upstreams[0].max_output_tokens.m",
        ),
        (
            "anthropic",
            "max_output_tokens = { m = -3 }\n",
            "upstreams[0].max_output_tokens.m",
        ),
        (
            "anthropic",
            "max_output_tokens = { \" \" = 5 }\n",
            "upstreams[0].max_output_tokens.\" \"",
        ),
    ] {
        let err = parse(&up(kind, extra)).unwrap_err();
        assert_eq!(err.path, path, "{extra}: {err}");
    }
}

#[test]
fn hooks_parse_with_their_defaults_in_file_order() {
    let cfg = parse(
        r#"
[[hooks]]
name = "guard"
url = "http://10.0.0.9:9000/check"
models = ["gpt-4o"]

[[hooks]]
name = "cap"
set = { max_tokens = 512, temperature = 0.2 }
headers = { "X-Team" = "research" }
redact = ['\d{4}']
apps = ["app_1"]
keys = ["vk_1"]
"#,
    )
    .unwrap();
    assert_eq!(cfg.hooks.len(), 2, "{:?}", cfg.hooks);
    let (guard, cap) = (&cfg.hooks[0], &cfg.hooks[1]);
    assert_eq!((guard.name.as_str(), cap.name.as_str()), ("guard", "cap"));
    let ext = guard.external.as_ref().unwrap();
    assert_eq!((ext.timeout, ext.fail), (secs(2), HookFail::Closed));
    assert_eq!(guard.scope.models, ["gpt-4o"]);
    assert!(guard.reads_request());
    assert_eq!(
        (cap.set.max_tokens, cap.set.temperature),
        (Some(512), Some(0.2))
    );
    assert_eq!(
        cap.headers,
        [("x-team".to_string(), "research".to_string())]
    );
    assert_eq!((cap.scope.apps.len(), cap.scope.keys.len()), (1, 1));
    assert!(cap.external.is_none() && cap.reads_request());
    assert!(Config::default().hooks.is_empty());
}

#[test]
fn hook_errors_name_the_hook_and_the_key() {
    for (text, path, message) in [
        (
            "name = \"g\"\nurl = \"http://h\"\ntimeout = \"0s\"",
            "hooks[0].timeout",
            "greater than zero",
        ),
        (
            "name = \"g\"\nurl = \"http://h\"\ntimeout = \"2m\"",
            "hooks[0].timeout",
            "at most 60s",
        ),
        (
            "name = \"c\"\nset = { max_tokens = 0 }",
            "hooks[0].set.max_tokens",
            "at least 1",
        ),
        (
            "name = \"c\"\nset = { top_p = 1.5 }",
            "hooks[0].set.top_p",
            "from 0 to 1",
        ),
        (
            "name = \"c\"\ndeny = true\ntimeout = \"1s\"",
            "hooks[0].timeout",
            "only to an external hook",
        ),
        (
            "name = \"c\"\nheaders = { \"x-a\" = \"x\" }\nmessage = \"m\"",
            "hooks[0].message",
            "deny",
        ),
        (
            "name = \"c\"\ndeny = true\nmodels = [\"\"]",
            "hooks[0].models",
            "empty name",
        ),
        (
            "name = \"bad name\"\ndeny = true",
            "hooks[0].name",
            "invalid hook name",
        ),
        ("deny = true", "hooks[0].name", "is required"),
    ] {
        let (p, m) = fail(&format!("[[hooks]]\n{text}\n"));
        assert_eq!(p, path, "{text}: {m}");
        assert!(m.contains(message), "{text}: {m}");
    }
}

#[test]
fn cache_defaults_and_settings() {
    let c = parse("").unwrap().cache;
    assert_eq!(c, CacheConfig::default());
    assert!(!c.enabled && !c.covers("gpt-4o"));
    assert_eq!(
        (c.ttl, c.max_entries, c.backend),
        (secs(600), 10_000, CacheBackend::Memory)
    );
    let c = parse(
        "[limits]\nredis_url = \"redis://127.0.0.1:6379\"\n[cache]\nenabled = true\nttl = \"1m\"\nbackend = \"redis\"\nmax_entries = 5\nmax_entry_bytes = \"64KiB\"\nmodels = [\"gpt-4o\"]\ncoalesce = false\n",
    )
    .unwrap()
    .cache;
    assert_eq!(c.backend, CacheBackend::Redis);
    assert_eq!(
        (c.ttl, c.max_entries, c.max_entry_bytes),
        (secs(60), 5, 64 * 1024)
    );
    assert!(c.covers("gpt-4o") && !c.covers("gpt-4o-mini") && !c.coalesce);
    // A Redis backend without Redis is only an error once the cache is on.
    assert!(parse("[cache]\nbackend = \"redis\"\n").is_ok());
    let (key, message) = fail("[cache]\nenabled = true\nbackend = \"redis\"\n");
    assert_eq!(key, "cache.backend");
    assert!(message.contains("limits.redis_url"), "{message}");
}
