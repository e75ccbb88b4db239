//! The store's busiest statements are planned once per connection (PostgreSQL's generic
//! plan), not at every call: planning a page of the log took about a fifth of the time of a
//! page of ten events, and half that of a filtered page of one. And every page's plan is
//! the walk of the primary key in log order, whatever the planner's estimates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::conformance::TestEvent;
use cqrs_core::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use sqlx::Row;

/// How a session planned the statements whose text contains `marker`: (generic, custom).
fn plans_statement(marker: &str) -> String {
    format!(
        "SELECT coalesce(sum(generic_plans), 0)::int8, coalesce(sum(custom_plans), 0)::int8 \
         FROM pg_prepared_statements WHERE statement LIKE '%{marker}%'"
    )
}

/// How the pool's session (the readers') planned the statements containing `marker`.
async fn plans(pool: &sqlx::PgPool, marker: &str) -> (i64, i64) {
    sqlx::query_as(&plans_statement(marker))
        .fetch_one(pool)
        .await
        .expect("prepared statements")
}

/// How the writer's session (the appends') planned the statements containing `marker`.
async fn writer_plans(store: &PgEventStore, marker: &str) -> (i64, i64) {
    let rows = store
        .query_on_writer_connection(&plans_statement(marker))
        .await
        .expect("prepared statements");
    let row = rows.first().expect("a row");
    (row.get(0), row.get(1))
}

/// A store on a database of one connection (so that the readers' session's plans and
/// settings are the test's; the appends have the writer's connection), whose log holds 12 appended events and 5,000 more inserted in bulk, with
/// statistics: with them, a plan made for a page's parameters looks far cheaper than the
/// generic one.
async fn a_log_with_statistics() -> (TestDatabase, PgEventStore) {
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
    (db, store)
}

/// Reads `pages` pages of one event through `filter`; how many reads it took (a page comes
/// back empty while another test's transaction holds the log back, the horizon being the
/// cluster's, and is read again).
async fn read_pages(store: &PgEventStore, filter: &EventFilter, pages: usize) -> usize {
    let mut after = Position::START;
    let (mut read, mut reads, deadline) = (0, 0, Instant::now() + Duration::from_secs(30));
    while read < pages {
        let page = store.read_all(after, 1, filter).await.expect("read");
        reads += 1;
        if page.events.is_empty() {
            assert!(
                Instant::now() < deadline,
                "the log stayed held back for 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        read += 1;
        after = page.scanned_to;
    }
    reads
}

#[tokio::test]
async fn pages_of_the_log_and_single_appends_are_not_planned_at_every_call() {
    let (db, store) = a_log_with_statistics().await;
    let pages = read_pages(&store, &EventFilter::all(), 12).await;

    // PostgreSQL plans a statement's first five executions for their parameters, then
    // keeps the generic plan unless the custom plans looked cheaper.
    let (generic, custom) = plans(&db.pool, "LEFT JOIN LATERAL").await;
    assert!(
        generic >= 6,
        "the page statement: {generic} generic plans, {custom} custom plans in {pages} reads"
    );
    // `OFFSET 0` is the single-append statements' alone (one for a single event, one for
    // more: the twelve appends are of one event each).
    let (generic, custom) = writer_plans(&store, "OFFSET 0").await;
    assert!(
        generic >= 6,
        "the single-append statement: {generic} generic plans, {custom} custom plans in 12 appends"
    );
    db.drop_database().await;
}

/// What the test's session printed through sqlx's notices: `auto_explain`'s plans.
#[derive(Clone, Default)]
struct Notices(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Notices {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("notices").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Notices {
    /// A subscriber writing sqlx's notices here (sqlx hands them to `tracing`).
    fn subscriber(&self) -> impl tracing::Subscriber + Send + Sync {
        let notices = self.clone();
        tracing_subscriber::fmt()
            .with_writer(move || notices.clone())
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "sqlx::postgres::notice=info",
            ))
            .with_ansi(false)
            .without_time()
            .finish()
    }

    /// The plans printed so far, one per statement run, each with its query's text.
    fn plans(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.0.lock().expect("notices")).into_owned();
        text.split("duration: ")
            .skip(1)
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn every_page_walks_the_log_in_order_on_a_plan_kept_for_the_session() {
    let (db, store) = a_log_with_statistics().await;
    for setting in [
        // The plan of every statement the session runs, a function's own statements too, as
        // a notice.
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_level = notice",
        // Parallel plans made free, as on a log large enough for them: a generic plan costs
        // a page's `LIMIT` as a tenth of the log, and a page must still not start workers.
        "SET parallel_setup_cost = 0",
        "SET parallel_tuple_cost = 0",
        "SET min_parallel_index_scan_size = 0",
        "SET min_parallel_table_scan_size = 0",
    ] {
        sqlx::query(setting)
            .execute(&db.pool)
            .await
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
    }
    let notices = Notices::default();
    let capture = tracing::subscriber::set_default(notices.subscriber());
    // Filtered pages (through es_read_all_v4): 12 events of the 5,012 are in the category.
    let filtered = read_pages(&store, &EventFilter::all().categories(["plans"]), 12).await;
    let unfiltered = read_pages(&store, &EventFilter::all(), 12).await;
    drop(capture);

    // The page statements' plans, the unfiltered one's and the function's own statement's,
    // as (the statement's text, the plan itself): both statements end with `e ON true`.
    let plans: Vec<(String, String)> = notices
        .plans()
        .into_iter()
        .filter(|plan| plan.contains("FROM es_events ev"))
        .filter_map(|plan| {
            let (text, body) = plan.rsplit_once("e ON true")?;
            Some((text.to_owned(), body.to_owned()))
        })
        .collect();
    assert!(
        plans.len() >= filtered + unfiltered,
        "{} page plans printed for {filtered} + {unfiltered} reads",
        plans.len()
    );
    for (_, plan) in &plans {
        assert!(
            plan.contains("Index Scan using es_events_log_order")
                && !["Seq Scan", "Bitmap", "Sort  (", "Parallel", "Gather"]
                    .iter()
                    .any(|node| plan.contains(node)),
            "a page was not a walk of the primary key, on one process:\n{plan}"
        );
    }
    // The function's plan is the generic one from its first call: its parameters are still
    // `$n`, where a plan made for one call has their values in their place. (The unfiltered
    // statement's are read in subqueries, `$n` either way: the other test counts its generic
    // plans.)
    let function_plans: Vec<&String> = plans
        .iter()
        .filter(|(text, _)| text.contains("LIMIT p_limit"))
        .map(|(_, plan)| plan)
        .collect();
    assert!(!function_plans.is_empty(), "no filtered page's plan");
    for plan in function_plans {
        assert!(
            plan.contains("$1"),
            "a filtered page was planned for its values:\n{plan}"
        );
    }
    db.drop_database().await;
}
