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

/// A projection that sends something for every event: a replay would send it all again.
struct Notifier;

#[async_trait::async_trait]
impl projections::Projection for Notifier {
    fn name(&self) -> &str {
        "notifier"
    }

    fn has_side_effects(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        _docs: &mut dyn projections::Documents,
        _event: &cqrs_core::RecordedEvent,
    ) -> Result<(), projections::ApplyError> {
        Ok(())
    }
}

#[tokio::test]
async fn the_host_resets_no_projection_with_side_effects_but_pauses_any() {
    let host =
        projections::ProjectionHost::new(Arc::new(InMemoryEventStore::new()), MemoryTarget::new())
            .with_projection(Notifier);
    assert!(matches!(
        host.reset("notifier").await,
        Err(projections::Error::NotReplayable(name)) if name == "notifier"
    ));
    host.pause("notifier")
        .await
        .expect("a projection no worker ran yet can be paused");
    let status = host.status().await.expect("status");
    assert_eq!(status[0].state, projections::ProjectionState::Paused);
    host.resume("notifier").await.expect("resume");
    assert!(matches!(
        host.reset("other").await,
        Err(projections::Error::UnknownProjection(_))
    ));
}
