//! [`RabbitMq`]: RabbitMQ through `lapin`.
//!
//! - The relay publishes to a durable **topic exchange** (`events` by default) with routing
//!   key `<category>.<type>`, as persistent, **mandatory** messages whose `message_id` is the
//!   event id, on a channel in **confirm mode**: a page counts as sent when the broker
//!   confirmed every message of it. A message no queue is bound for comes back, and the
//!   relay waits and retries rather than lose it: filter the relay to the categories its
//!   consumers follow, and declare their queues ([`RabbitMq::declare_queue`]) before
//!   publishing if they may start later.
//! - A consumer reads a durable queue named `<exchange>.<consumer>`, bound with
//!   `<category>.*` (or `#`),
//!   declared with `x-single-active-consumer`, and acknowledges after its inbox committed.
//!   RabbitMQ does not drop copies itself: the inbox does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::sync::Mutex;

use crate::broker::{
    check_name, first_too_large, subject_token, waves, Broker, Delivery, Publisher, Subscription,
};
use crate::cloud_event::{CloudEvent, CONTENT_TYPE};
use crate::error::{Error, Result};

const KIND: &str = "rabbitmq";

/// A RabbitMQ broker: its URL and the exchange events go through.
#[derive(Clone, Debug)]
pub struct RabbitMq {
    url: String,
    exchange: String,
    prefetch: u16,
}

impl RabbitMq {
    /// The broker at `url` (`amqp://user:password@host:port/vhost`), exchange `events`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            exchange: "events".to_owned(),
            prefetch: 500,
        }
    }

    /// Publishes to and binds queues on `exchange` instead.
    pub fn with_exchange(mut self, exchange: impl Into<String>) -> Self {
        self.exchange = exchange.into();
        self
    }

    /// The exchange.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Opens a channel, with the exchange declared.
    async fn channel(&self) -> Result<(Connection, Channel)> {
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(unreachable)?;
        let channel = connection.create_channel().await.map_err(unreachable)?;
        channel
            .exchange_declare(
                self.exchange.as_str().into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(unreachable)?;
        Ok((connection, channel))
    }

    /// Declares consumer `name`'s durable queue, bound to the events of `categories` (all
    /// when empty), as its consumer does at start: declared ahead (at deploy), it keeps what
    /// the relay publishes before the consumer first runs.
    pub async fn declare_queue(&self, name: &str, categories: &[String]) -> Result<()> {
        let (_connection, channel) = self.channel().await?;
        self.declare(&channel, name, categories).await
    }

    async fn declare(&self, channel: &Channel, name: &str, categories: &[String]) -> Result<()> {
        check_name(name)?;
        let queue = self.queue_name(name);
        let mut arguments = FieldTable::default();
        arguments.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..QueueDeclareOptions::default()
                },
                arguments,
            )
            .await
            .map_err(unreachable)?;
        let keys: Vec<String> = if categories.is_empty() {
            vec!["#".to_owned()]
        } else {
            categories
                .iter()
                .map(|c| format!("{}.*", subject_token(c)))
                .collect()
        };
        for key in keys {
            channel
                .queue_bind(
                    queue.as_str().into(),
                    self.exchange.as_str().into(),
                    key.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unreachable)?;
        }
        Ok(())
    }

    /// The queue of consumer `consumer`: `<exchange>.<consumer>`, so that services on
    /// different exchanges (environments, tests) never share a queue.
    pub fn queue_name(&self, consumer: &str) -> String {
        format!("{}.{consumer}", self.exchange)
    }

    /// How many messages wait in consumer `consumer`'s queue (ready, not yet delivered).
    pub async fn queue_depth(&self, consumer: &str) -> Result<u64> {
        let (_connection, channel) = self.channel().await?;
        depth(&channel, &self.queue_name(consumer)).await
    }

    /// Deletes the exchange (tests and tools).
    pub async fn delete_exchange(&self) -> Result<()> {
        let (_connection, channel) = self.channel().await?;
        channel
            .exchange_delete(self.exchange.as_str().into(), Default::default())
            .await
            .map_err(unreachable)?;
        Ok(())
    }

    /// Deletes consumer `consumer`'s queue (tests and tools).
    pub async fn delete_queue(&self, consumer: &str) -> Result<()> {
        let (_connection, channel) = self.channel().await?;
        channel
            .queue_delete(
                self.queue_name(consumer).as_str().into(),
                Default::default(),
            )
            .await
            .map_err(unreachable)?;
        Ok(())
    }
}

fn unreachable(error: lapin::Error) -> Error {
    Error::unreachable(KIND, error)
}

async fn depth(channel: &Channel, queue: &str) -> Result<u64> {
    let queue = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(unreachable)?;
    Ok(u64::from(queue.message_count()))
}

#[async_trait]
impl Broker for RabbitMq {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        let publisher = RabbitPublisher {
            broker: self.clone(),
            channel: Mutex::new(None),
        };
        drop(publisher.connected().await?);
        Ok(Arc::new(publisher))
    }

    async fn subscribe(
        &self,
        name: &str,
        categories: &[String],
        _cursors: &BTreeMap<String, u64>,
    ) -> Result<Box<dyn Subscription>> {
        let (connection, channel) = self.channel().await?;
        self.declare(&channel, name, categories).await?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(unreachable)?;
        let consumer = channel
            .basic_consume(
                self.queue_name(name).as_str().into(),
                format!("{name}-{}", std::process::id()).into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(unreachable)?;
        Ok(Box::new(RabbitSubscription {
            _connection: connection,
            channel,
            consumer,
            queue: self.queue_name(name),
        }))
    }
}

struct RabbitPublisher {
    broker: RabbitMq,
    channel: Mutex<Option<(Connection, Channel)>>,
}

impl RabbitPublisher {
    /// The open confirm-mode channel, opened again if it was lost.
    async fn connected(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, Option<(Connection, Channel)>>> {
        let mut guard = self.channel.lock().await;
        let usable = guard
            .as_ref()
            .is_some_and(|(c, ch)| c.status().connected() && ch.status().connected());
        if !usable {
            let (connection, channel) = self.broker.channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(unreachable)?;
            *guard = Some((connection, channel));
        }
        Ok(guard)
    }
}

#[async_trait]
impl Publisher for RabbitPublisher {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, Error)> {
        // Each body is serialized once, for the size check and the publish.
        let bodies: Vec<Vec<u8>> = events.iter().map(CloudEvent::to_bytes).collect();
        if let Some(refused_at) = first_too_large(&bodies, MAX_MESSAGE_BYTES) {
            self.publish(&events[..refused_at]).await?;
            return Err((
                refused_at,
                refused(
                    &events[refused_at],
                    "larger than RabbitMQ's 128 MiB default limit",
                ),
            ));
        }
        let mut guard = self.connected().await.map_err(|e| (0, e))?;
        let Some((_, channel)) = guard.as_ref() else {
            return Err((0, Error::unreachable(KIND, "no channel")));
        };
        let mut failure = None;
        // A wave at a time: two events of one stream are never in flight together.
        for wave in waves(events) {
            if let Err(failed) = self.publish_wave(channel, events, &bodies, &wave).await {
                failure = Some(failed);
                break;
            }
        }
        if let Some(failure) = failure {
            *guard = None; // a fresh channel for the next try
            return Err(failure);
        }
        Ok(())
    }
}

impl RabbitPublisher {
    /// Publishes the events of `wave` (indices into `events` and their `bodies`) and awaits
    /// their confirms; on failure, the lowest index that may not be stored.
    async fn publish_wave(
        &self,
        channel: &Channel,
        events: &[CloudEvent],
        bodies: &[Vec<u8>],
        wave: &[usize],
    ) -> Result<(), (usize, Error)> {
        let mut confirms = Vec::with_capacity(wave.len());
        let mut failure = None;
        for &i in wave {
            let event = &events[i];
            let properties = properties_of(event);
            let routing_key = format!(
                "{}.{}",
                subject_token(&event.category),
                subject_token(&event.event_type)
            );
            match channel
                .basic_publish(
                    self.broker.exchange.as_str().into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &bodies[i],
                    properties,
                )
                .await
            {
                Ok(confirm) => confirms.push((i, confirm)),
                Err(e) => {
                    failure = Some((i, unreachable(e)));
                    break;
                }
            }
        }
        for (i, confirm) in confirms {
            let error = match confirm.await {
                Ok(Confirmation::Ack(None)) => continue,
                Ok(Confirmation::Ack(Some(returned))) => Error::unreachable(
                    KIND,
                    format!(
                        "no queue is bound to exchange {} for routing key {} ({}): start its consumer or declare its queue",
                        self.broker.exchange, returned.delivery.routing_key, returned.reply_text
                    ),
                ),
                Ok(Confirmation::Nack(_)) => {
                    Error::unreachable(KIND, "the broker nacked the message")
                }
                Ok(Confirmation::NotRequested) => {
                    Error::Config("the channel is not in confirm mode".into())
                }
                Err(e) => unreachable(e),
            };
            if failure.as_ref().is_none_or(|(f, _)| i < *f) {
                failure = Some((i, error));
            }
            break;
        }
        failure.map_or(Ok(()), Err)
    }
}

/// RabbitMQ's default `max_message_size`: a larger message is refused for good.
const MAX_MESSAGE_BYTES: usize = 128 * 1024 * 1024;

fn refused(event: &CloudEvent, reason: &str) -> Error {
    Error::Refused {
        broker: KIND,
        message_id: event.id,
        reason: reason.to_owned(),
    }
}

struct RabbitSubscription {
    _connection: Connection,
    channel: Channel,
    consumer: lapin::Consumer,
    queue: String,
}

impl RabbitSubscription {
    fn delivery(&self, item: Option<lapin::Result<lapin::message::Delivery>>) -> Result<Delivery> {
        let delivery = item
            .ok_or_else(|| Error::unreachable(KIND, "the consumer was cancelled"))?
            .map_err(unreachable)?;
        Ok(Delivery {
            event: CloudEvent::from_bytes(&delivery.data),
            tag: delivery.delivery_tag,
            cursor: None,
            body: delivery.data,
        })
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let Ok(first) = tokio::time::timeout(wait, self.consumer.next()).await else {
            return Ok(Vec::new());
        };
        let mut batch = vec![self.delivery(first)?];
        while batch.len() < max {
            match self.consumer.next().now_or_never() {
                Some(item) => batch.push(self.delivery(item)?),
                None => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, last: &Delivery) -> Result<()> {
        self.channel
            .basic_ack(last.tag, BasicAckOptions { multiple: true })
            .await
            .map_err(unreachable)
    }

    async fn backlog(&mut self) -> Result<Option<u64>> {
        depth(&self.channel, &self.queue).await.map(Some)
    }
}

/// A message's properties: the event's id, type and source, persistent delivery, the
/// content type, the time, and its trace as a `traceparent` header (for tools that read
/// properties only; the body holds them all).
fn properties_of(event: &CloudEvent) -> BasicProperties {
    let properties = BasicProperties::default()
        .with_message_id(event.id.to_string().into())
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_type(event.event_type.as_str().into())
        .with_app_id(event.source.as_str().into())
        .with_timestamp(u64::try_from(event.time.timestamp()).unwrap_or(0));
    match &event.traceparent {
        Some(trace) => {
            let mut headers = FieldTable::default();
            headers.insert(
                cqrs_core::trace::HEADER.into(),
                AMQPValue::LongString(trace.as_str().into()),
            );
            properties.with_headers(headers)
        }
        None => properties,
    }
}

#[cfg(test)]
mod property_tests {
    use super::*;

    #[test]
    fn a_message_carries_its_trace_as_a_header() {
        let mut event = crate::cloud_event::sample("order-1");
        assert!(properties_of(&event).headers().is_none());
        let trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        event.traceparent = Some(trace.into());
        let properties = properties_of(&event);
        let headers = properties.headers().as_ref().expect("headers");
        let value = headers
            .inner()
            .get("traceparent")
            .expect("a traceparent header");
        assert_eq!(value, &AMQPValue::LongString(trace.into()));
    }
}
