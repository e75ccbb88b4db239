//! [`PgTarget`]: read models, checkpoints, leases and dead letters in PostgreSQL.

mod batch;
mod lease;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::Position;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

pub use batch::PgBatch;
pub use lease::PgLease;

use crate::error::{Error, Result};
use crate::target::{Checkpoint, Failure, Role, StoredState, Target};

/// Read models in PostgreSQL: the tables of `projections/migrations`, in the database of
/// `pool` (the event store's or another one).
#[derive(Clone, Debug)]
pub struct PgTarget {
    pool: PgPool,
}

impl PgTarget {
    /// A target over `pool`. Call [`PgTarget::migrate`] once before use.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
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
}

fn i64_of(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn u64_of(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn position(commit: i64, sequence: i64) -> Position {
    Position::new(u64_of(commit), u64_of(sequence))
}

fn checkpoint_of(row: &PgRow) -> Result<Checkpoint> {
    let version: i32 = row.try_get("version")?;
    Ok(Checkpoint {
        position: position(row.try_get("commit")?, row.try_get("sequence")?),
        version: u32::try_from(version).unwrap_or(0),
        last_recorded_at: row.try_get("last_recorded_at")?,
    })
}

fn failure_of(row: &PgRow) -> Result<Option<Failure>> {
    let error: Option<String> = row.try_get("last_error")?;
    let Some(error) = error else { return Ok(None) };
    Ok(Some(Failure {
        position: position(
            row.try_get::<Option<i64>, _>("error_commit")?.unwrap_or(0),
            row.try_get::<Option<i64>, _>("error_sequence")?
                .unwrap_or(0),
        ),
        event_id: row
            .try_get::<Option<Uuid>, _>("error_event_id")?
            .unwrap_or_default(),
        event_type: row
            .try_get::<Option<String>, _>("error_event_type")?
            .unwrap_or_default(),
        stream_id: row
            .try_get::<Option<String>, _>("error_stream_id")?
            .unwrap_or_default(),
        error,
    }))
}

/// The active generation's documents of a projection (joined, so one snapshot).
const ACTIVE_DOCUMENTS: &str = "projection_documents d JOIN projection_state s \
     ON s.name = d.projection AND s.active_generation = d.generation";

#[async_trait]
impl Target for PgTarget {
    type Batch = PgBatch;
    type Lease = PgLease;

    async fn register(&self, name: &str, version: u32) -> Result<StoredState> {
        crate::projection::check_name(name)?;
        let mut tx = self.pool.begin().await?;
        let created = sqlx::query(
            "INSERT INTO projection_state (name, active_generation) VALUES ($1, 1) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if created {
            sqlx::query(
                "INSERT INTO projection_checkpoints (name, generation, version, commit, sequence) \
                 VALUES ($1, 1, $2, 0, 0) ON CONFLICT DO NOTHING",
            )
            .bind(name)
            .bind(i32::try_from(version).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.states()
            .await?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Self::Lease>> {
        lease::try_acquire(&self.pool, name).await
    }

    async fn lease_held(&self, lease: &mut Self::Lease) -> bool {
        lease::is_held(lease).await
    }

    async fn checkpoint(&self, name: &str, generation: u64) -> Result<Option<Checkpoint>> {
        let row = sqlx::query(
            "SELECT version, commit, sequence, last_recorded_at FROM projection_checkpoints \
             WHERE name = $1 AND generation = $2",
        )
        .bind(name)
        .bind(i64_of(generation))
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(checkpoint_of).transpose()
    }

    async fn create_generation(&self, name: &str, generation: u64, version: u32) -> Result<bool> {
        let created = sqlx::query(
            "INSERT INTO projection_checkpoints (name, generation, version, commit, sequence) \
             VALUES ($1, $2, $3, 0, 0) ON CONFLICT DO NOTHING",
        )
        .bind(name)
        .bind(i64_of(generation))
        .bind(i32::try_from(version).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(created == 1)
    }

    async fn begin(&self, name: &str, generation: u64) -> Result<Self::Batch> {
        let tx = self.pool.begin().await?;
        Ok(PgBatch::new(tx, name, i64_of(generation)))
    }

    async fn dead_letter(&self, batch: &mut Self::Batch, failure: &Failure) -> Result<()> {
        sqlx::query(
            "INSERT INTO projection_dead_letters \
             (projection, generation, commit, sequence, event_id, event_type, stream_id, error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&batch.name)
        .bind(batch.generation)
        .bind(i64_of(failure.position.commit))
        .bind(i64_of(failure.position.sequence))
        .bind(failure.event_id)
        .bind(&failure.event_type)
        .bind(&failure.stream_id)
        .bind(&failure.error)
        .execute(&mut *batch.tx)
        .await?;
        Ok(())
    }

    async fn commit(
        &self,
        mut batch: Self::Batch,
        role: Role,
        from: Position,
        to: Position,
        last_recorded_at: Option<DateTime<Utc>>,
    ) -> Result<()> {
        // Lock the projection's state row first, as a switch of generation does, so that the
        // two always lock in the same order (documents second) and never deadlock.
        sqlx::query("SELECT 1 FROM projection_state WHERE name = $1 FOR SHARE")
            .bind(&batch.name)
            .execute(&mut *batch.tx)
            .await?;
        batch.flush().await?;
        // The compare-and-set: the checkpoint must still be where the batch started, and the
        // generation must still play its role (the state row, locked above, cannot switch
        // between this check and the commit).
        let moved = sqlx::query(
            "UPDATE projection_checkpoints c \
             SET commit = $5, sequence = $6, last_recorded_at = coalesce($7, c.last_recorded_at), \
                 updated_at = now() \
             FROM (SELECT active_generation FROM projection_state WHERE name = $1) s \
             WHERE c.name = $1 AND c.generation = $2 AND c.commit = $3 AND c.sequence = $4 \
               AND CASE WHEN $8 THEN s.active_generation = c.generation \
                        ELSE c.generation > s.active_generation END",
        )
        .bind(&batch.name)
        .bind(batch.generation)
        .bind(i64_of(from.commit))
        .bind(i64_of(from.sequence))
        .bind(i64_of(to.commit))
        .bind(i64_of(to.sequence))
        .bind(last_recorded_at)
        .bind(role == Role::Live)
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
        batch.tx.commit().await?;
        Ok(())
    }

    async fn set_failure(&self, name: &str, failure: Option<&Failure>) -> Result<()> {
        sqlx::query(
            "UPDATE projection_state SET status = $2, last_error = $3, error_commit = $4, \
                 error_sequence = $5, error_event_id = $6, error_event_type = $7, \
                 error_stream_id = $8, updated_at = now() \
             WHERE name = $1",
        )
        .bind(name)
        .bind(if failure.is_some() {
            "failed"
        } else {
            "running"
        })
        .bind(failure.map(|f| f.error.clone()))
        .bind(failure.map(|f| i64_of(f.position.commit)))
        .bind(failure.map(|f| i64_of(f.position.sequence)))
        .bind(failure.map(|f| f.event_id))
        .bind(failure.map(|f| f.event_type.clone()))
        .bind(failure.map(|f| f.stream_id.clone()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn switch_generation(&self, name: &str, generation: u64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let previous: Option<i64> = sqlx::query_scalar(
            "SELECT active_generation FROM projection_state WHERE name = $1 FOR UPDATE",
        )
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let previous = previous.ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
        sqlx::query(
            "UPDATE projection_state SET active_generation = $2, updated_at = now() WHERE name = $1",
        )
        .bind(name)
        .bind(i64_of(generation))
        .execute(&mut *tx)
        .await?;
        for table in ["projection_documents", "projection_checkpoints"] {
            let column = if table == "projection_documents" {
                "projection"
            } else {
                "name"
            };
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE {column} = $1 AND generation = $2"
            ))
            .bind(name)
            .bind(previous)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn states(&self) -> Result<Vec<StoredState>> {
        let rows = sqlx::query(
            "SELECT s.name, s.active_generation, s.last_error, s.error_commit, s.error_sequence, \
                    s.error_event_id, s.error_event_type, s.error_stream_id, \
                    c.version, c.commit, c.sequence, c.last_recorded_at, \
                    r.generation AS r_generation, r.version AS r_version, r.commit AS r_commit, \
                    r.sequence AS r_sequence, r.last_recorded_at AS r_last_recorded_at \
             FROM projection_state s \
             JOIN projection_checkpoints c ON c.name = s.name AND c.generation = s.active_generation \
             LEFT JOIN LATERAL (SELECT * FROM projection_checkpoints r \
                 WHERE r.name = s.name AND r.generation > s.active_generation \
                 ORDER BY r.generation DESC LIMIT 1) r ON true \
             ORDER BY s.name",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let rebuilding = match row.try_get::<Option<i64>, _>("r_generation")? {
                    None => None,
                    Some(generation) => Some((
                        u64_of(generation),
                        Checkpoint {
                            position: position(
                                row.try_get("r_commit")?,
                                row.try_get("r_sequence")?,
                            ),
                            version: u32::try_from(row.try_get::<i32, _>("r_version")?)
                                .unwrap_or(0),
                            last_recorded_at: row.try_get("r_last_recorded_at")?,
                        },
                    )),
                };
                Ok(StoredState {
                    name: row.try_get("name")?,
                    active_generation: u64_of(row.try_get("active_generation")?),
                    checkpoint: checkpoint_of(row)?,
                    rebuilding,
                    failure: failure_of(row)?,
                })
            })
            .collect()
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<Failure>> {
        let rows = sqlx::query(
            "SELECT commit, sequence, event_id, event_type, stream_id, error \
             FROM projection_dead_letters WHERE projection = $1 ORDER BY id",
        )
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Failure {
                    position: position(row.try_get("commit")?, row.try_get("sequence")?),
                    event_id: row.try_get("event_id")?,
                    event_type: row.try_get("event_type")?,
                    stream_id: row.try_get("stream_id")?,
                    error: row.try_get("error")?,
                })
            })
            .collect()
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
