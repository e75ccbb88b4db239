//! Every connection to the database killed again and again (as in a database restart)
//! while writers append and a projection follows: retried appends store nothing twice
//! (invariants 4 and 10), and the read model ends with every event exactly once (invariant 6).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{EventStore, ExpectedVersion, Metadata, StreamId};
use eventstore_postgres::testing::TestDatabase;
use projections::testing::{added, runner, tallies, Tally};
use projections::ErrorPolicy;

/// Ends every session on the test's database but the caller's.
async fn kill_all_sessions(admin: &sqlx::PgPool, database: &str) -> u64 {
    sqlx::query_scalar::<_, i64>(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .map(|n| n.max(0) as u64)
    .unwrap_or(0)
}

/// Appends per writer.
const APPENDS: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_connections_lose_and_double_nothing() {
    let db = TestDatabase::create(4).await;
    let (store, target) = tests::connect(&db.url).await.expect("connect");
    let store: Arc<dyn EventStore> = store;
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&eventstore_postgres::testing::server_url())
        .await
        .expect("admin connection");

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let r = runner(Arc::clone(&store), target.clone(), 1, ErrorPolicy::Stop);
        tokio::spawn(async move {
            r.run(async {
                let _ = stopped.await;
            })
            .await
        })
    };

    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut expected: BTreeMap<String, Tally> = BTreeMap::new();
                let (mut retries, mut already_stored) = (0u32, 0u32);
                for i in 0..APPENDS {
                    let stream = format!("tally-{w}-{}", i % 5);
                    let batch = vec![added(i + 1), added(1)];
                    loop {
                        let result = store
                            .append(
                                &StreamId::new(stream.as_str()).expect("id"),
                                ExpectedVersion::Any,
                                batch.clone(),
                                &Metadata::default(),
                            )
                            .await;
                        match result {
                            Ok(r) => {
                                already_stored += u32::from(r.already_stored);
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                retries += 1;
                                tokio::time::sleep(Duration::from_millis(20)).await;
                            }
                            Err(e) => panic!("an append failed for good: {e}"),
                        }
                    }
                    let tally = expected.entry(stream).or_default();
                    tally.count += 2;
                    tally.total += i + 2;
                }
                (expected, retries, already_stored)
            })
        })
        .collect();

    // Kill every session, again and again, while the writers run: some appends are in flight.
    let mut kills = 0;
    while !writers.iter().all(|w| w.is_finished()) {
        tokio::time::sleep(Duration::from_millis(25)).await;
        kills += kill_all_sessions(&admin, &db.name).await;
    }
    let mut expected: BTreeMap<String, Tally> = BTreeMap::new();
    let mut retries = 0;
    for writer in writers {
        let (part, r, _) = writer.await.expect("writer");
        expected.extend(part);
        retries += r;
    }
    assert!(kills > 0, "sessions were killed");
    assert!(retries > 0, "writers saw the connection loss and retried");

    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM es_events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        stored,
        4 * APPENDS as i64 * 2,
        "every event stored exactly once despite retries"
    );

    let expected: Vec<(String, Tally)> = expected.into_iter().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while tallies(&target).await != expected {
        assert!(
            Instant::now() < deadline,
            "the projection did not converge after the connection losses"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    worker
        .await
        .expect("worker task")
        .expect("the worker ends cleanly");
    admin.close().await;
    db.drop_database().await;
}
