//! [`Nats`]: NATS JetStream through `async-nats`.
//!
//! - The relay publishes to subject `<prefix>.<category>.<stream id>` (each token escaped,
//!   see [`subject_token`]) with header `Nats-Msg-Id` = the event id, and waits for every
//!   publish acknowledgement. The stream (created or checked at start) drops a copy sent
//!   again within its duplicate window (2 minutes by default).
//! - A consumer keeps its own position, the next stream sequence, in its inbox, in the same
//!   transaction as the effects; at start it (re)creates its durable pull consumer from
//!   there, and acknowledges after each commit.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream;
use async_nats::jetstream::{self, Context};
use async_trait::async_trait;
use futures_util::{FutureExt, StreamExt};

use crate::broker::{
    check_name, first_too_large, subject_token, waves, Broker, Delivery, Publisher, Subscription,
};
use crate::cloud_event::{CloudEvent, CONTENT_TYPE};
use crate::error::{Error, Result};

const KIND: &str = "nats";

/// A NATS server with JetStream: its URL, the stream and the subject prefix.
#[derive(Clone, Debug)]
pub struct Nats {
    url: String,
    stream: String,
    prefix: String,
    duplicate_window: Duration,
}

impl Nats {
    /// The server at `url` (`nats://host:4222`), stream `EVENTS`, subjects `events.>`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: "EVENTS".to_owned(),
            prefix: "events".to_owned(),
            duplicate_window: Duration::from_secs(120),
        }
    }

    /// Uses stream `stream` with subjects `<prefix>.>` instead.
    pub fn with_stream(mut self, stream: impl Into<String>, prefix: impl Into<String>) -> Self {
        self.stream = stream.into();
        self.prefix = prefix.into();
        self
    }

    /// How long the stream remembers message ids to drop copies (when it creates it).
    pub fn with_duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    async fn client(&self) -> Result<async_nats::Client> {
        async_nats::connect(&self.url)
            .await
            .map_err(|e| Error::unreachable(KIND, e))
    }

    async fn context(&self) -> Result<Context> {
        Ok(jetstream::new(self.client().await?))
    }

    /// The stream, created if missing; an existing one must take `<prefix>.>`.
    async fn stream(&self, context: &Context) -> Result<stream::Stream> {
        let wanted = format!("{}.>", self.prefix);
        let mut stream = context
            .get_or_create_stream(stream::Config {
                name: self.stream.clone(),
                subjects: vec![wanted.clone()],
                duplicate_window: self.duplicate_window,
                ..stream::Config::default()
            })
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        if !info.config.subjects.contains(&wanted) {
            return Err(Error::Config(format!(
                "JetStream stream {} takes {:?}, not {wanted}",
                self.stream, info.config.subjects
            )));
        }
        Ok(stream)
    }

    /// The stream's own counts: messages stored, and the last sequence.
    pub async fn stream_state(&self) -> Result<(u64, u64)> {
        let context = self.context().await?;
        let mut stream = self.stream(&context).await?;
        let info = stream
            .info()
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        Ok((info.state.messages, info.state.last_sequence))
    }

    /// Deletes the stream (tests and tools).
    pub async fn delete_stream(&self) -> Result<()> {
        let context = self.context().await?;
        context
            .delete_stream(&self.stream)
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        Ok(())
    }

    fn source(&self) -> String {
        format!("nats:{}", self.stream)
    }
}

#[async_trait]
impl Broker for Nats {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        let client = self.client().await?;
        let context = jetstream::new(client.clone());
        self.stream(&context).await?;
        Ok(Arc::new(NatsPublisher {
            client,
            context,
            prefix: self.prefix.clone(),
        }))
    }

    async fn subscribe(
        &self,
        name: &str,
        categories: &[String],
        cursors: &BTreeMap<String, u64>,
    ) -> Result<Box<dyn Subscription>> {
        check_name(name)?;
        let context = self.context().await?;
        let stream = self.stream(&context).await?;
        let deliver_policy = match cursors.get(&self.source()) {
            Some(&next) => DeliverPolicy::ByStartSequence {
                start_sequence: next,
            },
            None => DeliverPolicy::All,
        };
        let filter_subject = match categories {
            [one] => format!("{}.{}.>", self.prefix, subject_token(one)),
            _ => String::new(),
        };
        // The position is the inbox's: the durable consumer starts afresh from it.
        if let Err(e) = stream.delete_consumer(name).await {
            tracing::debug!(consumer = %name, error = %e, "no durable consumer to replace");
        }
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(name.to_owned()),
                deliver_policy,
                ack_policy: AckPolicy::All,
                filter_subject,
                max_ack_pending: 20_000,
                // Redelivery of what a live consumer has not acknowledged yet only makes
                // copies; the position it resumes from is the inbox's.
                ack_wait: Duration::from_secs(120),
                ..pull::Config::default()
            })
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        Ok(Box::new(NatsSubscription {
            consumer,
            messages,
            source: self.source(),
            unacked: VecDeque::new(),
            next_tag: 0,
        }))
    }
}

struct NatsPublisher {
    client: async_nats::Client,
    context: Context,
    prefix: String,
}

#[async_trait]
impl Publisher for NatsPublisher {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, Error)> {
        let limit = self.client.server_info().max_payload;
        // Each body is serialized once, for the size check and the publish.
        let mut bodies: Vec<Vec<u8>> = events.iter().map(CloudEvent::to_bytes).collect();
        if let Some(refused_at) = first_too_large(&bodies, limit.saturating_sub(1024)) {
            self.publish(&events[..refused_at]).await?;
            return Err((
                refused_at,
                Error::Refused {
                    broker: KIND,
                    message_id: events[refused_at].id,
                    reason: format!("larger than the server's max_payload of {limit} bytes"),
                },
            ));
        }
        // A wave at a time: two events of one stream are never in flight together.
        for wave in waves(events) {
            let mut acks: Vec<(usize, PublishAckFuture)> = Vec::with_capacity(wave.len());
            let mut failure = None;
            for i in wave {
                let event = &events[i];
                let subject = format!(
                    "{}.{}.{}",
                    self.prefix,
                    subject_token(&event.category),
                    subject_token(&event.subject)
                );
                let message = PublishMessage::build()
                    .headers(message_headers(event))
                    .payload(std::mem::take(&mut bodies[i]).into());
                match self.context.send_publish(subject, message).await {
                    Ok(ack) => acks.push((i, ack)),
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        let reason = e.to_string();
                        failure = Some((
                            i,
                            Error::Refused {
                                broker: KIND,
                                message_id: event.id,
                                reason,
                            },
                        ));
                        break;
                    }
                    Err(e) => {
                        failure = Some((i, Error::unreachable(KIND, e)));
                        break;
                    }
                }
            }
            for (i, ack) in acks {
                if let Err(e) = ack.await {
                    if failure.as_ref().is_none_or(|(f, _)| i < *f) {
                        failure = Some((i, Error::unreachable(KIND, e)));
                    }
                    break;
                }
            }
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
        Ok(())
    }
}

struct NatsSubscription {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    messages: pull::Stream,
    source: String,
    unacked: VecDeque<(u64, jetstream::Message)>,
    next_tag: u64,
}

impl NatsSubscription {
    fn delivery(
        &mut self,
        item: Option<Result<jetstream::Message, pull::MessagesError>>,
    ) -> Result<Delivery> {
        let message = item
            .ok_or_else(|| Error::unreachable(KIND, "the message stream ended"))?
            .map_err(|e| Error::unreachable(KIND, e))?;
        let sequence = message
            .info()
            .map_err(|e| Error::unreachable(KIND, e.to_string()))?
            .stream_sequence;
        let body = message.payload.to_vec();
        let tag = self.next_tag;
        self.next_tag += 1;
        self.unacked.push_back((tag, message));
        Ok(Delivery {
            event: CloudEvent::from_bytes(&body),
            tag,
            cursor: Some((self.source.clone(), sequence + 1)),
            body,
        })
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let Ok(first) = tokio::time::timeout(wait, self.messages.next()).await else {
            return Ok(Vec::new());
        };
        let mut batch = vec![self.delivery(first)?];
        while batch.len() < max {
            match self.messages.next().now_or_never() {
                Some(item) => batch.push(self.delivery(item)?),
                None => break,
            }
        }
        Ok(batch)
    }

    async fn ack(&mut self, last: &Delivery) -> Result<()> {
        let mut newest = None;
        while self
            .unacked
            .front()
            .is_some_and(|(tag, _)| *tag <= last.tag)
        {
            newest = self.unacked.pop_front();
        }
        if let Some((_, message)) = newest {
            // Acknowledges it and every message before it (ack policy "all").
            message
                .ack()
                .await
                .map_err(|e| Error::unreachable(KIND, e.to_string()))?;
        }
        Ok(())
    }

    async fn backlog(&mut self) -> Result<Option<u64>> {
        let info = self
            .consumer
            .get_info()
            .await
            .map_err(|e| Error::unreachable(KIND, e))?;
        Ok(Some(info.num_pending + info.num_ack_pending as u64))
    }
}

/// A message's headers: `Nats-Msg-Id` (JetStream's de-duplication key), the content type,
/// and the event's trace (for tools that read headers only; the body holds it too).
fn message_headers(event: &CloudEvent) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        event.id.to_string().as_str(),
    );
    headers.insert("Content-Type", CONTENT_TYPE);
    if let Some(trace) = &event.traceparent {
        headers.insert(cqrs_core::trace::HEADER, trace.as_str());
    }
    headers
}

#[cfg(test)]
mod header_tests {
    use super::*;

    #[test]
    fn a_message_carries_its_id_and_trace_as_headers() {
        let mut event = crate::cloud_event::sample("order-1");
        let headers = message_headers(&event);
        assert_eq!(
            headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .map(|v| v.as_str()),
            Some(event.id.to_string().as_str())
        );
        assert!(headers.get("traceparent").is_none());
        event.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
        let headers = message_headers(&event);
        assert_eq!(
            headers.get("traceparent").map(|v| v.as_str()),
            event.traceparent.as_deref()
        );
    }
}
