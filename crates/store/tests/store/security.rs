//! Store security properties: sessions end with a password or role change, the SQLite files
//! are private to llmux's user, and an unreachable PostgreSQL fails fast, naming where.

use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

use llmux_config::Secret;
use llmux_store::{Role, Store, StoreError};

use crate::harness::backends;

#[tokio::test]
async fn password_and_role_changes_move_the_session_epoch() {
    for db in backends().await {
        let s = &db.store;
        let label = db.label();
        let u = s
            .create_user("erin", &Secret::new("first password"), Role::Admin)
            .await
            .unwrap();
        assert_eq!(u.session_epoch, 0, "{label}");
        s.set_user_password(&u.id, &Secret::new("second password"))
            .await
            .unwrap();
        let after_password = s.get_user(&u.id).await.unwrap().session_epoch;
        assert_eq!(after_password, 1, "{label}");
        let same_role = s.set_user_role(&u.id, Role::Admin).await.unwrap();
        assert_eq!(
            same_role.session_epoch, 1,
            "{label}: no change, no new epoch"
        );
        let viewer = s.set_user_role(&u.id, Role::Viewer).await.unwrap();
        assert_eq!(viewer.session_epoch, 2, "{label}");
        let verified = s
            .verify_password("erin", &Secret::new("second password"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(verified.session_epoch, 2, "{label}");
        // Deleted and created again: another id, which old tokens do not carry.
        s.delete_user(&u.id).await.unwrap();
        let again = s
            .create_user("erin", &Secret::new("first password"), Role::Admin)
            .await
            .unwrap();
        assert_ne!(again.id, u.id, "{label}");
    }
}

#[tokio::test]
async fn sqlite_files_are_created_private() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub").join("llmux.db");
    let store = Store::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store
        .create_user("u", &Secret::new("some password"), Role::Admin)
        .await
        .unwrap();
    let mut seen = 0;
    for suffix in ["", "-wal", "-shm"] {
        let path = format!("{}{suffix}", db.display());
        if let Ok(meta) = std::fs::metadata(&path) {
            seen += 1;
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{path}");
        }
    }
    assert_eq!(
        seen, 3,
        "the database, its WAL and shared-memory files exist"
    );
    store.close().await;
}

#[tokio::test]
async fn an_unreachable_postgres_fails_fast_naming_host_and_port() {
    // Nothing listens on port 1 of loopback: the connection is refused at once.
    let started = Instant::now();
    let err = Store::connect("postgres://llmux:secret@127.0.0.1:1/llmux")
        .await
        .unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    let message = err.to_string();
    assert!(matches!(err, StoreError::Connect(_)), "{message}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}
