//! # cqrs-core
//!
//! The storage-agnostic heart of the toolkit: aggregates decide, events record, an
//! [`EventStore`] keeps them in one append-only log. No SQL, no HTTP; the PostgreSQL store
//! lives in `eventstore-postgres`, read models in `projections`.
//!
//! ```
//! use cqrs_core::{DomainEvent, InMemoryEventStore, EventStore, ExpectedVersion, Metadata, NewEvent, StreamId};
//! use serde::{Deserialize, Serialize};
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
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store = InMemoryEventStore::new();
//! let stream = StreamId::for_aggregate("cart", "1").unwrap();
//! let event = NewEvent::from_domain(&CartEvent::ItemAdded { sku: "MUG".into() }).unwrap();
//! let written = store
//!     .append(&stream, ExpectedVersion::NoStream, vec![event], &Metadata::new_request())
//!     .await
//!     .unwrap();
//! assert_eq!(written.stream_version, 1);
//!
//! // A second writer that believes the stream is new loses, and stores nothing.
//! let late = NewEvent::from_domain(&CartEvent::ItemAdded { sku: "TEE".into() }).unwrap();
//! let refused = store.append(&stream, ExpectedVersion::NoStream, vec![late], &Metadata::default()).await;
//! assert!(refused.unwrap_err().is_conflict());
//! # });
//! ```
//!
//! ## Layout
//!
//! | module | holds |
//! | --- | --- |
//! | [`aggregate`] | [`Aggregate`]: `handle` decides, `apply` evolves |
//! | [`event`] | [`DomainEvent`], [`EventEnvelope`], [`Metadata`], [`NewEvent`], [`RawEvent`] |
//! | [`event_types`] | the type names of an event enum, read from its serde derive |
//! | [`stream`] | [`StreamId`], [`ExpectedVersion`], [`Position`] in the global log |
//! | [`store`] | the [`EventStore`] trait, [`EventFilter`], [`ReadAllPage`] |
//! | [`follow`] | [`follow::Follower`]: the log as it grows, like `tail -f` |
//! | [`command`] | [`CommandId`]: a command's identity, its events' ids derive from it |
//! | [`command_handler`] | [`Repository`]: load, handle, append, retry; a repeated command returns its original events |
//! | [`snapshot`] | [`Snapshot`], [`SnapshotPolicy`] |
//! | [`upcast`] | [`Upcasters`]: old event shapes to new |
//! | [`trace`] | [`trace::TraceParent`]: the W3C trace context events carry |
//! | [`in_memory`] | [`InMemoryEventStore`] |
//! | `testing` | given / when / then for aggregates (feature `testing`) |
//! | `conformance` | the test suite every store runs (feature `testing`) |
//! | [`error`] | [`Error`], [`CommandError`] |

pub mod aggregate;
pub mod command;
pub mod command_handler;
#[cfg(feature = "testing")]
pub mod conformance;
pub mod error;
pub mod event;
pub mod event_types;
pub mod follow;
pub mod horizon;
pub mod in_memory;
pub mod snapshot;
pub mod store;
pub mod stream;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trace;
pub mod upcast;

pub use aggregate::Aggregate;
pub use command::CommandId;
pub use command_handler::{LoadedAggregate, Repository};
pub use error::{BoxError, CommandError, Error, Result};
pub use event::{
    DomainEvent, EventEnvelope, Metadata, NewEvent, RawEvent, RecordedEvent, ReplayedEvent,
};
pub use horizon::{Horizon, HorizonBlocker};
pub use in_memory::InMemoryEventStore;
pub use snapshot::{Snapshot, SnapshotAndTail, SnapshotPolicy};
pub use store::{AppendResult, EventFilter, EventStore, ReadAllPage};
pub use stream::{ExpectedVersion, Position, StreamId};
pub use upcast::{UpcastError, Upcasters};
