//! [`CommandId`]: the identity of one command, from which its events' ids derive.
//!
//! A command keeps its id across every attempt to carry it out: the client's retry after a
//! lost reply, the repository's retry after the store was unavailable, a process manager
//! handling the same event again. Because the ids of the events it stores are derived from
//! it, a second attempt finds the first one's events and answers with them instead of
//! writing again (invariant 14, "effects happen once, by id").
//!
//! ```
//! use cqrs_core::CommandId;
//! use uuid::Uuid;
//!
//! let command = CommandId::new();
//! // The same command always derives the same event ids…
//! assert_eq!(command.event_id(0), command.event_id(0));
//! assert_ne!(command.event_id(0), command.event_id(1));
//!
//! // …and a process manager's step derives its command's id from the causing event.
//! let causing_event = Uuid::new_v4();
//! assert_eq!(
//!     CommandId::caused_by(causing_event, "reserve:MUG"),
//!     CommandId::caused_by(causing_event, "reserve:MUG"),
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The id of one command. Equal ids mean "the same command": it is carried out at most once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandId(Uuid);

impl CommandId {
    /// A fresh random id: a new command, minted once where it enters the system.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }

    /// The id of the command a handler sends as `step` of its reaction to the event
    /// `causing_event`. Handling the same event again yields the same ids, so the commands
    /// of a redelivered event (or of a deposed worker) collapse into the originals.
    /// `step` names the command among those the event causes (`"reserve:MUG"`, `"cancel"`).
    pub fn caused_by(causing_event: Uuid, step: &str) -> Self {
        Self(Uuid::new_v5(&causing_event, step.as_bytes()))
    }

    /// The id of the command a client names by its own key (an HTTP `Idempotency-Key`,
    /// say), within `scope` (the route, the client): equal scopes and keys give equal ids.
    pub fn from_key(scope: &str, key: &str) -> Self {
        Self(Uuid::new_v5(
            &KEY_NAMESPACE,
            format!("{scope}\n{key}").as_bytes(),
        ))
    }

    /// The id of the `index`th event (from 0) this command stores.
    pub fn event_id(&self, index: usize) -> Uuid {
        Uuid::new_v5(&self.0, &(index as u64).to_be_bytes())
    }

    /// The id as a UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// The namespace of [`CommandId::from_key`].
const KEY_NAMESPACE: Uuid = Uuid::from_u128(0x6a1f_3c52_94d8_4e0b_8c57_d2a0_41f7_b913);

impl Default for CommandId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for CommandId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl fmt::Display for CommandId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for CommandId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = CommandId::new();
        let b = CommandId::new();
        assert_ne!(a.event_id(0), b.event_id(0));
        assert_eq!(a.event_id(3), CommandId::from(a.as_uuid()).event_id(3));
        let event = Uuid::new_v4();
        assert_ne!(
            CommandId::caused_by(event, "a"),
            CommandId::caused_by(event, "b")
        );
        assert_eq!(
            CommandId::from_key("POST /orders", "k1"),
            CommandId::from_key("POST /orders", "k1")
        );
        assert_ne!(
            CommandId::from_key("POST /orders", "k1"),
            CommandId::from_key("POST /products", "k1")
        );
    }
}
