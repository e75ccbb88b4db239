//! [`CloudEvent`]: the wire format, CloudEvents 1.0 in its JSON form, that every broker
//! carries and any language reads.
//!
//! A message body is one JSON object (content type `application/cloudevents+json`):
//!
//! | attribute | CloudEvents | holds |
//! | --- | --- | --- |
//! | `specversion` | required | `"1.0"` |
//! | `id` | required | the event id (a UUID): the de-duplication key everywhere |
//! | `source` | required | the publishing service, e.g. `urn:demo:shop` |
//! | `type` | required | the event type, e.g. `OrderPlaced` |
//! | `subject` | optional | the stream id, e.g. `order-7f…` |
//! | `time` | optional | when the store recorded the event (RFC 3339, UTC) |
//! | `datacontenttype` | optional | `application/json` |
//! | `data` | — | the event's JSON payload |
//! | `category` | extension | the stream's category, e.g. `order` |
//! | `position` | extension | the event's place in the publisher's log, `"commit/sequence"` |
//! | `streamversion` | extension | its version within the stream (1 for the first) |
//! | `schemaversion` | extension | the schema version of `data` |
//! | `correlationid` | extension | the correlation id, if any |
//! | `causationid` | extension | the causation id, if any |
//! | `traceparent` | extension (CloudEvents distributed tracing) | the W3C trace context of the request the event follows from, if any |

use chrono::{DateTime, Utc};
use cqrs_core::{Metadata, RecordedEvent};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The CloudEvents version this format follows.
pub const SPEC_VERSION: &str = "1.0";

/// The content type of a message body.
pub const CONTENT_TYPE: &str = "application/cloudevents+json";

/// One event on the wire. See the [module](self) for its attributes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CloudEvent {
    /// Always [`SPEC_VERSION`].
    pub specversion: String,
    /// The event id.
    pub id: Uuid,
    /// The publishing service.
    pub source: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The stream id.
    pub subject: String,
    /// When the store recorded the event.
    pub time: DateTime<Utc>,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// The event's payload.
    pub data: Value,
    /// The stream's category.
    pub category: String,
    /// The event's position in the publisher's log, `"commit/sequence"`.
    pub position: String,
    /// Its version within the stream.
    pub streamversion: u64,
    /// The schema version of `data`.
    pub schemaversion: u32,
    /// The correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlationid: Option<Uuid>,
    /// The causation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causationid: Option<Uuid>,
    /// The W3C `traceparent` of the trace the event belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
}

impl CloudEvent {
    /// The wire form of a stored event, published by `source`.
    pub fn from_recorded(event: &RecordedEvent, source: &str) -> Self {
        Self {
            specversion: SPEC_VERSION.to_owned(),
            id: event.event_id,
            source: source.to_owned(),
            event_type: event.event.event_type.clone(),
            subject: event.stream_id.to_string(),
            time: event.recorded_at,
            datacontenttype: "application/json".to_owned(),
            data: event.event.payload.clone(),
            category: event.stream_id.category().to_owned(),
            position: event.position.to_string(),
            streamversion: event.stream_version,
            schemaversion: event.event.schema_version,
            correlationid: event.metadata.correlation_id,
            causationid: event.metadata.causation_id,
            traceparent: event.metadata.traceparent.clone(),
        }
    }

    /// The message body.
    pub fn to_bytes(&self) -> Vec<u8> {
        // A struct of strings, numbers and a JSON value always serializes.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a message body; an error says what is missing or wrong.
    pub fn from_bytes(body: &[u8]) -> Result<Self> {
        let event: Self = serde_json::from_slice(body).map_err(|e| Error::Wire(e.to_string()))?;
        if event.specversion != SPEC_VERSION {
            return Err(Error::Wire(format!(
                "specversion {:?}, expected {SPEC_VERSION:?}",
                event.specversion
            )));
        }
        Ok(event)
    }

    /// The payload decoded as an enum of the receiving service's own, whose variants are
    /// named after the event types it reads (`data` is the variant's content, `type` its
    /// name): a consumer reads another service's events in its own terms, the fields it
    /// needs and nothing else. A struct can be read from [`data`](Self::data) directly.
    ///
    /// ```
    /// # use messaging::CloudEvent;
    /// #[derive(serde::Deserialize)]
    /// enum Seen { OrderPlaced { total: u64 } }
    /// # let body = br#"{"specversion":"1.0","id":"7f1d2c1e-0000-4000-8000-000000000001","source":"urn:demo:shop","type":"OrderPlaced","subject":"order-1","time":"2026-11-28T10:00:00Z","datacontenttype":"application/json","data":{"total":5,"card":"tok"},"category":"order","position":"9/1","streamversion":1,"schemaversion":1}"#;
    /// let event = CloudEvent::from_bytes(body).unwrap();
    /// let Seen::OrderPlaced { total } = event.decode::<Seen>().unwrap();
    /// assert_eq!(total, 5);
    /// ```
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        let tagged = serde_json::json!({ self.event_type.as_str(): &self.data });
        T::deserialize(&tagged)
            .map_err(|e| Error::Wire(format!("{} {}: {e}", self.event_type, self.id)))
    }

    /// Metadata for the commands this message causes in the receiving service: the same
    /// correlation id (the message's own id when it has none), the message as causation, and
    /// the same trace (a `traceparent` the W3C rules refuse is dropped).
    /// Add a command id derived from the message, e.g.
    /// `CommandId::caused_by(event.id, "pick")`, so that a command sent again for the same
    /// message is recognised.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlationid.or(Some(self.id)),
            causation_id: Some(self.id),
            // Handed on as it came, as `Metadata::caused_by` does within a service; one the
            // W3C rules refuse is left out.
            traceparent: self
                .traceparent
                .as_deref()
                .and_then(cqrs_core::trace::TraceParent::parse)
                .map(|parent| parent.to_string()),
            ..Metadata::default()
        }
    }

    /// The routing key the brokers use: `<category>.<type>`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}", self.category, self.event_type)
    }
}

/// A small event for the brokers' unit tests.
#[cfg(test)]
pub(crate) fn sample(subject: &str) -> CloudEvent {
    CloudEvent {
        specversion: SPEC_VERSION.into(),
        id: Uuid::new_v4(),
        source: "s".into(),
        event_type: "T".into(),
        subject: subject.into(),
        time: Utc::now(),
        datacontenttype: "application/json".into(),
        data: Value::Null,
        category: "c".into(),
        position: "1/1".into(),
        streamversion: 1,
        schemaversion: 1,
        correlationid: None,
        causationid: None,
        traceparent: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::{EventEnvelope, Metadata, Position, RawEvent, StreamId};

    fn recorded() -> RecordedEvent {
        EventEnvelope {
            event_id: Uuid::new_v4(),
            stream_id: StreamId::new("order-42").unwrap(),
            stream_version: 3,
            position: Position::new(812, 40),
            recorded_at: Utc::now(),
            metadata: Metadata::new_request(),
            event: RawEvent {
                event_type: "OrderPlaced".into(),
                schema_version: 2,
                payload: serde_json::json!({"total": 1250}),
            },
        }
    }

    #[test]
    fn a_recorded_event_round_trips_through_the_wire_format() {
        let recorded = recorded();
        let event = CloudEvent::from_recorded(&recorded, "urn:demo:shop");
        let back = CloudEvent::from_bytes(&event.to_bytes()).unwrap();
        assert_eq!(back, event);
        assert_eq!(back.id, recorded.event_id);
        assert_eq!(back.subject, "order-42");
        assert_eq!(back.category, "order");
        assert_eq!(back.position, "812/40");
        assert_eq!(back.streamversion, 3);
        assert_eq!(back.schemaversion, 2);
        assert_eq!(back.correlationid, recorded.metadata.correlation_id);
        assert_eq!(back.routing_key(), "order.OrderPlaced");
        let json: Value = serde_json::from_slice(&event.to_bytes()).unwrap();
        assert_eq!(json["type"], "OrderPlaced");
        assert_eq!(json["specversion"], "1.0");
        assert!(
            json.get("causationid").is_none(),
            "absent attributes are left out"
        );
    }

    #[test]
    fn other_bodies_are_refused_with_a_reason() {
        assert!(matches!(
            CloudEvent::from_bytes(b"not json"),
            Err(Error::Wire(_))
        ));
        let mut json: Value =
            serde_json::from_slice(&CloudEvent::from_recorded(&recorded(), "s").to_bytes())
                .unwrap();
        json["specversion"] = "0.3".into();
        let err = CloudEvent::from_bytes(json.to_string().as_bytes()).unwrap_err();
        assert!(err.to_string().contains("0.3"), "{err}");
    }
}
