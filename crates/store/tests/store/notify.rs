//! Change notifications: `Store::notify` bumps the counter and is heard by a listener on the
//! same schema only; SQLite has nothing to tell.

use std::time::Duration;

use llmux_store::{BackendKind, Change, ChangeKind, ChangeListener, Heard, Store};

use crate::harness::backends;

async fn next(l: &mut ChangeListener) -> Heard {
    tokio::time::timeout(Duration::from_secs(5), l.next())
        .await
        .expect("the listener heard nothing within 5 s")
        .unwrap()
}

fn change(from: &str, seq: i64, kind: ChangeKind, id: Option<&str>) -> Heard {
    Heard::Change(Change {
        from: from.into(),
        seq,
        kind,
        id: id.map(str::to_owned),
    })
}

#[tokio::test]
async fn a_change_is_counted_and_heard_on_its_schema_only() {
    let mut pg = Vec::new();
    for db in backends().await {
        if db.store.kind() == BackendKind::Sqlite {
            let s = &db.store;
            assert_eq!(s.notify("a", ChangeKind::Config, None).await.unwrap(), None);
            assert_eq!(
                s.change_seq().await.unwrap(),
                0,
                "the table exists, untouched"
            );
            assert!(s.listen_changes().await.is_err(), "nothing to listen to");
            continue;
        }
        pg.push(db);
    }
    let [ours] = &pg[..] else { return };
    let Some(other) = backends().await.pop().filter(|db| db.label() == "postgres") else {
        return;
    };
    // Another process on the same schema.
    let peer = Store::connect(&ours.url).await.unwrap();
    let mut l = peer.listen_changes().await.unwrap();
    assert!(
        l.channel().starts_with("llmux_changes_llmux_test_"),
        "{}",
        l.channel()
    );
    assert_ne!(l.channel(), other.store.change_channel().await.unwrap());
    assert_eq!(next(&mut l).await, Heard::Connected);

    let seq = ours.store.notify("a", ChangeKind::Key, Some("vk_1")).await;
    assert_eq!(seq.unwrap(), Some(1));
    assert_eq!(
        next(&mut l).await,
        change("a", 1, ChangeKind::Key, Some("vk_1"))
    );
    // The other schema's changes are not heard here; its counter is its own.
    let seq = other
        .store
        .notify("b", ChangeKind::All, None)
        .await
        .unwrap();
    assert_eq!(seq, Some(1));
    ours.store
        .notify("a", ChangeKind::App, Some("app_1"))
        .await
        .unwrap();
    assert_eq!(
        next(&mut l).await,
        change("a", 2, ChangeKind::App, Some("app_1"))
    );
    assert_eq!(peer.change_seq().await.unwrap(), 2);

    // After a reset (a connection that may be dead), it says so before anything else.
    l.reset();
    assert_eq!(next(&mut l).await, Heard::Connected);
    ours.store
        .notify("c", ChangeKind::Config, None)
        .await
        .unwrap();
    assert_eq!(next(&mut l).await, change("c", 3, ChangeKind::Config, None));

    // The server ends the listener's session: an error, then a new connection that says so.
    let admin = sqlx::PgPool::connect(&ours.url).await.unwrap();
    let killed: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE query = $1",
    )
    .bind(format!("LISTEN \"{}\"", l.channel()))
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(killed, 1, "one listener session on {}", l.channel());
    let lost = tokio::time::timeout(Duration::from_secs(5), l.next()).await;
    assert!(lost.unwrap().is_err(), "a cut connection is an error");
    assert_eq!(next(&mut l).await, Heard::Connected);
    ours.store
        .notify("d", ChangeKind::User, None)
        .await
        .unwrap();
    assert_eq!(next(&mut l).await, change("d", 4, ChangeKind::User, None));
}
