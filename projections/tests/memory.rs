//! The projection scenarios on the in-memory store and target (the embedded default).

use projections::testing as common;

use std::sync::Arc;

use cqrs_core::{EventStore, InMemoryEventStore};
use projections::MemoryTarget;

fn fresh() -> (Arc<dyn EventStore>, MemoryTarget) {
    (Arc::new(InMemoryEventStore::new()), MemoryTarget::new())
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let (store, target) = fresh();
            common::$name(store, target).await;
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
    an_interrupted_rebuild_resumes_and_ends_correct,
    a_rebuild_under_live_traffic_loses_nothing,
);
