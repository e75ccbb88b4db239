//! [`Target`]: where a projection's read model, checkpoint and lease live. Two are provided:
//! [`PgTarget`](crate::PgTarget) and [`MemoryTarget`](crate::MemoryTarget).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use uuid::Uuid;

use crate::documents::Documents;
use crate::error::Result;

/// How far one generation of a read model has got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// Every matching event at or before this position is in the read model.
    pub position: Position,
    /// The projection version that built this generation.
    pub version: u32,
    /// When the last applied event was recorded (for lag in seconds).
    pub last_recorded_at: Option<DateTime<Utc>>,
}

/// Which generation queries read, and how it is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredState {
    /// The projection's name.
    pub name: String,
    /// The generation of the read model queries read.
    pub active_generation: u64,
    /// Its checkpoint.
    pub checkpoint: Checkpoint,
    /// A generation being rebuilt, and its checkpoint, if a rebuild is under way or was
    /// interrupted.
    pub rebuilding: Option<(u64, Checkpoint)>,
    /// Why it stopped, if it did.
    pub failure: Option<Failure>,
}

/// An event a projection could not apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The event's position.
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

/// Whose checkpoint a commit moves, and what must still hold for it to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The live worker: the generation must still be the active one.
    Live,
    /// A rebuild: the generation must be newer than the active one.
    Rebuild,
}

/// Storage for read models: documents, checkpoints, leases, failures.
///
/// Every method that moves a checkpoint is a compare-and-set on the position the batch
/// started from, in the same transaction as the batch's documents: a worker that lost its
/// lease can never overwrite newer progress.
#[async_trait]
pub trait Target: Send + Sync + 'static {
    /// The open transaction of one batch.
    type Batch: Documents + Send;
    /// Proof of being the one active worker of a projection; dropping it gives it up.
    type Lease: Send;

    /// Makes sure the projection has a state (a first generation at the start of the log)
    /// and returns it.
    async fn register(&self, name: &str, version: u32) -> Result<StoredState>;

    /// Tries to become the one active worker of `name`; `None` when another worker is.
    async fn try_lease(&self, name: &str) -> Result<Option<Self::Lease>>;

    /// Whether `lease` is still held.
    async fn lease_held(&self, lease: &mut Self::Lease) -> bool;

    /// The checkpoint of one generation, `None` if it was never started.
    async fn checkpoint(&self, name: &str, generation: u64) -> Result<Option<Checkpoint>>;

    /// Creates generation `generation` at the start of the log, for a rebuild by `version`.
    /// Returns `false` if it exists already.
    async fn create_generation(&self, name: &str, generation: u64, version: u32) -> Result<bool>;

    /// Opens the transaction of one batch on one generation.
    async fn begin(&self, name: &str, generation: u64) -> Result<Self::Batch>;

    /// Records `failure` in the dead-letter table, within `batch`.
    async fn dead_letter(&self, batch: &mut Self::Batch, failure: &Failure) -> Result<()>;

    /// Commits `batch` and moves the checkpoint from `from` to `to`, if it is still at `from`
    /// (and the generation still plays `role`); otherwise rolls back with
    /// [`Error::LeaseLost`](crate::Error::LeaseLost).
    async fn commit(
        &self,
        batch: Self::Batch,
        role: Role,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()>;

    /// Marks the projection failed (`Some`) or healthy (`None`).
    async fn set_failure(&self, name: &str, failure: Option<&Failure>) -> Result<()>;

    /// Makes `generation` the one queries read, and deletes the read model of the previous one.
    async fn switch_generation(&self, name: &str, generation: u64) -> Result<()>;

    /// The state of every registered projection.
    async fn states(&self) -> Result<Vec<StoredState>>;

    /// The events `name` dead-lettered, oldest first.
    async fn dead_letters(&self, name: &str) -> Result<Vec<Failure>>;

    /// A document of the active generation of `projection`'s read model.
    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>>;

    /// Every document of a collection of the active generation, ordered by key.
    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>>;
}
