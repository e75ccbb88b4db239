//! [`Relay`]: publishes the event log to a broker, with the log as the outbox.
//!
//! A relay is a [`Projection`] with side effects, run by a [`ProjectionRunner`]: it reads
//! the global log from its checkpoint (a log position, kept by the projections
//! [`Target`]), publishes each page of events and waits for the broker to confirm every
//! one, and only then commits the new checkpoint. So:
//! - there is no outbox table: the log is the outbox, and the checkpoint is how far it has
//!   been sent;
//! - one relay per destination is active at a time, through the runner's lease; a standby
//!   takes over when it dies or freezes, and the epoch fences the deposed one's commits;
//! - after a crash, what was published but not yet checkpointed is sent again, with the
//!   same message id: the broker (JetStream) or the consumer's inbox drops the copy;
//! - events go out in log order, so the events of one stream arrive in order.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::{EventFilter, EventStore, RecordedEvent};
use projections::{
    ApplyError, Documents, ErrorPolicy, Projection, ProjectionRunner, RunnerOptions, Target,
};

use crate::broker::Publisher;
use crate::cloud_event::CloudEvent;

/// Events a relay publishes per page (and per confirmed batch).
pub const DEFAULT_PAGE: usize = 500;

/// Publishes the events of the log that match its filter to one destination.
///
/// ```no_run
/// # async fn example(store: std::sync::Arc<dyn cqrs_core::EventStore>, pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use messaging::{Broker, RabbitMq, Relay};
/// use projections::PgTarget;
///
/// let broker = RabbitMq::new("amqp://guest:guest@127.0.0.1:5672/%2f");
/// let relay = Relay::new("relay_orders", "urn:demo:shop", broker.publisher().await?)
///     .with_filter(cqrs_core::EventFilter::all().categories(["order"]));
/// let target = PgTarget::new(pool);
/// target.migrate().await?;
/// relay.runner(store, target).run(std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub struct Relay {
    name: String,
    source: String,
    filter: EventFilter,
    publisher: Arc<dyn Publisher>,
}

impl Relay {
    /// A relay named `name` (its checkpoint and lease; `[a-z0-9_]`), publishing as `source`
    /// (the CloudEvents `source`, e.g. `urn:demo:shop`) through `publisher`.
    pub fn new(
        name: impl Into<String>,
        source: impl Into<String>,
        publisher: Arc<dyn Publisher>,
    ) -> Self {
        Self {
            name: name.into(),
            source: source.into(),
            filter: EventFilter::all(),
            publisher,
        }
    }

    /// Publishes only the events `filter` matches (filtered in SQL by the store).
    pub fn with_filter(mut self, filter: EventFilter) -> Self {
        self.filter = filter;
        self
    }

    /// The runner options a relay works best with: pages of [`DEFAULT_PAGE`] events, and a
    /// stop at a message the broker refuses for good (an operator skips or retries it with
    /// the projections' dead-letter tools; nothing after it is sent meanwhile, so order
    /// holds).
    pub fn options() -> RunnerOptions {
        RunnerOptions {
            effect_batch_size: DEFAULT_PAGE,
            error_policy: ErrorPolicy::Stop,
            ..RunnerOptions::default()
        }
    }

    /// A runner for this relay over `store`, keeping its checkpoint and lease in `target`,
    /// with [`Relay::options`].
    pub fn runner<T: Target>(self, store: Arc<dyn EventStore>, target: T) -> ProjectionRunner<T> {
        ProjectionRunner::new(store, target, Arc::new(self)).with_options(Self::options())
    }
}

#[async_trait]
impl Projection for Relay {
    fn name(&self) -> &str {
        &self.name
    }

    fn filter(&self) -> EventFilter {
        self.filter.clone()
    }

    fn has_side_effects(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        self.apply_batch(docs, std::slice::from_ref(event))
            .await
            .map_err(|(_, error)| error)
    }

    async fn apply_batch(
        &self,
        docs: &mut dyn Documents,
        events: &[RecordedEvent],
    ) -> Result<(), (usize, ApplyError)> {
        // A deposed relay sends nothing more (what it sent before is only a copy).
        if let Some(lease) = docs.lease() {
            lease.ensure_live().map_err(|e| (0, e))?;
        }
        let wire: Vec<CloudEvent> = events
            .iter()
            .map(|event| CloudEvent::from_recorded(event, &self.source))
            .collect();
        self.publisher.publish(&wire).await.map_err(|(i, error)| {
            let error = if error.is_transient() {
                ApplyError::transient(error)
            } else {
                ApplyError::poison_from(error)
            };
            (i, error)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use cqrs_core::{ExpectedVersion, InMemoryEventStore, Metadata, NewEvent, RawEvent, StreamId};
    use projections::MemoryTarget;

    /// Refuses the events marked `big`, reporting the last one it was given first (as a
    /// publisher sending in waves can: b1 goes out in the first wave, a2 in the second).
    struct RefusesBig;

    #[async_trait]
    impl Publisher for RefusesBig {
        async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, Error)> {
            match events.iter().rposition(|e| e.data["big"] == true) {
                Some(i) => Err((
                    i,
                    Error::Refused {
                        broker: "test",
                        message_id: events[i].id,
                        reason: "too large".into(),
                    },
                )),
                None => Ok(()),
            }
        }
    }

    #[tokio::test]
    async fn a_relay_stops_at_the_first_refused_event_of_a_page() {
        let store = Arc::new(InMemoryEventStore::new());
        let append = |stream: &'static str, big: bool| {
            let store = Arc::clone(&store);
            async move {
                let event = NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    data: RawEvent {
                        event_type: "T".into(),
                        schema_version: 1,
                        payload: serde_json::json!({ "big": big }),
                    },
                };
                store
                    .append(
                        &StreamId::new(stream).unwrap(),
                        ExpectedVersion::Any,
                        vec![event],
                        &Metadata::default(),
                    )
                    .await
                    .unwrap()
                    .positions[0]
            }
        };
        append("a-1", false).await;
        let first_refused = append("a-1", true).await;
        append("b-1", true).await;
        let relay = Relay::new("relay", "urn:test", Arc::new(RefusesBig));
        let caught_up = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            relay
                .runner(store, MemoryTarget::new())
                .run_until_caught_up(),
        )
        .await
        .expect("the relay stops rather than retrying for ever");
        match caught_up {
            Err(projections::Error::Failed { position, .. }) => assert_eq!(position, first_refused),
            other => panic!("{other:?}"),
        }
    }
}
