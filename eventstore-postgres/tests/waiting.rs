//! Readers waiting for events (`EventStore::wait_for_events`) on a real PostgreSQL: a wait
//! ends at its timeout even while appends keep coming that an older transaction holds back,
//! and events held back are seen soon after that transaction ends, though its end sends no
//! notification, and readers look again once a lost listener connection is back, whether
//! the server ended it or the network cut it.

use std::time::{Duration, Instant};

use cqrs_core::conformance::TestEvent;
use cqrs_core::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use eventstore_postgres::testing::{Proxy, TestDatabase};
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

/// The backend of the store's listener, once it listens (its `LISTEN` done).
async fn listening(db: &TestDatabase) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the store did not listen within 30 s"
        );
        let pid: Option<i32> = sqlx::query_scalar(
            "SELECT pid FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%' AND state = 'idle'",
        )
        .fetch_optional(&db.pool)
        .await
        .expect("activity");
        if let Some(pid) = pid {
            return pid;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stores an event by SQL, which sends no notification; its position.
async fn quiet_insert(db: &TestDatabase, stream: &str) -> Position {
    let (commit, position): (i64, i64) = sqlx::query_as(
        "INSERT INTO es_events \
             (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES (gen_random_uuid(), $1, 1, 'Added', 1, '{\"Added\":{\"amount\":1}}', '{}') \
         RETURNING transaction_id::text::int8, position",
    )
    .bind(stream)
    .fetch_one(&db.pool)
    .await
    .expect("insert");
    Position::new(commit as u64, position as u64)
}

/// A reader of `store` waiting (up to three minutes) for events after one stored without a
/// notification, once the store listens. The tests that use it send no notification at
/// all, so with a poll of two minutes only a reconnect of the listener wakes it. (A reader woken by a
/// notification that finds nothing new looks again after 10 ms, then less and less often,
/// and would find an event stored without one on its own.)
async fn quiet_waiter(
    db: &TestDatabase,
    store: &PgEventStore,
) -> tokio::task::JoinHandle<cqrs_core::Result<bool>> {
    // The first wait starts the listener.
    store
        .wait_for_events(Position::START, Duration::from_millis(1))
        .await
        .expect("wait");
    listening(db).await;
    // Once listening, the listener wakes the readers of the moment to look (for anything
    // stored while it was not): that comes and goes before this waiter begins.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = quiet_insert(db, "before-1").await;
    let waiter = spawn_waiter(store, after, Duration::from_secs(180));
    // The waiter has looked once, and waits.
    tokio::time::sleep(Duration::from_millis(500)).await;
    waiter
}

/// Stores an event without a notification, and checks a second later that `waiter` still
/// waits: nothing but what the test does next may wake it.
async fn store_quietly(
    db: &TestDatabase,
    waiter: &tokio::task::JoinHandle<cqrs_core::Result<bool>>,
) {
    quiet_insert(db, "quiet-1").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiter.is_finished(),
        "the waiter was woken before its listener's connection was lost"
    );
}

/// What `waiter` answered, once it ends within `within` of `what` happened; a test failure
/// if it does not.
async fn answer_within(
    waiter: tokio::task::JoinHandle<cqrs_core::Result<bool>>,
    within: Duration,
    what: &str,
) -> bool {
    tokio::time::timeout(within, waiter)
        .await
        .unwrap_or_else(|_| panic!("the waiter was not woken within {within:?} of {what}"))
        .expect("task")
        .expect("wait")
}

/// Waits up to 25 s for a [`quiet_waiter`] to be woken, after its listener's connection was
/// lost, and to find the event stored meanwhile. (Woken, a reader that finds the event
/// held back, by another test's transaction, the horizon being the cluster's, looks again
/// after 10 ms, doubling: the looks at about 10 s and 20 s fall within the 25 s.)
async fn woken_to_the_quiet_event(waiter: tokio::task::JoinHandle<cqrs_core::Result<bool>>) {
    let woke = answer_within(waiter, Duration::from_secs(25), "its listener's loss").await;
    assert!(woke, "the event stored before the loss is readable");
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
    let woke = answer_within(waiter, Duration::from_secs(15), "the blocker's end").await;
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

/// The listener's connection ended by the server (`pg_terminate_backend`) wakes the readers
/// to look once it listens again, as a notification sent while it was down is lost. Here
/// the event was stored without one, before the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_look_again_once_the_listener_is_back() {
    let db = TestDatabase::create(10).await;
    let store = store(&db)
        .await
        .with_poll_interval(Duration::from_secs(120));
    let waiter = quiet_waiter(&db, &store).await;
    let listener = listening(&db).await;
    store_quietly(&db, &waiter).await;
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(listener)
        .execute(&db.pool)
        .await
        .expect("terminate the listener");
    woken_to_the_quiet_event(waiter).await;
    db.drop_database().await;
}

/// The listener's connection cut by the network (the socket closed, no error from the
/// server) wakes the readers to look once it listens again. (sqlx connects and listens
/// again on its own, and its `recv` says nothing of it.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_look_again_after_a_network_cut_of_the_listener() {
    let db = TestDatabase::create(4).await;
    store(&db).await;
    let proxy = Proxy::start(&db.url).await;
    let store = PgEventStore::new(proxy.pool(&db.url, 4).await)
        .with_poll_interval(Duration::from_secs(120));
    let waiter = quiet_waiter(&db, &store).await;
    store_quietly(&db, &waiter).await;
    proxy.cut();
    woken_to_the_quiet_event(waiter).await;
    db.drop_database().await;
}
