//! Events and what travels with them: [`DomainEvent`], [`Metadata`], [`EventEnvelope`].

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::command::CommandId;
use crate::error::{BoxError, Error, Result};
use crate::stream::{Position, StreamId};
use crate::upcast::Upcasters;

/// A fact that happened in the domain, named in the past tense.
///
/// Events are stored as JSON with a stable type name and a schema version. The default
/// encoding fits the usual shape, an externally tagged serde enum: the serde variant name is
/// the type name (decouple it from the Rust name with `#[serde(rename = "…")]`) and the
/// variant's content is the payload. Other shapes override `encode` and `decode`.
///
/// ```
/// use cqrs_core::DomainEvent;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
/// enum AccountEvent {
///     Opened { owner: String },
///     Deposited { amount: u64 },
/// }
///
/// impl DomainEvent for AccountEvent {
///     fn event_type(&self) -> &'static str {
///         match self {
///             Self::Opened { .. } => "Opened",
///             Self::Deposited { .. } => "Deposited",
///         }
///     }
/// }
///
/// let payload = AccountEvent::Deposited { amount: 5 }.encode().unwrap();
/// assert_eq!(payload, serde_json::json!({ "amount": 5 }));
/// let back = AccountEvent::decode("Deposited", payload).unwrap();
/// assert_eq!(back, AccountEvent::Deposited { amount: 5 });
/// ```
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + Send + Sync + 'static
{
    /// The stable name stored with the event. Renaming a Rust variant must not change it.
    ///
    /// The default is the serde variant name of an externally tagged enum (so rename with
    /// `#[serde(rename = "…")]`, not by hand); any other shape overrides it, with `encode`
    /// and `decode`.
    fn event_type(&self) -> &'static str {
        crate::event_types::variant_name(self).unwrap_or("")
    }

    /// The schema version of this event's current shape; bump it (and register an upcaster)
    /// when the payload changes shape.
    fn schema_version(&self) -> u32 {
        1
    }

    /// Encodes the payload. The default stores the content of an externally tagged enum
    /// variant (`{"Deposited": {"amount": 5}}` is stored as `{"amount": 5}`).
    fn encode(&self) -> std::result::Result<Value, serde_json::Error> {
        match serde_json::to_value(self)? {
            Value::Object(mut map) if map.len() == 1 && map.contains_key(self.event_type()) => {
                Ok(map.remove(self.event_type()).unwrap_or(Value::Null))
            }
            Value::String(name) if name == self.event_type() => Ok(Value::Null),
            _ => Err(serde::ser::Error::custom(format!(
                "the default encoding needs an externally tagged enum whose serde variant name \
                 is the event type `{}`: rename the variant with #[serde(rename = \"…\")] or \
                 override `encode` and `decode`",
                self.event_type()
            ))),
        }
    }

    /// Decodes a payload stored under `event_type`; the inverse of [`DomainEvent::encode`].
    fn decode(event_type: &str, payload: Value) -> std::result::Result<Self, serde_json::Error> {
        let mut tagged = serde_json::Map::with_capacity(1);
        tagged.insert(event_type.to_owned(), payload);
        serde_json::from_value(Value::Object(tagged))
    }
}

/// Who and what caused an event; the same for every event of one append.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    /// Ties together everything that follows from one original request.
    pub correlation_id: Option<Uuid>,
    /// The message (command or event) that directly caused this one.
    pub causation_id: Option<Uuid>,
    /// The command that stored this event. The [`Repository`](crate::Repository) derives the
    /// event ids from it, so carrying the same command out again finds and returns the
    /// original events instead of storing new ones. Minted by the repository when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command_id: Option<CommandId>,
    /// Who asked for it, if known (a user id, a service name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// Free key/values for anything else (tenant, request id, client version…).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// The W3C `traceparent` of the trace this event belongs to (see [`crate::trace`]):
    /// the request's, handed on to everything that follows from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl Metadata {
    /// Metadata for a new request: a fresh correlation id, no causation.
    pub fn new_request() -> Self {
        Self {
            correlation_id: Some(Uuid::new_v4()),
            ..Self::default()
        }
    }

    /// Metadata for work caused by `event`: same correlation, the event as causation.
    pub fn caused_by<E>(event: &EventEnvelope<E>) -> Self {
        Self {
            correlation_id: event.metadata.correlation_id.or(Some(event.event_id)),
            causation_id: Some(event.event_id),
            command_id: None,
            actor: event.metadata.actor.clone(),
            extra: BTreeMap::new(),
            traceparent: event.metadata.traceparent.clone(),
        }
    }

    /// Puts these events in the trace of `parent`.
    pub fn with_trace(mut self, parent: &crate::trace::TraceParent) -> Self {
        self.traceparent = Some(parent.to_string());
        self
    }

    /// The trace these events belong to, if their `traceparent` is a valid one.
    pub fn trace(&self) -> Option<crate::trace::TraceParent> {
        self.traceparent
            .as_deref()
            .and_then(crate::trace::TraceParent::parse)
    }

    /// Names the command these events come from (see [`CommandId`]).
    pub fn with_command_id(mut self, command_id: CommandId) -> Self {
        self.command_id = Some(command_id);
        self
    }

    /// Sets the actor.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    /// Adds a free key/value.
    pub fn with(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// An event as stored, before it is decoded into a Rust type.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    /// The stable type name.
    pub event_type: String,
    /// The schema version the payload was written with.
    pub schema_version: u32,
    /// The JSON payload.
    pub payload: Value,
}

/// An event to append: its id (which makes retries idempotent) and its encoded form.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    /// A unique id; appending the same id again never stores the event twice.
    pub event_id: Uuid,
    /// The type name, schema version and payload.
    pub data: RawEvent,
}

impl NewEvent {
    /// Encodes a domain event with a fresh random id.
    pub fn from_domain<E: DomainEvent>(event: &E) -> Result<Self> {
        Self::with_id(Uuid::new_v4(), event)
    }

    /// Encodes a domain event with the given id.
    pub fn with_id<E: DomainEvent>(event_id: Uuid, event: &E) -> Result<Self> {
        if event.event_type().is_empty() {
            return Err(Error::Encode {
                event_type: String::new(),
                source: format!(
                    "{event:?} has no event type: the default `event_type` names the variant of \
                     an externally tagged serde enum; other shapes implement `event_type`, \
                     `encode` and `decode`"
                )
                .into(),
            });
        }
        let payload = event.encode().map_err(|e| Error::Encode {
            event_type: event.event_type().to_owned(),
            source: Box::new(e),
        })?;
        Ok(Self {
            event_id,
            data: RawEvent {
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                payload,
            },
        })
    }
}

/// A stored event with everything the store knows about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope<E> {
    /// The event's unique id.
    pub event_id: Uuid,
    /// The stream it belongs to.
    pub stream_id: StreamId,
    /// Its version within the stream (1 for the first event).
    pub stream_version: u64,
    /// Its place in the global log.
    pub position: Position,
    /// When the store recorded it (the time of the writing transaction, UTC).
    pub recorded_at: DateTime<Utc>,
    /// Correlation, causation, actor and free key/values.
    pub metadata: Metadata,
    /// The event itself.
    pub event: E,
}

/// A stored event, not yet decoded: what stores return.
pub type RecordedEvent = EventEnvelope<RawEvent>;

impl RecordedEvent {
    /// Upcasts the payload to its current schema and decodes it into `E`.
    ///
    /// The error names the event type and its position in the log.
    pub fn decode<E: DomainEvent>(&self, upcasters: &Upcasters) -> Result<EventEnvelope<E>> {
        let event = decode_raw(self.event.clone(), self.position, upcasters)?;
        Ok(self.with_event(event))
    }

    /// [`RecordedEvent::decode`] for an event the caller owns: the payload is moved into
    /// the upcasters and the decoder rather than copied.
    pub fn into_decoded<E: DomainEvent>(self, upcasters: &Upcasters) -> Result<EventEnvelope<E>> {
        let event = decode_raw(self.event, self.position, upcasters)?;
        Ok(EventEnvelope {
            event_id: self.event_id,
            stream_id: self.stream_id,
            stream_version: self.stream_version,
            position: self.position,
            recorded_at: self.recorded_at,
            metadata: self.metadata,
            event,
        })
    }

    /// The same envelope around another event value.
    pub fn with_event<T>(&self, event: T) -> EventEnvelope<T> {
        EventEnvelope {
            event_id: self.event_id,
            stream_id: self.stream_id.clone(),
            stream_version: self.stream_version,
            position: self.position,
            recorded_at: self.recorded_at,
            metadata: self.metadata.clone(),
            event,
        }
    }
}

/// A stored event as replaying it into an aggregate needs it: its version in its stream, its
/// place in the log (which names it in an error) and the event, not yet decoded. What
/// [`EventStore::replay_stream`](crate::EventStore::replay_stream) hands over, without the
/// envelope's id, stream, time and metadata, which a fold does not read, so that a store
/// need not send them.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayedEvent {
    /// Its version within the stream (1 for the first event).
    pub stream_version: u64,
    /// Its place in the global log.
    pub position: Position,
    /// The event itself.
    pub event: RawEvent,
}

impl ReplayedEvent {
    /// Upcasts the payload to its current schema and decodes it into `E`, moving it rather
    /// than copying it. The error names the event type and its position in the log.
    pub fn into_decoded<E: DomainEvent>(self, upcasters: &Upcasters) -> Result<E> {
        decode_raw(self.event, self.position, upcasters)
    }
}

impl From<RecordedEvent> for ReplayedEvent {
    fn from(recorded: RecordedEvent) -> Self {
        Self {
            stream_version: recorded.stream_version,
            position: recorded.position,
            event: recorded.event,
        }
    }
}

/// Upcasts `raw` (stored at `position`) to its current schema and decodes it into `E`; the
/// error names the event type, its schema version and its position.
fn decode_raw<E: DomainEvent>(
    mut raw: RawEvent,
    position: Position,
    upcasters: &Upcasters,
) -> Result<E> {
    // The event type is kept for the error, not copied for it: a copy per event was an
    // allocation per event of every load.
    let schema_version = raw.schema_version;
    let failed = |event_type: String, source: BoxError| Error::Decode {
        position,
        event_type,
        schema_version,
        source,
    };
    if let Err(e) = upcasters.upcast_in_place(&mut raw) {
        return Err(failed(raw.event_type, Box::new(e)));
    }
    let RawEvent {
        event_type,
        payload,
        ..
    } = raw;
    E::decode(&event_type, payload).map_err(|e| failed(event_type, Box::new(e)))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};
    use serde_json::json;

    use super::*;
    use crate::error::BoxError;
    use crate::upcast::UpcastError;

    #[derive(Clone, Debug, Serialize, Deserialize)]
    enum Counted {
        Added { amount: u64 },
    }
    impl DomainEvent for Counted {}

    fn stored(schema_version: u32, payload: Value) -> RecordedEvent {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: StreamId::new("counter-1").expect("id"),
            stream_version: 1,
            position: Position::new(7, 3),
            recorded_at: Utc::now(),
            metadata: Metadata::default(),
            event: RawEvent {
                event_type: "Added".into(),
                schema_version,
                payload,
            },
        }
    }

    #[test]
    fn a_decode_error_keeps_the_decoders_error_as_its_cause() {
        let error = stored(1, json!({ "amount": "many" }))
            .decode::<Counted>(&Upcasters::new())
            .expect_err("a string is no amount");
        let Error::Decode {
            position, source, ..
        } = &error
        else {
            panic!("not a decode error: {error:?}");
        };
        assert_eq!(*position, Position::new(7, 3));
        assert!(
            source.downcast_ref::<serde_json::Error>().is_some(),
            "{source:?}"
        );
        let cause = std::error::Error::source(&error).expect("a source");
        assert!(cause.is::<serde_json::Error>());
    }

    #[test]
    fn an_upcasting_error_keeps_the_steps_error_as_its_cause() {
        let upcasters = Upcasters::new().register("Added", 1, |_| -> Result<Value, BoxError> {
            Err(Box::new(std::io::Error::other("the v1 archive is offline")))
        });
        let error = stored(1, json!({}))
            .decode::<Counted>(&upcasters)
            .expect_err("refused");
        let upcast = std::error::Error::source(&error)
            .and_then(|e| e.downcast_ref::<UpcastError>())
            .expect("the upcasting error is the cause");
        let UpcastError::Step {
            from_version: 1,
            source,
        } = upcast
        else {
            panic!("not the step's error: {upcast:?}");
        };
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            crate::error::chain(&error),
            "cannot decode event `Added` (schema v1) at position 7/3: upcasting from schema v1 \
             failed: the v1 archive is offline"
        );
    }
}
