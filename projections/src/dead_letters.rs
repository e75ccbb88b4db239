//! Dead letters: the events a projection could not apply, one list per projection across
//! generations, each retried or skipped by an operator.
//!
//! - Under [`ErrorPolicy::DeadLetter`](crate::ErrorPolicy::DeadLetter) the event is
//!   **parked** and the projection goes on. Retrying it asks the live worker to apply it
//!   again (out of log order) at its next batch; skipping it closes it.
//! - Under [`ErrorPolicy::Stop`](crate::ErrorPolicy::Stop) the projection stops *at* the
//!   event (a **blocking** dead letter, its checkpoint just before it). Retrying it clears
//!   the failure, so the worker applies it again in order; skipping it moves the checkpoint
//!   past it, and the worker goes on with the next event.
//!
//! A rebuild that meets the same event again updates the same entry; nothing is listed twice.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::target::{Failure, Target};

/// Where a dead letter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterStatus {
    /// Waiting for an operator.
    Parked,
    /// A retry was asked for; the live worker has not done it yet.
    Retry,
    /// Applied after all (or, for a blocking one, handed back to the worker).
    Retried,
    /// Closed without applying it.
    Skipped,
}

impl DeadLetterStatus {
    /// The status's name in storage and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Parked => "parked",
            Self::Retry => "retry",
            Self::Retried => "retried",
            Self::Skipped => "skipped",
        }
    }

    /// The status stored as `text`.
    pub fn parse(text: &str) -> Result<Self> {
        Ok(match text {
            "parked" => Self::Parked,
            "retry" => Self::Retry,
            "retried" => Self::Retried,
            "skipped" => Self::Skipped,
            other => {
                return Err(crate::documents::document_error(
                    "dead letters",
                    "status",
                    format!("unknown status {other:?}"),
                ))
            }
        })
    }

    /// Whether an operator still has to deal with it.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Parked | Self::Retry)
    }
}

/// An event a projection could not apply, and what became of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The projection.
    pub projection: String,
    /// The generation whose worker last met it.
    pub generation: u64,
    /// The event and the error.
    pub failure: Failure,
    /// Whether the projection stopped at it (the stop policy) rather than passing it.
    pub blocking: bool,
    /// Where it stands.
    pub status: DeadLetterStatus,
    /// How many times applying it failed.
    pub attempts: u32,
    /// When it last failed.
    pub failed_at: DateTime<Utc>,
}

/// What an operator decides for a dead letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Apply it again.
    Retry,
    /// Close it without applying it.
    Skip,
}

/// Asks for the dead letter of `event_id` in `projection` to be retried. Errors with
/// [`Error::NoDeadLetter`] when there is no open one.
pub async fn retry<T: Target>(target: &T, projection: &str, event_id: Uuid) -> Result<()> {
    resolve(target, projection, event_id, Resolution::Retry).await
}

/// Closes the dead letter of `event_id` in `projection` without applying the event (a
/// blocking one: the projection goes on after it). Errors with [`Error::NoDeadLetter`] when
/// there is no open one.
pub async fn skip<T: Target>(target: &T, projection: &str, event_id: Uuid) -> Result<()> {
    resolve(target, projection, event_id, Resolution::Skip).await
}

async fn resolve<T: Target>(
    target: &T,
    projection: &str,
    event_id: Uuid,
    resolution: Resolution,
) -> Result<()> {
    if target
        .resolve_dead_letter(projection, event_id, resolution)
        .await?
    {
        Ok(())
    } else {
        Err(Error::NoDeadLetter {
            projection: projection.to_owned(),
            event_id,
        })
    }
}
