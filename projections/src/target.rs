//! [`Target`]: where a projection's read model, checkpoints, lease and dead letters live. Two
//! are provided: [`PgTarget`](crate::PgTarget) and [`MemoryTarget`](crate::MemoryTarget).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::dead_letters::{DeadLetter, Resolution};
use crate::documents::Documents;
use crate::error::Result;
use crate::lease::{LeaseInfo, LeaseToken};
use crate::progress::ProgressBoard;

/// How far one generation of a read model has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every matching event at or before this position is in the read model.
    pub position: Position,
    /// The projection version that built this generation.
    pub version: u32,
    /// When the last applied event was recorded (for lag in seconds).
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// The event this generation stopped at, if it did (the stop policy). A failure belongs
    /// to the generation whose worker met it.
    pub failure: Option<Failure>,
}

impl Checkpoint {
    /// A fresh generation's checkpoint: the start of the log, built by `version`.
    pub fn start(version: u32) -> Self {
        Self {
            position: Position::START,
            version,
            last_recorded_at: None,
            failure: None,
        }
    }
}

/// Which generation queries read, and how it is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredState {
    /// The projection's name.
    pub name: String,
    /// The generation of the read model queries read.
    pub active_generation: u64,
    /// Its checkpoint (and failure, if it stopped).
    pub checkpoint: Checkpoint,
    /// The newest generation being rebuilt, and its checkpoint, if a rebuild is under way or
    /// was interrupted.
    pub rebuilding: Option<(u64, Checkpoint)>,
    /// Who holds the projection's lease, if anyone.
    pub lease: Option<LeaseInfo>,
    /// Since when an operator has paused it, if they have.
    pub paused_at: Option<DateTime<Utc>>,
}

impl StoredState {
    /// Why the active generation stopped, if it did.
    pub fn failure(&self) -> Option<&Failure> {
        self.checkpoint.failure.as_ref()
    }
}

/// An event a projection could not apply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The event's position. Stored as `{"commit": …, "sequence": …}`, the form workers of
    /// earlier releases read during a rolling deploy; either form is read.
    #[serde(with = "position_parts")]
    pub position: Position,
    /// The event's id.
    pub event_id: Uuid,
    /// The event's type.
    pub event_type: String,
    /// The event's stream.
    pub stream_id: String,
    /// The error text.
    pub error: String,
}

/// What a batch's generation must still be for its commit to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The live worker: the generation must still be the active one.
    Live,
    /// A rebuild: the generation must be newer than the active one.
    Rebuild,
    /// A rebuild's last batch: it waits for every open batch of the projection, keeps new
    /// ones out until it ends, and its commit makes its generation the active one, provided
    /// that is still newer and its checkpoint is not behind the active one's (so the read
    /// model never moves back).
    Switch,
}

/// Storage for read models: documents, checkpoints, leases, failures and dead letters.
///
/// The rules every implementation keeps (the scenarios of `testing`, feature `testing`, check
/// them on each):
/// - a batch's writes, its dead letters and its checkpoint commit together, by compare-and-set
///   on the position the batch started from, on its generation still playing its
///   [`Role`], and (for a live batch) on its lease's epoch still being current;
/// - a batch can only begin on a generation that plays its role (and a live one only while
///   the projection is not paused), and the generation it writes is not retired while it
///   is open;
/// - generations only move forward: [`switch_generation`](Target::switch_generation) is a
///   compare-and-set that a stale or repeated switch loses, changing nothing, and
///   [`reset`](Target::reset) makes a generation newer than every other the active one;
/// - pausing, a switch and a reset wait for the batches in flight (the gate, exclusively).
#[async_trait]
pub trait Target: Clone + Send + Sync + 'static {
    /// The open transaction of one batch.
    type Batch: Documents + Send;

    /// Makes sure the projection has a state (a first generation at the start of the log,
    /// built by `version`) and returns it.
    async fn register(&self, name: &str, version: u32) -> Result<StoredState>;

    /// The state of one projection, `None` if it was never registered.
    async fn state(&self, name: &str) -> Result<Option<StoredState>>;

    /// Takes the lease of `name` for `ttl` if nobody holds it (or the holder let it expire),
    /// with a new, higher epoch; `None` while another holder's lease runs. `holder` says who
    /// (for status).
    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>>;

    /// Extends the lease held with `epoch` by `ttl`; `false` if another holder has taken it.
    async fn renew_lease(&self, name: &str, epoch: u64, ttl: Duration) -> Result<bool>;

    /// Gives up the lease held with `epoch` (nothing happens if it was taken meanwhile).
    async fn release_lease(&self, name: &str, epoch: u64) -> Result<()>;

    /// The checkpoint of one generation, `None` if it does not exist.
    async fn checkpoint(&self, name: &str, generation: u64) -> Result<Option<Checkpoint>>;

    /// Creates generation `generation` at the start of the log, for a rebuild by `version`.
    /// Returns `false` if it exists already.
    async fn create_generation(&self, name: &str, generation: u64, version: u32) -> Result<bool>;

    /// Opens the transaction of one batch on `generation`, in `role`; a live batch carries
    /// its lease. Fails with [`Error::GenerationMoved`](crate::Error::GenerationMoved) when
    /// the generation no longer plays the role. The generation cannot be retired while the
    /// batch is open.
    async fn begin(
        &self,
        name: &str,
        generation: u64,
        role: Role,
        lease: Option<LeaseToken>,
    ) -> Result<Self::Batch>;

    /// Records `failure` as a dead letter within `batch`: parked (the batch's checkpoint moves
    /// past it), or `blocking` (the projection stops at it: the batch's commit also marks its
    /// generation failed, under the same fence). A dead letter for the same event is
    /// replaced.
    async fn dead_letter(
        &self,
        batch: &mut Self::Batch,
        failure: &Failure,
        blocking: bool,
    ) -> Result<()>;

    /// Marks the dead letter of `event_id` retried within `batch` (it was applied at last).
    async fn retried(&self, batch: &mut Self::Batch, event_id: Uuid) -> Result<()>;

    /// Commits `batch` and moves its generation's checkpoint from `from` to `to`, if it is
    /// still at `from`, the generation still plays the batch's role and the batch's lease
    /// epoch is still current. A switch's commit also closes the open dead letters of older
    /// generations (the new one passed those events) and refuses a generation built by an
    /// older projection version than the active one. Otherwise rolls back with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost) or
    /// [`Error::GenerationMoved`](crate::Error::GenerationMoved).
    async fn commit(
        &self,
        batch: Self::Batch,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()>;

    /// Makes `generation` the one queries read, as an empty [`Role::Switch`] batch: `true`
    /// if it did; `false` (changing nothing) when `generation` is not newer than the active
    /// one — a repeated or stale switch loses; [`Error::RebuildBehind`](crate::Error::RebuildBehind)
    /// when its checkpoint is behind the active one's.
    async fn switch_generation(&self, name: &str, generation: u64) -> Result<bool> {
        let batch = match self.begin(name, generation, Role::Switch, None).await {
            Ok(batch) => batch,
            Err(crate::Error::GenerationMoved { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let at = self
            .checkpoint(name, generation)
            .await?
            .ok_or_else(|| crate::Error::UnknownProjection(name.to_owned()))?
            .position;
        match self.commit(batch, at, at, None).await {
            Ok(()) => Ok(true),
            Err(crate::Error::GenerationMoved { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Pauses (`true`) or resumes (`false`) the live worker of `name`: while paused, a
    /// [`Role::Live`] batch cannot [`begin`](Target::begin) (it fails with
    /// [`Error::Paused`](crate::Error::Paused)); rebuilds go on. Returns `false` if `name`
    /// was never registered. Pausing a paused projection keeps the time it was first paused.
    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool>;

    /// Starts the read model of `name` again from the start of the log, at once: a new, empty
    /// generation (built by the active one's version) becomes the one queries read, the live
    /// worker moves over to it and replays the log, and the generations before it are
    /// retired. Their open dead letters are closed (the replay meets those events again and
    /// parks them anew if they still fail); a stop at a failure ends with them. Waits for the
    /// batches in flight, like a switch. Returns the new generation, `None` if `name` was
    /// never registered.
    ///
    /// Queries see the read model empty and filling up; a rebuild
    /// ([`ProjectionRunner::rebuild`](crate::ProjectionRunner::rebuild)) keeps serving the old
    /// one until the new one has caught up, at the cost of building both side by side.
    async fn reset(&self, name: &str) -> Result<Option<u64>>;

    /// Deletes the read models and checkpoints of generations older than the active one
    /// (no batch can write them any more). Returns how many generations went.
    async fn retire_generations(&self, name: &str) -> Result<u64>;

    /// The state of every registered projection.
    async fn states(&self) -> Result<Vec<StoredState>>;

    /// The dead letters of `name`, across generations, oldest first: one per event.
    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>>;

    /// Asks for a dead letter to be retried or skipped. Returns `false` if `name` has no
    /// open dead letter for `event_id`. A blocking one is resolved at once (skip moves the
    /// checkpoint past the event; retry lets the worker apply it again); a parked one is
    /// retried by the live worker at its next batch.
    async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<bool>;

    /// Parked dead letters of `name`'s active generation whose retry was asked for, oldest
    /// first (a letter of a generation being rebuilt waits for its switch).
    async fn retries_asked(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>>;

    /// Where runners of this target announce their progress (in this process).
    fn progress(&self) -> &ProgressBoard;

    /// A document of the active generation of `projection`'s read model.
    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>>;

    /// Every document of a collection of the active generation, ordered by key.
    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>>;
}

/// A position as its two parts, the stored form of a [`Failure`]'s.
mod position_parts {
    use cqrs_core::Position;
    use serde::ser::SerializeStruct;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(position: &Position, to: S) -> Result<S::Ok, S::Error> {
        let mut parts = to.serialize_struct("Position", 2)?;
        parts.serialize_field("commit", &position.commit)?;
        parts.serialize_field("sequence", &position.sequence)?;
        parts.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(from: D) -> Result<Position, D::Error> {
        Position::deserialize(from)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_failure_is_stored_in_the_form_earlier_releases_read() {
        let failure = Failure {
            position: Position::new(7, 3),
            event_id: Uuid::nil(),
            event_type: "OrderPlaced".into(),
            stream_id: "order-1".into(),
            error: "bad".into(),
        };
        let stored = serde_json::to_value(&failure).expect("serialise");
        assert_eq!(stored["position"], json!({ "commit": 7, "sequence": 3 }));
        let mut text_form = stored.clone();
        text_form["position"] = json!("7/3");
        for form in [stored, text_form] {
            let read: Failure = serde_json::from_value(form).expect("read");
            assert_eq!(read, failure);
        }
    }
}
