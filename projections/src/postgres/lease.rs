//! The lease rows of `projection_leases`: taken when expired (raising the epoch), renewed by
//! the holder, released on shutdown. Only the server's clock is used, so hosts whose clocks
//! disagree still agree on who holds a lease.

use std::time::Duration;

use sqlx::PgPool;

use super::{i64_of, u64_of};
use crate::error::Result;

pub(crate) async fn acquire(
    pool: &PgPool,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<Option<u64>> {
    // Look first, read-only: a standby that finds the lease running writes nothing.
    let running: Option<bool> = sqlx::query_scalar(
        "SELECT expires_at > clock_timestamp() FROM projection_leases WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?;
    if running == Some(true) {
        return Ok(None);
    }
    let epoch: Option<i64> = sqlx::query_scalar(
        "INSERT INTO projection_leases AS l (name, epoch, holder, acquired_at, expires_at) \
         VALUES ($1, 1, $2, clock_timestamp(), clock_timestamp() + make_interval(secs => $3)) \
         ON CONFLICT (name) DO UPDATE SET epoch = l.epoch + 1, holder = EXCLUDED.holder, \
             acquired_at = EXCLUDED.acquired_at, expires_at = EXCLUDED.expires_at \
         WHERE l.expires_at <= clock_timestamp() \
         RETURNING epoch",
    )
    .bind(name)
    .bind(holder)
    .bind(ttl.as_secs_f64())
    .fetch_optional(pool)
    .await?;
    epoch.map(u64_of).transpose()
}

pub(crate) async fn renew(pool: &PgPool, name: &str, epoch: u64, ttl: Duration) -> Result<bool> {
    let renewed = sqlx::query(
        "UPDATE projection_leases SET expires_at = clock_timestamp() + make_interval(secs => $3) \
         WHERE name = $1 AND epoch = $2",
    )
    .bind(name)
    .bind(i64_of(epoch)?)
    .bind(ttl.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    Ok(renewed == 1)
}

pub(crate) async fn release(pool: &PgPool, name: &str, epoch: u64) -> Result<()> {
    sqlx::query(
        "UPDATE projection_leases SET expires_at = clock_timestamp() \
         WHERE name = $1 AND epoch = $2",
    )
    .bind(name)
    .bind(i64_of(epoch)?)
    .execute(pool)
    .await?;
    Ok(())
}
