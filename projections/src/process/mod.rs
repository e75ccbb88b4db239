//! Process managers: long-running reactions to events, one **instance** per business
//! process (an order's checkout, say), each with its own state, failures and deadlines.
//!
//! A [`ProcessRunner`] reads the log from its own intake position and files every event the
//! manager wants as an *input* of the instance it belongs to
//! ([`ProcessManager::instance_of`]), once (by event id). Executors then take due instances
//! one at a time, each under a claim with a fencing epoch, and call
//! [`ProcessManager::react`] with the instance's state and its next input:
//!
//! - **success** stores the new state, marks the input done and records the deadlines the
//!   reaction scheduled or cancelled, in one fenced write;
//! - a **transient** failure ([`ApplyError::Transient`], a storage error, a reaction that
//!   outran its time) schedules a retry of *that instance* with exponential backoff, while
//!   every other instance goes on;
//! - a **poison** failure ([`ApplyError::Poison`]) *parks* the instance with its reason:
//!   visible in [`InstanceStore::troubled`], retried or skipped by an operator
//!   ([`InstanceStore::resolve`]); the others go on.
//!
//! A **deadline** ([`Step::schedule`]) is an input due at a time: durable (it is a row, on
//! PostgreSQL), and done in the same write as the state its reaction produced, so it fires
//! once; a reaction killed half-way runs again, and the commands it sends carry ids derived
//! from the input and the step ([`Step::command_id`]), so what it sent before collapses into
//! the originals (invariant 14). Deadlines due are taken before the instance's other inputs:
//! a timeout fires even while the instance's current event keeps failing.
//!
//! Inputs of one instance are handled in log order, one at a time; instances run in
//! parallel ([`ProcessOptions::executors`]) and across processes.
//!
//! ```
//! use async_trait::async_trait;
//! use chrono::{Duration, Utc};
//! use cqrs_core::{EventFilter, RecordedEvent};
//! use projections::process::{Input, ProcessManager, Step};
//! use projections::ApplyError;
//!
//! /// Reminds a customer who left a cart for an hour, once.
//! struct Reminders;
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Cart { checked_out: bool }
//!
//! #[async_trait]
//! impl ProcessManager for Reminders {
//!     type State = Cart;
//!     fn name(&self) -> &str { "reminders" }
//!     fn filter(&self) -> EventFilter { EventFilter::all().categories(["cart"]) }
//!     fn instance_of(&self, event: &RecordedEvent) -> Option<String> {
//!         Some(event.stream_id.as_str().to_owned())
//!     }
//!     async fn react(&self, cart: &mut Cart, input: &Input, step: &mut Step) -> Result<(), ApplyError> {
//!         match input {
//!             Input::Event(e) if e.event.event_type == "ItemAdded" => {
//!                 step.schedule("remind", Utc::now() + Duration::hours(1));
//!             }
//!             Input::Event(e) if e.event.event_type == "CheckedOut" => {
//!                 cart.checked_out = true;
//!                 step.cancel("remind");
//!             }
//!             Input::Deadline(d) if d.name == "remind" && !cart.checked_out => {
//!                 // send the reminder with key step.command_id("remind")
//!             }
//!             _ => {}
//!         }
//!         Ok(())
//!     }
//! }
//! ```

mod memory;
#[cfg(feature = "postgres")]
mod postgres;
mod runner;
mod step;
mod store;

use async_trait::async_trait;
use cqrs_core::{EventFilter, RecordedEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use memory::MemoryInstances;
#[cfg(feature = "postgres")]
pub use postgres::PgInstances;
pub use runner::{ProcessOptions, ProcessRunner, Settled};
pub use step::{Deadline, DeadlineChanges, Step, CLAIM_EPOCH};
pub use store::{
    Claimed, InputKind, InstanceState, InstanceStatus, InstanceStore, NewInput, PendingInput,
    ProcessSummary,
};

use crate::projection::ApplyError;

/// What an instance reacts to: an event of the log, or one of its deadlines coming due.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // held one at a time: a box would only add an allocation
pub enum Input {
    /// An event the manager's filter let through, filed under this instance.
    Event(RecordedEvent),
    /// A deadline the instance scheduled, now due.
    Deadline(Deadline),
}

impl Input {
    /// The input's id: the event's id, or the deadline's.
    pub fn id(&self) -> uuid::Uuid {
        match self {
            Self::Event(event) => event.event_id,
            Self::Deadline(deadline) => deadline.id,
        }
    }
}

/// A process manager: reacts to events (and its own deadlines) per instance.
#[async_trait]
pub trait ProcessManager: Send + Sync + 'static {
    /// The state one instance keeps between its inputs (the default for a new instance).
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// The manager's unique name: lowercase letters, digits and `_`.
    fn name(&self) -> &str;

    /// Which events it wants.
    fn filter(&self) -> EventFilter;

    /// The instance an event belongs to (an order id, a correlation id), or `None` for an
    /// event this manager ignores.
    fn instance_of(&self, event: &RecordedEvent) -> Option<String>;

    /// Reacts to one input of one instance. Changes to `state` are kept only when it
    /// returns `Ok`; a reaction may run more than once (after a crash or a transient
    /// failure), so its effects must be idempotent: send commands with
    /// [`Step::command_id`], and outside calls with keys derived from it.
    async fn react(
        &self,
        state: &mut Self::State,
        input: &Input,
        step: &mut Step,
    ) -> Result<(), ApplyError>;
}
