//! The global order under concurrency (ARCHITECTURE.md invariant 5) and optimistic
//! concurrency on one stream (invariant 2), on a real PostgreSQL.
//!
//! `ES_STRESS_SCALE=10 cargo test -p eventstore-postgres --test ordering` runs the no-skip
//! stress test ten times longer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    Error, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId,
};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use tokio::sync::watch;
use uuid::Uuid;

async fn store(connections: u32) -> (PgEventStore, TestDatabase) {
    let db = TestDatabase::create(connections).await;
    let store = PgEventStore::new(db.pool.clone()).with_poll_interval(Duration::from_millis(100));
    store.migrate().await.expect("migrate");
    (store, db)
}

fn events(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| NewEvent::from_domain(&TestEvent::Added { amount: i as u64 }).expect("encode"))
        .collect()
}

fn notes(n: usize) -> Vec<NewEvent> {
    (0..n)
        .map(|i| {
            NewEvent::from_domain(&TestEvent::Noted {
                text: i.to_string(),
            })
            .expect("encode")
        })
        .collect()
}

fn stream(name: String) -> StreamId {
    StreamId::new(name).expect("stream id")
}

fn scale() -> usize {
    std::env::var("ES_STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Follows the log from the start through `filter` with a checkpoint, as a projection would,
/// until `stop` says how many events to expect and it has seen them; returns the ids in the
/// order seen.
fn follower(
    store: PgEventStore,
    filter: EventFilter,
    mut stop: watch::Receiver<Option<usize>>,
) -> tokio::task::JoinHandle<Vec<Uuid>> {
    tokio::spawn(async move {
        let mut checkpoint = Position::START;
        let mut seen = Vec::new();
        let mut deadline = None;
        loop {
            let page = store
                .read_all(checkpoint, 50, &filter)
                .await
                .expect("read_all");
            for event in &page.events {
                assert!(event.position > checkpoint, "went backwards");
                seen.push(event.event_id);
            }
            checkpoint = page.scanned_to;
            if let Some(total) = *stop.borrow() {
                if seen.len() >= total {
                    return seen;
                }
                let deadline = *deadline.get_or_insert(Instant::now() + Duration::from_secs(30));
                assert!(
                    Instant::now() < deadline,
                    "follower saw {} of {total}",
                    seen.len()
                );
            }
            if page.events.is_empty() {
                tokio::select! {
                    _ = store.wait_for_events(checkpoint, Duration::from_millis(200)) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    })
}

/// 32 writers append with random delays inside their transactions (some roll back) while
/// three followers read with checkpoints, one of them through a filter on the event type
/// that half the writers' events match (its pages walk past the others, and an unfull page
/// moves its checkpoint to the horizon): each follower sees every committed event it asks
/// for exactly once, none of the rolled-back ones, and all see one order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_reader_skips_or_duplicates_under_concurrent_writers() {
    const WRITERS: usize = 32;
    let appends_each = 15 * scale();
    let (store, db) = store(WRITERS as u32 + 8).await;
    let (stop_tx, stop_rx) = watch::channel(None);
    let (added_tx, added_rx) = watch::channel(None);
    let followers = [
        follower(store.clone(), EventFilter::all(), stop_rx.clone()),
        follower(store.clone(), EventFilter::all(), stop_rx),
    ];
    let filtered = follower(
        store.clone(),
        EventFilter::all().event_types(["Added"]),
        added_rx,
    );

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let pool = db.pool.clone();
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::new();
            let mut rolled_back = Vec::new();
            for i in 0..appends_each {
                // Even writers append `Added` events, odd ones `Noted`.
                let batch = if w % 2 == 0 {
                    events(1 + fastrand::usize(0..3))
                } else {
                    notes(1 + fastrand::usize(0..3))
                };
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                let mut tx = pool.begin().await.expect("begin");
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3_000))).await;
                store
                    .append_in_transaction(
                        &mut tx,
                        &stream(format!("writer-{w}")),
                        ExpectedVersion::Any,
                        batch,
                        &Metadata::default(),
                    )
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3_000))).await;
                if i % 10 == 7 {
                    tx.rollback().await.expect("rollback");
                    rolled_back.extend(ids);
                } else {
                    tx.commit().await.expect("commit");
                    committed.extend(ids);
                }
            }
            (committed, rolled_back)
        }));
    }
    let (mut committed, mut rolled_back, mut added) =
        (HashSet::new(), HashSet::new(), HashSet::new());
    for (w, writer) in writers.into_iter().enumerate() {
        let (c, r) = writer.await.expect("writer");
        if w % 2 == 0 {
            added.extend(c.iter().copied());
        }
        committed.extend(c);
        rolled_back.extend(r);
    }
    stop_tx.send_replace(Some(committed.len()));
    added_tx.send_replace(Some(added.len()));

    let [a, b] = followers;
    let a = a.await.expect("follower a");
    let b = b.await.expect("follower b");
    let filtered = filtered.await.expect("filtered follower");
    let unique: HashSet<Uuid> = filtered.iter().copied().collect();
    assert_eq!(
        unique.len(),
        filtered.len(),
        "no event seen twice through the filter"
    );
    assert_eq!(
        unique, added,
        "exactly the committed Added events through the filter"
    );
    let added_in_order: Vec<Uuid> = a.iter().copied().filter(|id| added.contains(id)).collect();
    assert_eq!(
        filtered, added_in_order,
        "the filtered follower saw the same order"
    );
    for seen in [&a, &b] {
        assert_eq!(seen.len(), committed.len(), "exactly the committed events");
        let unique: HashSet<Uuid> = seen.iter().copied().collect();
        assert_eq!(unique.len(), seen.len(), "no event seen twice");
        assert_eq!(unique, committed, "no committed event skipped");
        assert!(
            unique.is_disjoint(&rolled_back),
            "no rolled-back event seen"
        );
    }
    assert_eq!(a, b, "both followers saw one order");
    db.drop_database().await;
}

/// A transaction that takes its position early and commits seconds later is not skipped,
/// and holds readers back no longer than it stays open; while it is open, the store names it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_commit_is_not_skipped_and_stalls_readers_only_while_open() {
    let (store, db) = store(10).await;
    let mut slow = db.pool.begin().await.expect("begin");
    let slow_ids: Vec<Uuid> = {
        let batch = events(1);
        let ids = batch.iter().map(|e| e.event_id).collect();
        store
            .append_in_transaction(
                &mut slow,
                &stream("slow-1".into()),
                ExpectedVersion::NoStream,
                batch,
                &Metadata::default(),
            )
            .await
            .expect("slow append");
        ids
    };
    let fast = store
        .append(
            &stream("fast-1".into()),
            ExpectedVersion::NoStream,
            events(3),
            &Metadata::default(),
        )
        .await
        .expect("fast append");
    assert!(
        fast.positions[0].sequence > 1,
        "the slow writer took the earlier sequence"
    );

    // While the slow transaction is open, the fast events are held back, not skipped past.
    let page = store
        .read_all(Position::START, 100, &EventFilter::all())
        .await
        .expect("read");
    assert!(
        page.events.is_empty(),
        "nothing is readable behind an open transaction"
    );
    let blockers = store.horizon_blockers().await.expect("blockers");
    assert!(
        blockers
            .iter()
            .any(|b| b.database.as_deref() == Some(db.name.as_str())),
        "the open transaction is reported: {blockers:?}"
    );

    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut checkpoint = Position::START;
            let mut seen = Vec::new();
            while seen.len() < 4 {
                let page = store
                    .read_all(checkpoint, 100, &EventFilter::all())
                    .await
                    .expect("read");
                seen.extend(page.events.iter().map(|e| e.event_id));
                checkpoint = page.scanned_to;
                if page.events.is_empty() {
                    store
                        .wait_for_events(checkpoint, Duration::from_secs(5))
                        .await
                        .expect("wait");
                }
            }
            (seen, Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    slow.commit().await.expect("commit");
    let committed_at = Instant::now();
    let (seen, finished_at) = reader.await.expect("reader");
    assert_eq!(
        seen[0], slow_ids[0],
        "the slow event comes first: its transaction is older"
    );
    assert_eq!(seen.len(), 4);
    let stalled_after_commit = finished_at.saturating_duration_since(committed_at);
    assert!(
        stalled_after_commit < Duration::from_millis(1_000),
        "readers caught up {stalled_after_commit:?} after the slow commit"
    );
    db.drop_database().await;
}

/// A rolled-back transaction leaves nothing behind and releases readers when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rollback_is_never_seen_and_releases_readers() {
    let (store, db) = store(10).await;
    let mut doomed = db.pool.begin().await.expect("begin");
    store
        .append_in_transaction(
            &mut doomed,
            &stream("doomed-1".into()),
            ExpectedVersion::NoStream,
            events(2),
            &Metadata::default(),
        )
        .await
        .expect("append");
    let kept = store
        .append(
            &stream("kept-1".into()),
            ExpectedVersion::NoStream,
            events(2),
            &Metadata::default(),
        )
        .await
        .expect("append");
    tokio::time::sleep(Duration::from_millis(500)).await;
    doomed.rollback().await.expect("rollback");

    let started = Instant::now();
    let mut checkpoint = Position::START;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "reader stalled after the rollback"
        );
        let page = store
            .read_all(checkpoint, 100, &EventFilter::all())
            .await
            .expect("read");
        seen.extend(
            page.events
                .iter()
                .map(|e| (e.stream_id.to_string(), e.position)),
        );
        checkpoint = page.scanned_to;
        if page.events.is_empty() {
            store
                .wait_for_events(checkpoint, Duration::from_millis(500))
                .await
                .expect("wait");
        }
    }
    assert_eq!(
        seen,
        vec![
            ("kept-1".to_owned(), kept.positions[0]),
            ("kept-1".to_owned(), kept.positions[1])
        ]
    );
    assert_eq!(
        store
            .stream_version(&stream("doomed-1".into()))
            .await
            .expect("v"),
        0
    );
    db.drop_database().await;
}

/// 8 writers race on one stream with `Exact` versions: every stored version is unique and
/// contiguous, and every attempt that did not win got the typed conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn contention_on_one_stream_gives_contiguous_versions_and_typed_conflicts() {
    const WRITERS: usize = 8;
    const WINS_EACH: usize = 10;
    let (store, db) = store(WRITERS as u32 + 2).await;
    let s = stream("hot-1".into());
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let store = Arc::clone(&store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let (mut wins, mut conflicts) = (Vec::new(), 0usize);
            while wins.len() < WINS_EACH * 2 {
                let version = store.stream_version(&s).await.expect("version");
                let batch = events(2);
                let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                match store
                    .append(
                        &s,
                        ExpectedVersion::Exact(version),
                        batch,
                        &Metadata::default(),
                    )
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.stream_version, version + 2);
                        wins.extend(ids);
                    }
                    Err(Error::Conflict {
                        stream,
                        expected,
                        actual,
                    }) => {
                        assert_eq!(stream, s);
                        assert_eq!(expected, ExpectedVersion::Exact(version));
                        assert!(actual > version);
                        conflicts += 1;
                    }
                    Err(other) => panic!("a loser must get a conflict, got {other}"),
                }
            }
            (wins, conflicts)
        }));
    }
    let mut won: HashMap<Uuid, ()> = HashMap::new();
    let mut conflicts = 0;
    for task in tasks {
        let (wins, c) = task.await.expect("writer");
        won.extend(wins.into_iter().map(|id| (id, ())));
        conflicts += c;
    }
    let stored = store.read_stream(&s, 1, 10_000).await.expect("read");
    let versions: Vec<u64> = stored.iter().map(|e| e.stream_version).collect();
    assert_eq!(
        versions,
        (1..=(WRITERS * WINS_EACH * 2) as u64).collect::<Vec<_>>()
    );
    assert!(
        stored.iter().all(|e| won.contains_key(&e.event_id)),
        "only winners' events are stored"
    );
    assert_eq!(stored.len(), won.len());
    assert!(conflicts > 0, "the writers really raced");
    db.drop_database().await;
}

/// Writers in several processes (stores with pools of their own) append with `Any`, writer
/// `w` of every process to stream `w`: within a process the streams are distinct (their
/// appends are written together), across processes they are shared. No append is refused,
/// and each append's events sit contiguously at the versions and positions it was told. A
/// statement reads the streams as they were when it began; a writer of another process that
/// commits just after must not turn that into a conflict or a gap (the statement fails on the
/// version constraint, storing nothing, and the appends are written again under the lock).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn appends_from_several_processes_to_shared_streams_all_land_in_order() {
    const PROCESSES: usize = 4;
    const WRITERS_EACH: usize = 4;
    let appends_each = 40 * scale();
    let (first, db) = store(4).await;
    let mut stores = vec![first];
    for _ in 1..PROCESSES {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&db.url)
            .await
            .expect("pool");
        stores.push(PgEventStore::new(pool));
    }
    let streams: Vec<StreamId> = (0..WRITERS_EACH)
        .map(|w| stream(format!("hot-{w}")))
        .collect();
    let mut tasks = Vec::new();
    for (p, store) in stores.iter().enumerate() {
        for (w, s) in streams.iter().enumerate() {
            let (store, s) = (store.clone(), s.clone());
            tasks.push(tokio::spawn(async move {
                let mut told = Vec::new();
                for i in 0..appends_each {
                    let batch = events(1 + (p + w + i) % 3);
                    let ids: Vec<Uuid> = batch.iter().map(|e| e.event_id).collect();
                    let appended = store
                        .append(&s, ExpectedVersion::Any, batch, &Metadata::default())
                        .await
                        .unwrap_or_else(|e| panic!("an Any append was refused: {e}"));
                    told.push((w, ids, appended));
                }
                told
            }));
        }
    }
    let mut told = Vec::new();
    for task in tasks {
        told.extend(task.await.expect("writer"));
    }
    for (w, s) in streams.iter().enumerate() {
        let stored = stores[0].read_stream(s, 1, 100_000).await.expect("read");
        let mine: Vec<_> = told.iter().filter(|(to, _, _)| *to == w).collect();
        let total: usize = mine.iter().map(|(_, ids, _)| ids.len()).sum();
        let versions: Vec<u64> = stored.iter().map(|e| e.stream_version).collect();
        assert_eq!(versions, (1..=total as u64).collect::<Vec<_>>(), "{s}");
        for (_, ids, appended) in mine {
            let first = appended.stream_version as usize - ids.len();
            for (k, id) in ids.iter().enumerate() {
                let event = &stored[first + k];
                assert_eq!(event.event_id, *id, "{s} version {}", first + k + 1);
                assert_eq!(event.position, appended.positions[k]);
            }
        }
    }
    for store in &stores[1..] {
        store.pool().close().await;
    }
    db.drop_database().await;
}
