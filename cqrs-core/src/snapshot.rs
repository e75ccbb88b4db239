//! Snapshots: a cache of an aggregate's state at some version, so loading replays only the tail.
//!
//! A snapshot is only ever a cache. One that is missing, stale, fails to save or no longer
//! decodes never fails a command: the aggregate is rebuilt from its events instead.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::ReplayedEvent;
use crate::stream::StreamId;

/// An aggregate's state after the event at `version` of its stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The aggregate's stream.
    pub stream_id: StreamId,
    /// The version of the last event folded into `state`.
    pub version: u64,
    /// The aggregate's [`Aggregate::SNAPSHOT_VERSION`](crate::Aggregate::SNAPSHOT_VERSION)
    /// when it was taken; a snapshot of another shape is ignored.
    pub schema_version: u32,
    /// The serialised state.
    pub state: Value,
    /// When it was taken.
    pub taken_at: DateTime<Utc>,
}

/// Where a load with snapshots starts: the stream's snapshot, if it has one, and the first
/// events after it, read together by
/// [`EventStore::load_snapshot_and_tail`](crate::EventStore::load_snapshot_and_tail).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SnapshotAndTail {
    /// The stream's snapshot, of whatever shape it was taken with.
    pub snapshot: Option<Snapshot>,
    /// The events after the snapshot's version if it has the shape asked for, else from the
    /// stream's first, in version order, up to the limit asked for: the stream may go on
    /// after them.
    pub events: Vec<ReplayedEvent>,
}

/// When the repository takes a snapshot of an aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SnapshotPolicy {
    /// Never: always replay the whole stream.
    #[default]
    Never,
    /// Whenever an append crosses a multiple of this many events (every N events).
    EveryNEvents(u64),
}

impl SnapshotPolicy {
    /// Whether moving a stream from `before` to `after` calls for a snapshot.
    pub fn should_snapshot(self, before: u64, after: u64) -> bool {
        match self {
            Self::Never => false,
            Self::EveryNEvents(0) => false,
            Self::EveryNEvents(n) => after / n > before / n,
        }
    }
}
