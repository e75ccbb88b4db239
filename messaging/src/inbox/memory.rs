//! [`MemoryInbox`]: the inbox of a consumer in this process's memory.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{LeaseToken, MemoryTarget, Resolution};
use uuid::Uuid;

use super::{DeadMessage, DeadStatus, Inbox, InboxTx};
use crate::error::Result;

#[derive(Default)]
struct ConsumerInbox {
    received: HashMap<Uuid, DateTime<Utc>>,
    cursors: BTreeMap<String, u64>,
    dead: Vec<DeadMessage>,
}

/// Inboxes in memory, for the embedded demo and tests. A handler's effects are not part of
/// its transaction here: they must be idempotent themselves (a command with an id derived
/// from the message's, say).
#[derive(Clone, Default)]
pub struct MemoryInbox {
    consumers: Arc<Mutex<HashMap<String, ConsumerInbox>>>,
    leases: MemoryTarget,
}

impl MemoryInbox {
    /// An empty inbox.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, consumer: &str, f: impl FnOnce(&mut ConsumerInbox) -> R) -> R {
        let mut consumers = self
            .consumers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(consumers.entry(consumer.to_owned()).or_default())
    }
}

/// A consumer's transaction in memory: its changes, applied together at commit.
pub struct MemoryInboxTx {
    inbox: MemoryInbox,
    consumer: String,
    received: HashSet<Uuid>,
    cursors: BTreeMap<String, u64>,
    dead: Vec<DeadMessage>,
    closed: Vec<(i64, Option<String>)>,
}

#[async_trait]
impl Inbox for MemoryInbox {
    type Leases = MemoryTarget;
    type Tx = MemoryInboxTx;

    fn leases(&self) -> &MemoryTarget {
        &self.leases
    }

    async fn begin(&self, consumer: &str, _lease: &LeaseToken) -> Result<MemoryInboxTx> {
        Ok(MemoryInboxTx {
            inbox: self.clone(),
            consumer: consumer.to_owned(),
            received: HashSet::new(),
            cursors: BTreeMap::new(),
            dead: Vec::new(),
            closed: Vec::new(),
        })
    }

    async fn cursors(&self, consumer: &str) -> Result<BTreeMap<String, u64>> {
        Ok(self.with(consumer, |c| c.cursors.clone()))
    }

    async fn received(&self, consumer: &str) -> Result<u64> {
        Ok(self.with(consumer, |c| c.received.len() as u64))
    }

    async fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadMessage>> {
        Ok(self.with(consumer, |c| c.dead.clone()))
    }

    async fn resolve(&self, consumer: &str, id: i64, resolution: Resolution) -> Result<bool> {
        Ok(self.with(consumer, |c| {
            let letter = c.dead.iter_mut().find(|d| {
                d.id == id
                    && (d.status == DeadStatus::Open
                        || (d.status == DeadStatus::Retry && resolution == Resolution::Skip))
            });
            letter.is_some_and(|d| {
                d.status = match resolution {
                    Resolution::Retry => DeadStatus::Retry,
                    Resolution::Skip => DeadStatus::Skipped,
                };
                true
            })
        }))
    }

    async fn retries_asked(&self, consumer: &str) -> Result<Vec<DeadMessage>> {
        Ok(self.with(consumer, |c| {
            c.dead
                .iter()
                .filter(|d| d.status == DeadStatus::Retry)
                .cloned()
                .collect()
        }))
    }

    async fn prune(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64> {
        Ok(self.with(consumer, |c| {
            let len = c.received.len();
            c.received.retain(|_, at| *at >= before);
            (len - c.received.len()) as u64
        }))
    }
}

#[async_trait]
impl InboxTx for MemoryInboxTx {
    async fn first_time(&mut self, id: Uuid) -> Result<bool> {
        let seen = self
            .inbox
            .with(&self.consumer, |c| c.received.contains_key(&id));
        Ok(!seen && self.received.insert(id))
    }

    async fn set_cursor(&mut self, source: &str, next: u64) -> Result<()> {
        let at = self.cursors.entry(source.to_owned()).or_insert(0);
        *at = (*at).max(next);
        Ok(())
    }

    async fn dead_letter(&mut self, id: Option<Uuid>, body: &[u8], error: &str) -> Result<()> {
        self.dead.push(DeadMessage {
            id: 0,
            status: DeadStatus::Open,
            attempts: 1,
            message_id: id,
            body: String::from_utf8_lossy(body).into_owned(),
            error: error.to_owned(),
            recorded_at: Utc::now(),
        });
        Ok(())
    }

    async fn close_retry(&mut self, letter: i64, error: Option<&str>) -> Result<()> {
        self.closed.push((letter, error.map(str::to_owned)));
        Ok(())
    }

    async fn commit(self) -> Result<()> {
        let now = Utc::now();
        self.inbox.with(&self.consumer, |c| {
            c.received.extend(self.received.iter().map(|id| (*id, now)));
            for (source, next) in self.cursors {
                let at = c.cursors.entry(source).or_insert(0);
                *at = (*at).max(next);
            }
            for mut letter in self.dead {
                letter.id = c.dead.len() as i64 + 1;
                c.dead.push(letter);
            }
            for (id, error) in self.closed {
                if let Some(d) = c
                    .dead
                    .iter_mut()
                    .find(|d| d.id == id && d.status == DeadStatus::Retry)
                {
                    match error {
                        None => d.status = DeadStatus::Retried,
                        Some(error) => {
                            d.status = DeadStatus::Open;
                            d.error = error;
                            d.attempts += 1;
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use projections::{Lease, LeaseOptions};

    #[tokio::test]
    async fn a_cursor_never_moves_back() {
        let inbox = MemoryInbox::new();
        let lease = Lease::acquire(inbox.leases(), "consumer:c", LeaseOptions::default())
            .await
            .unwrap()
            .unwrap();
        for next in [10, 4] {
            let mut tx = inbox.begin("c", lease.token()).await.unwrap();
            tx.set_cursor("p0", next).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(inbox.cursors("c").await.unwrap()["p0"], 10);
    }
}
