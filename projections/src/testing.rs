//! Scenarios every projection target must pass, written once and run on the in-memory
//! target and on PostgreSQL (`tests/memory.rs`, `tests/postgres.rs`), and the `Tallies`
//! projection the fault tests of the workspace run in worker processes. Each scenario
//! panics with a message on failure, like any test assertion.

use std::sync::Arc;
use std::time::Duration;

use crate::target::Role;
use crate::{
    status, ApplyError, Documents, DocumentsExt, Error, ErrorPolicy, Projection, ProjectionRunner,
    ProjectionState, RunnerOptions, Target,
};
use async_trait::async_trait;
use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamId,
};
use serde::{Deserialize, Serialize};

/// Generates one `#[tokio::test]` per scenario of this module, each on a fresh store and
/// target from `$fresh` (an async fn returning `(Arc<dyn EventStore>, T, Teardown)`, the
/// teardown run after a passing test), so that a new scenario runs on every target at once.
#[macro_export]
macro_rules! target_scenarios {
    ($fresh:path) => {
        $crate::target_scenarios!(@each $fresh;
            builds_the_read_model_exactly_once,
            follows_the_log_and_shuts_down,
            poison_stops_with_its_position,
            poison_is_dead_lettered,
            rebuild_equals_the_live_model,
            a_new_version_is_rebuilt,
            a_stale_worker_cannot_overwrite_progress,
            an_interrupted_rebuild_resumes_and_ends_correct,
            a_rebuild_under_live_traffic_loses_nothing
        );
    };
    (@each $fresh:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, target, teardown) = $fresh().await;
                $crate::testing::$name(store, target).await;
                teardown.await;
            }
        )*
    };
}

/// Per stream: how many events and the sum of their amounts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Events applied.
    pub count: u64,
    /// Sum of their amounts (times the projection version).
    pub total: u64,
}

/// Tallies `Added` events per stream; a `Noted { text: "poison" }` event cannot be handled.
/// Version 2 counts each amount twice (a changed projection that needs a rebuild).
pub struct Tallies {
    /// The projection version.
    pub version: u32,
}

#[async_trait]
impl Projection for Tallies {
    fn name(&self) -> &str {
        "tallies"
    }

    fn version(&self) -> u32 {
        self.version
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["tally"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let decoded = event.decode::<TestEvent>(&Default::default())?;
        let amount = match decoded.event {
            TestEvent::Added { amount } => amount,
            TestEvent::Noted { text } if text == "poison" => {
                return Err(ApplyError::poison("poison event"))
            }
            TestEvent::Noted { .. } => 0,
        };
        let key = event.stream_id.as_str();
        let mut tally: Tally = docs.load("tallies", key).await?.unwrap_or_default();
        tally.count += 1;
        tally.total += amount * u64::from(self.version);
        docs.save("tallies", key, &tally).await?;
        Ok(())
    }
}

/// An `Added` event.
pub fn added(amount: u64) -> NewEvent {
    NewEvent::from_domain(&TestEvent::Added { amount }).expect("encode")
}

/// A `Noted` event (`"poison"` cannot be handled).
pub fn noted(text: &str) -> NewEvent {
    NewEvent::from_domain(&TestEvent::Noted { text: text.into() }).expect("encode")
}

/// Appends `events` to `stream` with no version check.
pub async fn append(store: &dyn EventStore, stream: &str, events: Vec<NewEvent>) {
    store
        .append(
            &StreamId::new(stream).expect("id"),
            ExpectedVersion::Any,
            events,
            &Metadata::default(),
        )
        .await
        .expect("append");
}

/// Appends `per_stream` events of amount 1..=per_stream to `streams` tally streams, plus
/// noise in another category; returns the expected tallies.
pub async fn seed(store: &dyn EventStore, streams: usize, per_stream: u64) -> Vec<(String, Tally)> {
    let mut expected = Vec::new();
    for s in 0..streams {
        let name = format!("tally-{s:03}");
        append(store, &name, (1..=per_stream).map(added).collect()).await;
        append(store, &format!("noise-{s}"), vec![added(1000)]).await;
        expected.push((
            name,
            Tally {
                count: per_stream,
                total: (1..=per_stream).sum(),
            },
        ));
    }
    expected
}

/// The tallies read model, by stream.
pub async fn tallies<T: Target>(target: &T) -> Vec<(String, Tally)> {
    target
        .list("tallies", "tallies")
        .await
        .expect("list")
        .into_iter()
        .map(|(k, v)| (k, serde_json::from_value(v).expect("tally")))
        .collect()
}

/// Small batches and short waits, for tests.
pub fn options(policy: ErrorPolicy) -> RunnerOptions {
    RunnerOptions {
        batch_size: 37,
        idle_wait: Duration::from_millis(100),
        standby_retry: Duration::from_millis(50),
        error_policy: policy,
        ..RunnerOptions::default()
    }
}

/// A runner of `Tallies` with small batches and short waits.
pub fn runner<T: Target>(
    store: Arc<dyn EventStore>,
    target: T,
    version: u32,
    policy: ErrorPolicy,
) -> ProjectionRunner<T> {
    ProjectionRunner::new(store, target, Arc::new(Tallies { version }))
        .with_options(options(policy))
}

/// Every event is applied once, in batches, across runs.
pub async fn builds_the_read_model_exactly_once<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let mut expected = seed(store.as_ref(), 10, 20).await;
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("catch up");
    assert_eq!(tallies(&target).await, expected);

    append(store.as_ref(), "tally-000", vec![added(5)]).await;
    expected[0].1.count += 1;
    expected[0].1.total += 5;
    r.run_until_caught_up().await.expect("catch up again");
    r.run_until_caught_up().await.expect("nothing new");
    assert_eq!(tallies(&target).await, expected);
    let statuses = status(store.as_ref(), &target).await.expect("status");
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].state, ProjectionState::Running);
    assert_eq!(statuses[0].lag_events, 0);
}

/// A live runner follows new events and stops cleanly on shutdown.
pub async fn follows_the_log_and_shuts_down<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        r.run(async {
            let _ = stopped.await;
        })
        .await
    });
    for i in 0..5u64 {
        append(store.as_ref(), "tally-live", vec![added(i + 1)]).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let current = tallies(&target).await;
        if current
            == vec![(
                "tally-live".to_owned(),
                Tally {
                    count: 5,
                    total: 15,
                },
            )]
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live runner did not catch up: {current:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).expect("signal");
    tokio::time::timeout(Duration::from_secs(10), live)
        .await
        .expect("shut down in time")
        .expect("task")
        .expect("clean shutdown");
}

/// Under the default policy a poison event stops the projection, with its position in the
/// status; the events before it are kept, none after it is applied.
pub async fn poison_stops_with_its_position<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    append(
        store.as_ref(),
        "tally-a",
        vec![added(1), added(2), added(3)],
    )
    .await;
    let poison = noted("poison");
    let poison_id = poison.event_id;
    append(store.as_ref(), "tally-b", vec![poison]).await;
    append(store.as_ref(), "tally-a", vec![added(4)]).await;

    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    let error = r
        .run_until_caught_up()
        .await
        .expect_err("stops on the poison event");
    let position = match error {
        Error::Failed {
            event_id, position, ..
        } => {
            assert_eq!(event_id, poison_id);
            position
        }
        other => panic!("expected Failed, got {other}"),
    };
    assert_eq!(
        tallies(&target).await,
        vec![("tally-a".to_owned(), Tally { count: 3, total: 6 })]
    );
    let s = &status(store.as_ref(), &target).await.expect("status")[0];
    assert_eq!(s.state, ProjectionState::Failed);
    assert_eq!(
        s.error_position.as_deref(),
        Some(position.to_string().as_str())
    );
    assert!(
        s.checkpoint
            .parse::<cqrs_core::Position>()
            .expect("position")
            < position
    );

    // It stays stopped: the checkpoint never moves past the event silently.
    let again = r.run_until_caught_up().await;
    assert!(matches!(again, Err(Error::Failed { .. })), "{again:?}");
    assert_eq!(
        tallies(&target).await,
        vec![("tally-a".to_owned(), Tally { count: 3, total: 6 })]
    );
}

/// Under the dead-letter policy the poison event is recorded and the projection goes on.
pub async fn poison_is_dead_lettered<T: Target + Clone>(store: Arc<dyn EventStore>, target: T) {
    append(store.as_ref(), "tally-a", vec![added(1), added(2)]).await;
    let poison = noted("poison");
    let poison_id = poison.event_id;
    append(store.as_ref(), "tally-b", vec![noted("fine"), poison]).await;
    append(store.as_ref(), "tally-a", vec![added(3)]).await;

    let r = runner(
        Arc::clone(&store),
        target.clone(),
        1,
        ErrorPolicy::DeadLetter,
    );
    r.run_until_caught_up().await.expect("goes on");
    assert_eq!(
        tallies(&target).await,
        vec![
            ("tally-a".to_owned(), Tally { count: 3, total: 6 }),
            ("tally-b".to_owned(), Tally { count: 1, total: 0 }),
        ]
    );
    let dead = target.dead_letters("tallies").await.expect("dead letters");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].failure.event_id, poison_id);
    assert_eq!(dead[0].failure.stream_id, "tally-b");
    assert!(dead[0].failure.error.contains("poison"));
    let s = &status(store.as_ref(), &target).await.expect("status")[0];
    assert_eq!(s.state, ProjectionState::Running);
}

/// A rebuild replays into a fresh generation and ends equal to the live model; queries keep
/// answering from the old generation meanwhile.
pub async fn rebuild_equals_the_live_model<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    seed(store.as_ref(), 8, 30).await;
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("live");
    let live = tallies(&target).await;

    let queries = {
        let target = target.clone();
        let expected = live.clone();
        tokio::spawn(async move {
            let mut answered = 0;
            for _ in 0..200 {
                assert_eq!(
                    tallies(&target).await,
                    expected,
                    "queries see a whole generation"
                );
                answered += 1;
                tokio::task::yield_now().await;
            }
            answered
        })
    };
    let mut progress = Vec::new();
    let report = r.rebuild(|p| progress.push(p)).await.expect("rebuild");
    assert_eq!(report.generation, 2);
    assert_eq!(report.applied, 8 * 30);
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0].applied <= w[1].applied));
    assert_eq!(queries.await.expect("queries"), 200);
    assert_eq!(tallies(&target).await, live);
    let s = &status(store.as_ref(), &target).await.expect("status")[0];
    assert_eq!(s.generation, 2);
    assert_eq!(s.state, ProjectionState::Running);

    // The live worker carries on from the new generation.
    append(store.as_ref(), "tally-000", vec![added(1)]).await;
    r.run_until_caught_up().await.expect("live again");
    assert_eq!(tallies(&target).await[0].1.count, 31);
}

/// Raising the projection's version makes its runner rebuild before it goes live.
pub async fn a_new_version_is_rebuilt<T: Target + Clone>(store: Arc<dyn EventStore>, target: T) {
    let expected_v1 = seed(store.as_ref(), 3, 4).await;
    runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop)
        .run_until_caught_up()
        .await
        .expect("v1");
    assert_eq!(tallies(&target).await, expected_v1);
    runner(Arc::clone(&store), target.clone(), 2, ErrorPolicy::Stop)
        .run_until_caught_up()
        .await
        .expect("v2");
    let doubled: Vec<_> = expected_v1
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                Tally {
                    count: t.count,
                    total: t.total * 2,
                },
            )
        })
        .collect();
    assert_eq!(tallies(&target).await, doubled);
    let s = &status(store.as_ref(), &target).await.expect("status")[0];
    assert_eq!((s.version, s.generation), (2, 2));
}

/// A worker that lost its lease cannot commit: neither one whose lease ran out and was taken
/// by another (a higher epoch), nor one whose batch started behind the stored checkpoint.
pub async fn a_stale_worker_cannot_overwrite_progress<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    seed(store.as_ref(), 2, 5).await;
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("catch up");
    let before = tallies(&target).await;
    let checkpoint = target
        .checkpoint("tallies", 1)
        .await
        .expect("checkpoint")
        .expect("exists")
        .position;
    let head = store.head().await.expect("head");

    // A worker takes the lease, starts a batch, and freezes; its lease runs out and
    // another worker takes it.
    let ttl = Duration::from_millis(200);
    let old = target
        .acquire_lease("tallies", "old", ttl)
        .await
        .expect("lease")
        .expect("free");
    let token = crate::LeaseToken::new("tallies", old, ttl);
    let mut frozen = target
        .begin("tallies", 1, Role::Live, Some(token.clone()))
        .await
        .expect("begin");
    frozen
        .put(
            "tallies",
            "tally-000",
            serde_json::json!({ "count": 999, "total": 999 }),
        )
        .await
        .expect("put");
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    assert!(!token.is_live(), "the frozen holder's token ran out");
    let new = target
        .acquire_lease("tallies", "new", ttl)
        .await
        .expect("lease")
        .expect("an expired lease is free");
    assert!(new > old, "a new holder gets a higher epoch");
    let result = target.commit(frozen, checkpoint, head, None).await;
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    assert!(
        !target
            .renew_lease("tallies", old, ttl)
            .await
            .expect("renew"),
        "the deposed holder cannot renew"
    );

    // A batch that started from an old position, under the current lease.
    let mut behind = target
        .begin(
            "tallies",
            1,
            Role::Live,
            Some(crate::LeaseToken::new("tallies", new, ttl)),
        )
        .await
        .expect("begin");
    behind
        .put(
            "tallies",
            "tally-000",
            serde_json::json!({ "count": 999, "total": 999 }),
        )
        .await
        .expect("put");
    let result = target
        .commit(behind, cqrs_core::Position::START, head, None)
        .await;
    assert!(matches!(result, Err(Error::LeaseLost { .. })), "{result:?}");
    assert_eq!(
        tallies(&target).await,
        before,
        "nothing of the stale batches landed"
    );
    target.release_lease("tallies", new).await.expect("release");
}

/// A rebuild interrupted half-way (its task dropped, as in a crash) resumes in the same
/// generation when started again, and ends equal to the live model.
pub async fn an_interrupted_rebuild_resumes_and_ends_correct<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    seed(store.as_ref(), 20, 40).await;
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("live");
    let live = tallies(&target).await;

    // The process "dies" right after the rebuild's first batch (500 events) committed.
    let crashing = r.clone();
    let crashed = tokio::spawn(async move {
        let mut batches = 0;
        crashing
            .rebuild(move |_| {
                batches += 1;
                assert!(batches > 1, "simulated crash during the rebuild");
            })
            .await
    })
    .await;
    assert!(crashed.is_err(), "the rebuild was interrupted");
    let half = crate::status(store.as_ref(), &target)
        .await
        .expect("status");
    assert_eq!(
        half[0].state,
        ProjectionState::Rebuilding,
        "an unfinished rebuild shows"
    );
    assert_eq!(
        tallies(&target).await,
        live,
        "queries still read the old generation"
    );

    let report = r.rebuild(|_| {}).await.expect("resumed rebuild");
    assert_eq!(
        report.generation, 2,
        "the interrupted generation was resumed"
    );
    assert!(
        report.applied < 20 * 40,
        "only the rest was replayed ({})",
        report.applied
    );
    assert_eq!(tallies(&target).await, live);
}

/// A rebuild while the live worker keeps running and writers keep appending: the live worker
/// notices the switch, carries on from the new generation, and the result has every event
/// exactly once.
pub async fn a_rebuild_under_live_traffic_loses_nothing<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let mut expected: std::collections::BTreeMap<String, Tally> =
        seed(store.as_ref(), 10, 30).await.into_iter().collect();
    let live = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let live = live.clone();
        tokio::spawn(async move {
            live.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut more: Vec<(String, u64)> = Vec::new();
            for i in 0..100u64 {
                let stream = format!("tally-{:03}", i % 10);
                append(store.as_ref(), &stream, vec![added(i)]).await;
                more.push((stream, i));
                tokio::task::yield_now().await;
            }
            more
        })
    };
    let report = live.rebuild(|_| {}).await.expect("rebuild under traffic");
    assert_eq!(report.generation, 2);
    for (stream, amount) in writer.await.expect("writer") {
        let tally = expected.entry(stream).or_default();
        tally.count += 1;
        tally.total += amount;
    }
    let expected: Vec<(String, Tally)> = expected.into_iter().collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tallies(&target).await != expected {
        if worker.is_finished() {
            panic!("the live worker stopped: {:?}", worker.await);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live worker did not carry on after the switch"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    let stopped = worker.await.expect("task");
    assert!(stopped.is_ok(), "the live worker stopped with {stopped:?}");
    let s = &status(store.as_ref(), &target).await.expect("status")[0];
    assert_eq!((s.generation, s.state), (2, ProjectionState::Running));
}
