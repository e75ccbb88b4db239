//! Run with: cargo run -p projections --example live_counter
//!
//! A projection following the log live, in memory: events appended while it runs show up
//! in its read model, the status reports its lag, and a rebuild by replay ends identical.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, InMemoryEventStore, Metadata, NewEvent,
    RecordedEvent, StreamId,
};
use projections::{
    status, ApplyError, Documents, DocumentsExt, MemoryTarget, Projection, ProjectionRunner, Target,
};

/// Sums the `amount` of every `Added` event, per stream.
struct Totals;

#[async_trait]
impl Projection for Totals {
    fn name(&self) -> &str {
        "totals"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["Added"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let amount = event.event.payload["amount"]
            .as_u64()
            .ok_or_else(|| ApplyError::poison("an Added event without an amount"))?;
        let key = event.stream_id.as_str();
        let total: u64 = docs.load("totals", key).await?.unwrap_or(0);
        docs.save("totals", key, &(total + amount)).await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
    let target = MemoryTarget::new();
    let runner = ProjectionRunner::new(Arc::clone(&store), target.clone(), Arc::new(Totals));

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let runner = runner.clone();
        tokio::spawn(async move {
            runner
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };

    for (stream, amount) in [("till-1", 5), ("till-2", 7), ("till-1", 3)] {
        let event = NewEvent::from_domain(&TestEvent::Added { amount })?;
        store
            .append(
                &StreamId::new(stream)?,
                ExpectedVersion::Any,
                vec![event],
                &Metadata::new_request(),
            )
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let live = target.list("totals", "totals").await?;
    println!("live read model: {live:?}");
    for s in status(store.as_ref(), &target).await? {
        println!(
            "{}: {:?}, checkpoint {}, lag {} events",
            s.name, s.state, s.checkpoint, s.lag_events
        );
    }

    let _ = stop.send(());
    worker.await??;
    let report = runner
        .rebuild(|p| println!("rebuild: {}/{} events", p.done, p.total))
        .await?;
    let rebuilt = target.list("totals", "totals").await?;
    println!(
        "rebuilt into generation {}: identical = {}",
        report.generation,
        rebuilt == live
    );
    Ok(())
}
