//! The [`Repository`]: load an aggregate, let it decide, append what it decided.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use crate::aggregate::Aggregate;
use crate::command::CommandId;
use crate::error::{CommandError, Error, Result};
use crate::event::{EventEnvelope, Metadata, NewEvent, ReplayedEvent};
use crate::snapshot::{Snapshot, SnapshotAndTail, SnapshotPolicy};
use crate::store::{replay_stream_to_end, EventStore};
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
/// again, a bounded number of times ([`Repository::with_conflict_retries`]). The events' ids
/// derive from the command's [`CommandId`], so a command carried out twice is stored once.
pub struct Repository<A: Aggregate> {
    store: Arc<dyn EventStore>,
    services: Arc<A::Services>,
    upcasters: Upcasters,
    snapshots: SnapshotPolicy,
    conflict_retries: u32,
    unavailable: UnavailableRetries,
    _aggregate: PhantomData<fn() -> A>,
}

/// How a command is retried while the store is unavailable.
#[derive(Clone, Copy, Debug)]
struct UnavailableRetries {
    retries: u32,
    first_backoff: Duration,
}

impl UnavailableRetries {
    /// The wait before retry number `attempt` (from 0).
    fn backoff(&self, attempt: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1 << attempt.min(16))
            .min(Duration::from_secs(2))
    }
}

impl<A: Aggregate> Clone for Repository<A> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            services: Arc::clone(&self.services),
            upcasters: self.upcasters.clone(),
            snapshots: self.snapshots,
            conflict_retries: self.conflict_retries,
            unavailable: self.unavailable,
            _aggregate: PhantomData,
        }
    }
}

impl<A: Aggregate> Repository<A> {
    /// A repository over `store`, handing `services` to every `handle`, decoding with the
    /// aggregate's [`Aggregate::upcasters`]. No snapshots, no retries on conflict until
    /// configured.
    pub fn new(store: Arc<dyn EventStore>, services: A::Services) -> Self {
        Self {
            store,
            services: Arc::new(services),
            upcasters: A::upcasters(),
            snapshots: SnapshotPolicy::Never,
            conflict_retries: 0,
            unavailable: UnavailableRetries {
                retries: 3,
                first_backoff: Duration::from_millis(100),
            },
            _aggregate: PhantomData,
        }
    }

    /// Takes snapshots by `policy`, and loads from them.
    pub fn with_snapshots(mut self, policy: SnapshotPolicy) -> Self {
        self.snapshots = policy;
        self
    }

    /// Upcasts old events with `upcasters` while loading, instead of the aggregate's own
    /// [`Aggregate::upcasters`].
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

    /// When the store is unavailable, tries the command again up to `retries` times, waiting
    /// `backoff`, then twice as long each time (up to 2 s). Every attempt uses the same event
    /// ids, so an append whose reply was lost is found rather than stored twice. The default
    /// is 3 retries from 100 ms; 0 turns it off.
    pub fn with_unavailable_retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.unavailable = UnavailableRetries {
            retries,
            first_backoff: backoff,
        };
        self
    }

    /// The store this repository writes to.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The stream of the aggregate with this id.
    pub fn stream_id(id: &A::Id) -> Result<StreamId> {
        StreamId::for_aggregate(A::TYPE, &id.to_string())
    }

    /// Loads the aggregate with this id: its newest usable snapshot, then the events after it.
    pub async fn load(&self, id: &A::Id) -> Result<LoadedAggregate<A>> {
        self.load_stream(&Self::stream_id(id)?).await
    }

    async fn load_stream(&self, stream: &StreamId) -> Result<LoadedAggregate<A>> {
        let mut loaded = LoadedAggregate {
            state: A::default(),
            version: 0,
            replayed: 0,
        };
        if self.snapshots != SnapshotPolicy::Never
            && self.load_from_snapshot(stream, &mut loaded).await?
        {
            return Ok(loaded);
        }
        let from = loaded.version + 1;
        // Each event is folded as it is read: none is kept.
        let mut apply = |stored| self.fold(&mut loaded, stored);
        replay_stream_to_end(self.store.as_ref(), stream, from, LOAD_PAGE, &mut apply).await?;
        Ok(loaded)
    }

    /// Folds one stored event into `loaded`.
    fn fold(&self, loaded: &mut LoadedAggregate<A>, stored: ReplayedEvent) -> Result<()> {
        let at = stored.stream_version;
        loaded
            .state
            .apply(&stored.into_decoded::<A::Event>(&self.upcasters)?);
        loaded.version = at;
        loaded.replayed += 1;
        Ok(())
    }

    /// Starts `loaded` from the stream's snapshot and the events after it, read together:
    /// whether that reached the stream's end. Without a usable snapshot (missing, of another
    /// shape, unreadable: a snapshot is only a cache, and the reason is logged) it starts
    /// from the stream's first events instead, or leaves `loaded` as it was for a replay
    /// from the start. (The events read with the snapshot come in one answer, not one by
    /// one as a replay hands them over: after a usable snapshot there are fewer than its
    /// interval; without one, they are at most the stream's first page.)
    async fn load_from_snapshot(
        &self,
        stream: &StreamId,
        loaded: &mut LoadedAggregate<A>,
    ) -> Result<bool> {
        // One event more than a page: a tail of exactly a page needs no second read.
        let start = self
            .store
            .load_snapshot_and_tail(stream, A::SNAPSHOT_VERSION, LOAD_PAGE + 1)
            .await;
        let SnapshotAndTail { snapshot, events } = match start {
            Ok(start) => start,
            // A snapshot the store cannot read (or an event after it: the replay from the
            // start then meets it again and fails with it).
            Err(error @ Error::Corrupt { .. }) => {
                tracing::warn!(%stream, %error, "cannot read the snapshot or the events after it; loading from the events");
                return Ok(false);
            }
            Err(error) => return Err(error),
        };
        match snapshot {
            Some(snapshot) if snapshot.schema_version == A::SNAPSHOT_VERSION => {
                match serde_json::from_value::<A>(snapshot.state) {
                    Ok(state) => {
                        loaded.state = state;
                        loaded.version = snapshot.version;
                    }
                    Err(error) => {
                        tracing::warn!(%stream, %error, "a snapshot does not decode; loading from the events");
                        return Ok(false);
                    }
                }
            }
            // The events read with it are the stream's first.
            Some(snapshot) => tracing::debug!(
                %stream,
                stored = snapshot.schema_version,
                current = A::SNAPSHOT_VERSION,
                "a snapshot of another shape; loading from the events"
            ),
            None => {}
        }
        let full = events.len() > LOAD_PAGE;
        for stored in events {
            self.fold(loaded, stored)?;
        }
        Ok(!full)
    }

    /// Carries out `command` on the aggregate with this id and returns the stored events
    /// (none if the aggregate decided nothing needs to change).
    ///
    /// `metadata` (correlation, causation, actor) is stored with every event. On error,
    /// nothing of the command was stored, with one exception: when the store stayed
    /// unavailable through every retry ([`Error::Unavailable`]), the last append may have
    /// been stored with its reply lost. Carrying the command out again with the same
    /// command id is safe either way: it answers with the stored events or stores them.
    ///
    /// The command is identified by `metadata.command_id` (a fresh one is minted when unset)
    /// and its events' ids derive from it ([`CommandId::event_id`]). Carrying out a command
    /// whose events are stored already returns those events, with their original positions,
    /// and stores nothing: a client's retry after a lost reply, or a process manager handling
    /// an event again, is answered with the original outcome. A command id used before on
    /// another aggregate is refused with [`Error::CommandReused`]. When the store is
    /// unavailable the command is tried again with the same ids
    /// ([`Repository::with_unavailable_retries`]), so a write whose reply was lost is found,
    /// not repeated.
    pub async fn execute(
        &self,
        id: &A::Id,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        let stream = Self::stream_id(id)?;
        // A span per command, carrying the request's trace: at debug level, so that a busy
        // service pays for it only when asked.
        let span = tracing::debug_span!(
            "command",
            aggregate = A::TYPE,
            stream = %stream,
            trace_id = tracing::field::Empty,
            correlation_id = tracing::field::Empty,
            causation_id = tracing::field::Empty,
        );
        crate::trace::record_on(&span, metadata);
        tracing::Instrument::instrument(self.execute_on(id, &stream, command, metadata), span).await
    }

    async fn execute_on(
        &self,
        id: &A::Id,
        stream: &StreamId,
        command: A::Command,
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        let (command_id, named_by_caller) = match metadata.command_id {
            Some(command_id) => (command_id, true),
            None => (CommandId::new(), false),
        };
        let metadata = metadata.clone().with_command_id(command_id);
        // A command id minted here cannot have been stored before its first attempt.
        let mut maybe_stored = named_by_caller;
        let (mut conflicts, mut outages) = (0, 0);
        loop {
            let attempt = self
                .attempt(
                    id,
                    stream,
                    command.clone(),
                    command_id,
                    &metadata,
                    maybe_stored,
                )
                .await;
            match attempt {
                Err(CommandError::Store(e))
                    if e.is_conflict() && conflicts < self.conflict_retries =>
                {
                    // Back off a little more each time, so that a crowd of writers on one
                    // hot aggregate spreads out instead of colliding again in lockstep.
                    tokio::time::sleep(Duration::from_millis(u64::from(conflicts.min(20)))).await;
                    conflicts += 1;
                    // The winner may have been another attempt at this same command.
                    maybe_stored = true;
                }
                Err(CommandError::Store(e))
                    if e.is_retryable() && outages < self.unavailable.retries =>
                {
                    tokio::time::sleep(self.unavailable.backoff(outages)).await;
                    outages += 1;
                    // The append may have been stored and only its reply lost.
                    maybe_stored = true;
                }
                other => return other,
            }
        }
    }

    /// One attempt: load, handle and append. A command whose events are stored already is
    /// found by its ids: the append of the same ids answers with the stored batch (or a
    /// duplicate-id refusal), a refusal or "nothing to do" decided on the state the
    /// original made is checked against it, so no lookup is spent on the common path.
    async fn attempt(
        &self,
        id: &A::Id,
        stream: &StreamId,
        command: A::Command,
        command_id: CommandId,
        metadata: &Metadata,
        maybe_stored: bool,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        match self
            .try_execute(id, stream, command, command_id, metadata)
            .await
        {
            // Every id of the batch derives from the command id: another attempt at the same
            // command stored it meanwhile (what this attempt decided may differ, the ids do
            // not), and its events are the answer.
            Err(CommandError::Store(Error::DuplicateEventId { event_id, .. })) => {
                match self.original_outcome(stream, command_id).await? {
                    Some(original) => Ok(original),
                    None => Err(CommandError::Store(Error::DuplicateEventId {
                        event_id,
                        stored_in: stream.clone(),
                    })),
                }
            }
            // Decided against the state *after* another attempt at this same command stored
            // it (its lookup above came just too early): the original outcome is the answer,
            // not this attempt's refusal or "nothing to do".
            outcome @ (Err(CommandError::Rejected(_)) | Ok(_)) if maybe_stored => {
                if outcome.as_ref().is_ok_and(|events| !events.is_empty()) {
                    return outcome;
                }
                match self.original_outcome(stream, command_id).await? {
                    Some(original) => Ok(original),
                    None => outcome,
                }
            }
            other => other,
        }
    }

    /// The events `command_id` stored on `stream`, if it stored any, decoded; they are the
    /// run of consecutive events whose ids derive from it.
    async fn original_outcome(
        &self,
        stream: &StreamId,
        command_id: CommandId,
    ) -> Result<Option<Vec<EventEnvelope<A::Event>>>> {
        let Some(first) = self.store.read_event(command_id.event_id(0)).await? else {
            return Ok(None);
        };
        if &first.stream_id != stream {
            return Err(Error::CommandReused {
                command_id,
                stored_in: first.stream_id,
            });
        }
        let mut original = Vec::new();
        let mut next = first.stream_version;
        loop {
            let page = self.store.read_stream(stream, next, LOAD_PAGE).await?;
            let full = page.len() == LOAD_PAGE;
            for recorded in &page {
                if recorded.event_id != command_id.event_id(original.len()) {
                    return Ok(Some(original));
                }
                original.push(recorded.decode::<A::Event>(&self.upcasters)?);
                next = recorded.stream_version + 1;
            }
            if !full {
                return Ok(Some(original));
            }
        }
    }

    async fn try_execute(
        &self,
        id: &A::Id,
        stream: &StreamId,
        command: A::Command,
        command_id: CommandId,
        metadata: &Metadata,
    ) -> Result<Vec<EventEnvelope<A::Event>>, CommandError<A::Error>> {
        let LoadedAggregate {
            mut state, version, ..
        } = self.load_stream(stream).await?;
        let events = state
            .handle(id, command, &self.services)
            .map_err(CommandError::Rejected)?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let new_events = events
            .iter()
            .enumerate()
            .map(|(i, event)| NewEvent::with_id(command_id.event_id(i), event))
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
        if written.already_stored {
            // Another attempt at this command stored it first; what it decided is the outcome.
            return Ok(self
                .original_outcome(stream, command_id)
                .await?
                .unwrap_or_default());
        }

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

    /// Saves a snapshot. A failure is logged and goes no further: a snapshot is only a
    /// cache, and the events are already stored.
    async fn save_snapshot(&self, stream: &StreamId, state: &A, version: u64) {
        let state = match serde_json::to_value(state) {
            Ok(state) => state,
            Err(error) => {
                tracing::warn!(%stream, %error, "the state does not serialise; no snapshot taken");
                return;
            }
        };
        let snapshot = Snapshot {
            stream_id: stream.clone(),
            version,
            schema_version: A::SNAPSHOT_VERSION,
            state,
            taken_at: Utc::now(),
        };
        if let Err(error) = self.store.save_snapshot(&snapshot).await {
            tracing::warn!(%stream, %error, "a snapshot was not saved (the events are)");
        }
    }
}

impl<A: Aggregate> std::fmt::Debug for Repository<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("aggregate", &A::TYPE)
            .field("snapshots", &self.snapshots)
            .field("conflict_retries", &self.conflict_retries)
            .field("unavailable_retries", &self.unavailable.retries)
            .finish_non_exhaustive()
    }
}
