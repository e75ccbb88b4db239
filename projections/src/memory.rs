//! [`MemoryTarget`]: read models, checkpoints, leases and dead letters in memory, with the
//! same transactional behaviour as PostgreSQL (a batch's writes and its checkpoint land
//! together, or not at all; a switch waits for open batches and keeps new ones out). The
//! embedded default of the demo; nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};
use uuid::Uuid;

use crate::dead_letters::{DeadLetter, DeadLetterStatus, Resolution};
use crate::documents::Documents;
use crate::error::{Error, Result};
use crate::lease::{LeaseInfo, LeaseToken};
use crate::progress::ProgressBoard;
use crate::target::{Checkpoint, Failure, Role, StoredState, Target};

type Key = (String, String);

/// Read models in memory. Clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryTarget {
    state: Arc<Mutex<State>>,
    /// Per projection: batches hold it shared; a switch, a pause and a reset exclusively
    /// (PostgreSQL's advisory-lock gate).
    gates: Arc<Mutex<HashMap<String, Arc<RwLock<()>>>>>,
    progress: ProgressBoard,
}

#[derive(Debug)]
struct MemoryLease {
    epoch: u64,
    holder: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct State {
    /// The active generation of each projection.
    active: BTreeMap<String, u64>,
    checkpoints: BTreeMap<(String, u64), Checkpoint>,
    documents: BTreeMap<(String, u64), BTreeMap<Key, Value>>,
    /// Per projection, in the order first met.
    dead_letters: BTreeMap<String, Vec<DeadLetter>>,
    leases: HashMap<String, MemoryLease>,
    /// Since when each paused projection is paused.
    paused: HashMap<String, DateTime<Utc>>,
}

impl MemoryTarget {
    /// An empty target.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Every document of the active generation of `projection`, as `(collection, key, doc)`
    /// in order (to compare whole read models).
    pub fn documents(&self, projection: &str) -> Vec<(String, String, Value)> {
        let state = self.lock();
        let Some(active) = state.active.get(projection) else {
            return Vec::new();
        };
        state
            .documents
            .get(&(projection.to_owned(), *active))
            .map(|docs| {
                docs.iter()
                    .map(|((c, k), v)| (c.clone(), k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn gate(&self, name: &str) -> Arc<RwLock<()>> {
        let mut gates = self.gates.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(gates.entry(name.to_owned()).or_default())
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every mutation below completes without a step that can panic half-way.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Debug)]
enum Gate {
    Shared(#[allow(dead_code)] OwnedRwLockReadGuard<()>),
    Exclusive(#[allow(dead_code)] OwnedRwLockWriteGuard<()>),
}

/// One batch: writes buffered until commit, reads through to the committed documents.
#[derive(Debug)]
pub struct MemoryBatch {
    state: Arc<Mutex<State>>,
    name: String,
    generation: u64,
    role: Role,
    lease: Option<LeaseToken>,
    writes: BTreeMap<Key, Option<Value>>,
    dead_letters: Vec<(Failure, bool)>,
    retried: Vec<Uuid>,
    _gate: Gate,
}

#[async_trait]
impl Documents for MemoryBatch {
    async fn get(&mut self, collection: &str, key: &str) -> Result<Option<Value>> {
        let k = (collection.to_owned(), key.to_owned());
        if let Some(written) = self.writes.get(&k) {
            return Ok(written.clone());
        }
        let state = lock(&self.state);
        Ok(state
            .documents
            .get(&(self.name.clone(), self.generation))
            .and_then(|docs| docs.get(&k))
            .cloned())
    }

    async fn put(&mut self, collection: &str, key: &str, doc: Value) -> Result<()> {
        self.writes
            .insert((collection.to_owned(), key.to_owned()), Some(doc));
        Ok(())
    }

    async fn delete(&mut self, collection: &str, key: &str) -> Result<()> {
        self.writes
            .insert((collection.to_owned(), key.to_owned()), None);
        Ok(())
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    fn lease(&self) -> Option<&LeaseToken> {
        self.lease.as_ref()
    }
}

fn lease_lost(name: &str, from: Position) -> Error {
    Error::LeaseLost {
        projection: name.to_owned(),
        expected: from,
    }
}

impl State {
    fn stored(&self, name: &str, active: u64) -> Option<StoredState> {
        let checkpoint = self.checkpoints.get(&(name.to_owned(), active))?.clone();
        let rebuilding = self
            .checkpoints
            .range((name.to_owned(), active + 1)..=(name.to_owned(), u64::MAX))
            .next_back()
            .map(|((_, g), c)| (*g, c.clone()));
        let lease = self.leases.get(name).map(|l| LeaseInfo {
            holder: l.holder.clone(),
            epoch: l.epoch,
            live: l.expires > Instant::now(),
        });
        Some(StoredState {
            name: name.to_owned(),
            active_generation: active,
            checkpoint,
            rebuilding,
            lease,
            paused_at: self.paused.get(name).copied(),
        })
    }

    fn record_dead_letter(
        &mut self,
        name: &str,
        generation: u64,
        failure: Failure,
        blocking: bool,
    ) {
        let letters = self.dead_letters.entry(name.to_owned()).or_default();
        match letters
            .iter_mut()
            .find(|d| d.failure.event_id == failure.event_id)
        {
            Some(letter) => {
                letter.generation = generation;
                letter.failure = failure;
                letter.blocking = blocking;
                letter.status = DeadLetterStatus::Parked;
                letter.attempts += 1;
                letter.failed_at = Utc::now();
            }
            None => letters.push(DeadLetter {
                projection: name.to_owned(),
                generation,
                failure,
                blocking,
                status: DeadLetterStatus::Parked,
                attempts: 1,
                failed_at: Utc::now(),
            }),
        }
    }
}

#[async_trait]
impl Target for MemoryTarget {
    type Batch = MemoryBatch;

    async fn register(&self, name: &str, version: u32) -> Result<StoredState> {
        crate::projection::check_name(name)?;
        let mut state = self.lock();
        if !state.active.contains_key(name) {
            state.active.insert(name.to_owned(), 1);
            state
                .checkpoints
                .insert((name.to_owned(), 1), Checkpoint::start(version));
        }
        let active = state.active[name];
        state
            .stored(name, active)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    async fn state(&self, name: &str) -> Result<Option<StoredState>> {
        let state = self.lock();
        Ok(state
            .active
            .get(name)
            .and_then(|active| state.stored(name, *active)))
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        let mut state = self.lock();
        let now = Instant::now();
        let epoch = match state.leases.get(name) {
            Some(running) if running.expires > now => return Ok(None),
            Some(expired) => expired.epoch + 1,
            None => 1,
        };
        state.leases.insert(
            name.to_owned(),
            MemoryLease {
                epoch,
                holder: holder.to_owned(),
                expires: now + ttl,
            },
        );
        Ok(Some(epoch))
    }

    async fn renew_lease(&self, name: &str, epoch: u64, ttl: Duration) -> Result<bool> {
        let mut state = self.lock();
        match state.leases.get_mut(name) {
            Some(lease) if lease.epoch == epoch => {
                lease.expires = Instant::now() + ttl;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, name: &str, epoch: u64) -> Result<()> {
        if let Some(lease) = self.lock().leases.get_mut(name) {
            if lease.epoch == epoch {
                lease.expires = Instant::now();
            }
        }
        Ok(())
    }

    async fn checkpoint(&self, name: &str, generation: u64) -> Result<Option<Checkpoint>> {
        Ok(self
            .lock()
            .checkpoints
            .get(&(name.to_owned(), generation))
            .cloned())
    }

    async fn create_generation(&self, name: &str, generation: u64, version: u32) -> Result<bool> {
        let mut state = self.lock();
        let key = (name.to_owned(), generation);
        let newer = state.active.get(name).is_some_and(|a| generation > *a);
        if !newer || state.checkpoints.contains_key(&key) {
            return Ok(false);
        }
        state.checkpoints.insert(key, Checkpoint::start(version));
        Ok(true)
    }

    async fn begin(
        &self,
        name: &str,
        generation: u64,
        role: Role,
        lease: Option<LeaseToken>,
    ) -> Result<Self::Batch> {
        let gate = self.gate(name);
        let gate = match role {
            Role::Live | Role::Rebuild => Gate::Shared(gate.read_owned().await),
            Role::Switch => Gate::Exclusive(gate.write_owned().await),
        };
        let (active, paused) = {
            let state = self.lock();
            let active = *state
                .active
                .get(name)
                .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
            (active, state.paused.contains_key(name))
        };
        let plays_its_role = match role {
            Role::Live => active == generation,
            Role::Rebuild | Role::Switch => generation > active,
        };
        if !plays_its_role {
            return Err(Error::GenerationMoved {
                projection: name.to_owned(),
                generation,
                active,
            });
        }
        // A worker on a replaced generation moves over first, then finds the pause.
        if paused && role == Role::Live {
            return Err(Error::Paused(name.to_owned()));
        }
        Ok(MemoryBatch {
            state: Arc::clone(&self.state),
            name: name.to_owned(),
            generation,
            role,
            lease,
            writes: BTreeMap::new(),
            dead_letters: Vec::new(),
            retried: Vec::new(),
            _gate: gate,
        })
    }

    async fn dead_letter(
        &self,
        batch: &mut Self::Batch,
        failure: &Failure,
        blocking: bool,
    ) -> Result<()> {
        batch.dead_letters.push((failure.clone(), blocking));
        Ok(())
    }

    async fn retried(&self, batch: &mut Self::Batch, event_id: Uuid) -> Result<()> {
        batch.retried.push(event_id);
        Ok(())
    }

    async fn commit(
        &self,
        batch: Self::Batch,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut state = self.lock();
        let name = batch.name.clone();
        if let Some(lease) = &batch.lease {
            if state.leases.get(&name).map(|l| l.epoch) != Some(lease.epoch()) {
                return Err(lease_lost(&name, from));
            }
        }
        let key = (name.clone(), batch.generation);
        if state.checkpoints.get(&key).map(|c| c.position) != Some(from) {
            return Err(lease_lost(&name, from));
        }
        if batch.role == Role::Switch {
            let active = state.active.get(&name).copied().unwrap_or_default();
            let (active_at, active_version) = state
                .checkpoints
                .get(&(name.clone(), active))
                .map_or((Position::START, 0), |c| (c.position, c.version));
            let version = state.checkpoints.get(&key).map_or(0, |c| c.version);
            if version < active_version {
                return Err(Error::Superseded {
                    projection: name,
                    version,
                    active_version,
                });
            }
            if to < active_at {
                return Err(Error::RebuildBehind {
                    projection: name,
                    generation: batch.generation,
                    rebuilt: to,
                    active: active_at,
                });
            }
            state.active.insert(name.clone(), batch.generation);
            // The new generation passed every event an older one could not apply.
            for letter in state.dead_letters.entry(name.clone()).or_default() {
                if letter.generation < batch.generation && letter.status.is_open() {
                    letter.status = DeadLetterStatus::Retried;
                }
            }
        }
        let blocking = batch
            .dead_letters
            .iter()
            .find(|(_, blocking)| *blocking)
            .map(|(failure, _)| failure.clone());
        if let Some(checkpoint) = state.checkpoints.get_mut(&key) {
            checkpoint.position = to;
            if last_recorded_at.is_some() {
                checkpoint.last_recorded_at = last_recorded_at;
            }
            if blocking.is_some() {
                checkpoint.failure = blocking;
            }
        }
        let docs = state.documents.entry(key).or_default();
        for (k, v) in batch.writes {
            match v {
                Some(doc) => docs.insert(k, doc),
                None => docs.remove(&k),
            };
        }
        for (failure, blocking) in batch.dead_letters {
            state.record_dead_letter(&name, batch.generation, failure, blocking);
        }
        if let Some(letters) = state.dead_letters.get_mut(&name) {
            for letter in letters
                .iter_mut()
                .filter(|l| batch.retried.contains(&l.failure.event_id))
            {
                letter.status = DeadLetterStatus::Retried;
            }
        }
        Ok(())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        // The batch in flight ends first (PostgreSQL's exclusive gate).
        let _gate = match paused {
            true => Some(self.gate(name).write_owned().await),
            false => None,
        };
        let mut state = self.lock();
        if !state.active.contains_key(name) {
            return Ok(false);
        }
        if paused {
            state.paused.entry(name.to_owned()).or_insert_with(Utc::now);
        } else {
            state.paused.remove(name);
        }
        Ok(true)
    }

    async fn reset(&self, name: &str) -> Result<Option<u64>> {
        let _gate = self.gate(name).write_owned().await;
        let generation = {
            let mut state = self.lock();
            let Some(active) = state.active.get(name).copied() else {
                return Ok(None);
            };
            let of_name = (name.to_owned(), 0)..=(name.to_owned(), u64::MAX);
            let newest = state
                .checkpoints
                .range(of_name)
                .next_back()
                .map_or(active, |((_, g), _)| *g);
            let version = state
                .checkpoints
                .get(&(name.to_owned(), active))
                .map_or(0, |c| c.version);
            let generation = newest + 1;
            state
                .checkpoints
                .insert((name.to_owned(), generation), Checkpoint::start(version));
            state.active.insert(name.to_owned(), generation);
            for letter in state.dead_letters.entry(name.to_owned()).or_default() {
                if letter.generation < generation && letter.status.is_open() {
                    letter.status = DeadLetterStatus::Retried;
                }
            }
            generation
        };
        // Done: the worker retires the old generations too, should this fail.
        let _ = self.retire_generations(name).await;
        Ok(Some(generation))
    }

    async fn retire_generations(&self, name: &str) -> Result<u64> {
        let mut state = self.lock();
        let Some(active) = state.active.get(name).copied() else {
            return Ok(0);
        };
        let old = |(n, g): &(String, u64)| n == name && *g < active;
        state.documents.retain(|k, _| !old(k));
        let before = state.checkpoints.len();
        state.checkpoints.retain(|k, _| !old(k));
        Ok((before - state.checkpoints.len()) as u64)
    }

    async fn states(&self) -> Result<Vec<StoredState>> {
        let state = self.lock();
        Ok(state
            .active
            .iter()
            .filter_map(|(name, active)| state.stored(name, *active))
            .collect())
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        Ok(self
            .lock()
            .dead_letters
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<bool> {
        let mut state = self.lock();
        let Some(letter) = state
            .dead_letters
            .get(name)
            .and_then(|letters| letters.iter().find(|l| l.failure.event_id == event_id))
            .filter(|l| l.status.is_open())
            .cloned()
        else {
            return Ok(false);
        };
        if letter.blocking {
            // A blocking letter is its generation's failure: resolving it clears that (skip
            // also moves the checkpoint past the event). If the generation no longer stops
            // there, there is nothing to resolve.
            let checkpoint = state
                .checkpoints
                .get_mut(&(name.to_owned(), letter.generation))
                .filter(|c| c.failure.as_ref().map(|f| f.event_id) == Some(event_id));
            let Some(checkpoint) = checkpoint else {
                return Ok(false);
            };
            checkpoint.failure = None;
            if resolution == Resolution::Skip {
                checkpoint.position = checkpoint.position.max(letter.failure.position);
            }
        }
        if let Some(stored) = state
            .dead_letters
            .get_mut(name)
            .and_then(|letters| letters.iter_mut().find(|l| l.failure.event_id == event_id))
        {
            stored.status = match (letter.blocking, resolution) {
                (false, Resolution::Retry) => DeadLetterStatus::Retry,
                (true, Resolution::Retry) => DeadLetterStatus::Retried,
                (_, Resolution::Skip) => DeadLetterStatus::Skipped,
            };
        }
        Ok(true)
    }

    async fn retries_asked(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let state = self.lock();
        let active = state.active.get(name).copied();
        Ok(state
            .dead_letters
            .get(name)
            .map(|letters| {
                letters
                    .iter()
                    .filter(|l| l.status == DeadLetterStatus::Retry && Some(l.generation) == active)
                    .take(limit)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn progress(&self) -> &ProgressBoard {
        &self.progress
    }

    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        let state = self.lock();
        let Some(active) = state.active.get(projection) else {
            return Ok(None);
        };
        Ok(state
            .documents
            .get(&(projection.to_owned(), *active))
            .and_then(|docs| docs.get(&(collection.to_owned(), key.to_owned())))
            .cloned())
    }

    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>> {
        let state = self.lock();
        let Some(active) = state.active.get(projection) else {
            return Ok(Vec::new());
        };
        Ok(state
            .documents
            .get(&(projection.to_owned(), *active))
            .map(|docs| {
                docs.range((collection.to_owned(), String::new())..)
                    .take_while(|((c, _), _)| c == collection)
                    .map(|((_, k), v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }
}
