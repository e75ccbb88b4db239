//! How `sqlx` errors become the core [`Error`]: connection trouble is retryable
//! ([`Error::Unavailable`]), everything else a [`Error::Backend`] with its cause.

use cqrs_core::Error;

/// The name of the constraint that keeps event ids unique.
pub(crate) const EVENT_ID_UNIQUE: &str = "es_events_event_id_unique";
/// The name of the constraint that keeps (stream, version) unique: the last line of defence
/// behind the stream lock.
pub(crate) const STREAM_VERSION_UNIQUE: &str = "es_events_stream_version_unique";

/// Maps a `sqlx` error to the core error, keeping it as the cause.
pub(crate) fn from_sqlx(error: sqlx::Error) -> Error {
    if is_transient(&error) {
        Error::Unavailable(Box::new(error))
    } else {
        Error::Backend(Box::new(error))
    }
}

/// Whether the error means "the database could not be reached or went away": worth retrying.
pub fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // 08: connection exception; 57P01..57P03: shutdown / cannot connect now;
            // 57P05: the session sat idle longer than idle_session_timeout and was ended;
            // 53300: too many connections; 40001/40P01: serialization failure / deadlock;
            // 25P03: the session sat idle in its transaction too long and was ended.
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "57P05" | "53300" | "40001" | "40P01" | "25P03"
                )
        }),
        _ => false,
    }
}

/// The name of the constraint a database error violated, if any.
pub(crate) fn violated_constraint(error: &sqlx::Error) -> Option<&str> {
    match error {
        sqlx::Error::Database(db) => db.constraint(),
        _ => None,
    }
}
