//! The lease that keeps one active worker per projection across processes: a session-level
//! advisory lock on a connection of its own. When the holder dies, PostgreSQL closes its
//! session and the lock is free for a standby.

use sqlx::{Connection, PgConnection, PgPool};

use crate::error::Result;

/// Holding this means being the one worker of a projection. Dropping it closes its
/// connection, which releases the lock.
#[derive(Debug)]
pub struct PgLease {
    connection: PgConnection,
}

/// The advisory-lock key of a projection, in a space of its own (`projection:` prefix).
const KEY_SQL: &str = "hashtextextended('projection:' || $1, 0)";

pub(crate) async fn try_acquire(pool: &PgPool, name: &str) -> Result<Option<PgLease>> {
    let mut connection = pool.acquire().await?;
    let granted: bool = sqlx::query_scalar(&format!("SELECT pg_try_advisory_lock({KEY_SQL})"))
        .bind(name)
        .fetch_one(&mut *connection)
        .await?;
    // Refused, the session holds nothing: it goes back to the pool. Granted, it leaves the
    // pool for good, so that the lock lives exactly as long as this lease.
    Ok(granted.then(|| PgLease {
        connection: connection.detach(),
    }))
}

/// The lock lives as long as the session: a live session still holds it.
pub(crate) async fn is_held(lease: &mut PgLease) -> bool {
    lease.connection.ping().await.is_ok()
}
