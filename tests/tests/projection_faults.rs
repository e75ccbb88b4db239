//! Projection workers in real processes, killed with SIGKILL (ARCHITECTURE.md invariants 6
//! and 7): nothing is lost, nothing is applied twice, and a standby takes over.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::EventStore;
use eventstore_postgres::testing::TestDatabase;
use projections::testing::{runner, tallies};
use projections::{ErrorPolicy, PgTarget};
use tests::KilledOnDrop;

/// A worker process, killed when dropped: a failing assertion leaves none behind.
fn start_worker(url: &str) -> KilledOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_projection_worker"))
        .arg(url)
        .env("LEASE_TTL_MS", "3000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("start a worker process");
    KilledOnDrop(child)
}

fn kill(mut worker: KilledOnDrop) {
    worker.kill();
}

async fn setup() -> (TestDatabase, Arc<dyn EventStore>, PgTarget) {
    let db = TestDatabase::create(10).await;
    let (store, target) = tests::connect(&db.url).await.expect("connect");
    (db, store, target)
}

/// A worker process is killed with SIGKILL at 20 random moments while writers append; the
/// final read model equals the expected one and a from-scratch rebuild, event for event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_at_random_moments_loses_and_doubles_nothing() {
    let (db, store, target) = setup().await;
    let writer = tokio::spawn(tests::write_tallies(
        Arc::clone(&store),
        400,
        Duration::from_millis(5),
    ));
    for _ in 0..20 {
        let worker = start_worker(&db.url);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(30..250))).await;
        kill(worker);
    }
    let expected = writer.await.expect("writer");

    let survivor = start_worker(&db.url);
    tests::until_tallies_equal(&target, &expected, Duration::from_secs(60)).await;
    kill(survivor);

    let live = tallies(&target).await;
    let events: u64 = expected.values().map(|t| t.count).sum();
    assert_eq!(
        live.iter().map(|(_, t)| t.count).sum::<u64>(),
        events,
        "every event exactly once"
    );
    let report = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop)
        .rebuild(|_| {})
        .await
        .expect("rebuild");
    assert_eq!(report.applied, events);
    assert_eq!(
        tallies(&target).await,
        live,
        "the live model equals a rebuild"
    );
    db.drop_database().await;
}

/// Two worker processes share the projection; the active one is killed and the standby
/// takes over within seconds and finishes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_process_takes_over_when_the_active_one_dies() {
    let (db, store, target) = setup().await;
    let mut expected = tests::write_tallies(Arc::clone(&store), 50, Duration::ZERO).await;
    let first = start_worker(&db.url);
    tests::until_tallies_equal(&target, &expected, Duration::from_secs(30)).await;
    let second = start_worker(&db.url);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Exactly one of them holds the lease, and it is the first.
    let holder: String = sqlx::query_scalar(
        "SELECT holder FROM projection_leases WHERE name = 'tallies' AND expires_at > clock_timestamp()",
    )
    .fetch_one(&db.pool)
    .await
    .expect("lease");
    assert!(
        holder.starts_with(&format!("{}@", first.0.id())),
        "one active worker: {holder}"
    );

    kill(first);
    let more = tests::write_tallies(Arc::clone(&store), 50, Duration::ZERO).await;
    for (stream, tally) in more {
        let entry = expected.entry(stream).or_default();
        entry.count += tally.count;
        entry.total += tally.total;
    }
    let took = tests::until_tallies_equal(&target, &expected, Duration::from_secs(30)).await;
    assert!(
        took < Duration::from_secs(10),
        "the standby took {took:?} to finish"
    );
    kill(second);
    db.drop_database().await;
}
