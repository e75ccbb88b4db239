//! The errors of the toolkit's core: [`Error`] for stores and decoding, [`CommandError`] for
//! handling a command.

use uuid::Uuid;

use crate::command::CommandId;
use crate::stream::{ExpectedVersion, Position, StreamId};

/// A `Result` whose error is the core [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a store's backend, kept as the cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error and its causes in one line, `error: cause: cause's cause`, each said once (most
/// messages already end with their cause's).
///
/// ```
/// let io = std::io::Error::other("connection reset");
/// let error = cqrs_core::Error::Unavailable(Box::new(io));
/// assert_eq!(cqrs_core::error::chain(&error), error.to_string());
/// ```
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What can go wrong when writing to or reading from an event store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The stream's version was not what the writer expected; nothing was stored.
    #[error("concurrency conflict on stream `{stream}`: expected {expected}, but it is at version {actual}")]
    Conflict {
        /// The stream written to.
        stream: StreamId,
        /// What the writer expected.
        expected: ExpectedVersion,
        /// The stream's version when the append was refused.
        actual: u64,
    },

    /// An event id in the batch is already stored, but not as part of this same batch on
    /// this same stream (so the append is not a retry of one that succeeded); nothing was stored.
    #[error("event id {event_id} is already stored (in stream `{stored_in}`) and this append is not a retry of that write")]
    DuplicateEventId {
        /// The id that clashed.
        event_id: Uuid,
        /// The stream that already holds it.
        stored_in: StreamId,
    },

    /// A command id was used again for a command on another stream; nothing was stored.
    /// (The same id on the same stream is a repeat, answered with the original events.)
    #[error("command {command_id} was already carried out on stream `{stored_in}`: a command id names one command on one aggregate")]
    CommandReused {
        /// The command id.
        command_id: CommandId,
        /// The stream that holds its events.
        stored_in: StreamId,
    },

    /// The caller passed something the store cannot accept (an empty batch, a bad stream
    /// id, a limit of zero…); nothing was stored.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A stored event could not be turned into the caller's event type.
    #[error("cannot decode event `{event_type}` (schema v{schema_version}) at position {position}: {source}")]
    Decode {
        /// Where the event stands in the global log.
        position: Position,
        /// Its stored type name.
        event_type: String,
        /// Its stored schema version.
        schema_version: u32,
        /// Why decoding failed: an [`UpcastError`](crate::UpcastError) or the decoder's error.
        #[source]
        source: BoxError,
    },

    /// An event could not be encoded to JSON; nothing was stored.
    #[error("cannot encode event `{event_type}`: {source}")]
    Encode {
        /// The event's type name.
        event_type: String,
        /// Why encoding failed.
        #[source]
        source: BoxError,
    },

    /// A row in the store is not what the toolkit writes (for example a negative version).
    #[error("corrupt data at position {position}: {reason}")]
    Corrupt {
        /// Where the bad row stands.
        position: Position,
        /// What is wrong with it.
        reason: String,
    },

    /// The store could not be reached or the connection broke; the operation may be retried.
    /// For an append, the write may or may not have been stored: retrying with the same
    /// event ids is safe (it never stores them twice).
    #[error("event store unavailable: {0}")]
    Unavailable(#[source] BoxError),

    /// The log holds transaction ids at or above the server's next one: it was copied from a
    /// cluster whose transaction counter was ahead. New events would sort before the copied
    /// ones and readers past them would skip them, so the store refuses to read or write.
    #[error("the event log holds transaction id {newest}, at or above this server's next transaction id {next}: it was copied from a cluster whose transaction counter was ahead (pg_dump/restore, logical replication, a failover to a lagging standby), and new events would sort before it and be skipped by readers. Refusing to read or write. Fix: raise this cluster's transaction id epoch above the log's before it takes writes (pg_resetwal --epoch); see \"Moving a store between clusters\" in the eventstore-postgres docs")]
    LogAhead {
        /// The highest transaction id in the log.
        newest: u64,
        /// The server's next transaction id.
        next: u64,
    },

    /// Any other failure of the store's backend.
    #[error("event store backend error: {0}")]
    Backend(#[source] BoxError),
}

impl Error {
    /// Whether retrying the same call may succeed (the store was unreachable).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// Whether this is a concurrency [`Error::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }
}

/// Why a command was not carried out. In every case nothing of the command was stored.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError<E> {
    /// The aggregate refused the command (a rule of the domain).
    #[error("command rejected: {0}")]
    Rejected(#[source] E),

    /// The store failed or refused the write (a conflict that outlived its retries included).
    #[error(transparent)]
    Store(#[from] Error),
}

impl<E> CommandError<E> {
    /// Whether the command lost a race with another writer of the same aggregate.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_conflict())
    }
}
