//! [`Inbox`]: what a consumer has applied, kept in the same transaction as the effects.
//!
//! Each message's id is recorded in the transaction that applies its effect; a redelivered
//! or re-sent copy finds its id there and is acknowledged without running the handler again.
//! Two are provided: [`PgInbox`] (tables `inbox_messages`, `inbox_cursors` and
//! `inbox_dead_letters`) and [`MemoryInbox`] for one process.

mod memory;
mod postgres;

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{LeaseToken, Resolution, Target};
use serde::Serialize;
use uuid::Uuid;

use crate::error::Result;

pub use memory::MemoryInbox;
pub use postgres::PgInbox;

/// Where a dead letter stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadStatus {
    /// Set aside.
    Open,
    /// An operator asked for it to be applied again; the live consumer will.
    Retry,
    /// Applied at last.
    Retried,
    /// Closed without applying it.
    Skipped,
}

impl DeadStatus {
    /// Its name in storage: `open`, `retry`, `retried`, `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Retry => "retry",
            Self::Retried => "retried",
            Self::Skipped => "skipped",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "retry" => Self::Retry,
            "retried" => Self::Retried,
            "skipped" => Self::Skipped,
            _ => Self::Open,
        }
    }
}

/// A message a consumer could not apply (a poison message), kept for an operator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeadMessage {
    /// Its number, per inbox: what an operator names to retry or skip it.
    pub id: i64,
    /// Where it stands.
    pub status: DeadStatus,
    /// How many times the handler failed on it.
    pub attempts: u32,
    /// The message id, when the body was a readable event.
    pub message_id: Option<Uuid>,
    /// The message body as received.
    pub body: String,
    /// Why it could not be applied.
    pub error: String,
    /// When it was set aside.
    pub recorded_at: DateTime<Utc>,
}

/// Storage for consumers' inboxes, cursors, dead letters and leases.
#[async_trait]
pub trait Inbox: Clone + Send + Sync + 'static {
    /// Where consumers' leases are kept (one active instance per consumer).
    type Leases: Target;
    /// One transaction of a consumer.
    type Tx: InboxTx;

    /// The lease storage.
    fn leases(&self) -> &Self::Leases;

    /// Opens a transaction for `consumer`, fenced by `lease`: on PostgreSQL its commit fails
    /// with [`Error::LeaseLost`](crate::Error::LeaseLost), changing nothing, if another
    /// instance has taken the consumer's lease (in memory, one process holds it).
    async fn begin(&self, consumer: &str, lease: &LeaseToken) -> Result<Self::Tx>;

    /// Where `consumer` resumes, per source, on brokers whose position it keeps.
    async fn cursors(&self, consumer: &str) -> Result<BTreeMap<String, u64>>;

    /// How many messages `consumer` has applied (still in its inbox).
    async fn received(&self, consumer: &str) -> Result<u64>;

    /// The messages `consumer` set aside, oldest first.
    async fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadMessage>>;

    /// Asks for dead letter `id` of `consumer` to be retried (the live consumer runs its
    /// handler again) or skipped (closed; also one waiting for its retry). `false` when there
    /// is no such open one.
    async fn resolve(&self, consumer: &str, id: i64, resolution: Resolution) -> Result<bool>;

    /// The dead letters of `consumer` an operator asked to retry, oldest first.
    async fn retries_asked(&self, consumer: &str) -> Result<Vec<DeadMessage>>;

    /// Forgets message ids received before `before` (a copy of one of them arriving later
    /// would be applied again: keep them well beyond the longest redelivery).
    async fn prune(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64>;
}

/// One transaction of a consumer: records messages, moves cursors, sets messages aside, and
/// (on PostgreSQL) carries the handler's own writes.
#[async_trait]
pub trait InboxTx: Send {
    /// Records message `id`; `false` if it was recorded before (a copy: skip it).
    async fn first_time(&mut self, id: Uuid) -> Result<bool>;

    /// Moves where the consumer resumes on `source` forward to `next` (never back: a late
    /// copy of an older message does not rewind it).
    async fn set_cursor(&mut self, source: &str, next: u64) -> Result<()>;

    /// Sets a message aside as a dead letter.
    async fn dead_letter(&mut self, id: Option<Uuid>, body: &[u8], error: &str) -> Result<()>;

    /// Closes dead letter `letter` as retried (its handler ran in this transaction) or, with
    /// `error`, opens it again with one more failed attempt.
    async fn close_retry(&mut self, letter: i64, error: Option<&str>) -> Result<()>;

    /// The open PostgreSQL transaction (`None` in memory), for the handler's own writes:
    /// they commit with the message's id, so its effect happens exactly once.
    fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        None
    }

    /// Commits everything done in the transaction.
    async fn commit(self) -> Result<()>
    where
        Self: Sized;
}

/// The lease name of consumer `consumer`.
pub(crate) fn lease_name(consumer: &str) -> String {
    format!("consumer:{consumer}")
}
