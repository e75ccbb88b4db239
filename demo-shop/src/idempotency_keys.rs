//! [`IdempotencyKeys`]: the answers given to requests that carried an `Idempotency-Key`,
//! kept (in PostgreSQL, across restarts) so that the same request sent again gets the same
//! answer, and the key sent with another request is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use crate::shop::ShopError;

/// What a key says about a request that carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// No answer is kept for this key: carry the request out (another request with the same
    /// key may be in flight; the command id derived from the key makes both one command).
    Proceed,
    /// The request was answered before: give this answer again.
    Replay(Answer),
    /// The key was first sent with another request.
    Mismatch,
}

/// An answer kept for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Each key's request fingerprint, when it was first used and, once there is one, its answer.
pub type MemoryKeys = HashMap<String, (Uuid, DateTime<Utc>, Option<Answer>)>;

/// The keys and their answers, in memory or in PostgreSQL.
#[derive(Clone, Debug)]
pub enum IdempotencyKeys {
    /// In memory: as lasting as the in-memory store it serves.
    Memory(Arc<Mutex<MemoryKeys>>),
    /// In the table `http_idempotency_keys`.
    Postgres(PgPool),
}

fn storage(error: sqlx::Error) -> ShopError {
    if eventstore_postgres::is_transient(&error) {
        ShopError::Unavailable(Box::new(error))
    } else {
        ShopError::Storage(Box::new(error))
    }
}

impl IdempotencyKeys {
    /// Keys kept in memory.
    pub fn in_memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Registers `key` for the request with `fingerprint`, unless it is known; says what to do.
    pub async fn claim(&self, key: &str, fingerprint: Uuid) -> Result<Claim, ShopError> {
        let (stored, answer) = match self {
            Self::Memory(keys) => {
                let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
                let (stored, _, answer) = keys
                    .entry(key.to_owned())
                    .or_insert((fingerprint, Utc::now(), None))
                    .clone();
                (stored, answer)
            }
            Self::Postgres(pool) => {
                sqlx::query(
                    "INSERT INTO http_idempotency_keys (key, fingerprint) VALUES ($1, $2) \
                     ON CONFLICT (key) DO NOTHING",
                )
                .bind(key)
                .bind(fingerprint)
                .execute(pool)
                .await
                .map_err(storage)?;
                let row = sqlx::query(
                    "SELECT fingerprint, status, body FROM http_idempotency_keys WHERE key = $1",
                )
                .bind(key)
                .fetch_one(pool)
                .await
                .map_err(storage)?;
                (row.get("fingerprint"), answer_of(&row))
            }
        };
        Ok(if stored != fingerprint {
            Claim::Mismatch
        } else if let Some(answer) = answer {
            Claim::Replay(answer)
        } else {
            Claim::Proceed
        })
    }

    /// Keeps `answer` for `key` unless an answer is kept already; returns the kept one, which
    /// every request with this key gets from now on.
    pub async fn complete(&self, key: &str, answer: Answer) -> Result<Answer, ShopError> {
        match self {
            Self::Memory(keys) => {
                let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
                // A key pruned while its request ran: nothing to keep the answer with.
                let Some(entry) = keys.get_mut(key) else {
                    return Ok(answer);
                };
                Ok(entry.2.get_or_insert(answer).clone())
            }
            Self::Postgres(pool) => {
                // Two statements: the second reads with a snapshot taken after the first
                // (which waits for a concurrent writer of the row) is done.
                sqlx::query(
                    "UPDATE http_idempotency_keys SET status = $2, body = $3, completed_at = now() \
                     WHERE key = $1 AND status IS NULL",
                )
                .bind(key)
                .bind(i16::try_from(answer.status).unwrap_or(i16::MAX))
                .bind(&answer.body)
                .execute(pool)
                .await
                .map_err(storage)?;
                let row =
                    sqlx::query("SELECT status, body FROM http_idempotency_keys WHERE key = $1")
                        .bind(key)
                        .fetch_optional(pool)
                        .await
                        .map_err(storage)?;
                // A key pruned while its request ran: nothing to keep the answer with.
                Ok(row.as_ref().and_then(answer_of).unwrap_or(answer))
            }
        }
    }
}

impl IdempotencyKeys {
    /// Forgets the keys first used before `before`; returns how many. A request sent again
    /// with a forgotten key is carried out as new: keep keys longer than clients retry.
    pub async fn prune(&self, before: DateTime<Utc>) -> Result<u64, ShopError> {
        match self {
            Self::Memory(keys) => {
                let mut keys = keys.lock().unwrap_or_else(PoisonError::into_inner);
                let count = keys.len();
                keys.retain(|_, (_, at, _)| *at >= before);
                Ok((count - keys.len()) as u64)
            }
            Self::Postgres(pool) => {
                let pruned = sqlx::query("DELETE FROM http_idempotency_keys WHERE created_at < $1")
                    .bind(before)
                    .execute(pool)
                    .await
                    .map_err(storage)?;
                Ok(pruned.rows_affected())
            }
        }
    }
}

fn answer_of(row: &sqlx::postgres::PgRow) -> Option<Answer> {
    let status: Option<i16> = row.get("status");
    let body: Option<Vec<u8>> = row.get("body");
    Some(Answer {
        status: u16::try_from(status?).ok()?,
        body: body?,
    })
}
