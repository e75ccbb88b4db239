//! The writer's connection: the one connection the store's appends (outside a caller's
//! transaction) are written on, kept from one statement to the next.
//!
//! Appends are written one statement at a time (the writer's turn, see `group`), so one
//! connection serves them all. Taking a connection from the pool for each statement costs
//! two more round trips (sqlx checks a connection when it hands it out and when it takes it
//! back), about a fifth of a single append's time; kept, the connection costs nothing
//! between statements.
//!
//! The connection is taken from the pool once (so the pool's connect options and hooks
//! apply to it) and detached from it: the pool opens another in its place, and no pool is
//! ever left without a connection it counts on. So a store holds one connection to the server
//! beyond its pool's. It is given back to the server (and another taken) when it has sat
//! idle longer than the pool's idle timeout or lived longer than the pool's maximum lifetime,
//! as the pool does with its own, and dropped after any error that may have left it broken;
//! the append whose statement failed that way is written again on a pooled connection, which
//! finds it stored if it was (see `PgEventStore::append`). Once the pool is closed, no
//! statement is written on the connection: the next one closes it and fails as the pool
//! would.

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, PgPool};

/// The connection, if one is open, and the pool it comes from.
#[derive(Debug)]
pub(crate) struct WriterConnection {
    pool: PgPool,
    open: Option<Open>,
}

#[derive(Debug)]
struct Open {
    connection: PgConnection,
    opened_at: Instant,
    used_at: Instant,
}

/// How long a connection is kept idle, or kept at all, when the pool sets no limit.
const FALLBACK_IDLE: Duration = Duration::from_secs(600);
const FALLBACK_LIFETIME: Duration = Duration::from_secs(1800);

impl WriterConnection {
    /// No connection yet: the first statement takes one from `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool, open: None }
    }

    /// The connection to write on: the one kept, unless it is too old or sat idle too long,
    /// or a new one from the pool. Fails with [`sqlx::Error::PoolClosed`] once the pool is
    /// closed, and with the pool's error when it has no connection to give.
    pub(crate) async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.pool.is_closed() {
            self.close();
            return Err(sqlx::Error::PoolClosed);
        }
        let options = self.pool.options();
        let idle = options.get_idle_timeout().unwrap_or(FALLBACK_IDLE);
        let lifetime = options.get_max_lifetime().unwrap_or(FALLBACK_LIFETIME);
        if self.open.as_ref().is_some_and(|open| {
            open.used_at.elapsed() > idle || open.opened_at.elapsed() > lifetime
        }) {
            self.close();
        }
        let open = match self.open.take() {
            Some(open) => open,
            None => Open {
                connection: self.pool.acquire().await?.detach(),
                opened_at: Instant::now(),
                used_at: Instant::now(),
            },
        };
        let open = self.open.insert(open);
        open.used_at = Instant::now();
        Ok(&mut open.connection)
    }

    /// After a statement on the connection failed with `error`: drops the connection unless
    /// the error is one the server answered with on a connection that stays open (a
    /// constraint, a lock timeout, a value refused).
    pub(crate) fn failed(&mut self, error: &sqlx::Error) {
        let answered =
            matches!(error, sqlx::Error::Database(_)) && !crate::set_append::outcome_unknown(error);
        if !answered {
            self.open = None;
        }
    }

    /// Gives the connection back to the server, in the background (it is not waited for).
    fn close(&mut self) {
        if let Some(open) = self.open.take() {
            close_later(open.connection);
        }
    }
}

impl Drop for WriterConnection {
    fn drop(&mut self) {
        self.close();
    }
}

/// Ends `connection` politely when a runtime is at hand to do it on; otherwise drops it (the
/// server then ends the session when it sees the socket close).
fn close_later(connection: PgConnection) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = connection.close().await;
        });
    }
}
