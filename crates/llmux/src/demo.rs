//! `llmux demo`: the real gateway in front of two mock Ollama nodes and a mock OpenAI provider, in one process.

use llmux_config::Config;
use llmux_mock::{MockConfig, MockServer};
use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

const ADMIN_TOKEN: &str = "demo-admin-token";
const PROVIDER_KEY: &str = "sk-demo-provider-key";
/// The demo's console login (its store is in memory and dies with it).
const DEMO_USER: (&str, &str) = ("demo", "demo");

/// The demo's mock upstreams: two Ollama nodes and an OpenAI-compatible provider.
struct Mocks {
    gpu_a: MockServer,
    gpu_b: MockServer,
    openai: MockServer,
}

async fn start_mocks() -> Result<Mocks, String> {
    // Slow enough to watch tokens arrive one by one, fast enough not to bore.
    let pace = |name: &str, models: &[&str], loaded: &[&str]| MockConfig {
        name: name.to_string(),
        models: models.iter().map(|m| m.to_string()).collect(),
        loaded: loaded.iter().map(|m| m.to_string()).collect(),
        ttft: Duration::from_millis(150),
        chunk_delay: Duration::from_millis(60),
        chunks: 12,
        ..MockConfig::default()
    };
    let start = |cfg: MockConfig| async move {
        let name = cfg.name.clone();
        MockServer::start(cfg)
            .await
            .map_err(|e| format!("cannot start mock upstream {name}: {e}"))
    };
    let gpu_a = start(pace(
        "gpu-a",
        &["llama3:latest", "qwen2.5:0.5b", "nomic-embed-text:latest"],
        &["llama3:latest"],
    ))
    .await?;
    let gpu_b = start(pace(
        "gpu-b",
        &["llama3:latest", "mistral:latest", "nomic-embed-text:latest"],
        &[],
    ))
    .await?;
    let mut openai_cfg = pace(
        "openai",
        &["gpt-4o", "gpt-4o-mini", "text-embedding-3-small"],
        &[],
    );
    openai_cfg.api_key = Some(PROVIDER_KEY.to_string());
    let openai = start(openai_cfg).await?;
    Ok(Mocks {
        gpu_a,
        gpu_b,
        openai,
    })
}

/// The demo's config file: the gateway on `listen` in front of `mocks`, its store in memory.
fn demo_toml(listen: SocketAddr, mocks: &Mocks) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[admin]
token = "{ADMIN_TOKEN}"
# The demo's mock upstreams live on 127.0.0.1: let the admin API add more there.
allow_private_upstreams = true

# Nothing of the demo outlives it.
[store]
url = "sqlite::memory:"

[health]
interval = "5s"
timeout = "2s"

[[upstreams]]
name = "gpu-a"
kind = "ollama"
url = "{a}"

[[upstreams]]
name = "gpu-b"
kind = "ollama"
url = "{b}"

[[upstreams]]
name = "openai"
kind = "openai"
url = "{o}/v1"
keys = ["{PROVIDER_KEY}"]
"#,
        a = mocks.gpu_a.url(),
        b = mocks.gpu_b.url(),
        o = mocks.openai.url(),
    )
}

pub async fn run(listen: SocketAddr) -> Result<(), String> {
    let mocks = start_mocks().await?;
    let toml = demo_toml(listen, &mocks);
    let config =
        Config::from_toml_str(&toml, &|_| None).map_err(|e| format!("demo config: {e}"))?;
    let (store, keys) = crate::serve::open_store(&config).await?;
    store
        .create_user(
            DEMO_USER.0,
            &llmux_config::Secret::new(DEMO_USER.1.to_string()),
            llmux_store::Role::Admin,
        )
        .await
        .map_err(|e| format!("demo user: {e}"))?;
    let loaded = crate::serve::Loaded {
        path: None,
        text: Some(toml.clone()),
        config,
    };
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} (try `llmux demo --listen 127.0.0.1:4001`)")
    })?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    let _ = std::io::stdout().lock().write_all(banner(addr).as_bytes());
    let result = crate::serve::run_gateway(
        loaded,
        store,
        keys,
        listener,
        crate::serve::shutdown_signal(),
    )
    .await;
    drop(mocks);
    result
}

fn banner(addr: SocketAddr) -> String {
    format!(
        r#"
llmux demo: the gateway on http://{addr}, in front of
  gpu-a   mock Ollama node   llama3:latest, qwen2.5:0.5b, nomic-embed-text
  gpu-b   mock Ollama node   llama3:latest, mistral:latest, nomic-embed-text
  openai  mock OpenAI API    gpt-4o, gpt-4o-mini, text-embedding-3-small

Web console: http://{addr}/ui/   (sign in as {user} / {password})

Try:
  curl -N http://{addr}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"llama3","stream":true,"messages":[{{"role":"user","content":"hi"}}]}}'
  curl http://{addr}/api/chat -H 'content-type: application/json' \
    -d '{{"model":"mistral","messages":[{{"role":"user","content":"hi"}}]}}'
  curl http://{addr}/v1/models
  curl -H 'authorization: Bearer {ADMIN_TOKEN}' http://{addr}/admin/v1/upstreams
  curl -H 'authorization: Bearer {ADMIN_TOKEN}' http://{addr}/admin/v1/apps -d '{{"name":"demo"}}'
  curl -H 'authorization: Bearer {ADMIN_TOKEN}' http://{addr}/admin/v1/keys \
    -d '{{"name":"k1","app":"demo","models":["llama3"]}}'      # → a virtual key, shown once
  curl http://{addr}/admin/v1/openapi.json                     # the admin API, described

  OpenAI SDK:  OpenAI(base_url="http://{addr}/v1", api_key="unused")
  Ollama CLI:  OLLAMA_HOST=http://{addr} ollama run llama3
  Ollama SDK:  ollama.Client(host="http://{addr}")

Ctrl-C stops it.
"#,
        user = DEMO_USER.0,
        password = DEMO_USER.1,
    )
}
