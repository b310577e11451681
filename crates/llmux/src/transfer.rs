//! `llmux export` and `llmux import`: the API-made configuration as one versioned document
//! (JSON, or TOML when the file name ends in `.toml`), moved between environments.
//!
//! The document holds rows per entity (API upstreams, their provider keys, models of API
//! upstreams and upstream-less models, aliases, apps, virtual keys as hashes, users as
//! password hashes, settings: the routing strategy and API prices), each keyed by its id.
//! Provider keys are sealed under the passphrase (argon2id + XChaCha20-Poly1305, bound to the
//! key's id and upstream), never under the master key, so the document moves between
//! environments with different master keys; a `check` field opens only with the passphrase.
//!
//! Import merges: a row whose id exists is `changed` or `unchanged`, a new one `added`; rows
//! of the store that the document does not name stay. Conflicts (a name taken by another id,
//! an upstream the config file declares, a virtual key of another app, a reference to nothing)
//! are reported and nothing is applied. Without `--apply` nothing is written either.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use llmux_config::Secret;
use llmux_store::{ChangeKind, KdfParams, MasterKeys, PassphraseKey, RowWrite, Store, TableDump};
use serde_json::{json, Map, Value};

use crate::backup::{passphrase, write_atomic};
use crate::serve;

/// The document format this llmux writes and reads.
const DOC_VERSION: u64 = 1;
/// What the `check` field seals.
const CHECK_TEXT: &str = "llmux export";

/// One entity of the document: its table and how its rows are read and compared.
struct Entity {
    table: &'static str,
    /// Which rows are exported (SQL, written here, never user input).
    filter: &'static str,
    key: &'static str,
    /// Columns that must be unique besides the key (a match under another id is a conflict).
    natural: &'static [&'static str],
    /// Columns holding JSON text: values in the document.
    json: &'static [&'static str],
    /// Columns left out of the document.
    omit: &'static [&'static str],
    /// Columns not compared and not overwritten by an update (timestamps).
    keep: &'static [&'static str],
}

const ENTITIES: &[Entity] = &[
    Entity {
        table: "upstreams",
        filter: "source = 'api'",
        key: "id",
        natural: &["name"],
        json: &["models", "timeouts", "options"],
        omit: &["source"],
        keep: &["created_at", "updated_at"],
    },
    Entity {
        table: "provider_keys",
        filter: "upstream_id IN (SELECT id FROM upstreams WHERE source = 'api')",
        key: "id",
        natural: &[],
        json: &[],
        omit: &["ciphertext"],
        keep: &["created_at"],
    },
    Entity {
        table: "models",
        filter:
            "upstream_id IS NULL OR upstream_id IN (SELECT id FROM upstreams WHERE source = 'api')",
        key: "id",
        natural: &["name", "upstream_id"],
        json: &[],
        omit: &[],
        keep: &["created_at"],
    },
    Entity {
        table: "aliases",
        filter: "TRUE",
        key: "id",
        natural: &["name"],
        json: &["targets"],
        omit: &[],
        keep: &["created_at", "updated_at"],
    },
    Entity {
        table: "apps",
        filter: "TRUE",
        key: "id",
        natural: &["name"],
        json: &[],
        omit: &[],
        keep: &["created_at"],
    },
    Entity {
        table: "virtual_keys",
        filter: "TRUE",
        key: "id",
        natural: &["public_id"],
        json: &["models", "limits"],
        omit: &["last_used_at"],
        keep: &["created_at"],
    },
    Entity {
        table: "users",
        filter: "TRUE",
        key: "id",
        natural: &["username"],
        json: &[],
        omit: &["session_epoch"],
        keep: &["created_at"],
    },
    Entity {
        table: "settings",
        // Runtime state (drains) is not configuration: it stays on its environment.
        filter: "key NOT LIKE 'runtime.%'",
        key: "key",
        natural: &[],
        json: &["value"],
        omit: &[],
        keep: &["updated_at"],
    },
];

fn say(text: &str) {
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
}

fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// A row of `dump` as an object in document form: JSON columns parsed, nulls and omitted
/// columns left out.
fn doc_row(entity: &Entity, columns: &[String], row: &[Value]) -> Map<String, Value> {
    let mut out = Map::new();
    for (column, value) in columns.iter().zip(row) {
        if value.is_null() || entity.omit.contains(&column.as_str()) {
            continue;
        }
        let value = match value {
            Value::String(text) if entity.json.contains(&column.as_str()) => {
                serde_json::from_str(text).unwrap_or_else(|_| value.clone())
            }
            other => other.clone(),
        };
        out.insert(column.clone(), value);
    }
    out
}

/// The raw rows (with every column) of a dump, by key.
fn raw_rows(dump: &TableDump, key: &str) -> BTreeMap<String, Map<String, Value>> {
    dump.rows
        .iter()
        .map(|row| {
            let obj: Map<String, Value> = dump.columns.iter().cloned().zip(row.clone()).collect();
            (text_of(obj.get(key)), obj)
        })
        .collect()
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn aad(key_id: &str, upstream_id: &str) -> Vec<u8> {
    format!("llmux-export:provider_key:{key_id}:{upstream_id}").into_bytes()
}

/// The store, refused unless its schema is this binary's: migrating it here would change a
/// store an older llmux may still serve. A brand-new store (no migration yet) is migrated when
/// `fresh_ok` (an import into a new environment); export has nothing to read from one.
async fn open_same_schema(
    config: &llmux_config::Config,
    fresh_ok: bool,
) -> Result<(Store, MasterKeys), String> {
    let url = &config.store.url;
    let shown = llmux_store::redact_url(url);
    if let Some(file) = crate::backup::sqlite_file(url).filter(|f| !fresh_ok && !f.exists()) {
        return Err(format!("no SQLite store at {}", file.display()));
    }
    let store = Store::connect(url)
        .await
        .map_err(|e| format!("cannot open the store at {shown}: {e}"))?;
    // A store without the migrations table has no schema yet.
    let applied = store.applied_schema_version().await.unwrap_or(0);
    let ours = llmux_store::schema_version();
    if applied == 0 && fresh_ok {
        store
            .migrate()
            .await
            .map_err(|e| format!("cannot migrate the store at {shown}: {e}"))?;
    } else if applied == 0 {
        store.close().await;
        return Err(format!(
            "the store at {shown} is empty (no schema yet): there is nothing to export"
        ));
    } else if applied != ours {
        store.close().await;
        let fix = if applied > ours {
            "use the llmux that serves it"
        } else {
            "start this llmux on it once, or run `llmux migrate`, first"
        };
        return Err(format!(
            "the store at {shown} has schema {applied}, this llmux has {ours}: {fix} \
             (nothing was read or changed)"
        ));
    }
    let keys = serve::master_keys(url)?;
    Ok((store, keys))
}

/// `llmux export`: the document, written atomically (0600).
pub async fn export(
    config: Option<PathBuf>,
    to: PathBuf,
    passphrase_env: Option<String>,
) -> Result<(), String> {
    let pass = passphrase(passphrase_env.as_deref())?;
    let loaded = serve::load(config)?;
    let (store, keys) = open_same_schema(&loaded.config, false).await?;
    let seal = PassphraseKey::derive(&pass, &KdfParams::fresh()).map_err(|e| e.to_string())?;
    let specs: Vec<(&str, &str)> = ENTITIES.iter().map(|e| (e.table, e.filter)).collect();
    let dumps = store
        .dump_tables(Some(&specs))
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?;
    store.close().await;
    let mut doc = Map::new();
    doc.insert("version".into(), json!(DOC_VERSION));
    doc.insert("llmux_version".into(), json!(env!("CARGO_PKG_VERSION")));
    doc.insert(
        "exported_at".into(),
        json!(llmux_admin::time::rfc3339_ms(llmux_store::now_ms())),
    );
    doc.insert("seal".into(), json!(seal.params()));
    let check = seal
        .seal_text(CHECK_TEXT, b"llmux-export:check")
        .map_err(|e| e.to_string())?;
    doc.insert("check".into(), json!(check));
    let mut counts = Vec::new();
    for (entity, dump) in ENTITIES.iter().zip(&dumps) {
        let mut rows = Vec::new();
        for row in &dump.rows {
            let mut obj = doc_row(entity, &dump.columns, row);
            if entity.table == "provider_keys" {
                let raw: Map<String, Value> =
                    dump.columns.iter().cloned().zip(row.clone()).collect();
                obj.insert("sealed".into(), json!(reseal(&raw, &keys, &seal)?));
            }
            rows.push(Value::Object(obj));
        }
        counts.push(format!("{} {}", rows.len(), entity.table));
        doc.insert(entity.table.into(), Value::Array(rows));
    }
    let text = if is_toml(&to) {
        let doc = without_nulls(Value::Object(doc));
        toml::to_string_pretty(&doc).map_err(|e| format!("TOML: {e}"))?
    } else {
        serde_json::to_string_pretty(&Value::Object(doc)).map_err(|e| e.to_string())? + "\n"
    };
    write_atomic(&to, text.as_bytes())?;
    say(&format!(
        "exported to {}: {}\n",
        to.display(),
        counts.join(", ")
    ));
    Ok(())
}

/// `value` without the null members of its objects, at any depth: TOML has no null (a
/// missing key reads back as null).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A provider key's ciphertext opened with the master keys and sealed under the passphrase.
fn reseal(
    raw: &Map<String, Value>,
    keys: &MasterKeys,
    seal: &PassphraseKey,
) -> Result<String, String> {
    let id = text_of(raw.get("id"));
    let upstream = text_of(raw.get("upstream_id"));
    let secret =
        llmux_store::open_provider_key(keys, &id, &upstream, &text_of(raw.get("ciphertext")))
            .map_err(|e| format!("provider key {id}: {e}"))?;
    seal.seal_text(secret.expose(), &aad(&id, &upstream))
        .map_err(|e| e.to_string())
}

/// A parsed document: its rows per table and the key that opens its provider keys.
struct Doc {
    tables: BTreeMap<String, Vec<Map<String, Value>>>,
    seal: PassphraseKey,
}

fn read_doc(from: &Path, pass: &str) -> Result<Doc, String> {
    let text = std::fs::read_to_string(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let doc: Value = if is_toml(from) {
        toml::from_str(&text).map_err(|e| format!("{}: {e}", from.display()))?
    } else {
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", from.display()))?
    };
    let version = doc.get("version").and_then(Value::as_u64);
    if version != Some(DOC_VERSION) {
        return Err(format!(
            "{}: document version {} is not supported (this llmux reads version {DOC_VERSION})",
            from.display(),
            doc.get("version")
                .map_or("(missing)".to_owned(), Value::to_string)
        ));
    }
    let known = ["version", "llmux_version", "exported_at", "seal", "check"];
    if let Some(unknown) = doc
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
        .find(|k| !known.contains(&k.as_str()) && !ENTITIES.iter().any(|e| e.table == k.as_str()))
    {
        return Err(format!(
            "{}: unknown field {unknown:?} (this llmux reads version {DOC_VERSION})",
            from.display()
        ));
    }
    let params: KdfParams = serde_json::from_value(doc.get("seal").cloned().unwrap_or(Value::Null))
        .map_err(|e| format!("{}: seal: {e}", from.display()))?;
    let seal = PassphraseKey::derive(pass, &params).map_err(|e| e.to_string())?;
    let check = doc.get("check").and_then(Value::as_str).unwrap_or_default();
    if seal.open_text(check, b"llmux-export:check").ok().as_deref() != Some(CHECK_TEXT) {
        return Err(format!(
            "{}: wrong passphrase (or the document was altered): nothing was imported",
            from.display()
        ));
    }
    let mut tables = BTreeMap::new();
    for entity in ENTITIES {
        let rows = match doc.get(entity.table) {
            None => Vec::new(),
            Some(Value::Array(rows)) => rows
                .iter()
                .map(|r| {
                    r.as_object()
                        .cloned()
                        .ok_or_else(|| format!("{}: a row that is not an object", entity.table))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => {
                return Err(format!(
                    "{}: {} is not a list",
                    from.display(),
                    entity.table
                ))
            }
        };
        tables.insert(entity.table.to_owned(), rows);
    }
    Ok(Doc { tables, seal })
}

/// Whether two values are the same after the backends' differences (0/1 against booleans, 1
/// against 1.0).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    let num = |v: &Value| match v {
        Value::Bool(b) => Some(f64::from(u8::from(*b))),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match (a, b) {
        (None | Some(Value::Null), None | Some(Value::Null)) => true,
        (Some(x), Some(y)) => match (num(x), num(y)) {
            (Some(p), Some(q)) => p == q,
            // A TOML document has no nulls: `{"rpm": null}` and `{}` are the same.
            _ => x == y || without_nulls(x.clone()) == without_nulls(y.clone()),
        },
        _ => false,
    }
}

/// What an import would do, per entity.
#[derive(Default)]
struct Plan {
    lines: Vec<String>,
    counts: BTreeMap<&'static str, [usize; 4]>,
    conflicts: usize,
    writes: Vec<RowWrite>,
}

impl Plan {
    fn note(&mut self, table: &'static str, slot: usize, line: Option<String>) {
        self.counts.entry(table).or_default()[slot] += 1;
        if slot == 3 {
            self.conflicts += 1;
        }
        if let Some(line) = line {
            self.lines.push(line);
        }
    }
}

/// The store's side, read in one view: every row of every entity table.
struct Target {
    rows: BTreeMap<&'static str, BTreeMap<String, Map<String, Value>>>,
    file_upstreams: BTreeSet<String>,
}

async fn read_target(store: &Store, file_upstreams: BTreeSet<String>) -> Result<Target, String> {
    let specs: Vec<(&str, &str)> = ENTITIES.iter().map(|e| (e.table, "TRUE")).collect();
    let dumps = store
        .dump_tables(Some(&specs))
        .await
        .map_err(|e| format!("cannot read the store: {e}"))?;
    let rows = ENTITIES
        .iter()
        .zip(&dumps)
        .map(|(e, d)| (e.table, raw_rows(d, e.key)))
        .collect();
    Ok(Target {
        rows,
        file_upstreams,
    })
}

/// The conflict a document row has with the store, if any.
fn conflict(
    entity: &Entity,
    row: &Map<String, Value>,
    doc: &Doc,
    target: &Target,
) -> Option<String> {
    let id = text_of(row.get(entity.key));
    let mine = target.rows.get(entity.table);
    let existing = mine.and_then(|m| m.get(&id));
    if entity.table == "upstreams" {
        let name = text_of(row.get("name"));
        if target.file_upstreams.contains(&name) {
            return Some(format!("upstream {name:?} is declared in the config file"));
        }
        if existing.is_some_and(|e| text_of(e.get("source")) != "api") {
            return Some(format!(
                "upstream {id} exists and comes from the config file"
            ));
        }
    }
    if !entity.natural.is_empty() {
        let clash = mine.into_iter().flatten().find(|(other, r)| {
            **other != id && entity.natural.iter().all(|c| same(r.get(*c), row.get(*c)))
        });
        if let Some((other, _)) = clash {
            let what: Vec<String> = entity
                .natural
                .iter()
                .map(|c| format!("{c} {}", text_of(row.get(*c))))
                .collect();
            return Some(format!(
                "{} is taken by {other} in the store (the document's id is {id})",
                what.join(", ")
            ));
        }
    }
    let parent = |column: &str, table: &str| {
        let want = text_of(row.get(column));
        let in_doc = doc
            .tables
            .get(table)
            .is_some_and(|rows| rows.iter().any(|r| text_of(r.get("id")) == want));
        let in_store = target
            .rows
            .get(table)
            .is_some_and(|m| m.contains_key(&want));
        (!want.is_empty() && !in_doc && !in_store)
            .then(|| format!("{column} {want} is neither in the document nor in the store"))
    };
    match entity.table {
        "settings" if id.starts_with(llmux_store::RUNTIME_PREFIX) => Some(format!(
            "setting {id} is runtime state of another environment (a drain), not configuration"
        )),
        "provider_keys" | "models" => parent("upstream_id", "upstreams"),
        "virtual_keys" => {
            if let Some(e) = existing.filter(|e| !same(e.get("app_id"), row.get("app_id"))) {
                return Some(format!(
                    "virtual key {id} belongs to app {} in the store",
                    text_of(e.get("app_id"))
                ));
            }
            let hash = row.get("secret_hash");
            if let Some((other, _)) = mine
                .into_iter()
                .flatten()
                .find(|(o, r)| **o != id && same(r.get("secret_hash"), hash))
            {
                return Some(format!(
                    "its secret hash belongs to virtual key {other} in the store"
                ));
            }
            parent("app_id", "apps")
        }
        _ => None,
    }
}

/// A row's columns and values, in the store's form.
type Columns = Vec<(String, Value)>;

fn label(entity: &Entity, row: &Map<String, Value>, id: &str) -> String {
    match entity.table {
        "upstreams" | "aliases" | "apps" | "virtual_keys" | "models" => {
            format!("{id} ({})", text_of(row.get("name")))
        }
        "users" => format!("{id} ({})", text_of(row.get("username"))),
        _ => id.to_owned(),
    }
}

/// A document row as the store's columns: JSON columns as text, a provider key opened with the
/// passphrase and sealed under this store's master key (its plaintext returned to compare).
fn store_values(
    entity: &Entity,
    row: &Map<String, Value>,
    doc: &Doc,
    keys: &MasterKeys,
    id: &str,
) -> Result<(Columns, Option<Secret>), String> {
    let mut values: Columns = Vec::new();
    for (column, value) in row.iter().filter(|(c, _)| *c != "sealed") {
        let value = if entity.json.contains(&column.as_str()) && !value.is_null() {
            Value::String(value.to_string())
        } else {
            value.clone()
        };
        values.push((column.clone(), value));
    }
    let mut secret = None;
    if entity.table == "provider_keys" {
        let upstream = text_of(row.get("upstream_id"));
        let sealed = row
            .get("sealed")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("provider key {id}: no sealed key"))?;
        let plain = doc
            .seal
            .open_text(sealed, &aad(id, &upstream))
            .map_err(|e| format!("provider key {id}: {e}"))?;
        let plain = Secret::new(plain);
        let ciphertext = llmux_store::seal_provider_key(keys, id, &upstream, &plain)
            .map_err(|e| e.to_string())?;
        values.push(("ciphertext".into(), json!(ciphertext)));
        secret = Some(plain);
    }
    if entity.table == "upstreams" {
        values.push(("source".into(), json!("api")));
    }
    Ok((values, secret))
}

/// The columns in which the document's row differs from the stored one (`key`: the provider
/// key itself), and the stored row in document form.
fn changed_columns(
    entity: &Entity,
    row: &Map<String, Value>,
    existing: &Map<String, Value>,
    secret: Option<&Secret>,
    keys: &MasterKeys,
) -> (Vec<String>, Map<String, Value>) {
    let stored = doc_row(
        entity,
        &existing.keys().cloned().collect::<Vec<_>>(),
        &existing.values().cloned().collect::<Vec<_>>(),
    );
    let mut changed: Vec<String> = row
        .keys()
        .chain(stored.keys())
        .filter(|c| *c != "sealed" && !entity.keep.contains(&c.as_str()))
        .filter(|c| !same(row.get(*c), stored.get(*c)))
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if let Some(plain) = secret {
        let old = llmux_store::open_provider_key(
            keys,
            &text_of(existing.get("id")),
            &text_of(existing.get("upstream_id")),
            &text_of(existing.get("ciphertext")),
        );
        if old.map(|s| s.expose() != plain.expose()).unwrap_or(true) {
            changed.push("key".into());
        }
    }
    (changed, stored)
}

/// Plans one document row: added, changed or unchanged (with its write), or a conflict.
fn plan_row(
    entity: &'static Entity,
    row: &Map<String, Value>,
    doc: &Doc,
    target: &Target,
    keys: &MasterKeys,
    plan: &mut Plan,
) -> Result<(), String> {
    let id = text_of(row.get(entity.key));
    if id.is_empty() {
        return Err(format!("{}: a row without {}", entity.table, entity.key));
    }
    let label = label(entity, row, &id);
    if let Some(why) = conflict(entity, row, doc, target) {
        let line = format!("! {} {label}: conflict: {why}", entity.table);
        plan.note(entity.table, 3, Some(line));
        return Ok(());
    }
    let (mut values, secret) = store_values(entity, row, doc, keys, &id)?;
    let key = (entity.key.to_owned(), json!(id));
    let table = entity.table.to_owned();
    let Some(existing) = target.rows.get(entity.table).and_then(|m| m.get(&id)) else {
        plan.note(entity.table, 0, Some(format!("+ {} {label}", entity.table)));
        plan.writes.push(RowWrite {
            table,
            key,
            values,
            update: false,
        });
        return Ok(());
    };
    let (changed, stored) = changed_columns(entity, row, existing, secret.as_ref(), keys);
    if changed.is_empty() {
        plan.note(entity.table, 2, None);
        return Ok(());
    }
    let line = format!("~ {} {label}: {}", entity.table, changed.join(", "));
    plan.note(entity.table, 1, Some(line));
    values.retain(|(c, _)| !entity.keep.contains(&c.as_str()));
    // Columns the document leaves out are NULL in it: clear them in the store too.
    for c in stored
        .keys()
        .filter(|c| !row.contains_key(*c) && !entity.keep.contains(&c.as_str()))
    {
        values.push((c.clone(), Value::Null));
    }
    plan.writes.push(RowWrite {
        table,
        key,
        values,
        update: true,
    });
    Ok(())
}

fn report(plan: &Plan) -> String {
    let mut out = String::new();
    for line in &plan.lines {
        let _ = writeln!(out, "{line}");
    }
    for entity in ENTITIES {
        let [a, c, u, x] = plan.counts.get(entity.table).copied().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<14} {a} added, {c} changed, {u} unchanged, {x} conflicts",
            entity.table
        );
    }
    out
}

/// `llmux import`: a dry run unless `apply`; with conflicts nothing is applied (an error).
pub async fn import(
    config: Option<PathBuf>,
    from: PathBuf,
    passphrase_env: Option<String>,
    apply: bool,
) -> Result<(), String> {
    let pass = passphrase(passphrase_env.as_deref())?;
    let doc = read_doc(&from, &pass)?;
    let loaded = serve::load(config)?;
    let file_upstreams = loaded
        .config
        .upstreams
        .iter()
        .map(|u| u.name.clone())
        .collect();
    let (store, keys) = open_same_schema(&loaded.config, true).await?;
    let target = read_target(&store, file_upstreams).await?;
    let mut plan = Plan::default();
    for entity in ENTITIES {
        for row in doc.tables.get(entity.table).into_iter().flatten() {
            plan_row(entity, row, &doc, &target, &keys, &mut plan)?;
        }
    }
    say(&report(&plan));
    if plan.conflicts > 0 {
        store.close().await;
        return Err(format!(
            "{} conflict(s): nothing was imported",
            plan.conflicts
        ));
    }
    if !apply {
        store.close().await;
        say("dry run: nothing was changed (run again with --apply to apply)\n");
        return Ok(());
    }
    if plan.writes.is_empty() {
        store.close().await;
        say("nothing to apply: the store already matches the document\n");
        return Ok(());
    }
    let result = apply_plan(&store, &keys, &loaded, &from, &plan).await;
    store.close().await;
    say(&result?);
    Ok(())
}

/// Writes the plan in one transaction, records a revision and an audit event, and tells the
/// other instances on a PostgreSQL store.
async fn apply_plan(
    store: &Store,
    keys: &MasterKeys,
    loaded: &serve::Loaded,
    from: &Path,
    plan: &Plan,
) -> Result<String, String> {
    store
        .apply_rows(&plan.writes)
        .await
        .map_err(|e| format!("import failed, nothing was imported: {e}"))?;
    let note = format!("import of {}", from.display());
    let file = loaded.path.as_deref().zip(loaded.text.as_deref());
    let revision = llmux_admin::record_revision_offline(store, keys, file, "llmux import", &note)
        .await
        .map_err(|e| format!("imported, but the revision was not recorded: {e}"))?;
    let audit = llmux_store::NewAuditEvent {
        actor: "llmux import".into(),
        action: "config.import".into(),
        target_type: "config".into(),
        target_id: Some(revision.to_string()),
        before: None,
        after: Some(json!({ "file": from.display().to_string(), "rows": plan.writes.len() })),
    };
    if let Err(e) = store.record_audit_event(&audit).await {
        tracing::warn!(error = %e, "cannot record the import in the audit log");
    }
    let live = match store.notify("llmux-import", ChangeKind::All, None).await {
        Ok(Some(_)) => "instances on this store apply it within a second".to_owned(),
        Ok(None) => {
            "a running llmux on this SQLite store applies it on SIGHUP or at its next start"
                .to_owned()
        }
        Err(e) => format!(
            "could not tell running instances ({e}): they apply it at their next resync or restart"
        ),
    };
    Ok(format!(
        "applied {} row write(s) in one transaction: config revision {revision}; {live}\n",
        plan.writes.len()
    ))
}
