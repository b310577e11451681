//! `[routing]` (strategy, fallbacks, retries, cooldowns, the breaker) and `[health]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::de::Dur;
use super::positive;
use crate::error::{join_index, join_key, ConfigError};
use crate::{BreakerConfig, HealthConfig, RoutingConfig, Strategy};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawRouting {
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
pub(super) struct RawHealth {
    interval: Option<Dur>,
    timeout: Option<Dur>,
    key_recheck: Option<Dur>,
    discovery_concurrency: Option<i64>,
    min_discovery_interval: Option<Dur>,
}

/// A fraction from 0 to 1, or `default` when absent.
fn fraction(path: &str, v: Option<f64>, default: f64) -> Result<f64, ConfigError> {
    match v {
        None => Ok(default),
        Some(f) if (0.0..=1.0).contains(&f) => Ok(f),
        Some(f) => Err(ConfigError::new(
            path,
            format!("must be between 0 and 1 (got {f})"),
        )),
    }
}

/// A count of at least 1, or `default` when absent.
fn count(path: &str, v: Option<i64>, default: u32) -> Result<u32, ConfigError> {
    match v {
        None => Ok(default),
        Some(n) => u32::try_from(n)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| ConfigError::new(path, format!("must be at least 1 (got {n})"))),
    }
}

/// A duration above zero, or `default` when absent.
fn dur(path: &str, v: Option<Dur>, default: Duration) -> Result<Duration, ConfigError> {
    match v {
        None => Ok(default),
        Some(Dur(d)) => positive(path, d),
    }
}

/// Every fallback list names at least one model, and no name is empty.
fn check_fallbacks(fallbacks: &BTreeMap<String, Vec<String>>) -> Result<(), ConfigError> {
    for (model, targets) in fallbacks {
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
    Ok(())
}

impl RawRouting {
    pub(super) fn into_config(self) -> Result<RoutingConfig, ConfigError> {
        let default = RoutingConfig::default();
        let strategy = match self.strategy {
            None => default.strategy,
            Some(s) => s
                .parse::<Strategy>()
                .map_err(|e| ConfigError::new("routing.strategy", e))?,
        };
        check_fallbacks(&self.fallbacks)?;
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
        let breaker = self.breaker.into_config(default.breaker)?;
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

impl RawBreaker {
    fn into_config(self, db: BreakerConfig) -> Result<BreakerConfig, ConfigError> {
        let breaker = BreakerConfig {
            consecutive_failures: count(
                "routing.breaker.consecutive_failures",
                self.consecutive_failures,
                db.consecutive_failures,
            )?,
            failure_rate: fraction(
                "routing.breaker.failure_rate",
                self.failure_rate,
                db.failure_rate,
            )?,
            min_calls: count("routing.breaker.min_calls", self.min_calls, db.min_calls)?,
            window: dur("routing.breaker.window", self.window, db.window)?,
            open_for: dur("routing.breaker.open_for", self.open_for, db.open_for)?,
            max_open_for: dur(
                "routing.breaker.max_open_for",
                self.max_open_for,
                db.max_open_for,
            )?,
        };
        if breaker.max_open_for < breaker.open_for {
            return Err(ConfigError::new(
                "routing.breaker.max_open_for",
                "must not be shorter than routing.breaker.open_for",
            ));
        }
        Ok(breaker)
    }
}

impl RawHealth {
    pub(super) fn into_config(self) -> Result<HealthConfig, ConfigError> {
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
        let discovery_concurrency = count(
            "health.discovery_concurrency",
            self.discovery_concurrency,
            default.discovery_concurrency,
        )?;
        // Zero: no minimum (every round lists every upstream). Longer than `interval`: an
        // active upstream is listed only every few rounds.
        let min_discovery_interval = match self.min_discovery_interval {
            None => default.min_discovery_interval,
            Some(Dur(d)) if d <= Duration::from_secs(24 * 3600) => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "health.min_discovery_interval",
                    format!("must be at most 24h (got {d:?})"),
                ))
            }
        };
        Ok(HealthConfig {
            interval,
            timeout,
            key_recheck,
            discovery_concurrency,
            min_discovery_interval,
        })
    }
}
