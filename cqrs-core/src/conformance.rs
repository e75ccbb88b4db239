//! The store conformance suite: one set of tests that every [`EventStore`] must pass.
//!
//! A store crate runs it with [`store_conformance_tests!`](crate::store_conformance_tests),
//! giving an async factory that returns a fresh, empty store and a teardown future (run
//! after a passing test; for example, dropping the test's database):
//!
//! ```text
//! async fn fresh_store() -> (Arc<dyn EventStore>, Teardown) { … }
//! cqrs_core::store_conformance_tests!(fresh_store);
//! ```
//!
//! Each check panics with a message on failure, like any test assertion.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use crate::command_handler::Repository;
use crate::event::{DomainEvent, Metadata, NewEvent, RawEvent, RecordedEvent, ReplayedEvent};
use crate::snapshot::{Snapshot, SnapshotAndTail, SnapshotPolicy};
use crate::store::{EventFilter, EventStore};
use crate::stream::{ExpectedVersion, Position, StreamId};
use crate::upcast::Upcasters;
use crate::{Aggregate, CommandId, Error};

/// Work to run after a passing test (dropping its database, say).
pub type Teardown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A teardown with nothing to do.
pub fn no_teardown() -> Teardown {
    Box::pin(async {})
}

/// Generates one `#[tokio::test]` per conformance check, each on a fresh store from
/// `$factory` (an async fn returning `(Arc<dyn EventStore>, Teardown)`).
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:path) => {
        $crate::store_conformance_tests!(@each $factory;
            append_and_read_stream,
            replay_stream_matches_read_stream,
            expected_version_rules,
            conflict_stores_nothing,
            batches_are_atomic,
            bad_batches_are_refused,
            retried_append_is_idempotent,
            global_order_and_paging,
            read_all_filters,
            concurrent_exact_writers_on_one_stream,
            concurrent_writers_and_followers_agree,
            snapshots_keep_the_newest,
            snapshot_and_tail_read_together,
            upcasting_on_read,
            unknown_event_type_names_type_and_position,
            wait_for_events_wakes_on_append,
            repository_with_snapshots_matches_full_replay,
            repository_loads_past_long_tails_and_unusable_snapshots,
            repeated_command_returns_the_original_outcome,
            concurrent_repeats_of_one_command_store_it_once,
            a_repeat_refused_by_the_state_its_original_made_answers_with_the_original,
            lost_replies_are_retried_with_the_same_ids,
            an_unreadable_snapshot_is_skipped_and_other_errors_are_returned
        );
    };
    (@each $factory:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, teardown) = $factory().await;
                $crate::conformance::$name(store).await;
                teardown.await;
            }
        )*
    };
}

/// The event type the suite writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TestEvent {
    /// Something was added to a counter.
    Added {
        /// How much.
        amount: u64,
    },
    /// A note was left.
    Noted {
        /// The note.
        text: String,
    },
}

impl DomainEvent for TestEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::Added { .. } => "Added",
            Self::Noted { .. } => "Noted",
        }
    }

    fn schema_version(&self) -> u32 {
        2
    }
}

/// A counter aggregate for the repository checks.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    /// The sum of every `Added`.
    pub total: u64,
    /// How many events were applied.
    pub applied: u64,
}

/// The counter refuses nothing; its error type is empty.
#[derive(Debug, thiserror::Error)]
#[error("never happens")]
pub struct Never;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Id = str;
    type Command = u64;
    type Event = TestEvent;
    type Error = Never;
    type Services = ();

    fn handle(&self, _: &str, amount: u64, _: &()) -> Result<Vec<TestEvent>, Never> {
        Ok(vec![TestEvent::Added { amount }])
    }

    fn apply(&mut self, event: &TestEvent) {
        self.applied += 1;
        if let TestEvent::Added { amount } = event {
            self.total += amount;
        }
    }
}

fn stream(name: &str) -> StreamId {
    StreamId::new(name).expect("valid stream id")
}

fn added(amount: u64) -> NewEvent {
    NewEvent::from_domain(&TestEvent::Added { amount }).expect("encodes")
}

fn batch(n: u64) -> Vec<NewEvent> {
    (1..=n).map(added).collect()
}

/// The whole log through `filter`, read by pages of `page_size`, up to a marker event
/// appended first. A store may make events visible a little after their append returns (the
/// PostgreSQL store waits for older transactions to end), so "read it all" means "read until
/// an event written after everything else is passed". Markers are left out of the result.
async fn read_log(
    store: &dyn EventStore,
    filter: &EventFilter,
    page_size: usize,
) -> Vec<RecordedEvent> {
    let marker = NewEvent::from_domain(&TestEvent::Noted {
        text: "marker".into(),
    })
    .expect("enc");
    let marker_stream = stream(&format!("marker-{}", Uuid::new_v4().simple()));
    let written = store
        .append(
            &marker_stream,
            ExpectedVersion::NoStream,
            vec![marker],
            &Metadata::default(),
        )
        .await
        .expect("append marker");
    let target = written.positions[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut events = Vec::new();
    let mut after = Position::START;
    while after < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the marker never became readable"
        );
        let page = store
            .read_all(after, page_size, filter)
            .await
            .expect("read_all");
        assert!(
            page.events.len() <= page_size,
            "a page is larger than its limit"
        );
        assert!(page.scanned_to >= after, "scanned_to went backwards");
        for event in &page.events {
            assert!(event.position > after, "read_all went backwards");
            after = event.position;
        }
        after = after.max(page.scanned_to);
        events.extend(
            page.events
                .into_iter()
                .filter(|e| e.stream_id.category() != "marker"),
        );
        if after < target {
            store
                .wait_for_events(after, Duration::from_millis(100))
                .await
                .expect("wait");
        }
    }
    events
}

async fn read_everything(store: &dyn EventStore) -> Vec<RecordedEvent> {
    read_log(store, &EventFilter::all(), 7).await
}

/// Appending to a new stream numbers versions from 1; `read_stream` pages through them in
/// order with their metadata.
pub async fn append_and_read_stream(store: Arc<dyn EventStore>) {
    let s = stream("account-1");
    let meta = Metadata::new_request()
        .with_actor("tester")
        .with("tenant", "t1");
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch(3), &meta)
        .await
        .expect("first append");
    assert_eq!(first.stream_version, 3);
    assert_eq!(first.positions.len(), 3);
    assert!(!first.already_stored);
    assert!(first.positions.windows(2).all(|w| w[0] < w[1]));
    let second = store
        .append(
            &s,
            ExpectedVersion::Exact(3),
            batch(2),
            &Metadata::default(),
        )
        .await
        .expect("second append");
    assert_eq!(second.stream_version, 5);
    assert!(second.positions[0] > first.positions[2]);
    assert_eq!(store.stream_version(&s).await.expect("version"), 5);

    let all = store.read_stream(&s, 1, 100).await.expect("read");
    let versions: Vec<u64> = all.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![1, 2, 3, 4, 5]);
    assert_eq!(all[0].metadata, meta);
    assert_eq!(all[0].event.event_type, "Added");
    assert_eq!(all[0].event.schema_version, 2);
    assert_eq!(all[0].event.payload, json!({ "amount": 1 }));
    assert_eq!(all[0].position, first.positions[0]);

    let page = store.read_stream(&s, 2, 2).await.expect("page");
    let versions: Vec<u64> = page.iter().map(|e| e.stream_version).collect();
    assert_eq!(versions, vec![2, 3]);
    assert!(store
        .read_stream(&s, 6, 10)
        .await
        .expect("past end")
        .is_empty());
    assert!(store
        .read_stream(&stream("account-none"), 1, 10)
        .await
        .expect("missing stream")
        .is_empty());
    assert_eq!(
        store
            .stream_version(&stream("account-none"))
            .await
            .expect("v"),
        0
    );

    // Every way of reading an event gives it the same position: the stream, the lookup by
    // id and the global log (stores may decode positions differently on each path).
    let by_id = store
        .read_event(all[4].event_id)
        .await
        .expect("read_event")
        .expect("stored");
    assert_eq!(by_id, all[4]);
    assert!(store
        .read_event(Uuid::new_v4())
        .await
        .expect("read_event")
        .is_none());
    let log = read_everything(store.as_ref()).await;
    let from_log: Vec<&RecordedEvent> = log.iter().filter(|e| e.stream_id == s).collect();
    assert_eq!(from_log.len(), 5);
    for (logged, streamed) in from_log.iter().zip(&all) {
        assert_eq!(*logged, streamed);
    }
}

/// `replay_stream` hands over what `read_stream` reads, less the envelope: the same
/// versions, positions and events, page for page; an error of its `apply` stops it.
pub async fn replay_stream_matches_read_stream(store: Arc<dyn EventStore>) {
    let s = stream("account-replayed");
    let meta = Metadata::new_request().with_actor("tester");
    store
        .append(&s, ExpectedVersion::NoStream, batch(3), &meta)
        .await
        .expect("first append");
    store
        .append(
            &stream("account-other"),
            ExpectedVersion::Any,
            batch(1),
            &meta,
        )
        .await
        .expect("another stream");
    let note = NewEvent::from_domain(&TestEvent::Noted {
        text: "between".into(),
    })
    .expect("enc");
    store
        .append(&s, ExpectedVersion::Exact(3), vec![note, added(9)], &meta)
        .await
        .expect("second append");

    for (from, limit) in [(1, 100), (2, 2), (5, 1), (6, 10)] {
        let read: Vec<ReplayedEvent> = store
            .read_stream(&s, from, limit)
            .await
            .expect("read")
            .into_iter()
            .map(ReplayedEvent::from)
            .collect();
        let mut replayed = Vec::new();
        let count = store
            .replay_stream(&s, from, limit, &mut |event| {
                replayed.push(event);
                Ok(())
            })
            .await
            .expect("replay");
        assert_eq!(replayed, read, "from version {from}, {limit} at most");
        assert_eq!(count, read.len());
    }
    let mut versions = Vec::new();
    store
        .replay_stream(&stream("account-none"), 1, 10, &mut |event| {
            versions.push(event.stream_version);
            Ok(())
        })
        .await
        .expect("missing stream");
    assert!(versions.is_empty());

    let refused = store
        .replay_stream(&s, 1, 100, &mut |event| {
            versions.push(event.stream_version);
            match event.stream_version {
                2 => Err(Error::InvalidInput("stop at 2".into())),
                _ => Ok(()),
            }
        })
        .await;
    assert!(
        matches!(&refused, Err(Error::InvalidInput(m)) if m == "stop at 2"),
        "{refused:?}"
    );
    assert_eq!(versions, vec![1, 2], "nothing is applied after the error");

    // Replays stopped at their first event, more of them than a store has connections, each
    // followed by a whole one: a connection left with the rest of a stopped replay unread
    // would answer a later one wrongly.
    let long = stream("account-long");
    store
        .append(&long, ExpectedVersion::NoStream, batch(300), &meta)
        .await
        .expect("a longer stream");
    for _ in 0..64 {
        let stopped = store
            .replay_stream(&long, 1, 1_000, &mut |_| {
                Err(Error::InvalidInput("stop at once".into()))
            })
            .await;
        assert!(
            matches!(&stopped, Err(Error::InvalidInput(m)) if m == "stop at once"),
            "{stopped:?}"
        );
        let mut whole = Vec::new();
        store
            .replay_stream(&long, 1, 1_000, &mut |event| {
                whole.push(event.stream_version);
                Ok(())
            })
            .await
            .expect("a replay after a stopped one");
        assert_eq!(whole, (1..=300).collect::<Vec<u64>>());
    }
}

/// Each `ExpectedVersion` accepts exactly the states it names.
pub async fn expected_version_rules(store: Arc<dyn EventStore>) {
    let s = stream("rules-1");
    let m = Metadata::default();
    let conflict = |r: crate::Result<_>, actual_version: u64| match r {
        Err(Error::Conflict { stream, actual, .. }) => {
            assert_eq!(stream.as_str(), "rules-1");
            assert_eq!(actual, actual_version);
        }
        other => panic!("expected a conflict, got {other:?}"),
    };
    conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, batch(1), &m)
            .await,
        0,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(1), batch(1), &m)
            .await,
        0,
    );
    store
        .append(&s, ExpectedVersion::Exact(0), batch(1), &m)
        .await
        .expect("Exact(0) on a new stream");
    conflict(
        store
            .append(&s, ExpectedVersion::NoStream, batch(1), &m)
            .await,
        1,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), batch(1), &m)
            .await,
        1,
    );
    conflict(
        store
            .append(&s, ExpectedVersion::Exact(2), batch(1), &m)
            .await,
        1,
    );
    store
        .append(&s, ExpectedVersion::StreamExists, batch(1), &m)
        .await
        .expect("StreamExists");
    let any = store
        .append(&s, ExpectedVersion::Any, batch(2), &m)
        .await
        .expect("Any");
    assert_eq!(any.stream_version, 4);
    let fresh = store
        .append(&stream("rules-2"), ExpectedVersion::Any, batch(1), &m)
        .await
        .expect("Any on a new stream");
    assert_eq!(fresh.stream_version, 1);
}

/// A refused append stores nothing: not in the stream, not in the global log.
pub async fn conflict_stores_nothing(store: Arc<dyn EventStore>) {
    let s = stream("conflict-1");
    let m = Metadata::default();
    store
        .append(&s, ExpectedVersion::NoStream, batch(2), &m)
        .await
        .expect("setup");
    let before = read_everything(store.as_ref()).await.len();
    let refused = store
        .append(&s, ExpectedVersion::Exact(1), batch(3), &m)
        .await;
    match refused {
        Err(Error::Conflict {
            expected, actual, ..
        }) => {
            assert_eq!(expected, ExpectedVersion::Exact(1));
            assert_eq!(actual, 2);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(store.stream_version(&s).await.expect("v"), 2);
    assert_eq!(read_everything(store.as_ref()).await.len(), before);
}

/// A batch whose last event clashes with a stored id stores none of its events.
pub async fn batches_are_atomic(store: Arc<dyn EventStore>) {
    let m = Metadata::default();
    let taken = added(99);
    store
        .append(
            &stream("atomic-a"),
            ExpectedVersion::NoStream,
            vec![taken.clone()],
            &m,
        )
        .await
        .expect("setup");
    let mut events = batch(4);
    events.push(taken.clone());
    match store
        .append(&stream("atomic-b"), ExpectedVersion::NoStream, events, &m)
        .await
    {
        Err(Error::DuplicateEventId {
            event_id,
            stored_in,
        }) => {
            assert_eq!(event_id, taken.event_id);
            assert_eq!(stored_in.as_str(), "atomic-a");
        }
        other => panic!("expected DuplicateEventId, got {other:?}"),
    }
    assert_eq!(
        store.stream_version(&stream("atomic-b")).await.expect("v"),
        0
    );
    assert_eq!(read_everything(store.as_ref()).await.len(), 1);
}

/// Empty batches, ids repeated within a batch and zero limits are typed input errors.
pub async fn bad_batches_are_refused(store: Arc<dyn EventStore>) {
    let s = stream("bad-1");
    let m = Metadata::default();
    let empty = store.append(&s, ExpectedVersion::Any, Vec::new(), &m).await;
    assert!(matches!(empty, Err(Error::InvalidInput(_))), "{empty:?}");
    let one = added(1);
    let twice = store
        .append(&s, ExpectedVersion::Any, vec![one.clone(), one], &m)
        .await;
    assert!(matches!(twice, Err(Error::InvalidInput(_))), "{twice:?}");
    let zero = store
        .read_all(Position::START, 0, &EventFilter::all())
        .await;
    assert!(matches!(zero, Err(Error::InvalidInput(_))), "{zero:?}");
    assert!(read_everything(store.as_ref()).await.is_empty());
}

/// Sending the same append again (a retry after a lost reply) stores nothing twice and
/// reports the earlier write.
pub async fn retried_append_is_idempotent(store: Arc<dyn EventStore>) {
    let s = stream("retry-1");
    let m = Metadata::default();
    let events = batch(3);
    let first = store
        .append(&s, ExpectedVersion::NoStream, events.clone(), &m)
        .await
        .expect("first");
    let again = store
        .append(&s, ExpectedVersion::NoStream, events.clone(), &m)
        .await
        .expect("retry");
    assert!(again.already_stored);
    assert_eq!(again.positions, first.positions);
    assert_eq!(again.stream_version, 3);
    let any = store
        .append(&s, ExpectedVersion::Any, events, &m)
        .await
        .expect("retry with Any");
    assert!(any.already_stored);
    assert_eq!(store.stream_version(&s).await.expect("v"), 3);
    assert_eq!(read_everything(store.as_ref()).await.len(), 3);
}

/// `read_all` returns every event once, in increasing positions, whatever the page size.
pub async fn global_order_and_paging(store: Arc<dyn EventStore>) {
    let m = Metadata::default();
    let mut written = Vec::new();
    for round in 0..5u64 {
        for name in ["order-1", "order-2", "stock-1"] {
            let r = store
                .append(
                    &stream(name),
                    ExpectedVersion::Any,
                    batch(round % 3 + 1),
                    &m,
                )
                .await
                .expect("append");
            written.extend(r.positions);
        }
    }
    let all = read_everything(store.as_ref()).await;
    let positions: Vec<Position> = all.iter().map(|e| e.position).collect();
    assert_eq!(
        positions, written,
        "the log order is the order of the writes"
    );
    for size in [1, 2, 5, 1000] {
        let seen: Vec<Position> = read_log(store.as_ref(), &EventFilter::all(), size)
            .await
            .iter()
            .map(|e| e.position)
            .collect();
        assert_eq!(seen, written, "paging by {size}");
    }
    let head = store.head().await.expect("head");
    assert!(Some(&head) > written.last(), "the head is the last marker");
    let barrier = store.read_barrier().await.expect("barrier");
    assert!(
        barrier >= head,
        "the barrier is at or after every committed event"
    );
}

/// Filters by event type and by stream category: a category is the stream id before the
/// first `-` (the whole id without one), matched literally (`_` and `%` are no wildcards).
pub async fn read_all_filters(store: Arc<dyn EventStore>) {
    let m = Metadata::default();
    let note = |t: &str| NewEvent::from_domain(&TestEvent::Noted { text: t.into() }).expect("enc");
    for (name, events) in [
        ("order-1", vec![added(1), note("a")]),
        ("stock-1", vec![added(2), note("b")]),
        ("order-2", vec![note("c")]),
        ("orderline-1", vec![added(3)]),
        ("order", vec![added(4)]),
        ("or_er-1", vec![added(5)]),
        ("a%b-1", vec![added(6)]),
        ("axb-1", vec![added(7)]),
        ("a\\b-1", vec![added(8)]),
    ] {
        store
            .append(&stream(name), ExpectedVersion::Any, events, &m)
            .await
            .expect("append");
    }
    let read = |filter: EventFilter| {
        let store = Arc::clone(&store);
        async move {
            read_log(store.as_ref(), &filter, 100)
                .await
                .iter()
                .map(|e| format!("{}:{}", e.stream_id, e.event.event_type))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        read(EventFilter::all().event_types(["Noted"])).await,
        ["order-1:Noted", "stock-1:Noted", "order-2:Noted"]
    );
    assert_eq!(
        read(EventFilter::all().categories(["order"])).await,
        [
            "order-1:Added",
            "order-1:Noted",
            "order-2:Noted",
            "order:Added"
        ]
    );
    assert_eq!(
        read(EventFilter::all().categories(["or_er", "a%b", "a\\b"])).await,
        ["or_er-1:Added", "a%b-1:Added", "a\\b-1:Added"]
    );
    assert!(
        read(EventFilter::all().categories(["order-1", "orde", "a%"]))
            .await
            .is_empty(),
        "no category holds a separator, and a category is matched whole"
    );
    assert_eq!(
        read(
            EventFilter::all()
                .categories(["order", "orderline"])
                .event_types(["Added"])
        )
        .await,
        ["order-1:Added", "orderline-1:Added", "order:Added"]
    );
    assert!(read(EventFilter::all().event_types(["Nothing"]))
        .await
        .is_empty());
    let head = store.head().await.expect("head");
    let page = store
        .read_all(head, 100, &EventFilter::all().event_types(["Nothing"]))
        .await
        .expect("read");
    assert!(page.events.is_empty());
    assert!(
        page.scanned_to >= head,
        "a filtered page still moves the reader on"
    );
}

/// 16 tasks append to one stream with `Exact` versions at once: every version is stored
/// once, none is missing, and every loser was told of the conflict.
pub async fn concurrent_exact_writers_on_one_stream(store: Arc<dyn EventStore>) {
    const WRITERS: u64 = 16;
    const APPENDS_EACH: u64 = 5;
    let s = stream("contended-1");
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let store = Arc::clone(&store);
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0u64;
            let mut done = 0;
            while done < APPENDS_EACH {
                let version = store.stream_version(&s).await.expect("version");
                let event = added(writer * 1000 + done);
                match store
                    .append(
                        &s,
                        ExpectedVersion::Exact(version),
                        vec![event],
                        &Metadata::default(),
                    )
                    .await
                {
                    Ok(r) => {
                        assert_eq!(r.stream_version, version + 1);
                        done += 1;
                    }
                    Err(Error::Conflict { actual, .. }) => {
                        assert_ne!(actual, version, "a conflict reports the real version");
                        conflicts += 1;
                    }
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            conflicts
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
    let events = store.read_stream(&s, 1, 10_000).await.expect("read");
    let versions: Vec<u64> = events.iter().map(|e| e.stream_version).collect();
    let expected: Vec<u64> = (1..=WRITERS * APPENDS_EACH).collect();
    assert_eq!(versions, expected, "versions are unique and contiguous");
    let amounts: BTreeSet<u64> = events
        .iter()
        .map(|e| e.event.payload["amount"].as_u64().expect("amount"))
        .collect();
    assert_eq!(
        amounts.len() as u64,
        WRITERS * APPENDS_EACH,
        "every write is there once"
    );
}

/// Writers on many streams and two followers of the global log at once: each follower sees
/// every event exactly once, and both see the same order.
pub async fn concurrent_writers_and_followers_agree(store: Arc<dyn EventStore>) {
    const WRITERS: usize = 8;
    const APPENDS_EACH: usize = 20;
    let total = WRITERS * APPENDS_EACH * 2;
    let follow = |store: Arc<dyn EventStore>| {
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut after = Position::START;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < total {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "follower stalled at {after}"
                );
                let page = store
                    .read_all(after, 13, &EventFilter::all())
                    .await
                    .expect("read");
                for e in &page.events {
                    assert!(
                        e.position > after,
                        "went backwards: {} after {after}",
                        e.position
                    );
                    seen.push(e.event_id);
                    after = e.position;
                }
                after = after.max(page.scanned_to);
                if page.events.is_empty() {
                    store
                        .wait_for_events(after, Duration::from_millis(50))
                        .await
                        .expect("wait");
                }
            }
            seen
        })
    };
    let followers = [follow(Arc::clone(&store)), follow(Arc::clone(&store))];
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let s = stream(&format!("writer-{w}"));
            let mut ids = Vec::new();
            for _ in 0..APPENDS_EACH {
                let events = batch(2);
                ids.extend(events.iter().map(|e| e.event_id));
                store
                    .append(&s, ExpectedVersion::Any, events, &Metadata::default())
                    .await
                    .expect("append");
            }
            ids
        }));
    }
    let mut written = HashSet::new();
    for w in writers {
        written.extend(w.await.expect("writer"));
    }
    let [a, b] = followers;
    let (a, b) = (a.await.expect("follower a"), b.await.expect("follower b"));
    assert_eq!(a.len(), total);
    assert_eq!(
        a.iter().collect::<HashSet<_>>().len(),
        total,
        "no duplicates"
    );
    assert_eq!(
        a.iter().copied().collect::<HashSet<_>>(),
        written,
        "nothing missing"
    );
    assert_eq!(a, b, "both followers saw one order");
}

/// A snapshot is stored and loaded; an older one never replaces a newer one.
pub async fn snapshots_keep_the_newest(store: Arc<dyn EventStore>) {
    let s = stream("snap-1");
    assert!(store.load_snapshot(&s).await.expect("load").is_none());
    let snapshot = |version: u64| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version: 1,
        state: json!({ "total": version }),
        taken_at: chrono::Utc::now(),
    };
    store.save_snapshot(&snapshot(10)).await.expect("save");
    store.save_snapshot(&snapshot(5)).await.expect("save older");
    let loaded = store.load_snapshot(&s).await.expect("load").expect("some");
    assert_eq!(loaded.version, 10);
    assert_eq!(loaded.state, json!({ "total": 10 }));
    store
        .save_snapshot(&snapshot(20))
        .await
        .expect("save newer");
    let loaded = store.load_snapshot(&s).await.expect("load").expect("some");
    assert_eq!(loaded.version, 20);
}

/// `load_snapshot_and_tail` gives the snapshot and, if it has the shape asked for, the events
/// after it, up to the limit; otherwise the stream's first events.
pub async fn snapshot_and_tail_read_together(store: Arc<dyn EventStore>) {
    let s = stream("snap-tail");
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            batch(5),
            &Metadata::default(),
        )
        .await
        .expect("append");
    let versions = |start: &SnapshotAndTail| -> Vec<u64> {
        start.events.iter().map(|e| e.stream_version).collect()
    };

    let start = store
        .load_snapshot_and_tail(&s, 1, 10)
        .await
        .expect("no snapshot yet");
    assert_eq!(start.snapshot, None);
    assert_eq!(versions(&start), vec![1, 2, 3, 4, 5]);

    let snapshot = Snapshot {
        stream_id: s.clone(),
        version: 3,
        schema_version: 1,
        state: json!({ "total": 6, "applied": 3 }),
        taken_at: chrono::Utc::now(),
    };
    store.save_snapshot(&snapshot).await.expect("save");
    let start = store
        .load_snapshot_and_tail(&s, 1, 10)
        .await
        .expect("with a snapshot");
    let loaded = start.snapshot.clone().expect("the snapshot");
    assert_eq!((loaded.version, loaded.schema_version), (3, 1));
    assert_eq!(loaded.state, snapshot.state);
    assert_eq!(loaded.stream_id, s);
    assert_eq!(versions(&start), vec![4, 5]);
    let read: Vec<ReplayedEvent> = store
        .read_stream(&s, 4, 10)
        .await
        .expect("read")
        .into_iter()
        .map(ReplayedEvent::from)
        .collect();
    assert_eq!(start.events, read, "the same events as read_stream gives");

    let limited = store
        .load_snapshot_and_tail(&s, 1, 1)
        .await
        .expect("limited");
    assert_eq!(versions(&limited), vec![4]);
    assert!(limited.snapshot.is_some());

    // A snapshot of another shape comes as it is, but the events start at the beginning.
    let other_shape = store
        .load_snapshot_and_tail(&s, 2, 10)
        .await
        .expect("another shape");
    assert_eq!(
        other_shape.snapshot.as_ref().map(|s| s.schema_version),
        Some(1)
    );
    assert_eq!(versions(&other_shape), vec![1, 2, 3, 4, 5]);

    // A snapshot at the stream's head has no tail.
    store
        .save_snapshot(&Snapshot {
            version: 5,
            ..snapshot
        })
        .await
        .expect("save newer");
    let start = store
        .load_snapshot_and_tail(&s, 1, 10)
        .await
        .expect("at the head");
    assert_eq!(start.snapshot.map(|s| s.version), Some(5));
    assert!(start.events.is_empty());
    let empty = store
        .load_snapshot_and_tail(&stream("snap-none"), 1, 10)
        .await
        .expect("no stream");
    assert_eq!(empty, SnapshotAndTail::default());
}

/// An event stored in an old shape is upcast when read and decodes into today's type.
pub async fn upcasting_on_read(store: Arc<dyn EventStore>) {
    let s = stream("legacy-1");
    let old = NewEvent {
        event_id: Uuid::new_v4(),
        data: RawEvent {
            event_type: "Added".into(),
            schema_version: 1,
            payload: json!({ "value": "7" }),
        },
    };
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![old],
            &Metadata::default(),
        )
        .await
        .expect("append v1");
    let upcasters = Upcasters::new().register("Added", 1, |payload| {
        let value = payload["value"].as_str().ok_or("no value")?;
        let amount: u64 = value.parse().map_err(|_| "value is not a number")?;
        Ok(json!({ "amount": amount }))
    });
    let stored = store.read_stream(&s, 1, 10).await.expect("read");
    assert!(stored[0].decode::<TestEvent>(&Upcasters::new()).is_err());
    let decoded = stored[0].decode::<TestEvent>(&upcasters).expect("upcast");
    assert_eq!(decoded.event, TestEvent::Added { amount: 7 });
    let log = read_everything(store.as_ref()).await;
    let decoded = log[0].decode::<TestEvent>(&upcasters).expect("upcast");
    assert_eq!(decoded.event, TestEvent::Added { amount: 7 });
}

/// Decoding an event type the code does not know fails with the type and the position.
pub async fn unknown_event_type_names_type_and_position(store: Arc<dyn EventStore>) {
    let s = stream("mystery-1");
    let unknown = NewEvent {
        event_id: Uuid::new_v4(),
        data: RawEvent {
            event_type: "Teleported".into(),
            schema_version: 1,
            payload: json!({}),
        },
    };
    let written = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![unknown],
            &Metadata::default(),
        )
        .await
        .expect("append");
    let stored = store.read_stream(&s, 1, 1).await.expect("read");
    match stored[0].decode::<TestEvent>(&Upcasters::new()) {
        Err(e @ Error::Decode { .. }) => {
            let text = e.to_string();
            assert!(text.contains("Teleported"), "{text}");
            assert!(text.contains(&written.positions[0].to_string()), "{text}");
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

/// A caught-up reader's wait ends soon after an append, and times out when nothing comes.
pub async fn wait_for_events_wakes_on_append(store: Arc<dyn EventStore>) {
    let head = store.head().await.expect("head");
    let idle = store
        .wait_for_events(head, Duration::from_millis(100))
        .await
        .expect("wait");
    assert!(!idle, "nothing was appended");
    let waiter = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let woke = store
                .wait_for_events(head, Duration::from_secs(10))
                .await
                .expect("wait");
            (woke, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .append(
            &stream("wake-1"),
            ExpectedVersion::Any,
            batch(1),
            &Metadata::default(),
        )
        .await
        .expect("append");
    let (woke, waited) = waiter.await.expect("waiter");
    assert!(woke);
    assert!(
        waited < Duration::from_secs(5),
        "woke only after {waited:?}"
    );
}

/// Loading from a snapshot plus the tail gives the state of a full replay, with only the
/// tail replayed.
pub async fn repository_with_snapshots_matches_full_replay(store: Arc<dyn EventStore>) {
    let with = Repository::<Counter>::new(Arc::clone(&store), ())
        .with_snapshots(SnapshotPolicy::EveryNEvents(10));
    let without = Repository::<Counter>::new(Arc::clone(&store), ());
    let meta = Metadata::new_request();
    for amount in 1..=25 {
        let stored = with.execute("c1", amount, &meta).await.expect("execute");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].metadata.correlation_id, meta.correlation_id);
    }
    let snapshot = store
        .load_snapshot(&StreamId::for_aggregate("counter", "c1").expect("id"))
        .await
        .expect("load")
        .expect("a snapshot was taken");
    assert_eq!(snapshot.version, 20);
    let fast = with.load("c1").await.expect("load with snapshot");
    let full = without.load("c1").await.expect("full replay");
    assert_eq!(fast.state, full.state);
    assert_eq!(fast.state.total, (1..=25).sum::<u64>());
    assert_eq!(fast.version, 25);
    assert_eq!(fast.replayed, 5);
    assert_eq!(full.replayed, 25);
}

/// A load with snapshots reads on past a tail longer than a page, and loads from the events
/// when the snapshot does not decode or is of another shape.
pub async fn repository_loads_past_long_tails_and_unusable_snapshots(store: Arc<dyn EventStore>) {
    let with = Repository::<Counter>::new(Arc::clone(&store), ())
        .with_snapshots(SnapshotPolicy::EveryNEvents(1_000_000));
    let s = StreamId::for_aggregate("counter", "long").expect("id");
    let events = 2_105;
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            batch(events),
            &Metadata::default(),
        )
        .await
        .expect("append");
    let total = (1..=events).sum::<u64>();
    let snapshot = |version: u64, schema_version: u32, state| Snapshot {
        stream_id: s.clone(),
        version,
        schema_version,
        state,
        taken_at: chrono::Utc::now(),
    };
    let loaded = with.load("long").await.expect("no snapshot");
    assert_eq!(
        (loaded.state.total, loaded.version, loaded.replayed),
        (total, events, events)
    );

    store
        .save_snapshot(&snapshot(2, 1, json!({ "total": 3, "applied": 2 })))
        .await
        .expect("save");
    let loaded = with
        .load("long")
        .await
        .expect("a tail of two pages and more");
    assert_eq!(loaded.state.total, total);
    assert_eq!(loaded.state.applied, events);
    assert_eq!((loaded.version, loaded.replayed), (events, events - 2));

    // Each snapshot newer than the one before, so that it replaces it.
    for (version, schema_version, state, why) in [
        (
            events - 1,
            1,
            json!("not a counter"),
            "a snapshot that does not decode",
        ),
        (
            events,
            2,
            // A state that decodes but is not the stream's: used, it would show.
            json!({ "total": 999, "applied": 999 }),
            "a snapshot of another shape",
        ),
    ] {
        let unusable = snapshot(version, schema_version, state);
        store.save_snapshot(&unusable).await.expect("save");
        let stored = store.load_snapshot(&s).await.expect("load").expect("some");
        assert_eq!(stored.state, unusable.state, "{why} is stored");
        let loaded = with.load("long").await.expect(why);
        assert_eq!(loaded.state.total, total, "{why}");
        assert_eq!((loaded.version, loaded.replayed), (events, events), "{why}");
    }
}

/// A command carried out again (same [`CommandId`]) answers with its original events and
/// positions and stores nothing; its id on another aggregate is refused.
pub async fn repeated_command_returns_the_original_outcome(store: Arc<dyn EventStore>) {
    let repo = Repository::<Counter>::new(Arc::clone(&store), ());
    let command = CommandId::new();
    let meta = Metadata::new_request().with_command_id(command);
    let first = repo.execute("c1", 5, &meta).await.expect("first");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].event_id, command.event_id(0));
    assert_eq!(first[0].metadata.command_id, Some(command));
    let other = repo
        .execute("c1", 7, &Metadata::new_request())
        .await
        .expect("another command");
    // The repeat decides differently (it would add 9), but the original outcome is the answer.
    let again = repo.execute("c1", 9, &meta).await.expect("repeat");
    assert_eq!(again, first, "a repeat answers with the original events");
    let stream = StreamId::for_aggregate("counter", "c1").expect("id");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 2);
    assert_eq!(repo.load("c1").await.expect("load").state.total, 12);
    assert_ne!(other[0].event_id, first[0].event_id);

    let reused = repo.execute("c2", 5, &meta).await;
    assert!(
        matches!(
            reused,
            Err(crate::CommandError::Store(Error::CommandReused { command_id, .. })) if command_id == command
        ),
        "{reused:?}"
    );
    let c2 = StreamId::for_aggregate("counter", "c2").expect("id");
    assert_eq!(store.stream_version(&c2).await.expect("version"), 0);
}

/// Many concurrent attempts at one command store it once and all answer alike.
pub async fn concurrent_repeats_of_one_command_store_it_once(store: Arc<dyn EventStore>) {
    let repo = Repository::<Counter>::new(Arc::clone(&store), ()).with_conflict_retries(50);
    let meta = Metadata::new_request().with_command_id(CommandId::new());
    let attempts = (0..16).map(|_| {
        let (repo, meta) = (repo.clone(), meta.clone());
        tokio::spawn(async move { repo.execute("hot", 3, &meta).await })
    });
    let mut answers = Vec::new();
    for attempt in attempts {
        answers.push(attempt.await.expect("task").expect("execute"));
    }
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    let stream = StreamId::for_aggregate("counter", "hot").expect("id");
    assert_eq!(store.stream_version(&stream).await.expect("version"), 1);
}

/// A switch that can be turned on once; turning it on again is refused.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// Whether it is on.
    pub on: bool,
}

/// Why a [`Switch`] refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the switch is on already")]
pub struct AlreadyOn;

impl Aggregate for Switch {
    const TYPE: &'static str = "switch";
    type Id = str;
    type Command = ();
    type Event = TestEvent;
    type Error = AlreadyOn;
    type Services = ();

    fn handle(&self, _: &str, (): (), _: &()) -> Result<Vec<TestEvent>, AlreadyOn> {
        if self.on {
            Err(AlreadyOn)
        } else {
            Ok(vec![TestEvent::Noted { text: "on".into() }])
        }
    }

    fn apply(&mut self, _: &TestEvent) {
        self.on = true;
    }
}

/// Copies of one command racing on a fresh aggregate: those that load the state after the
/// first copy was stored would be refused by it ("on already"), but they are copies of the
/// command that turned it on, and answer with its events; another command is refused.
pub async fn a_repeat_refused_by_the_state_its_original_made_answers_with_the_original(
    store: Arc<dyn EventStore>,
) {
    for round in 0..10 {
        let repo = Repository::<Switch>::new(Arc::clone(&store), ()).with_conflict_retries(50);
        let meta = Metadata::new_request().with_command_id(CommandId::new());
        let id = format!("s{round}");
        let copies: Vec<_> = (0..8)
            .map(|_| {
                let (repo, meta, id) = (repo.clone(), meta.clone(), id.clone());
                tokio::spawn(async move { repo.execute(&id, (), &meta).await })
            })
            .collect();
        let mut answers = Vec::new();
        for copy in copies {
            answers.push(copy.await.expect("task").expect("every copy succeeds"));
        }
        assert!(
            answers.iter().all(|a| a == &answers[0] && a.len() == 1),
            "{answers:?}"
        );
        let other = repo.execute(&id, (), &Metadata::new_request()).await;
        assert!(
            matches!(other, Err(crate::CommandError::Rejected(AlreadyOn))),
            "{other:?}"
        );
    }
}

/// An append whose reply is lost, or a store that is briefly unreachable, is retried by the
/// repository with the same event ids: every command is stored exactly once.
pub async fn lost_replies_are_retried_with_the_same_ids(store: Arc<dyn EventStore>) {
    let flaky = Arc::new(Unreliable::new(Arc::clone(&store)));
    let repo = Repository::<Counter>::new(Arc::clone(&flaky) as Arc<dyn EventStore>, ())
        .with_unavailable_retries(3, Duration::from_millis(1));
    for amount in 1..=6u64 {
        if amount % 2 == 0 {
            flaky.lose_next_reply();
        } else {
            flaky.refuse_next_append();
        }
        let stored = repo
            .execute("c1", amount, &Metadata::new_request())
            .await
            .expect("retried to success");
        let version = stored[0].stream_version;
        assert_eq!(version, amount, "command {amount} stored once");
        let recorded = store
            .read_stream(&stream("counter-c1"), version, 1)
            .await
            .expect("read");
        assert_eq!(recorded[0].event_id, stored[0].event_id);
        assert_eq!(recorded[0].position, stored[0].position);
    }
    assert_eq!(repo.load("c1").await.expect("load").state.total, 21);
    // Without retries the caller sees the outage, and its own retry (same command id) is
    // answered with the write that did happen.
    let once = Repository::<Counter>::new(Arc::clone(&flaky) as Arc<dyn EventStore>, ())
        .with_unavailable_retries(0, Duration::ZERO);
    let meta = Metadata::new_request().with_command_id(CommandId::new());
    flaky.lose_next_reply();
    let lost = once.execute("c1", 100, &meta).await;
    assert!(
        matches!(lost, Err(crate::CommandError::Store(ref e)) if e.is_retryable()),
        "{lost:?}"
    );
    let retried = once.execute("c1", 100, &meta).await.expect("client retry");
    assert_eq!(retried[0].stream_version, 7);
    assert_eq!(once.load("c1").await.expect("load").state.total, 121);
}

/// A snapshot the store cannot read ([`Error::Corrupt`]) costs a load nothing but time: it
/// is loaded from the events. Any other error of that read (the store unreachable) is the
/// load's error, not a reason to read the whole stream again.
pub async fn an_unreadable_snapshot_is_skipped_and_other_errors_are_returned(
    store: Arc<dyn EventStore>,
) {
    let flaky = Arc::new(Unreliable::new(Arc::clone(&store)));
    let repo = Repository::<Counter>::new(Arc::clone(&flaky) as Arc<dyn EventStore>, ())
        .with_snapshots(SnapshotPolicy::EveryNEvents(5));
    for amount in 1..=12u64 {
        repo.execute("c1", amount, &Metadata::new_request())
            .await
            .expect("execute");
    }
    let total = (1..=12u64).sum::<u64>();
    let usual = repo.load("c1").await.expect("load");
    assert_eq!(
        (usual.state.total, usual.version, usual.replayed),
        (total, 12, 2)
    );

    flaky.fail_next_snapshot_read(Error::Corrupt {
        position: Position::START,
        reason: "snapshot of `counter-c1`: schema version -1".into(),
    });
    let skipped = repo.load("c1").await.expect("loaded from the events");
    assert_eq!(
        (skipped.state.total, skipped.version, skipped.replayed),
        (total, 12, 12)
    );

    flaky.fail_next_snapshot_read(outage("connection refused"));
    let failed = repo.load("c1").await;
    assert!(matches!(failed, Err(Error::Unavailable(_))), "{failed:?}");
}

/// A store in front of another that can refuse an append before it reaches the store, lose
/// the reply of one that was stored, or fail the next read of a snapshot.
struct Unreliable {
    inner: Arc<dyn EventStore>,
    refuse_next: std::sync::atomic::AtomicBool,
    lose_next: std::sync::atomic::AtomicBool,
    snapshot_read_fails: std::sync::Mutex<Option<Error>>,
}

impl Unreliable {
    fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            refuse_next: false.into(),
            lose_next: false.into(),
            snapshot_read_fails: std::sync::Mutex::new(None),
        }
    }

    fn fail_next_snapshot_read(&self, error: Error) {
        *self
            .snapshot_read_fails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(error);
    }

    fn refuse_next_append(&self) {
        self.refuse_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn lose_next_reply(&self) {
        self.lose_next
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn outage(what: &str) -> Error {
    Error::Unavailable(what.to_owned().into())
}

#[async_trait::async_trait]
impl EventStore for Unreliable {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> crate::Result<crate::AppendResult> {
        use std::sync::atomic::Ordering::SeqCst;
        if self.refuse_next.swap(false, SeqCst) {
            return Err(outage("connection refused"));
        }
        let stored = self
            .inner
            .append(stream, expected, events, metadata)
            .await?;
        if self.lose_next.swap(false, SeqCst) {
            return Err(outage("connection reset before the reply"));
        }
        Ok(stored)
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> crate::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from_version, limit).await
    }
    async fn replay_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
        apply: &mut (dyn FnMut(ReplayedEvent) -> crate::Result<()> + Send),
    ) -> crate::Result<usize> {
        self.inner
            .replay_stream(stream, from_version, limit, apply)
            .await
    }
    async fn read_event(&self, event_id: Uuid) -> crate::Result<Option<RecordedEvent>> {
        self.inner.read_event(event_id).await
    }
    async fn stream_version(&self, stream: &StreamId) -> crate::Result<u64> {
        self.inner.stream_version(stream).await
    }
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> crate::Result<crate::ReadAllPage> {
        self.inner.read_all(after, limit, filter).await
    }
    async fn head(&self) -> crate::Result<Position> {
        self.inner.head().await
    }
    async fn read_barrier(&self) -> crate::Result<Position> {
        self.inner.read_barrier().await
    }
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> crate::Result<bool> {
        self.inner.wait_for_events(after, timeout).await
    }
    async fn count_after(&self, after: Position, limit: u64) -> crate::Result<u64> {
        self.inner.count_after(after, limit).await
    }
    async fn horizon(&self) -> crate::Result<crate::Horizon> {
        self.inner.horizon().await
    }
    async fn load_snapshot(&self, stream: &StreamId) -> crate::Result<Option<Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    async fn load_snapshot_and_tail(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> crate::Result<crate::SnapshotAndTail> {
        let failure = self
            .snapshot_read_fails
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(error) = failure {
            return Err(error);
        }
        self.inner
            .load_snapshot_and_tail(stream, schema_version, limit)
            .await
    }
    async fn save_snapshot(&self, snapshot: &Snapshot) -> crate::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
}
