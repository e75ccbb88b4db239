//! The projection scenarios on the in-memory store and target (the embedded default).

use std::sync::Arc;

use cqrs_core::conformance::{no_teardown, Teardown};
use cqrs_core::{EventStore, InMemoryEventStore};
use projections::MemoryTarget;

async fn fresh() -> (Arc<dyn EventStore>, MemoryTarget, Teardown) {
    (
        Arc::new(InMemoryEventStore::new()),
        MemoryTarget::new(),
        no_teardown(),
    )
}

projections::target_scenarios!(fresh);
