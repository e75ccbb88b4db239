//! Status and lag of every projection, for operators (the demo serves it over HTTP and
//! prints it from its CLI).

use chrono::Utc;
use cqrs_core::{EventStore, Position};
use serde::Serialize;

use crate::error::Result;
use crate::target::{Failure, Target};

/// What a projection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// Caught up (or nearly) and following the log.
    Running,
    /// Far behind the head of the log.
    CatchingUp,
    /// Stopped on an event it cannot handle.
    Failed,
    /// A new generation is being built by replay.
    Rebuilding,
}

/// One projection's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProjectionStatus {
    /// Its name.
    pub name: String,
    /// The projection version that built the active read model.
    pub version: u32,
    /// The generation of the read model queries read.
    pub generation: u64,
    /// What it is doing.
    pub state: ProjectionState,
    /// Its checkpoint.
    pub checkpoint: String,
    /// The head of the log.
    pub head: String,
    /// Events behind the head (estimated from event sequences; the log's own order is by
    /// commit, then sequence).
    pub lag_events: u64,
    /// Seconds since the newest event it applied was recorded, while it is behind; 0 when
    /// caught up.
    pub lag_seconds: f64,
    /// The failure that stopped it, if any.
    pub last_error: Option<String>,
    /// Where the failure is in the log.
    pub error_position: Option<String>,
    /// How far a rebuild under way has got (0 to 1).
    pub rebuild_progress: Option<f64>,
}

/// Events behind beyond which a running projection counts as catching up.
pub const CATCHING_UP_LAG: u64 = 1_000;

fn lag(checkpoint: Position, head: Position) -> u64 {
    if checkpoint >= head {
        0
    } else {
        head.sequence.saturating_sub(checkpoint.sequence).max(1)
    }
}

/// The status of every projection registered in `target`.
pub async fn status<T: Target>(
    store: &dyn EventStore,
    target: &T,
) -> Result<Vec<ProjectionStatus>> {
    let head = store.head().await?;
    let now = Utc::now();
    Ok(target
        .states()
        .await?
        .into_iter()
        .map(|s| {
            let lag_events = lag(s.checkpoint.position, head);
            let lag_seconds = match (lag_events, s.checkpoint.last_recorded_at) {
                (0, _) => 0.0,
                (_, Some(at)) => (now - at).num_milliseconds().max(0) as f64 / 1_000.0,
                (_, None) => 0.0,
            };
            let state = match (&s.failure, &s.rebuilding) {
                (Some(_), _) => ProjectionState::Failed,
                (None, Some(_)) => ProjectionState::Rebuilding,
                _ if lag_events > CATCHING_UP_LAG => ProjectionState::CatchingUp,
                _ => ProjectionState::Running,
            };
            let rebuild_progress = s.rebuilding.as_ref().map(|(_, c)| {
                if head.sequence == 0 {
                    1.0
                } else {
                    (c.position.sequence as f64 / head.sequence as f64).min(1.0)
                }
            });
            ProjectionStatus {
                name: s.name,
                version: s.checkpoint.version,
                generation: s.active_generation,
                state,
                checkpoint: s.checkpoint.position.to_string(),
                head: head.to_string(),
                lag_events,
                lag_seconds,
                last_error: s.failure.as_ref().map(|f: &Failure| f.error.clone()),
                error_position: s.failure.as_ref().map(|f| f.position.to_string()),
                rebuild_progress,
            }
        })
        .collect())
}

/// Clears a projection's failure so that its runner may start again (after the projection
/// was fixed, or the event dealt with). The checkpoint is unchanged: the failed event is
/// the next one applied.
pub async fn clear_failure<T: Target>(target: &T, name: &str) -> Result<()> {
    target.set_failure(name, None).await
}
