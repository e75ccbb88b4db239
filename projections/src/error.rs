//! The errors of the read side.

use cqrs_core::Position;

/// A `Result` whose error is the projections [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What can go wrong while running, rebuilding or querying projections.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] cqrs_core::Error),

    /// The read-model database failed (a query refused, a constraint broken…).
    #[error("read-model storage error: {0}")]
    Storage(#[source] cqrs_core::BoxError),

    /// The read-model database could not be reached (connection refused or lost, server
    /// restarting, pool exhausted); trying again later may succeed.
    #[error("read-model storage unavailable: {0}")]
    Unavailable(#[source] cqrs_core::BoxError),

    /// A projection met a transient failure (its own or its storage's); trying again may succeed.
    #[error("transient failure: {0}")]
    Transient(#[source] cqrs_core::BoxError),

    /// Another worker took the lease or moved the checkpoint on since this worker read it:
    /// this worker must stand down; its batch was rolled back.
    #[error("projection `{projection}` lost its lease: another worker took it or moved the checkpoint on from {expected}")]
    LeaseLost {
        /// The projection.
        projection: String,
        /// The checkpoint the batch started from.
        expected: Position,
    },

    /// The batch's generation no longer plays its part: a rebuild switched a newer one in
    /// (for a live batch), or the rebuilt one was switched in or passed by (for a rebuild).
    /// Nothing of the batch was stored; the worker moves over to the active generation.
    #[error("projection `{projection}`: generation {generation} is no longer the one to write (the active one is {active})")]
    GenerationMoved {
        /// The projection.
        projection: String,
        /// The batch's generation.
        generation: u64,
        /// The active generation.
        active: u64,
    },

    /// A switch to a rebuilt generation would move the read model back behind the active
    /// one's checkpoint; the rebuild must read on first.
    #[error("projection `{projection}`: generation {generation} is at {rebuilt}, behind the active one at {active}")]
    RebuildBehind {
        /// The projection.
        projection: String,
        /// The rebuilt generation.
        generation: u64,
        /// Its checkpoint.
        rebuilt: Position,
        /// The active generation's checkpoint.
        active: Position,
    },

    /// A newer version of the projection built the active read model; this (older) code
    /// leaves it alone.
    #[error(
        "projection `{projection}` is run by version {active_version}; this is version {version}"
    )]
    Superseded {
        /// The projection.
        projection: String,
        /// This runner's version.
        version: u32,
        /// The version that built the active read model.
        active_version: u32,
    },

    /// No open dead letter of that event in that projection.
    #[error("projection `{projection}` has no open dead letter for event {event_id}")]
    NoDeadLetter {
        /// The projection.
        projection: String,
        /// The event.
        event_id: uuid::Uuid,
    },

    /// The projection stopped on an event it cannot handle (the default error policy).
    #[error(
        "projection `{projection}` failed at position {position} (event {event_id}): {reason}"
    )]
    Failed {
        /// The projection.
        projection: String,
        /// Where the event stands in the log.
        position: Position,
        /// The event's id.
        event_id: uuid::Uuid,
        /// Why it could not be applied.
        reason: String,
    },

    /// An operator paused the projection: its live worker begins no batch until it is
    /// resumed ([`ProjectionHost::resume`](crate::ProjectionHost::resume)).
    #[error("projection `{0}` is paused")]
    Paused(String),

    /// A projection with side effects cannot be rebuilt by replay.
    #[error("projection `{0}` has side effects and is never replayed")]
    NotReplayable(String),

    /// A projection name that is not 1 to 63 of `[a-z0-9_]` starting with a letter.
    #[error("invalid projection name {0:?}: use 1 to 63 of [a-z0-9_], starting with a letter")]
    InvalidName(String),

    /// No projection of that name is registered.
    #[error("unknown projection `{0}`")]
    UnknownProjection(String),

    /// A number does not fit where it goes (a stored negative where only naturals are
    /// written, or a value past a `bigint`): refused rather than clamped.
    #[error("number out of range: {0}")]
    OutOfRange(String),

    /// A document could not be (de)serialised.
    #[error("document `{collection}/{key}`: {source}")]
    Document {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// What went wrong (for JSON, the `serde_json::Error`).
        #[source]
        source: cqrs_core::BoxError,
    },
}

impl Error {
    /// Whether trying again later may succeed (a database or store was unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transient(_) => true,
            Self::Store(e) => e.is_retryable(),
            Self::Unavailable(_) => true,
            _ => false,
        }
    }
}
