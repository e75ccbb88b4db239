//! # eventstore-postgres
//!
//! The append-only PostgreSQL event store: [`PgEventStore`] implements the
//! [`cqrs_core::EventStore`] contract over a `sqlx::PgPool`.
//!
//! ```no_run
//! use cqrs_core::{DomainEvent, EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamId};
//! use eventstore_postgres::PgEventStore;
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
//! # async fn run() -> cqrs_core::Result<()> {
//! let store = PgEventStore::connect("postgres://postgres@127.0.0.1/shop").await?;
//! store.migrate().await?;
//! let stream = StreamId::for_aggregate("cart", "1")?;
//! let event = NewEvent::from_domain(&CartEvent::ItemAdded { sku: "MUG".into() })?;
//! store.append(&stream, ExpectedVersion::NoStream, vec![event], &Metadata::new_request()).await?;
//! let page = store.read_all(Position::START, 1_000, &EventFilter::all().categories(["cart"])).await?;
//! # Ok(()) }
//! ```
//!
//! ## How appends work
//!
//! One append is one plain SQL statement: one round trip, one transaction. It tries a
//! transaction-level advisory lock on the stream (writers of one stream queue, other streams
//! run in parallel, and the lock writes nothing), reads the stream's version from the
//! `(stream_id, stream_version)` index, checks the
//! [`ExpectedVersion`](cqrs_core::ExpectedVersion) and inserts all events with one multi-row
//! insert. Appends that arrive while another is being written go together, in one such
//! statement (group commit, see `group`), each with its own check and outcome. An append
//! whose stream's lock is taken by another transaction is written again by the `es_append_v2`
//! SQL function, which waits for the lock and reads the version under it; so is a lone append
//! whose check or statement failed. A group whose statement failed is written again by
//! `es_append_group_v2`, which gives each append its own outcome. Appends inside a caller's
//! transaction always use `es_append_v2`. The unique constraints on
//! `event_id` and on `(stream_id, stream_version)` back the lock up. When a version check
//! fails or an event id is already stored, the client looks the ids up: a batch stored before
//! in full is a retry after a lost reply, and is reported as
//! [`AppendResult::already_stored`](cqrs_core::AppendResult::already_stored).
//!
//! The statements of the fast path are written one at a time, on one connection the store
//! keeps for them (see `writer`): taken from the pool once and detached from it (its place in
//! the pool is freed), so the store holds **one connection to the server beyond its pool's**.
//! A statement whose connection went while it ran (a restart, a network cut) may have been
//! stored; its appends are written again through `es_append_v2` on a pooled connection,
//! which finds an append stored before by its ids and reports it as stored.
//!
//! Readers are woken by `NOTIFY es_events`. A notifying commit takes a cluster-wide lock, so
//! the store sends it after the append has committed, one per burst of appends, rather than
//! from inside every append (see `notify`). Readers in the appending process are woken at
//! once; readers in other processes within 2 ms of a quiet log's append, and within about
//! 20 ms while appends keep coming (the store then sends at most 50 notifications a second).
//!
//! ## The global order, and its trade-off
//!
//! A plain sequence is not an order readers can trust: position 11 can commit before
//! position 10, and a reader that checkpointed 11 would skip 10 forever. So every event
//! records the id of the transaction that wrote it (`pg_current_xact_id()`, `xid8`), readers
//! see only events whose transaction id is below the `xmin` of their snapshot (every older
//! transaction has ended) and order by `(transaction id, position)`; that pair is the
//! [`Position`](cqrs_core::Position) (`commit`, `sequence`). A late commit then sorts *after*
//! everything a reader has passed. Appends to different streams never wait for each other.
//!
//! The price: a reader cannot see past the oldest open write transaction *of the whole
//! cluster*. A session left `idle in transaction` after writing holds every reader back until
//! it ends (it never makes them skip). [`PgEventStore::horizon_blockers`] names such
//! sessions (pid, age, state, query) so an operator can find them.
//!
//! ## Moving a store between clusters
//!
//! Positions are transaction ids, kept as data. A log copied into another cluster
//! (`pg_dump`/restore, logical replication, a failover to an asynchronous standby that was
//! behind) whose transaction counter is *behind* the copied ids would give new events
//! smaller ids: they would sort before the copied history, and readers past it would skip
//! them for ever (checkpoints kept elsewhere have the same problem). So before its first
//! read or write the store checks that every id in the log is below the server's next one,
//! and refuses to work with [`cqrs_core::Error::LogAhead`] otherwise
//! ([`PgEventStore::check_log_order`] makes the check at start-up).
//!
//! The fix, before the new cluster takes writes: stop it and raise its transaction id epoch
//! past the log's, with `pg_resetwal --epoch=N -D <data directory>`, where `N` is
//! `SELECT floor(max(transaction_id)::text::numeric / 4294967296) + 1 FROM es_events` (an
//! epoch is 2³² transactions, so the counter then starts above every copied id); then start
//! the cluster. A log restored from a cluster at epoch 0 needs `--epoch=1`: its next id becomes
//! 4294967296 plus the old counter, and new events sort after the copied ones.
//! A physical standby promoted after a failover keeps the counter and needs nothing.
//!
//! ## Layout
//!
//! | module | holds |
//! | --- | --- |
//! | `store` | [`PgEventStore`] and its [`EventStore`](cqrs_core::EventStore) implementation |
//! | `set_append` | the plain statements of the fast path: a lone append, a group |
//! | `group` | group commit: the queue of appends and the writer's turn |
//! | `writer` | the connection the fast path writes on |
//! | `row` | decoding event rows, refusing bad data with its position |
//! | `notify` | the LISTEN task that wakes waiting readers |
//! | `horizon` | what holds readers back ([`cqrs_core::Horizon`]) |
//! | `log_order` | the start-up guard against a log copied from a cluster that was ahead |
//! | `error` | mapping `sqlx` errors to [`cqrs_core::Error`] |
//! | `testing` | `TestDatabase`: a fresh database per test, and `Proxy`, a TCP proxy that cuts connections or loses replies (feature `testing`) |
//! | `bench` | the command line and medians of the benchmarks (feature `testing`) |
//! | `migrations/` | the schema and the `es_append_v2` function (older functions kept for a rolling deploy) |

#[cfg(feature = "testing")]
pub mod bench;
mod error;
mod group;
mod horizon;
mod log_order;
mod notify;
mod row;
mod set_append;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod writer;

pub use cqrs_core::HorizonBlocker;
pub use error::is_transient;
pub use notify::CHANNEL as NOTIFY_CHANNEL;
pub use store::{PgEventStore, DEFAULT_POLL_INTERVAL};

/// Applies the store's migrations to `pool` (idempotent; takes a lock, so several processes
/// may start at once).
///
/// They share sqlx's `_sqlx_migrations` table with other crates' migrations (the
/// projections'), so versions are timestamps that never collide, and this migrator ignores
/// the rows of the others.
pub async fn migrate(pool: &sqlx::PgPool) -> cqrs_core::Result<()> {
    let mut migrator = sqlx::migrate!("./migrations");
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(|e| cqrs_core::Error::Backend(Box::new(e)))
}
