//! [`PgTarget`]: read models, checkpoints, leases and dead letters in PostgreSQL.
//!
//! Every batch opens by taking its projection's gate, a transaction-level advisory lock
//! (no transaction id, so an open batch holds back no reader of the log): shared for live and
//! rebuild batches, exclusive for a switch. So a switch waits for the batches in flight and
//! keeps new ones out until it has committed, and a batch never writes a generation that has
//! been switched out (it finds out at its start and moves over). A batch's session is ended
//! by the server if the worker goes quiet inside it (frozen, or its host gone) for longer
//! than the batch timeout, so it cannot hold the gate for ever.

mod batch;
mod lease;

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use batch::PgBatch;

/// How the PostgreSQL target reports a database error: one out of reach (refused, lost,
/// restarting, pool exhausted) is [`Error::Unavailable`], which workers retry; anything else
/// is [`Error::Storage`]. The `sqlx` error is kept as the cause.
impl From<sqlx::Error> for Error {
    fn from(error: sqlx::Error) -> Self {
        if eventstore_postgres::is_transient(&error) {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Storage(Box::new(error))
        }
    }
}

use crate::dead_letters::{DeadLetter, DeadLetterStatus, Resolution};
use crate::error::{Error, Result};
use crate::lease::{LeaseInfo, LeaseToken};
use crate::progress::ProgressBoard;
use crate::target::{Checkpoint, Failure, Role, StoredState, Target};

/// How long a batch's session may sit idle inside its transaction before the server ends it.
pub const DEFAULT_BATCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Read models in PostgreSQL: the tables of `projections/migrations`, in the database of
/// `pool` (the event store's or another one).
#[derive(Clone, Debug)]
pub struct PgTarget {
    pool: PgPool,
    batch_timeout: Duration,
    progress: ProgressBoard,
}

impl PgTarget {
    /// A target over `pool`. Call [`PgTarget::migrate`] once before use.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            batch_timeout: DEFAULT_BATCH_TIMEOUT,
            progress: ProgressBoard::default(),
        }
    }

    /// How long a batch's session may sit idle in its transaction (the worker frozen, or
    /// its host gone) before the server ends it, releasing its locks; keep it at or below
    /// the lease's time-to-live. The same bound applies to TCP keepalive probes.
    pub fn with_batch_timeout(mut self, timeout: Duration) -> Self {
        self.batch_timeout = timeout;
        self
    }

    /// The pool it uses.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the projections' migrations (idempotent; they share sqlx's migrations table
    /// with the event store's, with versions that never collide).
    pub async fn migrate(&self) -> Result<()> {
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| Error::Storage(Box::new(e)))
    }

    async fn state_rows(&self, name: Option<&str>) -> Result<Vec<StoredState>> {
        let rows = sqlx::query(
            "SELECT s.name, s.active_generation, \
                    c.version, c.commit, c.sequence, c.last_recorded_at, c.failure, \
                    r.generation AS r_generation, r.version AS r_version, r.commit AS r_commit, \
                    r.sequence AS r_sequence, r.last_recorded_at AS r_last_recorded_at, \
                    r.failure AS r_failure, \
                    l.holder, l.epoch, l.expires_at > clock_timestamp() AS lease_live, \
                    s.paused_at \
             FROM projection_state s \
             JOIN projection_checkpoints c ON c.name = s.name AND c.generation = s.active_generation \
             LEFT JOIN LATERAL (SELECT * FROM projection_checkpoints r \
                 WHERE r.name = s.name AND r.generation > s.active_generation \
                 ORDER BY r.generation DESC LIMIT 1) r ON true \
             LEFT JOIN projection_leases l ON l.name = s.name \
             WHERE $1::text IS NULL OR s.name = $1 \
             ORDER BY s.name",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(state_of).collect()
    }
}

/// A number as a PostgreSQL `bigint`; one past it (never met in practice: positions, epochs
/// and generations all come from `bigint` columns) is refused, not clamped.
pub(crate) fn i64_of(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::OutOfRange(format!("{value} does not fit a bigint")))
}

/// A PostgreSQL `bigint` that must not be negative; a negative one is refused, not clamped.
pub(crate) fn u64_of(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::OutOfRange(format!("a stored {value} is negative")))
}

/// A version as a PostgreSQL `integer`; one past it is refused, not clamped.
fn i32_of(value: u32) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::OutOfRange(format!("{value} does not fit an integer")))
}

/// A PostgreSQL `integer` that must not be negative (a version, a count of attempts).
pub(crate) fn u32_of(value: i32) -> Result<u32> {
    u32::try_from(value).map_err(|_| Error::OutOfRange(format!("a stored {value} is negative")))
}

fn position(commit: i64, sequence: i64) -> Result<Position> {
    Ok(Position::new(u64_of(commit)?, u64_of(sequence)?))
}

fn failure_of(json: Option<Value>) -> Result<Option<Failure>> {
    json.map(|v| {
        serde_json::from_value(v)
            .map_err(|e| crate::documents::document_error("projection_checkpoints", "failure", e))
    })
    .transpose()
}

fn failure_json(failure: &Failure) -> Result<Value> {
    serde_json::to_value(failure)
        .map_err(|e| crate::documents::document_error("projection_checkpoints", "failure", e))
}

fn checkpoint_of(row: &PgRow, prefix: &str) -> Result<Checkpoint> {
    let column = |c: &str| format!("{prefix}{c}");
    let version: i32 = row.try_get(column("version").as_str())?;
    Ok(Checkpoint {
        position: position(
            row.try_get(column("commit").as_str())?,
            row.try_get(column("sequence").as_str())?,
        )?,
        version: u32_of(version)?,
        last_recorded_at: row.try_get(column("last_recorded_at").as_str())?,
        failure: failure_of(row.try_get(column("failure").as_str())?)?,
    })
}

fn state_of(row: &PgRow) -> Result<StoredState> {
    let rebuilding = match row.try_get::<Option<i64>, _>("r_generation")? {
        None => None,
        Some(generation) => Some((u64_of(generation)?, checkpoint_of(row, "r_")?)),
    };
    let lease = match row.try_get::<Option<String>, _>("holder")? {
        None => None,
        Some(holder) => Some(LeaseInfo {
            holder,
            epoch: u64_of(row.try_get("epoch")?)?,
            live: row
                .try_get::<Option<bool>, _>("lease_live")?
                .unwrap_or(false),
        }),
    };
    Ok(StoredState {
        name: row.try_get("name")?,
        active_generation: u64_of(row.try_get("active_generation")?)?,
        checkpoint: checkpoint_of(row, "")?,
        rebuilding,
        lease,
        paused_at: row.try_get("paused_at")?,
    })
}

fn dead_letter_of(row: &PgRow) -> Result<DeadLetter> {
    Ok(DeadLetter {
        projection: row.try_get("projection")?,
        generation: u64_of(row.try_get("generation")?)?,
        failure: Failure {
            position: position(row.try_get("commit")?, row.try_get("sequence")?)?,
            event_id: row.try_get("event_id")?,
            event_type: row.try_get("event_type")?,
            stream_id: row.try_get("stream_id")?,
            error: row.try_get("error")?,
        },
        blocking: row.try_get("blocking")?,
        status: DeadLetterStatus::parse(row.try_get("status")?)?,
        attempts: u32_of(row.try_get::<i32, _>("attempts")?)?,
        failed_at: row.try_get("failed_at")?,
    })
}

const DEAD_LETTER_COLUMNS: &str = "projection, generation, commit, sequence, event_id, \
     event_type, stream_id, error, blocking, status, attempts, failed_at";

/// The key of a projection's gate, an advisory lock on `$1`, the projection's name: batches
/// hold it shared, a switch, a reset and a pause exclusively.
const GATE_KEY: &str = "hashtextextended('projection_generation:' || $1, 0)";

/// The function that takes the gate until the transaction ends.
fn gate_lock(exclusive: bool) -> &'static str {
    if exclusive {
        "pg_advisory_xact_lock"
    } else {
        "pg_advisory_xact_lock_shared"
    }
}

/// Closes the open dead letters of `name`'s generations older than `generation`.
async fn close_older_letters(
    tx: &mut sqlx::PgConnection,
    name: &str,
    generation: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE projection_dead_letters SET status = 'retried', resolved_at = now() \
         WHERE projection = $1 AND generation < $2 AND status IN ('parked', 'retry')",
    )
    .bind(name)
    .bind(generation)
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes the gate of `name` in `tx`, waiting for it.
async fn gate(tx: &mut sqlx::PgConnection, name: &str, exclusive: bool) -> Result<()> {
    let lock = gate_lock(exclusive);
    sqlx::query(&format!("SELECT {lock}({GATE_KEY})"))
        .bind(name)
        .execute(tx)
        .await?;
    Ok(())
}

/// The active generation's documents of a projection (joined, so one snapshot).
const ACTIVE_DOCUMENTS: &str = "projection_documents d JOIN projection_state s \
     ON s.name = d.projection AND s.active_generation = d.generation";

#[async_trait]
impl Target for PgTarget {
    type Batch = PgBatch;

    async fn register(&self, name: &str, version: u32) -> Result<StoredState> {
        crate::projection::check_name(name)?;
        sqlx::query(
            "WITH state AS (INSERT INTO projection_state (name, active_generation) VALUES ($1, 1) \
                 ON CONFLICT (name) DO NOTHING RETURNING name) \
             INSERT INTO projection_checkpoints (name, generation, version, commit, sequence) \
             SELECT name, 1, $2, 0, 0 FROM state ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(i32_of(version)?)
        .execute(&self.pool)
        .await?;
        self.state(name)
            .await?
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    async fn state(&self, name: &str) -> Result<Option<StoredState>> {
        Ok(self.state_rows(Some(name)).await?.into_iter().next())
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<Option<u64>> {
        lease::acquire(&self.pool, name, holder, ttl).await
    }

    async fn renew_lease(&self, name: &str, epoch: u64, ttl: Duration) -> Result<bool> {
        lease::renew(&self.pool, name, epoch, ttl).await
    }

    async fn release_lease(&self, name: &str, epoch: u64) -> Result<()> {
        lease::release(&self.pool, name, epoch).await
    }

    async fn checkpoint(&self, name: &str, generation: u64) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(
            "SELECT version, commit, sequence, last_recorded_at, failure \
             FROM projection_checkpoints WHERE name = $1 AND generation = $2",
        )
        .bind(name)
        .bind(i64_of(generation)?)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(|r| checkpoint_of(r, "")).transpose()
    }

    async fn create_generation(&self, name: &str, generation: u64, version: u32) -> Result<bool> {
        // Through the gate (shared), so that a reset, which numbers its generation after the
        // newest, never races an insert it cannot see yet.
        let mut tx = self.pool.begin().await?;
        gate(&mut tx, name, false).await?;
        let created = sqlx::query(
            "INSERT INTO projection_checkpoints (name, generation, version, commit, sequence) \
             SELECT $1, $2, $3, 0, 0 FROM projection_state \
             WHERE name = $1 AND active_generation < $2 \
             ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(i64_of(generation)?)
        .bind(i32_of(version)?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(created == 1)
    }

    async fn begin(
        &self,
        name: &str,
        generation: u64,
        role: Role,
        lease: Option<LeaseToken>,
    ) -> Result<Self::Batch> {
        let mut tx = self.pool.begin().await?;
        // The gate: a transaction-level advisory lock on the projection, shared by live and
        // rebuild batches, exclusive for a switch. Unlike a row lock it assigns no transaction
        // id, so an open batch does not hold back readers of the log, and requests queue
        // fairly, so a switch is not starved by batches that keep coming. The session ends if
        // the worker goes quiet in this transaction for longer than the batch timeout: a
        // frozen worker cannot hold the gate for ever.
        let lock = gate_lock(role == Role::Switch);
        let timeout_ms = self.batch_timeout.as_millis().to_string();
        let keepalive_s = (self.batch_timeout.as_secs() / 4).max(1).to_string();
        sqlx::query(&format!(
            "SELECT {lock}({GATE_KEY}), \
                    set_config('idle_in_transaction_session_timeout', $2, true), \
                    set_config('tcp_keepalives_idle', $3, true), \
                    set_config('tcp_keepalives_interval', $3, true), \
                    set_config('tcp_keepalives_count', '3', true)"
        ))
        .bind(name)
        .bind(timeout_ms)
        .bind(keepalive_s)
        .execute(&mut *tx)
        .await?;
        // A statement of its own, so that its snapshot is taken once the gate is held: a
        // switch (or a reset) that committed while this batch waited is seen.
        let row: Option<(i64, bool)> = sqlx::query_as(
            "SELECT active_generation, paused_at IS NOT NULL FROM projection_state WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let (active, paused) = row.ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
        let active = u64_of(active)?;
        let plays_its_role = match role {
            Role::Live => active == generation,
            Role::Rebuild | Role::Switch => generation > active,
        };
        if !plays_its_role {
            let _ = tx.rollback().await;
            return Err(Error::GenerationMoved {
                projection: name.to_owned(),
                generation,
                active,
            });
        }
        // A worker on a replaced generation moves over first, then finds the pause.
        if paused && role == Role::Live {
            let _ = tx.rollback().await;
            return Err(Error::Paused(name.to_owned()));
        }
        Ok(PgBatch::new(tx, name, i64_of(generation)?, role, lease))
    }

    async fn dead_letter(
        &self,
        batch: &mut Self::Batch,
        failure: &Failure,
        blocking: bool,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO projection_dead_letters AS d \
             (projection, generation, commit, sequence, event_id, event_type, stream_id, error, blocking) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (projection, event_id) DO UPDATE SET generation = EXCLUDED.generation, \
                 commit = EXCLUDED.commit, sequence = EXCLUDED.sequence, error = EXCLUDED.error, \
                 blocking = EXCLUDED.blocking, status = 'parked', attempts = d.attempts + 1, \
                 failed_at = now(), resolved_at = NULL",
        )
        .bind(&batch.name)
        .bind(batch.generation)
        .bind(i64_of(failure.position.commit)?)
        .bind(i64_of(failure.position.sequence)?)
        .bind(failure.event_id)
        .bind(&failure.event_type)
        .bind(&failure.stream_id)
        .bind(&failure.error)
        .bind(blocking)
        .execute(&mut *batch.tx)
        .await?;
        if blocking {
            batch.failure = Some(failure_json(failure)?);
        }
        Ok(())
    }

    async fn retried(&self, batch: &mut Self::Batch, event_id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE projection_dead_letters SET status = 'retried', resolved_at = now() \
             WHERE projection = $1 AND event_id = $2",
        )
        .bind(&batch.name)
        .bind(event_id)
        .execute(&mut *batch.tx)
        .await?;
        Ok(())
    }

    async fn commit(
        &self,
        mut batch: Self::Batch,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        batch.flush().await?;
        // The compare-and-set on the position the batch started from and, for a live batch,
        // on its lease's epoch (the fence: `projection_fence` keeps the lease row locked until
        // the commit, so a takeover waits for this batch to end). The generation's role was
        // checked when the batch began, under the gate it holds.
        let moved = sqlx::query(
            "UPDATE projection_checkpoints c \
             SET commit = $5, sequence = $6, last_recorded_at = coalesce($7, c.last_recorded_at), \
                 failure = coalesce($9, c.failure), updated_at = now() \
             WHERE c.name = $1 AND c.generation = $2 AND c.commit = $3 AND c.sequence = $4 \
               AND ($8::bigint IS NULL OR projection_fence($1, $8))",
        )
        .bind(&batch.name)
        .bind(batch.generation)
        .bind(i64_of(from.commit)?)
        .bind(i64_of(from.sequence)?)
        .bind(i64_of(to.commit)?)
        .bind(i64_of(to.sequence)?)
        .bind(last_recorded_at)
        .bind(
            batch
                .lease
                .as_ref()
                .map(|l| i64_of(l.epoch()))
                .transpose()?,
        )
        .bind(batch.failure.take())
        .execute(&mut *batch.tx)
        .await?
        .rows_affected();
        if moved != 1 {
            let _ = batch.tx.rollback().await;
            return Err(Error::LeaseLost {
                projection: batch.name,
                expected: from,
            });
        }
        if batch.role == Role::Switch {
            let row = sqlx::query(
                "SELECT c.commit, c.sequence, c.version, \
                        (SELECT version FROM projection_checkpoints \
                         WHERE name = $1 AND generation = $2) AS new_version \
                 FROM projection_state s \
                 JOIN projection_checkpoints c ON c.name = s.name AND c.generation = s.active_generation \
                 WHERE s.name = $1",
            )
            .bind(&batch.name)
            .bind(batch.generation)
            .fetch_one(&mut *batch.tx)
            .await?;
            let active_at = position(row.try_get("commit")?, row.try_get("sequence")?)?;
            let active_version = u32_of(row.try_get::<i32, _>("version")?)?;
            let version = u32_of(row.try_get::<i32, _>("new_version")?)?;
            let refused = if version < active_version {
                Some(Error::Superseded {
                    projection: batch.name.clone(),
                    version,
                    active_version,
                })
            } else if to < active_at {
                Some(Error::RebuildBehind {
                    projection: batch.name.clone(),
                    generation: u64_of(batch.generation)?,
                    rebuilt: to,
                    active: active_at,
                })
            } else {
                None
            };
            if let Some(error) = refused {
                let _ = batch.tx.rollback().await;
                return Err(error);
            }
            sqlx::query(
                "UPDATE projection_state SET active_generation = $2, updated_at = now() \
                 WHERE name = $1 AND active_generation < $2",
            )
            .bind(&batch.name)
            .bind(batch.generation)
            .execute(&mut *batch.tx)
            .await?;
            // The new generation passed every event an older one could not apply (or it
            // would hold the letter itself): those letters are closed.
            close_older_letters(&mut batch.tx, &batch.name, batch.generation).await?;
        }
        batch.tx.commit().await?;
        Ok(())
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        if paused {
            // The gate, exclusively: the batch in flight ends first, so once this returns
            // no live batch of the projection is open.
            gate(&mut tx, name, true).await?;
        }
        let updated = sqlx::query(
            "UPDATE projection_state \
             SET paused_at = CASE WHEN $2 THEN coalesce(paused_at, now()) END, updated_at = now() \
             WHERE name = $1",
        )
        .bind(name)
        .bind(paused)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(updated == 1)
    }

    async fn reset(&self, name: &str) -> Result<Option<u64>> {
        let mut tx = self.pool.begin().await?;
        // The switch's gate, exclusively: the batches in flight (and generations being
        // created) end first, and new ones see the new generation.
        gate(&mut tx, name, true).await?;
        let generation: Option<i64> = sqlx::query_scalar(
            "WITH next AS ( \
                 SELECT s.name, (SELECT max(generation) + 1 FROM projection_checkpoints c \
                                 WHERE c.name = s.name) AS generation, \
                        a.version \
                 FROM projection_state s \
                 JOIN projection_checkpoints a ON a.name = s.name AND a.generation = s.active_generation \
                 WHERE s.name = $1 FOR UPDATE OF s), \
             created AS ( \
                 INSERT INTO projection_checkpoints (name, generation, version, commit, sequence) \
                 SELECT name, generation, version, 0, 0 FROM next) \
             UPDATE projection_state s SET active_generation = next.generation, updated_at = now() \
             FROM next WHERE s.name = next.name \
             RETURNING s.active_generation",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(generation) = generation else {
            return Ok(None);
        };
        // The replay meets those events again, and parks anew the ones that still fail.
        close_older_letters(&mut tx, name, generation).await?;
        tx.commit().await?;
        // Done: the worker retires the old generations too, should this fail.
        if let Err(error) = self.retire_generations(name).await {
            tracing::warn!(projection = %name, %error, "reset: the old generations are left for the worker to retire");
        }
        Ok(Some(u64_of(generation)?))
    }

    async fn retire_generations(&self, name: &str) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        let active: Option<i64> =
            sqlx::query_scalar("SELECT active_generation FROM projection_state WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(active) = active else {
            return Ok(0);
        };
        sqlx::query("DELETE FROM projection_documents WHERE projection = $1 AND generation < $2")
            .bind(name)
            .bind(active)
            .execute(&mut *tx)
            .await?;
        let retired =
            sqlx::query("DELETE FROM projection_checkpoints WHERE name = $1 AND generation < $2")
                .bind(name)
                .bind(active)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(retired)
    }

    async fn states(&self) -> Result<Vec<StoredState>> {
        self.state_rows(None).await
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM projection_dead_letters \
             WHERE projection = $1 ORDER BY id"
        ))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter_of).collect()
    }

    async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let letter = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM projection_dead_letters \
             WHERE projection = $1 AND event_id = $2 AND status IN ('parked', 'retry') FOR UPDATE"
        ))
        .bind(name)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(letter) = letter.as_ref().map(dead_letter_of).transpose()? else {
            return Ok(false);
        };
        // A blocking letter is the failure of a generation; resolving it takes the failure
        // off that generation (skip also moves its checkpoint past the event).
        let status = match (letter.blocking, resolution) {
            (false, Resolution::Retry) => "retry",
            (true, Resolution::Retry) => "retried",
            (_, Resolution::Skip) => "skipped",
        };
        if letter.blocking {
            let skip_to = (resolution == Resolution::Skip).then_some(letter.failure.position);
            let cleared = sqlx::query(
                "UPDATE projection_checkpoints \
                 SET failure = NULL, updated_at = now(), \
                     commit = CASE WHEN $3::bigint IS NOT NULL AND (commit, sequence) < ($3, $4) THEN $3 ELSE commit END, \
                     sequence = CASE WHEN $3::bigint IS NOT NULL AND (commit, sequence) < ($3, $4) THEN $4 ELSE sequence END \
                 WHERE name = $1 AND generation = $2 AND failure->>'event_id' = $5",
            )
            .bind(name)
            .bind(i64_of(letter.generation)?)
            .bind(skip_to.map(|p| i64_of(p.commit)).transpose()?)
            .bind(skip_to.map(|p| i64_of(p.sequence)).transpose()?)
            .bind(event_id.to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if cleared != 1 {
                // The letter's generation no longer stops at this event: nothing to resolve.
                return Ok(false);
            }
        }
        sqlx::query(
            "UPDATE projection_dead_letters SET status = $3, \
                 resolved_at = CASE WHEN $3 = 'retry' THEN NULL ELSE now() END \
             WHERE projection = $1 AND event_id = $2",
        )
        .bind(name)
        .bind(event_id)
        .bind(status)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn retries_asked(&self, name: &str, limit: usize) -> Result<Vec<DeadLetter>> {
        let rows = sqlx::query(&format!(
            "SELECT {DEAD_LETTER_COLUMNS} FROM projection_dead_letters d \
             JOIN projection_state s ON s.name = d.projection AND s.active_generation = d.generation \
             WHERE d.projection = $1 AND d.status = 'retry' ORDER BY d.id LIMIT $2"
        ))
        .bind(name)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dead_letter_of).collect()
    }

    fn progress(&self) -> &ProgressBoard {
        &self.progress
    }

    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        Ok(sqlx::query_scalar(&format!(
            "SELECT d.doc FROM {ACTIVE_DOCUMENTS} \
             WHERE d.projection = $1 AND d.collection = $2 AND d.key = $3"
        ))
        .bind(projection)
        .bind(collection)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?)
    }

    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>> {
        let rows = sqlx::query(&format!(
            "SELECT d.key, d.doc FROM {ACTIVE_DOCUMENTS} \
             WHERE d.projection = $1 AND d.collection = $2 ORDER BY d.key"
        ))
        .bind(projection)
        .bind(collection)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| Ok((row.try_get("key")?, row.try_get("doc")?)))
            .collect()
    }
}
