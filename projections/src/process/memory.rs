//! [`MemoryInstances`]: process-manager instances in memory (the embedded default).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use uuid::Uuid;

use super::step::DeadlineChanges;
use super::store::{
    Claimed, InputKind, InstanceState, InstanceStatus, InstanceStore, NewInput, PendingInput,
    ProcessSummary,
};
use crate::dead_letters::Resolution;
use crate::error::Result;

/// Instances of every process manager, in memory. Clones share the same data.
#[derive(Clone, Debug, Default)]
pub struct MemoryInstances {
    processes: Arc<Mutex<HashMap<String, Process>>>,
}

#[derive(Debug, Default)]
struct Process {
    intake: Position,
    /// Every input filed (events and deadlines) with when it was due, so none is filed
    /// twice; done ones are forgotten by [`InstanceStore::prune_done`].
    seen: HashMap<Uuid, DateTime<Utc>>,
    next_seq: u64,
    instances: BTreeMap<String, Instance>,
}

#[derive(Debug)]
struct Instance {
    state: Value,
    parked: Option<Uuid>,
    claimed_until: Option<DateTime<Utc>>,
    epoch: u64,
    /// Pending inputs by sequence.
    inputs: BTreeMap<u64, Pending>,
}

#[derive(Clone, Debug)]
struct Pending {
    id: Uuid,
    deadline: Option<String>,
    due_at: DateTime<Utc>,
    /// Failures in a row, the last one, and when it may be tried again.
    attempts: u32,
    last_error: Option<String>,
    not_before: Option<DateTime<Utc>>,
}

impl Pending {
    fn new(id: Uuid, deadline: Option<String>, due_at: DateTime<Utc>) -> Self {
        Self {
            id,
            deadline,
            due_at,
            attempts: 0,
            last_error: None,
            not_before: None,
        }
    }

    /// When it may run: due, and past its backoff.
    fn runs_at(&self) -> DateTime<Utc> {
        self.not_before.map_or(self.due_at, |t| t.max(self.due_at))
    }
}

impl Instance {
    fn new() -> Self {
        Self {
            state: Value::Null,
            parked: None,
            claimed_until: None,
            epoch: 0,
            inputs: BTreeMap::new(),
        }
    }

    /// The inputs that may run next: its pending deadlines, and its oldest pending event
    /// (events run in order: one waiting for its retry holds back those after it).
    fn candidates(&self) -> impl Iterator<Item = (&u64, &Pending)> {
        let first_event = self.inputs.iter().find(|(_, p)| p.deadline.is_none());
        self.inputs
            .iter()
            .filter(|(_, p)| p.deadline.is_some())
            .chain(first_event)
    }

    /// When it next has something to do.
    fn next_at(&self) -> Option<DateTime<Utc>> {
        if self.parked.is_some() {
            return None;
        }
        self.candidates().map(|(_, p)| p.runs_at()).min()
    }

    /// The input to react to now: a deadline first, then the oldest event; each only once
    /// due and past its backoff.
    fn next_input(&self, now: DateTime<Utc>) -> Option<(u64, &Pending)> {
        self.candidates()
            .filter(|(_, p)| p.runs_at() <= now)
            .min_by_key(|(seq, p)| (p.deadline.is_none(), **seq))
            .map(|(seq, p)| (*seq, p))
    }

    /// Its most failed pending input.
    fn failing(&self) -> Option<&Pending> {
        self.inputs
            .iter()
            .filter(|(_, p)| p.attempts > 0)
            .min_by_key(|(seq, p)| (std::cmp::Reverse(p.attempts), **seq))
            .map(|(_, p)| p)
    }

    fn input(&mut self, id: Uuid) -> Option<&mut Pending> {
        self.inputs.values_mut().find(|p| p.id == id)
    }

    fn status(&self, instance: &str) -> InstanceStatus {
        let failing = self.failing();
        InstanceStatus {
            instance: instance.to_owned(),
            state: if self.parked.is_some() {
                InstanceState::Parked
            } else if failing.is_some() {
                InstanceState::Retrying
            } else {
                InstanceState::Active
            },
            attempts: failing.map_or(0, |p| p.attempts),
            last_error: failing.and_then(|p| p.last_error.clone()),
            next_at: self.next_at(),
            pending: self.inputs.len() as u64,
            data: self.state.clone(),
        }
    }

    /// Applies the deadline changes of a reaction to `claimed`; a deadline filed before
    /// (`filed`, even if it fired since) is not filed again, and the claimed input itself
    /// (a deadline being retried) is never dropped.
    fn apply(
        &mut self,
        next_seq: &mut u64,
        filed: &mut HashMap<Uuid, DateTime<Utc>>,
        claimed: Uuid,
        changes: &DeadlineChanges,
    ) {
        let names = changes.names();
        let mut keep: HashSet<Uuid> = changes.scheduled.iter().map(|d| d.id).collect();
        keep.insert(claimed);
        self.inputs.retain(|_, p| {
            keep.contains(&p.id) || !p.deadline.as_ref().is_some_and(|n| names.contains(n))
        });
        for deadline in &changes.scheduled {
            if filed.insert(deadline.id, deadline.due_at).is_some() {
                continue;
            }
            *next_seq += 1;
            self.inputs.insert(
                *next_seq,
                Pending::new(deadline.id, Some(deadline.name.clone()), deadline.due_at),
            );
        }
    }
}

/// `at` plus `wait`, or the end of time when that overflows.
fn after(at: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait)
        .ok()
        .and_then(|wait| at.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl MemoryInstances {
    /// No instances.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Process>> {
        self.processes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` on the claimed instance if its claim holds.
    fn under_claim(
        &self,
        process: &str,
        claimed: &Claimed,
        write: impl FnOnce(&mut Instance, &mut u64, &mut HashMap<Uuid, DateTime<Utc>>),
    ) -> bool {
        let mut processes = self.lock();
        let Some(p) = processes.get_mut(process) else {
            return false;
        };
        let Process {
            instances,
            next_seq,
            seen,
            ..
        } = p;
        match instances.get_mut(&claimed.instance) {
            Some(instance) if instance.epoch == claimed.epoch => {
                write(instance, next_seq, seen);
                instance.claimed_until = None;
                true
            }
            _ => false,
        }
    }
}

#[async_trait]
impl InstanceStore for MemoryInstances {
    async fn intake_position(&self, process: &str) -> Result<Position> {
        Ok(self
            .lock()
            .get(process)
            .map_or(Position::START, |p| p.intake))
    }

    async fn enqueue(
        &self,
        process: &str,
        inputs: &[NewInput],
        scanned_to: Position,
    ) -> Result<()> {
        let now = Utc::now();
        let mut processes = self.lock();
        let p = processes.entry(process.to_owned()).or_default();
        for input in inputs {
            if p.seen.insert(input.event_id, now).is_some() {
                continue;
            }
            p.next_seq += 1;
            p.instances
                .entry(input.instance.clone())
                .or_insert_with(Instance::new)
                .inputs
                .insert(p.next_seq, Pending::new(input.event_id, None, now));
        }
        p.intake = p.intake.max(scanned_to);
        Ok(())
    }

    async fn claim(&self, process: &str, ttl: Duration) -> Result<Option<Claimed>> {
        let now = Utc::now();
        let mut processes = self.lock();
        let Some(p) = processes.get_mut(process) else {
            return Ok(None);
        };
        let free = |i: &Instance| i.claimed_until.is_none_or(|until| until < now);
        let next = p
            .instances
            .iter()
            .filter(|(_, i)| free(i))
            .filter_map(|(name, i)| i.next_at().filter(|at| *at <= now).map(|at| (at, name)))
            .filter(|(_, name)| p.instances[*name].next_input(now).is_some())
            .min()
            .map(|(_, name)| name.clone());
        let Some(name) = next else {
            return Ok(None);
        };
        let Some(instance) = p.instances.get_mut(&name) else {
            return Ok(None);
        };
        let Some((_, input)) = instance.next_input(now) else {
            return Ok(None);
        };
        let attempts = input.attempts;
        let input = PendingInput {
            id: input.id,
            kind: match &input.deadline {
                None => InputKind::Event,
                Some(name) => InputKind::Deadline {
                    name: name.clone(),
                    due_at: input.due_at,
                },
            },
        };
        instance.epoch += 1;
        instance.claimed_until = Some(after(now, ttl));
        Ok(Some(Claimed {
            instance: name,
            state: instance.state.clone(),
            epoch: instance.epoch,
            attempts,
            input,
        }))
    }

    async fn complete(
        &self,
        process: &str,
        claimed: &Claimed,
        state: Value,
        deadlines: &DeadlineChanges,
    ) -> Result<bool> {
        let done = claimed.input.id;
        Ok(
            self.under_claim(process, claimed, |instance, next_seq, filed| {
                instance.state = state;
                instance.inputs.retain(|_, p| p.id != done);
                instance.apply(next_seq, filed, done, deadlines);
            }),
        )
    }

    async fn retry_later(
        &self,
        process: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        deadlines: &DeadlineChanges,
    ) -> Result<bool> {
        let at = after(Utc::now(), delay);
        let failed = claimed.input.id;
        Ok(
            self.under_claim(process, claimed, |instance, next_seq, filed| {
                if let Some(input) = instance.input(failed) {
                    input.attempts += 1;
                    input.last_error = Some(error.to_owned());
                    input.not_before = Some(at);
                }
                instance.apply(next_seq, filed, failed, deadlines);
            }),
        )
    }

    async fn park(&self, process: &str, claimed: &Claimed, reason: &str) -> Result<bool> {
        Ok(self.under_claim(process, claimed, |instance, _, _| {
            instance.parked = Some(claimed.input.id);
            if let Some(input) = instance.input(claimed.input.id) {
                input.attempts += 1;
                input.last_error = Some(reason.to_owned());
            }
        }))
    }

    async fn troubled(&self, process: &str) -> Result<Vec<InstanceStatus>> {
        Ok(self.lock().get(process).map_or_else(Vec::new, |p| {
            p.instances
                .iter()
                .filter(|(_, i)| i.parked.is_some() || i.failing().is_some())
                .map(|(name, i)| i.status(name))
                .collect()
        }))
    }

    async fn instance(&self, process: &str, instance: &str) -> Result<Option<InstanceStatus>> {
        Ok(self
            .lock()
            .get(process)
            .and_then(|p| p.instances.get(instance).map(|i| i.status(instance))))
    }

    async fn summary(&self, process: &str) -> Result<ProcessSummary> {
        let now = Utc::now();
        Ok(self
            .lock()
            .get(process)
            .map_or_else(ProcessSummary::default, |p| {
                let inputs = || p.instances.values().flat_map(|i| i.inputs.values());
                ProcessSummary {
                    intake_position: p.intake,
                    instances: p.instances.len() as u64,
                    retrying: p
                        .instances
                        .values()
                        .filter(|i| i.parked.is_none() && i.failing().is_some())
                        .count() as u64,
                    parked: p.instances.values().filter(|i| i.parked.is_some()).count() as u64,
                    due_inputs: inputs().filter(|i| i.due_at <= now).count() as u64,
                    scheduled_deadlines: inputs()
                        .filter(|i| i.deadline.is_some() && i.due_at > now)
                        .count() as u64,
                }
            }))
    }

    async fn resolve(&self, process: &str, instance: &str, resolution: Resolution) -> Result<bool> {
        let mut processes = self.lock();
        let Some(i) = processes
            .get_mut(process)
            .and_then(|p| p.instances.get_mut(instance))
        else {
            return Ok(false);
        };
        let Some(input) = i.parked.take() else {
            return Ok(false);
        };
        match resolution {
            Resolution::Skip => i.inputs.retain(|_, p| p.id != input),
            Resolution::Retry => {
                if let Some(input) = i.input(input) {
                    input.attempts = 0;
                    input.last_error = None;
                    input.not_before = None;
                }
            }
        }
        i.epoch += 1;
        i.claimed_until = None;
        Ok(true)
    }

    async fn prune_done(&self, process: &str, before: DateTime<Utc>) -> Result<u64> {
        let mut processes = self.lock();
        let Some(p) = processes.get_mut(process) else {
            return Ok(0);
        };
        let pending: HashSet<Uuid> = p
            .instances
            .values()
            .flat_map(|i| i.inputs.values().map(|input| input.id))
            .collect();
        let before_count = p.seen.len();
        p.seen
            .retain(|id, due_at| *due_at >= before || pending.contains(id));
        Ok((before_count - p.seen.len()) as u64)
    }

    async fn next_due_in(&self, process: &str) -> Result<Option<Duration>> {
        let now = Utc::now();
        Ok(self.lock().get(process).and_then(|p| {
            p.instances
                .values()
                .filter_map(|i| {
                    let next = i.next_at()?;
                    Some(i.claimed_until.map_or(next, |until| until.max(next)))
                })
                .min()
                .map(|at| (at - now).to_std().unwrap_or(Duration::ZERO))
        }))
    }
}
