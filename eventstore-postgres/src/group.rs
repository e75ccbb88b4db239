//! Group commit: appends that arrive while another is being written go to PostgreSQL
//! together, in one statement, one transaction and one WAL flush (`es_append_group`).
//!
//! Each append keeps its own expected-version check and its own outcome: the function runs
//! each in a subtransaction, so a conflict, a clash of ids or an error of one undoes only that
//! one. An append alone (nothing else waiting) takes the single-append path, as before, so a
//! lone writer pays nothing for grouping.
//!
//! Who writes: every append joins the queue, then either its answer arrives or it takes the
//! writer's turn (a FIFO lock) and writes everything queued so far, itself included. The
//! write runs in a task of its own holding the turn, so that a caller that stops waiting
//! never strands the others of its group.

use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, Utc};
use cqrs_core::{ExpectedVersion, NewEvent, StreamId};
use sqlx::{PgPool, Row};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::from_sqlx;

/// How many statements (groups or lone appends) are written at once. One: the others
/// gather into the next group meanwhile. (Two were measured slower on a 2-core server: the
/// groups halve and the lone appends double.)
const WRITERS: usize = 1;

/// At most this many appends share a transaction (each is a subtransaction; PostgreSQL
/// tracks up to 64 of them per transaction cheaply).
pub(crate) const MAX_GROUP: usize = 32;

/// How often a group that lost a deadlock or serialization race is written again (nothing
/// of it was stored).
const GROUP_RETRIES: u32 = 3;

/// One append, checked and encoded.
#[derive(Debug)]
pub(crate) struct Request {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub kind: i16,
    pub version: i64,
    pub events: Vec<NewEvent>,
    pub schema_versions: Vec<i32>,
    pub metadata: serde_json::Value,
}

/// What became of an append in a group.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Stored.
    Appended {
        stream_version: i64,
        commit: i64,
        positions: Vec<i64>,
        recorded_at: DateTime<Utc>,
    },
    /// Refused by its expected version: the stream's version (and the request, to tell a
    /// retried batch from a conflict).
    Conflict {
        stream_version: i64,
        request: Request,
    },
    /// Write it alone (it was alone, or it met a duplicate id or an error in the group: on
    /// its own it meets them exactly as a single append does). The request comes back.
    Alone(Request),
    /// The group's statement failed as a whole (nothing of it is known to be stored).
    Failed(cqrs_core::Error),
}

#[derive(Debug)]
struct Queued {
    request: Request,
    reply: oneshot::Sender<Reply>,
}

/// The queue of appends and the writer's turn.
#[derive(Debug)]
pub(crate) struct Grouper {
    queue: Mutex<Vec<Queued>>,
    turns: Arc<Semaphore>,
}

impl Default for Grouper {
    fn default() -> Self {
        Self {
            queue: Mutex::default(),
            turns: Arc::new(Semaphore::new(WRITERS)),
        }
    }
}

impl Grouper {
    /// Queues `request` and returns what became of it; `Reply::Alone` asks the caller to
    /// write it on its own, now (while it holds the writer's turn, if it took it).
    pub(crate) async fn submit(
        self: &Arc<Self>,
        pool: &PgPool,
        request: Request,
    ) -> (Reply, Option<OwnedSemaphorePermit>) {
        let (sender, mut receiver) = oneshot::channel();
        self.lock().push(Queued {
            request,
            reply: sender,
        });
        loop {
            let turn = tokio::select! {
                biased;
                reply = &mut receiver => return (reply.unwrap_or_else(lost), None),
                turn = Arc::clone(&self.turns).acquire_owned() => match turn {
                    Ok(turn) => turn,
                    Err(_) => return (Reply::Failed(cqrs_core::Error::Unavailable("the store is closing".into())), None),
                },
            };
            // Our answer may have come while we took the turn.
            if let Ok(reply) = receiver.try_recv() {
                return (reply, None);
            }
            let batch: Vec<Queued> = {
                let mut queue = self.lock();
                let take = queue.len().min(MAX_GROUP);
                queue.drain(..take).collect()
            };
            match batch.len() {
                0 => continue,
                1 => {
                    // Alone (it is ours: every append taken before has its answer by the
                    // time the turn is free): the caller writes it through the
                    // single-append path, keeping the turn meanwhile, so that appends
                    // arriving now form the next group.
                    for only in batch {
                        let _ = only.reply.send(Reply::Alone(only.request));
                    }
                    match receiver.try_recv() {
                        Ok(reply) => return (reply, Some(turn)),
                        Err(_) => {
                            drop(turn);
                            continue;
                        }
                    }
                }
                _ => {
                    let pool = pool.clone();
                    // In a task of its own, holding the turn: it finishes and answers
                    // everyone even if this caller stops waiting.
                    let _ = tokio::spawn(async move {
                        write_group(&pool, batch).await;
                        drop(turn);
                    })
                    .await;
                    if let Ok(reply) = receiver.try_recv() {
                        return (reply, None);
                    }
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Queued>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn lost(_: oneshot::error::RecvError) -> Reply {
    Reply::Failed(cqrs_core::Error::Unavailable(
        "the group this append was written with ended without an answer; its outcome is unknown"
            .into(),
    ))
}

/// Writes `batch` in one `es_append_group` statement and answers each append.
async fn write_group(pool: &PgPool, batch: Vec<Queued>) {
    let mut tries = 0;
    let rows = loop {
        match group_statement(&batch).fetch_all(pool).await {
            Ok(rows) => break Ok(rows),
            Err(e) if tries < GROUP_RETRIES && lost_a_race(&e) => tries += 1,
            Err(e) => break Err(e),
        }
    };
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            let text = error.to_string();
            let unavailable = crate::is_transient(&error);
            for queued in batch {
                let error = if unavailable {
                    cqrs_core::Error::Unavailable(text.clone().into())
                } else {
                    cqrs_core::Error::Backend(text.clone().into())
                };
                let _ = queued.reply.send(Reply::Failed(error));
            }
            return;
        }
    };
    let mut outcomes: Vec<Option<Result<Outcome, sqlx::Error>>> =
        batch.iter().map(|_| None).collect();
    for row in &rows {
        let index = row
            .try_get::<i32, _>("i")
            .ok()
            .and_then(|i| usize::try_from(i - 1).ok());
        if let Some(slot) = index.and_then(|i| outcomes.get_mut(i)) {
            *slot = Some(decode_row(row));
        }
    }
    for (queued, outcome) in batch.into_iter().zip(outcomes) {
        let reply = match outcome {
            Some(Ok(Outcome::Appended {
                stream_version,
                commit,
                positions,
                recorded_at,
            })) => Reply::Appended {
                stream_version,
                commit,
                positions,
                recorded_at,
            },
            Some(Ok(Outcome::Conflict(stream_version))) => Reply::Conflict {
                stream_version,
                request: queued.request,
            },
            Some(Err(e)) => Reply::Failed(from_sqlx(e)),
            // A duplicate id, an error, or no row: on its own it meets the same.
            Some(Ok(Outcome::Alone)) | None => Reply::Alone(queued.request),
        };
        let _ = queued.reply.send(reply);
    }
}

/// One row of `es_append_group`.
enum Outcome {
    Appended {
        stream_version: i64,
        commit: i64,
        positions: Vec<i64>,
        recorded_at: DateTime<Utc>,
    },
    Conflict(i64),
    Alone,
}

fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Outcome, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    Ok(match outcome.as_str() {
        "appended" => Outcome::Appended {
            stream_version: row.try_get("stream_version")?,
            commit: row.try_get("transaction_id")?,
            positions: row.try_get("positions")?,
            recorded_at: row.try_get("recorded_at")?,
        },
        "conflict" => Outcome::Conflict(row.try_get("stream_version")?),
        _ => Outcome::Alone,
    })
}

fn group_statement(
    batch: &[Queued],
) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let requests = || batch.iter().map(|q| &q.request);
    sqlx::query(
        "SELECT i, outcome, stream_version, transaction_id, positions, recorded_at \
         FROM es_append_group($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(requests().map(|r| r.stream.as_str()).collect::<Vec<_>>())
    .bind(requests().map(|r| r.kind).collect::<Vec<_>>())
    .bind(requests().map(|r| r.version).collect::<Vec<_>>())
    .bind(
        requests()
            .map(|r| i32::try_from(r.events.len()).unwrap_or(i32::MAX))
            .collect::<Vec<_>>(),
    )
    .bind(requests().map(|r| &r.metadata).collect::<Vec<_>>())
    .bind(
        requests()
            .flat_map(|r| r.events.iter().map(|e| e.event_id))
            .collect::<Vec<_>>(),
    )
    .bind(
        requests()
            .flat_map(|r| r.events.iter().map(|e| e.data.event_type.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        requests()
            .flat_map(|r| r.schema_versions.iter().copied())
            .collect::<Vec<_>>(),
    )
    .bind(
        requests()
            .flat_map(|r| r.events.iter().map(|e| &e.data.payload))
            .collect::<Vec<_>>(),
    )
}

/// A deadlock or serialization failure: the whole transaction was rolled back.
fn lost_a_race(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}
