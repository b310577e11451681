//! `llmux migrate` and `llmux secrets rotate`: store maintenance from the command line.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use llmux_store::{MasterKey, MasterKeys};

use crate::serve;

fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// Runs the migrations of the configured store and exits.
pub async fn migrate(config: Option<PathBuf>) -> Result<(), String> {
    let loaded = serve::load(config)?;
    let (store, _) = serve::open_store(&loaded.config).await?;
    store.close().await;
    say("migrations applied; the store is up to date\n");
    Ok(())
}

/// Generates a new master key, keeps the old ones for decryption (key file: current first),
/// and re-encrypts every provider key under the new one.
pub async fn rotate(config: Option<PathBuf>) -> Result<(), String> {
    let loaded = serve::load(config)?;
    let (store, old) = serve::open_store(&loaded.config).await?;
    let new_key = MasterKey::generate();
    let keys = std::iter::once(old.current().clone())
        .chain(old.previous().iter().cloned())
        .fold(MasterKeys::new(new_key.clone()), MasterKeys::with_previous);
    let from_env = MasterKeys::from_env().map_err(|e| e.to_string())?.is_some();
    let file = serve::master_key_file(&loaded.config.store.url);
    // The new key is saved before anything is encrypted with it: a crash in between leaves
    // ciphertexts that the saved keys still open.
    let where_ = match (&file, from_env) {
        (Some(path), false) => {
            write_key_file(path, &keys)?;
            format!(
                "saved in {} (new key first, previous keys kept for decryption)",
                path.display()
            )
        }
        _ => format!(
            "set {}=\"{}\" before the next start (the new key first, then the previous ones)",
            llmux_store::MASTER_KEY_ENV,
            std::iter::once(&new_key)
                .chain(std::iter::once(old.current()))
                .chain(old.previous())
                .map(MasterKey::to_base64)
                .collect::<Vec<_>>()
                .join(",")
        ),
    };
    let count = store.rotate_secrets(&keys).await.map_err(|e| {
        format!("re-encrypting the provider keys failed (nothing was changed): {e}")
    })?;
    store.close().await;
    say(&format!(
        "master key rotated: new key {} ({}), previous key {}\n\
         {}\n\
         re-encrypted {count} provider key(s). Restart llmux so that it uses the new key; \
         login tokens issued before the rotation stop working.\n",
        new_key.id(),
        "current",
        old.current().id(),
        where_,
    ));
    Ok(())
}

/// Replaces the key file atomically (write a 0600 temporary file beside it, then rename).
fn write_key_file(path: &Path, keys: &MasterKeys) -> Result<(), String> {
    let mut text = String::from(
        "# llmux master keys (base64 of 32 bytes), the current one first; the others only\n\
         # decrypt. Back this file up: without it the provider keys cannot be decrypted.\n",
    );
    for key in std::iter::once(keys.current()).chain(keys.previous()) {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))
}
