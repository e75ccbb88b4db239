//! Upcasting: turning events stored in an old shape into the current one before decoding.
//!
//! Each step is registered for one `(event type, schema version)` and returns the payload of
//! the next version. [`Upcasters::upcast`] runs the chain until no step applies, so an event
//! written as v1 passes through v1→v2→v3 on its way to the v3 Rust type.
//!
//! ```
//! use cqrs_core::{RawEvent, Upcasters};
//! use serde_json::json;
//!
//! // v1 stored `amount` in whole euros; v2 stores minor units in `cents`.
//! let upcasters = Upcasters::new().register("Deposited", 1, |mut payload| {
//!     let euros = payload["amount"].as_u64().ok_or("v1 Deposited without an amount")?;
//!     payload["cents"] = json!(euros * 100);
//!     payload.as_object_mut().map(|o| o.remove("amount"));
//!     Ok(payload)
//! });
//!
//! let old = RawEvent { event_type: "Deposited".into(), schema_version: 1, payload: json!({ "amount": 3 }) };
//! let current = upcasters.upcast(old).unwrap();
//! assert_eq!(current.schema_version, 2);
//! assert_eq!(current.payload, json!({ "cents": 300 }));
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use crate::error::BoxError;
use crate::event::RawEvent;

type Step = Arc<dyn Fn(Value) -> Result<Value, BoxError> + Send + Sync>;

/// A registry of upcasting steps, keyed by event type and the schema version they upgrade from.
#[derive(Clone, Default)]
pub struct Upcasters {
    /// By event type, then by the schema version a step upgrades from: an event's type is
    /// looked up as it is, without a key built (and allocated) for it.
    steps: HashMap<String, HashMap<u32, Step>>,
}

/// The longest chain of steps one event may pass through; guards against a step registered in a loop.
const MAX_CHAIN: usize = 1_000;

impl Upcasters {
    /// An empty registry (every event decodes as stored).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers the step that turns `event_type` at `from_version` into `from_version + 1`.
    ///
    /// A step that cannot upgrade a payload returns an error (any error, or a text with
    /// `?`); decoding then fails with it and its causes, naming the event's position.
    pub fn register<F>(mut self, event_type: impl Into<String>, from_version: u32, step: F) -> Self
    where
        F: Fn(Value) -> Result<Value, BoxError> + Send + Sync + 'static,
    {
        self.steps
            .entry(event_type.into())
            .or_default()
            .insert(from_version, Arc::new(step));
        self
    }

    /// Runs every step that applies, oldest first, and returns the event in its newest shape.
    pub fn upcast(&self, mut event: RawEvent) -> Result<RawEvent, UpcastError> {
        self.upcast_in_place(&mut event)?;
        Ok(event)
    }

    /// [`Upcasters::upcast`] on an event the caller keeps: on an error, its type and schema
    /// version are left as they were when the failing step was reached (its payload is then
    /// gone).
    pub(crate) fn upcast_in_place(&self, event: &mut RawEvent) -> Result<(), UpcastError> {
        let Some(steps) = self.steps.get(event.event_type.as_str()) else {
            return Ok(());
        };
        for _ in 0..MAX_CHAIN {
            let Some(step) = steps.get(&event.schema_version) else {
                return Ok(());
            };
            let payload = std::mem::take(&mut event.payload);
            event.payload = step(payload).map_err(|source| UpcastError::Step {
                from_version: event.schema_version,
                source,
            })?;
            event.schema_version += 1;
        }
        Err(UpcastError::Endless)
    }
}

/// Why an event could not be brought to its current shape.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// A step refused the payload.
    #[error("upcasting from schema v{from_version} failed: {source}")]
    Step {
        /// The schema version the step upgrades from.
        from_version: u32,
        /// The step's error.
        #[source]
        source: BoxError,
    },
    /// The chain did not end (a step registered in a loop).
    #[error("more than {MAX_CHAIN} upcasting steps; is a step registered twice?")]
    Endless,
}

impl fmt::Debug for Upcasters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut keys: Vec<(&str, u32)> = self
            .steps
            .iter()
            .flat_map(|(event_type, steps)| steps.keys().map(move |v| (event_type.as_str(), *v)))
            .collect();
        keys.sort();
        f.debug_struct("Upcasters").field("steps", &keys).finish()
    }
}
