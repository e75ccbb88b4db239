//! Scenarios every projection target must pass, written once and run on the in-memory
//! target and on PostgreSQL (`tests/memory.rs`, `tests/postgres.rs`), and the `Tallies`
//! projection the fault tests of the workspace run in worker processes. Each scenario
//! panics with a message on failure, like any test assertion.
//!
//! [`given`] is for a projection's own tests: events in, read model out, with a check that
//! a replay of the same events gives the same read model. This module is built only with the
//! `testing` feature (a dev-dependency feature: `projections = { …, features = ["testing"] }`).

mod given;

pub use given::{given, Given, ReadModel};

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
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    ReplayedEvent, StreamId,
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
            a_rebuild_under_live_traffic_loses_nothing,
            rebuilds_under_traffic_never_break_a_strict_model,
            racing_rebuilders_only_move_generations_forward,
            two_versions_side_by_side_settle_on_the_newer,
            an_idle_filtered_worker_does_not_spin,
            dead_letters_are_listed_once_and_retried_or_skipped,
            wait_for_reports_reached_timed_out_and_failed,
            dead_letters_belong_to_their_generation,
            an_older_version_is_never_switched_in,
            a_stopped_rebuild_waits_for_the_operator,
            a_paused_worker_keeps_its_lease_and_applies_nothing,
            a_reset_replays_the_log_into_an_empty_read_model
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

/// Appends `events` to `stream` with no version check; the last event's position.
pub async fn append(store: &dyn EventStore, stream: &str, events: Vec<NewEvent>) -> Position {
    let appended = store
        .append(
            &StreamId::new(stream).expect("id"),
            ExpectedVersion::Any,
            events,
            &Metadata::default(),
        )
        .await
        .expect("append");
    appended.positions.last().copied().unwrap_or_default()
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
    let (stop, live) = spawn_live(runner(
        Arc::clone(&store),
        target.clone(),
        1,
        ErrorPolicy::Stop,
    ));
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
    let (stop, worker) = spawn_live(live.clone());
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

/// Like [`Tallies`], but strict, as most read models are: an `Added` event for a stream whose
/// document is missing is poison (the first event of a stream must be `Noted { "open" }`).
/// A live batch that found its generation's documents deleted under it would stop here.
pub struct StrictTallies;

#[async_trait]
impl Projection for StrictTallies {
    fn name(&self) -> &str {
        "strict"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["strict"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let key = event.stream_id.as_str();
        match event.decode::<TestEvent>(&Default::default())?.event {
            TestEvent::Noted { text } if text == "open" => {
                docs.save("tallies", key, &Tally::default()).await?;
            }
            TestEvent::Noted { .. } => {}
            TestEvent::Added { amount } => {
                let mut tally: Tally = docs
                    .load("tallies", key)
                    .await?
                    .ok_or_else(|| ApplyError::poison(format!("{key} was never opened")))?;
                tally.count += 1;
                tally.total += amount;
                docs.save("tallies", key, &tally).await?;
            }
        }
        Ok(())
    }
}

/// Runs `runner` live in a task until the returned sender is dropped or sent to.
fn spawn_live<T: Target>(
    runner: ProjectionRunner<T>,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<crate::Result<()>>,
) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    (stop, task)
}

/// Waits until `check` holds, or panics with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Rebuilds under live traffic, again and again, with a projection that cannot tolerate a
/// missing document: the live worker moves over at every switch, nothing is recorded as
/// failed, readers never see a stream's document disappear, and the result is exact.
pub async fn rebuilds_under_traffic_never_break_a_strict_model<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let streams = 12;
    for s in 0..streams {
        append(
            store.as_ref(),
            &format!("strict-{s:02}"),
            vec![noted("open")],
        )
        .await;
    }
    let options = options(ErrorPolicy::Stop);
    let live = ProjectionRunner::new(Arc::clone(&store), target.clone(), Arc::new(StrictTallies))
        .with_options(options.clone());
    live.run_until_caught_up().await.expect("first catch-up");
    let (stop, worker) = spawn_live(live.clone());
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..400u64 {
                append(
                    store.as_ref(),
                    &format!("strict-{:02}", i % 12),
                    vec![added(i)],
                )
                .await;
                tokio::task::yield_now().await;
            }
        })
    };
    let reader = {
        let target = target.clone();
        tokio::spawn(async move {
            let mut seen = 0;
            loop {
                let docs = target.list("strict", "tallies").await.expect("list");
                assert_eq!(docs.len(), 12, "a reader saw documents disappear");
                seen += 1;
                if seen >= 200 {
                    return seen;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for round in 0..5u64 {
        let report = live.rebuild(|_| {}).await.expect("rebuild under traffic");
        assert_eq!(
            report.generation,
            round + 2,
            "each rebuild one generation on"
        );
        let state = target
            .state("strict")
            .await
            .expect("state")
            .expect("registered");
        assert_eq!(state.failure(), None, "no failure recorded");
    }
    writer.await.expect("writer");
    reader.await.expect("reader");
    let expected: Vec<(String, Tally)> = (0..12u64)
        .map(|s| {
            let amounts: Vec<u64> = (0..400u64).filter(|i| i % 12 == s).collect();
            (
                format!("strict-{s:02}"),
                Tally {
                    count: amounts.len() as u64,
                    total: amounts.iter().sum(),
                },
            )
        })
        .collect();
    let strict = |target: T| async move {
        target
            .list("strict", "tallies")
            .await
            .expect("list")
            .into_iter()
            .map(|(k, v)| (k, serde_json::from_value::<Tally>(v).expect("tally")))
            .collect::<Vec<_>>()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while strict(target.clone()).await != expected {
        assert!(
            !worker.is_finished(),
            "the live worker stopped: {:?}",
            worker.await
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the live model did not converge"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(target
        .dead_letters("strict")
        .await
        .expect("letters")
        .is_empty());
    let _ = stop.send(());
    worker.await.expect("task").expect("clean stop");
}

/// Two rebuilders race, 100 times, on the same generation and on different ones: the active
/// generation never decreases, a switch that loses changes nothing, and the active documents
/// are never deleted.
pub async fn racing_rebuilders_only_move_generations_forward<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let expected = seed(store.as_ref(), 4, 5).await;
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("live");
    let mut last = 1;
    for race in 0..100 {
        let (a, b) = (r.clone(), r.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { a.rebuild(|_| {}).await }),
            tokio::spawn(async move { b.rebuild(|_| {}).await })
        );
        ra.expect("task").expect("rebuild a");
        rb.expect("task").expect("rebuild b");
        let state = target
            .state("tallies")
            .await
            .expect("state")
            .expect("there");
        assert!(state.active_generation > last, "race {race}: moved forward");
        last = state.active_generation;
        assert_eq!(
            tallies(&target).await,
            expected,
            "race {race}: the documents are whole"
        );

        // A repeated switch to the active generation, and one to an older one, change nothing.
        assert!(!target
            .switch_generation("tallies", last)
            .await
            .expect("same"));
        assert!(!target
            .switch_generation("tallies", last - 1)
            .await
            .expect("older"));
        let after = target
            .state("tallies")
            .await
            .expect("state")
            .expect("there");
        assert_eq!(after.active_generation, last);
        assert_eq!(
            tallies(&target).await,
            expected,
            "race {race}: a lost switch deleted nothing"
        );
    }
}

/// Versions 1 and 2 of a projection run side by side (a rolling deploy): the model is
/// rebuilt once, by version 2, and then stays put; version 1 stands by.
pub async fn two_versions_side_by_side_settle_on_the_newer<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let expected = seed(store.as_ref(), 3, 4).await;
    let v1 = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    v1.run_until_caught_up().await.expect("v1");
    let (stop1, w1) = spawn_live(v1.clone());
    let (stop2, w2) = spawn_live(runner(
        Arc::clone(&store),
        target.clone(),
        2,
        ErrorPolicy::Stop,
    ));
    let doubled: Vec<(String, Tally)> = expected
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                Tally {
                    count: t.count,
                    total: t.total * 2,
                },
            )
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "version 2 did not take over",
        || {
            let target = target.clone();
            let doubled = doubled.clone();
            async move { tallies(&target).await == doubled }
        },
    )
    .await;
    let settled = target
        .state("tallies")
        .await
        .expect("state")
        .expect("there");
    assert_eq!(
        (settled.checkpoint.version, settled.active_generation),
        (2, 2),
        "one replay"
    );
    append(store.as_ref(), "tally-000", vec![added(5)]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = target
        .state("tallies")
        .await
        .expect("state")
        .expect("there");
    assert_eq!(
        (later.checkpoint.version, later.active_generation),
        (2, 2),
        "stable"
    );
    let want = expected[0].1.total * 2 + 10;
    eventually(
        Duration::from_secs(10),
        "version 2 did not follow the log",
        || {
            let target = target.clone();
            async move { tallies(&target).await[0].1.total == want }
        },
    )
    .await;
    assert!(matches!(
        v1.rebuild(|_| {}).await,
        Err(Error::Superseded {
            active_version: 2,
            ..
        })
    ));
    let _ = (stop1.send(()), stop2.send(()));
    w1.await.expect("task").expect("v1 stops cleanly");
    w2.await.expect("task").expect("v2 stops cleanly");
    assert!(matches!(
        v1.run_until_caught_up().await,
        Err(Error::Superseded {
            active_version: 2,
            ..
        })
    ));
}

/// An [`EventStore`] that counts the reads made through it.
pub struct CountingStore {
    inner: Arc<dyn EventStore>,
    /// Calls of `read_all` and `head` so far.
    pub reads: std::sync::atomic::AtomicU64,
}

impl CountingStore {
    /// Counts the reads of `inner`.
    pub fn new(inner: Arc<dyn EventStore>) -> Self {
        Self {
            inner,
            reads: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn count(&self) {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[async_trait]
impl EventStore for CountingStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> cqrs_core::Result<cqrs_core::AppendResult> {
        self.inner.append(stream, expected, events, metadata).await
    }
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> cqrs_core::Result<Vec<RecordedEvent>> {
        self.inner.read_stream(stream, from_version, limit).await
    }
    async fn replay_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
        apply: &mut (dyn FnMut(ReplayedEvent) -> cqrs_core::Result<()> + Send),
    ) -> cqrs_core::Result<usize> {
        self.inner
            .replay_stream(stream, from_version, limit, apply)
            .await
    }
    async fn read_event(&self, event_id: uuid::Uuid) -> cqrs_core::Result<Option<RecordedEvent>> {
        self.inner.read_event(event_id).await
    }
    async fn stream_version(&self, stream: &StreamId) -> cqrs_core::Result<u64> {
        self.inner.stream_version(stream).await
    }
    async fn read_all(
        &self,
        after: cqrs_core::Position,
        limit: usize,
        filter: &EventFilter,
    ) -> cqrs_core::Result<cqrs_core::ReadAllPage> {
        self.count();
        self.inner.read_all(after, limit, filter).await
    }
    async fn head(&self) -> cqrs_core::Result<cqrs_core::Position> {
        self.count();
        self.inner.head().await
    }
    async fn read_barrier(&self) -> cqrs_core::Result<cqrs_core::Position> {
        self.inner.read_barrier().await
    }
    async fn wait_for_events(
        &self,
        after: cqrs_core::Position,
        timeout: Duration,
    ) -> cqrs_core::Result<bool> {
        self.count();
        self.inner.wait_for_events(after, timeout).await
    }
    async fn count_after(&self, after: cqrs_core::Position, limit: u64) -> cqrs_core::Result<u64> {
        self.inner.count_after(after, limit).await
    }
    async fn horizon(&self) -> cqrs_core::Result<cqrs_core::Horizon> {
        self.inner.horizon().await
    }
    async fn load_snapshot(
        &self,
        stream: &StreamId,
    ) -> cqrs_core::Result<Option<cqrs_core::Snapshot>> {
        self.inner.load_snapshot(stream).await
    }
    async fn load_snapshot_and_tail(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> cqrs_core::Result<cqrs_core::SnapshotAndTail> {
        self.inner
            .load_snapshot_and_tail(stream, schema_version, limit)
            .await
    }
    async fn save_snapshot(&self, snapshot: &cqrs_core::Snapshot) -> cqrs_core::Result<()> {
        self.inner.save_snapshot(snapshot).await
    }
}

/// After events its filter rejects, a caught-up worker waits instead of reading the log
/// again and again: a few reads a second at most.
pub async fn an_idle_filtered_worker_does_not_spin<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let counting = Arc::new(CountingStore::new(Arc::clone(&store)));
    let r = ProjectionRunner::new(
        counting.clone(),
        target.clone(),
        Arc::new(Tallies { version: 1 }),
    )
    .with_options(RunnerOptions {
        idle_wait: Duration::from_millis(500),
        ..options(ErrorPolicy::Stop)
    });
    append(store.as_ref(), "tally-a", vec![added(1)]).await;
    let (stop, worker) = spawn_live(r);
    eventually(Duration::from_secs(10), "the worker did not start", || {
        let target = target.clone();
        async move { tallies(&target).await.len() == 1 }
    })
    .await;
    // Events of another category only: the filter rejects them all.
    append(store.as_ref(), "noise-1", vec![added(1)]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = counting.reads.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reads = counting.reads.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(reads <= 20, "an idle worker made {reads} reads in 2 s");
    let _ = stop.send(());
    worker.await.expect("task").expect("clean stop");
}

/// Dead letters: one entry per event across generations; a parked one is retried by the
/// live worker or skipped; a blocking one (the stop policy) is skipped (the projection goes
/// on after it) or retried (applied again in order).
pub async fn dead_letters_are_listed_once_and_retried_or_skipped<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    // Parked, under the dead-letter policy; the rebuild meets it again.
    append(store.as_ref(), "tally-a", vec![added(1)]).await;
    let poison = noted("poison");
    let poison_id = poison.event_id;
    append(store.as_ref(), "tally-b", vec![poison]).await;
    let r = runner(
        Arc::clone(&store),
        target.clone(),
        1,
        ErrorPolicy::DeadLetter,
    );
    r.run_until_caught_up().await.expect("goes on");
    r.rebuild(|_| {}).await.expect("rebuild");
    let letters = target.dead_letters("tallies").await.expect("letters");
    assert_eq!(
        letters.len(),
        1,
        "listed once across generations: {letters:?}"
    );
    assert_eq!(letters[0].attempts, 2);
    assert_eq!(letters[0].status, crate::DeadLetterStatus::Parked);

    // Retried, it fails again (the projection still cannot handle it) and is parked again.
    crate::dead_letters::retry(&target, "tallies", poison_id)
        .await
        .expect("retry");
    let (stop, worker) = spawn_live(r.clone());
    eventually(
        Duration::from_secs(15),
        "the live worker did not retry",
        || {
            let target = target.clone();
            async move {
                let l = target.dead_letters("tallies").await.expect("letters");
                l[0].status == crate::DeadLetterStatus::Parked && l[0].attempts == 3
            }
        },
    )
    .await;
    let _ = stop.send(());
    worker.await.expect("task").expect("stop");
    crate::dead_letters::skip(&target, "tallies", poison_id)
        .await
        .expect("skip");
    let letters = target.dead_letters("tallies").await.expect("letters");
    assert_eq!(letters[0].status, crate::DeadLetterStatus::Skipped);
    assert!(matches!(
        crate::dead_letters::skip(&target, "tallies", poison_id).await,
        Err(Error::NoDeadLetter { .. })
    ));

    // Blocking, under the stop policy: skipping it lets the projection go on after it.
    let stop_runner = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    let blocking = noted("poison");
    let blocking_id = blocking.event_id;
    append(store.as_ref(), "tally-c", vec![blocking]).await;
    append(store.as_ref(), "tally-c", vec![added(7)]).await;
    assert!(matches!(
        stop_runner.run_until_caught_up().await,
        Err(Error::Failed { .. })
    ));
    let letter = target.dead_letters("tallies").await.expect("letters")[1].clone();
    assert!(letter.blocking);
    assert_eq!(letter.failure.event_id, blocking_id);
    crate::dead_letters::skip(&target, "tallies", blocking_id)
        .await
        .expect("skip");
    stop_runner
        .run_until_caught_up()
        .await
        .expect("goes on after the skipped event");
    let c = tallies(&target).await;
    let c = c.iter().find(|(k, _)| k == "tally-c").expect("tally-c");
    assert_eq!(
        c.1,
        Tally { count: 1, total: 7 },
        "the event after it was applied"
    );

    // Blocking again; retrying hands it back to the worker, which stops at it again.
    let again = noted("poison");
    let again_id = again.event_id;
    append(store.as_ref(), "tally-d", vec![again]).await;
    assert!(stop_runner.run_until_caught_up().await.is_err());
    crate::dead_letters::retry(&target, "tallies", again_id)
        .await
        .expect("retry");
    let retried = stop_runner.run_until_caught_up().await;
    assert!(matches!(retried, Err(Error::Failed { event_id, .. }) if event_id == again_id));
    let letters = target.dead_letters("tallies").await.expect("letters");
    let d = letters
        .iter()
        .find(|l| l.failure.event_id == again_id)
        .expect("letter");
    assert_eq!((d.attempts, d.status), (2, crate::DeadLetterStatus::Parked));
}

/// `wait_for` says whether the read model reached a position, ran out of time, or stopped.
pub async fn wait_for_reports_reached_timed_out_and_failed<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
    r.run_until_caught_up().await.expect("register");
    let (stop, worker) = spawn_live(r);
    let written = store
        .append(
            &StreamId::new("tally-w").expect("id"),
            ExpectedVersion::Any,
            vec![added(3)],
            &Metadata::default(),
        )
        .await
        .expect("append");
    let position = written.positions[0];
    let outcome = crate::wait_for(&target, "tallies", position, Duration::from_secs(10))
        .await
        .expect("wait");
    assert!(outcome.is_reached(), "{outcome:?}");
    assert_eq!(
        tallies(&target).await[0].1.total,
        3,
        "reached means readable"
    );

    let far = cqrs_core::Position::new(position.commit + 1_000_000, 0);
    let outcome = crate::wait_for(&target, "tallies", far, Duration::from_millis(200))
        .await
        .expect("wait");
    assert!(
        matches!(outcome, crate::WaitOutcome::TimedOut { .. }),
        "{outcome:?}"
    );

    let poison = store
        .append(
            &StreamId::new("tally-p").expect("id"),
            ExpectedVersion::Any,
            vec![noted("poison")],
            &Metadata::default(),
        )
        .await
        .expect("append");
    let outcome = crate::wait_for(
        &target,
        "tallies",
        poison.positions[0],
        Duration::from_secs(10),
    )
    .await
    .expect("wait");
    assert!(
        matches!(outcome, crate::WaitOutcome::Failed { .. }),
        "{outcome:?}"
    );
    // A projection nobody registered yet (its worker is starting) is waited for, from the
    // start of the log.
    assert_eq!(
        crate::wait_for(&target, "nobody", position, Duration::from_millis(10))
            .await
            .expect("wait"),
        crate::WaitOutcome::TimedOut {
            checkpoint: cqrs_core::Position::START
        }
    );
    let _ = stop.send(());
    worker
        .await
        .expect("task")
        .expect("a stopped projection still shuts down cleanly");
}

/// Dead letters belong to the generation that last met them: a retry asked for a letter of
/// a generation still being rebuilt waits for its switch (it is never applied to the live
/// one), and a switch closes the open letters of older generations, whose events the new one
/// passed.
pub async fn dead_letters_belong_to_their_generation<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    append(store.as_ref(), "tally-a", vec![added(1)]).await;
    target.register("tallies", 1).await.expect("register");
    let letter = |text: &str, at: u64| crate::Failure {
        position: cqrs_core::Position::new(at, 1),
        event_id: uuid::Uuid::new_v4(),
        event_type: "Noted".into(),
        stream_id: format!("tally-{text}"),
        error: "poison".into(),
    };
    // Generation 1 parks one event; generation 2, being rebuilt, parks another.
    let (old, rebuilt) = (letter("old", 1), letter("new", 2));
    let mut batch = target
        .begin("tallies", 1, Role::Live, None)
        .await
        .expect("begin");
    target
        .dead_letter(&mut batch, &old, false)
        .await
        .expect("park");
    let at = target
        .checkpoint("tallies", 1)
        .await
        .expect("ckpt")
        .expect("there")
        .position;
    target.commit(batch, at, at, None).await.expect("commit");
    assert!(target
        .create_generation("tallies", 2, 1)
        .await
        .expect("create"));
    let mut batch = target
        .begin("tallies", 2, Role::Rebuild, None)
        .await
        .expect("begin");
    target
        .dead_letter(&mut batch, &rebuilt, false)
        .await
        .expect("park");
    target
        .commit(
            batch,
            cqrs_core::Position::START,
            cqrs_core::Position::START,
            None,
        )
        .await
        .expect("commit");

    crate::dead_letters::retry(&target, "tallies", rebuilt.event_id)
        .await
        .expect("retry");
    assert!(
        target
            .retries_asked("tallies", 10)
            .await
            .expect("asked")
            .is_empty(),
        "a letter of the generation being rebuilt is not retried on the live one"
    );
    assert!(target
        .switch_generation("tallies", 2)
        .await
        .expect("switch"));
    let letters = target.dead_letters("tallies").await.expect("letters");
    let status = |id| {
        letters
            .iter()
            .find(|l| l.failure.event_id == id)
            .expect("letter")
            .status
    };
    assert_eq!(
        status(old.event_id),
        crate::DeadLetterStatus::Retried,
        "closed by the switch"
    );
    assert_eq!(
        status(rebuilt.event_id),
        crate::DeadLetterStatus::Retry,
        "still asked for"
    );
    let asked = target.retries_asked("tallies", 10).await.expect("asked");
    assert_eq!(asked.len(), 1, "now on the active generation");
    assert_eq!(asked[0].failure.event_id, rebuilt.event_id);
}

/// A generation built by an older version of the projection is never switched in over the
/// active one's.
pub async fn an_older_version_is_never_switched_in<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    seed(store.as_ref(), 2, 2).await;
    runner(Arc::clone(&store), target.clone(), 2, ErrorPolicy::Stop)
        .run_until_caught_up()
        .await
        .expect("v2");
    assert!(target
        .create_generation("tallies", 2, 1)
        .await
        .expect("create"));
    let switched = target.switch_generation("tallies", 2).await;
    assert!(
        matches!(
            switched,
            Err(Error::Superseded {
                version: 1,
                active_version: 2,
                ..
            })
        ),
        "{switched:?}"
    );
    let state = target
        .state("tallies")
        .await
        .expect("state")
        .expect("there");
    assert_eq!((state.active_generation, state.checkpoint.version), (1, 2));
}

/// A rebuild that stops at an event it cannot handle (the stop policy) records it on the
/// generation it builds and waits, standing by, for an operator: the live runner does not
/// end. Skipping the event lets the rebuild finish and the new version go live.
pub async fn a_stopped_rebuild_waits_for_the_operator<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    append(store.as_ref(), "tally-a", vec![added(1)]).await;
    let poison = noted("poison");
    let poison_id = poison.event_id;
    append(store.as_ref(), "tally-b", vec![poison]).await;
    append(store.as_ref(), "tally-a", vec![added(2)]).await;
    // Version 1 parked the event and went on; version 2 stops at it.
    runner(
        Arc::clone(&store),
        target.clone(),
        1,
        ErrorPolicy::DeadLetter,
    )
    .run_until_caught_up()
    .await
    .expect("v1");
    let v2 = runner(Arc::clone(&store), target.clone(), 2, ErrorPolicy::Stop).with_options(
        RunnerOptions {
            failed_recheck: Duration::from_millis(100),
            ..options(ErrorPolicy::Stop)
        },
    );
    let (stop, worker) = spawn_live(v2);
    eventually(
        Duration::from_secs(10),
        "the rebuild did not stop at the event",
        || {
            let (store, target) = (Arc::clone(&store), target.clone());
            async move {
                let s = status(store.as_ref(), &target).await.expect("status");
                s[0].state == ProjectionState::Failed && s[0].error_event_id == Some(poison_id)
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !worker.is_finished(),
        "the runner stands by: {:?}",
        worker.await
    );
    let letters = target.dead_letters("tallies").await.expect("letters");
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(letters[0].blocking && letters[0].generation == 2);

    crate::dead_letters::skip(&target, "tallies", poison_id)
        .await
        .expect("skip");
    eventually(Duration::from_secs(10), "version 2 did not go live", || {
        let target = target.clone();
        async move {
            target
                .state("tallies")
                .await
                .expect("state")
                .is_some_and(|s| {
                    s.checkpoint.version == 2 && s.active_generation == 2 && s.failure().is_none()
                })
        }
    })
    .await;
    assert_eq!(
        tallies(&target).await,
        vec![("tally-a".to_owned(), Tally { count: 2, total: 6 })],
        "version 2 counts twice, without the skipped event"
    );
    let _ = stop.send(());
    worker.await.expect("task").expect("clean stop");
}

/// A paused projection's worker keeps the lease and applies nothing (its status says
/// paused, its lag grows); a rebuild goes on meanwhile; once resumed, the worker moves over
/// to the rebuilt generation and every event is in the read model once.
pub async fn a_paused_worker_keeps_its_lease_and_applies_nothing<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let mut expected = seed(store.as_ref(), 3, 5).await;
    // A short lease, so that the pause below outlasts several of its periods; and a standby,
    // which must not take the lease from the paused worker (invariants 7 and 13).
    let short_lease = RunnerOptions {
        lease: crate::lease::LeaseOptions::with_ttl(Duration::from_millis(300)),
        ..options(ErrorPolicy::Stop)
    };
    let live = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop)
        .with_options(short_lease.clone());
    let (stop, worker) = spawn_live(live.clone());
    let caught_up = |expected: Vec<(String, Tally)>| {
        let target = target.clone();
        move || {
            let (target, expected) = (target.clone(), expected.clone());
            async move { tallies(&target).await == expected }
        }
    };
    eventually(
        Duration::from_secs(15),
        "the worker did not catch up",
        caught_up(expected.clone()),
    )
    .await;
    assert!(
        !target.set_paused("no_such", true).await.expect("pause"),
        "an unknown name is not paused"
    );
    assert!(target.set_paused("tallies", true).await.expect("pause"));
    let paused_at = target
        .state("tallies")
        .await
        .expect("state")
        .expect("registered")
        .paused_at;
    assert!(paused_at.is_some());
    assert!(target
        .set_paused("tallies", true)
        .await
        .expect("pause again"));
    assert_eq!(
        target
            .state("tallies")
            .await
            .expect("state")
            .expect("registered")
            .paused_at,
        paused_at,
        "pausing again keeps the first time"
    );

    let lease_before = target
        .state("tallies")
        .await
        .expect("state")
        .expect("registered")
        .lease;
    let standby =
        runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop).with_options(short_lease);
    let (stop_standby, standby) = spawn_live(standby);
    append(store.as_ref(), "tally-000", vec![added(100)]).await;
    // Longer than the worker's idle wait and idle checkpoint (it would have applied the
    // event), and than five lease periods (the standby would have taken an unrenewed lease).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let lease_after = target
        .state("tallies")
        .await
        .expect("state")
        .expect("registered")
        .lease;
    assert_eq!(
        lease_before.as_ref().map(|l| (&l.holder, l.epoch)),
        lease_after.as_ref().map(|l| (&l.holder, l.epoch)),
        "the paused worker kept its lease, renewed, and the standby stayed out"
    );
    assert!(lease_after.is_some_and(|l| l.live));
    assert_eq!(
        tallies(&target).await,
        expected,
        "a paused worker applied an event"
    );
    let statuses = status(store.as_ref(), &target).await.expect("status");
    assert_eq!(statuses[0].state, ProjectionState::Paused);
    assert!(statuses[0].lag_events >= 1, "{statuses:?}");
    assert!(
        statuses[0].lease_holder.is_some(),
        "the paused worker let its lease go"
    );
    assert!(matches!(
        target
            .begin("tallies", statuses[0].generation, Role::Live, None)
            .await,
        Err(Error::Paused(_))
    ));

    let report = live
        .rebuild(|_| {})
        .await
        .expect("a rebuild goes on while paused");
    expected[0].1.count += 1;
    expected[0].1.total += 100;
    assert_eq!(
        tallies(&target).await,
        expected,
        "the rebuilt model has every event"
    );
    assert!(report.generation > statuses[0].generation);

    assert!(target.set_paused("tallies", false).await.expect("resume"));
    append(store.as_ref(), "tally-001", vec![added(10)]).await;
    expected[1].1.count += 1;
    expected[1].1.total += 10;
    eventually(
        Duration::from_secs(15),
        "the resumed worker did not go on",
        caught_up(expected.clone()),
    )
    .await;
    let statuses = status(store.as_ref(), &target).await.expect("status");
    assert_eq!(statuses[0].state, ProjectionState::Running);
    assert_eq!(statuses[0].paused_at, None);
    let _ = stop.send(());
    let _ = stop_standby.send(());
    worker.await.expect("task").expect("clean stop");
    standby.await.expect("task").expect("clean stop");
    assert_eq!(tallies(&target).await, expected, "each event once");
}

/// A reset makes a new, empty generation the one queries read at once; the live worker
/// (here paused through the reset, so the empty model can be looked at) moves over and
/// replays the whole log into it once resumed; a waiter for a position is not told the
/// empty model reached it; the dead letters of the old generation are closed and met again
/// by the replay.
pub async fn a_reset_replays_the_log_into_an_empty_read_model<T: Target + Clone>(
    store: Arc<dyn EventStore>,
    target: T,
) {
    let expected = seed(store.as_ref(), 4, 6).await;
    let poison = noted("poison");
    let poison_id = poison.event_id;
    // The poison's own position: the head may still be behind it while transactions of
    // other tests hold the horizon back, and a wait for it would be reached at once.
    let head = append(store.as_ref(), "tally-p", vec![poison]).await;
    let live = runner(
        Arc::clone(&store),
        target.clone(),
        1,
        ErrorPolicy::DeadLetter,
    );
    let (stop, worker) = spawn_live(live);
    let replayed = || {
        let (target, expected) = (target.clone(), expected.clone());
        async move { tallies(&target).await == expected }
    };
    eventually(
        Duration::from_secs(15),
        "the worker did not catch up",
        replayed,
    )
    .await;
    let waited = crate::progress::wait_for(&target, "tallies", head, Duration::from_secs(5));
    assert!(waited.await.expect("wait").is_reached());
    let before = target
        .state("tallies")
        .await
        .expect("state")
        .expect("registered");

    assert!(target.set_paused("tallies", true).await.expect("pause"));
    assert_eq!(target.reset("no_such").await.expect("reset"), None);
    let generation = target
        .reset("tallies")
        .await
        .expect("reset")
        .expect("registered");
    assert!(generation > before.active_generation);
    let after = target
        .state("tallies")
        .await
        .expect("state")
        .expect("registered");
    assert_eq!(after.active_generation, generation);
    assert_eq!(after.checkpoint.position, cqrs_core::Position::START);
    assert!(
        after.rebuilding.is_none() && after.paused_at.is_some(),
        "{after:?}"
    );
    assert!(
        tallies(&target).await.is_empty(),
        "queries read the new, empty generation"
    );
    let waited = crate::progress::wait_for(&target, "tallies", head, Duration::from_millis(300))
        .await
        .expect("wait");
    assert!(
        !waited.is_reached(),
        "a waiter was told the empty read model holds the position the old one had reached \
         ({head}): {waited:?}, board {:?}, stored {:?}",
        target.progress().subscribe("tallies").borrow().clone(),
        target
            .state("tallies")
            .await
            .expect("state")
            .map(|s| (s.active_generation, s.checkpoint.position)),
    );
    let letters = target.dead_letters("tallies").await.expect("letters");
    assert_eq!(
        (letters.len(), letters[0].status),
        (1, crate::DeadLetterStatus::Retried)
    );
    assert!(matches!(
        target
            .begin("tallies", before.active_generation, Role::Live, None)
            .await,
        Err(Error::GenerationMoved { .. })
    ));

    assert!(target.set_paused("tallies", false).await.expect("resume"));
    eventually(
        Duration::from_secs(15),
        "the reset model was not replayed",
        replayed,
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "the replay did not meet the poison again",
        || {
            let target = target.clone();
            async move {
                let letters = target.dead_letters("tallies").await.expect("letters");
                letters.len() == 1
                    && letters[0].failure.event_id == poison_id
                    && letters[0].status == crate::DeadLetterStatus::Parked
                    && letters[0].generation == generation
            }
        },
    )
    .await;
    let waited = crate::progress::wait_for(&target, "tallies", head, Duration::from_secs(5));
    assert!(waited.await.expect("wait").is_reached());
    let _ = stop.send(());
    worker.await.expect("task").expect("clean stop");
}
