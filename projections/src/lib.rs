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
//! - An operator can pause and resume a projection ([`ProjectionHost::pause`]: its worker
//!   keeps the lease and applies nothing), and reset it ([`ProjectionHost::reset`]): the one
//!   way a read model moves back, on purpose, to a new, empty generation that the live worker
//!   fills by replay.
//!
//! The same projection code runs on PostgreSQL ([`PgTarget`]) and in memory
//! ([`MemoryTarget`], the demo's embedded default): read models are JSON documents written
//! through [`Documents`].
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::{Aggregate, DomainEvent, InMemoryEventStore, Metadata, Repository};
//! use projections::{ApplyError, EventOf, Fold, MemoryTarget, ProjectionHost};
//! use serde::{Deserialize, Serialize};
//!
//! // The write side: a cart that records the items put in it.
//! #[derive(Default, Serialize, Deserialize)]
//! struct Cart;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! enum CartEvent {
//!     ItemAdded { sku: String },
//! }
//!
//! impl DomainEvent for CartEvent {
//!     fn event_type(&self) -> &'static str {
//!         "ItemAdded"
//!     }
//! }
//!
//! impl Aggregate for Cart {
//!     const TYPE: &'static str = "cart";
//!     type Id = str;
//!     type Command = String;
//!     type Event = CartEvent;
//!     type Error = std::convert::Infallible;
//!     type Services = ();
//!
//!     fn handle(&self, _cart: &str, sku: String, _: &()) -> Result<Vec<CartEvent>, Self::Error> {
//!         Ok(vec![CartEvent::ItemAdded { sku }])
//!     }
//!
//!     fn apply(&mut self, _: &CartEvent) {}
//! }
//!
//! // The read side: how many items each cart holds.
//! struct CartSizes;
//!
//! impl Fold for CartSizes {
//!     type Aggregate = Cart;
//!     type Doc = u32;
//!     const NAME: &'static str = "cart_sizes";
//!
//!     fn evolve(&self, size: Option<u32>, _: &EventOf<Cart>) -> Result<Option<u32>, ApplyError> {
//!         Ok(Some(size.unwrap_or(0) + 1))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = Arc::new(InMemoryEventStore::new());
//! let carts = Repository::<Cart>::new(store.clone(), ());
//! let host = ProjectionHost::new(store, MemoryTarget::new()).with_typed(CartSizes);
//! for sku in ["MUG", "TEE"] {
//!     carts.execute("c1", sku.to_owned(), &Metadata::new_request()).await.unwrap();
//! }
//! host.settle().await.unwrap(); // a service runs `host.run(shutdown)` instead
//! assert_eq!(host.document::<CartSizes>("c1").await.unwrap(), Some(2));
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
//! | `testing` | `testing::given` / then for projections; scenarios every target passes (feature `testing`) |
//! | [`error`] | [`Error`] |

pub mod dead_letters;
pub mod documents;
pub mod error;
pub mod host;
pub mod lease;
pub mod memory;
pub mod policy;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod process;
pub mod progress;
pub mod projection;
pub mod rebuild;
pub mod runner;
pub mod status;
pub mod target;
#[cfg(feature = "testing")]
pub mod testing;
pub mod typed;

pub use dead_letters::{DeadLetter, DeadLetterStatus, Resolution};
pub use documents::{Documents, DocumentsExt};
pub use error::{Error, Result};
pub use host::{ProjectionHost, Shutdown, Worker};
pub use lease::{Lease, LeaseInfo, LeaseOptions, LeaseToken};
pub use memory::MemoryTarget;
pub use policy::ErrorPolicy;
#[cfg(feature = "postgres")]
pub use postgres::PgTarget;
pub use progress::{wait_for, Progress, ProgressBoard, WaitOutcome};
pub use projection::{ApplyError, Projection};
pub use rebuild::{RebuildProgress, RebuildReport};
pub use runner::{CaughtUp, ProjectionRunner, RunnerOptions};
pub use status::{status, ProjectionState, ProjectionStatus};
pub use target::{Checkpoint, Failure, StoredState, Target};
pub use typed::{Collection, EventOf, EventProjection, Fold, Typed};
