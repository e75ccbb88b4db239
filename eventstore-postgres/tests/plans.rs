//! The store's busiest statements are planned once per connection (PostgreSQL's generic
//! plan), not at every call: planning a page of the log took about a fifth of the time of a
//! page of ten events.

use std::time::{Duration, Instant};

use cqrs_core::conformance::TestEvent;
use cqrs_core::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;

/// How a session planned the statements whose text contains `marker`: (generic, custom).
async fn plans(pool: &sqlx::PgPool, marker: &str) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(sum(generic_plans), 0)::int8, coalesce(sum(custom_plans), 0)::int8 \
         FROM pg_prepared_statements WHERE statement LIKE '%' || $1 || '%'",
    )
    .bind(marker)
    .fetch_one(pool)
    .await
    .expect("prepared statements")
}

#[tokio::test]
async fn pages_of_the_log_and_single_appends_are_not_planned_at_every_call() {
    // One connection: the statements' plans and pg_prepared_statements are its own.
    let db = TestDatabase::create(1).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    for n in 0..12 {
        store
            .append(
                &StreamId::new(format!("plans-{n}")).expect("id"),
                ExpectedVersion::NoStream,
                vec![NewEvent::from_domain(&TestEvent::Added { amount: n }).expect("encode")],
                &Metadata::default(),
            )
            .await
            .expect("append");
    }
    // A log of some size whose statistics the planner knows: with them, a plan made for a
    // page's parameters looks far cheaper than the generic one.
    sqlx::query(
        "INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version, \
                                payload, metadata) \
         SELECT gen_random_uuid(), 'bulk-' || (g / 100), g % 100 + 1, 'Added', 1, \
                '{\"Added\":{\"amount\":1}}', '{}' \
         FROM generate_series(0, 4999) g",
    )
    .execute(&db.pool)
    .await
    .expect("bulk");
    sqlx::query("ANALYZE es_events")
        .execute(&db.pool)
        .await
        .expect("analyze");
    // Twelve pages of one event; a page comes back empty while another test's transaction
    // holds the log back (the horizon is the cluster's), and is read again.
    let mut after = Position::START;
    let (mut pages, deadline) = (0, Instant::now() + Duration::from_secs(30));
    while pages < 12 {
        let page = store
            .read_all(after, 1, &EventFilter::all())
            .await
            .expect("read");
        if page.events.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the log stayed held back for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        pages += 1;
        after = page.scanned_to;
    }

    // PostgreSQL plans a statement's first five executions for their parameters, then
    // keeps the generic plan unless the custom plans looked cheaper.
    let (generic, custom) = plans(&db.pool, "LEFT JOIN LATERAL").await;
    assert!(
        generic >= 6,
        "the page statement: {generic} generic plans, {custom} custom plans in {pages}+ reads"
    );
    // `OFFSET 0` is the single-append statement's alone.
    let (generic, custom) = plans(&db.pool, "OFFSET 0").await;
    assert!(
        generic >= 6,
        "the single-append statement: {generic} generic plans, {custom} custom plans in 12 appends"
    );
    db.drop_database().await;
}
