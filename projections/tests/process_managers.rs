//! Process managers on both instance stores: failures stay with their instance, parked
//! instances wait for an operator, deadlines fire once, a taken-over claim writes nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, Metadata, NewEvent,
    RecordedEvent, StreamId,
};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use projections::process::{
    Input, InstanceState, InstanceStore, MemoryInstances, NewInput, PgInstances, ProcessManager,
    ProcessOptions, ProcessRunner, Step,
};
use projections::{ApplyError, PgTarget, Resolution};
use serde::{Deserialize, Serialize};

const NAME: &str = "errands";

/// What the test manager has seen, shared with the test.
#[derive(Default)]
struct Seen {
    /// Failures so far per event id.
    failures: HashMap<uuid::Uuid, u32>,
    /// Whether poison events are healed.
    healed: bool,
    /// Deadline firings per instance.
    fired: HashMap<String, u32>,
    /// Whether `instance_of` has panicked at an `intake-panic` note yet (it does once).
    intake_panicked: bool,
}

/// Reacts by the note of each event: `flaky` fails three times, `poison` fails until healed,
/// `panic` panics, `remind` schedules a reminder in 300 ms, `forget` cancels it.
struct Errands(Arc<Mutex<Seen>>);

#[derive(Debug, Default, Serialize, Deserialize)]
struct Errand {
    done: Vec<String>,
    reminded: u32,
}

#[async_trait]
impl ProcessManager for Errands {
    type State = Errand;

    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    fn instance_of(&self, event: &RecordedEvent) -> Option<String> {
        if event.event.payload["text"] == "intake-panic" {
            let mut seen = self.0.lock().expect("lock");
            if !seen.intake_panicked {
                seen.intake_panicked = true;
                drop(seen);
                panic!("the intake's first look at this event panics");
            }
        }
        Some(event.stream_id.as_str().to_owned())
    }

    async fn react(
        &self,
        errand: &mut Errand,
        input: &Input,
        step: &mut Step,
    ) -> Result<(), ApplyError> {
        let note = match input {
            Input::Deadline(deadline) => {
                let mut seen = self.0.lock().expect("lock");
                *seen.fired.entry(step.instance().to_owned()).or_default() += 1;
                errand.reminded += 1;
                errand.done.push(format!("deadline:{}", deadline.name));
                return Ok(());
            }
            Input::Event(event) => event.event.payload["text"]
                .as_str()
                .unwrap_or("added")
                .to_owned(),
        };
        {
            let mut seen = self.0.lock().expect("lock");
            let healed = seen.healed;
            let failures = seen.failures.entry(input.id()).or_default();
            match note.as_str() {
                "flaky" if *failures < 3 => {
                    *failures += 1;
                    return Err(ApplyError::transient("flaky"));
                }
                "poison" if !healed => {
                    *failures += 1;
                    return Err(ApplyError::poison("poisoned"));
                }
                _ => {}
            }
        }
        if note == "panic" {
            panic!("boom");
        }
        if note == "slow-remind" {
            // Schedules, then outruns its time: the deadline is kept with the retry.
            step.schedule("reminder", Utc::now() + chrono::Duration::hours(1));
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        match note.as_str() {
            "remind" => step.schedule(
                "reminder",
                Utc::now() + chrono::Duration::milliseconds(REMINDER_MS),
            ),
            "forget" => step.cancel("reminder"),
            _ => {}
        }
        errand.done.push(note);
        Ok(())
    }
}

async fn note(store: &dyn EventStore, stream: &str, text: &str) {
    let event = if text == "added" {
        TestEvent::Added { amount: 1 }
    } else {
        TestEvent::Noted { text: text.into() }
    };
    store
        .append(
            &StreamId::new(stream).expect("stream"),
            ExpectedVersion::Any,
            vec![NewEvent::from_domain(&event).expect("encode")],
            &Metadata::default(),
        )
        .await
        .expect("append");
}

/// A runner of [`Errands`] with quick retries, and what it has seen.
fn errands(
    store: &Arc<dyn EventStore>,
    instances: &Arc<dyn InstanceStore>,
) -> (ProcessRunner<Errands>, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let runner = ProcessRunner::new(
        Arc::clone(store),
        Arc::clone(instances),
        Arc::new(Errands(Arc::clone(&seen))),
    )
    .with_options(options());
    (runner, seen)
}

fn options() -> ProcessOptions {
    ProcessOptions {
        executors: 4,
        first_backoff: Duration::from_millis(300),
        max_backoff: Duration::from_millis(300),
        poll_every: Duration::from_millis(20),
        reaction_timeout: Duration::from_millis(500),
        ..ProcessOptions::default()
    }
}

async fn done_of(instances: &dyn InstanceStore, instance: &str) -> Vec<String> {
    instances
        .instance(NAME, instance)
        .await
        .expect("instance")
        .map(|i| {
            serde_json::from_value::<Errand>(i.data)
                .unwrap_or_default()
                .done
        })
        .unwrap_or_default()
}

async fn until<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(
            started.elapsed() < within,
            "{what} did not happen in {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn a_failing_instance_does_not_hold_up_the_others(
    store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let (runner, _) = errands(&store, &instances);
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let worker = {
        let runner = runner.clone();
        tokio::spawn(async move {
            runner
                .run(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        })
    };
    for i in 0..20 {
        note(store.as_ref(), &format!("slow-{i}"), "flaky").await;
    }
    let placed = Instant::now();
    note(store.as_ref(), "quick-1", "added").await;
    until("the quick instance", Duration::from_secs(5), || async {
        done_of(instances.as_ref(), "quick-1").await == ["added"]
    })
    .await;
    let quick = placed.elapsed();
    let troubled = instances.troubled(NAME).await.expect("troubled");
    assert!(
        quick < Duration::from_secs(1),
        "the quick instance took {quick:?} behind the flaky ones"
    );
    assert!(
        troubled.iter().any(|i| i.state == InstanceState::Retrying),
        "the flaky instances were still retrying: {troubled:?}"
    );
    until("every flaky instance", Duration::from_secs(20), || async {
        instances.summary(NAME).await.expect("summary").due_inputs == 0
            && instances.troubled(NAME).await.expect("troubled").is_empty()
    })
    .await;
    for i in 0..20 {
        assert_eq!(
            done_of(instances.as_ref(), &format!("slow-{i}")).await,
            ["flaky"]
        );
    }
    // An intake that panics is started again, and files the event the next time.
    note(store.as_ref(), "after-panic", "intake-panic").await;
    until(
        "the event after the intake's panic",
        Duration::from_secs(10),
        || async { done_of(instances.as_ref(), "after-panic").await == ["intake-panic"] },
    )
    .await;
    stop.send_replace(true);
    worker.await.expect("task").expect("runner");
}

async fn a_poisoned_instance_is_parked_until_an_operator_decides(
    store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let (runner, seen) = errands(&store, &instances);
    note(store.as_ref(), "bad-1", "poison").await;
    note(store.as_ref(), "bad-1", "added").await;
    note(store.as_ref(), "bad-2", "poison").await;
    note(store.as_ref(), "bad-2", "added").await;
    note(store.as_ref(), "good-1", "added").await;
    note(store.as_ref(), "crash-1", "panic").await;
    runner.run_until_idle().await.expect("run");
    assert_eq!(done_of(instances.as_ref(), "good-1").await, ["added"]);
    let crashed = instances
        .instance(NAME, "crash-1")
        .await
        .expect("get")
        .expect("known");
    assert_eq!(crashed.state, InstanceState::Parked, "{crashed:?}");
    assert!(
        crashed
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("panicked: boom"),
        "{crashed:?}"
    );
    assert!(instances
        .resolve(NAME, "crash-1", Resolution::Skip)
        .await
        .expect("skip"));
    let troubled = instances.troubled(NAME).await.expect("troubled");
    assert_eq!(troubled.len(), 2, "{troubled:?}");
    for parked in &troubled {
        assert_eq!(parked.state, InstanceState::Parked);
        assert_eq!(parked.last_error.as_deref(), Some("poisoned"));
        assert_eq!(parked.pending, 2, "its inputs wait: {parked:?}");
    }
    // Parked stays parked: running again changes nothing.
    runner.run_until_idle().await.expect("run");
    assert!(done_of(instances.as_ref(), "bad-1").await.is_empty());

    // Skip: the poison input is dropped, the next one runs.
    assert!(instances
        .resolve(NAME, "bad-1", Resolution::Skip)
        .await
        .expect("skip"));
    // Retry once healed: the poison input runs again, then the next one.
    seen.lock().expect("lock").healed = true;
    assert!(instances
        .resolve(NAME, "bad-2", Resolution::Retry)
        .await
        .expect("retry"));
    assert!(!instances
        .resolve(NAME, "good-1", Resolution::Retry)
        .await
        .expect("not parked"));
    runner.run_until_idle().await.expect("run");
    assert_eq!(done_of(instances.as_ref(), "bad-1").await, ["added"]);
    assert_eq!(
        done_of(instances.as_ref(), "bad-2").await,
        ["poison", "added"]
    );
    assert!(instances.troubled(NAME).await.expect("troubled").is_empty());
}

/// How long after "remind" its reminder is due: long enough that the first run of the test
/// below ends before it, even on a loaded machine (300 ms was not, under the whole suite on
/// two cores).
const REMINDER_MS: i64 = 2_000;

async fn a_deadline_fires_once_and_a_cancelled_one_never(
    store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let (runner, seen) = errands(&store, &instances);
    note(store.as_ref(), "wake-1", "remind").await;
    note(store.as_ref(), "wake-2", "remind").await;
    note(store.as_ref(), "wake-2", "forget").await;
    runner.run_until_idle().await.expect("run");
    let summary = instances.summary(NAME).await.expect("summary");
    assert_eq!(summary.scheduled_deadlines, 1, "{summary:?}");
    assert!(
        seen.lock().expect("lock").fired.is_empty(),
        "nothing is due yet"
    );
    tokio::time::sleep(Duration::from_millis(REMINDER_MS as u64 + 100)).await;
    for _ in 0..3 {
        runner.run_until_idle().await.expect("run");
    }
    let fired = seen.lock().expect("lock").fired.clone();
    assert_eq!(fired, HashMap::from([("wake-1".to_owned(), 1)]));
    assert_eq!(
        done_of(instances.as_ref(), "wake-1").await,
        ["remind", "deadline:reminder"]
    );
    assert_eq!(
        done_of(instances.as_ref(), "wake-2").await,
        ["remind", "forget"]
    );
    assert_eq!(
        instances
            .summary(NAME)
            .await
            .expect("summary")
            .scheduled_deadlines,
        0
    );
}

/// A reaction stopped for outrunning its time keeps the deadlines it scheduled with its
/// retry: a timeout meant to end a stuck process is not lost with it.
async fn a_reaction_that_outruns_its_time_keeps_its_deadlines(
    store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let (runner, _) = errands(&store, &instances);
    note(store.as_ref(), "slow-1", "slow-remind").await;
    runner.run_until_idle().await.expect("run");
    let slow = instances
        .instance(NAME, "slow-1")
        .await
        .expect("get")
        .expect("known");
    assert_eq!(slow.state, InstanceState::Retrying, "{slow:?}");
    assert!(
        slow.last_error
            .as_deref()
            .unwrap_or("")
            .contains("took longer"),
        "{slow:?}"
    );
    assert_eq!(
        slow.pending, 2,
        "the event and the deadline it scheduled: {slow:?}"
    );
    let summary = instances.summary(NAME).await.expect("summary");
    assert_eq!(summary.scheduled_deadlines, 1, "{summary:?}");
}

async fn a_taken_over_claim_writes_nothing(
    _store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let event = uuid::Uuid::new_v4();
    let input = NewInput {
        instance: "one".into(),
        event_id: event,
    };
    instances
        .enqueue(
            NAME,
            std::slice::from_ref(&input),
            cqrs_core::Position::new(1, 1),
        )
        .await
        .expect("enqueue");
    // Filing the same event again files nothing.
    instances
        .enqueue(NAME, &[input], cqrs_core::Position::new(1, 1))
        .await
        .expect("enqueue again");
    assert_eq!(
        instances.summary(NAME).await.expect("summary").due_inputs,
        1
    );
    let first = instances
        .claim(NAME, Duration::from_millis(50))
        .await
        .expect("claim")
        .expect("due");
    assert!(
        instances
            .claim(NAME, Duration::from_secs(5))
            .await
            .expect("claim")
            .is_none(),
        "a claimed instance is not claimed twice"
    );
    tokio::time::sleep(Duration::from_millis(120)).await;
    let second = instances
        .claim(NAME, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("the first claim ran out");
    assert!(second.epoch > first.epoch);
    let none = projections::process::DeadlineChanges::default();
    let stale = instances
        .complete(NAME, &first, serde_json::json!({"by": "first"}), &none)
        .await
        .expect("complete");
    assert!(!stale, "the deposed claim must write nothing");
    assert!(instances
        .complete(NAME, &second, serde_json::json!({"by": "second"}), &none)
        .await
        .expect("complete"));
    let one = instances
        .instance(NAME, "one")
        .await
        .expect("get")
        .expect("known");
    assert_eq!(one.data, serde_json::json!({"by": "second"}));
    assert_eq!(one.pending, 0);
}

/// A reaction that failed after scheduling a deadline runs again and schedules it again:
/// the deadline, fired in between, is not filed a second time.
async fn a_deadline_scheduled_again_after_firing_does_not_fire_again(
    _store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let input = NewInput {
        instance: "one".into(),
        event_id: uuid::Uuid::new_v4(),
    };
    instances
        .enqueue(NAME, &[input], cqrs_core::Position::new(1, 1))
        .await
        .expect("enqueue");
    let ttl = Duration::from_secs(5);
    let claim = || async { instances.claim(NAME, ttl).await.expect("claim") };
    let first = claim().await.expect("the event is due");
    let mut step = Step::new("one", first.input.id, first.epoch, Instant::now() + ttl);
    step.schedule("timeout", Utc::now());
    let changes = step.changes();
    assert!(instances
        .retry_later(
            NAME,
            &first,
            "try again",
            Duration::from_millis(200),
            &changes
        )
        .await
        .expect("retry"));
    let deadline = claim().await.expect("the deadline is due before the retry");
    assert!(
        matches!(deadline.input.kind, projections::process::InputKind::Deadline { ref name, .. } if name == "timeout"),
        "{deadline:?}"
    );
    assert!(instances
        .complete(
            NAME,
            &deadline,
            serde_json::json!({"fired": 1}),
            &Default::default()
        )
        .await
        .expect("fire"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let again = claim().await.expect("the retry is due");
    assert_eq!(again.input.id, first.input.id);
    assert!(instances
        .complete(NAME, &again, serde_json::json!({"fired": 1}), &changes)
        .await
        .expect("complete"));
    assert!(claim().await.is_none(), "the deadline fired once");
    let summary = instances.summary(NAME).await.expect("summary");
    assert_eq!((summary.due_inputs, summary.scheduled_deadlines), (0, 0));
}

/// A deadline whose reaction schedules its own name again (or cancels it) and then fails
/// is retried itself, after its backoff, without spinning and without being dropped; a
/// deadline done meanwhile leaves a failing event's retry as it was.
async fn a_failing_deadline_that_replaces_itself_is_retried(
    _store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let ttl = Duration::from_secs(5);
    let claim = || async { instances.claim(NAME, ttl).await.expect("claim") };
    let step_of = |c: &projections::process::Claimed| {
        Step::new(&c.instance, c.input.id, c.epoch, Instant::now() + ttl)
    };
    for (instance, reschedule) in [("again", true), ("cancel", false)] {
        let input = NewInput {
            instance: instance.into(),
            event_id: uuid::Uuid::new_v4(),
        };
        instances
            .enqueue(NAME, &[input], cqrs_core::Position::new(1, 1))
            .await
            .expect("enqueue");
        let event = claim().await.expect("the event");
        let mut step = step_of(&event);
        step.schedule("tick", Utc::now());
        assert!(instances
            .complete(NAME, &event, serde_json::json!(1), &step.changes())
            .await
            .expect("complete"));
        let tick = claim().await.expect("the tick is due");
        let mut step = step_of(&tick);
        if reschedule {
            step.schedule("tick", Utc::now() + chrono::Duration::hours(1));
        } else {
            step.cancel("tick");
        }
        assert!(instances
            .retry_later(
                NAME,
                &tick,
                "flaky",
                Duration::from_millis(300),
                &step.changes()
            )
            .await
            .expect("retry"));
        let started = Instant::now();
        assert!(claim().await.is_none(), "nothing is due during the backoff");
        assert!(started.elapsed() < Duration::from_secs(1), "the claim spun");
        let wait = instances
            .next_due_in(NAME)
            .await
            .expect("due")
            .expect("a retry is due");
        assert!(wait <= Duration::from_millis(300), "{wait:?}");
        tokio::time::sleep(Duration::from_millis(350)).await;
        let again = claim().await.expect("the tick is retried");
        assert_eq!(again.input.id, tick.input.id);
        assert_eq!(again.attempts, 1);
        assert!(instances
            .complete(NAME, &again, serde_json::json!(2), &step.changes())
            .await
            .expect("complete"));
        let status = instances
            .instance(NAME, instance)
            .await
            .expect("get")
            .expect("known");
        assert_eq!(status.state, InstanceState::Active, "{status:?}");
        assert_eq!(
            status.pending,
            u64::from(reschedule),
            "only the new tick waits: {status:?}"
        );
    }

    // A failing event keeps its retry while a deadline of its instance is done.
    let failing = NewInput {
        instance: "mixed".into(),
        event_id: uuid::Uuid::new_v4(),
    };
    instances
        .enqueue(NAME, &[failing], cqrs_core::Position::new(2, 1))
        .await
        .expect("enqueue");
    let event = claim().await.expect("the event");
    let mut step = step_of(&event);
    step.schedule("soon", Utc::now());
    assert!(instances
        .retry_later(
            NAME,
            &event,
            "down",
            Duration::from_secs(30),
            &step.changes()
        )
        .await
        .expect("retry"));
    let soon = claim().await.expect("the deadline comes first");
    assert!(instances
        .complete(NAME, &soon, serde_json::json!(3), &Default::default())
        .await
        .expect("complete"));
    let mixed = instances
        .instance(NAME, "mixed")
        .await
        .expect("get")
        .expect("known");
    assert_eq!(mixed.state, InstanceState::Retrying, "{mixed:?}");
    assert_eq!(mixed.attempts, 1);
    let early = claim().await;
    assert!(
        early.is_none(),
        "the event waits for its backoff: {early:?}"
    );

    // Two deadlines that both fail each wait for their own backoff: neither makes the
    // other run again at once.
    let pair = NewInput {
        instance: "pair".into(),
        event_id: uuid::Uuid::new_v4(),
    };
    instances
        .enqueue(NAME, &[pair], cqrs_core::Position::new(3, 1))
        .await
        .expect("enqueue");
    let event = claim().await.expect("the event");
    let mut step = step_of(&event);
    step.schedule("a", Utc::now());
    step.schedule("b", Utc::now());
    assert!(instances
        .complete(NAME, &event, serde_json::json!(4), &step.changes())
        .await
        .expect("complete"));
    for _ in 0..2 {
        let deadline = claim().await.expect("a deadline is due");
        assert!(instances
            .retry_later(
                NAME,
                &deadline,
                "down",
                Duration::from_secs(30),
                &Default::default()
            )
            .await
            .expect("retry"));
    }
    let early = claim().await;
    assert!(
        early.is_none(),
        "both deadlines wait for their backoff: {early:?}"
    );
    // And a new event behind them is not held up by their retries.
    let behind = NewInput {
        instance: "pair".into(),
        event_id: uuid::Uuid::new_v4(),
    };
    instances
        .enqueue(
            NAME,
            std::slice::from_ref(&behind),
            cqrs_core::Position::new(4, 1),
        )
        .await
        .expect("enqueue");
    let next = claim().await.expect("the new event runs");
    assert_eq!(next.input.id, behind.event_id);
}

/// Pruning forgets done inputs past their retention and keeps pending ones.
async fn done_inputs_are_pruned_and_pending_ones_kept(
    _store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
) {
    let inputs: Vec<NewInput> = (0..2)
        .map(|_| NewInput {
            instance: "kept".into(),
            event_id: uuid::Uuid::new_v4(),
        })
        .collect();
    instances
        .enqueue(NAME, &inputs, cqrs_core::Position::new(1, 1))
        .await
        .expect("enqueue");
    let first = instances
        .claim(NAME, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("due");
    assert!(instances
        .complete(NAME, &first, serde_json::json!(1), &Default::default())
        .await
        .expect("complete"));
    let later = Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(
        instances
            .prune_done(NAME, Utc::now() - chrono::Duration::hours(1))
            .await
            .expect("prune"),
        0
    );
    assert_eq!(instances.prune_done(NAME, later).await.expect("prune"), 1);
    assert_eq!(instances.prune_done(NAME, later).await.expect("prune"), 0);
    let summary = instances.summary(NAME).await.expect("summary");
    assert_eq!(
        summary.due_inputs, 1,
        "the pending input is kept: {summary:?}"
    );
    let next = instances
        .claim(NAME, Duration::from_secs(5))
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(next.input.id, inputs[1].event_id);
}

async fn on_postgres() -> (Arc<dyn EventStore>, Arc<dyn InstanceStore>, TestDatabase) {
    let db = TestDatabase::create(12).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("store migrations");
    PgTarget::new(db.pool.clone())
        .migrate()
        .await
        .expect("projection migrations");
    (
        Arc::new(store),
        Arc::new(PgInstances::new(db.pool.clone())),
        db,
    )
}

macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {
        mod in_memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(
                        std::sync::Arc::new(super::InMemoryEventStore::new()),
                        std::sync::Arc::new(super::MemoryInstances::new()),
                    )
                    .await;
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let (store, instances, db) = super::on_postgres().await;
                    super::$scenario(store, instances).await;
                    db.drop_database().await;
                }
            )*
        }
    };
}

on_both!(
    a_failing_instance_does_not_hold_up_the_others,
    a_poisoned_instance_is_parked_until_an_operator_decides,
    a_deadline_fires_once_and_a_cancelled_one_never,
    a_taken_over_claim_writes_nothing,
    a_deadline_scheduled_again_after_firing_does_not_fire_again,
    a_failing_deadline_that_replaces_itself_is_retried,
    done_inputs_are_pruned_and_pending_ones_kept,
    a_reaction_that_outruns_its_time_keeps_its_deadlines,
);
