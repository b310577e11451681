//! `[translation]`: what llmux does itself when it translates a call — fetching images given by
//! URL for upstreams that take only inline bytes (docs/compatibility.md).

use std::time::Duration;

use serde::Deserialize;

use super::de::{Dur, Size};
use crate::error::ConfigError;
use crate::TranslationConfig;

/// No image fetch may wait longer than this, whatever the config says.
const MAX_FETCH_TIMEOUT: Duration = Duration::from_secs(300);
/// Images fetched for one request at most, whatever the config says.
const MAX_FETCH_COUNT: i64 = 64;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTranslation {
    image_fetch_max: Option<Size>,
    image_fetch_timeout: Option<Dur>,
    image_fetch_max_count: Option<i64>,
}

impl RawTranslation {
    pub(super) fn into_config(self) -> Result<TranslationConfig, ConfigError> {
        let default = TranslationConfig::default();
        let image_fetch_max = match self.image_fetch_max {
            None => default.image_fetch_max,
            Some(Size(0)) => {
                return Err(ConfigError::new(
                    "translation.image_fetch_max",
                    "must be greater than zero",
                ))
            }
            Some(Size(n)) => n,
        };
        let image_fetch_timeout = match self.image_fetch_timeout {
            None => default.image_fetch_timeout,
            Some(Dur(d)) if !d.is_zero() && d <= MAX_FETCH_TIMEOUT => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "translation.image_fetch_timeout",
                    format!("must be above 0 and at most 5m (got {d:?})"),
                ))
            }
        };
        let image_fetch_max_count = match self.image_fetch_max_count {
            None => default.image_fetch_max_count,
            Some(n) if (0..=MAX_FETCH_COUNT).contains(&n) => n as usize,
            Some(n) => {
                return Err(ConfigError::new(
                    "translation.image_fetch_max_count",
                    format!("must be 0 (never fetch) to {MAX_FETCH_COUNT} (got {n})"),
                ))
            }
        };
        Ok(TranslationConfig {
            image_fetch_max,
            image_fetch_timeout,
            image_fetch_max_count,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::Config;

    fn parse(toml: &str) -> Result<Config, String> {
        Config::from_toml_str(toml, &|_| None).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_values_and_errors() {
        let c = parse("").unwrap().translation;
        assert_eq!(c.image_fetch_max, 20 << 20);
        assert_eq!(c.image_fetch_timeout.as_secs(), 10);
        assert_eq!(c.image_fetch_max_count, 8);
        let c = parse(
            "[translation]\nimage_fetch_max = \"1MiB\"\nimage_fetch_timeout = \"2s\"\nimage_fetch_max_count = 0\n",
        )
        .unwrap()
        .translation;
        assert_eq!(
            (
                c.image_fetch_max,
                c.image_fetch_timeout.as_secs(),
                c.image_fetch_max_count
            ),
            (1 << 20, 2, 0)
        );
        for (bad, key) in [
            ("image_fetch_max = 0", "translation.image_fetch_max"),
            (
                "image_fetch_timeout = \"10m\"",
                "translation.image_fetch_timeout",
            ),
            (
                "image_fetch_max_count = 65",
                "translation.image_fetch_max_count",
            ),
            (
                "image_fetch_max_count = -1",
                "translation.image_fetch_max_count",
            ),
            ("image_fetch = 1", "translation.image_fetch"),
        ] {
            let err = parse(&format!("[translation]\n{bad}\n")).unwrap_err();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }
}
