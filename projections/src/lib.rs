//! # projections
//!
//! The read side: [`Projection`]s turn the global log into read models, exactly once.
//!
//! - A [`ProjectionRunner`] follows the log from the projection's checkpoint in batches and
//!   commits each batch's read-model writes and its checkpoint in **one transaction**, by
//!   compare-and-set on the position the batch started from. Killed at any instant, it
//!   resumes with nothing lost and nothing applied twice.
//! - A **lease** keeps one active worker per projection across processes: renewed in the
//!   background, lost within its time-to-live (10 s by default) by a holder that stops
//!   renewing (killed, frozen, cut off), and fenced by an epoch checked at every commit, so
//!   a deposed worker commits nothing; side-effecting handlers get the [`LeaseToken`].
//! - An **error policy** decides what happens to an event the projection cannot handle:
//!   stop, marked failed with the event's position, or dead-letter it and go on.
//! - [`status()`] reports checkpoint, head, lag (counted), state (including *stalled*, with the
//!   transactions holding readers back) and the lease holder; [`wait_for`] waits for a read
//!   model to reach a position, woken by its runner.
//! - [`ProjectionRunner::rebuild`] replays the log into a fresh generation while the old one
//!   serves, then switches with a compare-and-set: generations only move forward, and the
//!   read model never moves back. Failures, checkpoints and documents belong to a
//!   generation; [`dead_letters`] are one list per projection, retried or skipped by an
//!   operator.
//!
//! The same projection code runs on PostgreSQL ([`PgTarget`]) and in memory
//! ([`MemoryTarget`], the demo's embedded default): read models are JSON documents written
//! through [`Documents`].
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, Metadata, NewEvent, RecordedEvent, StreamId};
//! use cqrs_core::conformance::TestEvent;
//! use projections::{ApplyError, Documents, DocumentsExt, MemoryTarget, Projection, ProjectionRunner, Target};
//!
//! struct Totals;
//!
//! #[async_trait]
//! impl Projection for Totals {
//!     fn name(&self) -> &str { "totals" }
//!     async fn apply(&self, docs: &mut dyn Documents, event: &RecordedEvent) -> Result<(), ApplyError> {
//!         let amount = event.event.payload["amount"].as_u64().ok_or_else(|| ApplyError::poison("no amount"))?;
//!         let total: u64 = docs.load("totals", event.stream_id.as_str()).await?.unwrap_or(0);
//!         docs.save("totals", event.stream_id.as_str(), &(total + amount)).await?;
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(InMemoryEventStore::new());
//! let stream = StreamId::new("counter-1").unwrap();
//! for amount in [2, 3] {
//!     let event = NewEvent::from_domain(&TestEvent::Added { amount }).unwrap();
//!     store.append(&stream, ExpectedVersion::Any, vec![event], &Metadata::default()).await.unwrap();
//! }
//! let target = MemoryTarget::new();
//! let runner = ProjectionRunner::new(store, target.clone(), Arc::new(Totals));
//! runner.run_until_caught_up().await.unwrap();
//! assert_eq!(target.get("totals", "totals", "counter-1").await.unwrap(), Some(serde_json::json!(5)));
//! # });
//! ```
//!
//! ## Layout
//!
//! | module | holds |
//! | --- | --- |
//! | [`host`] | [`ProjectionHost`]: register, run, settle, status, rebuild, wait, dead letters, query |
//! | [`typed`] | [`Fold`] and [`EventProjection`]: read models against an aggregate's own events |
//! | [`projection`] | [`Projection`], [`ApplyError`] |
//! | [`documents`] | [`Documents`]: what a projection writes through |
//! | [`runner`] | [`ProjectionRunner`], [`RunnerOptions`] |
//! | [`lease`] | [`LeaseOptions`], [`LeaseToken`]: time-bounded, fenced leases |
//! | [`progress`] | [`wait_for`], [`WaitOutcome`], the runners' [`ProgressBoard`] |
//! | [`dead_letters`] | [`DeadLetter`], retry and skip |
//! | [`policy`] | [`ErrorPolicy`] |
//! | [`rebuild`] | rebuild by replay, [`RebuildProgress`] |
//! | [`status`](mod@status) | [`status()`], [`ProjectionStatus`] |
//! | [`target`] | [`Target`]: read models, checkpoints, leases |
//! | [`process`] | process managers: per-instance state, retries, parking, deadlines |
//! | [`postgres`] | [`PgTarget`] |
//! | [`memory`] | [`MemoryTarget`] |
//! | [`testing`] | scenarios every target passes; the `Tallies` test projection |
//! | [`error`] | [`Error`] |

pub mod dead_letters;
pub mod documents;
pub mod error;
pub mod host;
pub mod lease;
pub mod memory;
pub mod policy;
pub mod postgres;
pub mod process;
pub mod progress;
pub mod projection;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod target;
pub mod testing;
pub mod typed;

pub use dead_letters::{DeadLetter, DeadLetterStatus, Resolution};
pub use documents::{Documents, DocumentsExt};
pub use error::{Error, Result};
pub use host::{ProjectionHost, Shutdown, Worker};
pub use lease::{Lease, LeaseInfo, LeaseOptions, LeaseToken};
pub use memory::MemoryTarget;
pub use policy::ErrorPolicy;
pub use postgres::PgTarget;
pub use progress::{wait_for, Progress, ProgressBoard, WaitOutcome};
pub use projection::{ApplyError, Projection};
pub use rebuild::{RebuildProgress, RebuildReport};
pub use runner::{CaughtUp, ProjectionRunner, RunnerOptions};
pub use status::{status, ProjectionState, ProjectionStatus};
pub use target::{Checkpoint, Failure, StoredState, Target};
pub use typed::{Collection, EventOf, EventProjection, Fold, Folded, Typed};
