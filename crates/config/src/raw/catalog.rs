//! `[catalog]`: which name normalisation rules apply (docs/catalog.md).

use serde::Deserialize;

use crate::error::{join_index, ConfigError};
use crate::{CatalogConfig, NormalizeRule};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCatalog {
    normalize: Option<Vec<String>>,
}

impl RawCatalog {
    pub(super) fn into_config(self) -> Result<CatalogConfig, ConfigError> {
        let Some(names) = self.normalize else {
            return Ok(CatalogConfig::default());
        };
        let mut normalize = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let rule = NormalizeRule::ALL
                .into_iter()
                .find(|r| r.as_str() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = NormalizeRule::ALL.iter().map(|r| r.as_str()).collect();
                    ConfigError::new(
                        join_index("catalog.normalize", i),
                        format!(
                            "unknown rule {name:?}: use some of {} (Ollama's `:latest` rule always applies)",
                            known.join(", ")
                        ),
                    )
                })?;
            if !normalize.contains(&rule) {
                normalize.push(rule);
            }
        }
        Ok(CatalogConfig { normalize })
    }
}
