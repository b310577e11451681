//! End-to-end: `llmux backup` / `restore` while an instance serves calls, and `llmux export` /
//! `import` between instances, on SQLite and (with LLMUX_TEST_POSTGRES_URL) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::{json, Value};
use sqlx::Connection as _;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const PROVIDER_KEY: &str = "sk-live-provider-secret-4242";
const PASS: &str = "correct horse battery staple";

/// A store for one side of a test: its url (SQLite file or PostgreSQL schema).
struct Target {
    url: String,
    dir: tempfile::TempDir,
    _pg: Option<PgSchema>,
}

impl Target {
    /// A fresh store of `kind` with a working directory of its own (config file, key file).
    async fn fresh(kind: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let (url, pg) = match kind {
            "sqlite" => (
                format!("sqlite://{}/data/llmux.db", dir.path().display()),
                None,
            ),
            _ => {
                let pg = PgSchema::create("llmux_bk").await.unwrap();
                (pg.url.clone(), Some(pg))
            }
        };
        std::fs::write(
            dir.path().join("llmux.toml"),
            format!("[store]\nurl = \"{url}\"\n"),
        )
        .unwrap();
        Target { url, dir, _pg: pg }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("llmux.toml")
    }

    /// The master key the restore left: the key file (SQLite: beside the database;
    /// PostgreSQL: `llmux-data/` of the working directory).
    fn key_env(&self) -> Vec<(String, String)> {
        let file = if self.url.starts_with("sqlite") {
            return Vec::new();
        } else {
            self.dir.path().join("llmux-data/master.key")
        };
        let text = std::fs::read_to_string(file).unwrap();
        vec![("LLMUX_MASTER_KEY".into(), text)]
    }
}

/// The stores to test on: SQLite, and PostgreSQL when `LLMUX_TEST_POSTGRES_URL` is set.
fn kinds() -> Vec<&'static str> {
    let pg = std::env::var("LLMUX_TEST_POSTGRES_URL").is_ok_and(|u| !u.is_empty());
    if !pg {
        eprintln!("note: LLMUX_TEST_POSTGRES_URL is unset, skipping PostgreSQL");
    }
    if pg {
        vec!["sqlite", "postgres"]
    } else {
        vec!["sqlite"]
    }
}

/// Runs `llmux ARGS` in `dir` with the passphrase in `LLMUX_BACKUP_PASSPHRASE` (off the async
/// runtime): (success, stdout + stderr).
async fn cli(dir: &Path, args: &[&str], pass: &str) -> (bool, String) {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let pass = pass.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmux"))
            .args(&args)
            .current_dir(&dir)
            .env("LLMUX_BACKUP_PASSPHRASE", pass)
            .env_remove("LLMUX_MASTER_KEY")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .unwrap()
}

/// The ids of the call log of the store at `url`.
async fn call_ids(url: &str) -> BTreeSet<i64> {
    let rows: Vec<(i64,)> = if url.starts_with("sqlite") {
        let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query_as("SELECT id FROM call_log")
            .fetch_all(&mut c)
            .await
            .unwrap()
    } else {
        let mut c = sqlx::PgConnection::connect(url).await.unwrap();
        sqlx::query_as("SELECT id FROM call_log")
            .fetch_all(&mut c)
            .await
            .unwrap()
    };
    rows.into_iter().map(|(id,)| id).collect()
}

/// A chat call with the virtual key: (status, the upstream that answered).
async fn call(gw: &Llmux, model: &str, key: &str) -> (u16, String) {
    let resp = client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat(model, false))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), header(&resp, "x-llmux-upstream"))
}

/// An API upstream `prov` (OpenAI kind, with a provider key), an app and a virtual key on `gw`:
/// returns the key.
async fn api_state(gw: &Llmux, prov_url: &str) -> String {
    let (s, v) = admin(
        gw,
        "POST",
        "/upstreams",
        Some(json!({"name": "prov", "kind": "openai", "url": format!("{prov_url}/v1"), "keys": [PROVIDER_KEY]})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin(gw, "POST", "/apps", Some(json!({"name": "team"}))).await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = admin(
        gw,
        "POST",
        "/keys",
        Some(json!({"name": "ci", "app": "team"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    v["key"].as_str().unwrap().to_string()
}

/// Rebuilds `archive` with its manifest's schema version raised, sealed again under the same
/// passphrase (the archive format: sealed `len | manifest | len | keys | data`).
fn with_newer_schema(archive: &[u8]) -> Vec<u8> {
    let payload = llmux_store::open_archive(PASS, archive).unwrap();
    let len = u32::from_be_bytes(payload[..4].try_into().unwrap()) as usize;
    let mut manifest: Value = serde_json::from_slice(&payload[4..4 + len]).unwrap();
    manifest["schema_version"] = json!(manifest["schema_version"].as_i64().unwrap() + 1);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let mut out = (manifest.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&manifest);
    out.extend_from_slice(&payload[4 + len..]);
    llmux_store::seal_archive(PASS, &out).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_under_load_restores_every_logged_call_and_serves() {
    for kind in kinds() {
        let mut pc = node("prov", &["gpt-4o-mini"]);
        pc.api_key = Some(PROVIDER_KEY.into());
        let prov = llmux_mock::MockServer::start(pc).await.unwrap();
        let gpu = llmux_mock::MockServer::start(node("gpu-a", &["llama3:latest"]))
            .await
            .unwrap();
        let source = Target::fresh(kind).await;
        let body = format!("[auth]\nrequired = true\n{}", ollama("gpu-a", &gpu.url()));
        let gw = Arc::new(Llmux::start_opts(Opts {
            body: body.clone(),
            admin_extra: "allow_private_upstreams = true".into(),
            store_url: Some(source.url.clone()),
            ..Opts::default()
        }));
        let key = api_state(&gw, &prov.url()).await;

        // Calls in a loop until the backup is done.
        let stop = Arc::new(AtomicBool::new(false));
        let load = {
            let (gw, key, stop) = (Arc::clone(&gw), key.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let model = if n.is_multiple_of(2) {
                        "gpt-4o-mini"
                    } else {
                        "llama3"
                    };
                    let (s, _) = call(&gw, model, &key).await;
                    assert_eq!(s, 200, "call {n} to {model}");
                    n += 1;
                }
                n
            })
        };
        eventually(Duration::from_secs(60), "calls in the log", async || {
            call_ids(&source.url).await.len() >= 10
        })
        .await;
        let before = call_ids(&source.url).await;
        let archive = source.dir.path().join("backup.llmux");
        let cfg = gw.config_path();
        let (ok, out) = cli(
            gw.dir.path(),
            &[
                "backup",
                "--config",
                cfg.to_str().unwrap(),
                "--to",
                archive.to_str().unwrap(),
            ],
            PASS,
        )
        .await;
        assert!(ok, "{kind}: {out}");
        let after = call_ids(&source.url).await;
        stop.store(true, Ordering::Relaxed);
        let calls = load.await.unwrap();
        assert!(
            after.len() > before.len(),
            "{kind}: calls were logged during the backup"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&archive).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{kind}: the archive is private");
        let bytes = std::fs::read(&archive).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PROVIDER_KEY) && !text.contains("CREATE TABLE"),
            "{kind}: sealed"
        );

        // Refusals first, on fresh targets: nothing is created or changed.
        let fresh = Target::fresh(kind).await;
        let cfg = fresh.config();
        let from = ["restore", "--config", cfg.to_str().unwrap(), "--from"];
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[archive.to_str().unwrap()]].concat(),
            "wrong passphrase",
        )
        .await;
        assert!(!ok && out.contains("wrong passphrase"), "{kind}: {out}");
        let newer = fresh.dir.path().join("newer.llmux");
        std::fs::write(&newer, with_newer_schema(&bytes)).unwrap();
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[newer.to_str().unwrap()]].concat(),
            PASS,
        )
        .await;
        assert!(
            !ok && out.contains("newer than this llmux"),
            "{kind}: {out}"
        );
        let mut altered = bytes.clone();
        let mid = altered.len() / 2;
        altered[mid] ^= 0x40;
        std::fs::write(&newer, &altered).unwrap();
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[newer.to_str().unwrap()]].concat(),
            PASS,
        )
        .await;
        assert!(!ok && out.contains("altered"), "{kind}: {out}");
        assert!(
            !fresh.dir.path().join("data").exists(),
            "{kind}: nothing was written"
        );
        assert!(
            !fresh.dir.path().join("llmux-data").exists(),
            "{kind}: no key written"
        );
        // A different master key where the restore would put the archive's: refused.
        let key_dir = match kind {
            "sqlite" => fresh.dir.path().join("data"),
            _ => fresh.dir.path().join("llmux-data"),
        };
        std::fs::create_dir_all(&key_dir).unwrap();
        let other_key = llmux_store::MasterKey::generate().to_base64();
        std::fs::write(key_dir.join("master.key"), &other_key).unwrap();
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[archive.to_str().unwrap()]].concat(),
            PASS,
        )
        .await;
        assert!(!ok && out.contains("different master key"), "{kind}: {out}");
        assert_eq!(
            std::fs::read_to_string(key_dir.join("master.key")).unwrap(),
            other_key
        );
        assert!(
            !key_dir.join("llmux.db").exists(),
            "{kind}: no store created"
        );
        std::fs::remove_dir_all(&key_dir).unwrap();
        if kind == "postgres" {
            assert!(
                call_ids_absent(&fresh.url).await,
                "{kind}: the schema stays empty"
            );
        }

        // The restore proper, then a second restore into the now non-empty store is refused.
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[archive.to_str().unwrap()]].concat(),
            PASS,
        )
        .await;
        assert!(ok, "{kind}: {out}");
        let restored = call_ids(&fresh.url).await;
        assert!(
            before.is_subset(&restored),
            "{kind}: every call logged before the backup"
        );
        assert!(
            restored.is_subset(&after),
            "{kind}: a snapshot of the store, no more"
        );
        let (ok, out) = cli(
            fresh.dir.path(),
            &[&from[..], &[archive.to_str().unwrap()]].concat(),
            PASS,
        )
        .await;
        assert!(!ok && out.contains("not empty"), "{kind}: {out}");
        assert_eq!(call_ids(&fresh.url).await, restored, "{kind}: unchanged");
        eprintln!(
            "{kind}: {calls} calls during the test, {} logged before the backup, {} restored, {} after",
            before.len(),
            restored.len(),
            after.len()
        );

        // A new instance on the restored store serves every virtual key and upstream.
        serves_restored(&fresh, &body, &key, &restored).await;

        // A SQLite archive restores into PostgreSQL too (0/1 become booleans, the identity
        // sequences move past the restored ids).
        if kind == "sqlite" && kinds().contains(&"postgres") {
            let pg = Target::fresh("postgres").await;
            let cfg = pg.config();
            let args = [
                "restore",
                "--config",
                cfg.to_str().unwrap(),
                "--from",
                archive.to_str().unwrap(),
            ];
            let (ok, out) = cli(pg.dir.path(), &args, PASS).await;
            assert!(ok, "sqlite → postgres: {out}");
            assert_eq!(call_ids(&pg.url).await, restored, "sqlite → postgres");
            serves_restored(&pg, &body, &key, &restored).await;
        }
    }
}

/// An instance on the restored store `target` serves the virtual key through both upstreams
/// and logs new calls after the restored ones.
async fn serves_restored(target: &Target, body: &str, key: &str, restored: &BTreeSet<i64>) {
    let b = Llmux::start_opts(Opts {
        body: body.to_string(),
        admin_extra: "allow_private_upstreams = true".into(),
        store_url: Some(target.url.clone()),
        env: target.key_env(),
        ..Opts::default()
    });
    let url = &target.url;
    assert_eq!(
        call(&b, "gpt-4o-mini", key).await,
        (200, "prov".into()),
        "{url}"
    );
    assert_eq!(
        call(&b, "llama3", key).await,
        (200, "gpu-a".into()),
        "{url}"
    );
    assert_eq!(call(&b, "llama3", "sk-llmux-nope").await.0, 401, "{url}");
    eventually(Duration::from_secs(30), "new calls logged", async || {
        call_ids(url).await.len() >= restored.len() + 2
    })
    .await;
}

/// Whether the PostgreSQL schema at `url` has no call_log table (nothing was migrated).
async fn call_ids_absent(url: &str) -> bool {
    let mut c = sqlx::PgConnection::connect(url).await.unwrap();
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    n == 0
}

/// Where each model goes on `gw` with `key`.
async fn routes(gw: &Llmux, key: &str) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for model in ["alpha", "beta", "fast"] {
        out.push(call(gw, model, key).await);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_import_reproduces_routing_and_refuses_conflicts() {
    for kind in kinds() {
        let mut oc = node("one", &["alpha"]);
        oc.api_key = Some(PROVIDER_KEY.into());
        let one = llmux_mock::MockServer::start(oc).await.unwrap();
        let two = llmux_mock::MockServer::start(node("two", &["beta"]))
            .await
            .unwrap();
        let start = |url: &str, body: &str, env: Vec<(String, String)>| {
            Llmux::start_opts(Opts {
                body: format!("[auth]\nrequired = true\n{body}"),
                admin_extra: "allow_private_upstreams = true".into(),
                store_url: Some(url.to_string()),
                env,
                ..Opts::default()
            })
        };
        let source = Target::fresh(kind).await;
        let a = start(&source.url, "", Vec::new());
        for (name, kind_, url, keys) in [
            (
                "up-one",
                "openai",
                format!("{}/v1", one.url()),
                vec![PROVIDER_KEY],
            ),
            ("up-two", "ollama", two.url(), vec![]),
        ] {
            let (s, v) = admin(
                &a,
                "POST",
                "/upstreams",
                Some(json!({"name": name, "kind": kind_, "url": url, "keys": keys})),
            )
            .await;
            assert_eq!(s, 201, "{v}");
        }
        let (s, v) = admin(
            &a,
            "POST",
            "/aliases",
            Some(json!({"name": "fast", "targets": ["beta"]})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
        let (s, _) = admin(&a, "POST", "/apps", Some(json!({"name": "team"}))).await;
        assert_eq!(s, 201);
        let (_, k) = admin(
            &a,
            "POST",
            "/keys",
            Some(json!({"name": "ci", "app": "team"})),
        )
        .await;
        let key = k["key"].as_str().unwrap().to_string();
        let before = routes(&a, &key).await;
        assert_eq!(
            before,
            [
                (200, "up-one".into()),
                (200, "up-two".into()),
                (200, "up-two".into())
            ]
        );

        // A drain is runtime state of this environment: it must not travel with the document.
        let (s, v) = admin(&a, "POST", "/upstreams/up-two/drain", None).await;
        assert_eq!(s, 200, "{v}");

        let json_doc = source.dir.path().join("config.json");
        let toml_doc = source.dir.path().join("config.toml");
        for doc in [&json_doc, &toml_doc] {
            let cfg = a.config_path();
            let (ok, out) = cli(
                a.dir.path(),
                &[
                    "export",
                    "--config",
                    cfg.to_str().unwrap(),
                    "--to",
                    doc.to_str().unwrap(),
                ],
                PASS,
            )
            .await;
            assert!(ok, "{kind}: {out}");
            let text = std::fs::read_to_string(doc).unwrap();
            assert!(
                !text.contains(PROVIDER_KEY) && !text.contains(&key),
                "{kind}: no secret in clear"
            );
            assert!(
                text.contains("version") && text.contains("up-one"),
                "{text}"
            );
            assert!(
                !text.contains("runtime."),
                "{kind}: a drain exported: {text}"
            );
        }

        // A fresh instance: a dry run changes nothing, a wrong passphrase applies nothing.
        let target = Target::fresh(kind).await;
        let b = start(&target.url, "", Vec::new());
        let cfg = b.config_path();
        let import = |doc: &Path, apply: bool| {
            let mut args = vec![
                "import".to_string(),
                "--config".into(),
                cfg.display().to_string(),
                "--from".into(),
                doc.display().to_string(),
            ];
            if apply {
                args.push("--apply".into());
            }
            args
        };
        let args = import(&toml_doc, false);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = cli(b.dir.path(), &args, PASS).await;
        assert!(
            ok && out.contains("+ upstreams") && out.contains("dry run"),
            "{kind}: {out}"
        );
        let args = import(&json_doc, true);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, out) = cli(b.dir.path(), &args, "not the passphrase").await;
        assert!(!ok && out.contains("wrong passphrase"), "{kind}: {out}");
        let (_, ups) = admin(&b, "GET", "/upstreams", None).await;
        assert!(
            !ups.to_string().contains("up-one"),
            "{kind}: nothing applied: {ups}"
        );
        assert_eq!(
            call(&b, "alpha", &key).await.0,
            401,
            "{kind}: the key is not there yet"
        );

        // --apply: the same routing, the same key, a revision; live on SIGHUP (SQLite) or
        // through the change notification (PostgreSQL).
        let (ok, out) = cli(b.dir.path(), &args, PASS).await;
        assert!(ok && out.contains("config revision"), "{kind}: {out}");
        if kind == "sqlite" {
            b.signal("HUP");
        }
        eventually(
            Duration::from_secs(20),
            "the imported routing",
            async || routes(&b, &key).await == before,
        )
        .await;
        let (_, revs) = admin(&b, "GET", "/config/revisions", None).await;
        assert!(revs.to_string().contains("llmux import"), "{kind}: {revs}");
        let (ok, out) = cli(b.dir.path(), &args, PASS).await;
        assert!(
            ok && out.contains("already matches"),
            "{kind}: a second import is a no-op: {out}"
        );
        // A change made on B since: the import names it and puts the document's value back.
        let (s, v) = admin(
            &b,
            "PATCH",
            "/aliases/fast",
            Some(json!({"targets": ["alpha"]})),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(call(&b, "fast", &key).await, (200, "up-one".into()));
        let (ok, out) = cli(b.dir.path(), &args, PASS).await;
        assert!(
            ok && out.contains("~ aliases") && out.contains("targets"),
            "{kind}: {out}"
        );
        assert!(out.contains("1 changed"), "{kind}: {out}");
        if kind == "sqlite" {
            b.signal("HUP");
        }
        eventually(
            Duration::from_secs(20),
            "the alias imported back",
            async || call(&b, "fast", &key).await == (200, "up-two".to_string()),
        )
        .await;

        // A conflicting document (up-one is in this instance's config file) changes nothing.
        let other = Target::fresh(kind).await;
        let c = start(&other.url, &ollama("up-one", &two.url()), Vec::new());
        let cfg = c.config_path();
        let args = [
            "import",
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            json_doc.to_str().unwrap(),
            "--apply",
        ];
        let (ok, out) = cli(c.dir.path(), &args, PASS).await;
        assert!(
            !ok && out.contains("conflict") && out.contains("config file"),
            "{kind}: {out}"
        );
        let (_, apps) = admin(&c, "GET", "/apps", None).await;
        assert!(
            !apps.to_string().contains("team"),
            "{kind}: nothing applied: {apps}"
        );
        let (_, aliases) = admin(&c, "GET", "/aliases", None).await;
        assert!(!aliases.to_string().contains("fast"), "{kind}: {aliases}");

        // A document that carries a drain (hand-edited) is refused: runtime state is not
        // configuration, and nothing of the document is applied.
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json_doc).unwrap()).unwrap();
        let settings = doc
            .as_object_mut()
            .unwrap()
            .entry("settings")
            .or_insert_with(|| json!([]));
        settings.as_array_mut().unwrap().push(json!({
            "key": "runtime.drain.up-two",
            "value": {"since": 1, "actor": "staging"},
        }));
        let drained_doc = other.dir.path().join("drained.json");
        std::fs::write(&drained_doc, doc.to_string()).unwrap();
        let fresh = Target::fresh(kind).await;
        let d = start(&fresh.url, "", Vec::new());
        let cfg = d.config_path();
        let args = [
            "import",
            "--config",
            cfg.to_str().unwrap(),
            "--from",
            drained_doc.to_str().unwrap(),
            "--apply",
        ];
        let (ok, out) = cli(d.dir.path(), &args, PASS).await;
        assert!(
            !ok && out.contains("runtime.drain.up-two") && out.contains("runtime state"),
            "{kind}: {out}"
        );
        let (_, ups) = admin(&d, "GET", "/upstreams", None).await;
        assert!(!ups.to_string().contains("up-one"), "{kind}: {ups}");
    }
}
