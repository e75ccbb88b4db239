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
//! apply to it) and detached from it: its place in the pool is freed, for the pool to open
//! another when it needs one, and no pool is ever left without a connection it counts on.
//! So a store holds one connection to the server beyond its pool's. At the first append
//! after it has sat idle longer than the pool's idle timeout, or after the pool's maximum
//! lifetime has passed since the store took it, it is given back to the server and another
//! taken. After ten seconds idle it is checked before use (a ping, given two seconds), so
//! that a connection the network dropped without a word (a NAT or load balancer forgetting
//! it) does not hold up the appends until the operating system gives up on it. (One that
//! the network drops while a statement runs still holds that statement, and the writer's
//! turn, until then, as a pooled connection did.) It is dropped after any error that may have left it broken; the append
//! whose statement failed that way is written again on a pooled connection, which finds it
//! stored if it was (see `PgEventStore::append`). Once the pool is closed, no statement is
//! written on the connection: the next one closes it and fails as the pool would.
//!
//! A statement abandoned half-way (its caller stopped waiting) may have left part of itself
//! in the connection's buffer, which the next use would send. The connection is then
//! dropped without sending anything more, and the server, which never got the statement's
//! end, stores nothing of it.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgDatabaseError, PgSeverity};
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
    /// A statement was handed the connection and has not had its answer yet.
    in_flight: bool,
}

impl Open {
    /// A connection taken from `pool` and detached from it.
    async fn take_from(pool: &PgPool) -> Result<Self, sqlx::Error> {
        Ok(Self {
            connection: pool.acquire().await?.detach(),
            opened_at: Instant::now(),
            used_at: Instant::now(),
            in_flight: false,
        })
    }
}

/// How long a connection is kept idle, or kept at all, when the pool sets no limit.
const FALLBACK_IDLE: Duration = Duration::from_secs(600);
const FALLBACK_LIFETIME: Duration = Duration::from_secs(1800);

/// How long a connection may sit idle and still be used without a check.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(10);

/// The longest the check of an idle connection may take before it is given up for another:
/// a live connection answers in milliseconds.
const CHECK_WITHIN: Duration = Duration::from_secs(2);

/// Errors of severity `ERROR` that a session meets again at every statement, through the
/// statements sqlx keeps prepared on it: a prepared statement gone (`26000`: a pooler in
/// transaction mode, a `DISCARD ALL`), and a cached plan whose result changed (`0A000`:
/// after a migration changed a table).
const REPEATING: [&str; 2] = ["26000", "0A000"];

impl WriterConnection {
    /// No connection yet: the first statement takes one from `pool`.
    pub(crate) fn new(pool: PgPool) -> Self {
        Self { pool, open: None }
    }

    /// The connection to write one statement on: the one kept, unless it is too old, sat
    /// idle too long, fails its check or was left by a statement abandoned half-way; or a
    /// new one from the pool. Fails with [`sqlx::Error::PoolClosed`] once the pool is closed,
    /// and with the pool's error when it has no connection to give. Call
    /// [`WriterConnection::answered`] once the statement has its answer.
    pub(crate) async fn get(&mut self) -> Result<&mut PgConnection, sqlx::Error> {
        if self.pool.is_closed() {
            self.close();
            return Err(sqlx::Error::PoolClosed);
        }
        let options = self.pool.options();
        let idle = options.get_idle_timeout().unwrap_or(FALLBACK_IDLE);
        let lifetime = options.get_max_lifetime().unwrap_or(FALLBACK_LIFETIME);
        if self.open.as_ref().is_some_and(|open| open.in_flight) {
            // Never sent on: whatever the abandoned statement left in the buffer goes with it.
            self.open = None;
        }
        if self.open.as_ref().is_some_and(|open| {
            open.used_at.elapsed() > idle || open.opened_at.elapsed() > lifetime
        }) {
            self.close();
        }
        let mut open = match self.open.take() {
            Some(open) => open,
            None => Open::take_from(&self.pool).await?,
        };
        if open.used_at.elapsed() > CHECK_AFTER_IDLE {
            let check = tokio::time::timeout(CHECK_WITHIN, open.connection.ping());
            if !matches!(check.await, Ok(Ok(()))) {
                // Dropped, not closed: a connection that does not answer would not answer
                // the goodbye either.
                open = Open::take_from(&self.pool).await?;
            }
        }
        let open = self.open.insert(open);
        open.used_at = Instant::now();
        open.in_flight = true;
        Ok(&mut open.connection)
    }

    /// The statement handed the connection by [`WriterConnection::get`] has its answer:
    /// rows, or `error`. After an error, the connection is dropped unless the server answered
    /// with an error that leaves the session open (a constraint, a lock timeout, a value
    /// refused): not one that ends it, nor one whose cause may have left it broken, nor one
    /// the session would meet again at every statement ([`REPEATING`]).
    pub(crate) fn answered(&mut self, error: Option<&sqlx::Error>) {
        let keep = error.is_none_or(|error| {
            !crate::set_append::outcome_unknown(error)
                && error
                    .as_database_error()
                    .and_then(|e| e.try_downcast_ref::<PgDatabaseError>())
                    .is_some_and(|e| {
                        e.severity() == PgSeverity::Error && !REPEATING.contains(&e.code())
                    })
        });
        match &mut self.open {
            Some(open) if keep => open.in_flight = false,
            _ => self.open = None,
        }
    }

    /// Gives the connection back to the server, in the background (it is not waited for);
    /// one left by a statement abandoned half-way is dropped, not closed, so that nothing
    /// more is sent on it.
    fn close(&mut self) {
        match self.open.take() {
            Some(open) if !open.in_flight => close_later(open.connection),
            _ => {}
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
