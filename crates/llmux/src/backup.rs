//! `llmux backup` and `llmux restore`: one encrypted archive holding a consistent snapshot of
//! the store and the master key, restored into an empty store (SQLite or PostgreSQL, either
//! way round).
//!
//! The archive (see `llmux_store::seal_archive`) seals, under a key derived from the
//! passphrase with argon2id: `u32 length | manifest (JSON) | u32 length | master keys (key
//! file text) | data`. The data is a SQLite file made by `VACUUM INTO` (SQLite store) or the
//! llmux tables as JSON (PostgreSQL store, read in one `REPEATABLE READ` transaction); the
//! manifest records its SHA-256, the schema version and the row counts.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use llmux_store::{BackendKind, MasterKeys, Store, TableDump};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::serve;

/// The environment variable read for the passphrase when `--passphrase-env` is not given.
pub const DEFAULT_PASSPHRASE_ENV: &str = "LLMUX_BACKUP_PASSPHRASE";

const PAYLOAD_SQLITE: &str = "sqlite-file";
const PAYLOAD_TABLES: &str = "tables-json";

/// What an archive holds, sealed inside it (so it is authenticated with the data).
#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format (1).
    pub format: u32,
    /// The llmux that made it.
    pub llmux_version: String,
    /// The store's newest applied migration.
    pub schema_version: i64,
    /// `sqlite` or `postgres`.
    pub store_kind: String,
    /// `sqlite-file` or `tables-json`.
    pub payload: String,
    /// RFC 3339.
    pub created_at: String,
    /// Rows per table in the snapshot.
    pub row_counts: BTreeMap<String, i64>,
    /// SHA-256 (hex) of the data.
    pub payload_sha256: String,
    /// Id of the current master key.
    pub master_key_id: String,
}

fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

/// The passphrase from the environment variable `var` (default [`DEFAULT_PASSPHRASE_ENV`]).
pub fn passphrase(var: Option<&str>) -> Result<String, String> {
    let var = var.unwrap_or(DEFAULT_PASSPHRASE_ENV);
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(p),
        Ok(_) => Err(format!("the passphrase variable {var} is empty")),
        Err(_) => Err(format!(
            "no passphrase: set the environment variable {var} (or name another with \
             --passphrase-env); it is never taken from the command line"
        )),
    }
}

/// The store url of the config, refusing an in-memory store (nothing outlives the process).
fn store_url(config: Option<PathBuf>) -> Result<(serve::Loaded, String), String> {
    let loaded = serve::load(config)?;
    let url = loaded.config.store.url.clone();
    if llmux_store::data_dir(&url).is_none() {
        return Err(format!(
            "store {} is in memory: there is nothing to back up or restore",
            llmux_store::redact_url(&url)
        ));
    }
    Ok((loaded, url))
}

/// The SQLite database file of `url`, `None` for PostgreSQL.
pub(crate) fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    Some(PathBuf::from(rest.split('?').next().unwrap_or(rest)))
}

/// The master keys in force for `url`: `LLMUX_MASTER_KEY`, else the key file, which must exist.
fn current_keys(url: &str) -> Result<MasterKeys, String> {
    if let Some(keys) = MasterKeys::from_env().map_err(|e| e.to_string())? {
        return Ok(keys);
    }
    let path = serve::master_key_file(url).ok_or("no master key file for this store")?;
    MasterKeys::load(&path).map_err(|e| {
        format!(
            "master key file {}: {e} (without it the provider keys in the backup could not \
             be decrypted)",
            path.display()
        )
    })
}

fn keys_text(keys: &MasterKeys) -> String {
    let mut text = String::from("# llmux master keys, the current one first\n");
    for key in std::iter::once(keys.current()).chain(keys.previous()) {
        text.push_str(&key.to_base64());
        text.push('\n');
    }
    text
}

/// Creates `path` empty with mode 0600 (fails when it exists).
fn create_private(path: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file beside it, synced, renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let _ = std::fs::remove_file(&tmp);
    let mut file = create_private(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(e) = written.map_err(|e| format!("cannot write {}: {e}", tmp.display())) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move the archive to {}: {e}", path.display())
    })
}

/// A temporary file path beside `near` that is removed on drop.
struct TempPath(PathBuf);

impl TempPath {
    fn beside(near: &Path, tag: &str) -> TempPath {
        let mut name = near.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{tag}-{}", std::process::id()));
        TempPath(near.with_file_name(name))
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `VACUUM INTO` a private temporary file beside `to`: (its bytes, its row counts).
async fn sqlite_snapshot(
    store: &Store,
    to: &Path,
) -> Result<(Vec<u8>, BTreeMap<String, i64>), String> {
    let tmp = TempPath::beside(to, "snapshot");
    let _ = std::fs::remove_file(&tmp.0);
    drop(create_private(&tmp.0)?);
    store
        .vacuum_into(&tmp.0)
        .await
        .map_err(|e| format!("snapshot (VACUUM INTO) failed: {e}"))?;
    let copy = Store::open_sqlite_copy(&tmp.0)
        .await
        .map_err(|e| format!("cannot read the snapshot: {e}"))?;
    let counts = copy.row_counts().await.map_err(|e| e.to_string())?;
    copy.close().await;
    let bytes = std::fs::read(&tmp.0).map_err(|e| format!("cannot read the snapshot: {e}"))?;
    Ok((bytes, counts))
}

/// `llmux backup`: snapshot, bundle with the master key, seal, write atomically (0600).
pub async fn backup(
    config: Option<PathBuf>,
    to: PathBuf,
    passphrase_env: Option<String>,
) -> Result<(), String> {
    let pass = passphrase(passphrase_env.as_deref())?;
    let (_, url) = store_url(config)?;
    if let Some(file) = sqlite_file(&url) {
        if !file.exists() {
            return Err(format!("no SQLite store at {}", file.display()));
        }
    }
    let store = Store::connect(&url)
        .await
        .map_err(|e| format!("cannot open the store: {e}"))?;
    let schema = store
        .applied_schema_version()
        .await
        .map_err(|e| format!("cannot read the store's schema version: {e}"))?;
    if schema > llmux_store::schema_version() {
        return Err(format!(
            "the store's schema ({schema}) is newer than this llmux's ({}): back it up with \
             the llmux that serves it",
            llmux_store::schema_version()
        ));
    }
    let keys = current_keys(&url)?;
    let (kind, payload_kind, data, counts) = match store.kind() {
        BackendKind::Sqlite => {
            let (bytes, counts) = sqlite_snapshot(&store, &to).await?;
            ("sqlite", PAYLOAD_SQLITE, bytes, counts)
        }
        BackendKind::Postgres => {
            let tables = store
                .dump_tables(None)
                .await
                .map_err(|e| format!("cannot read the store: {e}"))?;
            let counts = tables
                .iter()
                .map(|t| (t.name.clone(), t.rows.len() as i64))
                .collect();
            let bytes = serde_json::to_vec(&tables).map_err(|e| e.to_string())?;
            ("postgres", PAYLOAD_TABLES, bytes, counts)
        }
    };
    store.close().await;
    let manifest = Manifest {
        format: 1,
        llmux_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: schema,
        store_kind: kind.to_owned(),
        payload: payload_kind.to_owned(),
        created_at: llmux_admin::time::rfc3339_ms(llmux_store::now_ms()),
        row_counts: counts,
        payload_sha256: sha256_hex(&data),
        master_key_id: keys.current().id().to_owned(),
    };
    let payload = pack(&manifest, &keys_text(&keys), &data)?;
    let archive = llmux_store::seal_archive(&pass, &payload).map_err(|e| e.to_string())?;
    write_atomic(&to, &archive)?;
    say(&format!(
        "backup written to {} ({} bytes): {kind} store, schema {schema}, {} row(s) in {} \
         table(s), master key {}\n",
        to.display(),
        archive.len(),
        manifest.row_counts.values().sum::<i64>(),
        manifest.row_counts.len(),
        manifest.master_key_id
    ));
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn pack(manifest: &Manifest, keys: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let manifest = serde_json::to_vec(manifest).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(manifest.len() + keys.len() + data.len() + 8);
    for part in [manifest.as_slice(), keys.as_bytes()] {
        let len = u32::try_from(part.len()).map_err(|_| "manifest too long".to_owned())?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(part);
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Splits an opened archive: (manifest, master keys text, data).
fn unpack(payload: &[u8]) -> Result<(Manifest, String, &[u8]), String> {
    let bad = || "the archive's content is malformed".to_owned();
    let mut rest = payload;
    let mut parts = Vec::new();
    for _ in 0..2 {
        let len: [u8; 4] = rest
            .get(..4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        let len = u32::from_be_bytes(len) as usize;
        parts.push(rest.get(4..4 + len).ok_or_else(bad)?);
        rest = &rest[4 + len..];
    }
    let manifest: Manifest =
        serde_json::from_slice(parts[0]).map_err(|e| format!("backup manifest: {e}"))?;
    let keys = String::from_utf8(parts[1].to_vec()).map_err(|_| bad())?;
    Ok((manifest, keys, rest))
}

/// Reads, opens and checks an archive: the passphrase, the checksum and the schema version.
fn open_checked(from: &Path, pass: &str) -> Result<(Manifest, MasterKeys, Vec<u8>), String> {
    let bytes = std::fs::read(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let payload = llmux_store::open_archive(pass, &bytes).map_err(|e| match e {
        llmux_store::StoreError::Decrypt(_) => format!(
            "cannot open {}: wrong passphrase, or the archive was altered (nothing was restored)",
            from.display()
        ),
        other => format!("cannot open {}: {other}", from.display()),
    })?;
    let (manifest, keys, data) = unpack(&payload)?;
    if sha256_hex(data) != manifest.payload_sha256 {
        return Err("the archive's data does not match its manifest checksum".to_owned());
    }
    if manifest.schema_version > llmux_store::schema_version() {
        return Err(format!(
            "the backup has schema version {}, newer than this llmux's ({}, llmux {}): restore \
             it with llmux {} or newer (nothing was restored)",
            manifest.schema_version,
            llmux_store::schema_version(),
            env!("CARGO_PKG_VERSION"),
            manifest.llmux_version
        ));
    }
    let keys = MasterKeys::parse(&keys).map_err(|e| format!("the archive's master key: {e}"))?;
    Ok((manifest, keys, data.to_vec()))
}

/// What restore does about the master key: nothing (the one in force matches) or write it.
fn key_plan(url: &str, archived: &MasterKeys) -> Result<Option<PathBuf>, String> {
    let want = archived.current().id();
    let has = |keys: &MasterKeys| {
        std::iter::once(keys.current())
            .chain(keys.previous())
            .any(|k| k.id() == want)
    };
    if let Some(env) = MasterKeys::from_env().map_err(|e| e.to_string())? {
        return if has(&env) {
            Ok(None)
        } else {
            Err(format!(
                "{} is set but does not hold the backup's master key ({want}): unset it so \
                 that restore writes the key file, or add that key (nothing was restored)",
                llmux_store::MASTER_KEY_ENV
            ))
        };
    }
    let path = serve::master_key_file(url).ok_or("no master key file for this store")?;
    if !path.exists() {
        return Ok(Some(path));
    }
    let existing = MasterKeys::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if has(&existing) {
        Ok(None)
    } else {
        Err(format!(
            "a different master key ({}) is already at {}; the backup's is {want}. Restore \
             into a fresh data directory, or move that file away (nothing was restored)",
            existing.current().id(),
            path.display()
        ))
    }
}

/// The archive's tables: read from the SQLite snapshot (through a private temporary file
/// beside `near`) or parsed from JSON.
async fn archived_tables(
    manifest: &Manifest,
    data: &[u8],
    near: &Path,
) -> Result<Vec<TableDump>, String> {
    if manifest.payload == PAYLOAD_TABLES {
        return serde_json::from_slice(data).map_err(|e| format!("the archive's tables: {e}"));
    }
    if manifest.payload != PAYLOAD_SQLITE {
        return Err(format!("unknown archive payload {:?}", manifest.payload));
    }
    let tmp = TempPath::beside(near, "restore");
    let _ = std::fs::remove_file(&tmp.0);
    let mut file = create_private(&tmp.0)?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", tmp.0.display()))?;
    let copy = Store::open_sqlite_copy(&tmp.0)
        .await
        .map_err(|e| format!("cannot read the archived SQLite snapshot: {e}"))?;
    let tables = copy
        .dump_tables(None)
        .await
        .map_err(|e| format!("cannot read the archived SQLite snapshot: {e}"));
    copy.close().await;
    tables
}

/// `llmux restore`: into an empty store, all or nothing, with the master key.
pub async fn restore(
    config: Option<PathBuf>,
    from: PathBuf,
    passphrase_env: Option<String>,
) -> Result<(), String> {
    let pass = passphrase(passphrase_env.as_deref())?;
    let (manifest, archived_keys, data) = open_checked(&from, &pass)?;
    let (_, url) = store_url(config)?;
    let write_key = key_plan(&url, &archived_keys)?;
    // A SQLite file this restore creates is removed again if the restore fails: a refused
    // restore leaves nothing behind, not even an empty migrated store.
    let file = sqlite_file(&url);
    let created = file.clone().filter(|f| !f.exists());
    let store = Store::connect(&url)
        .await
        .map_err(|e| format!("cannot open the target store: {e}"))?;
    let near = file.unwrap_or_else(|| from.clone());
    let loaded = load_into(
        &store,
        &url,
        &near,
        &manifest,
        &data,
        write_key.as_deref(),
        &archived_keys,
    )
    .await;
    store.close().await;
    let (tables, rows) = loaded.inspect_err(|_| {
        if let Some(path) = &write_key {
            let _ = std::fs::remove_file(path);
        }
        if let Some(file) = &created {
            for end in ["", "-wal", "-shm"] {
                let mut name = file.clone().into_os_string();
                name.push(end);
                let _ = std::fs::remove_file(name);
            }
        }
    })?;
    say(&format!(
        "restored {rows} row(s) in {tables} table(s) from {} ({} store, schema {}, made {}) \
         into {}; master key {} {}\n",
        from.display(),
        manifest.store_kind,
        manifest.schema_version,
        manifest.created_at,
        llmux_store::redact_url(&url),
        archived_keys.current().id(),
        match &write_key {
            Some(p) => format!(
                "written to {}",
                std::path::absolute(p)
                    .unwrap_or_else(|_| p.clone())
                    .display()
            ),
            None => "already in place".to_owned(),
        }
    ));
    Ok(())
}

/// Checks the target is empty, migrates it, writes the key file (when `write_key`) and loads
/// the archive's tables in one transaction: (tables, rows).
async fn load_into(
    store: &Store,
    url: &str,
    near: &Path,
    manifest: &Manifest,
    data: &[u8],
    write_key: Option<&Path>,
    archived_keys: &MasterKeys,
) -> Result<(usize, u64), String> {
    // Checked before the migrations run, so that a refused store is not even migrated.
    if let Some((table, n)) = store
        .first_nonempty_table()
        .await
        .map_err(|e| e.to_string())?
    {
        return Err(format!(
            "the target store {} is not empty (table {table} has {n} row(s)): restore only \
             into an empty store (nothing was restored)",
            llmux_store::redact_url(url)
        ));
    }
    store
        .migrate()
        .await
        .map_err(|e| format!("cannot migrate the target store: {e}"))?;
    let tables = archived_tables(manifest, data, near).await?;
    if let Some(path) = write_key {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        write_atomic(path, keys_text(archived_keys).as_bytes())?;
    }
    let rows = store
        .load_tables(&tables)
        .await
        .map_err(|e| format!("restore failed, nothing was restored: {e}"))?;
    Ok((tables.len(), rows))
}
