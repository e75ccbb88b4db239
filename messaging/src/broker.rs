//! The traits each broker implements: [`Publisher`] (the relay's side), [`Subscription`] (a
//! consumer's side) and [`Broker`], which makes both.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cloud_event::CloudEvent;
use crate::error::{Error, Result};

/// Sends events to a broker, confirmed.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Publishes `events` in order and returns once the broker has confirmed (stored) every
    /// one. On failure, the index of the first event that may not be stored, and why; the
    /// caller sends it and those after it again (the id makes a copy harmless).
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, Error)>;
}

/// One message as a consumer receives it.
#[derive(Debug)]
pub struct Delivery {
    /// The event, or why the body is not one.
    pub event: Result<CloudEvent>,
    /// The broker's handle for acknowledging it.
    pub tag: u64,
    /// Where the consumer resumes after this message, for brokers whose position the
    /// consumer keeps itself (Kafka partitions, JetStream sequences): a source name and the
    /// next offset, stored in the same transaction as the message's effect.
    pub cursor: Option<(String, u64)>,
    /// The raw body, kept for a dead letter.
    pub body: Vec<u8>,
}

/// A consumer's stream of messages from a broker.
#[async_trait]
pub trait Subscription: Send {
    /// Waits up to `wait` for a message, then returns it with whatever else is ready, up to
    /// `max` in all, in the order the broker delivers them. Empty when nothing came.
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// Acknowledges every message up to and including `last` (their effects are committed).
    async fn ack(&mut self, last: &Delivery) -> Result<()>;

    /// How many messages wait at the broker for this consumer, if the broker says.
    async fn backlog(&mut self) -> Result<Option<u64>>;
}

/// A broker: where relays publish and consumers subscribe.
#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Its kind, for logs and status: `rabbitmq`, `nats`, `kafka`, `channel`.
    fn kind(&self) -> &'static str;

    /// A publisher, connected.
    async fn publisher(&self) -> Result<Arc<dyn Publisher>>;

    /// Subscribes consumer `name` to the events of `categories` (all when empty). The
    /// broker keeps one subscription per name (a durable queue, a durable consumer); those
    /// whose position the consumer keeps itself resume from `cursors`.
    async fn subscribe(
        &self,
        name: &str,
        categories: &[String],
        cursors: &BTreeMap<String, u64>,
    ) -> Result<Box<dyn Subscription>>;
}

/// Checks a consumer or destination name: 1 to 100 of `[a-z0-9_-]`, starting with a letter
/// (a valid queue, durable-consumer and topic name on every broker).
pub fn check_name(name: &str) -> Result<()> {
    let ok = (1..=100).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "{name:?} is not a name: 1 to 100 of a-z, 0-9, _ and -, starting with a letter"
        )))
    }
}

/// A page of events in waves: wave `k` holds the `k`-th event of each stream (by subject),
/// in page order. A publisher that sends a wave at a time and awaits its confirmations
/// before the next never has two events of one stream in flight: when one is not stored, no
/// later event of its stream was sent, so the events of a stream first reach the broker in
/// order even when a publish in the middle of a page fails.
pub fn waves(events: &[CloudEvent]) -> Vec<Vec<usize>> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut waves: Vec<Vec<usize>> = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let k = seen.entry(event.subject.as_str()).or_insert(0);
        if waves.len() <= *k {
            waves.push(Vec::new());
        }
        waves[*k].push(i);
        *k += 1;
    }
    waves
}

/// The first of a page's message bodies (in page order) larger than `limit` bytes: a
/// message the broker would refuse for good. A publisher sends the events before it and
/// reports it, so that the relay stops at the first refusal, not at one a wave met first.
pub fn first_too_large(bodies: &[Vec<u8>], limit: usize) -> Option<usize> {
    bodies.iter().position(|body| body.len() > limit)
}

/// Whether `event` is of one of `categories` (all when empty).
pub(crate) fn wanted(categories: &[String], event: &CloudEvent) -> bool {
    categories.is_empty() || categories.contains(&event.category)
}

/// `text` as one token of a dotted subject or routing key: letters, digits, `_`, `-` and
/// `=` are kept, every other byte becomes `%XX` (so `.`, `*`, `>`, `#` and spaces never
/// split or widen a subject).
pub fn subject_token(text: &str) -> String {
    let mut token = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'=') {
            token.push(char::from(byte));
        } else {
            token.push_str(&format!("%{byte:02X}"));
        }
    }
    token
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_keep_plain_names_and_escape_the_rest() {
        assert_eq!(subject_token("order-42"), "order-42");
        assert_eq!(subject_token("a.b *>#"), "a%2Eb%20%2A%3E%23");
        assert_eq!(subject_token("é"), "%C3%A9");
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("warehouse").is_ok());
        assert!(check_name("shop-dispatches_2").is_ok());
        for bad in ["", "Shop", "2x", "a.b", "a b"] {
            assert!(matches!(check_name(bad), Err(Error::Config(_))), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod wave_tests {
    use super::*;

    fn event(subject: &str) -> CloudEvent {
        crate::cloud_event::sample(subject)
    }

    #[test]
    fn no_wave_holds_two_events_of_one_stream_and_each_stream_keeps_its_order() {
        let page: Vec<CloudEvent> = ["a", "b", "a", "c", "a", "b"].map(event).to_vec();
        let waves = waves(&page);
        assert_eq!(waves, vec![vec![0, 1, 3], vec![2, 5], vec![4]]);
        let mut flat: Vec<usize> = waves.concat();
        flat.sort_unstable();
        assert_eq!(
            flat,
            (0..page.len()).collect::<Vec<_>>(),
            "every event once"
        );
    }
}
