//! [`PgInstances`]: process-manager instances in PostgreSQL (tables `process_intake`,
//! `process_instances`, `process_inputs`; the projections' migrations create them).

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::Position;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::step::DeadlineChanges;
use super::store::{
    Claimed, InputKind, InstanceState, InstanceStatus, InstanceStore, NewInput, PendingInput,
    ProcessSummary,
};
use crate::dead_letters::Resolution;
use crate::error::{Error, Result};
use crate::postgres::{i64_of, u32_of, u64_of};

/// Instances in PostgreSQL. Apply the projections' migrations first
/// ([`PgTarget::migrate`](crate::PgTarget::migrate)).
#[derive(Clone, Debug)]
pub struct PgInstances {
    pool: PgPool,
}

/// A database error, classified as the target classifies them (out of reach: retried).
fn storage(error: sqlx::Error) -> Error {
    Error::from(error)
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// The inputs of instance (`{process}`, `{instance}`) that may run next: its pending
/// deadlines, and its oldest pending event (events run in order: one waiting for its retry
/// holds back those after it).
const CANDIDATES: &str = "SELECT x.* FROM process_inputs x \
     WHERE x.process = {process} AND x.instance = {instance} AND NOT x.done \
       AND x.deadline IS NOT NULL \
     UNION ALL \
     (SELECT x.* FROM process_inputs x \
      WHERE x.process = {process} AND x.instance = {instance} AND NOT x.done \
        AND x.deadline IS NULL ORDER BY x.seq LIMIT 1)";

/// [`CANDIDATES`] of the instance with these SQL expressions for its key.
fn candidates(process: &str, instance: &str) -> String {
    CANDIDATES
        .replace("{process}", process)
        .replace("{instance}", instance)
}

/// `next_at` as it should be after the instance's inputs changed: when its first candidate
/// may run (due, and past its backoff); NULL when nothing is pending.
fn next_at() -> String {
    format!(
        "(SELECT min(greatest(c.due_at, coalesce(c.not_before, c.due_at))) FROM ({}) c)",
        candidates("i.process", "i.instance")
    )
}

/// Recomputes `next_at` of instance (`$1`, `$2`) and ends its claim.
static SETTLE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE process_instances i SET next_at = {}, claimed_until = NULL, \
         updated_at = now() WHERE i.process = $1 AND i.instance = $2",
        next_at()
    )
});

/// Recomputes `next_at` of the instances `$2` of process `$1`.
static RECOMPUTE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE process_instances i SET next_at = {} \
         WHERE i.process = $1 AND i.instance = ANY($2)",
        next_at()
    )
});

/// The input instance (`$1`, `$2`) reacts to now: due deadlines first, then the oldest
/// event; each only once past its backoff.
static NEXT_INPUT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT c.input_id, c.deadline, c.due_at, c.attempts FROM ({}) c \
         WHERE c.due_at <= now() AND (c.not_before IS NULL OR c.not_before <= now()) \
         ORDER BY (c.deadline IS NULL), c.seq LIMIT 1",
        candidates("$1", "$2")
    )
});

/// How often a claim looks again after finding an instance with nothing due after all.
const CLAIM_ATTEMPTS: usize = 16;

impl PgInstances {
    /// Instances in the database of `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Takes the claim's instance row if its epoch still holds; `false` when it was taken over.
    async fn fence(tx: &mut PgConnection, process: &str, claimed: &Claimed) -> Result<bool> {
        let held = sqlx::query(
            "SELECT 1 FROM process_instances WHERE process = $1 AND instance = $2 AND epoch = $3 \
             FOR UPDATE",
        )
        .bind(process)
        .bind(&claimed.instance)
        .bind(epoch(claimed.epoch)?)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
        Ok(held.is_some())
    }

    /// Applies a reaction's deadline changes; the claimed input itself (a deadline being
    /// retried) is never dropped by them.
    async fn apply_deadlines(
        tx: &mut PgConnection,
        process: &str,
        claimed: &Claimed,
        changes: &DeadlineChanges,
    ) -> Result<()> {
        let instance = claimed.instance.as_str();
        if changes.scheduled.is_empty() && changes.cancelled.is_empty() {
            return Ok(());
        }
        let keep: Vec<Uuid> = changes.scheduled.iter().map(|d| d.id).collect();
        sqlx::query(
            "UPDATE process_inputs SET done = true \
             WHERE process = $1 AND instance = $2 AND NOT done AND deadline = ANY($3) \
               AND NOT (input_id = ANY($4)) AND input_id <> $5",
        )
        .bind(process)
        .bind(instance)
        .bind(changes.names())
        .bind(&keep)
        .bind(claimed.input.id)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        sqlx::query(
            "INSERT INTO process_inputs (process, input_id, instance, deadline, due_at) \
             SELECT $1, id, $2, name, due FROM unnest($3::uuid[], $4::text[], $5::timestamptz[]) \
               AS d(id, name, due) \
             ON CONFLICT (process, input_id) DO NOTHING",
        )
        .bind(process)
        .bind(instance)
        .bind(&keep)
        .bind(
            changes
                .scheduled
                .iter()
                .map(|d| d.name.clone())
                .collect::<Vec<_>>(),
        )
        .bind(
            changes
                .scheduled
                .iter()
                .map(|d| d.due_at)
                .collect::<Vec<_>>(),
        )
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        Ok(())
    }

    /// Recomputes the instance's `next_at` and ends its claim.
    async fn settle(tx: &mut PgConnection, process: &str, instance: &str) -> Result<()> {
        sqlx::query(&SETTLE)
            .bind(process)
            .bind(instance)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        Ok(())
    }

    /// Runs `write` under the claim's fence in one transaction, then settles the instance.
    async fn under_claim<'a, F>(
        &self,
        process: &str,
        claimed: &'a Claimed,
        write: F,
    ) -> Result<bool>
    where
        F: for<'t> FnOnce(
                &'t mut PgConnection,
            ) -> std::pin::Pin<
                Box<dyn std::future::Future<Output = Result<()>> + Send + 't>,
            > + Send
            + 'a,
    {
        let mut tx = self.pool.begin().await.map_err(storage)?;
        if !Self::fence(&mut tx, process, claimed).await? {
            return Ok(false);
        }
        write(&mut tx).await?;
        Self::settle(&mut tx, process, &claimed.instance).await?;
        tx.commit().await.map_err(storage)?;
        Ok(true)
    }
}

fn epoch(epoch: u64) -> Result<i64> {
    i64_of(epoch)
}

fn status_of(row: &PgRow) -> Result<InstanceStatus> {
    let parked: Option<Uuid> = row.try_get("parked_input").map_err(storage)?;
    let attempts: i32 = row.try_get("attempts").map_err(storage)?;
    let next_at: Option<chrono::DateTime<chrono::Utc>> = row.try_get("next_at").map_err(storage)?;
    let pending: i64 = row.try_get("pending").map_err(storage)?;
    Ok(InstanceStatus {
        instance: row.try_get("instance").map_err(storage)?,
        state: if parked.is_some() {
            InstanceState::Parked
        } else if attempts > 0 {
            InstanceState::Retrying
        } else {
            InstanceState::Active
        },
        attempts: u32_of(attempts)?,
        last_error: row.try_get("last_error").map_err(storage)?,
        // A parked instance runs when an operator says so.
        next_at: next_at.filter(|_| parked.is_none()),
        pending: u64_of(pending)?,
        data: row.try_get("state").map_err(storage)?,
    })
}

/// An instance's status: its failures are those of its most failed pending input.
const STATUS_COLUMNS: &str = "i.instance, i.state, i.parked_input, i.next_at, \
     coalesce(f.attempts, 0) AS attempts, f.last_error, \
     (SELECT count(*) FROM process_inputs x WHERE x.process = i.process \
        AND x.instance = i.instance AND NOT x.done) AS pending";

/// The most failed pending input of instance `i`, as `f` (joined LATERAL).
const FAILURES: &str = "LEFT JOIN LATERAL (SELECT x.attempts, x.last_error FROM process_inputs x \
       WHERE x.process = i.process AND x.instance = i.instance AND NOT x.done AND x.attempts > 0 \
       ORDER BY x.attempts DESC, x.seq LIMIT 1) f ON true";

#[async_trait]
impl InstanceStore for PgInstances {
    async fn intake_position(&self, process: &str) -> Result<Position> {
        let row = sqlx::query("SELECT commit, sequence FROM process_intake WHERE process = $1")
            .bind(process)
            .fetch_optional(&self.pool)
            .await
            .map_err(storage)?;
        Ok(match row {
            None => Position::START,
            Some(row) => {
                let commit: i64 = row.try_get("commit").map_err(storage)?;
                let sequence: i64 = row.try_get("sequence").map_err(storage)?;
                Position::new(u64_of(commit)?, u64_of(sequence)?)
            }
        })
    }

    async fn enqueue(
        &self,
        process: &str,
        inputs: &[NewInput],
        scanned_to: Position,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(storage)?;
        // One intake at a time per manager: inputs are filed in log order.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('process_intake:' || $1))")
            .bind(process)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        if !inputs.is_empty() {
            let touched: Vec<String> = sqlx::query_scalar(
                "WITH new AS ( \
                     INSERT INTO process_inputs (process, input_id, instance, due_at) \
                     SELECT $1, id, instance, clock_timestamp() \
                     FROM unnest($2::uuid[], $3::text[]) WITH ORDINALITY AS n(id, instance, k) \
                     ORDER BY k \
                     ON CONFLICT (process, input_id) DO NOTHING RETURNING instance), \
                 made AS ( \
                     INSERT INTO process_instances (process, instance) \
                     SELECT DISTINCT $1, instance FROM new ORDER BY 2 \
                     ON CONFLICT (process, instance) DO NOTHING) \
                 SELECT DISTINCT instance FROM new",
            )
            .bind(process)
            .bind(inputs.iter().map(|i| i.event_id).collect::<Vec<_>>())
            .bind(
                inputs
                    .iter()
                    .map(|i| i.instance.clone())
                    .collect::<Vec<_>>(),
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(storage)?;
            // A second statement: it sees the inputs the first one filed.
            sqlx::query(&RECOMPUTE)
                .bind(process)
                .bind(&touched)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        sqlx::query(
            "INSERT INTO process_intake AS p (process, commit, sequence) VALUES ($1, $2, $3) \
             ON CONFLICT (process) DO UPDATE SET commit = excluded.commit, \
                 sequence = excluded.sequence \
             WHERE (p.commit, p.sequence) < (excluded.commit, excluded.sequence)",
        )
        .bind(process)
        .bind(i64_of(scanned_to.commit)?)
        .bind(i64_of(scanned_to.sequence)?)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        tx.commit().await.map_err(storage)
    }

    async fn claim(&self, process: &str, ttl: Duration) -> Result<Option<Claimed>> {
        for _ in 0..CLAIM_ATTEMPTS {
            let mut tx = self.pool.begin().await.map_err(storage)?;
            let row = sqlx::query(
                "WITH next AS ( \
                     SELECT instance FROM process_instances \
                     WHERE process = $1 AND parked_input IS NULL AND next_at <= now() \
                       AND (claimed_until IS NULL OR claimed_until < now()) \
                     ORDER BY next_at LIMIT 1 FOR UPDATE SKIP LOCKED) \
                 UPDATE process_instances i \
                 SET claimed_until = now() + $2 * interval '1 millisecond', epoch = i.epoch + 1 \
                 FROM next WHERE i.process = $1 AND i.instance = next.instance \
                 RETURNING i.instance, i.state, i.epoch",
            )
            .bind(process)
            .bind(millis(ttl) as f64)
            .fetch_optional(&mut *tx)
            .await
            .map_err(storage)?;
            let Some(row) = row else {
                return Ok(None);
            };
            let instance: String = row.try_get("instance").map_err(storage)?;
            let input = sqlx::query(&NEXT_INPUT)
                .bind(process)
                .bind(&instance)
                .fetch_optional(&mut *tx)
                .await
                .map_err(storage)?;
            let Some(input) = input else {
                // Its next_at was stale: put it right and look again.
                Self::settle(&mut tx, process, &instance).await?;
                tx.commit().await.map_err(storage)?;
                continue;
            };
            tx.commit().await.map_err(storage)?;
            let deadline: Option<String> = input.try_get("deadline").map_err(storage)?;
            let claimed_epoch: i64 = row.try_get("epoch").map_err(storage)?;
            let attempts: i32 = input.try_get("attempts").map_err(storage)?;
            return Ok(Some(Claimed {
                instance,
                state: row.try_get::<Value, _>("state").map_err(storage)?,
                epoch: claimed_epoch as u64,
                attempts: u32_of(attempts)?,
                input: PendingInput {
                    id: input.try_get("input_id").map_err(storage)?,
                    kind: match deadline {
                        None => InputKind::Event,
                        Some(name) => InputKind::Deadline {
                            name,
                            due_at: input.try_get("due_at").map_err(storage)?,
                        },
                    },
                },
            }));
        }
        Ok(None)
    }

    async fn complete(
        &self,
        process: &str,
        claimed: &Claimed,
        state: Value,
        deadlines: &DeadlineChanges,
    ) -> Result<bool> {
        let process_name = process.to_owned();
        let (deadlines, claim) = (deadlines.clone(), claimed.clone());
        self.under_claim(process, claimed, move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE process_instances SET state = $3 WHERE process = $1 AND instance = $2",
                )
                .bind(&process_name)
                .bind(&claim.instance)
                .bind(state)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
                sqlx::query(
                    "UPDATE process_inputs SET done = true WHERE process = $1 AND input_id = $2",
                )
                .bind(&process_name)
                .bind(claim.input.id)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
                Self::apply_deadlines(tx, &process_name, &claim, &deadlines).await
            })
        })
        .await
    }

    async fn retry_later(
        &self,
        process: &str,
        claimed: &Claimed,
        error: &str,
        delay: Duration,
        deadlines: &DeadlineChanges,
    ) -> Result<bool> {
        let (process_name, error) = (process.to_owned(), error.to_owned());
        let (deadlines, claim) = (deadlines.clone(), claimed.clone());
        self.under_claim(process, claimed, move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE process_inputs SET attempts = attempts + 1, last_error = $3, \
                     not_before = now() + $4 * interval '1 millisecond' \
                     WHERE process = $1 AND input_id = $2",
                )
                .bind(&process_name)
                .bind(claim.input.id)
                .bind(error)
                .bind(millis(delay) as f64)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
                Self::apply_deadlines(tx, &process_name, &claim, &deadlines).await
            })
        })
        .await
    }

    async fn park(&self, process: &str, claimed: &Claimed, reason: &str) -> Result<bool> {
        let (process_name, instance, reason, input) = (
            process.to_owned(),
            claimed.instance.clone(),
            reason.to_owned(),
            claimed.input.id,
        );
        self.under_claim(process, claimed, move |tx| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE process_instances SET parked_input = $3 \
                     WHERE process = $1 AND instance = $2",
                )
                .bind(&process_name)
                .bind(&instance)
                .bind(input)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
                sqlx::query(
                    "UPDATE process_inputs SET attempts = attempts + 1, last_error = $3 \
                     WHERE process = $1 AND input_id = $2",
                )
                .bind(&process_name)
                .bind(input)
                .bind(reason)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
                Ok(())
            })
        })
        .await
    }

    async fn troubled(&self, process: &str) -> Result<Vec<InstanceStatus>> {
        let rows = sqlx::query(&format!(
            "SELECT {STATUS_COLUMNS} FROM process_instances i {FAILURES} \
             WHERE i.process = $1 AND (i.parked_input IS NOT NULL OR f.attempts > 0) \
             ORDER BY i.instance"
        ))
        .bind(process)
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        rows.iter().map(status_of).collect()
    }

    async fn instance(&self, process: &str, instance: &str) -> Result<Option<InstanceStatus>> {
        let row = sqlx::query(&format!(
            "SELECT {STATUS_COLUMNS} FROM process_instances i {FAILURES} \
             WHERE i.process = $1 AND i.instance = $2"
        ))
        .bind(process)
        .bind(instance)
        .fetch_optional(&self.pool)
        .await
        .map_err(storage)?;
        row.as_ref().map(status_of).transpose()
    }

    async fn summary(&self, process: &str) -> Result<ProcessSummary> {
        let row = sqlx::query(
            "SELECT \
               (SELECT count(*) FROM process_instances WHERE process = $1) AS instances, \
               (SELECT count(*) FROM process_instances i WHERE i.process = $1 \
                  AND i.parked_input IS NULL AND EXISTS (SELECT FROM process_inputs x \
                    WHERE x.process = i.process AND x.instance = i.instance AND NOT x.done \
                      AND x.attempts > 0)) AS retrying, \
               (SELECT count(*) FROM process_instances WHERE process = $1 \
                  AND parked_input IS NOT NULL) AS parked, \
               (SELECT count(*) FROM process_inputs WHERE process = $1 AND NOT done \
                  AND due_at <= now()) AS due_inputs, \
               (SELECT count(*) FROM process_inputs WHERE process = $1 AND NOT done \
                  AND deadline IS NOT NULL AND due_at > now()) AS scheduled",
        )
        .bind(process)
        .fetch_one(&self.pool)
        .await
        .map_err(storage)?;
        let count = |name: &str| -> Result<u64> {
            let n: i64 = row.try_get(name).map_err(storage)?;
            u64_of(n)
        };
        Ok(ProcessSummary {
            intake_position: self.intake_position(process).await?,
            instances: count("instances")?,
            retrying: count("retrying")?,
            parked: count("parked")?,
            due_inputs: count("due_inputs")?,
            scheduled_deadlines: count("scheduled")?,
        })
    }

    async fn resolve(&self, process: &str, instance: &str, resolution: Resolution) -> Result<bool> {
        let mut tx = self.pool.begin().await.map_err(storage)?;
        let parked: Option<Option<Uuid>> = sqlx::query_scalar(
            "SELECT parked_input FROM process_instances WHERE process = $1 AND instance = $2 \
             FOR UPDATE",
        )
        .bind(process)
        .bind(instance)
        .fetch_optional(&mut *tx)
        .await
        .map_err(storage)?;
        let Some(Some(input)) = parked else {
            return Ok(false);
        };
        if resolution == Resolution::Skip {
            sqlx::query(
                "UPDATE process_inputs SET done = true WHERE process = $1 AND input_id = $2",
            )
            .bind(process)
            .bind(input)
            .execute(&mut *tx)
            .await
            .map_err(storage)?;
        }
        sqlx::query(
            "UPDATE process_instances SET parked_input = NULL, epoch = epoch + 1 \
             WHERE process = $1 AND instance = $2",
        )
        .bind(process)
        .bind(instance)
        .execute(&mut *tx)
        .await
        .map_err(storage)?;
        Self::settle(&mut tx, process, instance).await?;
        tx.commit().await.map_err(storage)?;
        Ok(true)
    }

    async fn prune_done(
        &self,
        process: &str,
        before: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64> {
        let pruned =
            sqlx::query("DELETE FROM process_inputs WHERE process = $1 AND done AND due_at < $2")
                .bind(process)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(storage)?;
        Ok(pruned.rows_affected())
    }

    async fn next_due_in(&self, process: &str) -> Result<Option<Duration>> {
        let millis: Option<f64> = sqlx::query_scalar(
            // (greatest() skips NULLs: with no instance due at all, the answer must stay NULL.)
            "SELECT CASE WHEN due IS NULL THEN NULL \
                    ELSE greatest(0, extract(epoch FROM due - now()) * 1000)::float8 END \
             FROM (SELECT min(greatest(next_at, coalesce(claimed_until, next_at))) AS due \
                   FROM process_instances WHERE process = $1 AND parked_input IS NULL \
                     AND next_at IS NOT NULL) d",
        )
        .bind(process)
        .fetch_one(&self.pool)
        .await
        .map_err(storage)?;
        Ok(millis.map(|ms| Duration::from_millis(ms as u64)))
    }
}
