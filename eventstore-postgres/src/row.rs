//! Turning rows of `es_events` into [`RecordedEvent`]s, refusing bad data with its position.

use chrono::{DateTime, Utc};
use cqrs_core::{
    Error, Metadata, Position, RawEvent, RecordedEvent, ReplayedEvent, Result, Snapshot, StreamId,
};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::Row;
use uuid::Uuid;

use crate::error::from_sqlx;

/// The columns every event query selects, in the order [`decode_event`] reads them. The
/// transaction id travels as `xid8` (decoded by [`Commit`]): no per-row cast on the server.
pub(crate) const EVENT_COLUMNS: &str = "e.transaction_id AS commit, e.position, e.event_id, \
     e.stream_id, e.stream_version, e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at";

/// [`EVENT_COLUMNS`] for rows of one stream the caller names: the stream id is not sent
/// again with every row ([`decode_stream_event`] takes it from the caller).
pub(crate) const STREAM_EVENT_COLUMNS: &str = "e.transaction_id AS commit, e.position, e.event_id, \
     NULL::text AS stream_id, e.stream_version, e.event_type, e.schema_version, e.payload, e.metadata, e.recorded_at";

/// The columns a replay reads ([`decode_replayed_at`]): the position, the stream version and
/// the event; none of the envelope's other fields.
pub(crate) const REPLAY_COLUMNS: &str =
    "e.transaction_id AS commit, e.position, e.stream_version, e.event_type, e.schema_version, e.payload";

/// The commit part of a position as a row carries it: an `xid8` (a 64-bit transaction id,
/// sent as 8 bytes) or a `bigint` (what the SQL functions return).
pub(crate) struct Commit(pub(crate) i64);

impl sqlx::Type<sqlx::Postgres> for Commit {
    fn type_info() -> sqlx::postgres::PgTypeInfo {
        sqlx::postgres::PgTypeInfo::with_name("xid8")
    }

    fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
        use sqlx::TypeInfo;
        ty.name().eq_ignore_ascii_case("xid8") || ty.name().eq_ignore_ascii_case("int8")
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Postgres> for Commit {
    fn decode(
        value: sqlx::postgres::PgValueRef<'r>,
    ) -> std::result::Result<Self, sqlx::error::BoxDynError> {
        match value.format() {
            sqlx::postgres::PgValueFormat::Binary => {
                let bytes: [u8; 8] = value.as_bytes()?.try_into().map_err(|_| {
                    format!(
                        "a commit is 8 bytes, not {}",
                        value.as_bytes().map_or(0, <[u8]>::len)
                    )
                })?;
                Ok(Self(i64::from_be_bytes(bytes)))
            }
            sqlx::postgres::PgValueFormat::Text => Ok(Self(value.as_str()?.parse()?)),
        }
    }
}

/// A non-negative database integer as `u64`, or a `Corrupt` error at `position`.
pub(crate) fn unsigned(value: i64, what: &str, position: Position) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::Corrupt {
        position,
        reason: format!("{what} is negative ({value})"),
    })
}

/// A `u64` as a database `bigint`, or an `InvalidInput` error naming it.
pub(crate) fn signed(value: u64, what: &str) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::InvalidInput(format!("{what} {value} is out of range")))
}

/// Decodes one event row selected with [`EVENT_COLUMNS`].
pub(crate) fn decode_event(row: &PgRow) -> Result<RecordedEvent> {
    decode_event_at(row, 0)
}

/// Decodes the event whose [`EVENT_COLUMNS`] start at column `first` of `row`. Columns are
/// read by place, not by name: a name is a lookup per column and row.
pub(crate) fn decode_event_at(row: &PgRow, first: usize) -> Result<RecordedEvent> {
    decode_row(row, first, None)
}

/// Decodes a row selected with [`STREAM_EVENT_COLUMNS`] from `stream`.
pub(crate) fn decode_stream_event(row: &PgRow, stream: &StreamId) -> Result<RecordedEvent> {
    decode_row(row, 0, Some(stream))
}

fn decode_row(row: &PgRow, first: usize, stream: Option<&StreamId>) -> Result<RecordedEvent> {
    let column = |n: usize| first + n;
    let position = position_at(row, column(0))?;
    let corrupt = |reason: String| Error::Corrupt { position, reason };

    let stream_id = match stream {
        Some(stream) => stream.clone(),
        None => {
            let stream_id: &str = value(row, column(3))?;
            stream_id
                .parse::<StreamId>()
                .map_err(|e| corrupt(e.to_string()))?
        }
    };
    let stream_version: i64 = value(row, column(4))?;
    let metadata: Metadata = match row.try_get_unchecked::<Json<Metadata>, _>(column(8)) {
        Ok(Json(metadata)) => metadata,
        Err(sqlx::Error::ColumnDecode { source, .. }) => {
            return Err(corrupt(format!("bad metadata: {source}")))
        }
        Err(e) => return Err(from_sqlx(e)),
    };
    let event_id: Uuid = value(row, column(2))?;
    let recorded_at: DateTime<Utc> = value(row, column(9))?;

    Ok(RecordedEvent {
        event_id,
        stream_id,
        stream_version: unsigned(stream_version, "stream version", position)?,
        position,
        recorded_at,
        metadata,
        event: raw_event_at(row, column(5), position)?,
    })
}

/// Decodes a row whose [`REPLAY_COLUMNS`] start at column `first`.
pub(crate) fn decode_replayed_at(row: &PgRow, first: usize) -> Result<ReplayedEvent> {
    let position = position_at(row, first)?;
    let stream_version: i64 = value(row, first + 2)?;
    Ok(ReplayedEvent {
        stream_version: unsigned(stream_version, "stream version", position)?,
        position,
        event: raw_event_at(row, first + 3, position)?,
    })
}

/// Decodes the snapshot of `stream` whose version, schema version, state and time are the
/// first four columns of `row`.
pub(crate) fn decode_snapshot(row: &PgRow, stream: &StreamId) -> Result<Snapshot> {
    let corrupt = |reason: String| Error::Corrupt {
        position: Position::START,
        reason: format!("snapshot of `{stream}`: {reason}"),
    };
    let version: i64 = row.try_get(0).map_err(from_sqlx)?;
    let schema_version: i32 = row.try_get(1).map_err(from_sqlx)?;
    Ok(Snapshot {
        stream_id: stream.clone(),
        version: u64::try_from(version).map_err(|_| corrupt(format!("version {version}")))?,
        schema_version: u32::try_from(schema_version)
            .map_err(|_| corrupt(format!("schema version {schema_version}")))?,
        state: row.try_get(2).map_err(from_sqlx)?,
        taken_at: row.try_get(3).map_err(from_sqlx)?,
    })
}

/// The position whose transaction id and sequence are columns `first` and `first + 1`.
fn position_at(row: &PgRow, first: usize) -> Result<Position> {
    let Commit(commit) = value(row, first)?;
    let sequence: i64 = value(row, first + 1)?;
    let raw_position = Position::new(commit.max(0) as u64, sequence.max(0) as u64);
    Ok(Position::new(
        unsigned(commit, "transaction id", raw_position)?,
        unsigned(sequence, "position", raw_position)?,
    ))
}

/// The event whose type, schema version and payload are columns `first` to `first + 2`,
/// of the event at `position`.
fn raw_event_at(row: &PgRow, first: usize, position: Position) -> Result<RawEvent> {
    let schema_version: i32 = value(row, first + 1)?;
    Ok(RawEvent {
        event_type: value(row, first)?,
        schema_version: u32::try_from(schema_version).map_err(|_| Error::Corrupt {
            position,
            reason: format!("schema version is negative ({schema_version})"),
        })?,
        payload: value(row, first + 2)?,
    })
}

/// Column `index` of `row`, decoded without comparing its type with `T`'s: the columns are
/// the store's own, of known types (the comparison was a tenth of a read's client time).
/// A query that selects a column of another type would not always be told (an 8-byte
/// value of another type decodes as any 8-byte type), so every query decoded here selects
/// `es_events`' own columns as [`EVENT_COLUMNS`], [`STREAM_EVENT_COLUMNS`] or
/// [`REPLAY_COLUMNS`] name them (or, in a `UNION`, `NULL`s cast to their types), of the
/// types the tests read back.
fn value<'r, T: sqlx::Decode<'r, sqlx::Postgres>>(row: &'r PgRow, index: usize) -> Result<T> {
    row.try_get_unchecked(index).map_err(from_sqlx)
}
