//! Readers waiting for events (`EventStore::wait_for_events`) on a real PostgreSQL: a wait
//! ends at its timeout even while appends keep coming that an older transaction holds back,
//! and events held back are seen soon after that transaction ends, though its end sends no
//! notification, and readers look again once a lost listener connection is back.

use std::time::{Duration, Instant};

use cqrs_core::conformance::TestEvent;
use cqrs_core::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use sqlx::Connection;

async fn store(db: &TestDatabase) -> PgEventStore {
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    store
}

/// Appends one event to `stream`; its position.
async fn append(store: &PgEventStore, stream: &str) -> Position {
    let appended = store
        .append(
            &StreamId::new(stream).expect("id"),
            ExpectedVersion::Any,
            vec![NewEvent::from_domain(&TestEvent::Added { amount: 1 }).expect("encode")],
            &Metadata::default(),
        )
        .await
        .expect("append");
    appended.positions[0]
}

/// Appends the test's first event; its position, which the waits start after. Not the head:
/// another test's open transaction (the horizon is the cluster's) can leave the head behind
/// this event, which would then wake a waiter later.
async fn first_event(store: &PgEventStore) -> Position {
    append(store, "before-1").await
}

/// A transaction with a transaction id, left open: every event appended after it stays
/// unreadable until it ends.
async fn blocker(db: &TestDatabase) -> sqlx::PgConnection {
    let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut conn)
        .await
        .expect("take a transaction id");
    conn
}

/// Ends a [`blocker`]'s transaction: what it held back becomes readable.
async fn end(mut blocker: sqlx::PgConnection) {
    sqlx::query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("commit");
}

/// A reader waiting in a task of its own for events after `after`.
fn spawn_waiter(
    store: &PgEventStore,
    after: Position,
    timeout: Duration,
) -> tokio::task::JoinHandle<cqrs_core::Result<bool>> {
    let store = store.clone();
    tokio::spawn(async move { store.wait_for_events(after, timeout).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_at_its_timeout_while_held_back_appends_keep_coming() {
    let db = TestDatabase::create(10).await;
    let store = store(&db).await;
    let after = first_event(&store).await;
    let blocker = blocker(&db).await;

    // Appends in this process wake the waiter every time, more often than it looks at the
    // log; none of them is readable.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                let mut n = 0;
                // Short: the blocker holds back every test on this cluster meanwhile.
                while started.elapsed() < Duration::from_secs(1) {
                    append(&store, &format!("held-{w}-{n}")).await;
                    n += 1;
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = Instant::now();
    let woke = store
        .wait_for_events(after, Duration::from_millis(300))
        .await
        .expect("wait");
    let waited = started.elapsed();
    assert!(!woke, "nothing readable came after {after}");
    assert!(
        waited < Duration::from_secs(2),
        "a wait of 300 ms lasted {waited:?} while appends kept coming"
    );
    for writer in writers {
        writer.await.expect("writer");
    }
    end(blocker).await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_held_back_are_seen_soon_after_the_older_transaction_ends() {
    let db = TestDatabase::create(10).await;
    // A poll so slow that only the looks after a notification can explain a quick wake.
    let store = store(&db).await.with_poll_interval(Duration::from_secs(20));
    let after = first_event(&store).await;
    let blocker = blocker(&db).await;

    let waiter = spawn_waiter(&store, after, Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Notified at once, but held back by the blocker.
    append(&store, "held-1").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter ended before the blocker did (the event readable, or the wait failed)"
    );
    // The blocker's end sends no notification.
    let ended = Instant::now();
    end(blocker).await;
    let woke = tokio::time::timeout(Duration::from_secs(15), waiter)
        .await
        .expect("the waiter was not woken within 15 s of the blocker's end")
        .expect("task")
        .expect("wait");
    let seen = ended.elapsed();
    assert!(woke, "the held-back event is readable");
    // Other tests' transactions can hold the log back longer (the one above, for a second);
    // the poll would take 20 s.
    assert!(
        seen < Duration::from_secs(5),
        "the held-back event was seen {seen:?} after the blocker ended"
    );
    db.drop_database().await;
}

/// Events stored while the listener's connection was down (here, written by SQL that sends
/// no notification) wake the readers once it listens again: a reconnect wakes them to look.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_look_again_once_the_listener_is_back() {
    let db = TestDatabase::create(10).await;
    let store = store(&db).await.with_poll_interval(Duration::from_secs(30));
    let after = first_event(&store).await;
    let waiter = spawn_waiter(&store, after, Duration::from_secs(60));
    // The listener's backend, once it listens.
    let listener = loop {
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("activity");
        if let Some(pid) = pid {
            break pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(listener)
        .execute(&db.pool)
        .await
        .expect("terminate the listener");
    // Stored while nobody listens, and without a notification.
    sqlx::query(
        "INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES (gen_random_uuid(), 'quiet-1', 1, 'Added', 1, '{\"Added\":{\"amount\":1}}', '{}')",
    )
    .execute(&db.pool)
    .await
    .expect("insert");
    let woke = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was not woken within 10 s of the listener's loss")
        .expect("task")
        .expect("wait");
    assert!(woke, "the event stored meanwhile is readable");
    db.drop_database().await;
}
