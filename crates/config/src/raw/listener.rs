//! `[server.tls]` and `[server.cors]`: the listener's TLS files (read and checked here, so a
//! missing or broken file is an error of `llmux config check` naming the file and the key) and
//! the origins a browser may call from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::de::Dur;
use crate::error::ConfigError;
use crate::{CorsConfig, TlsConfig};

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawTls {
    cert: Option<String>,
    key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields, expecting = "a table")]
pub(super) struct RawCors {
    allowed_origins: Option<Vec<String>>,
    max_age: Option<Dur>,
}

impl RawTls {
    pub(super) fn into_config(self) -> Result<TlsConfig, ConfigError> {
        let file = |key: &str, v: Option<String>| -> Result<PathBuf, ConfigError> {
            match v.filter(|s| !s.trim().is_empty()) {
                Some(p) => Ok(PathBuf::from(p)),
                None => Err(ConfigError::new(
                    format!("server.tls.{key}"),
                    "is required with [server.tls] (a PEM file path)",
                )),
            }
        };
        let cert = file("cert", self.cert)?;
        let key = file("key", self.key)?;
        check_cert(&cert)?;
        check_key(&key)?;
        Ok(TlsConfig { cert, key })
    }
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| {
        ConfigError::new(
            format!("server.tls.{key}"),
            format!("cannot read {}: {e}", path.display()),
        )
    })
}

/// The certificate file holds at least one PEM certificate, and nothing unreadable.
fn check_cert(path: &Path) -> Result<(), ConfigError> {
    let bytes = read("cert", path)?;
    let bad =
        |why: String| ConfigError::new("server.tls.cert", format!("{}: {why}", path.display()));
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        cert.map_err(|e| bad(format!("not a valid PEM certificate chain ({e})")))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad(
            "no certificate found (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(())
}

/// The key file holds a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn check_key(path: &Path) -> Result<(), ConfigError> {
    let bytes = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(
                "server.tls.key",
                format!(
                    "{}: no usable private key ({e}; expected PEM: -----BEGIN PRIVATE KEY-----, \
                 RSA PRIVATE KEY or EC PRIVATE KEY)",
                    path.display()
                ),
            )
        })
}

impl RawCors {
    pub(super) fn into_config(self) -> Result<CorsConfig, ConfigError> {
        let default = CorsConfig::default();
        let raw = self.allowed_origins.unwrap_or_default();
        let mut origins = Vec::with_capacity(raw.len());
        let mut any = false;
        for (i, o) in raw.iter().enumerate() {
            let path = format!("server.cors.allowed_origins[{i}]");
            if o.trim() == "*" {
                if raw.len() > 1 {
                    return Err(ConfigError::new(
                        path,
                        "\"*\" allows every origin: list it alone, or list origins instead",
                    ));
                }
                any = true;
                continue;
            }
            let origin = origin(o).map_err(|why| ConfigError::new(path, why))?;
            if !origins.contains(&origin) {
                origins.push(origin);
            }
        }
        let max_age = match self.max_age {
            None => default.max_age,
            Some(Dur(d)) if d > Duration::from_secs(86_400) => {
                return Err(ConfigError::new(
                    "server.cors.max_age",
                    format!("must be at most 24h (got {d:?})"),
                ))
            }
            Some(Dur(d)) => d,
        };
        Ok(CorsConfig {
            allowed_origins: origins,
            any_origin: any,
            max_age,
        })
    }
}

/// An origin as browsers send it in `Origin`: `scheme://host[:port]`, lower case, no path.
fn origin(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text.trim()).map_err(|e| {
        format!("invalid origin {text:?}: {e} (use e.g. \"https://app.example.com\")")
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "invalid origin {text:?}: expected http:// or https:// and a host"
        ));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "invalid origin {text:?}: an origin has no path, query or fragment"
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("invalid origin {text:?}: an origin has no user"));
    }
    Ok(url.origin().ascii_serialization())
}
