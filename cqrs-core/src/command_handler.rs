//! The [`Repository`]: load an aggregate, let it decide, append what it decided.

use std::marker::PhantomData;
use std::sync::Arc;

use chrono::Utc;

use crate::aggregate::Aggregate;
use crate::error::{CommandError, Result};
use crate::event::{EventEnvelope, Metadata, NewEvent};
use crate::snapshot::{Snapshot, SnapshotPolicy};
use crate::store::{read_stream_to_end, EventStore};
use crate::stream::{ExpectedVersion, StreamId};
use crate::upcast::Upcasters;

/// How many events one read of a stream asks for while loading.
const LOAD_PAGE: usize = 1_000;

/// An aggregate's state as loaded, with the version it was loaded at.
#[derive(Debug)]
pub struct LoadedAggregate<A> {
    /// The state: the fold of every event up to `version`.
    pub state: A,
    /// The stream version the state reflects (0 for an aggregate with no events).
    pub version: u64,
    /// How many events were replayed on top of the snapshot (all of them without one).
    pub replayed: u64,
}

/// Loads aggregates from an [`EventStore`] and carries out their commands.
///
/// `execute` loads the aggregate (newest snapshot + the tail of its stream), lets it
/// `handle` the command, and appends the events with the version it loaded as
/// [`ExpectedVersion::Exact`]. When another writer got there first it can reload and try
/// again, a bounded number of times ([`Repository::with_conflict_retries`]).
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    services: Arc<A::Services>,
    upcasters: Upcasters,
    snapshots: SnapshotPolicy,
    conflict_retries: u32,
    _aggregate: PhantomData<fn() -> A>,
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            services: Arc::clone(&self.services),
            upcasters: self.upcasters.clone(),
            snapshots: self.snapshots,
            conflict_retries: self.conflict_retries,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, handing `services` to every `handle`. No snapshots, no
    /// upcasters, no retries on conflict until configured.
    pub fn new(store: Arc<dyn EventStore>, services: A::Services) -> Self {
        Self {
            store,
            services: Arc::new(services),
            upcasters: Upcasters::new(),
            snapshots: SnapshotPolicy::Never,
            conflict_retries: 0,
            _aggregate: PhantomData,
        }
    }

    /// Takes snapshots by `policy`, and loads from them.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Upcasts old events with `upcasters` while loading.
    pub fn with_upcasters(mut self, upcasters: Upcasters) -> Self {
        self.upcasters = upcasters;
        self
    }

    /// On a concurrency conflict, reloads and handles the command again up to `retries`
    /// times before giving up with the conflict.
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// The store this repository writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The stream of the aggregate with this id.
    pub fn stream_id(id: &str) -> Result<StreamId> {
        StreamId::for_aggregate(A::TYPE, id)
    }

    /// Loads the aggregate with this id: its newest usable snapshot, then the events after it.
    pub async fn load(&self, id: &str) -> Result<LoadedAggregate<A>> {
        self.load_stream(&Self::stream_id(id)?).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<LoadedAggregate<A>> {
        let (mut state, mut version) = self.load_snapshot(stream).await;
        let tail = read_stream_to_end(self.store.as_ref(), stream, version + 1, LOAD_PAGE).await?;
        let replayed = tail.len() as u64;
        for recorded in &tail {
            let envelope = recorded.decode::<A::Event>(&self.upcasters)?;
            state.apply(&envelope.event);
            version = envelope.stream_version;
        }
        Ok(LoadedAggregate {
            state,
            version,
            replayed,
        })
    }

    /// The snapshot's state and version, or the default state at 0 when there is no usable
    /// snapshot (missing, of another shape, unreadable: a snapshot is only a cache).
    async fn load_snapshot(&self, stream: &StreamId) -> (A, u64) {
        if self.snapshots == SnapshotPolicy::Never {
            return (A::default(), 0);
        }
        match self.store.load_snapshot(stream).await {
            Ok(Some(snapshot)) if snapshot.schema_version == A::SNAPSHOT_VERSION => {
                match serde_json::from_value::<A>(snapshot.state) {
                    Ok(state) => (state, snapshot.version),
                    Err(_) => (A::default(), 0),
                }
            }
            _ => (A::default(), 0),
        }
    }

    /// Carries out `command` on the aggregate with this id and returns the stored events
    /// (none if the aggregate decided nothing needs to change).
    ///
    /// `metadata` (correlation, causation, actor) is stored with every event. On error,
    /// nothing of the command was stored.
    pub async fn execute(
        &self,
        id: &str,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        let stream = Self::stream_id(id)?;
        let mut attempt = 0;
        loop {
            match self.try_execute(&stream, command.clone(), metadata).await {
                Err(e) if e.is_conflict() && attempt < self.conflict_retries => {
                    // Back off a little more each time, so that a crowd of writers on one
                    // hot aggregate spreads out instead of colliding again in lockstep.
                    tokio::time::sleep(std::time::Duration::from_millis(u64::from(
                        attempt.min(20),
                    )))
                    .await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn try_execute(
        &self,
        stream: &StreamId,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        let LoadedAggregate {
            mut state, version, ..
        } = self.load_stream(stream).await?;
        let events = state
            .handle(command, &self.services)
            .map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let new_events = events
            .iter()
            .map(NewEvent::from_domain)
            .collect::<Result<Vec<_>>>()?;
        let ids: Vec<_> = new_events.iter().map(|e| e.event_id).collect();
        let written = self
            .store
            .append(
                stream,
                ExpectedVersion::Exact(version),
                new_events,
                metadata,
            )
            .await?;

        let envelopes: Vec<_> = events
            .into_iter()
            .zip(ids)
            .zip(&written.positions)
            .enumerate()
            .map(|(i, ((event, event_id), position))| EventEnvelope {
                event_id,
                stream_id: stream.clone(),
                stream_version: version + 1 + i as u64,
                position: *position,
                recorded_at: written.recorded_at,
                metadata: metadata.clone(),
                event,
            })
            .collect();

        if self
            .snapshots
            .should_snapshot(version, written.stream_version)
        {
            for envelope in &envelopes {
                state.apply(&envelope.event);
            }
            self.save_snapshot(stream, &state, written.stream_version)
                .await;
        }
        Ok(envelopes)
    }

    /// Saves a snapshot; a failure is ignored on purpose, since a snapshot is only a cache
    /// and the events are already stored.
    async fn save_snapshot(&self, stream: &StreamId, state: &A, version: u64) {
        let Ok(state) = serde_json::to_value(state) else {
            return;
        };
        let snapshot = Snapshot {
            stream_id: stream.clone(),
            version,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: Utc::now(),
        };
        let _ = self.store.save_snapshot(&snapshot).await;
    }
}

impl<A: Aggregate> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("snapshots", &self.snapshots)
            .field("conflict_retries", &self.conflict_retries)
            .finish_non_exhaustive()
    }
}
