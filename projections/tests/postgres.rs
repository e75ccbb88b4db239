//! The projection scenarios on PostgreSQL: `PgEventStore` and `PgTarget` in one fresh
//! database per test.

use std::sync::Arc;

use cqrs_core::conformance::Teardown;
use cqrs_core::EventStore;
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use projections::testing as common;
use projections::PgTarget;

async fn fresh_database() -> (Arc<dyn EventStore>, PgTarget, TestDatabase) {
    let db = TestDatabase::create(12).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("store migrations");
    let target = PgTarget::new(db.pool.clone());
    target.migrate().await.expect("projection migrations");
    (Arc::new(store), target, db)
}

async fn fresh() -> (Arc<dyn EventStore>, PgTarget, Teardown) {
    let (store, target, db) = fresh_database().await;
    (store, target, Box::pin(db.drop_database()))
}

projections::target_scenarios!(fresh);

/// A projection that writes a table of its own through the batch's transaction: its rows
/// commit with the checkpoint, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_can_write_its_own_tables_in_the_batch_transaction() {
    use async_trait::async_trait;
    use cqrs_core::RecordedEvent;
    use projections::{ApplyError, Documents, ErrorPolicy, Projection, ProjectionRunner};

    struct Ledger;

    #[async_trait]
    impl Projection for Ledger {
        fn name(&self) -> &str {
            "ledger"
        }

        async fn apply(
            &self,
            docs: &mut dyn Documents,
            event: &RecordedEvent,
        ) -> Result<(), ApplyError> {
            let generation = docs.generation() as i64;
            let conn = docs
                .postgres()
                .ok_or_else(|| ApplyError::poison("needs PostgreSQL"))?;
            sqlx::query("INSERT INTO ledger (generation, event_id) VALUES ($1, $2)")
                .bind(generation)
                .bind(event.event_id)
                .execute(conn)
                .await
                .map_err(ApplyError::transient)?;
            Ok(())
        }
    }

    let (store, target, db) = fresh_database().await;
    sqlx::query("CREATE TABLE ledger (generation bigint, event_id uuid, PRIMARY KEY (generation, event_id))")
        .execute(&db.pool)
        .await
        .expect("table");
    common::seed(store.as_ref(), 5, 10).await;
    let runner = ProjectionRunner::new(Arc::clone(&store), target.clone(), Arc::new(Ledger))
        .with_options(common::options(ErrorPolicy::Stop));
    runner.run_until_caught_up().await.expect("catch up");
    runner
        .run_until_caught_up()
        .await
        .expect("again: nothing new");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE generation = 1")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    assert_eq!(
        rows,
        5 * 10 + 5,
        "every event once (the seed writes 5 noise events too)"
    );
    db.drop_database().await;
}

/// An open batch holds back no reader of the log: its gate assigns no transaction id, so
/// events appended meanwhile are readable at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_batch_holds_back_no_reader() {
    use projections::target::Role;
    use projections::{Documents, Target};

    let (store, target, db) = fresh_database().await;
    target.register("tallies", 1).await.expect("register");
    let mut batch = target
        .begin("tallies", 1, Role::Live, None)
        .await
        .expect("begin");
    batch
        .get("tallies", "tally-x")
        .await
        .expect("read in the batch");
    common::append(store.as_ref(), "tally-x", vec![common::added(1)]).await;
    // Transaction ids are the cluster's: another test's transaction, in another database,
    // may hold readers back for a moment. The batch stays open throughout, so a batch that
    // held the reader back would keep it back past the deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let page = loop {
        let page = store
            .read_all(
                cqrs_core::Position::START,
                10,
                &cqrs_core::EventFilter::all(),
            )
            .await
            .expect("read");
        if !page.events.is_empty() || std::time::Instant::now() > deadline {
            break page;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(page.events.len(), 1, "the open batch held the reader back");
    drop(batch);
    db.drop_database().await;
}

/// A projection stopped before the upgrade (its failure carried over onto its generation,
/// with no dead letter) gets a blocking dead letter from the migration, and skipping it lets
/// the projection go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_from_before_the_upgrade_can_be_skipped() {
    use projections::Target;

    let (store, target, db) = fresh_database().await;
    common::append(store.as_ref(), "tally-a", vec![common::added(1)]).await;
    common::append(store.as_ref(), "tally-a", vec![common::added(2)]).await;
    let runner = common::runner(
        Arc::clone(&store),
        target.clone(),
        1,
        projections::ErrorPolicy::Stop,
    );
    runner.run_until_caught_up().await.expect("catch up");
    let page = store
        .read_all(
            cqrs_core::Position::START,
            10,
            &cqrs_core::EventFilter::all(),
        )
        .await
        .expect("read");
    let (first, second) = (&page.events[0], &page.events[1]);
    // As the lifecycle migration leaves a projection that had stopped at the second event.
    sqlx::query(
        "UPDATE projection_checkpoints SET commit = $1, sequence = $2, failure = $3 WHERE name = 'tallies'",
    )
    .bind(first.position.commit as i64)
    .bind(first.position.sequence as i64)
    .bind(serde_json::json!({
        "position": { "commit": second.position.commit, "sequence": second.position.sequence },
        "event_id": second.event_id, "event_type": "Added", "stream_id": "tally-a", "error": "old failure"
    }))
    .execute(&db.pool)
    .await
    .expect("old failure");
    sqlx::query(include_str!(
        "../migrations/20261128000002_blocking_letters.sql"
    ))
    .execute(&db.pool)
    .await
    .expect("the migration's statement");
    assert!(matches!(
        runner.run_until_caught_up().await,
        Err(projections::Error::Failed { .. })
    ));
    projections::dead_letters::skip(&target, "tallies", second.event_id)
        .await
        .expect("skip the old failure");
    runner.run_until_caught_up().await.expect("goes on");
    let state = target
        .state("tallies")
        .await
        .expect("state")
        .expect("there");
    assert_eq!(state.failure(), None);
    assert!(
        state.checkpoint.position >= second.position,
        "past the skipped event"
    );
    db.drop_database().await;
}
