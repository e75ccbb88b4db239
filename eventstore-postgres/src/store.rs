//! [`PgEventStore`]: the [`EventStore`] contract on PostgreSQL.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::store::check_batch;
use cqrs_core::{
    AppendResult, Error, EventFilter, EventStore, ExpectedVersion, Horizon, HorizonBlocker,
    Metadata, NewEvent, Position, ReadAllPage, RecordedEvent, ReplayedEvent, Result, Snapshot,
    SnapshotAndTail, StreamId,
};
use futures_util::TryStreamExt;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgConnection, PgPool, Postgres, Row};
use uuid::Uuid;

use crate::error::{from_sqlx, violated_constraint, EVENT_ID_UNIQUE, STREAM_VERSION_UNIQUE};
use crate::group::{Grouper, Reply, Request, Turn};
use crate::horizon;
use crate::log_order::LogOrderGuard;
use crate::notify::Notifier;
use crate::row::{
    decode_event, decode_event_at, decode_replayed_at, decode_snapshot, decode_stream_event,
    signed, unsigned, Commit, EVENT_COLUMNS, REPLAY_COLUMNS, STREAM_EVENT_COLUMNS,
};
use crate::set_append::{self, Stored};

/// The single-append function, waiting for the stream's lock: inside a caller's
/// transaction, and for an append the set statement ([`set_append`]) could not write.
const APPEND: &str = "SELECT outcome, stream_version, transaction_id, positions, recorded_at \
     FROM es_append_v2($1, $2, $3, $4, $5, $6, $7, $8, $9, true)";

/// A page of the whole log, unfiltered: `es_read_all_v4`'s statement sent as it is, up to
/// its `LIMIT` (the page size follows, written into the statement: see [`read_all_statement`]).
/// The function call and its copy of the page cost about a fifth of the server's time for a
/// page of 1,000; without a filter there is no plan to fear but the walk of the primary key
/// in log order, which the `LIMIT` makes the cheapest. (A filter could make a bitmap scan and
/// a sort of the matching rows look cheaper, so filtered pages go through the function,
/// which turns those off.)
const READ_ALL_UP_TO_LIMIT: &str = "\
WITH h AS (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon)
SELECT h.horizon, e.*
FROM h
LEFT JOIN LATERAL (
    SELECT ev.transaction_id, ev.position, ev.event_id, ev.stream_id, ev.stream_version,
           ev.event_type, ev.schema_version, ev.payload, ev.metadata, ev.recorded_at
    FROM es_events ev
    WHERE (ev.transaction_id, ev.position) > ((SELECT $1::text::xid8), (SELECT $2))
      AND ev.transaction_id < h.horizon
    ORDER BY ev.transaction_id, ev.position
    LIMIT";

/// The unfiltered page statement for pages of `limit` events. The position is read in
/// subqueries, so that the planner cannot tailor a plan to it: in sight, a plan for the
/// page's position always looked cheaper than the generic one, and every page was planned
/// again (about 0.15 ms: a fifth of the time of a page of ten events, 2–3 % of a page of
/// 1,000). The page size is written in, not bound, so that the one plan kept per connection
/// and page size is costed for that many rows (behind a subquery, the planner costs a tenth
/// of the log, and on a log much larger than `effective_cache_size` chose a scan and sort
/// of all of it). One cached statement per page size a reader uses.
fn read_all_statement(limit: i64) -> String {
    format!("{READ_ALL_UP_TO_LIMIT} {limit}\n) e ON true")
}

/// The most events a page's vector is made room for before its rows arrive: a larger page
/// grows it as they come (twice for a page of 1,000), and an empty page, a caught-up
/// reader's, pays for less room it leaves unused.
const PAGE_CAPACITY: usize = 256;

/// How often a caught-up reader looks again when no notification arrives. Notifications
/// wake readers at once (and events they announce that an older transaction holds back are
/// looked for after 10 ms, then less and less often); the poll covers a notification lost
/// on the way (its writer died between its commit and its `NOTIFY`, or the listener was
/// reconnecting). Every look is a query per waiting reader, so it is not made often.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// How soon a waiting reader looks again when a notification came but the events it
/// announced are not readable yet (held back by an older transaction, whose end sends no
/// notification); the interval then doubles up to the poll interval.
const HELD_BACK_POLL: Duration = Duration::from_millis(10);

/// The PostgreSQL event store. Cheap to clone; clones share the pool and the listener.
///
/// ```no_run
/// # async fn run() -> cqrs_core::Result<()> {
/// use eventstore_postgres::PgEventStore;
///
/// let store = PgEventStore::connect("postgres://postgres@127.0.0.1/shop").await?;
/// store.migrate().await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct PgEventStore {
    pool: PgPool,
    notifier: Arc<Notifier>,
    poll_interval: Duration,
    log_order: LogOrderGuard,
    grouper: Arc<Grouper>,
}

impl PgEventStore {
    /// A store over an existing pool. Call [`PgEventStore::migrate`] once before use.
    ///
    /// Besides the pool's connections, the store keeps one of its own for its appends (the
    /// writer's: see the crate docs), taken from the pool at the first append and detached
    /// from it. It is closed when the store is dropped, or at the next append once the pool
    /// is closed (no statement is written on it then).
    pub fn new(pool: PgPool) -> Self {
        let notifier = Arc::new(Notifier::new(pool.clone()));
        Self {
            grouper: Arc::new(Grouper::new(pool.clone(), Arc::clone(&notifier))),
            notifier,
            pool,
            poll_interval: DEFAULT_POLL_INTERVAL,
            log_order: LogOrderGuard::default(),
        }
    }

    /// Connects a pool of up to 32 connections to `url`.
    pub async fn connect(url: &str) -> Result<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(32)
            .connect(url)
            .await
            .map_err(from_sqlx)?;
        Ok(Self::new(pool))
    }

    /// How often a caught-up reader looks again when no notification arrives.
    pub fn with_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The pool the store uses (read models may share it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the store's migrations (idempotent; safe from several processes at once).
    pub async fn migrate(&self) -> Result<()> {
        crate::migrate(&self.pool).await
    }

    /// Checks that the log's transaction ids are all below the server's next one (see
    /// [`Error::LogAhead`]). Every read and write makes this check once per store before it
    /// runs, and refuses while it fails; call it at start-up to fail early.
    pub async fn check_log_order(&self) -> Result<()> {
        self.log_order.check(&self.pool).await
    }

    /// The open write transactions that hold readers back right now, oldest first.
    ///
    /// Readers see an event only once every transaction that started writing before it has
    /// ended, so a transaction left open (an idle session in `BEGIN`, a slow batch job) holds
    /// back every reader until it ends. This names them: pid, age, state and query.
    pub async fn horizon_blockers(&self) -> Result<Vec<HorizonBlocker>> {
        horizon::blockers(&self.pool).await
    }

    /// For the store's own tests: runs `statement` on the writer's connection, the one the
    /// appends outside a caller's transaction are written on (opening it if none is open),
    /// and returns its rows. Its session's prepared statements, plans and process id are the
    /// appends'. The statement must leave no transaction open and change no setting.
    #[cfg(feature = "testing")]
    pub async fn query_on_writer_connection(
        &self,
        statement: &str,
    ) -> Result<Vec<sqlx::postgres::PgRow>> {
        let mut turn = self.grouper.turn().await;
        let connection = turn.get().await.map_err(from_sqlx)?;
        let rows = sqlx::query(statement).fetch_all(connection).await;
        turn.answered(rows.as_ref().err());
        rows.map_err(from_sqlx)
    }

    /// Appends inside the caller's transaction, so events and other writes (an outbox row,
    /// a read model) commit or roll back together. Nothing is visible, and no reader is woken,
    /// before the caller commits.
    ///
    /// While the transaction stays open it holds back every reader of the log (see the crate
    /// docs): keep it short. A batch whose ids are stored already aborts the transaction and
    /// is refused with [`Error::DuplicateEventId`].
    pub async fn append_in_transaction(
        &self,
        transaction: &mut PgConnection,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> Result<AppendResult> {
        check_batch(&events)?;
        self.check_log_order().await?;
        let request = Self::encode(stream, expected, events, metadata)?;
        self.append_with(&mut *transaction, &request, true).await
    }

    /// Checks and encodes one append.
    fn encode(
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> Result<Request> {
        let (min, max) = expected.accepted_versions();
        let min_version = signed(min, "expected version")?;
        let max_version = max.map(|v| signed(v, "expected version")).transpose()?;
        let metadata = serde_json::to_value(metadata).map_err(|e| Error::Encode {
            event_type: "metadata".into(),
            source: Box::new(e),
        })?;
        let schema_versions = events
            .iter()
            .map(|e| {
                i32::try_from(e.data.schema_version).map_err(|_| {
                    Error::InvalidInput(format!(
                        "schema version {} is out of range",
                        e.data.schema_version
                    ))
                })
            })
            .collect::<Result<Vec<i32>>>()?;
        Ok(Request {
            stream: stream.clone(),
            expected,
            min_version,
            max_version,
            events,
            schema_versions,
            metadata,
        })
    }

    /// One append through `es_append_v2`, waiting for its stream's lock.
    async fn append_with<'c, X>(
        &self,
        executor: X,
        request: &Request,
        in_transaction: bool,
    ) -> Result<AppendResult>
    where
        X: sqlx::Executor<'c, Database = Postgres>,
    {
        let row = request
            .bind_to(sqlx::query(APPEND))
            .bind(in_transaction)
            .fetch_one(executor)
            .await;

        let row = match row {
            Ok(row) => row,
            Err(error) => {
                return self
                    .explain_append_error(request, in_transaction, error)
                    .await
            }
        };
        let outcome: &str = row.try_get("outcome").map_err(from_sqlx)?;
        let current: i64 = row.try_get("stream_version").map_err(from_sqlx)?;
        match outcome {
            "appended" => Stored {
                stream_version: current,
                commit: row.try_get("transaction_id").map_err(from_sqlx)?,
                positions: row.try_get("positions").map_err(from_sqlx)?,
                recorded_at: row.try_get("recorded_at").map_err(from_sqlx)?,
            }
            .into_result(),
            "conflict" => self.conflict(request, current).await,
            other => Err(Error::Backend(
                format!("es_append_v2 answered {other:?}").into(),
            )),
        }
    }

    /// One append on its own, waiting for its stream's lock; one such waiter per stream at a
    /// time.
    async fn append_alone(&self, request: &Request) -> Result<AppendResult> {
        let _gate = self.grouper.wait_turn_of(request.stream.as_str()).await;
        self.append_with(&self.pool, request, false).await
    }

    /// One append through the single-append statement ([`set_append::write_lone`]) on the
    /// writer's connection; `None` when it must be written on its own, waiting: its stream
    /// is locked by another transaction, its expected version does not hold (`es_append_v2`
    /// tells the conflict, or finds a retried batch), the statement failed (storing nothing)
    /// and `es_append_v2` will meet the cause and say what it is, or the connection went
    /// while it ran (`es_append_v2` then finds the events by their ids if they were stored).
    /// Fails as the pool does when no connection can be had.
    async fn append_set(&self, turn: &mut Turn, request: &Request) -> Result<Option<AppendResult>> {
        // No connection to write on: nothing was written, and the pool has said why.
        let connection = turn.get().await.map_err(from_sqlx)?;
        let written = set_append::write_lone(connection, request).await;
        turn.answered(written.as_ref().err());
        match written {
            Ok(Some(stored)) => stored.into_result().map(Some),
            Ok(None) => Ok(None),
            Err(error) => {
                tracing::debug!(%error, "an append statement failed; writing it again on its own");
                Ok(None)
            }
        }
    }

    /// An append refused by its expected version: a retry of a batch stored before is
    /// reported as stored; otherwise the conflict, with the stream's version.
    async fn conflict(&self, request: &Request, current: i64) -> Result<AppendResult> {
        match self
            .earlier_append(&request.stream, &request.events)
            .await?
        {
            Some(earlier) => Ok(earlier),
            None => Err(Error::Conflict {
                stream: request.stream.clone(),
                expected: request.expected,
                actual: unsigned(current, "stream version", Position::START)?,
            }),
        }
    }

    /// Whether ids of this batch are stored already. If the whole batch sits in this stream
    /// as one contiguous run, this append is a retry: the earlier write is reported. If only
    /// some ids, or ids in another stream, are stored, the ids clash.
    async fn earlier_append(
        &self,
        stream: &StreamId,
        events: &[NewEvent],
    ) -> Result<Option<AppendResult>> {
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let rows = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM unnest($1::uuid[]) WITH ORDINALITY AS i(id, n) \
             JOIN es_events e ON e.event_id = i.id ORDER BY i.n"
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let stored = rows.iter().map(decode_event).collect::<Result<Vec<_>>>()?;
        AppendResult::of_earlier_append(stream, events.len(), &stored)
    }

    /// Turns a failed `es_append_v2` into what the caller should see. The unique constraints
    /// are the last line of defence behind the stream lock.
    async fn explain_append_error(
        &self,
        request: &Request,
        in_transaction: bool,
        error: sqlx::Error,
    ) -> Result<AppendResult> {
        let (stream, expected, events) = (&request.stream, request.expected, &request.events);
        Err(match violated_constraint(&error) {
            Some(STREAM_VERSION_UNIQUE) => match self.stream_version(stream).await {
                Ok(actual) => Error::Conflict {
                    stream: stream.clone(),
                    expected,
                    actual,
                },
                Err(e) => e,
            },
            Some(EVENT_ID_UNIQUE) => match self.earlier_append(stream, events).await {
                // A retry of a stored batch. Outside a transaction of the caller's, report it
                // as stored; inside one, the failed insert has aborted that transaction, so
                // the caller must not be told to go on.
                Ok(Some(earlier)) if !in_transaction => return Ok(earlier),
                Ok(Some(_)) => Error::DuplicateEventId {
                    event_id: events[0].event_id,
                    stored_in: stream.clone(),
                },
                Ok(None) => from_sqlx(error),
                Err(e) => e,
            },
            _ => from_sqlx(error),
        })
    }
}

#[async_trait]
impl EventStore for PgEventStore {
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
        metadata: &Metadata,
    ) -> Result<AppendResult> {
        check_batch(&events)?;
        self.check_log_order().await?;
        let request = Self::encode(stream, expected, events, metadata)?;
        let appended = match self.grouper.submit(request).await {
            (Reply::Alone(request), Some(mut turn)) => {
                match self.append_set(&mut turn, &request).await? {
                    Some(appended) => appended,
                    None => {
                        // Its stream is locked by another transaction (or the statement failed):
                        // wait for the lock without holding up the other appends.
                        drop(turn);
                        self.append_alone(&request).await?
                    }
                }
            }
            (Reply::Alone(request), None) => self.append_alone(&request).await?,
            (Reply::Appended(stored), _) => stored.into_result()?,
            (
                Reply::Conflict {
                    stream_version,
                    request,
                },
                _,
            ) => self.conflict(&request, stream_version).await?,
            (Reply::Failed(error), _) => return Err(error),
        };
        // Found stored too: it may be the append of a statement whose answer was lost (or
        // whose caller stopped waiting), stored then and announced by nobody. Bursts of
        // announcements cost one notification.
        self.notifier.announce();
        Ok(appended)
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>> {
        self.check_log_order().await?;
        let rows = stream_query(&READ_STREAM, stream, from_version, limit)?
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        rows.iter()
            .map(|row| decode_stream_event(row, stream))
            .collect()
    }

    async fn replay_stream(
        &self,
        stream: &StreamId,
        from_version: u64,
        limit: usize,
        apply: &mut (dyn FnMut(ReplayedEvent) -> Result<()> + Send),
    ) -> Result<usize> {
        self.check_log_order().await?;
        // Row by row as they arrive: each is applied while the next are still on the wire,
        // and none is kept.
        let mut rows = stream_query(&REPLAY_STREAM, stream, from_version, limit)?.fetch(&self.pool);
        let mut count = 0;
        while let Some(row) = rows.try_next().await.map_err(from_sqlx)? {
            apply(decode_replayed_at(&row, 0)?)?;
            count += 1;
        }
        Ok(count)
    }

    async fn read_event(&self, event_id: Uuid) -> Result<Option<RecordedEvent>> {
        self.check_log_order().await?;
        let row = sqlx::query(&format!(
            "SELECT {EVENT_COLUMNS} FROM es_events e WHERE e.event_id = $1"
        ))
        .bind(event_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?;
        row.as_ref().map(decode_event).transpose()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<u64> {
        let version: Option<i64> =
            sqlx::query_scalar("SELECT max(stream_version) FROM es_events WHERE stream_id = $1")
                .bind(stream.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)?;
        unsigned(version.unwrap_or(0), "stream version", Position::START)
    }

    async fn read_all(
        &self,
        after: Position,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<ReadAllPage> {
        // At most what es_read_all_v4 takes (an i32), so that a full page is told by its
        // length on both paths.
        let limit = limit.min(i32::MAX as usize);
        let limit_i64 = page_limit(limit)?;
        self.check_log_order().await?;
        let (commit, sequence) = (
            signed(after.commit, "position")?,
            signed(after.sequence, "position")?,
        );
        // One statement, so the rows and the horizon come from the same snapshot.
        let unfiltered = read_all_statement(limit_i64);
        let query = if filter.event_types.is_empty() && filter.categories.is_empty() {
            sqlx::query(&unfiltered).bind(commit).bind(sequence)
        } else {
            let types = (!filter.event_types.is_empty()).then_some(&filter.event_types);
            let stream_patterns =
                (!filter.categories.is_empty()).then(|| category_patterns(filter));
            sqlx::query(
                "SELECT horizon, commit, position, event_id, stream_id, stream_version, \
                        event_type, schema_version, payload, metadata, recorded_at \
                 FROM es_read_all_v4($1, $2, $3, $4, $5)",
            )
            .bind(commit)
            .bind(sequence)
            .bind(i32::try_from(limit_i64).map_err(|_| Error::InvalidInput("limit".into()))?)
            .bind(types)
            .bind(stream_patterns)
        };
        // Rows are decoded as they arrive, while the rest of the page is on its way.
        let mut rows = query.fetch(&self.pool);
        let mut horizon = None;
        let mut events = Vec::with_capacity(limit.min(PAGE_CAPACITY));
        while let Some(row) = rows.try_next().await.map_err(from_sqlx)? {
            if horizon.is_none() {
                horizon = Some(row.try_get::<Commit, _>(0).map_err(from_sqlx)?.0);
            }
            // A row without a position is the horizon alone (no event on the page);
            // otherwise the event columns follow the horizon in their usual order.
            let position: Option<i64> = row.try_get(2).map_err(from_sqlx)?;
            if position.is_some() {
                events.push(decode_event_at(&row, 1)?);
            }
        }
        let Some(horizon) = horizon else {
            return Err(Error::Backend("read_all returned no horizon row".into()));
        };
        let scanned_to = match events.last() {
            Some(last) if events.len() == limit => last.position,
            _ => Position::new(unsigned(horizon, "horizon", after)?, 0).max(after),
        };
        Ok(ReadAllPage { events, scanned_to })
    }

    async fn head(&self) -> Result<Position> {
        let row = sqlx::query("SELECT commit, position FROM es_head()")
            .fetch_optional(&self.pool)
            .await
            .map_err(from_sqlx)?;
        match row {
            None => Ok(Position::START),
            Some(row) => {
                let commit: i64 = row.try_get("commit").map_err(from_sqlx)?;
                let sequence: i64 = row.try_get("position").map_err(from_sqlx)?;
                let at = Position::new(commit.max(0) as u64, sequence.max(0) as u64);
                Ok(Position::new(
                    unsigned(commit, "transaction id", at)?,
                    unsigned(sequence, "position", at)?,
                ))
            }
        }
    }

    async fn read_barrier(&self) -> Result<Position> {
        // Every committed transaction has an id below the snapshot's xmax, so every committed
        // event sorts before (xmax, 0).
        let xmax: i64 =
            sqlx::query_scalar("SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint")
                .fetch_one(&self.pool)
                .await
                .map_err(from_sqlx)?;
        Ok(Position::new(unsigned(xmax, "xmax", Position::START)?, 0))
    }

    async fn wait_for_events(&self, after: Position, timeout: Duration) -> Result<bool> {
        let mut signal = self.notifier.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        // The look's interval: the poll interval, or, while events that were notified are
        // not readable yet (an older transaction holds them back, and its end sends no
        // notification), a short one that doubles up to it.
        let mut every = self.poll_interval;
        loop {
            if self.head().await? > after {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            match tokio::time::timeout((deadline - now).min(every), signal.changed()).await {
                Ok(_) => every = HELD_BACK_POLL.min(self.poll_interval),
                // At the deadline, the last look is left to the caller, who reads the log
                // next anyway: an idle reader costs one query less per wait.
                Err(_) if tokio::time::Instant::now() >= deadline => return Ok(false),
                Err(_) => every = (every * 2).min(self.poll_interval),
            }
        }
    }

    async fn count_after(&self, after: Position, limit: u64) -> Result<u64> {
        let count: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT 1 FROM es_events \
                 WHERE (transaction_id, position) > ($1::text::xid8, $2) \
                   AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
                 LIMIT $3) AS readable",
        )
        .bind(signed(after.commit, "position")?)
        .bind(signed(after.sequence, "position")?)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(u64::try_from(count).unwrap_or(0))
    }

    async fn horizon(&self) -> Result<Horizon> {
        horizon::horizon(&self.pool).await
    }

    async fn load_snapshot(&self, stream: &StreamId) -> Result<Option<Snapshot>> {
        let row = sqlx::query(
            "SELECT version, schema_version, state, taken_at FROM es_snapshots WHERE stream_id = $1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(from_sqlx)?;
        row.map(|row| decode_snapshot(&row, stream)).transpose()
    }

    async fn load_snapshot_and_tail(
        &self,
        stream: &StreamId,
        schema_version: u32,
        limit: usize,
    ) -> Result<SnapshotAndTail> {
        self.check_log_order().await?;
        // No snapshot can be stored with a schema version out of an `integer`'s range
        // (`save_snapshot` refuses it), so such a version matches none.
        let schema = i32::try_from(schema_version).unwrap_or(-1);
        let rows = sqlx::query(SNAPSHOT_AND_TAIL)
            .bind(stream.as_str())
            .bind(schema)
            .bind(page_limit(limit)?)
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let mut start = SnapshotAndTail::default();
        for row in &rows {
            // The snapshot's row has no event; it is told by its columns, not its place.
            let position: Option<i64> = row.try_get(5).map_err(from_sqlx)?;
            if position.is_some() {
                start.events.push(decode_replayed_at(row, 4)?);
            } else {
                start.snapshot = Some(decode_snapshot(row, stream)?);
            }
        }
        // In version order as the statement sorts them; the sort only guards against a plan
        // that would hand the two parts of the statement over interleaved.
        if !start.events.is_sorted_by_key(|e| e.stream_version) {
            start.events.sort_by_key(|e| e.stream_version);
        }
        Ok(start)
    }

    async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<()> {
        sqlx::query(
            "INSERT INTO es_snapshots AS s (stream_id, version, schema_version, state, taken_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (stream_id) DO UPDATE SET version = EXCLUDED.version, \
                 schema_version = EXCLUDED.schema_version, state = EXCLUDED.state, \
                 taken_at = EXCLUDED.taken_at \
             WHERE s.version < EXCLUDED.version",
        )
        .bind(snapshot.stream_id.as_str())
        .bind(signed(snapshot.version, "snapshot version")?)
        .bind(i32::try_from(snapshot.schema_version).map_err(|_| {
            Error::InvalidInput(format!(
                "snapshot schema version {} is out of range",
                snapshot.schema_version
            ))
        })?)
        .bind(&snapshot.state)
        .bind(snapshot.taken_at)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }
}

/// `read_stream`'s statement, written once (not at every call).
static READ_STREAM: LazyLock<String> = LazyLock::new(|| stream_statement(STREAM_EVENT_COLUMNS));

/// `replay_stream`'s statement, written once.
static REPLAY_STREAM: LazyLock<String> = LazyLock::new(|| stream_statement(REPLAY_COLUMNS));

/// The statement reading `columns` of a stream's events from a version on (`$2`), in version
/// order, up to a limit (`$3`).
fn stream_statement(columns: &str) -> String {
    format!(
        "SELECT {columns} FROM es_events e \
         WHERE e.stream_id = $1 AND e.stream_version >= $2 \
         ORDER BY e.stream_version LIMIT $3"
    )
}

/// [`stream_statement`] bound to read up to `limit` events of `stream` from `from_version`.
fn stream_query<'q>(
    statement: &'q str,
    stream: &'q StreamId,
    from_version: u64,
    limit: usize,
) -> Result<sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>> {
    Ok(sqlx::query(statement)
        .bind(stream.as_str())
        .bind(signed(from_version, "version")?)
        .bind(page_limit(limit)?))
}

/// The snapshot of a stream (`$1`), if there is one, in a row of its own, and up to `$3`
/// events after it if it was taken with the schema version `$2` (else from the stream's first
/// event) in rows of [`REPLAY_COLUMNS`] from column 4 on. One statement, so both come from
/// one snapshot of the database; the snapshot's row is the one without a position, wherever
/// it comes (and the events are put in version order if they come in another).
const SNAPSHOT_AND_TAIL: &str = "\
WITH s AS MATERIALIZED (
    SELECT version, schema_version, state, taken_at FROM es_snapshots WHERE stream_id = $1
)
SELECT s.version, s.schema_version, s.state, s.taken_at, NULL::xid8 AS commit,
       NULL::int8 AS position, NULL::int8 AS stream_version, NULL::text AS event_type,
       NULL::int4 AS event_schema_version, NULL::jsonb AS payload
FROM s
UNION ALL
(SELECT NULL, NULL, NULL, NULL, e.transaction_id, e.position, e.stream_version, e.event_type,
        e.schema_version, e.payload
 FROM es_events e
 WHERE e.stream_id = $1
   AND e.stream_version > coalesce((SELECT version FROM s WHERE schema_version = $2), 0)
 ORDER BY e.stream_version
 LIMIT $3)";

/// A page size as a SQL `LIMIT`: at least 1.
fn page_limit(limit: usize) -> Result<i64> {
    if limit == 0 {
        return Err(Error::InvalidInput("limit must be at least 1".into()));
    }
    Ok(i64::try_from(limit).unwrap_or(i64::MAX))
}

/// The `LIKE` patterns of the stream ids in `filter`'s categories, from
/// [`StreamId::category_ids`] (a category no stream can be in adds none).
fn category_patterns(filter: &EventFilter) -> Vec<String> {
    let escaped = |s: &str| {
        s.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    };
    filter
        .categories
        .iter()
        .filter_map(|c| StreamId::category_ids(c))
        .flat_map(|(exact, prefix)| [escaped(exact), format!("{}%", escaped(&prefix))])
        .collect()
}
