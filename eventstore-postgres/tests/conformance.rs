//! The cqrs-core store conformance suite against `PgEventStore`, one database per test.

use std::sync::Arc;

use cqrs_core::conformance::Teardown;
use cqrs_core::EventStore;
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;

async fn fresh_store() -> (Arc<dyn EventStore>, Teardown) {
    let db = TestDatabase::create(40).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrations apply");
    (Arc::new(store), Box::pin(db.drop_database()))
}

cqrs_core::store_conformance_tests!(fresh_store);
