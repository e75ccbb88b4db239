//! The projection scenarios on PostgreSQL: `PgEventStore` and `PgTarget` in one fresh
//! database per test.

use projections::testing as common;

use std::sync::Arc;

use cqrs_core::EventStore;
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use projections::PgTarget;

async fn fresh() -> (Arc<dyn EventStore>, PgTarget, TestDatabase) {
    let db = TestDatabase::create(12).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("store migrations");
    let target = PgTarget::new(db.pool.clone());
    target.migrate().await.expect("projection migrations");
    (Arc::new(store), target, db)
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, target, db) = fresh().await;
            common::$name(store, target).await;
            db.drop_database().await;
        }
    )*};
}

scenarios!(
    builds_the_read_model_exactly_once,
    follows_the_log_and_shuts_down,
    poison_stops_with_its_position,
    poison_is_dead_lettered,
    rebuild_equals_the_live_model,
    a_new_version_is_rebuilt,
    a_stale_worker_cannot_overwrite_progress,
);
