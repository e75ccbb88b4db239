//! [`InstanceStore`]: where a process manager keeps its instances, their inputs and its
//! intake position.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::step::DeadlineChanges;
use crate::dead_letters::Resolution;
use crate::error::Result;

/// An event filed as an input of an instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInput {
    /// The instance.
    pub instance: String,
    /// The event.
    pub event_id: Uuid,
}

/// What kind of input is pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// An event (read from the store by its id).
    Event,
    /// A deadline.
    Deadline {
        /// Its name.
        name: String,
        /// When it came due.
        due_at: DateTime<Utc>,
    },
}

/// The next input of a claimed instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingInput {
    /// The event's or the deadline's id.
    pub id: Uuid,
    /// Which.
    pub kind: InputKind,
}

/// An instance claimed by an executor, with its next input.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    /// The instance.
    pub instance: String,
    /// Its state as stored (`null` for a new one).
    pub state: Value,
    /// The claim's fencing epoch: writes under an older one are refused.
    pub epoch: u64,
    /// How many times in a row its current input failed.
    pub attempts: u32,
    /// The input to react to.
    pub input: PendingInput,
}

/// Where an instance stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Handling its inputs (or waiting for some).
    Active,
    /// Its current input failed transiently; it is retried at `next_at`.
    Retrying,
    /// Its current input failed for good; it waits for an operator.
    Parked,
}

/// One instance, as an operator sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceStatus {
    /// The instance.
    pub instance: String,
    /// Where it stands.
    pub state: InstanceState,
    /// Failures in a row of its current input.
    pub attempts: u32,
    /// The last failure.
    pub last_error: Option<String>,
    /// When it next runs (a retry, a deadline), if it has anything to do.
    pub next_at: Option<DateTime<Utc>>,
    /// Its inputs not handled yet (deadlines not due included).
    pub pending: u64,
    /// The manager's data for it: its [`State`](super::ProcessManager::State) as JSON
    /// (`null` before its first reaction).
    pub data: Value,
}

/// A process manager at a glance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProcessSummary {
    /// Where its intake has read the log to.
    pub intake_position: Position,
    /// Instances it knows.
    pub instances: u64,
    /// Instances waiting to retry.
    pub retrying: u64,
    /// Instances parked.
    pub parked: u64,
    /// Inputs due and not handled yet.
    pub due_inputs: u64,
    /// Deadlines not due yet.
    pub scheduled_deadlines: u64,
}

/// Storage of a process manager's instances. Every write under a claim checks the claim's
/// epoch: an executor whose claim was taken over writes nothing.
#[async_trait]
pub trait InstanceStore: Send + Sync + 'static {
    /// Where the intake of `process` has read the log to.
    async fn intake_position(&self, process: &str) -> Result<Position>;

    /// Files `inputs` (each at most once, by event id, in the order given) and moves the
    /// intake position on to `scanned_to` (never back).
    async fn enqueue(&self, process: &str, inputs: &[NewInput], scanned_to: Position)
        -> Result<()>;

    /// Claims the instance whose next input has been due longest, for `ttl`, with a new
    /// epoch; `None` when no instance has anything due.
    async fn claim(&self, process: &str, ttl: Duration) -> Result<Option<Claimed>>;

    /// Stores `state`, marks the claimed input done and applies `deadlines`, if the claim
    /// still holds; `false` (nothing written) when it was taken over.
    async fn complete(
        &self,
        process: &str,
        claimed: &Claimed,
        state: Value,
        deadlines: &DeadlineChanges,
    ) -> Result<bool>;

    /// Records a transient failure of the claimed input and schedules its retry after
    /// `delay` (sooner if a deadline comes due first), applying `deadlines`; `false` when
    /// the claim was taken over.
    async fn retry_later(
        &self,
        process: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        deadlines: &DeadlineChanges,
    ) -> Result<bool>;

    /// Parks the instance at the claimed input with `reason`; `false` when the claim was
    /// taken over.
    async fn park(&self, process: &str, claimed: &Claimed, reason: &str) -> Result<bool>;

    /// The instances that are retrying or parked.
    async fn troubled(&self, process: &str) -> Result<Vec<InstanceStatus>>;

    /// One instance, if known.
    async fn instance(&self, process: &str, instance: &str) -> Result<Option<InstanceStatus>>;

    /// Counts.
    async fn summary(&self, process: &str) -> Result<ProcessSummary>;

    /// An operator's decision for a parked instance: retry its input, or skip it and go on
    /// with the next. `false` when the instance is not parked.
    async fn resolve(&self, process: &str, instance: &str, resolution: Resolution) -> Result<bool>;

    /// How long until the next instance comes due (a retry or a deadline), if any.
    async fn next_due_in(&self, process: &str) -> Result<Option<Duration>>;

    /// Forgets the inputs done that were due before `before` (their ids, kept so that an
    /// event filed again is not handled again); returns how many. Instances and pending
    /// inputs are kept.
    async fn prune_done(&self, process: &str, before: DateTime<Utc>) -> Result<u64>;
}
