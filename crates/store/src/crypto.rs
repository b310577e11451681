//! Encryption at rest: `MasterKeys` and XChaCha20-Poly1305 sealing as `v1:<key id>:<base64>`.

use std::fmt;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest as _, Sha256};

use crate::ids::random_bytes;
use crate::StoreError;

/// The environment variable that holds the master key(s): base64 or hex of 32 bytes; several
/// keys separated by commas or whitespace, the first being current and the others previous
/// keys kept for decryption during a rotation.
pub const MASTER_KEY_ENV: &str = "LLMUX_MASTER_KEY";

/// Version tag of the sealed-secret text format.
const FORMAT_V1: &str = "v1";
/// XChaCha20-Poly1305: 192-bit nonces, so random nonces never realistically collide (unlike
/// AES-GCM's 96 bits), which is why it was picked.
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// One 256-bit master key and its id (first 8 hex chars of the SHA-256 of the key).
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    bytes: [u8; 32],
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        let id = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        Self { id, bytes }
    }

    /// A fresh random key.
    pub fn generate() -> Self {
        Self::from_bytes(random_bytes::<32>())
    }

    /// Parses 32 bytes written as 64 hex digits or as base64 (standard or url-safe alphabet,
    /// with or without padding).
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            decode_hex(text)
        } else {
            [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
                .iter()
                .find_map(|engine| engine.decode(text).ok())
        };
        let bytes = bytes.ok_or_else(|| {
            StoreError::MasterKey("not base64 or hex (expected 32 bytes)".to_owned())
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            StoreError::MasterKey(format!("expected 32 bytes, got {}", b.len()))
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// The key id that prefixes every ciphertext sealed with this key.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The key as standard base64 (the key file format).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&self.bytes.into())
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// The master keys: the current one (encrypts) and previous ones (still decrypt, until
/// [`crate::Store::rotate_secrets`] has re-encrypted everything under the current key).
#[derive(Debug, Clone)]
pub struct MasterKeys {
    current: MasterKey,
    previous: Vec<MasterKey>,
}

impl MasterKeys {
    /// Only `current`.
    pub fn new(current: MasterKey) -> Self {
        Self {
            current,
            previous: Vec::new(),
        }
    }

    /// Adds an older key that can still decrypt.
    pub fn with_previous(mut self, key: MasterKey) -> Self {
        if key.id != self.current.id && !self.previous.iter().any(|k| k.id == key.id) {
            self.previous.push(key);
        }
        self
    }

    /// The key that encrypts.
    pub fn current(&self) -> &MasterKey {
        &self.current
    }

    /// The older keys, decryption only.
    pub fn previous(&self) -> &[MasterKey] {
        &self.previous
    }

    /// Parses one or more keys separated by whitespace, commas or newlines; `#` starts a
    /// comment that runs to the end of the line. The first key is the current one.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let mut keys = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or(""))
            .flat_map(|line| line.split(|c: char| c == ',' || c.is_whitespace()))
            .filter(|word| !word.is_empty())
            .map(MasterKey::parse);
        let current = keys
            .next()
            .ok_or_else(|| StoreError::MasterKey("no key found".to_owned()))??;
        keys.try_fold(Self::new(current), |acc, key| Ok(acc.with_previous(key?)))
    }

    /// The keys from `LLMUX_MASTER_KEY`, `None` when it is unset or empty.
    pub fn from_env() -> Result<Option<Self>, StoreError> {
        match std::env::var(MASTER_KEY_ENV) {
            Ok(value) if !value.trim().is_empty() => Self::parse(&value)
                .map(Some)
                .map_err(|e| StoreError::MasterKey(format!("{MASTER_KEY_ENV}: {e}"))),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(StoreError::MasterKey(format!(
                "{MASTER_KEY_ENV} is not valid UTF-8"
            ))),
        }
    }

    /// Reads a key file (format of [`MasterKeys::parse`]).
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let text = std::fs::read_to_string(path)?;
        Self::parse(&text).map_err(|e| StoreError::MasterKey(format!("{}: {e}", path.display())))
    }

    /// Reads the key file, or creates it (mode 0600, parent directories as needed) with a new
    /// random key when it does not exist. Returns `true` when the file was created, so the
    /// caller can log where the key lives (and that it must be backed up).
    pub fn load_or_create(path: &Path) -> Result<(Self, bool), StoreError> {
        match Self::load(path) {
            Ok(keys) => return Ok((keys, false)),
            Err(StoreError::Io(err)) if err.kind() == ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(parent)?;
            }
        }
        let key = MasterKey::generate();
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(file) => file,
            // Another process created it in the meantime: use theirs.
            Err(err) if err.kind() == ErrorKind::AlreadyExists => {
                return Ok((Self::load(path)?, false))
            }
            Err(err) => return Err(err.into()),
        };
        let content = format!(
            "# llmux master key (base64 of 32 bytes). Encrypts the provider keys in the database:\n\
             # back it up; without it they cannot be decrypted. For a rotation put the new key\n\
             # on the first line and keep the old one below until `rotate` has run.\n{}\n",
            key.to_base64()
        );
        file.write_all(content.as_bytes())?;
        file.sync_all()?;
        Ok((Self::new(key), true))
    }

    fn key(&self, id: &str) -> Option<&MasterKey> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// Seals `plaintext` under the current key with a random nonce; `aad` (the row's
    /// identity) must be given again to decrypt. Output: `v1:<key id>:<base64(nonce||ct)>`.
    pub fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<String, StoreError> {
        let nonce = random_bytes::<NONCE_LEN>();
        let sealed = self
            .current
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| StoreError::Invalid("encryption failed".to_owned()))?;
        let mut blob = Vec::with_capacity(NONCE_LEN + sealed.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&sealed);
        Ok(format!(
            "{FORMAT_V1}:{}:{}",
            self.current.id,
            STANDARD.encode(blob)
        ))
    }

    /// Opens text made by [`MasterKeys::encrypt`] with whichever known key its id names.
    pub fn decrypt(&self, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(version), Some(key_id), Some(data)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(StoreError::Decrypt("malformed ciphertext".to_owned()));
        };
        if version != FORMAT_V1 {
            return Err(StoreError::Decrypt(format!(
                "unknown ciphertext version {version:?}"
            )));
        }
        let key = self
            .key(key_id)
            .ok_or_else(|| StoreError::Decrypt(format!("unknown master key id {key_id:?}")))?;
        let blob = STANDARD
            .decode(data)
            .map_err(|_| StoreError::Decrypt("malformed ciphertext".to_owned()))?;
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Decrypt("ciphertext too short".to_owned()));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| StoreError::Decrypt("malformed nonce".to_owned()))?;
        key.cipher()
            .decrypt(&nonce, Payload { msg: sealed, aad })
            .map_err(|_| {
                StoreError::Decrypt(
                    "authentication failed (wrong key, or the ciphertext was altered or moved)"
                        .to_owned(),
                )
            })
    }
}

/// The key id in a sealed secret (`v1:<key id>:…`), without decrypting.
pub fn sealed_key_id(sealed: &str) -> Option<&str> {
    sealed.split(':').nth(1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn key_ids_and_parsing() {
        let key = MasterKey::from_bytes([7u8; 32]);
        assert_eq!(key.id().len(), 8);
        let hex: String = [7u8; 32].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(MasterKey::parse(&hex).unwrap().id(), key.id());
        assert_eq!(MasterKey::parse(&key.to_base64()).unwrap().id(), key.id());
        assert!(MasterKey::parse("dG9vIHNob3J0").is_err());
        assert!(!format!("{key:?}").contains(&key.to_base64()));
    }

    #[test]
    fn parse_several_keys_first_is_current() {
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let keys = MasterKeys::parse(&format!(
            "# comment\n{} # new\n{}\n",
            a.to_base64(),
            b.to_base64()
        ))
        .unwrap();
        assert_eq!(keys.current().id(), a.id());
        assert_eq!(keys.previous()[0].id(), b.id());
        assert!(MasterKeys::parse("# nothing\n").is_err());
    }

    #[test]
    fn keys_from_the_environment() {
        // The only test in this binary that touches the variable.
        let a = MasterKey::generate();
        let b = MasterKey::generate();
        let hex: String = b.bytes.iter().map(|x| format!("{x:02x}")).collect();
        std::env::set_var(MASTER_KEY_ENV, format!("{},{hex}", a.to_base64()));
        let keys = MasterKeys::from_env().unwrap().unwrap();
        assert_eq!(keys.current().id(), a.id());
        assert_eq!(keys.previous()[0].id(), b.id());
        std::env::set_var(MASTER_KEY_ENV, "zzz");
        assert!(matches!(
            MasterKeys::from_env(),
            Err(StoreError::MasterKey(m)) if m.contains(MASTER_KEY_ENV)
        ));
        std::env::remove_var(MASTER_KEY_ENV);
        assert!(MasterKeys::from_env().unwrap().is_none());
    }

    #[test]
    fn seal_and_open() {
        let keys = MasterKeys::new(MasterKey::generate());
        let sealed = keys.encrypt(b"hello", b"row-1").unwrap();
        assert!(sealed.starts_with(&format!("v1:{}:", keys.current().id())));
        assert_eq!(sealed_key_id(&sealed), Some(keys.current().id()));
        assert_eq!(keys.decrypt(&sealed, b"row-1").unwrap(), b"hello");
        assert!(keys.decrypt(&sealed, b"row-2").is_err());
        assert_ne!(sealed, keys.encrypt(b"hello", b"row-1").unwrap());
        let other = MasterKeys::new(MasterKey::generate());
        assert!(matches!(
            other.decrypt(&sealed, b"row-1"),
            Err(StoreError::Decrypt(_))
        ));
        let rotated = MasterKeys::new(MasterKey::generate()).with_previous(keys.current().clone());
        assert_eq!(rotated.decrypt(&sealed, b"row-1").unwrap(), b"hello");
    }
}
