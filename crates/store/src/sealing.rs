//! Sealing under a passphrase (backups, exported provider keys): argon2id derives a 256-bit
//! key from the passphrase and a random salt, XChaCha20-Poly1305 seals. The KDF parameters and
//! the salt travel with the sealed data ([`KdfParams`]), so a later llmux with other defaults
//! still opens it; bounds on them keep a crafted file from asking for gigabytes of memory.
//!
//! An archive ([`seal_archive`]) is `LLMUXBAK` (8 bytes), a format byte (1), the header length
//! (u32, big-endian), the header (JSON: format, KDF, cipher), then `nonce (24) || ciphertext`
//! of the payload with the magic, format byte, length and header as associated data: a changed
//! header, payload or passphrase all fail the same authentication check.

use argon2::{Algorithm, Argon2, Params, Version};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead as _, KeyInit as _, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::ids::random_bytes;
use crate::StoreError;

const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
/// Memory cost of new derivations, KiB (64 MiB).
const M_KIB: u32 = 64 * 1024;
/// Passes of new derivations.
const T_COST: u32 = 3;
/// The most a sealed file may ask for (1 GiB, 16 passes): more is refused, not attempted.
const MAX_M_KIB: u32 = 1024 * 1024;
const MAX_T_COST: u32 = 16;
const MAGIC: &[u8; 8] = b"LLMUXBAK";
const ARCHIVE_FORMAT: u8 = 1;

/// How the key was derived from the passphrase: recorded beside what it sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Always `argon2id`.
    pub alg: String,
    /// Memory, KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// Random salt (16 bytes), base64.
    pub salt: String,
}

impl KdfParams {
    /// Parameters for a new seal: argon2id, 64 MiB, 3 passes, 1 lane, a fresh 16-byte salt.
    pub fn fresh() -> Self {
        Self {
            alg: "argon2id".to_owned(),
            m_kib: M_KIB,
            t: T_COST,
            p: 1,
            salt: STANDARD.encode(random_bytes::<16>()),
        }
    }
}

/// A key derived from a passphrase, with the parameters that derived it.
pub struct PassphraseKey {
    key: [u8; 32],
    params: KdfParams,
}

impl std::fmt::Debug for PassphraseKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PassphraseKey")
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl PassphraseKey {
    /// Derives the key (CPU- and memory-heavy: tens of milliseconds to seconds). Refuses an
    /// empty passphrase and parameters out of bounds.
    pub fn derive(passphrase: &str, params: &KdfParams) -> Result<Self, StoreError> {
        if passphrase.is_empty() {
            return Err(StoreError::Invalid("the passphrase is empty".to_owned()));
        }
        if params.alg != "argon2id" {
            return Err(StoreError::Invalid(format!(
                "unknown key derivation {:?} (this llmux knows argon2id)",
                params.alg
            )));
        }
        if params.m_kib > MAX_M_KIB || params.t > MAX_T_COST || params.p > 16 {
            return Err(StoreError::Invalid(format!(
                "key derivation parameters out of bounds (m_kib {}, t {}, p {})",
                params.m_kib, params.t, params.p
            )));
        }
        let salt = STANDARD
            .decode(&params.salt)
            .map_err(|_| StoreError::Invalid("the KDF salt is not base64".to_owned()))?;
        let argon = Params::new(params.m_kib, params.t, params.p, Some(32))
            .map_err(|e| StoreError::Invalid(format!("key derivation parameters: {e}")))?;
        let mut key = [0u8; 32];
        Argon2::new(Algorithm::Argon2id, Version::V0x13, argon)
            .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
            .map_err(|e| StoreError::Invalid(format!("key derivation: {e}")))?;
        Ok(Self {
            key,
            params: params.clone(),
        })
    }

    /// The parameters to record beside the sealed data.
    pub fn params(&self) -> &KdfParams {
        &self.params
    }

    /// `nonce || ciphertext` of `plain`, bound to `aad`.
    pub fn seal(&self, plain: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        let nonce = random_bytes::<NONCE_LEN>();
        let sealed = XChaCha20Poly1305::new(&self.key.into())
            .encrypt(&XNonce::from(nonce), Payload { msg: plain, aad })
            .map_err(|_| StoreError::Invalid("encryption failed".to_owned()))?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Opens what [`PassphraseKey::seal`] made; a wrong passphrase or altered data fails.
    pub fn open(&self, blob: &[u8], aad: &[u8]) -> Result<Vec<u8>, StoreError> {
        if blob.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Decrypt("sealed data too short".to_owned()));
        }
        let (nonce, sealed) = blob.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce)
            .map_err(|_| StoreError::Decrypt("malformed nonce".to_owned()))?;
        XChaCha20Poly1305::new(&self.key.into())
            .decrypt(&nonce, Payload { msg: sealed, aad })
            .map_err(|_| {
                StoreError::Decrypt(
                    "wrong passphrase, or the data was altered (authentication failed)".to_owned(),
                )
            })
    }

    /// [`PassphraseKey::seal`] as base64 text.
    pub fn seal_text(&self, plain: &str, aad: &[u8]) -> Result<String, StoreError> {
        Ok(STANDARD.encode(self.seal(plain.as_bytes(), aad)?))
    }

    /// Opens [`PassphraseKey::seal_text`]'s output.
    pub fn open_text(&self, sealed: &str, aad: &[u8]) -> Result<String, StoreError> {
        let blob = STANDARD
            .decode(sealed)
            .map_err(|_| StoreError::Decrypt("sealed text is not base64".to_owned()))?;
        String::from_utf8(self.open(&blob, aad)?)
            .map_err(|_| StoreError::Decrypt("plaintext is not UTF-8".to_owned()))
    }
}

/// The archive header (stored in the clear, authenticated).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveHeader {
    format: u8,
    kdf: KdfParams,
    cipher: String,
}

/// Seals `payload` into an archive under `passphrase` (fresh salt and nonce).
pub fn seal_archive(passphrase: &str, payload: &[u8]) -> Result<Vec<u8>, StoreError> {
    let key = PassphraseKey::derive(passphrase, &KdfParams::fresh())?;
    let header = serde_json::to_vec(&ArchiveHeader {
        format: ARCHIVE_FORMAT,
        kdf: key.params().clone(),
        cipher: "xchacha20poly1305".to_owned(),
    })
    .map_err(|e| StoreError::Invalid(e.to_string()))?;
    let len = u32::try_from(header.len())
        .map_err(|_| StoreError::Invalid("archive header too long".to_owned()))?;
    let mut out = Vec::with_capacity(payload.len() + header.len() + 64);
    out.extend_from_slice(MAGIC);
    out.push(ARCHIVE_FORMAT);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    let sealed = key.seal(payload, &out)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Opens an archive made by [`seal_archive`]: not an archive, an unknown format, a wrong
/// passphrase and altered bytes are each a clear error.
pub fn open_archive(passphrase: &str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let not_archive = || StoreError::Invalid("not an llmux backup archive".to_owned());
    if bytes.len() < MAGIC.len() + 5 || &bytes[..MAGIC.len()] != MAGIC {
        return Err(not_archive());
    }
    if bytes[MAGIC.len()] != ARCHIVE_FORMAT {
        return Err(StoreError::Invalid(format!(
            "backup archive format {} is not known to this llmux (it reads format {ARCHIVE_FORMAT})",
            bytes[MAGIC.len()]
        )));
    }
    let at = MAGIC.len() + 1;
    let len_bytes: [u8; 4] = bytes[at..at + 4].try_into().map_err(|_| not_archive())?;
    let end = at + 4 + u32::from_be_bytes(len_bytes) as usize;
    let header_bytes = bytes.get(at + 4..end).ok_or_else(not_archive)?;
    let header: ArchiveHeader = serde_json::from_slice(header_bytes)
        .map_err(|e| StoreError::Invalid(format!("backup archive header: {e}")))?;
    if header.cipher != "xchacha20poly1305" {
        return Err(StoreError::Invalid(format!(
            "unknown archive cipher {:?}",
            header.cipher
        )));
    }
    let key = PassphraseKey::derive(passphrase, &header.kdf)?;
    key.open(&bytes[end..], &bytes[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn archives_open_with_the_passphrase_only() {
        let sealed = seal_archive("correct horse", b"payload bytes").unwrap();
        assert_eq!(
            open_archive("correct horse", &sealed).unwrap(),
            b"payload bytes"
        );
        assert!(matches!(
            open_archive("wrong", &sealed),
            Err(StoreError::Decrypt(m)) if m.contains("wrong passphrase")
        ));
        let mut altered = sealed.clone();
        let last = altered.len() - 1;
        altered[last] ^= 1;
        assert!(open_archive("correct horse", &altered).is_err());
        // The header is authenticated too: a lowered memory cost is detected.
        let text = String::from_utf8_lossy(&sealed[13..]).into_owned();
        assert!(text.contains("\"m_kib\":65536"));
        assert!(open_archive("x", b"not an archive at all").is_err());
        assert!(seal_archive("", b"x").is_err());
    }

    #[test]
    fn text_sealing_is_bound_to_its_aad() {
        let key = PassphraseKey::derive("pass", &KdfParams::fresh()).unwrap();
        let sealed = key.seal_text("sk-secret", b"a").unwrap();
        assert_eq!(key.open_text(&sealed, b"a").unwrap(), "sk-secret");
        assert!(key.open_text(&sealed, b"b").is_err());
        let again = PassphraseKey::derive("pass", key.params()).unwrap();
        assert_eq!(again.open_text(&sealed, b"a").unwrap(), "sk-secret");
        let other = PassphraseKey::derive("other", key.params()).unwrap();
        assert!(other.open_text(&sealed, b"a").is_err());
    }
}
