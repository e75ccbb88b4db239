//! Waiting for a read model to reach a position (read your own writes), driven by the
//! runners' progress.
//!
//! Runners announce on their target's [`ProgressBoard`] how far their read model has got,
//! so a waiter in the same process is woken by the runner itself. A waiter whose worker runs
//! in another process reads that one projection's checkpoint now and then instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use cqrs_core::Position;
use serde::Serialize;
use tokio::sync::watch;

use crate::error::Result;
use crate::target::{Failure, Target};

/// How often a waiter looks at the stored checkpoint when no runner of this process works
/// on the projection.
pub const POLL_WHEN_REMOTE: Duration = Duration::from_millis(100);

/// How far one projection's active read model has got, as the runners of this process last
/// said.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The generation the runners of this process last announced a position of.
    pub generation: u64,
    /// The furthest position a runner of this process has announced for [`generation`]:
    /// every event its filter matches up to it is in that generation's read model. It grows
    /// within a generation; a newer generation (a switch, or a reset that starts the model
    /// again) replaces it.
    ///
    /// [`generation`]: Progress::generation
    pub position: Position,
    /// Whether a runner of this process holds the projection's lease.
    pub local_worker: bool,
    /// Why the active read model stopped, as the runner of this process found while it
    /// held the lease (cleared when it gives the lease up).
    pub failure: Option<Failure>,
}

/// The runners' announcements, one channel per projection. Clones share it.
#[derive(Clone, Debug, Default)]
pub struct ProgressBoard {
    channels: Arc<Mutex<HashMap<String, watch::Sender<Progress>>>>,
}

impl ProgressBoard {
    fn channel(&self, name: &str) -> watch::Sender<Progress> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(name.to_owned())
            .or_insert_with(|| watch::Sender::new(Progress::default()))
            .clone()
    }

    /// Follows `name`'s progress.
    pub fn subscribe(&self, name: &str) -> watch::Receiver<Progress> {
        self.channel(name).subscribe()
    }

    /// Generation `generation` of the read model of `name` has got to `position`. What an
    /// older generation announces late is ignored.
    pub(crate) fn reached(&self, name: &str, generation: u64, position: Position) {
        self.channel(name).send_if_modified(|p| {
            let moved = generation > p.generation
                || (generation == p.generation && (position > p.position || p.failure.is_some()));
            if moved {
                if generation > p.generation {
                    p.generation = generation;
                    p.position = position;
                } else {
                    p.position = p.position.max(position);
                }
                p.failure = None;
            }
            moved
        });
    }

    /// The read model of `name` stopped at `failure`.
    pub(crate) fn failed(&self, name: &str, failure: &Failure) {
        self.channel(name)
            .send_modify(|p| p.failure = Some(failure.clone()));
    }

    /// A runner of this process took (`true`) or gave up (`false`) the lease of `name`. What
    /// it said of a failure goes with it: another worker may resolve the failure meanwhile.
    pub(crate) fn working(&self, name: &str, working: bool) {
        self.channel(name).send_if_modified(|p| {
            let changed = p.local_worker != working || (!working && p.failure.is_some());
            p.local_worker = working;
            if !working {
                p.failure = None;
            }
            changed
        });
    }
}

/// How a wait for a position ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum WaitOutcome {
    /// The read model holds every matching event up to the position.
    Reached {
        /// How far it has got.
        checkpoint: Position,
    },
    /// The time ran out with the read model still behind.
    TimedOut {
        /// How far it had got.
        checkpoint: Position,
    },
    /// The read model stopped on an event it cannot handle, before the position.
    Failed {
        /// Where and why.
        failure: Failure,
    },
}

impl WaitOutcome {
    /// Whether the position was reached.
    pub fn is_reached(&self) -> bool {
        matches!(self, Self::Reached { .. })
    }
}

/// Waits up to `timeout` until the active read model of `projection` holds every matching
/// event up to `position`. A projection not registered yet (its worker is starting) counts
/// as being at the start of the log; callers check the name themselves.
///
/// A runner of this process wakes the waiter the moment it gets there; when the worker runs
/// elsewhere, the stored checkpoint is read every [`POLL_WHEN_REMOTE`] (one row).
///
/// ```
/// # use std::time::Duration;
/// # use cqrs_core::Position;
/// # use projections::{MemoryTarget, Target, WaitOutcome};
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let target = MemoryTarget::new();
/// target.register("totals", 1).await.unwrap();
/// let outcome = projections::wait_for(&target, "totals", Position::new(5, 1), Duration::from_millis(10)).await.unwrap();
/// assert_eq!(outcome, WaitOutcome::TimedOut { checkpoint: Position::START });
/// # });
/// ```
pub async fn wait_for<T: Target>(
    target: &T,
    projection: &str,
    position: Position,
    timeout: Duration,
) -> Result<WaitOutcome> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut progress = target.progress().subscribe(projection);
    // The active generation and its checkpoint, as last read from the store.
    let mut stored = (0, Position::START);
    let mut check_store = true;
    loop {
        if check_store {
            // A projection whose worker has not registered it yet (it is starting) is at
            // the start of the log: wait for it like any other.
            if let Some(state) = target.state(projection).await? {
                stored = (state.active_generation, state.checkpoint.position);
                if let Some(failure) = state.checkpoint.failure {
                    if stored.1 < position {
                        return Ok(WaitOutcome::Failed { failure });
                    }
                }
            }
        }
        let announced = progress.borrow_and_update().clone();
        // Positions only compare within one generation: a newer one (switched in or reset
        // since the store was read) speaks for itself, an older one not at all.
        let known = match announced.generation.cmp(&stored.0) {
            std::cmp::Ordering::Greater => announced.position,
            std::cmp::Ordering::Equal => stored.1.max(announced.position),
            std::cmp::Ordering::Less => stored.1,
        };
        if known >= position {
            return Ok(WaitOutcome::Reached { checkpoint: known });
        }
        // Only the worker of this process speaks for the projection; otherwise the stored
        // state, read above, does.
        if let Some(failure) = announced.failure.filter(|_| announced.local_worker) {
            return Ok(WaitOutcome::Failed { failure });
        }
        let nap = if announced.local_worker {
            deadline.saturating_duration_since(tokio::time::Instant::now())
        } else {
            POLL_WHEN_REMOTE
        };
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(WaitOutcome::TimedOut { checkpoint: known });
            }
            changed = progress.changed() => {
                check_store = changed.is_err();
            }
            _ = tokio::time::sleep(nap) => check_store = true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryTarget;

    #[tokio::test]
    async fn a_projection_not_registered_yet_is_waited_for() {
        let target = MemoryTarget::new();
        let outcome = wait_for(
            &target,
            "starting",
            Position::new(1, 1),
            Duration::from_millis(20),
        )
        .await
        .unwrap();
        assert_eq!(
            outcome,
            WaitOutcome::TimedOut {
                checkpoint: Position::START
            }
        );
    }
}
