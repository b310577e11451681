//! HTTPS on the listener (`[server.tls]`): rustls with the `ring` provider, HTTP/2 and
//! HTTP/1.1 offered by ALPN. The certificate and key are re-read on SIGHUP and whenever either
//! file changes (mtime and length polled every second, as the config file is); a new pair is
//! used by the next handshake, open connections keep theirs. A pair that does not load (a file
//! half written, a key that does not go with the certificate) is logged and the old one kept.

use arc_swap::ArcSwap;
use llmux_config::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the certificate and key files are checked for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// (mtime, length) of the certificate and of the key.
type Fingerprint = [Option<(SystemTime, u64)>; 2];

/// The listener's TLS settings in force, swapped whole when the files change.
pub struct Tls {
    current: ArcSwap<rustls::ServerConfig>,
    /// The files last loaded (or tried) and what they looked like then.
    files: Mutex<(TlsConfig, Fingerprint)>,
}

impl Tls {
    /// Loads the certificate chain and key of `cfg`; the error names the file at fault.
    pub fn load(cfg: &TlsConfig) -> Result<Tls, String> {
        let print = fingerprint(cfg);
        let config = server_config(cfg)?;
        Ok(Tls {
            current: ArcSwap::from_pointee(config),
            files: Mutex::new((cfg.clone(), print)),
        })
    }

    /// What the next handshake uses.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Re-reads `cfg`'s files when they differ from the last ones loaded (or always, with
    /// `force`); on success the next handshake uses them. Returns whether anything was loaded.
    pub fn reload(&self, cfg: &TlsConfig, force: bool, why: &str) -> Result<bool, String> {
        let print = fingerprint(cfg);
        {
            let Ok(mut files) = self.files.lock() else {
                return Err("TLS state poisoned".into());
            };
            if !force && files.0 == *cfg && files.1 == print {
                return Ok(false);
            }
            // Remembered even when loading fails, so a broken file is reported once per change.
            *files = (cfg.clone(), print);
        }
        let config = server_config(cfg).inspect_err(|e| {
            tracing::warn!(trigger = why, error = %e, "TLS certificate not reloaded; still serving the previous one");
        })?;
        self.current.store(Arc::new(config));
        tracing::info!(trigger = why, cert = %cfg.cert.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// Watches the files `current` names (the live config's `[server.tls]`) until `cancel`:
    /// polls them every [`POLL_INTERVAL`] and re-reads them on SIGHUP.
    pub fn watch(
        self: &Arc<Self>,
        current: impl Fn() -> Option<TlsConfig> + Send + Sync + 'static,
        cancel: CancellationToken,
    ) {
        let tls = Arc::clone(self);
        tokio::spawn(async move {
            #[cfg(unix)]
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; TLS files are still polled"))
                .ok();
            let mut tick = tokio::time::interval(POLL_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut warned = false;
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<Option<()>>();
                let force = tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => false,
                    _ = hangup => true,
                };
                match current() {
                    Some(cfg) => {
                        let why = if force { "sighup" } else { "file-change" };
                        let _ = tls.reload(&cfg, force, why);
                    }
                    None if !warned => {
                        warned = true;
                        tracing::warn!("[server.tls] was removed from the config: HTTPS stays on until a restart");
                    }
                    None => {}
                }
            }
        });
    }
}

fn fingerprint(cfg: &TlsConfig) -> Fingerprint {
    let one = |p: &Path| {
        let meta = std::fs::metadata(p).ok()?;
        Some((meta.modified().ok()?, meta.len()))
    };
    [one(&cfg.cert), one(&cfg.key)]
}

/// A rustls server config for `cfg`'s files: ring, TLS 1.2 and 1.3, ALPN h2 then http/1.1.
pub fn server_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig, String> {
    let cert = cfg.cert.display();
    let key_file = cfg.key.display();
    let certs = CertificateDer::pem_file_iter(&cfg.cert)
        .map_err(|e| format!("server.tls.cert: cannot read {cert}: {e}"))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("server.tls.cert: {cert}: not a valid PEM certificate chain ({e})"))?;
    if certs.is_empty() {
        return Err(format!("server.tls.cert: {cert}: no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.key)
        .map_err(|e| format!("server.tls.key: {key_file}: no usable private key ({e})"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("server.tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "server.tls: the key in {key_file} does not go with the certificate in {cert}: {e}"
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
