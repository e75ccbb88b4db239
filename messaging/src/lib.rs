//! # messaging
//!
//! Services that talk through a broker: the event log published to RabbitMQ, NATS JetStream
//! or Kafka as CloudEvents, and consumed with exactly-once effects.
//!
//! - A [`Relay`] publishes the log (filtered) to a broker and moves its checkpoint only after
//!   the broker confirmed: the log is the outbox, the checkpoint is a log position, and the
//!   projections runner's lease keeps one relay per destination active.
//! - A [`Consumer`] runs a [`MessageHandler`] for each message in a transaction that also
//!   records the message id in its [`Inbox`], and acknowledges after the commit: a copy is
//!   acknowledged without running the handler again.
//! - [`CloudEvent`] is the wire format (CloudEvents 1.0, JSON), readable from any language.
//! - [`RabbitMq`], [`Nats`] and [`Kafka`] are the brokers (each behind a cargo feature of
//!   the same name); [`ChannelBroker`] is one inside the process, for the embedded demo.
//!
//! ```
//! use std::sync::Arc;
//! use async_trait::async_trait;
//! use cqrs_core::{EventStore, ExpectedVersion, InMemoryEventStore, Metadata, NewEvent, RawEvent, StreamId};
//! use messaging::{Broker, ChannelBroker, CloudEvent, Consumer, InboxTx, MemoryInbox, MessageHandler, Relay};
//! use projections::{ApplyError, MemoryTarget};
//!
//! struct Printer;
//!
//! #[async_trait]
//! impl MessageHandler for Printer {
//!     fn name(&self) -> &str { "printer" }
//!     async fn handle(&self, _tx: &mut dyn InboxTx, event: &CloudEvent) -> Result<(), ApplyError> {
//!         println!("{} {} {}", event.subject, event.event_type, event.data);
//!         Ok(())
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
//! let event = NewEvent { event_id: uuid::Uuid::new_v4(), data: RawEvent { event_type: "Placed".into(), schema_version: 1, payload: serde_json::json!({"total": 5}) } };
//! store.append(&StreamId::new("order-1").unwrap(), ExpectedVersion::Any, vec![event], &Metadata::default()).await.unwrap();
//!
//! let broker = ChannelBroker::new();
//! let relay = Relay::new("relay", "urn:example", broker.publisher().await.unwrap());
//! relay.runner(store, MemoryTarget::new()).run_until_caught_up().await.unwrap();
//!
//! let inbox = MemoryInbox::new();
//! let consumer = Consumer::new(Arc::new(broker), inbox.clone(), Arc::new(Printer));
//! let stop = tokio::time::sleep(std::time::Duration::from_millis(200));
//! consumer.run(stop).await.unwrap();
//! assert_eq!(consumer.status().applied, 1);
//! # });
//! ```
//!
//! ## Layout
//!
//! | module | holds |
//! | --- | --- |
//! | [`cloud_event`] | [`CloudEvent`]: the wire format |
//! | [`broker`] | [`Broker`], [`Publisher`], [`Subscription`]: what each broker implements |
//! | [`relay`] | [`Relay`]: the log to a broker |
//! | [`consumer`] | [`Consumer`], [`MessageHandler`], [`ConsumerStatus`] |
//! | [`inbox`] | [`Inbox`]: [`PgInbox`], [`MemoryInbox`] |
//! | [`channel`] | [`ChannelBroker`] |
//! | [`connect`] | [`broker_from_url`]: a broker by its URL |
//! | `rabbitmq`, `nats`, `kafka` | the brokers |
//! | [`error`] | [`Error`] |

pub mod broker;
pub mod channel;
pub mod cloud_event;
pub mod connect;
pub mod consumer;
pub mod error;
pub mod inbox;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "rabbitmq")]
pub mod rabbitmq;
pub mod relay;

pub use broker::{Broker, Delivery, Publisher, Subscription};
pub use channel::ChannelBroker;
pub use cloud_event::CloudEvent;
pub use connect::broker_from_url;
pub use consumer::{Consumer, ConsumerOptions, ConsumerStatus, MessageHandler};
pub use error::{Error, Result};
pub use inbox::{DeadMessage, DeadStatus, Inbox, InboxTx, MemoryInbox, PgInbox};
#[cfg(feature = "kafka")]
pub use kafka::Kafka;
#[cfg(feature = "nats")]
pub use nats::Nats;
#[cfg(feature = "rabbitmq")]
pub use rabbitmq::RabbitMq;
pub use relay::Relay;
