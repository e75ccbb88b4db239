//! [`ChannelBroker`]: a broker inside one process, behind the same traits as the real ones,
//! for the embedded demo and tests.
//!
//! It keeps every message in order, and one position per consumer name that moves on
//! acknowledgement; a new subscription under a name starts after what was acknowledged, so
//! unacknowledged messages come again, as on a real broker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::broker::{wanted, Broker, Delivery, Publisher, Subscription};
use crate::cloud_event::CloudEvent;
use crate::error::Result;

#[derive(Default)]
struct Log {
    messages: Vec<(String, Arc<Vec<u8>>)>,
    acked: HashMap<String, u64>,
}

/// An in-process broker. Clones share the same messages.
#[derive(Clone)]
pub struct ChannelBroker {
    log: Arc<Mutex<Log>>,
    published: Arc<watch::Sender<u64>>,
}

impl Default for ChannelBroker {
    fn default() -> Self {
        Self {
            log: Arc::default(),
            published: Arc::new(watch::channel(0).0),
        }
    }
}

impl ChannelBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many messages were published (copies included).
    pub fn published(&self) -> u64 {
        self.lock().messages.len() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Publisher for ChannelBroker {
    async fn publish(&self, events: &[CloudEvent]) -> Result<(), (usize, crate::Error)> {
        let len = {
            let mut log = self.lock();
            log.messages.extend(
                events
                    .iter()
                    .map(|e| (e.category.clone(), Arc::new(e.to_bytes()))),
            );
            log.messages.len() as u64
        };
        self.published.send_replace(len);
        Ok(())
    }
}

#[async_trait]
impl Broker for ChannelBroker {
    fn kind(&self) -> &'static str {
        "channel"
    }

    async fn publisher(&self) -> Result<Arc<dyn Publisher>> {
        Ok(Arc::new(self.clone()))
    }

    async fn subscribe(
        &self,
        name: &str,
        categories: &[String],
        _cursors: &BTreeMap<String, u64>,
    ) -> Result<Box<dyn Subscription>> {
        let next = self.lock().acked.get(name).copied().unwrap_or(0);
        Ok(Box::new(ChannelSubscription {
            broker: self.clone(),
            name: name.to_owned(),
            categories: categories.to_vec(),
            next,
            published: self.published.subscribe(),
        }))
    }
}

struct ChannelSubscription {
    broker: ChannelBroker,
    name: String,
    categories: Vec<String>,
    next: u64,
    published: watch::Receiver<u64>,
}

impl ChannelSubscription {
    fn take(&mut self, max: usize) -> Vec<Delivery> {
        let log = self.broker.lock();
        let mut out = Vec::new();
        while out.len() < max {
            let Some((category, body)) = usize::try_from(self.next)
                .ok()
                .and_then(|i| log.messages.get(i))
            else {
                break;
            };
            let tag = self.next;
            self.next += 1;
            if self.categories.is_empty() || self.categories.contains(category) {
                let event = CloudEvent::from_bytes(body);
                if event.as_ref().is_ok_and(|e| !wanted(&self.categories, e)) {
                    continue;
                }
                out.push(Delivery {
                    event,
                    tag,
                    cursor: None,
                    body: body.to_vec(),
                });
            }
        }
        out
    }
}

#[async_trait]
impl Subscription for ChannelSubscription {
    async fn next(&mut self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.published.borrow_and_update();
            let batch = self.take(max);
            if !batch.is_empty() {
                return Ok(batch);
            }
            if tokio::time::timeout_at(deadline, self.published.changed())
                .await
                .is_err()
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack(&mut self, last: &Delivery) -> Result<()> {
        let mut log = self.broker.lock();
        let acked = log.acked.entry(self.name.clone()).or_insert(0);
        *acked = (*acked).max(last.tag + 1);
        Ok(())
    }

    async fn backlog(&mut self) -> Result<Option<u64>> {
        let log = self.broker.lock();
        let acked = log.acked.get(&self.name).copied().unwrap_or(0);
        let waiting = log
            .messages
            .iter()
            .skip(usize::try_from(acked).unwrap_or(usize::MAX))
            .filter(|(category, _)| {
                self.categories.is_empty() || self.categories.contains(category)
            })
            .count();
        Ok(Some(waiting as u64))
    }
}
