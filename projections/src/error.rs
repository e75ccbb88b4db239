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

    /// The read-model database failed (connection lost, query refused…).
    #[error("read-model storage error: {0}")]
    Storage(#[source] cqrs_core::BoxError),

    /// A projection met a transient failure (its own or its storage's); trying again may succeed.
    #[error("transient failure: {0}")]
    Transient(String),

    /// Another worker moved the checkpoint on since this worker read it: this worker lost its
    /// lease and must stand down; its batch was rolled back.
    #[error("projection `{projection}` lost its lease: the checkpoint moved on from {expected}")]
    LeaseLost {
        /// The projection.
        projection: String,
        /// The checkpoint the batch started from.
        expected: Position,
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

    /// A projection with side effects cannot be rebuilt by replay.
    #[error("projection `{0}` has side effects and is never replayed")]
    NotReplayable(String),

    /// A projection name that is not 1 to 63 of `[a-z0-9_]` starting with a letter.
    #[error("invalid projection name {0:?}: use 1 to 63 of [a-z0-9_], starting with a letter")]
    InvalidName(String),

    /// No projection of that name is registered.
    #[error("unknown projection `{0}`")]
    UnknownProjection(String),

    /// A document could not be (de)serialised.
    #[error("document `{collection}/{key}`: {reason}")]
    Document {
        /// The collection.
        collection: String,
        /// The key.
        key: String,
        /// What went wrong.
        reason: String,
    },
}

impl Error {
    /// Whether trying again later may succeed (a database or store was unreachable).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Transient(_) => true,
            Self::Store(e) => e.is_retryable(),
            Self::Storage(e) => e
                .downcast_ref::<sqlx::Error>()
                .is_some_and(eventstore_postgres::is_transient),
            _ => false,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Storage(Box::new(error))
    }
}
