//! The fast path of every append outside a caller's transaction: plain SQL statements, one
//! for a lone append ([`write_lone`]) and one for a group of appends to distinct streams
//! ([`write`]).
//!
//! The statement tries each stream's lock, reads each stream's version from the
//! `(stream_id, stream_version)` index, keeps the appends whose expected version holds and
//! inserts all their events with one multi-row `INSERT`, in the order given. It runs no
//! PL/pgSQL and opens no subtransaction, so a group of appends costs about what one multi-row
//! insert costs. The lone statement does the same for one append in a simpler shape (no
//! common table expressions): a lone append through the group statement was measured at
//! half the rate.
//!
//! What they leave to the slower paths, which meet every case exactly as before:
//! - a stream locked by another transaction is answered [`Outcome::Alone`] (nothing of it
//!   stored; the lone statement answers no row, also for a version conflict): the append is
//!   then written on its own, waiting for the lock (`es_append_v2`);
//! - the statement fails as a whole on any error (an event id stored before, a value the
//!   table refuses, a lock wait that timed out), and nothing of it is stored: the caller
//!   writes the appends again through `es_append_group_v2` or `es_append_v2`, which give each
//!   append its own outcome.
//!
//! One more case the fallback covers: a statement sees the log as it was when the statement
//! began, before it took the locks. A stream whose lock was released in between (its writer
//! committed) is read at its version before that commit; the insert then collides with the
//! committed events on the `(stream_id, stream_version)` constraint, the statement fails, and
//! the appends are written again by the functions, which read the version after taking the
//! lock. So every append that is stored passed a version check under its lock, but in that
//! window (between a statement's start and its lock) the constraint alone stops the stale
//! insert: these statements need it, where the functions only keep it as a backstop. The
//! store checks once, before its first read or write, that the constraint is there and not
//! deferred (see `log_order`). A group conflict in that window is answered from the version
//! read: the conflict is then true of the stream as it was when the statement began, a moment
//! within the call.

use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};

use cqrs_core::{AppendResult, Position};

use crate::group::Request;
use crate::row::{unsigned, Commit};

/// The statement. Appends are numbered from 1 in the order given (`$1`–`$4`, one element
/// per append); events are flattened in that order (`$5`–`$10`, one element per event: the
/// number of the append it belongs to, its place in that append from 1, and its columns).
/// Two kinds of rows, told apart by the first column: one per append (its number, whether
/// its stream's lock was taken, the stream's version read) and one per inserted event (its
/// stream, version, position, transaction id and commit time). The inserted rows are handed
/// back as they are, not grouped per append, which measured about a tenth cheaper on the
/// server for a group of 16.
const STATEMENT: &str = "\
WITH settings AS (
    SELECT set_config('lock_timeout', '1000ms', true) AS lock_timeout
), appends AS (
    SELECT a.n, a.stream, a.min_version, a.max_version, a.metadata,
           pg_try_advisory_xact_lock(hashtextextended('es_stream:' || a.stream, 0)) AS locked
    FROM settings,
         unnest($1::text[], $2::int8[], $3::int8[], $4::jsonb[])
             WITH ORDINALITY AS a(stream, min_version, max_version, metadata, n)
), versions AS (
    SELECT a.*,
           coalesce((SELECT max(e.stream_version) FROM es_events e
                     WHERE e.stream_id = a.stream), 0) AS version
    FROM appends a
), inserted AS (
    INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version,
                           payload, metadata)
    SELECT ev.id, a.stream, a.version + ev.k, ev.t, ev.v, ev.p, a.metadata
    FROM unnest($5::int8[], $6::int8[], $7::uuid[], $8::text[], $9::int4[], $10::jsonb[])
             WITH ORDINALITY AS ev(owner, k, id, t, v, p, i)
    JOIN versions a ON a.n = ev.owner
    WHERE a.locked AND a.version >= a.min_version
      AND (a.max_version IS NULL OR a.version <= a.max_version)
    ORDER BY ev.i
    RETURNING stream_id, stream_version, position, transaction_id, recorded_at
)
SELECT v.n, v.locked, v.version, NULL::text AS stream_id, NULL::int8 AS stream_version,
       NULL::int8 AS position, NULL::xid8 AS transaction_id, NULL::timestamptz AS recorded_at
FROM versions v
UNION ALL
SELECT NULL, NULL, NULL, i.stream_id, i.stream_version, i.position, i.transaction_id,
       i.recorded_at
FROM inserted i";

/// The stream's lock, tried, and its version, as `s(lock_timeout, locked, version)`, for the
/// single-append statements (`$1` is the stream).
const STREAM_CHECK: &str = "\
(SELECT set_config('lock_timeout', '1000ms', true) AS lock_timeout,
        pg_try_advisory_xact_lock(hashtextextended('es_stream:' || $1, 0)) AS locked,
        coalesce((SELECT max(x.stream_version) FROM es_events x WHERE x.stream_id = $1), 0)
            AS version
 OFFSET 0) s";

/// Whether the single-append statements write: the lock was taken and the version read lies
/// in the accepted range (`$2`–`$3`).
const ACCEPTED: &str = "s.locked AND s.version >= $2 AND ($3::int8 IS NULL OR s.version <= $3)";

/// One append, when it can be written at once: its stream's lock is free and its expected
/// version holds. Rows: its events' positions, stream versions, transaction id and commit
/// time; no row when it cannot (nothing stored), and the function must decide. Parameters
/// as [`Request::bind_to`] binds them.
static LONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version,
                       payload, metadata)
SELECT e.id, $1, s.version + e.k, e.t, e.v, e.p, $8
FROM {STREAM_CHECK},
     unnest($4::uuid[], $5::text[], $6::int4[], $7::jsonb[]) WITH ORDINALITY AS e(id, t, v, p, k)
WHERE {ACCEPTED}
ORDER BY e.k
RETURNING position, stream_version, transaction_id, recorded_at"
    )
});

/// [`LONE`] for an append of one event, the most common kind (a command that records one
/// fact), with the event's columns bound as values (`$4`–`$7`) rather than arrays of one:
/// no arrays to encode and decode, no `unnest` and no sort, about a tenth of a single
/// append's time.
static LONE_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO es_events (event_id, stream_id, stream_version, event_type, schema_version,
                       payload, metadata)
SELECT $4, $1, s.version + 1, $5, $6, $7, $8
FROM {STREAM_CHECK}
WHERE {ACCEPTED}
RETURNING position, stream_version, transaction_id, recorded_at"
    )
});

/// Writes `request` at once if its stream's lock is free and its expected version holds;
/// `None` when not (nothing stored): the caller then writes it with `es_append_v2`, which
/// waits for the lock and tells a conflict. An error of the statement means nothing was
/// stored, unless [`outcome_unknown`] says the outcome is unknown. (An answer that does not
/// decode comes after the commit, but cannot happen with the store's own columns; were it
/// to, `es_append_v2` would find the events stored and report them so.)
pub(crate) async fn write_lone(
    connection: &mut PgConnection,
    request: &Request,
) -> Result<Option<Stored>, sqlx::Error> {
    let events = &request.events;
    let query = match (events.as_slice(), request.schema_versions.as_slice()) {
        ([event], [schema_version]) => sqlx::query(&LONE_EVENT)
            .bind(request.stream.as_str())
            .bind(request.min_version)
            .bind(request.max_version)
            .bind(event.event_id)
            .bind(event.data.event_type.as_str())
            .bind(schema_version)
            .bind(&event.data.payload)
            .bind(&request.metadata),
        _ => request.bind_to(sqlx::query(&LONE)),
    };
    let rows = query.fetch_all(connection).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    if rows.len() != events.len() {
        return Err(sqlx::Error::Protocol(format!(
            "an append of {} events stored {}",
            events.len(),
            rows.len()
        )));
    }
    let mut stored = rows
        .iter()
        // Unchecked: the statement's own columns, of known types (a batch answers a row per
        // event, and the type comparison is most of decoding one).
        .map(|row| {
            Ok((
                row.try_get_unchecked::<i64, _>(1)?,
                row.try_get_unchecked::<i64, _>(0)?,
            ))
        })
        .collect::<Result<Vec<(i64, i64)>, sqlx::Error>>()?;
    stored.sort_unstable();
    let Commit(commit) = first.try_get(2)?;
    Ok(Some(Stored {
        stream_version: stored.last().map_or(0, |(version, _)| *version),
        commit,
        positions: stored.into_iter().map(|(_, position)| position).collect(),
        recorded_at: first.try_get(3)?,
    }))
}

/// A stored append, as the database tells it.
#[derive(Debug)]
pub(crate) struct Stored {
    /// The stream's version now.
    pub stream_version: i64,
    /// The transaction id.
    pub commit: i64,
    /// The events' positions within the transaction, in stream order.
    pub positions: Vec<i64>,
    /// The commit time.
    pub recorded_at: DateTime<Utc>,
}

impl Stored {
    /// What the caller of the append is told.
    pub(crate) fn into_result(self) -> cqrs_core::Result<AppendResult> {
        let commit = unsigned(self.commit, "transaction id", Position::START)?;
        Ok(AppendResult {
            stream_version: unsigned(self.stream_version, "stream version", Position::START)?,
            positions: self
                .positions
                .into_iter()
                .map(|p| unsigned(p, "position", Position::START).map(|p| Position::new(commit, p)))
                .collect::<cqrs_core::Result<Vec<_>>>()?,
            recorded_at: self.recorded_at,
            already_stored: false,
        })
    }
}

/// What became of one append of a group.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Stored.
    Appended(Stored),
    /// Refused by its expected version: the stream's version. Nothing stored.
    Conflict(i64),
    /// To be written on its own, waiting for its stream's lock; nothing stored. Its stream
    /// is locked by another transaction (or, from `es_append_group_v2`, the append met an
    /// event id stored before or an error, which on its own it meets as a single append
    /// does).
    Alone,
}

/// Whether a failed statement may have been stored after all: the connection went (or the
/// server was shutting down) while it ran. Any other error, a lost deadlock included, rolled
/// the whole statement back. (A pool's own errors, which it would count too, do not come
/// here: a pool that has no connection to give fails the append before anything is sent.)
pub(crate) fn outcome_unknown(error: &sqlx::Error) -> bool {
    crate::is_transient(error)
        && !matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| c == "40P01" || c == "40001"))
}

/// Whether the appends can share the statement: their streams must be distinct (two appends
/// of one stream would read the same version).
pub(crate) fn distinct_streams(requests: &[&Request]) -> bool {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream.as_str()).collect();
    streams.sort_unstable();
    streams.windows(2).all(|pair| pair[0] != pair[1])
}

/// Writes `requests` (to distinct streams, see [`distinct_streams`]) in one statement and
/// transaction; one outcome per request, in order. An error of the statement means nothing
/// was stored, unless [`outcome_unknown`] says the outcome is unknown. (An answer that does
/// not add up comes after the commit, but cannot happen with the store's own columns; were
/// it to, the group would be written again by `es_append_group_v2`, which finds the events
/// stored and reports them so.)
pub(crate) async fn write(
    connection: &mut PgConnection,
    requests: &[&Request],
) -> Result<Vec<Outcome>, sqlx::Error> {
    let appends = || requests.iter().copied();
    let events = || {
        appends()
            .enumerate()
            .flat_map(|(n, r)| r.events.iter().enumerate().map(move |(k, e)| (n, k, e)))
    };
    let rows = sqlx::query(STATEMENT)
        .bind(appends().map(|r| r.stream.as_str()).collect::<Vec<_>>())
        .bind(appends().map(|r| r.min_version).collect::<Vec<_>>())
        .bind(appends().map(|r| r.max_version).collect::<Vec<_>>())
        .bind(appends().map(|r| &r.metadata).collect::<Vec<_>>())
        .bind(events().map(|(n, _, _)| ordinal(n)).collect::<Vec<_>>())
        .bind(events().map(|(_, k, _)| ordinal(k)).collect::<Vec<_>>())
        .bind(events().map(|(_, _, e)| e.event_id).collect::<Vec<_>>())
        .bind(
            events()
                .map(|(_, _, e)| e.data.event_type.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            appends()
                .flat_map(|r| r.schema_versions.iter().copied())
                .collect::<Vec<_>>(),
        )
        .bind(
            events()
                .map(|(_, _, e)| &e.data.payload)
                .collect::<Vec<_>>(),
        )
        .fetch_all(connection)
        .await?;
    outcomes(requests, &rows)
}

/// A place counted from 0 as the statement's number counted from 1.
fn ordinal(place: usize) -> i64 {
    i64::try_from(place).map_or(i64::MAX, |p| p + 1)
}

/// Each append's outcome from the statement's rows (see [`STATEMENT`]).
fn outcomes(requests: &[&Request], rows: &[PgRow]) -> Result<Vec<Outcome>, sqlx::Error> {
    let wrong = |what: String| sqlx::Error::Protocol(format!("the append statement {what}"));
    let by_stream: HashMap<&str, usize> = requests
        .iter()
        .enumerate()
        .map(|(i, r)| (r.stream.as_str(), i))
        .collect();
    let mut read: Vec<Option<(bool, i64)>> = vec![None; requests.len()];
    let mut inserted: Vec<Vec<(i64, i64)>> = vec![Vec::new(); requests.len()];
    let mut commit: Option<(i64, DateTime<Utc>)> = None;
    for row in rows {
        match row.try_get::<Option<i64>, _>(0)? {
            Some(n) => {
                let slot = usize::try_from(n - 1)
                    .ok()
                    .and_then(|i| read.get_mut(i))
                    .ok_or_else(|| wrong(format!("answered for append {n}")))?;
                *slot = Some((row.try_get(1)?, row.try_get(2)?));
            }
            None => {
                let stream: &str = row.try_get(3)?;
                let i = *by_stream
                    .get(stream)
                    .ok_or_else(|| wrong(format!("inserted into {stream}")))?;
                inserted[i].push((row.try_get_unchecked(4)?, row.try_get_unchecked(5)?));
                if commit.is_none() {
                    let Commit(id) = row.try_get(6)?;
                    commit = Some((id, row.try_get(7)?));
                }
            }
        }
    }
    requests
        .iter()
        .zip(read)
        .zip(inserted)
        .map(|((request, read), mut stored)| match read {
            None => Err(wrong(format!("said nothing of {}", request.stream))),
            Some((false, _)) => Ok(Outcome::Alone),
            Some((true, version)) if stored.is_empty() => Ok(Outcome::Conflict(version)),
            Some((true, _)) if stored.len() != request.events.len() => Err(wrong(format!(
                "stored {} of {} events in {}",
                stored.len(),
                request.events.len(),
                request.stream
            ))),
            Some((true, _)) => {
                let (commit, recorded_at) =
                    commit.ok_or_else(|| wrong("stored events without a transaction".into()))?;
                stored.sort_unstable();
                Ok(Outcome::Appended(Stored {
                    stream_version: stored.last().map_or(0, |(version, _)| *version),
                    commit,
                    positions: stored.into_iter().map(|(_, position)| position).collect(),
                    recorded_at,
                }))
            }
        })
        .collect()
}
