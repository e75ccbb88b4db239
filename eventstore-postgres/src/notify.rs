//! Waking readers when events are appended: NOTIFY after appends, LISTEN in every process
//! that reads, and polling as the fallback.
//!
//! A transaction that sends NOTIFY takes a cluster-wide lock while it commits, which would
//! make concurrent appends commit one at a time. So an append on its own transaction does not
//! notify from inside it: once it has committed, the store wakes the readers of its own
//! process at once and asks a publisher task to send one `NOTIFY`; appends that land while a
//! `NOTIFY` is in flight share the next one (one notification per burst, at most one per
//! append transaction). Appends inside a caller's transaction notify from within it, since
//! only its commit can tell.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// The channel `es_append_v2` notifies once per appending transaction.
pub const CHANNEL: &str = "es_events";

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// One LISTEN connection per store, shared by every waiting reader through a `watch` counter.
///
/// A notification only says "look again". One sent while the listener's connection was down
/// is lost, so readers are woken to look once it listens again; a reader that misses one
/// anyway (its writer died between commit and `NOTIFY`) finds the events at its next poll,
/// so a lost notification costs latency, never events.
#[derive(Debug)]
pub(crate) struct Notifier {
    pool: PgPool,
    signal: watch::Sender<u64>,
    listener: OnceLock<JoinHandle<()>>,
    publisher: OnceLock<JoinHandle<()>>,
    pending: Arc<Notify>,
    /// How many appends were announced, for the publisher to tell a busy log from a quiet one.
    announced: Arc<AtomicU64>,
}

impl Notifier {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            signal: watch::Sender::new(0),
            listener: OnceLock::new(),
            publisher: OnceLock::new(),
            pending: Arc::new(Notify::new()),
            announced: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Tells readers that an append has committed: this process's at once, other processes'
    /// through the next `NOTIFY` the publisher sends.
    pub(crate) fn announce(&self) {
        self.signal.send_modify(|n| *n += 1);
        self.publisher.get_or_init(|| {
            tokio::spawn(publish(
                self.pool.clone(),
                Arc::clone(&self.pending),
                Arc::clone(&self.announced),
            ))
        });
        self.announced.fetch_add(1, Ordering::Relaxed);
        self.pending.notify_one();
    }

    /// A receiver that changes whenever an append is notified (and after each reconnect).
    /// Starts the listener on first use.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.listener
            .get_or_init(|| tokio::spawn(listen(self.pool.clone(), self.signal.clone())));
        self.signal.subscribe()
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        for task in [self.listener.get(), self.publisher.get()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
    }
}

async fn listen(pool: PgPool, signal: watch::Sender<u64>) {
    loop {
        match connect(&pool).await {
            Ok(mut listener) => {
                // Anything appended while we were not listening: wake readers to look.
                signal.send_modify(|n| *n += 1);
                let mut last_loss: Option<tokio::time::Instant> = None;
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => signal.send_modify(|n| *n += 1),
                        // The connection was closed under it (a network cut, or the server
                        // ending the session) and sqlx has connected and listened again. A
                        // notification sent meanwhile is lost: wake readers to look.
                        Ok(None) => {
                            tracing::warn!("event notifications interrupted; listening again");
                            signal.send_modify(|n| *n += 1);
                            // A connection that keeps dropping as soon as it is made is
                            // made again no more often than one that fails to connect.
                            if last_loss.is_some_and(|at| at.elapsed() < RECONNECT_DELAY) {
                                tokio::time::sleep(RECONNECT_DELAY).await;
                            }
                            last_loss = Some(tokio::time::Instant::now());
                        }
                        Err(error) => {
                            tracing::warn!(%error, "event notifications interrupted; reconnecting");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot LISTEN for events; readers fall back to polling")
            }
        }
        tokio::time::sleep(RECONNECT_DELAY).await;
    }
}

/// The shortest time between two `NOTIFY`s the publisher sends: a burst of appends within it
/// costs one notification, and a reader in another process waits at most this much longer
/// after a quiet spell.
const PUBLISH_INTERVAL: Duration = Duration::from_millis(2);

/// The longest: while appends keep coming, the interval doubles up to this, so that a busy
/// log costs at most 50 `NOTIFY`s a second (each one a round trip and a wake-up; at one per
/// 2 ms they cost a single writer about a tenth of its rate), and a reader in another process
/// waits at most about this much longer (plus the `NOTIFY`'s round trip).
const BUSY_PUBLISH_INTERVAL: Duration = Duration::from_millis(20);

/// The publisher's `NOTIFY`, in a transaction of its own that commits without waiting for
/// the disk. A transaction that notifies is given a transaction id and writes a commit record
/// (40 bytes of WAL), and with `synchronous_commit` on its commit would wait until the WAL is
/// flushed (a single writer's appends measured about 6 % faster without that wait). A
/// notification is delivered at the commit, not at the flush, and is not kept across a crash
/// either way, so nothing is lost by not waiting.
const NOTIFY: &str = "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, '')";

/// Sends one `NOTIFY` per wake-up; announcements made while one is in flight (or while it
/// waits its interval) leave a single permit behind, so a burst costs one more `NOTIFY`.
async fn publish(pool: PgPool, pending: Arc<Notify>, announced: Arc<AtomicU64>) {
    let mut interval = PUBLISH_INTERVAL;
    loop {
        pending.notified().await;
        let before = announced.load(Ordering::Relaxed);
        tokio::time::sleep(interval).await;
        if let Err(error) = sqlx::query(NOTIFY).bind(CHANNEL).execute(&pool).await {
            tracing::warn!(%error, "cannot NOTIFY; readers in other processes fall back to polling");
        }
        // More appends meanwhile: the log is busy, so the next notification waits longer.
        interval = if announced.load(Ordering::Relaxed) != before {
            (interval * 2).min(BUSY_PUBLISH_INTERVAL)
        } else {
            PUBLISH_INTERVAL
        };
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
