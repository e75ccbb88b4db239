//! [`Error`]: what can go wrong between the log, a broker and an inbox.

use uuid::Uuid;

/// A boxed error cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Messaging's errors, each with its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker could not be reached or dropped the connection. Transient: retried.
    #[error("cannot reach the {broker} broker: {source}")]
    Unreachable {
        /// Which broker (`rabbitmq`, `nats`, `kafka`, `channel`).
        broker: &'static str,
        /// What failed.
        #[source]
        source: BoxError,
    },

    /// The broker refused a message it will keep refusing (too large, not allowed).
    #[error("the {broker} broker refused message {message_id}: {reason}")]
    Refused {
        /// Which broker.
        broker: &'static str,
        /// The refused message.
        message_id: Uuid,
        /// Why, as the broker said.
        reason: String,
    },

    /// A message that is not a CloudEvent in the toolkit's wire format.
    #[error("not a message of the wire format: {0}")]
    Wire(String),

    /// A broker URL, name or option that cannot work.
    #[error("invalid messaging configuration: {0}")]
    Config(String),

    /// The consumer's lease was taken by another instance: this one stops applying.
    #[error("consumer `{consumer}` lost its lease (epoch {epoch})")]
    LeaseLost {
        /// The consumer.
        consumer: String,
        /// The epoch it held.
        epoch: u64,
    },

    /// The inbox's database failed.
    #[error("inbox storage: {0}")]
    Inbox(#[source] sqlx::Error),

    /// A handler failed on a message and will be given it again (a transient failure, or a
    /// poison message under the stop policy).
    #[error("consumer `{consumer}` cannot apply message {message_id} ({situation}): {source}")]
    Handler {
        /// The consumer.
        consumer: String,
        /// The message.
        message_id: String,
        /// When it failed: what the consumer does about it.
        situation: &'static str,
        /// The handler's error (boxed to keep `Result`s small: match this variant to reach
        /// it, since `source()` gives the `Box`).
        #[source]
        source: Box<projections::ApplyError>,
    },

    /// The event store failed.
    #[error(transparent)]
    Store(#[from] cqrs_core::Error),

    /// The projections layer (checkpoints, leases) failed.
    #[error(transparent)]
    Projections(#[from] projections::Error),
}

impl Error {
    /// An unreachable-broker error from any cause.
    pub fn unreachable(broker: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unreachable {
            broker,
            source: source.into(),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::LeaseLost { .. } => true,
            Self::Inbox(e) => eventstore_postgres::is_transient(e),
            Self::Handler { .. } => true,
            Self::Store(e) => e.is_retryable(),
            Self::Projections(e) => e.is_transient(),
            Self::Refused { .. } | Self::Wire(_) | Self::Config(_) => false,
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        Self::Inbox(error)
    }
}

/// Messaging's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
