//! [`InMemoryEventStore`]: the whole [`EventStore`] contract in memory.
//!
//! The embedded default of the demo and the store of fast unit tests. It keeps the same
//! semantics as the PostgreSQL store: the same expected-version rules, idempotent event ids,
//! one global order, waiting for new events. Nothing survives the process.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::event::{Metadata, NewEvent, RecordedEvent};
use crate::horizon::Horizon;
use crate::snapshot::Snapshot;
use crate::store::{check_batch, AppendResult, EventFilter, EventStore, ReadAllPage};
use crate::stream::{ExpectedVersion, Position, StreamId};

/// An event store held in memory. Cheap to create; share it behind an `Arc`.
#[derive(Debug)]
pub struct InMemoryEventStore {
    inner: Mutex<Inner>,
    head: watch::Sender<Position>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every event, in global order.
    log: Vec<RecordedEvent>,
    /// For each stream, the indexes of its events in `log`, in version order.
    streams: HashMap<StreamId, Vec<usize>>,
    /// Where each event id sits in `log`.
    event_ids: HashMap<Uuid, usize>,
    snapshots: HashMap<StreamId, Snapshot>,
    /// Counts appends: the `commit` part of positions.
    commits: u64,
}

impl Default for InMemoryEventStore {
    fn default() -> Self {
        Self::new()
    }
}

impl InMemoryEventStore {
    /// An empty store.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            head: watch::Sender::new(Position::START),
        }
    }

    /// How many events the store holds.
    pub fn len(&self) -> usize {
        self.lock().log.len()
    }

    /// Whether the store holds no event.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave `Inner` half-written: every write to it
        // happens after all checks, without a step that can panic in between.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn stream_version(&self, stream: &StreamId) -> u64 {
        self.streams.get(stream).map_or(0, |v| v.len() as u64)
    }

    /// If the batch was stored before (a retry), what that append stored.
    fn earlier_append(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>> {
        let stored: Vec<&RecordedEvent> = events
            .iter()
            .filter_map(|e| self.event_ids.get(&e.event_id).map(|&i| &self.log[i]))
            .collect();
        AppendResult::of_earlier_append(stream, events.len(), &stored)
    }
}

#[async_trait]
impl EventStore for InMemoryEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> Result<AppendResult> {
        check_batch(&events)?;
        let mut inner = self.lock();
        if let Some(earlier) = inner.earlier_append(stream, &events)? {
            return Ok(earlier);
        }
        let actual = inner.stream_version(stream);
        if !expected.is_satisfied_by(actual) {
            return Err(Error::Conflict {
                stream: stream.clone(),
                expected,
                actual,
            });
        }

        inner.commits += 1;
        let commit = inner.commits;
        let recorded_at = Utc::now();
        let mut positions = Vec::with_capacity(events.len());
        for (i, event) in events.into_iter().enumerate() {
            let index = inner.log.len();
            let position = Position::new(commit, index as u64 + 1);
            positions.push(position);
            inner.event_ids.insert(event.event_id, index);
            inner.streams.entry(stream.clone()).or_default().push(index);
            inner.log.push(RecordedEvent {
                event_id: event.event_id,
                stream_id: stream.clone(),
                stream_version: actual + 1 + i as u64,
                position,
                recorded_at,
                metadata: metadata.clone(),
                event: event.data,
            });
        }
        let stream_version = inner.stream_version(stream);
        let head = *positions.last().unwrap_or(&Position::START);
        drop(inner);
        self.head.send_replace(head);
        Ok(AppendResult {
            stream_version,
            positions,
            recorded_at,
            already_stored: false,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        if limit == 0 {
            return Err(Error::InvalidInput("limit must be at least 1".into()));
        }
        let inner = self.lock();
        let Some(indexes) = inner.streams.get(stream) else {
            return Ok(Vec::new());
        };
        let skip = from_version.saturating_sub(1) as usize;
        Ok(indexes
            .iter()
            .skip(skip)
            .take(limit)
            .map(|&i| inner.log[i].clone())
            .collect())
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        let inner = self.lock();
        Ok(inner
            .event_ids
            .get(&event_id)
            .map(|&i| inner.log[i].clone()))
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        Ok(self.lock().stream_version(stream))
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadAllPage> {
        if limit == 0 {
            return Err(Error::InvalidInput("limit must be at least 1".into()));
        }
        let inner = self.lock();
        let start = inner.log.partition_point(|e| e.position <= after);
        let mut events = Vec::new();
        for event in &inner.log[start..] {
            if filter.matches(event) {
                events.push(event.clone());
                if events.len() == limit {
                    let scanned_to = event.position;
                    return Ok(ReadAllPage { events, scanned_to });
                }
            }
        }
        let end = inner.log.last().map_or(Position::START, |e| e.position);
        Ok(ReadAllPage {
            events,
            scanned_to: end.max(after),
        })
    }

    async fn head(&self) -> Result<Position> {
        Ok(*self.head.borrow())
    }

    async fn read_barrier(&self) -> Result<Position> {
        self.head().await
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        let mut head = self.head.subscribe();
        let arrived = tokio::time::timeout(timeout, head.wait_for(|p| *p > after)).await;
        Ok(matches!(arrived, Ok(Ok(_))))
    }

    async fn count_after(&self, after: Position, limit: u64) -> Result<u64> {
        let inner = self.lock();
        let start = inner.log.partition_point(|e| e.position <= after);
        Ok(((inner.log.len() - start) as u64).min(limit))
    }

    async fn horizon(&self) -> Result<Horizon> {
        // Appends are visible the moment they are stored: nothing is ever held back.
        Ok(Horizon::default())
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        Ok(self.lock().snapshots.get(stream).cloned())
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        let mut inner = self.lock();
        let newer_stored = inner
            .snapshots
            .get(&snapshot.stream_id)
            .is_some_and(|s| s.version >= snapshot.version);
        if !newer_stored {
            inner
                .snapshots
                .insert(snapshot.stream_id.clone(), snapshot.clone());
        }
        Ok(())
    }
}
