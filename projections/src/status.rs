//! Status and lag of every projection, for operators (the demo serves it over HTTP and
//! prints it from its CLI).

use chrono::Utc;
use cqrs_core::{EventStore, HorizonBlocker};
use serde::Serialize;

use crate::error::Result;
use crate::target::{Failure, Target};

/// What a projection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ProjectionState {
    /// Caught up (or nearly) and following the log.
    Running,
    /// Far behind the head of the log.
    CatchingUp,
    /// Caught up with what readers can see, while committed events are held back by an open
    /// transaction elsewhere ([`ProjectionStatus::blocked_by`] names it).
    Stalled,
    /// Stopped on an event it cannot handle.
    Failed,
    /// A new generation is being built by replay.
    Rebuilding,
    /// Paused by an operator: its worker holds the lease and applies nothing until resumed
    /// (a rebuild under way goes on). A failed projection that is also paused reads
    /// [`Failed`](Self::Failed); [`ProjectionStatus::paused_at`] tells of the pause.
    Paused,
}

impl ProjectionState {
    /// Every state, in the order of the enum.
    pub const ALL: [Self; 6] = [
        Self::Running,
        Self::CatchingUp,
        Self::Stalled,
        Self::Failed,
        Self::Rebuilding,
        Self::Paused,
    ];

    /// The state's name as it is serialised (`catching_up`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::CatchingUp => "catching_up",
            Self::Stalled => "stalled",
            Self::Failed => "failed",
            Self::Rebuilding => "rebuilding",
            Self::Paused => "paused",
        }
    }
}

/// One projection's status.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Events of the log after its checkpoint: those readers can see (counted, at most
    /// [`LAG_COUNT_LIMIT`]) plus those held back. Events its filter rejects count until its
    /// next idle checkpoint (a second at most, by default).
    pub lag_events: u64,
    /// Committed events no reader can see yet, held back by an open transaction.
    pub held_back_events: u64,
    /// Seconds since the newest event it applied was recorded, while it is behind; 0 when
    /// caught up.
    pub lag_seconds: f64,
    /// The open transactions holding readers back, while it is stalled.
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<Object>))]
    pub blocked_by: Vec<HorizonBlocker>,
    /// Who holds its lease (`pid@host`), if anyone does.
    pub lease_holder: Option<String>,
    /// The lease's epoch: higher for every new holder.
    pub lease_epoch: Option<u64>,
    /// The failure that stopped it, if any.
    pub last_error: Option<String>,
    /// Where the failure is in the log.
    pub error_position: Option<String>,
    /// The event the failure is about.
    pub error_event_id: Option<uuid::Uuid>,
    /// How far a rebuild under way has got (0 to 1).
    pub rebuild_progress: Option<f64>,
    /// Since when an operator has paused it, if they have.
    pub paused_at: Option<chrono::DateTime<Utc>>,
}

/// Events behind beyond which a running projection counts as catching up.
pub const CATCHING_UP_LAG: u64 = 1_000;

/// The most events counted for one projection's lag.
pub const LAG_COUNT_LIMIT: u64 = 1_000_000;

/// How long an open transaction must have held readers back before a caught-up projection
/// counts as stalled (an append in flight holds them back for a moment, as a rule).
pub const STALLED_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

/// The status of every projection registered in `target`.
pub async fn status<T: Target>(
    store: &dyn EventStore,
    target: &T,
) -> Result<Vec<ProjectionStatus>> {
    let head = store.head().await?;
    let horizon = store.horizon().await?;
    let stalled = horizon.is_stalled()
        && horizon
            .blockers
            .iter()
            .any(|b| b.transaction_age.is_none_or(|age| age >= STALLED_AFTER));
    let now = Utc::now();
    let mut statuses = Vec::new();
    for s in target.states().await? {
        let readable_lag = store
            .count_after(s.checkpoint.position, LAG_COUNT_LIMIT)
            .await?;
        let lag_events = readable_lag + horizon.held_back;
        // Seconds behind only for a backlog this projection can read: events held back
        // elsewhere, or rejected by its filter, say nothing of its own delay.
        let lag_seconds = match (readable_lag, s.checkpoint.last_recorded_at) {
            (0, _) => 0.0,
            (_, Some(at)) => (now - at).num_milliseconds().max(0) as f64 / 1_000.0,
            (_, None) => 0.0,
        };
        // A rebuild stopped at an event is a failure too, the operator's to retry or skip.
        let rebuild_failure = s.rebuilding.as_ref().and_then(|(_, c)| c.failure.as_ref());
        let failure: Option<&Failure> = s.failure().or(rebuild_failure);
        let state = match (failure, &s.rebuilding) {
            (Some(_), _) => ProjectionState::Failed,
            _ if s.paused_at.is_some() => ProjectionState::Paused,
            (None, Some(_)) => ProjectionState::Rebuilding,
            _ if readable_lag > CATCHING_UP_LAG => ProjectionState::CatchingUp,
            _ if stalled => ProjectionState::Stalled,
            _ => ProjectionState::Running,
        };
        let rebuild_progress = s.rebuilding.as_ref().map(|(_, c)| {
            if head.sequence == 0 {
                1.0
            } else {
                (c.position.sequence as f64 / head.sequence as f64).min(1.0)
            }
        });
        statuses.push(ProjectionStatus {
            version: s.checkpoint.version,
            generation: s.active_generation,
            state,
            checkpoint: s.checkpoint.position.to_string(),
            head: head.to_string(),
            lag_events,
            held_back_events: horizon.held_back,
            lag_seconds,
            blocked_by: if state == ProjectionState::Stalled {
                horizon.blockers.clone()
            } else {
                Vec::new()
            },
            lease_holder: s
                .lease
                .as_ref()
                .filter(|l| l.live)
                .map(|l| l.holder.clone()),
            lease_epoch: s.lease.as_ref().map(|l| l.epoch),
            last_error: failure.map(|f| f.error.clone()),
            error_position: failure.map(|f| f.position.to_string()),
            error_event_id: failure.map(|f| f.event_id),
            rebuild_progress,
            paused_at: s.paused_at,
            name: s.name,
        });
    }
    Ok(statuses)
}

#[cfg(test)]
mod tests {
    use super::ProjectionState;

    /// `as_str` names each state as it is serialised (the console reads both).
    #[test]
    fn each_state_is_named_as_it_is_serialised() {
        for state in ProjectionState::ALL {
            assert_eq!(
                serde_json::to_value(state).expect("serialise"),
                serde_json::json!(state.as_str())
            );
        }
    }
}
