//! The store conformance suite against the in-memory store.

use std::sync::Arc;

use cqrs_core::conformance::{no_teardown, Teardown};
use cqrs_core::{EventStore, InMemoryEventStore};

async fn fresh_store() -> (Arc<dyn EventStore>, Teardown) {
    (Arc::new(InMemoryEventStore::new()), no_teardown())
}

cqrs_core::store_conformance_tests!(fresh_store);
