//! [`Step`]: what a reaction can do besides changing its instance's state.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use cqrs_core::{CommandId, Metadata};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::projection::ApplyError;

/// The metadata key of the claim epoch a process manager's command was sent under.
pub const CLAIM_EPOCH: &str = "claim_epoch";

/// A deadline: an input of its instance, due at a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deadline {
    /// Its id: derived from the input whose reaction scheduled it and its name, so that
    /// scheduling it again from a repeated reaction changes nothing.
    pub id: Uuid,
    /// Its name within the instance (scheduling a name again replaces the pending one).
    pub name: String,
    /// When it is due.
    pub due_at: DateTime<Utc>,
}

/// The deadlines a reaction scheduled and cancelled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeadlineChanges {
    /// Deadlines to add; each replaces a pending one of the same name.
    pub scheduled: Vec<Deadline>,
    /// Names whose pending deadlines are dropped.
    pub cancelled: Vec<String>,
}

impl DeadlineChanges {
    /// Every name the changes touch (a scheduled name replaces its pending deadline).
    pub fn names(&self) -> Vec<String> {
        self.scheduled
            .iter()
            .map(|d| d.name.clone())
            .chain(self.cancelled.iter().cloned())
            .collect()
    }
}

/// The context of one reaction: the ids its commands take, its deadlines, its claim.
#[derive(Debug)]
pub struct Step {
    instance: String,
    input_id: Uuid,
    epoch: u64,
    claimed_until: Instant,
    /// Shared with the runner, so that a reaction stopped for running too long still has
    /// its deadlines kept with its retry.
    changes: Arc<Mutex<DeadlineChanges>>,
}

impl Step {
    /// The step of a reaction to input `input_id` of `instance`, under claim `epoch`, which
    /// lasts until `claimed_until`.
    pub fn new(instance: &str, input_id: Uuid, epoch: u64, claimed_until: Instant) -> Self {
        Self {
            instance: instance.to_owned(),
            input_id,
            epoch,
            claimed_until,
            changes: Arc::default(),
        }
    }

    /// The instance.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// The id of the input reacted to.
    pub fn input_id(&self) -> Uuid {
        self.input_id
    }

    /// The claim's fencing epoch: a later claim of the instance has a higher one.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The id of the command this reaction sends as `step` (`"reserve:MUG"`, `"cancel"`):
    /// the same every time the reaction runs, so a repeated reaction's commands collapse
    /// into the first one's. Also the idempotency key for a call to an outside service.
    pub fn command_id(&self, step: &str) -> CommandId {
        CommandId::caused_by(self.input_id, step)
    }

    /// Metadata for the command of `step`: `caused` with [`Step::command_id`] and the claim
    /// epoch ([`CLAIM_EPOCH`]).
    pub fn metadata(&self, caused: Metadata, step: &str) -> Metadata {
        caused
            .with_command_id(self.command_id(step))
            .with(CLAIM_EPOCH, self.epoch.to_string())
    }

    /// Fails (transiently) once the claim has run out: another executor may hold the
    /// instance now. Call it before an effect.
    pub fn ensure_claimed(&self) -> Result<(), ApplyError> {
        if Instant::now() < self.claimed_until {
            Ok(())
        } else {
            Err(ApplyError::transient(format!(
                "the claim of instance {} (epoch {}) ran out",
                self.instance, self.epoch
            )))
        }
    }

    /// Asks to be woken with [`Input::Deadline`](super::Input::Deadline) named `name` at
    /// `due_at` (replacing a pending deadline of that name).
    pub fn schedule(&mut self, name: &str, due_at: DateTime<Utc>) {
        let id = Uuid::new_v5(&self.input_id, format!("deadline:{name}").as_bytes());
        let mut changes = self.lock();
        changes.scheduled.retain(|d| d.name != name);
        changes.cancelled.retain(|n| n != name);
        changes.scheduled.push(Deadline {
            id,
            name: name.to_owned(),
            due_at,
        });
    }

    /// Drops the pending deadline named `name`, if any.
    pub fn cancel(&mut self, name: &str) {
        let mut changes = self.lock();
        changes.scheduled.retain(|d| d.name != name);
        if !changes.cancelled.iter().any(|n| n == name) {
            changes.cancelled.push(name.to_owned());
        }
    }

    /// The deadlines scheduled and cancelled so far.
    pub fn changes(&self) -> DeadlineChanges {
        self.lock().clone()
    }

    /// The changes as the runner follows them while the reaction runs.
    pub(crate) fn shared_changes(&self) -> Arc<Mutex<DeadlineChanges>> {
        Arc::clone(&self.changes)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DeadlineChanges> {
        self.changes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
