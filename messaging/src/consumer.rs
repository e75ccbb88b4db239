//! [`Consumer`]: runs a [`MessageHandler`] for each message from a broker, with exactly-once
//! effects.
//!
//! For each batch of messages it opens one inbox transaction, records every message id,
//! runs the handler for the ids it had not seen (their writes go in the same transaction),
//! moves its cursors, commits, and only then acknowledges the messages to the broker. A copy
//! (a broker's redelivery, a relay's re-send) finds its id recorded and is acknowledged
//! without running the handler. Messages are handled one at a time in the order the broker
//! delivers them, and one instance per consumer name is active (a lease), so the events of
//! a stream are applied in order.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{ApplyError, ErrorPolicy, Lease, LeaseOptions, LeaseToken};
use serde::Serialize;

use crate::broker::{check_name, wanted, Broker, Delivery, Subscription};
use crate::cloud_event::CloudEvent;
use crate::error::{Error, Result};
use crate::inbox::{lease_name, Inbox, InboxTx};

/// What a service does with the messages it consumes.
///
/// ```
/// use async_trait::async_trait;
/// use messaging::{CloudEvent, InboxTx, MessageHandler};
/// use projections::ApplyError;
///
/// /// Counts the orders each customer placed, in the consumer's own table.
/// struct OrdersPerCustomer;
///
/// #[async_trait]
/// impl MessageHandler for OrdersPerCustomer {
///     fn name(&self) -> &str { "orders_per_customer" }
///     fn categories(&self) -> Vec<String> { vec!["order".into()] }
///     async fn handle(&self, tx: &mut dyn InboxTx, event: &CloudEvent) -> Result<(), ApplyError> {
///         let Some(db) = tx.postgres() else { return Ok(()) };
///         let customer = event.data["customer"].as_str().ok_or_else(|| ApplyError::poison("no customer"))?;
///         sqlx::query("INSERT INTO orders_per_customer VALUES ($1, 1) \
///                      ON CONFLICT (customer) DO UPDATE SET orders = orders_per_customer.orders + 1")
///             .bind(customer)
///             .execute(db)
///             .await
///             .map_err(ApplyError::transient)?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait MessageHandler: Send + Sync + 'static {
    /// The consumer's name: its queue or durable consumer at the broker, its inbox and its
    /// lease. `[a-z0-9_-]`, starting with a letter.
    fn name(&self) -> &str;

    /// The categories it follows (all when empty).
    fn categories(&self) -> Vec<String> {
        Vec::new()
    }

    /// Applies one message. Writes through `tx` commit with the message's id. A
    /// [`ApplyError::Poison`] message goes by the error policy; a transient failure is
    /// retried with backoff.
    async fn handle(&self, tx: &mut dyn InboxTx, event: &CloudEvent) -> Result<(), ApplyError>;
}

/// How a consumer works.
#[derive(Clone, Debug)]
pub struct ConsumerOptions {
    /// Messages per transaction at most.
    pub batch_size: usize,
    /// How long to wait for messages before looking at the broker's backlog again.
    pub idle_wait: Duration,
    /// A message the handler cannot apply: set aside (dead letter) and go on, or stop and
    /// retry it until an operator intervenes.
    pub error_policy: ErrorPolicy,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// The consumer's lease (one active instance per name).
    pub lease: LeaseOptions,
    /// How often a standby tries to take the lease.
    pub standby_retry: Duration,
    /// How long message ids are kept for de-duplication.
    pub retain_ids_for: Duration,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        Self {
            batch_size: 200,
            idle_wait: Duration::from_millis(500),
            error_policy: ErrorPolicy::DeadLetter,
            max_backoff: Duration::from_secs(5),
            lease: LeaseOptions::default(),
            standby_retry: Duration::from_millis(500),
            retain_ids_for: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// How a consumer is doing: what it applied, how far behind it is.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ConsumerStatus {
    /// Whether this instance holds the consumer's lease.
    pub active: bool,
    /// Messages whose handler ran and committed, by this instance.
    pub applied: u64,
    /// Copies acknowledged without running the handler.
    pub duplicates: u64,
    /// Messages set aside as dead letters.
    pub dead_lettered: u64,
    /// Messages waiting at the broker, as it last said.
    pub backlog: Option<u64>,
    /// When the newest applied event was recorded by its publisher.
    pub last_event_time: Option<DateTime<Utc>>,
    /// Seconds between that and its application (0 once nothing waits).
    pub lag_seconds: Option<f64>,
    /// The last failure, if the consumer is retrying.
    pub last_error: Option<String>,
}

/// Runs one handler against one broker and one inbox.
pub struct Consumer<I: Inbox> {
    broker: Arc<dyn Broker>,
    inbox: I,
    handler: Arc<dyn MessageHandler>,
    options: ConsumerOptions,
    status: Arc<Mutex<ConsumerStatus>>,
}

impl<I: Inbox> Consumer<I> {
    /// A consumer of `broker`'s messages for `handler`, with its inbox in `inbox`.
    pub fn new(broker: Arc<dyn Broker>, inbox: I, handler: Arc<dyn MessageHandler>) -> Self {
        Self {
            broker,
            inbox,
            handler,
            options: ConsumerOptions::default(),
            status: Arc::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: ConsumerOptions) -> Self {
        self.options = options;
        self
    }

    /// How it is doing now.
    pub fn status(&self) -> ConsumerStatus {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut ConsumerStatus)) {
        f(&mut self.status.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Runs until `shutdown` completes: stands by while another instance holds the lease,
    /// consumes while it holds it, retries what fails for a while. Returns an error only for
    /// what no retry mends (an invalid name).
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let name = self.handler.name().to_owned();
        check_name(&name)?;
        let lease_name = lease_name(&name);
        tokio::pin!(shutdown);
        let mut failures = 0u32;
        loop {
            let lease = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                lease = Lease::acquire(self.inbox.leases(), &lease_name, self.options.lease) => lease,
            };
            let mut pause = self.options.standby_retry;
            match lease {
                Ok(Some(lease)) => {
                    tracing::info!(consumer = %name, broker = self.broker.kind(), epoch = lease.token().epoch(), "consuming");
                    self.update(|s| s.active = true);
                    let worked = self.work(lease.token(), &mut shutdown).await;
                    self.update(|s| s.active = false);
                    lease.release(self.inbox.leases()).await;
                    match worked {
                        Ok(()) => return Ok(()),
                        Err(e @ Error::Config(_)) => return Err(e),
                        Err(e) => {
                            // Anything else may mend (a database back, a fixed broker
                            // setting): a consumer keeps trying, and says so.
                            failures = failures.saturating_add(1);
                            pause = backoff(failures, self.options.max_backoff);
                            if e.is_transient() {
                                tracing::warn!(consumer = %name, error = %e, ?pause, "consumer interrupted; resuming");
                            } else {
                                tracing::error!(consumer = %name, error = %e, ?pause, "consumer failed; trying again");
                            }
                            self.update(|s| s.last_error = Some(cqrs_core::error::chain(&e)));
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(consumer = %name, error = %e, "cannot reach the consumer's lease")
                }
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Consumes while the lease holds.
    async fn work<S>(&self, lease: &LeaseToken, shutdown: &mut S) -> Result<()>
    where
        S: Future<Output = ()> + Unpin + Send,
    {
        let name = self.handler.name();
        let categories = self.handler.categories();
        let cursors = self.inbox.cursors(name).await?;
        let mut subscription = self.broker.subscribe(name, &categories, &cursors).await?;
        let mut pending: VecDeque<Delivery> = VecDeque::new();
        let mut last_prune: Option<Instant> = None;
        let mut last_retry_check: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            if !lease.is_live() {
                return Err(Error::LeaseLost {
                    consumer: name.to_owned(),
                    epoch: lease.epoch(),
                });
            }
            if last_prune.is_none_or(|at| at.elapsed() > Duration::from_secs(3600)) {
                self.prune().await;
                last_prune = Some(Instant::now());
            }
            if last_retry_check.is_none_or(|at| at.elapsed() > RETRY_CHECK_EVERY) {
                self.retry_asked(lease).await?;
                last_retry_check = Some(Instant::now());
            }
            if pending.is_empty() {
                let batch = tokio::select! {
                    _ = &mut *shutdown => return Ok(()),
                    batch = subscription.next(self.options.batch_size, self.options.idle_wait) => batch?,
                };
                if batch.is_empty() {
                    self.report_backlog(subscription.as_mut()).await;
                    continue;
                }
                pending.extend(batch);
            }
            match self.apply(&mut pending, lease, &categories).await {
                Ok(Some(last)) => {
                    failures = 0;
                    subscription.ack(&last).await?;
                    self.update(|s| s.last_error = None);
                }
                Ok(None) => {}
                Err(e) if e.is_transient() && !matches!(e, Error::LeaseLost { .. }) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff(failures, self.options.max_backoff);
                    tracing::warn!(consumer = %name, error = %e, ?delay, "cannot apply; retrying");
                    self.update(|s| s.last_error = Some(cqrs_core::error::chain(&e)));
                    tokio::select! {
                        _ = &mut *shutdown => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies the front of `pending` in one transaction and returns the last message it
    /// committed (to acknowledge), leaving the rest. A message whose handler fails is
    /// handled alone: a poison one goes by the policy; a transient failure is returned,
    /// and the message stays at the front for the retry.
    async fn apply(
        &self,
        pending: &mut VecDeque<Delivery>,
        lease: &LeaseToken,
        categories: &[String],
    ) -> Result<Option<Delivery>> {
        let name = self.handler.name();
        let take = pending.len().min(self.options.batch_size.max(1));
        let mut tx = self.inbox.begin(name, lease).await?;
        let mut counts = Counts::default();
        let mut failed = None;
        for (i, delivery) in pending.iter().take(take).enumerate() {
            if let Err(error) = self
                .apply_one(&mut tx, delivery, categories, &mut counts)
                .await?
            {
                failed = Some((i, error));
                break;
            }
        }
        let Some((index, error)) = failed else {
            tx.commit().await?;
            self.record(&counts, pending.iter().take(take));
            return Ok(pending.drain(..take).next_back());
        };
        drop(tx); // rolls back
        if index > 0 {
            // Commit what came before the failing message; it is handled on its own next.
            let mut tx = self.inbox.begin(name, lease).await?;
            let mut counts = Counts::default();
            for delivery in pending.iter().take(index) {
                if let Err(error) = self
                    .apply_one(&mut tx, delivery, categories, &mut counts)
                    .await?
                {
                    return Err(Error::Handler {
                        consumer: name.to_owned(),
                        message_id: message_id(delivery),
                        situation: "applied a moment ago, it fails now",
                        source: Box::new(error),
                    });
                }
            }
            tx.commit().await?;
            self.record(&counts, pending.iter().take(index));
            return Ok(pending.drain(..index).next_back());
        }
        let delivery = &pending[0];
        match (error, &self.options.error_policy) {
            (ApplyError::Poison(reason), ErrorPolicy::DeadLetter) => {
                let id = delivery.event.as_ref().ok().map(|e| e.id);
                let reason = cqrs_core::error::chain(reason.as_ref());
                tracing::error!(consumer = %name, message_id = ?id, error = %reason, "cannot apply a message; set aside as a dead letter");
                let mut tx = self.inbox.begin(name, lease).await?;
                if let Some(id) = id {
                    tx.first_time(id).await?;
                }
                tx.dead_letter(id, &delivery.body, &reason).await?;
                if let Some((source, next)) = &delivery.cursor {
                    tx.set_cursor(source, *next).await?;
                }
                tx.commit().await?;
                self.update(|s| s.dead_lettered += 1);
                Ok(pending.pop_front())
            }
            (error @ ApplyError::Poison(_), _) => Err(Error::Handler {
                consumer: name.to_owned(),
                message_id: message_id(delivery),
                situation: "stopped at a message it cannot apply; policy: stop",
                source: Box::new(error),
            }),
            (error, _) => Err(Error::Handler {
                consumer: name.to_owned(),
                message_id: message_id(delivery),
                situation: "a transient failure; it is given again",
                source: Box::new(error),
            }),
        }
    }

    /// Applies one message within `tx`: `Ok(Err(_))` when its handler failed.
    async fn apply_one(
        &self,
        tx: &mut I::Tx,
        delivery: &Delivery,
        categories: &[String],
        counts: &mut Counts,
    ) -> Result<Result<(), ApplyError>> {
        match &delivery.event {
            Err(error) => return Ok(Err(ApplyError::poison(error))),
            Ok(event) if wanted(categories, event) => {
                if tx.first_time(event.id).await? {
                    let span = tracing::info_span!(
                        "consume",
                        consumer = self.handler.name(),
                        message_id = %event.id,
                        event_type = %event.event_type,
                        trace_id = tracing::field::Empty,
                        correlation_id = tracing::field::Empty,
                        causation_id = tracing::field::Empty,
                    );
                    cqrs_core::trace::record_ids(
                        &span,
                        event.traceparent.as_deref(),
                        event.correlationid,
                        event.causationid,
                    );
                    let handled =
                        tracing::Instrument::instrument(self.handler.handle(tx, event), span);
                    if let Err(error) = handled.await {
                        return Ok(Err(error));
                    }
                    counts.applied += 1;
                } else {
                    counts.duplicates += 1;
                }
            }
            Ok(_) => {}
        }
        if let Some((source, next)) = &delivery.cursor {
            tx.set_cursor(source, *next).await?;
        }
        Ok(Ok(()))
    }

    /// Runs the handler again for the dead letters an operator asked to retry, each in a
    /// transaction of its own; one that fails again is open again, with its new error.
    async fn retry_asked(&self, lease: &LeaseToken) -> Result<()> {
        let name = self.handler.name();
        for letter in self.inbox.retries_asked(name).await? {
            let outcome = match CloudEvent::from_bytes(letter.body.as_bytes()) {
                Ok(event) => {
                    let mut tx = self.inbox.begin(name, lease).await?;
                    match self.handler.handle(&mut tx, &event).await {
                        Ok(()) => {
                            tx.close_retry(letter.id, None).await?;
                            tx.commit().await?;
                            tracing::info!(consumer = %name, dead_letter = letter.id, "dead letter retried");
                            self.update(|s| s.applied += 1);
                            continue;
                        }
                        Err(error @ ApplyError::Poison(_)) => cqrs_core::error::chain(&error),
                        Err(error) => {
                            // A passing failure: it stays asked for, and is tried again.
                            tracing::warn!(consumer = %name, dead_letter = letter.id, %error, "retrying a dead letter failed for now");
                            continue;
                        }
                    }
                }
                Err(error) => cqrs_core::error::chain(&error),
            };
            tracing::warn!(consumer = %name, dead_letter = letter.id, error = %outcome, "a retried dead letter failed again");
            let mut tx = self.inbox.begin(name, lease).await?;
            tx.close_retry(letter.id, Some(&outcome)).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    fn record<'a>(&self, counts: &Counts, applied: impl Iterator<Item = &'a Delivery>) {
        let newest = applied
            .filter_map(|d| d.event.as_ref().ok().map(|e| e.time))
            .max();
        self.update(|s| {
            s.applied += counts.applied;
            s.duplicates += counts.duplicates;
            if let Some(time) = newest {
                s.last_event_time = Some(s.last_event_time.map_or(time, |t| t.max(time)));
                s.lag_seconds = Some((Utc::now() - time).num_milliseconds().max(0) as f64 / 1e3);
            }
        });
    }

    async fn report_backlog(&self, subscription: &mut dyn Subscription) {
        match subscription.backlog().await {
            Ok(backlog) => {
                let before = self.status().backlog;
                self.update(|s| {
                    s.backlog = backlog;
                    if backlog == Some(0) {
                        s.lag_seconds = Some(0.0);
                    }
                });
                if backlog != before && (backlog == Some(0) || before == Some(0)) {
                    let status = self.status();
                    tracing::info!(consumer = %self.handler.name(), backlog = ?status.backlog, lag_seconds = ?status.lag_seconds, applied = status.applied, duplicates = status.duplicates, dead_lettered = status.dead_lettered, "consumer backlog");
                }
            }
            Err(e) => {
                tracing::debug!(consumer = %self.handler.name(), error = %e, "cannot read the backlog")
            }
        }
    }

    async fn prune(&self) {
        let keep = chrono::Duration::from_std(self.options.retain_ids_for)
            .unwrap_or(chrono::Duration::MAX);
        let before = Utc::now()
            .checked_sub_signed(keep)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        if let Err(e) = self.inbox.prune(self.handler.name(), before).await {
            tracing::warn!(consumer = %self.handler.name(), error = %e, "cannot prune the inbox");
        }
    }
}

/// The id of a delivery's message, for errors.
fn message_id(delivery: &Delivery) -> String {
    delivery
        .event
        .as_ref()
        .map_or_else(|_| "(unreadable)".to_owned(), |e| e.id.to_string())
}

#[derive(Default)]
struct Counts {
    applied: u64,
    duplicates: u64,
}

/// How often a consumer looks for dead letters an operator asked to retry.
const RETRY_CHECK_EVERY: Duration = Duration::from_secs(2);

/// 100 ms doubled per failure, at most `max`.
fn backoff(failures: u32, max: Duration) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1u32 << failures.min(16))
        .min(max)
}
