//! [`PgInbox`]: the inbox in PostgreSQL.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{LeaseToken, PgTarget, Resolution};
use sqlx::{PgPool, Postgres, Row, Transaction};
use uuid::Uuid;

use super::{lease_name, DeadMessage, DeadStatus, Inbox, InboxTx};
use crate::error::{Error, Result};

/// How long a consumer's transaction may sit idle before the server ends it (a frozen
/// consumer must not hold its lease's row lock for ever).
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Inboxes in PostgreSQL, in the database of the consumer's own data. Call
/// [`PgInbox::migrate`] once before use.
#[derive(Clone, Debug)]
pub struct PgInbox {
    pool: PgPool,
    leases: PgTarget,
}

impl PgInbox {
    /// An inbox over `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            leases: PgTarget::new(pool.clone()),
            pool,
        }
    }

    /// Creates the inbox tables and the lease table (idempotent).
    pub async fn migrate(&self) -> Result<()> {
        self.leases.migrate().await?;
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| Error::Inbox(e.into()))
    }

    /// The pool it uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn letters(
        &self,
        consumer: &str,
        status: Option<DeadStatus>,
    ) -> Result<Vec<DeadMessage>> {
        let rows = sqlx::query(
            "SELECT id, status, attempts, message_id, body, error, recorded_at \
             FROM inbox_dead_letters WHERE consumer = $1 AND ($2::text IS NULL OR status = $2) \
             ORDER BY id",
        )
        .bind(consumer)
        .bind(status.map(DeadStatus::as_str))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let body: Vec<u8> = row.try_get("body")?;
                let status: String = row.try_get("status")?;
                let attempts: i32 = row.try_get("attempts")?;
                Ok(DeadMessage {
                    id: row.try_get("id")?,
                    status: DeadStatus::parse(&status),
                    attempts: u32::try_from(attempts).unwrap_or(0),
                    message_id: row.try_get("message_id")?,
                    body: String::from_utf8_lossy(&body).into_owned(),
                    error: row.try_get("error")?,
                    recorded_at: row.try_get("recorded_at")?,
                })
            })
            .collect()
    }
}

/// A consumer's open transaction on PostgreSQL.
pub struct PgInboxTx {
    consumer: String,
    epoch: u64,
    tx: Transaction<'static, Postgres>,
}

#[async_trait]
impl Inbox for PgInbox {
    type Leases = PgTarget;
    type Tx = PgInboxTx;

    fn leases(&self) -> &PgTarget {
        &self.leases
    }

    async fn begin(&self, consumer: &str, lease: &LeaseToken) -> Result<PgInboxTx> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('idle_in_transaction_session_timeout', $1, true)")
            .bind(IDLE_TIMEOUT.as_millis().to_string())
            .execute(&mut *tx)
            .await?;
        Ok(PgInboxTx {
            consumer: consumer.to_owned(),
            epoch: lease.epoch(),
            tx,
        })
    }

    async fn cursors(&self, consumer: &str) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query("SELECT source, next_offset FROM inbox_cursors WHERE consumer = $1")
            .bind(consumer)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let next: i64 = row.try_get("next_offset")?;
                Ok((row.try_get("source")?, u64::try_from(next).unwrap_or(0)))
            })
            .collect()
    }

    async fn received(&self, consumer: &str) -> Result<u64> {
        let count: i64 =
            sqlx::query_scalar("SELECT count(*) FROM inbox_messages WHERE consumer = $1")
                .bind(consumer)
                .fetch_one(&self.pool)
                .await?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn dead_letters(&self, consumer: &str) -> Result<Vec<DeadMessage>> {
        self.letters(consumer, None).await
    }

    async fn resolve(&self, consumer: &str, id: i64, resolution: Resolution) -> Result<bool> {
        let status = match resolution {
            Resolution::Retry => DeadStatus::Retry,
            Resolution::Skip => DeadStatus::Skipped,
        };
        let changed = sqlx::query(
            "UPDATE inbox_dead_letters SET status = $3 \
             WHERE consumer = $1 AND id = $2 \
               AND (status = 'open' OR ($3 = 'skipped' AND status = 'retry'))",
        )
        .bind(consumer)
        .bind(id)
        .bind(status.as_str())
        .execute(&self.pool)
        .await?;
        Ok(changed.rows_affected() == 1)
    }

    async fn retries_asked(&self, consumer: &str) -> Result<Vec<DeadMessage>> {
        self.letters(consumer, Some(DeadStatus::Retry)).await
    }

    async fn prune(&self, consumer: &str, before: DateTime<Utc>) -> Result<u64> {
        let done =
            sqlx::query("DELETE FROM inbox_messages WHERE consumer = $1 AND received_at < $2")
                .bind(consumer)
                .bind(before)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl InboxTx for PgInboxTx {
    async fn first_time(&mut self, id: Uuid) -> Result<bool> {
        let inserted = sqlx::query(
            "INSERT INTO inbox_messages (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(&self.consumer)
        .bind(id)
        .execute(&mut *self.tx)
        .await?;
        Ok(inserted.rows_affected() == 1)
    }

    async fn set_cursor(&mut self, source: &str, next: u64) -> Result<()> {
        let next = i64::try_from(next)
            .map_err(|_| Error::Config(format!("offset {next} of {source} is out of range")))?;
        sqlx::query(
            "INSERT INTO inbox_cursors (consumer, source, next_offset) VALUES ($1, $2, $3) \
             ON CONFLICT (consumer, source) DO UPDATE \
             SET next_offset = GREATEST(inbox_cursors.next_offset, EXCLUDED.next_offset)",
        )
        .bind(&self.consumer)
        .bind(source)
        .bind(next)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn dead_letter(&mut self, id: Option<Uuid>, body: &[u8], error: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO inbox_dead_letters (consumer, message_id, body, error) VALUES ($1, $2, $3, $4)",
        )
        .bind(&self.consumer)
        .bind(id)
        .bind(body)
        .bind(error)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    async fn close_retry(&mut self, letter: i64, error: Option<&str>) -> Result<()> {
        sqlx::query(
            "UPDATE inbox_dead_letters SET \
               status = CASE WHEN $3::text IS NULL THEN 'retried' ELSE 'open' END, \
               error = coalesce($3, error), \
               attempts = attempts + CASE WHEN $3::text IS NULL THEN 0 ELSE 1 END \
             WHERE consumer = $1 AND id = $2 AND status = 'retry'",
        )
        .bind(&self.consumer)
        .bind(letter)
        .bind(error)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        Some(&mut self.tx)
    }

    async fn commit(mut self) -> Result<()> {
        // The fence, last: the lease row share-locked until the commit, so that a taker's
        // update waits for it, and a lease taken meanwhile (a higher epoch) rolls it back.
        // Taken at the start instead, it would hold off the holder's own renewals for the
        // whole batch.
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM projection_leases WHERE name = $1 FOR SHARE")
                .bind(lease_name(&self.consumer))
                .fetch_optional(&mut *self.tx)
                .await?;
        if epoch.and_then(|e| u64::try_from(e).ok()) != Some(self.epoch) {
            return Err(Error::LeaseLost {
                consumer: self.consumer,
                epoch: self.epoch,
            });
        }
        self.tx.commit().await?;
        Ok(())
    }
}
