//! Append-only, idempotent retries, bad rows and lost connections (ARCHITECTURE.md
//! invariants 1, 4, 9 and 10) on a real PostgreSQL.

use std::time::Duration;

use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    Error, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId,
};
use eventstore_postgres::testing::{Proxy, TestDatabase};
use eventstore_postgres::PgEventStore;
use sqlx::Row;

async fn store() -> (PgEventStore, TestDatabase) {
    let db = TestDatabase::create(10).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    (store, db)
}

fn events(n: u64) -> Vec<NewEvent> {
    (0..n)
        .map(|amount| NewEvent::from_domain(&TestEvent::Added { amount }).expect("encode"))
        .collect()
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("stream id")
}

/// A retry that races its original (the reply was slow, not lost) stores the batch once;
/// both callers are told it is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_racing_its_original_stores_once() {
    let (store, db) = store().await;
    for round in 0..20 {
        let s = stream(&format!("race-{round}"));
        let batch = events(3);
        let expected = if round % 2 == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Any
        };
        let meta = Metadata::default();
        let (a, b) = tokio::join!(
            store.append(&s, expected, batch.clone(), &meta),
            store.append(&s, expected, batch.clone(), &meta),
        );
        let (a, b) = (a.expect("first"), b.expect("second"));
        assert_eq!(a.positions, b.positions, "both describe the same write");
        assert!(
            a.already_stored != b.already_stored,
            "exactly one of them stored it"
        );
        assert_eq!(store.stream_version(&s).await.expect("version"), 3);
    }
    db.drop_database().await;
}

/// The database itself refuses to update or delete an event.
#[tokio::test]
async fn events_cannot_be_updated_or_deleted() {
    let (store, db) = store().await;
    store
        .append(
            &stream("fixed-1"),
            ExpectedVersion::NoStream,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect("append");
    let update = sqlx::query("UPDATE es_events SET event_type = 'Changed'")
        .execute(&db.pool)
        .await;
    assert!(update.is_err(), "an update must fail");
    let delete = sqlx::query("DELETE FROM es_events").execute(&db.pool).await;
    assert!(delete.is_err(), "a delete must fail");
    let stored = store
        .read_stream(&stream("fixed-1"), 1, 10)
        .await
        .expect("read");
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].event.event_type, "Added");
    db.drop_database().await;
}

/// A row the toolkit did not write (bad metadata) is an error naming its position, never a
/// panic or a silent skip.
#[tokio::test]
async fn a_bad_row_is_an_error_with_its_position() {
    let (store, db) = store().await;
    sqlx::query(
        "INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES (gen_random_uuid(), 'odd-1', 1, 'Added', 1, '{}', '\"not an object\"')",
    )
    .execute(&db.pool)
    .await
    .expect("insert a bad row by hand");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let error = loop {
        match store
            .read_all(Position::START, 10, &EventFilter::all())
            .await
        {
            Err(error) => break error,
            Ok(page) if page.events.is_empty() && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(page) => panic!("the bad row was read as {:?}", page.events),
        }
    };
    match &error {
        Error::Corrupt { position, reason } => {
            assert!(position.sequence >= 1);
            assert!(reason.contains("metadata"), "{reason}");
        }
        other => panic!("expected Corrupt, got {other}"),
    }
    assert!(store.read_stream(&stream("odd-1"), 1, 10).await.is_err());
    db.drop_database().await;
}

/// A lost connection surfaces as a retryable error, and nothing half-written remains.
#[tokio::test]
async fn a_lost_connection_is_retryable() {
    let (store, db) = store().await;
    // The writer's connection is open.
    store
        .append(
            &stream("gone-0"),
            ExpectedVersion::Any,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect("append");
    store.pool().close().await;
    let error = store
        .append(
            &stream("gone-1"),
            ExpectedVersion::Any,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect_err("the pool is closed");
    assert!(error.is_retryable(), "{error}");
    assert!(matches!(error, Error::Unavailable(_)));
    // The writer's connection is closed with the pool: no session is left on the database.
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&eventstore_postgres::testing::server_url())
        .await
        .expect("admin connection");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let sessions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(&db.name)
                .fetch_one(&admin)
                .await
                .expect("sessions");
        if sessions == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sessions} sessions stayed open after the pool was closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    admin.close().await;
    let reopened = PgEventStore::new(
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(&db.url)
            .await
            .expect("reconnect"),
    );
    assert_eq!(
        reopened
            .stream_version(&stream("gone-1"))
            .await
            .expect("version"),
        0
    );
    reopened.pool().close().await;
    db.drop_database().await;
}

/// With no connection to be had (the pool's only one is held elsewhere), an append fails as
/// unavailable at the pool's timeout, once: it is not tried again on the pool, which would
/// double the wait.
#[tokio::test]
async fn an_append_without_a_connection_fails_once_at_the_pools_timeout() {
    let db = TestDatabase::create(2).await;
    PgEventStore::new(db.pool.clone())
        .migrate()
        .await
        .expect("migrate");
    let timeout = Duration::from_millis(1_000);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .connect(&db.url)
        .await
        .expect("pool");
    let store = PgEventStore::new(pool.clone());
    store.check_log_order().await.expect("log order");
    let held = pool.acquire().await.expect("the pool's only connection");
    let started = std::time::Instant::now();
    let error = store
        .append(
            &stream("starved-1"),
            ExpectedVersion::NoStream,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect_err("no connection to write on");
    let waited = started.elapsed();
    assert!(matches!(error, Error::Unavailable(_)), "{error}");
    assert!(
        waited < timeout * 19 / 10,
        "the append waited {waited:?} for a pool whose timeout is {timeout:?}"
    );
    drop(held);
    store
        .append(
            &stream("starved-1"),
            ExpectedVersion::NoStream,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect("the append once the connection is free");
    pool.close().await;
    db.drop_database().await;
}

/// A store whose connections go through a [`Proxy`], on a migrated database.
async fn store_through_a_proxy() -> (TestDatabase, Proxy, PgEventStore) {
    let db = TestDatabase::create(4).await;
    PgEventStore::new(db.pool.clone())
        .migrate()
        .await
        .expect("migrate");
    let proxy = Proxy::start(&db.url).await;
    let store = PgEventStore::new(proxy.pool(&db.url, 4).await);
    (db, proxy, store)
}

/// The stream's events as stored: (version, event id), in version order.
async fn stored(db: &TestDatabase, name: &str) -> Vec<(i64, uuid::Uuid)> {
    sqlx::query_as(
        "SELECT stream_version, event_id FROM es_events WHERE stream_id = $1 \
         ORDER BY stream_version",
    )
    .bind(name)
    .fetch_all(&db.pool)
    .await
    .expect("stored events")
}

/// The process id of the writer's connection, the one appends are written on.
async fn writer_pid(store: &PgEventStore) -> i32 {
    let rows = store
        .query_on_writer_connection("SELECT pg_backend_pid()")
        .await
        .expect("the writer's connection");
    rows[0].get(0)
}

/// The reply to an append lost after its commit (the network lost it, then closed the
/// connection): the append is written again on its own, found stored by its ids, and
/// reported as stored. The caller is not told it failed, and it is stored once. Both
/// single-append statements are lost this way: of one event, and of several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_whose_reply_is_lost_is_stored_once_and_reported_stored() {
    let (db, proxy, store) = store_through_a_proxy().await;
    for (name, count) in [("lost-one", 1), ("lost-three", 3)] {
        // The writer's connection is open, and its session has prepared the statement.
        store
            .append(
                &stream(name),
                ExpectedVersion::NoStream,
                events(count),
                &Metadata::default(),
            )
            .await
            .expect("the first append");
        let batch = events(count);
        let ids: Vec<uuid::Uuid> = batch.iter().map(|e| e.event_id).collect();
        let pid = writer_pid(&store).await;
        proxy.lose_replies();
        let appended = store
            .append(
                &stream(name),
                ExpectedVersion::Exact(count),
                batch,
                &Metadata::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: the append whose reply was lost failed: {e}"));
        assert!(appended.already_stored, "{name}: {appended:?}");
        assert_eq!(appended.stream_version, 2 * count, "{name}");
        let events = stored(&db, name).await;
        assert_eq!(events.len() as u64, 2 * count, "{name}: {events:?}");
        assert_eq!(
            events[count as usize..]
                .iter()
                .map(|(_, id)| *id)
                .collect::<Vec<_>>(),
            ids,
            "{name}"
        );
        assert_ne!(
            writer_pid(&store).await,
            pid,
            "{name}: the lost connection was kept"
        );
    }
    store.pool().close().await;
    db.drop_database().await;
}

/// An append abandoned half-way through sending its statement (its caller stopped waiting
/// while the network held it up) is not stored later, when the connection would next be
/// used: that connection is dropped with the statement unfinished, and the server stores
/// nothing of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_abandoned_while_sending_is_not_stored_later() {
    let (db, proxy, store) = store_through_a_proxy().await;
    let append = |name: &'static str, events: Vec<NewEvent>| {
        let store = store.clone();
        async move {
            store
                .append(
                    &stream(name),
                    ExpectedVersion::Any,
                    events,
                    &Metadata::default(),
                )
                .await
        }
    };
    // The writer's connection is open, and its session has prepared the statement of a
    // batch: what is held is the statement itself.
    append("sent-first", events(2))
        .await
        .expect("the first append");
    // About 40 MB: more than the sockets between the store and the proxy hold.
    let text = "x".repeat(20_000);
    let large: Vec<NewEvent> = (0..2_000)
        .map(|_| NewEvent::from_domain(&TestEvent::Noted { text: text.clone() }).expect("encode"))
        .collect();
    proxy.hold_requests();
    let abandoned = tokio::time::timeout(Duration::from_secs(2), append("abandoned", large)).await;
    assert!(
        abandoned.is_err(),
        "the held append finished: {abandoned:?}"
    );
    proxy.release_requests();
    append("sent-after", events(1))
        .await
        .expect("the append after the abandoned one");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(stored(&db, "sent-after").await.len(), 1);
    assert!(
        stored(&db, "abandoned").await.is_empty(),
        "the abandoned append was stored later"
    );
    store.pool().close().await;
    db.drop_database().await;
}

/// Appends to one stream arriving together (a group the set statement cannot write, written
/// by `es_append_group_v2`) keep the writer's connection: it is not dropped and opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_of_one_streams_appends_keep_the_writers_connection() {
    let (store, db) = store().await;
    store
        .append(
            &stream("busy-0"),
            ExpectedVersion::NoStream,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect("the first append");
    let pid = writer_pid(&store).await;
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    store
                        .append(
                            &stream("busy-1"),
                            ExpectedVersion::Any,
                            events(1),
                            &Metadata::default(),
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    assert_eq!(stored(&db, "busy-1").await.len(), 160);
    assert_eq!(
        writer_pid(&store).await,
        pid,
        "the writer's connection was replaced"
    );
    db.drop_database().await;
}

/// The writer's connection ended by the server (an administrator, a restart): the next
/// append is written on a new one, once.
#[tokio::test]
async fn an_append_after_the_writers_connection_ended_is_written_once() {
    let (store, db) = store().await;
    store
        .append(
            &stream("ended-1"),
            ExpectedVersion::NoStream,
            events(1),
            &Metadata::default(),
        )
        .await
        .expect("the first append");
    let pid = writer_pid(&store).await;
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1, 5000)")
        .bind(pid)
        .fetch_one(&db.pool)
        .await
        .expect("terminate");
    assert!(ended);
    for (expected, count) in [(ExpectedVersion::Exact(1), 2), (ExpectedVersion::Any, 1)] {
        let appended = store
            .append(
                &stream("ended-1"),
                expected,
                events(count),
                &Metadata::default(),
            )
            .await
            .expect("an append after the connection ended");
        assert!(!appended.already_stored);
    }
    assert_eq!(
        stored(&db, "ended-1")
            .await
            .iter()
            .map(|(version, _)| *version)
            .collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_ne!(writer_pid(&store).await, pid);
    db.drop_database().await;
}

/// A log whose transaction ids are at or above the server's next one (copied from a cluster
/// that was ahead) is refused, for reads and writes, with the error that names the fix.
#[tokio::test]
async fn a_log_from_a_cluster_ahead_is_refused() {
    let db = eventstore_postgres::testing::TestDatabase::create(4).await;
    let store = eventstore_postgres::PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    sqlx::query(
        "INSERT INTO es_events (transaction_id, event_id, stream_id, stream_version, event_type, \
             schema_version, payload, metadata) \
         SELECT (pg_snapshot_xmax(pg_current_snapshot())::text::bigint + 1000000)::text::xid8, \
             gen_random_uuid(), 'copied-1', 1, 'Copied', 1, '{}', '{}'",
    )
    .execute(&db.pool)
    .await
    .expect("a row from the future");
    let fresh = eventstore_postgres::PgEventStore::new(db.pool.clone());
    let refused = fresh.check_log_order().await;
    assert!(
        matches!(refused, Err(cqrs_core::Error::LogAhead { .. })),
        "{refused:?}"
    );
    let message = refused.expect_err("refused").to_string();
    assert!(message.contains("pg_resetwal"), "{message}");
    let stream = cqrs_core::StreamId::new("new-1").expect("id");
    let event =
        cqrs_core::NewEvent::from_domain(&cqrs_core::conformance::TestEvent::Added { amount: 1 })
            .expect("event");
    let append = fresh
        .append(
            &stream,
            cqrs_core::ExpectedVersion::Any,
            vec![event],
            &cqrs_core::Metadata::default(),
        )
        .await;
    assert!(
        matches!(append, Err(cqrs_core::Error::LogAhead { .. })),
        "{append:?}"
    );
    let read = fresh
        .read_all(
            cqrs_core::Position::START,
            10,
            &cqrs_core::EventFilter::all(),
        )
        .await;
    assert!(
        matches!(read, Err(cqrs_core::Error::LogAhead { .. })),
        "{read:?}"
    );
    db.drop_database().await;
}

/// A schema that lost the `(stream_id, stream_version)` constraint (or made it deferrable)
/// is refused before the first append: the append statements rely on it.
#[tokio::test]
async fn a_log_without_its_version_constraint_is_refused() {
    for deferred in [false, true] {
        let (store, db) = store().await;
        sqlx::query("ALTER TABLE es_events DROP CONSTRAINT es_events_stream_version_unique")
            .execute(&db.pool)
            .await
            .expect("drop");
        if deferred {
            sqlx::query(
                "ALTER TABLE es_events ADD CONSTRAINT es_events_stream_version_unique \
                 UNIQUE (stream_id, stream_version) DEFERRABLE INITIALLY DEFERRED",
            )
            .execute(&db.pool)
            .await
            .expect("deferred");
        }
        let fresh = eventstore_postgres::PgEventStore::new(db.pool.clone());
        let append = fresh
            .append(
                &stream("unguarded-1"),
                ExpectedVersion::Any,
                events(1),
                &Metadata::default(),
            )
            .await;
        let message = match append {
            Err(Error::Backend(source)) => source.to_string(),
            other => panic!("deferred {deferred}: {other:?}"),
        };
        assert!(
            message.contains("es_events_stream_version_unique"),
            "{message}"
        );
        drop(store);
        db.drop_database().await;
    }
}

/// Appends that arrive together are written as one group (one transaction); each keeps its
/// own outcome: a conflict, a clash of ids or a retried batch among them changes nothing
/// for the others, and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_written_together_keep_their_own_outcomes() {
    let (store, db) = store().await;
    let stored = events(2);
    store
        .append(
            &stream("taken"),
            ExpectedVersion::NoStream,
            stored.clone(),
            &Metadata::default(),
        )
        .await
        .unwrap();
    for round in 0..20 {
        let tasks: Vec<_> = (0..32)
            .map(|i| {
                let store = store.clone();
                let stored = stored.clone();
                tokio::spawn(async move {
                    let s = stream(&format!("group-{round}-{i}"));
                    let outcome = match i % 4 {
                        // Fine.
                        0 => {
                            store
                                .append(
                                    &s,
                                    ExpectedVersion::NoStream,
                                    events(2),
                                    &Metadata::default(),
                                )
                                .await
                        }
                        // A conflict.
                        1 => {
                            store
                                .append(
                                    &s,
                                    ExpectedVersion::Exact(7),
                                    events(1),
                                    &Metadata::default(),
                                )
                                .await
                        }
                        // Ids stored in another stream: a clash.
                        2 => {
                            store
                                .append(
                                    &s,
                                    ExpectedVersion::Any,
                                    stored.clone(),
                                    &Metadata::default(),
                                )
                                .await
                        }
                        // The stored batch again, on its own stream: a retry.
                        _ => {
                            store
                                .append(
                                    &stream("taken"),
                                    ExpectedVersion::NoStream,
                                    stored.clone(),
                                    &Metadata::default(),
                                )
                                .await
                        }
                    };
                    (i, outcome)
                })
            })
            .collect();
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            match i % 4 {
                0 => assert_eq!(outcome.unwrap().stream_version, 2),
                1 => assert!(
                    matches!(outcome, Err(Error::Conflict { actual: 0, .. })),
                    "{outcome:?}"
                ),
                2 => assert!(
                    matches!(outcome, Err(Error::DuplicateEventId { .. })),
                    "{outcome:?}"
                ),
                _ => assert!(outcome.unwrap().already_stored),
            }
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM es_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        count,
        2 + 20 * 8 * 2,
        "the fine appends and the first batch, once each"
    );
    db.drop_database().await;
}

/// A caller's open transaction holding one stream's lock holds up only that stream's
/// appends, which wait without taking a connection each: appends to other streams go on
/// meanwhile (they are not queued behind it, nor short of connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_transaction_holds_up_only_its_own_streams_appends() {
    let (store, db) = store().await;
    let mut tx = db.pool.begin().await.unwrap();
    store
        .append_in_transaction(
            &mut tx,
            &stream("held-1"),
            ExpectedVersion::Any,
            events(1),
            &Metadata::default(),
        )
        .await
        .unwrap();
    // More appends to the held stream than the pool has connections: they wait in
    // memory, one of them on a connection.
    let waiting: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .append(
                        &stream("held-1"),
                        ExpectedVersion::Any,
                        events(1),
                        &Metadata::default(),
                    )
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        let other = tokio::time::timeout(
            Duration::from_secs(2),
            store.append(
                &stream(&format!("free-{i}")),
                ExpectedVersion::NoStream,
                events(1),
                &Metadata::default(),
            ),
        )
        .await;
        assert!(
            matches!(other, Ok(Ok(_))),
            "append {i} to another stream: {other:?}"
        );
    }
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "the held stream's appends wait for the transaction"
    );
    tx.commit().await.unwrap();
    let mut versions = Vec::new();
    for waiter in waiting {
        let waited = tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        versions.push(waited.unwrap().stream_version);
    }
    versions.sort_unstable();
    assert_eq!(versions, (2..=21).collect::<Vec<u64>>());
    db.drop_database().await;
}

/// An append that PostgreSQL refuses as a value (a NUL character in its JSON) fails alone:
/// the appends written in the same group are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_append_refused_as_a_value_fails_alone() {
    let (store, db) = store().await;
    for round in 0..10 {
        let tasks: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut batch = events(1);
                    if i == 7 {
                        batch[0].data.payload = serde_json::json!({ "note": "nul \u{0000} here" });
                    }
                    let s = stream(&format!("value-{round}-{i}"));
                    (
                        i,
                        store
                            .append(&s, ExpectedVersion::NoStream, batch, &Metadata::default())
                            .await,
                    )
                })
            })
            .collect();
        for task in tasks {
            let (i, outcome) = task.await.unwrap();
            if i == 7 {
                assert!(outcome.is_err(), "the NUL character is refused");
            } else {
                assert!(outcome.is_ok(), "append {i} of round {round}: {outcome:?}");
            }
        }
    }
    db.drop_database().await;
}

/// During a rolling deploy, processes of the previous release call the functions they know
/// (`es_append`, `es_append_try` and `es_append_group` with expected-version kind codes,
/// `es_read_all` with categories) against the migrated schema: each still answers as it did.
#[tokio::test]
async fn the_previous_releases_functions_still_answer() {
    let (store, db) = store().await;
    let append = |function: &'static str, kind: i16, version: i64| {
        let pool = db.pool.clone();
        async move {
            let sql = format!(
                "SELECT outcome, stream_version FROM {function}('old-1', $1, $2, \
                 ARRAY[gen_random_uuid()], ARRAY['Added'], ARRAY[1], ARRAY['{{}}'::jsonb], \
                 '{{}}'::jsonb, false)"
            );
            sqlx::query_as::<_, (String, i64)>(&sql)
                .bind(kind)
                .bind(version)
                .fetch_one(&pool)
                .await
                .expect("the old function answers")
        }
    };
    // Kind codes: 0 any, 1 no stream, 2 stream exists, 3 exact.
    assert_eq!(append("es_append", 2, 0).await, ("conflict".into(), 0));
    assert_eq!(append("es_append", 1, 0).await, ("appended".into(), 1));
    assert_eq!(append("es_append_try", 1, 0).await, ("conflict".into(), 1));
    assert_eq!(append("es_append", 3, 2).await, ("conflict".into(), 1));
    assert_eq!(append("es_append_try", 3, 1).await, ("appended".into(), 2));
    assert_eq!(append("es_append", 2, 0).await, ("appended".into(), 3));
    assert_eq!(append("es_append", 0, 0).await, ("appended".into(), 4));

    let group: Vec<(i32, String, i64)> = sqlx::query_as(
        "SELECT i, outcome, stream_version FROM es_append_group(\
         ARRAY['old-1', 'old-2', 'other-1'], ARRAY[3, 1, 2]::smallint[], ARRAY[4, 0, 0]::bigint[], \
         ARRAY[1, 1, 1], ARRAY['{}', '{}', '{}']::jsonb[], \
         ARRAY[gen_random_uuid(), gen_random_uuid(), gen_random_uuid()], \
         ARRAY['Added', 'Added', 'Added'], ARRAY[1, 1, 1], ARRAY['{}', '{}', '{}']::jsonb[]) \
         ORDER BY i",
    )
    .fetch_all(&db.pool)
    .await
    .expect("the old group function answers");
    assert_eq!(
        group,
        [
            (1, "appended".into(), 5),
            (2, "appended".into(), 1),
            (3, "conflict".into(), 0)
        ]
    );

    // The log shows a transaction once every older one in the cluster has ended (other
    // tests' included): read until all six events are there.
    let mut streams: Vec<Option<String>> = Vec::new();
    for _ in 0..100 {
        streams =
            sqlx::query_scalar("SELECT stream_id FROM es_read_all(0, 0, 100, NULL, ARRAY['old'])")
                .fetch_all(&db.pool)
                .await
                .expect("the old reader answers");
        if streams.len() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(streams.len(), 6, "{streams:?}");
    assert!(streams
        .iter()
        .all(|s| s.as_deref().is_some_and(|s| s.starts_with("old-"))));
    // The previous release's reader (es_read_all_v2, with LIKE patterns) answers the same.
    let v2: Vec<Option<String>> =
        sqlx::query_scalar("SELECT stream_id FROM es_read_all_v2(0, 0, 100, NULL, ARRAY['old-%'])")
            .fetch_all(&db.pool)
            .await
            .expect("the previous reader answers");
    assert_eq!(v2, streams);
    // And the new store reads what the old functions wrote.
    let read = store
        .read_stream(&stream("old-1"), 0, 100)
        .await
        .expect("read");
    assert_eq!(read.len(), 5);
    db.drop_database().await;
}

/// Snapshots are only a cache (invariant 11): a snapshot row the store cannot read (a
/// negative schema version, a state that is not the aggregate's) is passed over, and the
/// command runs on the state replayed from the events.
#[tokio::test]
async fn an_unreadable_snapshot_is_passed_over_for_the_events() {
    let (store, db) = store().await;
    let store: std::sync::Arc<dyn EventStore> = std::sync::Arc::new(store);
    let with = cqrs_core::Repository::<cqrs_core::conformance::Counter>::new(
        std::sync::Arc::clone(&store),
        (),
    )
    .with_snapshots(cqrs_core::SnapshotPolicy::EveryNEvents(5));
    let meta = Metadata::new_request();
    for amount in 1..=10 {
        with.execute("c1", amount, &meta).await.expect("execute");
    }
    for corruption in [
        "UPDATE es_snapshots SET schema_version = -1",
        "UPDATE es_snapshots SET schema_version = 1, state = '\"not a counter\"'",
    ] {
        sqlx::query(corruption)
            .execute(&db.pool)
            .await
            .expect("corrupt the snapshot");
        let loaded = with.load("c1").await.expect("load despite the snapshot");
        assert_eq!(loaded.state.total, (1..=10).sum::<u64>(), "{corruption}");
        assert_eq!(
            loaded.replayed, 10,
            "the events were replayed: {corruption}"
        );
    }
    let stored = with
        .execute("c1", 100, &meta)
        .await
        .expect("a command still runs");
    assert_eq!(stored[0].stream_version, 11);
    let loaded = with.load("c1").await.expect("load");
    assert_eq!(loaded.state.total, (1..=10).sum::<u64>() + 100);
    db.drop_database().await;
}
