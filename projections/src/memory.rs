//! [`MemoryTarget`]: read models, checkpoints and leases in memory, with the same
//! transactional behaviour as PostgreSQL (a batch's writes and its checkpoint land together,
//! or not at all). The embedded default of the demo; nothing survives the process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use tokio::sync::OwnedMutexGuard;

use crate::documents::Documents;
use crate::error::{Error, Result};
use crate::target::{Checkpoint, Failure, Role, StoredState, Target};

type Key = (String, String);

/// Read models in memory. Clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryTarget {
    state: Arc<Mutex<State>>,
    leases: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

#[derive(Debug, Default)]
struct State {
    /// Active generation and failure of each projection.
    projections: BTreeMap<String, (u64, Option<Failure>)>,
    checkpoints: BTreeMap<(String, u64), Checkpoint>,
    documents: BTreeMap<(String, u64), BTreeMap<Key, Value>>,
    dead_letters: BTreeMap<String, Vec<Failure>>,
}

impl MemoryTarget {
    /// An empty target.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every mutation below completes without a step that can panic half-way.
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One batch: writes buffered until commit, reads through to the committed documents.
#[derive(Debug)]
pub struct MemoryBatch {
    state: Arc<Mutex<State>>,
    name: String,
    generation: u64,
    writes: BTreeMap<Key, Option<Value>>,
    dead_letters: Vec<Failure>,
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
}

fn lease_lost(name: &str, from: Position) -> Error {
    Error::LeaseLost {
        projection: name.to_owned(),
        expected: from,
    }
}

#[async_trait]
impl Target for MemoryTarget {
    type Batch = MemoryBatch;
    type Lease = OwnedMutexGuard<()>;

    async fn register(&self, name: &str, version: u32) -> Result<StoredState> {
        crate::projection::check_name(name)?;
        {
            let mut state = self.lock();
            if !state.projections.contains_key(name) {
                state.projections.insert(name.to_owned(), (1, None));
                state.checkpoints.insert(
                    (name.to_owned(), 1),
                    Checkpoint {
                        position: Position::START,
                        version,
                        last_recorded_at: None,
                    },
                );
            }
        }
        self.states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Self::Lease>> {
        let mutex = {
            let mut leases = self.leases.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(leases.entry(name.to_owned()).or_default())
        };
        Ok(mutex.try_lock_owned().ok())
    }

    async fn lease_held(&self, _lease: &mut Self::Lease) -> bool {
        true
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
        if state.checkpoints.contains_key(&key) {
            return Ok(false);
        }
        state.checkpoints.insert(
            key,
            Checkpoint {
                position: Position::START,
                version,
                last_recorded_at: None,
            },
        );
        Ok(true)
    }

    async fn begin(&self, name: &str, generation: u64) -> Result<Self::Batch> {
        Ok(MemoryBatch {
            state: Arc::clone(&self.state),
            name: name.to_owned(),
            generation,
            writes: BTreeMap::new(),
            dead_letters: Vec::new(),
        })
    }

    async fn dead_letter(&self, batch: &mut Self::Batch, failure: &Failure) -> Result<()> {
        batch.dead_letters.push(failure.clone());
        Ok(())
    }

    async fn commit(
        &self,
        batch: Self::Batch,
        role: Role,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        let mut state = self.lock();
        let name = batch.name.clone();
        let active = state.projections.get(&name).map(|(g, _)| *g);
        let role_holds = match role {
            Role::Live => active == Some(batch.generation),
            Role::Rebuild => active.is_some_and(|a| batch.generation > a),
        };
        let key = (name.clone(), batch.generation);
        let checkpoint = state
            .checkpoints
            .get_mut(&key)
            .filter(|c| role_holds && c.position == from)
            .ok_or_else(|| lease_lost(&name, from))?;
        checkpoint.position = to;
        if last_recorded_at.is_some() {
            checkpoint.last_recorded_at = last_recorded_at;
        }
        let docs = state.documents.entry(key).or_default();
        for (k, v) in batch.writes {
            match v {
                Some(doc) => docs.insert(k, doc),
                None => docs.remove(&k),
            };
        }
        state
            .dead_letters
            .entry(name)
            .or_default()
            .extend(batch.dead_letters);
        Ok(())
    }

    async fn set_failure(&self, name: &str, failure: Option<&Failure>) -> Result<()> {
        if let Some(entry) = self.lock().projections.get_mut(name) {
            entry.1 = failure.cloned();
        }
        Ok(())
    }

    async fn switch_generation(&self, name: &str, generation: u64) -> Result<()> {
        let mut state = self.lock();
        let previous = match state.projections.get_mut(name) {
            Some(entry) => std::mem::replace(&mut entry.0, generation),
            None => return Err(Error::UnknownProjection(name.to_owned())),
        };
        let old = (name.to_owned(), previous);
        state.documents.remove(&old);
        state.checkpoints.remove(&old);
        Ok(())
    }

    async fn states(&self) -> Result<Vec<StoredState>> {
        let state = self.lock();
        Ok(state
            .projections
            .iter()
            .filter_map(|(name, (active, failure))| {
                let checkpoint = state.checkpoints.get(&(name.clone(), *active))?.clone();
                let rebuilding = state
                    .checkpoints
                    .range((name.clone(), active + 1)..=(name.clone(), u64::MAX))
                    .next_back()
                    .map(|((_, g), c)| (*g, c.clone()));
                Some(StoredState {
                    name: name.clone(),
                    active_generation: *active,
                    checkpoint,
                    rebuilding,
                    failure: failure.clone(),
                })
            })
            .collect())
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<Failure>> {
        Ok(self
            .lock()
            .dead_letters
            .get(name)
            .cloned()
            .unwrap_or_default())
    }

    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        let state = self.lock();
        let Some((active, _)) = state.projections.get(projection) else {
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
        let Some((active, _)) = state.projections.get(projection) else {
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
