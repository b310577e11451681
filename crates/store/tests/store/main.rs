//! Store integration tests, each run on SQLite and (with LLMUX_TEST_POSTGRES_URL) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod harness;
mod notify;
mod security;

use std::os::unix::fs::PermissionsExt as _;

use harness::backends;
use llmux_config::Secret;
use llmux_store::{
    sealed_key_id, AppPatch, CallFilter, CallRecord, KeyLimits, KeyState, KeyStatus, MasterKey,
    MasterKeys, ModelOrigin, NewApp, NewAuditEvent, NewConfigRevision, NewModel, NewUpstream,
    NewVirtualKey, Role, Source, Store, StoreError, UsageGroup, UsageQuery, VirtualKeyUpdate,
};
use serde_json::json;

fn upstream(name: &str) -> NewUpstream {
    NewUpstream {
        name: name.to_owned(),
        kind: "openai".to_owned(),
        url: "https://api.example.com/v1".to_owned(),
        weight: 1,
        models: Some(vec!["gpt-4o".to_owned()]),
        timeouts: json!({"connect_ms": 5000, "total_ms": null}),
        enabled: true,
        source: Source::Api,
        api_version: None,
        options: json!({"max_tokens_field": "max_tokens", "max_output_tokens": {"m": 100}}),
    }
}

fn app(name: &str) -> NewApp {
    NewApp {
        name: name.to_owned(),
        credits: Some(10.5),
        daily_budget: Some(2.0),
        monthly_budget: None,
    }
}

fn call(i: usize, app_id: Option<&str>) -> CallRecord {
    let i = i64::try_from(i).unwrap();
    CallRecord {
        created_at: 1_700_000_000_000 + i,
        request_id: format!("req-{i}"),
        call_id: None,
        app_id: app_id.map(str::to_owned),
        virtual_key_id: Some("vk_x".to_owned()),
        dialect: "openai".to_owned(),
        requested_model: "gpt-4o".to_owned(),
        upstream: Some("primary".to_owned()),
        upstream_model: Some("gpt-4o-2024".to_owned()),
        provider_key_id: None,
        status: if i % 10 == 0 { 502 } else { 200 },
        error_class: (i % 10 == 0).then(|| "upstream_error".to_owned()),
        attempts: 1 + i % 3,
        latency_ms: 100 + i,
        ttft_ms: Some(20),
        input_tokens: Some(12),
        output_tokens: None,
        tokens_estimated: i % 2 == 0,
        cost: Some(0.001),
        client_ip: Some("127.0.0.1".to_owned()),
        request_body: None,
        response_body: None,
        chunks: Some(7),
        reported_model: Some("gpt-4o-2024-08-06".to_owned()),
        attempt_log: Vec::new(),
        stream: None,
        hook: None,
        cache_hit: false,
        cached_tokens: None,
        cache_write_tokens: None,
        reasoning_tokens: None,
    }
}

const PLAINTEXT_KEY: &str = "sk-proj-PLAINTEXTsecretVALUE-0123456789abcdef";

#[tokio::test]
async fn migrations_are_idempotent() {
    for db in backends().await {
        // backends() already migrated once; twice more, and from a second pool.
        db.store.migrate().await.unwrap();
        db.store.migrate().await.unwrap();
        let other = Store::connect(&db.url).await.unwrap();
        other.migrate().await.unwrap();
        other.close().await;
        // One row per migration file (counted, so that adding a migration needs no edit here).
        let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"))
            .unwrap()
            .count();
        assert_eq!(
            db.raw_count("SELECT COUNT(*) FROM _sqlx_migrations").await,
            i64::try_from(files).unwrap(),
            "{}",
            db.label()
        );
        assert_eq!(db.store.count_calls().await.unwrap(), 0);
    }
}

#[tokio::test]
async fn unsupported_urls_are_rejected() {
    let err = Store::connect("mysql://user:pw@localhost/db")
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Url(ref u) if !u.contains("pw")),
        "{err}"
    );
}

#[tokio::test]
async fn in_memory_sqlite_works() {
    let store = Store::connect("sqlite::memory:").await.unwrap();
    store.migrate().await.unwrap();
    store.create_upstream(&upstream("mem")).await.unwrap();
    assert_eq!(store.list_upstreams().await.unwrap().len(), 1);
}

#[tokio::test]
async fn upstream_crud_and_conflicts() {
    for db in backends().await {
        let s = &db.store;
        let a = s.create_upstream(&upstream("alpha")).await.unwrap();
        assert!(a.id.starts_with("up_"));
        assert_eq!(a.name, "alpha");
        assert_eq!(a.models, Some(vec!["gpt-4o".to_owned()]));
        assert_eq!(a.timeouts, json!({"connect_ms": 5000, "total_ms": null}));
        assert!(a.enabled);
        assert_eq!(a.source, Source::Api);
        assert_eq!(a.options["max_output_tokens"]["m"], 100);
        assert_eq!(s.get_upstream(&a.id).await.unwrap(), a);
        assert_eq!(s.get_upstream_by_name("alpha").await.unwrap(), a);

        let err = s.create_upstream(&upstream("alpha")).await.unwrap_err();
        assert!(
            matches!(err, StoreError::Conflict(ref m) if m.contains("alpha")),
            "{err}"
        );

        let b = s.create_upstream(&upstream("beta")).await.unwrap();
        let mut changed = upstream("beta2");
        changed.models = None;
        changed.enabled = false;
        changed.weight = 7;
        changed.source = Source::File;
        changed.options = serde_json::Value::Null;
        let b2 = s.update_upstream(&b.id, &changed).await.unwrap();
        assert_eq!(b2.options, serde_json::Value::Null, "options cleared");
        assert_eq!(
            (b2.name.as_str(), b2.models.clone(), b2.enabled, b2.weight),
            ("beta2", None, false, 7)
        );
        assert_eq!(b2.source, Source::File);
        assert_eq!(b2.created_at, b.created_at);
        let err = s
            .update_upstream(&b.id, &upstream("alpha"))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(matches!(
            s.update_upstream("up_missing", &changed).await,
            Err(StoreError::NotFound)
        ));

        let names: Vec<String> = s
            .list_upstreams()
            .await
            .unwrap()
            .into_iter()
            .map(|u| u.name)
            .collect();
        assert_eq!(names, ["alpha", "beta2"]);

        s.delete_upstream(&a.id).await.unwrap();
        assert!(matches!(
            s.get_upstream(&a.id).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.delete_upstream(&a.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn provider_keys_round_trip_and_are_not_stored_in_plaintext() {
    let keys = MasterKeys::new(MasterKey::generate());
    for db in backends().await {
        let s = &db.store;
        let up = s.create_upstream(&upstream("primary")).await.unwrap();
        let secret = Secret::new(PLAINTEXT_KEY);
        let key = s.create_provider_key(&keys, &up.id, &secret).await.unwrap();
        assert!(key.id.starts_with("pk_"));
        assert_eq!(key.masked, secret.masked());
        assert_eq!(key.state, KeyState::Ok);
        assert_eq!(s.get_provider_key(&key.id).await.unwrap(), key);
        assert_eq!(
            s.reveal_provider_key(&keys, &key.id)
                .await
                .unwrap()
                .expose(),
            PLAINTEXT_KEY
        );
        let all = s.reveal_provider_keys(&keys, Some(&up.id)).await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, key);
        assert_eq!(all[0].1.expose(), PLAINTEXT_KEY);

        // What is really stored.
        let raw = db
            .raw_pairs("SELECT id, ciphertext FROM provider_keys")
            .await;
        assert_eq!(raw.len(), 1);
        assert!(!raw[0].1.contains(PLAINTEXT_KEY), "{}", db.label());
        assert!(!raw[0].1.contains("PLAINTEXTsecret"));
        assert!(raw[0]
            .1
            .starts_with(&format!("v1:{}:", keys.current().id())));
        if let Some(file) = &db.sqlite_file {
            // The database file and its WAL, byte for byte.
            for path in [file.clone(), file.with_extension("db-wal")] {
                if let Ok(bytes) = std::fs::read(&path) {
                    let needle = b"PLAINTEXTsecret";
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle),
                        "plaintext found in {}",
                        path.display()
                    );
                    assert!(!bytes.is_empty());
                }
            }
        }

        // A wrong master key cannot decrypt.
        let other = MasterKeys::new(MasterKey::generate());
        assert!(matches!(
            s.reveal_provider_key(&other, &key.id).await,
            Err(StoreError::Decrypt(_))
        ));

        // Foreign key: no such upstream.
        let err = s
            .create_provider_key(&keys, "up_missing", &secret)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::MissingReference(_)), "{err}");

        let disabled = s
            .set_provider_key_state(&key.id, KeyState::Disabled, Some("401 from upstream"))
            .await
            .unwrap();
        assert_eq!(disabled.state, KeyState::Disabled);
        assert_eq!(
            disabled.disabled_reason.as_deref(),
            Some("401 from upstream")
        );
        let ok = s
            .set_provider_key_state(&key.id, KeyState::Ok, Some("ignored"))
            .await
            .unwrap();
        assert_eq!((ok.state, ok.disabled_reason), (KeyState::Ok, None));

        let second = s
            .create_provider_key(&keys, &up.id, &Secret::new("short"))
            .await
            .unwrap();
        assert_eq!(second.masked, "***");
        assert_eq!(s.list_provider_keys(Some(&up.id)).await.unwrap().len(), 2);
        s.delete_provider_key(&second.id).await.unwrap();
        assert!(matches!(
            s.delete_provider_key(&second.id).await,
            Err(StoreError::NotFound)
        ));

        // Deleting the upstream cascades to its keys.
        s.delete_upstream(&up.id).await.unwrap();
        assert!(s.list_provider_keys(None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn ciphertext_moved_to_another_row_fails_to_decrypt() {
    let keys = MasterKeys::new(MasterKey::generate());
    for db in backends().await {
        let s = &db.store;
        let up1 = s.create_upstream(&upstream("one")).await.unwrap();
        let up2 = s.create_upstream(&upstream("two")).await.unwrap();
        let k1 = s
            .create_provider_key(&keys, &up1.id, &Secret::new("sk-first-key-aaaaaaaa"))
            .await
            .unwrap();
        let k2 = s
            .create_provider_key(&keys, &up2.id, &Secret::new("sk-second-key-bbbbbbb"))
            .await
            .unwrap();
        let k3 = s
            .create_provider_key(&keys, &up1.id, &Secret::new("sk-third-key-ccccccc"))
            .await
            .unwrap();
        // Copy k1's ciphertext into k2 (other upstream) and k3 (same upstream, other id).
        db.raw_exec(
            "UPDATE provider_keys SET ciphertext = (SELECT ciphertext FROM provider_keys WHERE id = $1) WHERE id = $2",
            &k1.id,
            &k2.id,
        )
        .await;
        db.raw_exec(
            "UPDATE provider_keys SET ciphertext = (SELECT ciphertext FROM provider_keys WHERE id = $1) WHERE id = $2",
            &k1.id,
            &k3.id,
        )
        .await;
        assert_eq!(
            s.reveal_provider_key(&keys, &k1.id).await.unwrap().expose(),
            "sk-first-key-aaaaaaaa"
        );
        for moved in [&k2.id, &k3.id] {
            let err = s.reveal_provider_key(&keys, moved).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Decrypt(_)),
                "{}: {err}",
                db.label()
            );
        }
        // Rotation refuses to touch anything while a key cannot be decrypted.
        let next = MasterKeys::new(MasterKey::generate()).with_previous(keys.current().clone());
        assert!(matches!(
            s.rotate_secrets(&next).await,
            Err(StoreError::Decrypt(_))
        ));
        let raw = db
            .raw_pairs("SELECT id, ciphertext FROM provider_keys")
            .await;
        assert!(raw
            .iter()
            .all(|(_, c)| sealed_key_id(c) == Some(keys.current().id())));
    }
}

#[tokio::test]
async fn rotation_re_encrypts_under_the_current_key() {
    let old = MasterKey::generate();
    let old_keys = MasterKeys::new(old.clone());
    for db in backends().await {
        let s = &db.store;
        let up = s.create_upstream(&upstream("rot")).await.unwrap();
        let mut ids = Vec::new();
        for i in 0..5 {
            let key = s
                .create_provider_key(
                    &old_keys,
                    &up.id,
                    &Secret::new(format!("sk-rotate-me-{i:04}")),
                )
                .await
                .unwrap();
            ids.push(key.id);
        }
        let new = MasterKey::generate();
        let keys = MasterKeys::new(new.clone()).with_previous(old.clone());
        assert_eq!(s.rotate_secrets(&keys).await.unwrap(), 5);

        let raw = db
            .raw_pairs("SELECT id, ciphertext FROM provider_keys")
            .await;
        assert_eq!(raw.len(), 5);
        for (_, ciphertext) in &raw {
            assert_eq!(sealed_key_id(ciphertext), Some(new.id()));
            assert!(!ciphertext.contains(old.id()), "{}", db.label());
        }
        // The new key alone now decrypts everything; the old key alone decrypts nothing.
        let only_new = MasterKeys::new(new.clone());
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(
                s.reveal_provider_key(&only_new, id).await.unwrap().expose(),
                format!("sk-rotate-me-{i:04}")
            );
            assert!(s.reveal_provider_key(&old_keys, id).await.is_err());
        }
        // Rotating again is harmless.
        assert_eq!(s.rotate_secrets(&only_new).await.unwrap(), 5);
    }
}

#[test]
fn master_key_file_is_created_with_mode_0600() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("secrets").join("master.key");
    let (keys, created) = MasterKeys::load_or_create(&path).unwrap();
    assert!(created);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (again, created) = MasterKeys::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(again.current().id(), keys.current().id());
    assert_eq!(keys.current().id().len(), 8);

    // A rotated file: new key first, old key kept for decryption.
    let sealed = keys.encrypt(b"x", b"aad").unwrap();
    let rotated_path = dir.path().join("rotated.key");
    let new = MasterKey::generate();
    std::fs::write(
        &rotated_path,
        format!("{}\n{}\n", new.to_base64(), keys.current().to_base64()),
    )
    .unwrap();
    let rotated = MasterKeys::load(&rotated_path).unwrap();
    assert_eq!(rotated.current().id(), new.id());
    assert_eq!(rotated.decrypt(&sealed, b"aad").unwrap(), b"x");

    std::fs::write(&rotated_path, "not a key\n").unwrap();
    assert!(matches!(
        MasterKeys::load(&rotated_path),
        Err(StoreError::MasterKey(_))
    ));
}

#[tokio::test]
async fn models_crud_and_conflicts() {
    for db in backends().await {
        let s = &db.store;
        let up = s.create_upstream(&upstream("m-up")).await.unwrap();
        let new = NewModel {
            name: "gpt-4o".to_owned(),
            upstream_id: Some(up.id.clone()),
            enabled: true,
            origin: ModelOrigin::Declared,
            original_name: None,
        };
        let m = s.create_model(&new).await.unwrap();
        assert!(m.id.starts_with("md_"));
        assert_eq!(s.get_model(&m.id).await.unwrap(), m);
        assert!(matches!(
            s.create_model(&new).await,
            Err(StoreError::Conflict(_))
        ));

        // Same name without upstream: allowed once, then a conflict too.
        let global = NewModel {
            upstream_id: None,
            origin: ModelOrigin::Discovered,
            ..new.clone()
        };
        let g = s.create_model(&global).await.unwrap();
        assert_eq!(g.upstream_id, None);
        assert_eq!(g.origin, ModelOrigin::Discovered);
        assert!(matches!(
            s.create_model(&global).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            s.create_model(&NewModel {
                upstream_id: Some("up_missing".to_owned()),
                ..new.clone()
            })
            .await,
            Err(StoreError::MissingReference(_))
        ));

        let updated = s
            .update_model(
                &m.id,
                &NewModel {
                    name: "gpt-4o-mini".to_owned(),
                    enabled: false,
                    ..new.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.enabled),
            ("gpt-4o-mini", false)
        );
        assert_eq!(s.list_models(Some(&up.id)).await.unwrap().len(), 1);
        assert_eq!(s.list_models(None).await.unwrap().len(), 2);
        s.delete_model(&g.id).await.unwrap();
        assert!(matches!(
            s.get_model(&g.id).await,
            Err(StoreError::NotFound)
        ));
        // Cascade from the upstream.
        s.delete_upstream(&up.id).await.unwrap();
        assert!(s.list_models(None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn aliases_crud_and_conflicts() {
    for db in backends().await {
        let s = &db.store;
        let targets = vec!["b-model".to_owned(), "a-model".to_owned()];
        let a = s.create_alias("smart", &targets).await.unwrap();
        assert!(a.id.starts_with("al_"));
        assert_eq!(a.targets, targets, "order kept");
        assert_eq!(s.get_alias_by_name("smart").await.unwrap(), a);
        assert!(matches!(
            s.create_alias("smart", &[]).await,
            Err(StoreError::Conflict(_))
        ));
        let other = s.create_alias("fast", &[]).await.unwrap();
        let updated = s
            .update_alias(&a.id, "smarter", &["c".to_owned()])
            .await
            .unwrap();
        assert_eq!(
            (updated.name.as_str(), updated.targets.len()),
            ("smarter", 1)
        );
        assert!(matches!(
            s.update_alias(&other.id, "smarter", &[]).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.list_aliases().await.unwrap().len(), 2);
        s.delete_alias(&a.id).await.unwrap();
        assert!(matches!(
            s.get_alias(&a.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn apps_crud_and_conflicts() {
    for db in backends().await {
        let s = &db.store;
        let a = s.create_app(&app("team-a")).await.unwrap();
        assert!(a.id.starts_with("app_"));
        assert_eq!(
            (a.credits, a.daily_budget, a.monthly_budget),
            (Some(10.5), Some(2.0), None)
        );
        assert_eq!(s.get_app(&a.id).await.unwrap(), a);
        assert_eq!(s.get_app_by_name("team-a").await.unwrap(), a);
        assert!(matches!(
            s.create_app(&app("team-a")).await,
            Err(StoreError::Conflict(_))
        ));
        let updated = s
            .update_app(
                &a.id,
                &NewApp {
                    monthly_budget: Some(50.0),
                    daily_budget: None,
                    ..app("team-a2")
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (
                updated.name.as_str(),
                updated.daily_budget,
                updated.monthly_budget
            ),
            ("team-a2", None, Some(50.0))
        );
        assert_eq!(s.add_app_credits(&a.id, -0.5).await.unwrap(), 10.0);
        assert!(matches!(
            s.add_app_credits("app_missing", 1.0).await,
            Err(StoreError::NotFound)
        ));
        assert_eq!(s.list_apps().await.unwrap().len(), 1);
        s.delete_app(&a.id).await.unwrap();
        assert!(matches!(
            s.delete_app(&a.id).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn a_patch_changes_only_what_it_names_and_keeps_concurrent_charges() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        let a = s.create_app(&app("patched")).await.unwrap();
        // A charge lands between an admin's read and its PATCH: the PATCH must not write back
        // the balance it read.
        s.record_calls(&[call(1, Some(&a.id))]).await.unwrap();
        let p = s
            .patch_app(
                &a.id,
                &AppPatch {
                    monthly_budget: Some(Some(9.0)),
                    daily_budget: Some(None),
                    ..AppPatch::default()
                },
            )
            .await
            .unwrap();
        assert!((p.credits.unwrap() - 10.499).abs() < 1e-9, "{label}: {p:?}");
        assert_eq!(
            (p.daily_budget, p.monthly_budget),
            (None, Some(9.0)),
            "{label}"
        );
        assert_eq!(p.name, "patched");
        let p = s
            .patch_app(
                &a.id,
                &AppPatch {
                    name: Some("renamed".into()),
                    credits: Some(None),
                    ..AppPatch::default()
                },
            )
            .await
            .unwrap();
        assert_eq!((p.name.as_str(), p.credits), ("renamed", None), "{label}");
        // Not metered: charges leave it so; a top-up starts metering.
        let balances = s.record_calls(&[call(2, Some(&a.id))]).await.unwrap();
        assert!(balances.is_empty(), "{label}: {balances:?}");
        assert_eq!(s.get_app(&a.id).await.unwrap().credits, None);
        let t = s.top_up_app(&a.id, 5.0).await.unwrap();
        assert_eq!(t.credits, Some(5.0), "{label}");
        let t = s.top_up_app(&a.id, 2.5).await.unwrap();
        assert_eq!(t.credits, Some(7.5), "{label}");
        assert!(matches!(
            s.top_up_app("app_missing", 1.0).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            s.patch_app("app_missing", &AppPatch::default()).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn virtual_keys_create_verify_expire_revoke() {
    for db in backends().await {
        let s = &db.store;
        let a = s.create_app(&app("vk-app")).await.unwrap();
        let limits = KeyLimits {
            rpm: Some(60),
            tpm: Some(100_000),
            concurrency: None,
            models: Default::default(),
        };
        let (key, full) = s
            .create_virtual_key(&NewVirtualKey {
                app_id: a.id.clone(),
                name: "ci".to_owned(),
                models: Some(vec!["gpt-4o".to_owned()]),
                limits: limits.clone(),
                expires_at: None,
            })
            .await
            .unwrap();
        assert!(key.id.starts_with("vk_"));
        assert_eq!(full, format!("sk-llmux-{}-{}", key.public_id, &full[22..]));
        assert_eq!(key.public_id.len(), 12);
        assert_eq!(full.len(), "sk-llmux-".len() + 12 + 1 + 32);
        assert_eq!(key.limits, limits);

        // The secret is not stored.
        let secret = full.rsplit('-').next().unwrap().to_owned();
        let raw = db
            .raw_pairs("SELECT public_id, secret_hash FROM virtual_keys")
            .await;
        assert!(!raw[0].1.contains(&secret));

        let ok = s.verify_virtual_key(&full).await.unwrap().unwrap();
        assert_eq!(ok.status, KeyStatus::Active);
        assert!(ok.is_active());
        assert_eq!(ok.key, key);

        // Wrong secret, unknown public id, malformed.
        let mut wrong = full.clone();
        let last = wrong.pop().unwrap();
        wrong.push(if last == 'a' { 'b' } else { 'a' });
        assert!(s.verify_virtual_key(&wrong).await.unwrap().is_none());
        assert!(s
            .verify_virtual_key(&format!("sk-llmux-AAAAAAAAAAAA-{secret}"))
            .await
            .unwrap()
            .is_none());
        for bad in [
            "",
            "sk-llmux-",
            "Bearer x",
            "sk-llmux-abc",
            "sk-llmux-a-b-c",
        ] {
            assert!(s.verify_virtual_key(bad).await.unwrap().is_none(), "{bad}");
        }

        // Expiry.
        let (expiring, expiring_full) = s
            .create_virtual_key(&NewVirtualKey {
                app_id: a.id.clone(),
                name: "short-lived".to_owned(),
                models: None,
                limits: KeyLimits::default(),
                expires_at: Some(1_000),
            })
            .await
            .unwrap();
        let verdict = s.verify_virtual_key(&expiring_full).await.unwrap().unwrap();
        assert_eq!(verdict.status, KeyStatus::Expired);
        assert!(!verdict.is_active());
        let verdict = s
            .verify_virtual_key_at(&expiring_full, 999)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(verdict.status, KeyStatus::Active);
        let extended = s
            .update_virtual_key(
                &expiring.id,
                &VirtualKeyUpdate {
                    name: "extended".to_owned(),
                    models: None,
                    limits: KeyLimits::default(),
                    expires_at: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            (extended.name.as_str(), extended.expires_at),
            ("extended", None)
        );
        assert!(s
            .verify_virtual_key(&expiring_full)
            .await
            .unwrap()
            .unwrap()
            .is_active());

        // Revocation.
        let revoked = s.revoke_virtual_key(&key.id).await.unwrap();
        let first_revocation = revoked.revoked_at.unwrap();
        let verdict = s.verify_virtual_key(&full).await.unwrap().unwrap();
        assert_eq!(verdict.status, KeyStatus::Revoked);
        let again = s.revoke_virtual_key(&key.id).await.unwrap();
        assert_eq!(again.revoked_at, Some(first_revocation));

        // Touch.
        s.touch_virtual_key(&key.id, 5_000).await.unwrap();
        s.touch_virtual_key(&key.id, 4_000).await.unwrap();
        assert_eq!(
            s.get_virtual_key(&key.id).await.unwrap().last_used_at,
            Some(5_000)
        );
        assert!(matches!(
            s.touch_virtual_key("vk_missing", 1).await,
            Err(StoreError::NotFound)
        ));

        // Missing app; listing; delete; cascade from the app.
        assert!(matches!(
            s.create_virtual_key(&NewVirtualKey {
                app_id: "app_missing".to_owned(),
                name: "x".to_owned(),
                models: None,
                limits: KeyLimits::default(),
                expires_at: None,
            })
            .await,
            Err(StoreError::MissingReference(_))
        ));
        assert_eq!(s.list_virtual_keys(Some(&a.id)).await.unwrap().len(), 2);
        assert_eq!(
            s.list_virtual_keys(Some("app_other")).await.unwrap().len(),
            0
        );
        s.delete_virtual_key(&expiring.id).await.unwrap();
        assert!(s
            .verify_virtual_key(&expiring_full)
            .await
            .unwrap()
            .is_none());
        s.delete_app(&a.id).await.unwrap();
        assert!(s.list_virtual_keys(None).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn users_argon2_passwords() {
    for db in backends().await {
        let s = &db.store;
        let pw = Secret::new("correct horse battery staple");
        let u = s.create_user("alice", &pw, Role::Admin).await.unwrap();
        assert!(u.id.starts_with("usr_"));
        assert_eq!(u.role, Role::Admin);
        let raw = db
            .raw_pairs("SELECT username, password_hash FROM users")
            .await;
        assert!(raw[0].1.starts_with("$argon2id$"), "{}", raw[0].1);
        assert!(!raw[0].1.contains("horse"));

        assert!(matches!(
            s.create_user("alice", &pw, Role::Viewer).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(
            s.verify_password("alice", &pw).await.unwrap(),
            Some(u.clone())
        );
        assert_eq!(
            s.verify_password("alice", &Secret::new("wrong"))
                .await
                .unwrap(),
            None
        );
        assert_eq!(s.verify_password("nobody", &pw).await.unwrap(), None);

        let new_pw = Secret::new("another one");
        s.set_user_password(&u.id, &new_pw).await.unwrap();
        assert_eq!(s.verify_password("alice", &pw).await.unwrap(), None);
        assert!(s.verify_password("alice", &new_pw).await.unwrap().is_some());
        let viewer = s.set_user_role(&u.id, Role::Viewer).await.unwrap();
        assert_eq!(viewer.role, Role::Viewer);
        assert_eq!(s.get_user_by_username("alice").await.unwrap(), viewer);
        assert_eq!(s.list_users().await.unwrap(), vec![viewer]);
        s.delete_user(&u.id).await.unwrap();
        assert!(matches!(s.get_user(&u.id).await, Err(StoreError::NotFound)));
    }
}

#[tokio::test]
async fn audit_events_and_config_revisions() {
    for db in backends().await {
        let s = &db.store;
        for i in 0..3 {
            s.record_audit_event(&NewAuditEvent {
                actor: "alice".to_owned(),
                action: "upstream.update".to_owned(),
                target_type: "upstream".to_owned(),
                target_id: Some(format!("up_{i}")),
                before: Some(json!({"weight": i})),
                after: (i > 0).then(|| json!({"weight": i + 1, "keys": ["…1234"]})),
            })
            .await
            .unwrap();
        }
        let page = s.list_audit_events(2, None).await.unwrap();
        assert_eq!(page.len(), 2);
        assert!(page[0].id > page[1].id);
        assert_eq!(page[0].after, Some(json!({"weight": 3, "keys": ["…1234"]})));
        let rest = s.list_audit_events(10, Some(page[1].id)).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].after, None);
        assert_eq!(rest[0].target_id.as_deref(), Some("up_0"));

        assert_eq!(s.latest_config_revision().await.unwrap(), None);
        let r1 = s
            .create_config_revision(&NewConfigRevision {
                actor: "config-file".to_owned(),
                source: Source::File,
                content: "[server]\nlisten = \"127.0.0.1:8080\"\n".to_owned(),
                note: None,
            })
            .await
            .unwrap();
        let r2 = s
            .create_config_revision(&NewConfigRevision {
                actor: "alice".to_owned(),
                source: Source::Api,
                content: "{}".to_owned(),
                note: Some("added upstream".to_owned()),
            })
            .await
            .unwrap();
        assert!(r2.id > r1.id);
        assert_eq!(s.latest_config_revision().await.unwrap(), Some(r2.clone()));
        assert_eq!(s.get_config_revision(r1.id).await.unwrap(), r1);
        assert_eq!(
            s.list_config_revisions(10, None).await.unwrap(),
            vec![r2, r1]
        );
        assert!(matches!(
            s.get_config_revision(-1).await,
            Err(StoreError::NotFound)
        ));
    }
}

#[tokio::test]
async fn call_log_keeps_every_attempt_and_filters_on_error_class_and_stream() {
    for db in backends().await {
        let s = &db.store;
        let mut failed_over = call(1, None);
        failed_over.stream = Some(true);
        failed_over.attempt_log = vec![
            llmux_store::Attempt {
                upstream: "bad".to_owned(),
                key_id: Some("key_1".to_owned()),
                status: Some(500),
                error_class: Some("upstream_error".to_owned()),
                ms: 12,
            },
            llmux_store::Attempt {
                upstream: "primary".to_owned(),
                key_id: None,
                status: Some(200),
                error_class: None,
                ms: 40,
            },
        ];
        // The token details round-trip (migration 0015).
        failed_over.cached_tokens = Some(3);
        failed_over.reasoning_tokens = Some(2);
        let mut timed_out = call(2, None);
        timed_out.error_class = Some("timeout".to_owned());
        timed_out.stream = Some(false);
        s.insert_calls(&[failed_over.clone(), timed_out.clone()])
            .await
            .unwrap();
        let all = s.list_calls(&CallFilter::default()).await.unwrap();
        assert_eq!(all[1].record, failed_over, "{}", db.label());
        let by_class = s
            .list_calls(&CallFilter {
                error_class: Some("timeout".to_owned()),
                ..CallFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(by_class.len(), 1, "{}", db.label());
        assert_eq!(by_class[0].record.request_id, timed_out.request_id);
        let streamed = s
            .list_calls(&CallFilter {
                stream: Some(true),
                ..CallFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(streamed.len(), 1, "{}", db.label());
        assert_eq!(streamed[0].record.attempt_log.len(), 2);
    }
}

#[tokio::test]
async fn call_log_batch_insert_of_1000_rows() {
    for db in backends().await {
        let s = &db.store;
        let calls: Vec<CallRecord> = (0..1000)
            .map(|i| call(i, Some(if i % 4 == 0 { "app_a" } else { "app_b" })))
            .collect();
        assert_eq!(s.insert_calls(&calls).await.unwrap(), 1000);
        assert_eq!(s.insert_calls(&[]).await.unwrap(), 0);
        assert_eq!(s.count_calls().await.unwrap(), 1000);

        let latest = s
            .list_calls(&CallFilter {
                limit: Some(1),
                ..CallFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(latest[0].record, calls[999], "{}", db.label());

        let app_a = s
            .list_calls(&CallFilter {
                app_id: Some("app_a".to_owned()),
                since: Some(1_700_000_000_000 + 100),
                until: Some(1_700_000_000_000 + 200),
                limit: Some(1000),
                ..CallFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(app_a.len(), 25);
        assert!(app_a
            .iter()
            .all(|c| c.record.app_id.as_deref() == Some("app_a")));
        assert!(app_a
            .windows(2)
            .all(|w| w[0].record.created_at > w[1].record.created_at));

        // The indexes exist (created by the initial migration).
        let index_sql = match s.kind() {
            llmux_store::BackendKind::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'call_log' \
                 AND name IN ('call_log_created_at', 'call_log_app_created_at')"
            }
            llmux_store::BackendKind::Postgres => {
                "SELECT COUNT(*) FROM pg_indexes WHERE schemaname = current_schema() \
                 AND tablename = 'call_log' \
                 AND indexname IN ('call_log_created_at', 'call_log_app_created_at')"
            }
        };
        assert_eq!(db.raw_count(index_sql).await, 2);

        // Larger than one statement: still one call, one transaction.
        let many: Vec<CallRecord> = (0..2500).map(|i| call(i, None)).collect();
        assert_eq!(s.insert_calls(&many).await.unwrap(), 2500);
        assert_eq!(s.count_calls().await.unwrap(), 3500);
    }
}

#[tokio::test]
async fn entities_survive_reconnect() {
    let keys = MasterKeys::new(MasterKey::generate());
    for mut db in backends().await {
        let up = db
            .store
            .create_upstream(&upstream("persisted"))
            .await
            .unwrap();
        let pk = db
            .store
            .create_provider_key(&keys, &up.id, &Secret::new(PLAINTEXT_KEY))
            .await
            .unwrap();
        let a = db.store.create_app(&app("persisted-app")).await.unwrap();
        let (vk, full) = db
            .store
            .create_virtual_key(&NewVirtualKey {
                app_id: a.id.clone(),
                name: "k".to_owned(),
                models: None,
                limits: KeyLimits::default(),
                expires_at: None,
            })
            .await
            .unwrap();
        let user = db
            .store
            .create_user("bob", &Secret::new("pw-bob"), Role::Viewer)
            .await
            .unwrap();
        let alias = db
            .store
            .create_alias("al", &["m".to_owned()])
            .await
            .unwrap();
        db.store
            .insert_calls(&[call(1, Some(&a.id))])
            .await
            .unwrap();

        db.reconnect().await;
        let s = &db.store;
        assert_eq!(s.get_upstream(&up.id).await.unwrap(), up, "{}", db.label());
        assert_eq!(
            s.reveal_provider_key(&keys, &pk.id).await.unwrap().expose(),
            PLAINTEXT_KEY
        );
        assert_eq!(s.get_app(&a.id).await.unwrap(), a);
        assert_eq!(s.verify_virtual_key(&full).await.unwrap().unwrap().key, vk);
        assert_eq!(
            s.verify_password("bob", &Secret::new("pw-bob"))
                .await
                .unwrap(),
            Some(user)
        );
        assert_eq!(s.get_alias(&alias.id).await.unwrap(), alias);
        assert_eq!(s.count_calls().await.unwrap(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_wait_instead_of_failing() {
    for db in backends().await {
        let mut tasks = Vec::new();
        for i in 0..16 {
            let s = db.store.clone();
            tasks.push(tokio::spawn(async move {
                let a = s.create_app(&app(&format!("app-{i}"))).await?;
                for _ in 0..5 {
                    s.add_app_credits(&a.id, 1.0).await?;
                }
                s.insert_calls(&[call(i, Some(&a.id))]).await?;
                Ok::<_, StoreError>(())
            }));
        }
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let apps = db.store.list_apps().await.unwrap();
        assert_eq!(apps.len(), 16, "{}", db.label());
        assert!(apps.iter().all(|a| a.credits == Some(15.5)));
    }
}

#[tokio::test]
async fn settings_and_routing_snapshots_round_trip() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        assert_eq!(s.get_setting("routing.strategy").await.unwrap(), None);
        s.set_setting("routing.strategy", &json!("weighted"))
            .await
            .unwrap();
        s.set_setting("routing.strategy", &json!("round_robin"))
            .await
            .unwrap();
        assert_eq!(
            s.get_setting("routing.strategy").await.unwrap(),
            Some(json!("round_robin"))
        );
        let keys = MasterKeys::new(MasterKey::generate());
        let mut new = upstream("snap");
        new.api_version = Some("2024-10-21".into());
        let up = s.create_upstream(&new).await.unwrap();
        assert_eq!(up.api_version.as_deref(), Some("2024-10-21"));
        s.create_provider_key(&keys, &up.id, &Secret::new(PLAINTEXT_KEY))
            .await
            .unwrap();
        s.create_alias("fast", &["gpt-4o".to_owned()])
            .await
            .unwrap();
        let before = s.routing_snapshot().await.unwrap();
        assert_eq!(before.upstreams.len(), 1, "{label}");
        assert!(!serde_json::to_string(&before)
            .unwrap()
            .contains(PLAINTEXT_KEY));

        // Change everything, then restore: same rows, and the key still decrypts.
        s.delete_upstream(&up.id).await.unwrap();
        s.delete_setting("routing.strategy").await.unwrap();
        s.create_alias("other", &["x".to_owned()]).await.unwrap();
        s.restore_routing_snapshot(&before).await.unwrap();
        assert_eq!(s.routing_snapshot().await.unwrap(), before, "{label}");
        let revealed = s.reveal_provider_keys(&keys, Some(&up.id)).await.unwrap();
        assert_eq!(revealed[0].1.expose(), PLAINTEXT_KEY);
    }
}

#[tokio::test]
async fn drains_are_rows_of_their_own_and_outlive_a_snapshot_restore() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        assert!(s.list_drains().await.unwrap().is_empty());
        assert!(s.set_drain("gpu-a", "ann").await.unwrap(), "{label}");
        assert!(
            !s.set_drain("gpu-a", "bob").await.unwrap(),
            "idempotent: {label}"
        );
        assert!(s.set_drain("gpu.b", "bob").await.unwrap());
        let drains = s.list_drains().await.unwrap();
        let names: Vec<&str> = drains.iter().map(|d| d.upstream.as_str()).collect();
        assert_eq!(names, ["gpu-a", "gpu.b"], "{label}");
        assert_eq!(
            drains[0].actor, "ann",
            "the first drain's record stays: {label}"
        );
        assert!(drains[0].since > 0);

        // Not configuration: a snapshot neither records nor removes them.
        let snap = s.routing_snapshot().await.unwrap();
        assert!(
            snap.settings.keys().all(|k| !k.starts_with("runtime.")),
            "{label}"
        );
        s.clear_drain("gpu.b").await.unwrap();
        s.set_drain("gpu-c", "ann").await.unwrap();
        s.restore_routing_snapshot(&snap).await.unwrap();
        let names: Vec<String> = s
            .list_drains()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.upstream)
            .collect();
        assert_eq!(names, ["gpu-a", "gpu-c"], "{label}");

        assert!(s.clear_drain("gpu-a").await.unwrap());
        assert!(!s.clear_drain("gpu-a").await.unwrap(), "{label}");
    }
}

#[tokio::test]
async fn a_record_the_database_refuses_is_a_data_error_and_stores_sanitised() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        let mut nul = call(1, None);
        nul.requested_model = "gpt\0-4o".to_owned();
        let mut long = call(2, None);
        // Not compressible: PostgreSQL compresses index entries before it checks their size.
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        long.requested_model = (0..3000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(b'!' + (x % 90) as u8)
            })
            .collect();
        for bad in [nul, long] {
            match s.record_calls(&[call(0, None), bad.clone()]).await {
                // SQLite stores both as they are; PostgreSQL refuses a NUL byte in text, and a
                // 3 KB model in the rollup's primary key (index rows are limited to ~2.7 KB).
                Ok(_) => assert_eq!(label, "sqlite", "{}", bad.requested_model.len()),
                Err(e) => assert!(e.is_data_error(), "{label}: {e}"),
            }
            let clean = bad.sanitised();
            assert!(!clean.requested_model.contains('\0'));
            assert!(clean.requested_model.len() <= 256);
            s.record_calls(&[clean]).await.unwrap();
        }
        let rows = s.list_calls(&CallFilter::default()).await.unwrap();
        assert_eq!(rows[0].record.chunks, Some(7), "{label}");
        assert_eq!(
            rows[0].record.reported_model.as_deref(),
            Some("gpt-4o-2024-08-06")
        );
    }
}

/// A batch written again (its first commit landed but the answer was lost) adds no row, no
/// usage and no charge for the records already in; records without a call id are all written.
#[tokio::test]
async fn record_calls_is_idempotent_by_call_id() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        let a = s.create_app(&app("payer")).await.unwrap();
        let calls: Vec<CallRecord> = (0..5)
            .map(|i| CallRecord {
                call_id: Some(llmux_store::new_call_id()),
                ..call(i, Some(&a.id))
            })
            .collect();
        s.record_calls(&calls[..3]).await.unwrap();
        let after_first = s.get_app(&a.id).await.unwrap().credits.unwrap();
        // The retry holds the three written and two new ones.
        let balances = s.record_calls(&calls).await.unwrap();
        assert_eq!(s.count_calls().await.unwrap(), 5, "{label}");
        let credits = s.get_app(&a.id).await.unwrap().credits.unwrap();
        assert!(
            (after_first - credits - 2.0 * 0.001).abs() < 1e-9,
            "{label}: {credits}"
        );
        assert_eq!(balances, vec![(a.id.clone(), credits)], "{label}");
        // All in already: nothing written, nothing charged.
        assert!(s.record_calls(&calls).await.unwrap().is_empty(), "{label}");
        assert_eq!(s.insert_calls(&calls).await.unwrap(), 0, "{label}");
        let usage = s.usage(&UsageQuery::default()).await.unwrap();
        assert_eq!(
            usage.iter().map(|r| r.calls).sum::<i64>(),
            5,
            "{label}: {usage:?}"
        );
        // Without ids (records of an older version) nothing can be told apart.
        s.record_calls(&[call(9, None), call(9, None)])
            .await
            .unwrap();
        assert_eq!(s.count_calls().await.unwrap(), 7, "{label}");
        // Retention takes the ids with their calls.
        assert_eq!(
            s.delete_calls_before(i64::MAX, 100).await.unwrap(),
            7,
            "{label}"
        );
        s.record_calls(&calls[..1]).await.unwrap();
        assert_eq!(
            s.count_calls().await.unwrap(),
            1,
            "{label}: an id deleted is new again"
        );
    }
}

#[tokio::test]
async fn record_calls_writes_rows_rollups_and_charges_in_one_go() {
    for db in backends().await {
        let label = db.label();
        let s = &db.store;
        let a = s.create_app(&app("payer")).await.unwrap();
        // Two hours apart, two models, one call without an app.
        let mut calls: Vec<CallRecord> = (0..6).map(|i| call(i, Some(&a.id))).collect();
        calls[3].created_at += 3_600_000;
        calls[4].requested_model = "other".to_owned();
        calls[5].app_id = None;
        let balances = s.record_calls(&calls).await.unwrap();
        assert_eq!(balances.len(), 1, "{label}");
        assert!(
            (balances[0].1 - (a.credits.unwrap() - 5.0 * 0.001)).abs() < 1e-9,
            "{label}: {balances:?}"
        );
        assert!((s.get_app(&a.id).await.unwrap().credits.unwrap() - balances[0].1).abs() < 1e-12);
        // A second batch adds to the same rollup rows.
        s.record_calls(&calls[..1]).await.unwrap();
        assert_eq!(s.count_calls().await.unwrap(), 7);

        let all = s
            .usage(&UsageQuery {
                group: UsageGroup {
                    app: true,
                    model: true,
                    ..UsageGroup::default()
                },
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        let get = |app: &str, model: &str| {
            all.iter()
                .find(|r| r.app_id.as_deref() == Some(app) && r.model.as_deref() == Some(model))
                .cloned()
                .unwrap()
        };
        let gpt = get(&a.id, "gpt-4o");
        assert_eq!(gpt.calls, 5, "{label}: {all:?}");
        assert_eq!(gpt.errors, 2, "call 0 (twice) is a 502");
        assert_eq!(gpt.input_tokens, 60);
        assert_eq!(get(&a.id, "other").calls, 1);
        assert_eq!(get("", "gpt-4o").calls, 1);
        let hourly = s
            .usage(&UsageQuery {
                group: UsageGroup {
                    time: true,
                    ..UsageGroup::default()
                },
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(hourly.len(), 2, "{label}: {hourly:?}");
        assert_eq!(hourly.iter().map(|r| r.calls).sum::<i64>(), 7);
        let daily = s
            .usage(&UsageQuery {
                day: true,
                ..UsageQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(daily.len(), 1);
        assert_eq!(daily[0].calls, 7);
        let spent = s.app_spent_since(&a.id, 0).await.unwrap();
        assert!((spent - 6.0 * 0.001).abs() < 1e-9, "{label}: {spent}");

        // Pages by cursor see every row once.
        let mut seen = 0;
        let mut after = None;
        loop {
            let page = s
                .list_calls(&CallFilter {
                    limit: Some(2),
                    after,
                    ..CallFilter::default()
                })
                .await
                .unwrap();
            seen += page.len();
            match page.last() {
                Some(last) if page.len() == 2 => after = Some((last.record.created_at, last.id)),
                _ => break,
            }
        }
        assert_eq!(seen, 7, "{label}");
        let filtered = s
            .list_calls(&CallFilter {
                model: Some("other".to_owned()),
                status: Some(200),
                ..CallFilter::default()
            })
            .await
            .unwrap();
        assert_eq!(filtered.len(), 1);

        // Retention deletes in batches.
        let cutoff = calls[3].created_at;
        assert_eq!(s.delete_calls_before(cutoff, 2).await.unwrap(), 2);
        assert_eq!(s.delete_calls_before(cutoff, 2).await.unwrap(), 2);
        assert_eq!(s.delete_calls_before(cutoff, 2).await.unwrap(), 2);
        assert_eq!(s.delete_calls_before(cutoff, 2).await.unwrap(), 0);
        assert_eq!(s.count_calls().await.unwrap(), 1);
    }
}

/// 0004 rebuilds SQLite's apps table: a database made by 0001–0003 keeps its apps and their
/// virtual keys (no cascade), and foreign keys are enforced again afterwards.
#[tokio::test]
async fn optional_credits_migration_keeps_apps_and_keys_on_sqlite() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("v3.db").display());
    let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(&url)
        .unwrap()
        .create_if_missing(true)
        .foreign_keys(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let m = |v: i64, d: &'static str, sql: &'static str| {
        Migration::new(
            v,
            Cow::Borrowed(d),
            MigrationType::Simple,
            sqlx::SqlStr::from_static(sql),
            false,
        )
    };
    Migrator::with_migrations(vec![
        m(
            1,
            "init",
            include_str!("../../migrations/sqlite/0001_init.sql"),
        ),
        m(
            2,
            "control plane",
            include_str!("../../migrations/sqlite/0002_control_plane.sql"),
        ),
        m(
            3,
            "usage",
            include_str!("../../migrations/sqlite/0003_usage.sql"),
        ),
    ])
    .run(&pool)
    .await
    .unwrap();
    pool.close().await;

    let s = Store::connect(&url).await.unwrap();
    let a = s.create_app(&app("old")).await.unwrap();
    let (key, full) = s
        .create_virtual_key(&NewVirtualKey {
            app_id: a.id.clone(),
            name: "k".to_owned(),
            models: None,
            limits: KeyLimits::default(),
            expires_at: None,
        })
        .await
        .unwrap();
    s.migrate().await.unwrap();
    assert_eq!(s.get_app(&a.id).await.unwrap(), a);
    assert_eq!(
        s.verify_virtual_key(&full).await.unwrap().unwrap().key.id,
        key.id
    );
    let free = s
        .create_app(&NewApp {
            credits: None,
            ..app("unmetered")
        })
        .await
        .unwrap();
    assert_eq!(free.credits, None);
    s.delete_app(&a.id).await.unwrap();
    assert!(matches!(
        s.get_virtual_key(&key.id).await,
        Err(StoreError::NotFound)
    ));
}

/// Batches are one transaction on both backends: an unknown id rolls back the ids before it.
#[tokio::test]
async fn model_and_key_batches_are_all_or_nothing() {
    for db in backends().await {
        let s = &db.store;
        let mut ids = Vec::new();
        for name in ["b1", "b2"] {
            let m = s
                .create_model(&NewModel {
                    name: name.to_owned(),
                    upstream_id: None,
                    enabled: true,
                    origin: ModelOrigin::Declared,
                    original_name: None,
                })
                .await
                .unwrap();
            ids.push(m.id);
        }
        let with_unknown = vec![ids[0].clone(), ids[1].clone(), "md_unknown".to_owned()];
        let err = s
            .set_models_enabled(&with_unknown, false)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("md_unknown"), "{err}");
        assert!(s.list_models(None).await.unwrap().iter().all(|m| m.enabled));
        assert!(s.delete_models(&with_unknown).await.is_err());
        assert_eq!(s.list_models(None).await.unwrap().len(), 2);
        assert_eq!(s.set_models_enabled(&ids, false).await.unwrap().len(), 2);
        assert!(s
            .list_models(None)
            .await
            .unwrap()
            .iter()
            .all(|m| !m.enabled));
        assert_eq!(s.delete_models(&ids).await.unwrap().len(), 2);
        assert!(s.list_models(None).await.unwrap().is_empty());

        let a = s.create_app(&app("batch-app")).await.unwrap();
        let mut keys = Vec::new();
        for name in ["k1", "k2"] {
            let (k, _) = s
                .create_virtual_key(&NewVirtualKey {
                    app_id: a.id.clone(),
                    name: name.to_owned(),
                    models: None,
                    limits: KeyLimits::default(),
                    expires_at: None,
                })
                .await
                .unwrap();
            keys.push(k.id);
        }
        let with_unknown = vec![keys[0].clone(), "vk_unknown".to_owned()];
        let err = s.revoke_virtual_keys(&with_unknown).await.unwrap_err();
        assert!(err.to_string().contains("vk_unknown"), "{err}");
        assert!(s
            .get_virtual_key(&keys[0])
            .await
            .unwrap()
            .revoked_at
            .is_none());
        let revoked = s.revoke_virtual_keys(&keys).await.unwrap();
        assert!(revoked.iter().all(|k| k.revoked_at.is_some()));
    }
}
