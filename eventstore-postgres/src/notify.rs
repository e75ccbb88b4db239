//! Waking readers when events are appended: LISTEN on the channel every append notifies
//! (one notification per transaction), with polling as the fallback.

use std::sync::OnceLock;
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The channel `es_append` notifies once per appending transaction.
pub const CHANNEL: &str = "es_events";

/// How long the listener waits before connecting again after losing its connection.
const RECONNECT_DELAY: Duration = Duration::from_millis(500);

/// One LISTEN connection per store, shared by every waiting reader through a `watch` counter.
///
/// A notification only says "look again"; a reader that misses one (the connection dropped,
/// the listener was starting) still finds the events at its next poll, so a lost
/// notification costs latency, never events.
#[derive(Debug)]
pub(crate) struct Notifier {
    pool: PgPool,
    signal: watch::Sender<u64>,
    listener: OnceLock<JoinHandle<()>>,
}

impl Notifier {
    pub(crate) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            signal: watch::Sender::new(0),
            listener: OnceLock::new(),
        }
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
        if let Some(task) = self.listener.get() {
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
                loop {
                    match listener.recv().await {
                        Ok(_) => signal.send_modify(|n| *n += 1),
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

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}
