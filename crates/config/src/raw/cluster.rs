//! `[cluster]`: how instances sharing one PostgreSQL store and one Redis behave as one gateway.

use std::time::Duration;

use serde::Deserialize;

use super::de::Dur;
use crate::error::ConfigError;
use crate::ClusterConfig;

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCluster {
    enabled: Option<bool>,
    prefix: Option<String>,
    advertise: Option<String>,
    heartbeat: Option<Dur>,
    lease: Option<Dur>,
}

impl RawCluster {
    pub(super) fn into_config(self) -> Result<ClusterConfig, ConfigError> {
        let default = ClusterConfig::default();
        let prefix = match self.prefix {
            None => default.prefix,
            Some(p)
                if !p.is_empty()
                    && p.len() <= 40
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
            {
                p
            }
            Some(p) => {
                return Err(ConfigError::new(
                    "cluster.prefix",
                    format!("{p:?}: use 1 to 40 letters, digits, '_' or '-'"),
                ))
            }
        };
        let heartbeat = match self.heartbeat {
            None => default.heartbeat,
            Some(Dur(d)) if d >= Duration::from_millis(100) && d <= Duration::from_secs(60) => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "cluster.heartbeat",
                    format!("must be between 100ms and 60s (got {d:?})"),
                ))
            }
        };
        let lease = match self.lease {
            None => default.lease.max(heartbeat * 3),
            Some(Dur(d)) if d >= heartbeat * 3 => d,
            Some(Dur(d)) => {
                return Err(ConfigError::new(
                    "cluster.lease",
                    format!(
                        "must be at least three heartbeats ({:?}; got {d:?})",
                        heartbeat * 3
                    ),
                ))
            }
        };
        Ok(ClusterConfig {
            enabled: self.enabled,
            prefix,
            advertise: self.advertise.filter(|a| !a.trim().is_empty()),
            heartbeat,
            lease,
        })
    }
}
