//! Group commit: appends that arrive while another is being written go to PostgreSQL
//! together, in one statement, one transaction and one WAL flush.
//!
//! A group to distinct streams is written by the set statement ([`set_append`]): one plain
//! multi-row insert. Each append keeps its own expected-version check and its own outcome (a
//! conflict stores nothing of that append and the others go on). If the statement fails as a
//! whole (an id stored before, a value the table refuses, a stream written by another process
//! after the statement began), or two appends share a stream, the group is written by
//! `es_append_group_v2`, where an error of one undoes only that one (each runs in a
//! subtransaction of its own once the group has failed), and a group PostgreSQL refuses as a
//! whole sends each append to be written on its own. A group only *tries* its streams'
//! locks: a stream locked by another transaction is left out, and its append is written on
//! its own, waiting for the lock as a single append does. So a group never waits for a
//! stream's lock while holding others (no deadlock), and one open transaction never holds up
//! the appends to other streams: the one wait a group can meet, an event id that another open
//! transaction is inserting, ends after a second (`lock_timeout`), and the group is then
//! written again as above.
//!
//! Who writes: every append joins the queue, then either its answer arrives or it takes the
//! writer's turn and writes everything queued so far, itself included. The turn holds the
//! writer's connection ([`WriterConnection`]), which every statement of the fast path is
//! written on. Alone, an append writes through the single-append statement
//! ([`set_append::write_lone`], only trying the lock), keeping the turn meanwhile, so that a
//! lone writer pays nothing for grouping and the appends arriving meanwhile form the next
//! group. A group is written in a task of its own holding the turn, so that a caller that
//! stops waiting never strands the others; an append whose caller stopped waiting before it
//! was taken is dropped, not written later.
//!
//! A statement whose connection went while it ran may or may not have been stored. Its
//! appends are then written again on their own, on a pooled connection: an append stored
//! before is found by its event ids and reported as stored, so nothing is stored twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use cqrs_core::{ExpectedVersion, NewEvent, StreamId};
use sqlx::{PgPool, Row};
use tokio::sync::{oneshot, Mutex as AsyncMutex, OwnedMutexGuard};

use crate::error::from_sqlx;
use crate::notify::Notifier;
use crate::set_append::{self, Outcome, Stored};
use crate::writer::WriterConnection;

/// The writer's turn: the right to write the next statement (a group or a lone append), and
/// the connection to write it on. One statement is written at a time and the others gather
/// into the next group meanwhile. (Two, three and four at once were measured slower on a
/// 2-core server: the groups shrink and each append's share of a statement's fixed cost
/// grows. The rule that a group of one is the caller's own append holds only for one.)
pub(crate) type Turn = OwnedMutexGuard<WriterConnection>;

/// At most this many appends share a transaction (in `es_append_group_v2` each is a
/// subtransaction; PostgreSQL tracks up to 64 of them per transaction cheaply).
pub(crate) const MAX_GROUP: usize = 32;

/// How often a group that lost a deadlock or serialization race is written again (nothing
/// of it was stored).
const GROUP_RETRIES: u32 = 3;

/// One append, checked and encoded.
#[derive(Debug)]
pub(crate) struct Request {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    /// The stream versions the append accepts ([`ExpectedVersion::accepted_versions`]).
    pub min_version: i64,
    /// `None`: no upper bound.
    pub max_version: Option<i64>,
    pub events: Vec<NewEvent>,
    pub schema_versions: Vec<i32>,
    pub metadata: serde_json::Value,
}

impl Request {
    /// Binds this append as `$1`–`$8`, the parameters the single-append statement and
    /// `es_append_v2` share: stream, accepted versions (from, to), event ids, event types,
    /// schema versions, payloads, metadata.
    pub(crate) fn bind_to<'q>(
        &'q self,
        query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let events = &self.events;
        query
            .bind(self.stream.as_str())
            .bind(self.min_version)
            .bind(self.max_version)
            .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
            .bind(
                events
                    .iter()
                    .map(|e| e.data.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(&self.schema_versions)
            .bind(events.iter().map(|e| &e.data.payload).collect::<Vec<_>>())
            .bind(&self.metadata)
    }
}

/// What became of an append in a group.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Stored.
    Appended(Stored),
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
    turn: Arc<AsyncMutex<WriterConnection>>,
    notifier: Arc<Notifier>,
    /// One gate per stream whose appends wait for its lock on their own: only one of them
    /// waits on a connection, the others in memory.
    waiting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Grouper {
    /// A grouper that writes on a connection taken from `pool` and tells `notifier` when a
    /// group stored events.
    pub(crate) fn new(pool: PgPool, notifier: Arc<Notifier>) -> Self {
        Self {
            queue: Mutex::default(),
            turn: Arc::new(AsyncMutex::new(WriterConnection::new(pool))),
            notifier,
            waiting: Mutex::default(),
        }
    }

    /// Waits for the right to wait for `stream`'s lock on a connection: appends of one
    /// stream written on their own (their stream was busy) go one at a time, so that they
    /// do not take a connection each. The right lasts as long as the guard.
    pub(crate) async fn wait_turn_of(&self, stream: &str) -> OwnedMutexGuard<()> {
        let gate = {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if waiting.len() > 256 {
                // Gates nobody holds or waits for.
                waiting.retain(|_, gate| Arc::strong_count(gate) > 1);
            }
            Arc::clone(waiting.entry(stream.to_owned()).or_default())
        };
        gate.lock_owned().await
    }

    /// Queues `request` and returns what became of it. [`Reply::Alone`] asks the caller to
    /// write it on its own: with the writer's turn (it was alone: the single-append
    /// statement, trying the lock, so that the appends arriving meanwhile form the next
    /// group), or without (`es_append_v2`, waiting for its stream's lock).
    pub(crate) async fn submit(self: &Arc<Self>, request: Request) -> (Reply, Option<Turn>) {
        let (sender, mut receiver) = oneshot::channel();
        self.lock().push(Queued {
            request,
            reply: sender,
        });
        loop {
            let turn = tokio::select! {
                biased;
                reply = &mut receiver => return (reply.unwrap_or_else(lost), None),
                turn = Arc::clone(&self.turn).lock_owned() => turn,
            };
            // Our answer may have come while we took the turn.
            if let Ok(reply) = receiver.try_recv() {
                return (reply, None);
            }
            let batch: Vec<Queued> = {
                let mut queue = self.lock();
                // Appends whose callers stopped waiting are dropped, not written later.
                queue.retain(|q| !q.reply.is_closed());
                let take = queue.len().min(MAX_GROUP);
                queue.drain(..take).collect()
            };
            if batch.is_empty() {
                continue;
            }
            if batch.len() == 1 {
                // Alone (it is ours: every append taken before has its answer by the time
                // the turn is free): the caller writes it, keeping the turn meanwhile.
                for only in batch {
                    let _ = only.reply.send(Reply::Alone(only.request));
                }
                match receiver.try_recv() {
                    Ok(reply) => return (reply, Some(turn)),
                    Err(_) => continue,
                }
            }
            let notifier = Arc::clone(&self.notifier);
            // In a task of its own, holding the turn: it finishes and answers everyone even
            // if this caller stops waiting.
            let _ = tokio::spawn(async move {
                let mut turn = turn;
                if write_group(&mut turn, batch).await {
                    notifier.announce();
                }
                drop(turn);
            })
            .await;
            if let Ok(reply) = receiver.try_recv() {
                return (reply, None);
            }
        }
    }

    /// Waits for the writer's turn, outside the queue (for tests that look at the writer's
    /// connection).
    #[cfg(feature = "testing")]
    pub(crate) async fn turn(&self) -> Turn {
        Arc::clone(&self.turn).lock_owned().await
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

/// Writes `batch` in one transaction on the writer's connection and answers each append;
/// whether any was stored. The set statement ([`set_append`]) writes it when its streams are
/// distinct and nothing goes wrong; otherwise `es_append_group_v2` does, giving each append
/// its own outcome.
async fn write_group(writer: &mut WriterConnection, batch: Vec<Queued>) -> bool {
    let requests: Vec<&Request> = batch.iter().map(|q| &q.request).collect();
    if set_append::distinct_streams(&requests) {
        let connection = match writer.get().await {
            Ok(connection) => connection,
            Err(error) => {
                fail_all(batch, &error);
                return false;
            }
        };
        let written = set_append::write(connection, &requests).await;
        writer.answered(written.as_ref().err());
        match written {
            Ok(outcomes) => return answer(batch, outcomes.into_iter().map(Ok).map(Some).collect()),
            Err(error) if set_append::outcome_unknown(&error) => {
                write_each_alone(batch, &error);
                return false;
            }
            Err(error) => {
                tracing::debug!(%error, appends = batch.len(), "a group statement failed; writing the group with es_append_group_v2");
            }
        }
    }
    write_with_function(writer, batch).await
}

/// Sends every append of `batch` to be written on its own, after its group's statement
/// failed with `error`. If the connection went while it ran, the group may be stored: each
/// append is then found by its event ids and reported as stored.
fn write_each_alone(batch: Vec<Queued>, error: &sqlx::Error) {
    tracing::debug!(%error, appends = batch.len(), "a group was not written; writing its appends one by one");
    for queued in batch {
        let _ = queued.reply.send(Reply::Alone(queued.request));
    }
}

/// Tells every append of `batch` that no connection could be had to write it on (nothing
/// was written): the pool's `error`.
fn fail_all(batch: Vec<Queued>, error: &sqlx::Error) {
    for queued in batch {
        let text = error.to_string().into();
        let error = if crate::is_transient(error) {
            cqrs_core::Error::Unavailable(text)
        } else {
            cqrs_core::Error::Backend(text)
        };
        let _ = queued.reply.send(Reply::Failed(error));
    }
}

/// Writes `batch` in one `es_append_group_v2` statement and answers each append; whether any
/// was stored.
async fn write_with_function(writer: &mut WriterConnection, batch: Vec<Queued>) -> bool {
    let mut tries = 0;
    let rows = loop {
        let connection = match writer.get().await {
            Ok(connection) => connection,
            Err(error) => {
                fail_all(batch, &error);
                return false;
            }
        };
        let written = group_statement(&batch).fetch_all(connection).await;
        writer.answered(written.as_ref().err());
        match written {
            Ok(rows) => break rows,
            Err(e) if tries < GROUP_RETRIES && lost_a_race(&e) => tries += 1,
            Err(e) => {
                // Refused as a whole (a value one append carries, a timeout: nothing is
                // stored), or the connection went: each is written on its own, and meets
                // its own fate.
                write_each_alone(batch, &e);
                return false;
            }
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
    answer(batch, outcomes)
}

/// Sends each append of `batch` its outcome (`None`: no row came for it); whether any was
/// stored.
fn answer(batch: Vec<Queued>, outcomes: Vec<Option<Result<Outcome, sqlx::Error>>>) -> bool {
    let mut stored = false;
    for (queued, outcome) in batch.into_iter().zip(outcomes) {
        let reply = match outcome {
            Some(Ok(Outcome::Appended(appended))) => {
                stored = true;
                Reply::Appended(appended)
            }
            Some(Ok(Outcome::Conflict(stream_version))) => Reply::Conflict {
                stream_version,
                request: queued.request,
            },
            Some(Err(e)) => Reply::Failed(from_sqlx(e)),
            // A busy stream, a duplicate id, an error, or no row: on its own it meets the
            // same (waiting for the stream's lock, for a busy one).
            Some(Ok(Outcome::Alone)) | None => Reply::Alone(queued.request),
        };
        let _ = queued.reply.send(reply);
    }
    stored
}

/// One row of `es_append_group_v2`.
fn decode_row(row: &sqlx::postgres::PgRow) -> Result<Outcome, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    Ok(match outcome.as_str() {
        "appended" => Outcome::Appended(Stored {
            stream_version: row.try_get("stream_version")?,
            commit: row.try_get("transaction_id")?,
            positions: row.try_get("positions")?,
            recorded_at: row.try_get("recorded_at")?,
        }),
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
         FROM es_append_group_v2($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(requests().map(|r| r.stream.as_str()).collect::<Vec<_>>())
    .bind(requests().map(|r| r.min_version).collect::<Vec<_>>())
    .bind(requests().map(|r| r.max_version).collect::<Vec<_>>())
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
