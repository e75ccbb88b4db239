//! The [`Projection`] trait: how events become a read model.

use async_trait::async_trait;
use cqrs_core::{EventFilter, RecordedEvent};

use crate::documents::Documents;

/// Why a projection could not apply an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// This event cannot be handled (malformed, unknown, against the model's rules). Trying
    /// again will not help; the error policy decides: stop, or dead-letter and go on.
    #[error(transparent)]
    Poison(cqrs_core::BoxError),

    /// Something outside failed (a database, a broker); the runner retries with backoff.
    #[error("transient: {0}")]
    Transient(#[source] cqrs_core::BoxError),

    /// The read model's storage failed.
    #[error(transparent)]
    Storage(#[from] crate::Error),
}

impl ApplyError {
    /// A poison error from anything printable (an error keeps only its text: use
    /// [`ApplyError::poison_from`] to keep it as the cause).
    pub fn poison(reason: impl std::fmt::Display) -> Self {
        Self::Poison(reason.to_string().into())
    }

    /// A poison error caused by `error`, kept as the source.
    pub fn poison_from(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Poison(Box::new(error))
    }

    /// A transient error caused by `error` (a `String` or `&str` will do), kept as the source.
    pub fn transient(error: impl Into<cqrs_core::BoxError>) -> Self {
        Self::Transient(error.into())
    }
}

impl From<cqrs_core::Error> for ApplyError {
    fn from(error: cqrs_core::Error) -> Self {
        match error {
            e @ cqrs_core::Error::Decode { .. } => Self::Poison(Box::new(e)),
            e if e.is_retryable() => Self::Transient(Box::new(e)),
            e => Self::Storage(crate::Error::Store(e)),
        }
    }
}

/// Builds one read model from the events of the global log.
///
/// The runner hands each matching event, in log order, to [`apply`](Projection::apply) along
/// with the batch's [`Documents`]; it commits the batch's writes and the checkpoint together,
/// so each event takes effect exactly once.
///
/// ```
/// use async_trait::async_trait;
/// use cqrs_core::{EventFilter, RecordedEvent};
/// use projections::{ApplyError, Documents, DocumentsExt, Projection};
///
/// /// How many events of each type were recorded.
/// struct EventCounts;
///
/// #[async_trait]
/// impl Projection for EventCounts {
///     fn name(&self) -> &str { "event_counts" }
///
///     async fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), ApplyError> {
///         let key = &event.event.event_type;
///         let count: u64 = docs.load("counts", key).await?.unwrap_or(0);
///         docs.save("counts", key, &(count + 1)).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// A stable name: the key of its checkpoint and read model. Lowercase letters, digits
    /// and `_`.
    fn name(&self) -> &str;

    /// The version of its code; raising it means "rebuild my read model".
    fn version(&self) -> u32 {
        1
    }

    /// Which events it wants; the store filters in SQL.
    fn filter(&self) -> EventFilter {
        EventFilter::all()
    }

    /// `true` for a handler with side effects (sending commands, publishing to a broker):
    /// it keeps a durable checkpoint like any projection but is never replayed by a rebuild.
    fn has_side_effects(&self) -> bool {
        false
    }

    /// Applies one event to the read model.
    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError>;
    /// Applies one page of events, in log order, within one batch: by default each in turn
    /// with [`apply`](Projection::apply), in a debug-level `apply` span with the event's
    /// trace, correlation and causation ids. A handler that does better with the whole page
    /// overrides it — a relay publishes the page with pipelined broker confirms rather than
    /// one round trip per event.
    ///
    /// On failure it names the event that failed (its index in `events`) and why. The runner
    /// then rolls the batch back and applies the events before it again in a fresh batch, so
    /// an override must accept being given the same events again.
    async fn apply_batch(
        &self,
        docs: &mut dyn Documents,
        events: &[RecordedEvent],
    ) -> Result<(), (usize, ApplyError)> {
        for (i, event) in events.iter().enumerate() {
            // Each event in the trace it carries (at debug level: off by default, and then
            // `record_on` parses nothing).
            let span = tracing::debug_span!(
                "apply",
                projection = self.name(),
                event_type = %event.event.event_type,
                position = %event.position,
                trace_id = tracing::field::Empty,
                correlation_id = tracing::field::Empty,
                causation_id = tracing::field::Empty,
            );
            cqrs_core::trace::record_on(&span, &event.metadata);
            tracing::Instrument::instrument(self.apply(docs, event), span)
                .await
                .map_err(|e| (i, e))?;
        }
        Ok(())
    }
}

/// Checks a projection's name: 1 to 63 of `[a-z0-9_]`, starting with a letter.
pub fn check_name(name: &str) -> crate::Result<()> {
    let ok = (1..=63).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(crate::Error::InvalidName(name.to_owned()))
    }
}
