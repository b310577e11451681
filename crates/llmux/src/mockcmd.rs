//! `llmux mock`: a standalone mock upstream for trying llmux, tests and the benchmark.

use crate::cli::MockArgs;
use llmux_mock::{Faults, MockConfig};
use std::time::Duration;

pub async fn run(args: MockArgs) -> Result<(), String> {
    let cfg = config_from(&args)?;
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .map_err(|e| format!("cannot listen on {}:{}: {e}", args.host, args.port))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    eprintln!(
        "llmux mock '{}' listening on http://{addr} (models: {})",
        cfg.name,
        cfg.models.join(", ")
    );
    llmux_mock::serve(listener, cfg)
        .await
        .map_err(|e| format!("mock server failed: {e}"))
}

fn seconds(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .map_err(|_| format!("--{name} must be a non-negative number of seconds, got {v}"))
}

pub fn config_from(a: &MockArgs) -> Result<MockConfig, String> {
    if !(0.0..=1.0).contains(&a.fail_rate) {
        return Err(format!(
            "--fail-rate must be between 0 and 1, got {}",
            a.fail_rate
        ));
    }
    let models: Vec<String> = a.models.iter().filter(|m| !m.is_empty()).cloned().collect();
    if models.is_empty() {
        return Err("--models needs at least one model name".into());
    }
    Ok(MockConfig {
        name: a.name.clone(),
        models,
        loaded: a.loaded.iter().filter(|m| !m.is_empty()).cloned().collect(),
        ttft: seconds("ttft", a.ttft)?,
        chunk_delay: seconds("chunk-delay", a.chunk_delay)?,
        chunks: a.chunks,
        dims: a.dims.max(1),
        api_key: a.api_key.clone(),
        extra_keys: a.keys.clone(),
        revoked_keys: a.revoked_keys.clone(),
        limited_keys: a.limited_keys.clone(),
        strict_anthropic_version: false,
        registry: if a.registry.is_empty() {
            llmux_mock::DEFAULT_REGISTRY
                .iter()
                .map(|m| (*m).to_owned())
                .collect()
        } else {
            a.registry
                .iter()
                .filter(|m| !m.is_empty())
                .cloned()
                .collect()
        },
        pull_step: seconds("pull-step", a.pull_step)?,
        faults: Faults {
            fail_rate: a.fail_rate,
            fail_status: a.fail_status,
            retry_after: a.retry_after,
            drop_after: a.drop_after,
            hang: a.hang,
            stall_after: a.stall_after,
            truncate_after: a.truncate_after,
        },
    })
}
