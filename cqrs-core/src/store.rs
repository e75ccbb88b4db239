//! The [`EventStore`] contract that every store (in-memory, PostgreSQL) fulfils.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Metadata, NewEvent, RecordedEvent, ReplayedEvent};
use crate::horizon::Horizon;
use crate::snapshot::{Snapshot, SnapshotAndTail};
use crate::stream::{ExpectedVersion, Position, StreamId};

/// What an append stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendResult {
    /// The stream's version after the append (the version of its last event).
    pub stream_version: u64,
    /// The global positions of the appended events, in batch order.
    pub positions: Vec<Position>,
    /// The time the events were recorded at.
    pub recorded_at: DateTime<Utc>,
    /// `true` when every event of the batch was already stored by an earlier append of the
    /// same batch (a retry after a lost reply): nothing new was stored, and the result
    /// describes the earlier write.
    pub already_stored: bool,
}

impl AppendResult {
    /// The one rule every store uses to tell a retried append from a clash of ids, given
    /// `stored`: the events of a batch of `batch_len` events for `stream` that the log holds
    /// already, in the batch's order.
    ///
    /// - none stored: a new append (`Ok(None)`);
    /// - the whole batch stored, in `stream`, as one run of consecutive versions: a retry
    ///   after a lost reply, answered with what the earlier append stored;
    /// - anything else: [`Error::DuplicateEventId`], naming a stored event of another stream
    ///   if there is one.
    pub fn of_earlier_append<E: std::borrow::Borrow<RecordedEvent>>(
        stream: &StreamId,
        batch_len: usize,
        stored: &[E],
    ) -> Result<Option<Self>> {
        let stored: Vec<&RecordedEvent> = stored.iter().map(|e| e.borrow()).collect();
        let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
            return Ok(None);
        };
        let same_batch = stored.len() == batch_len
            && stored.iter().all(|e| &e.stream_id == stream)
            && stored
                .windows(2)
                .all(|w| w[1].stream_version == w[0].stream_version + 1);
        if !same_batch {
            let clash = stored
                .iter()
                .find(|e| &e.stream_id != stream)
                .unwrap_or(first);
            return Err(Error::DuplicateEventId {
                event_id: clash.event_id,
                stored_in: clash.stream_id.clone(),
            });
        }
        Ok(Some(Self {
            stream_version: last.stream_version,
            positions: stored.iter().map(|e| e.position).collect(),
            recorded_at: first.recorded_at,
            already_stored: true,
        }))
    }
}

/// Which events of the global log a reader wants. Empty lists mean "all".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only events with one of these type names.
    pub event_types: Vec<String>,
    /// Only events of streams in one of these categories (the stream id before the first `-`).
    pub categories: Vec<String>,
}

impl EventFilter {
    /// Every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Only events with one of these type names.
    pub fn event_types<I, S>(mut self, types: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.event_types = types.into_iter().map(Into::into).collect();
        self
    }

    /// Only events of streams in one of these categories.
    pub fn categories<I, S>(mut self, categories: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.categories = categories.into_iter().map(Into::into).collect();
        self
    }

    /// Whether `event` passes the filter.
    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event.event_type))
            && (self.categories.is_empty()
                || self
                    .categories
                    .iter()
                    .any(|c| c == event.stream_id.category()))
    }
}

/// One page of the global log.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadAllPage {
    /// The matching events after the requested position, in log order.
    pub events: Vec<RecordedEvent>,
    /// Every matching event at or before this position has been returned by this page or an
    /// earlier one, so a reader may resume after it. It is at least the last event's position,
    /// and can be further on when the filter skipped events or the reader is caught up:
    /// checkpointing it saves re-scanning what the filter rejects.
    pub scanned_to: Position,
}

/// An append-only store of event streams with one global, trustworthy order.
///
/// Guarantees every implementation keeps (the `conformance` suite, feature `testing`, checks them):
/// - an append stores all of its events or none, and only if the [`ExpectedVersion`] holds;
///   otherwise it returns [`Error::Conflict`] and stores nothing;
/// - appending events whose ids are already stored by the same batch stores nothing again
///   and reports [`AppendResult::already_stored`];
/// - [`read_all`](EventStore::read_all) never returns an event behind a position it has
///   already returned past: a reader checkpointing `scanned_to` misses nothing.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically, if the stream is at the `expected` version.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> Result<AppendResult>;

    /// Reads up to `limit` events of `stream` with version ≥ `from_version`, in version order.
    /// A stream that does not exist reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Replays up to `limit` events of `stream` with version ≥ `from_version`, in version
    /// order, into `apply`, each as soon as it is read, with only what a replay needs
    /// ([`ReplayedEvent`]: version, position, event): what the
    /// [`Repository`](crate::Repository) loads aggregates with. Returns how many it replayed.
    /// An error from `apply` stops the replay and is returned.
    ///
    /// The default reads [`read_stream`](EventStore::read_stream) and drops the rest; a store
    /// that can send less, or hand events over as they arrive, overrides it (PostgreSQL does
    /// both: a fold then runs while the rest of the stream is still on its way). `apply`
    /// should be quick and must not wait on the store: a store that hands events over as they
    /// arrive holds a connection until the replay ends.
    async fn replay_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
        apply: &mut (dyn FnMut(ReplayedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        let events = self.read_stream(stream, from_version, limit).await?;
        let count = events.len();
        for event in events {
            apply(event.into())?;
        }
        Ok(count)
    }

    /// The stored event with this id, if there is one. (An event is found here as soon as
    /// its append returned, even where [`read_all`](EventStore::read_all) shows it later.)
    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>>;

    /// The stream's current version (0 if it does not exist).
    async fn stream_version(&self, stream: &StreamId) -> Result<u64>;

    /// Reads up to `limit` events of the global log after `after` that pass `filter`.
    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadAllPage>;

    /// The position of the last event a reader can see now ([`Position::START`] if none).
    async fn head(&self) -> Result<Position>;

    /// A position at or after every event committed when it is called. A reader whose
    /// [`ReadAllPage::scanned_to`] reaches it has seen all of those events. (Where events
    /// become readable only once older transactions end, as on PostgreSQL, reaching it may
    /// take as long as the transactions open at the call.) "Catch up with everything written
    /// so far" means "read until the barrier".
    async fn read_barrier(&self) -> Result<Position>;

    /// Waits until an event after `after` may be readable, or `timeout` passes. Returns
    /// `true` if it saw new events, `false` once the timeout passed (an event that came in
    /// its last moment is left to the read that follows). Readers call it when caught up
    /// instead of polling, and read after it either way.
    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool>;

    /// How many events a reader can see after `after`, counting at most `limit` (for lag).
    async fn count_after(&self, after: Position, limit: u64) -> Result<u64>;

    /// What holds readers back now: committed events not yet readable, and the open
    /// transactions in the way (always empty where nothing can hold readers back).
    async fn horizon(&self) -> Result<Horizon>;

    /// The newest snapshot of `stream`, if any.
    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>>;

    /// The snapshot of `stream`, if any, and up to `limit` events after it when it was taken
    /// with `schema_version` (from the stream's first event when it was not, or there is
    /// none), as one read where the store can: what a load with snapshots starts with, so
    /// that it costs one round trip, not two.
    ///
    /// A snapshot that cannot be read is reported as [`Error::Corrupt`]: the
    /// [`Repository`](crate::Repository) then loads from the events, and returns any other
    /// error as it is. The default reads [`load_snapshot`](EventStore::load_snapshot), then
    /// [`replay_stream`](EventStore::replay_stream).
    async fn load_snapshot_and_tail(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndTail> {
        let snapshot = self.load_snapshot(stream).await?;
        let from = snapshot
            .as_ref()
            .filter(|s| s.schema_version == schema_version)
            .map_or(0, |s| s.version)
            + 1;
        let mut events = Vec::new();
        self.replay_stream(stream, from, limit, &mut |event| {
            events.push(event);
            Ok(())
        })
        .await?;
        Ok(SnapshotAndTail { snapshot, events })
    }

    /// Stores `snapshot`, unless a snapshot at the same or a newer version is already there.
    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()>;
}

/// Reads a whole stream from `from_version` by pages of `page_size`.
///
/// Each read asks for one event more than a page: a stream whose length is a whole number
/// of pages is read without a last, empty read.
pub async fn read_stream_to_end(
    store: &(impl EventStore + ?Sized),
    stream: &StreamId,
    from_version: u64,
    page_size: usize,
) -> Result<Vec<RecordedEvent>> {
    let mut events = Vec::new();
    let mut next = from_version;
    loop {
        let mut page = store
            .read_stream(stream, next, page_size.saturating_add(1))
            .await?;
        let full = page.len() > page_size;
        if let Some(last) = page.last() {
            next = last.stream_version + 1;
        }
        if events.is_empty() {
            events = page;
        } else {
            events.append(&mut page);
        }
        if !full {
            return Ok(events);
        }
    }
}

/// Replays a whole stream from `from_version` into `apply` by pages of `page_size` (each
/// read asking for one event more, like [`read_stream_to_end`]); how many it replayed.
pub async fn replay_stream_to_end(
    store: &(impl EventStore + ?Sized),
    stream: &StreamId,
    from_version: u64,
    page_size: usize,
    apply: &mut (dyn FnMut(ReplayedEvent) -> Result<()> + Send),
) -> Result<u64> {
    let mut replayed = 0;
    let mut next = from_version;
    loop {
        let mut last = None;
        let mut each = |event: ReplayedEvent| {
            last = Some(event.stream_version);
            apply(event)
        };
        let count = store
            .replay_stream(stream, next, page_size.saturating_add(1), &mut each)
            .await?;
        replayed += count as u64;
        match last {
            Some(version) if count > page_size => next = version + 1,
            _ => return Ok(replayed),
        }
    }
}

/// Checks a batch before a store looks anything up: at least one event, no event id twice.
pub fn check_batch(events: &[NewEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::InvalidInput(
            "an append needs at least one event".into(),
        ));
    }
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    for event in events {
        if !seen.insert(event.event_id) {
            return Err(Error::InvalidInput(format!(
                "event id {} appears twice in one batch",
                event.event_id
            )));
        }
    }
    Ok(())
}
