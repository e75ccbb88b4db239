//! The event store's throughput beside raw PostgreSQL doing the same work, in one run.
//!
//! Run with: cargo bench -p eventstore-postgres -- [--json] [--scale N] [--runs N]
//! [--only 1x1,16x1,batch,scan,load]
//!
//! Every toolkit figure has a raw twin measured on the same database with the same row
//! shape (a table with the same columns and unique indexes), and is printed with its ratio
//! to that twin. Events carry about 200 bytes of JSON; readers decode them to the domain
//! event (`read_all` and `raw_scan` by pages of 1,000; `read_tail` and `raw_tail` by pages
//! of 10 through a filter on the event type, as a projection following the log reads it;
//! `load_1000` and `raw_load_1000`, a `SELECT` of the same stream's rows). The writers
//! (`1x1`, `16x1`, `batch`) take turns with their raw twins, up to ten turns a side, so that
//! a slow moment of the machine (a checkpoint, a neighbour's disk) falls on both. With
//! `--runs N` each figure is the median of N runs. `--json` prints one JSON object per
//! line: `{"name":"append_16x1","events_per_sec":5210.4}`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::conformance::{Counter, TestEvent};
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, Repository,
    SnapshotPolicy, StreamId,
};
use eventstore_postgres::bench::{median, BenchArgs};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use sqlx::{PgPool, Row};
use uuid::Uuid;

struct Options {
    json: bool,
    scale: usize,
    runs: usize,
    /// The workloads to run (`--only 1x1,scan`); all when empty.
    only: Vec<String>,
}

impl Options {
    fn runs(&self, workload: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|w| w == workload)
    }
}

/// The workloads, by the names `--only` takes.
const WORKLOADS: &[&str] = &["1x1", "16x1", "batch", "scan", "load"];

fn options() -> Options {
    let args = BenchArgs::from_env();
    Options {
        json: args.flag("--json"),
        scale: args.number("--scale", 1).max(1),
        runs: args.number("--runs", 1).max(1),
        only: args
            .value("--only")
            .map(|list| list.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    }
}

#[derive(Clone, Copy)]
enum Unit {
    EventsPerSec,
    Ms,
}

struct Figure {
    name: &'static str,
    value: f64,
    unit: Unit,
}

const RAW_TABLE: &str = "CREATE TABLE raw_events (
    position bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id uuid NOT NULL UNIQUE,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL,
    event_type text NOT NULL,
    schema_version integer NOT NULL,
    payload jsonb NOT NULL,
    metadata jsonb NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (stream_id, stream_version))";

/// An event of about 200 bytes of JSON, like a typical domain event.
fn event() -> NewEvent {
    let text: String = std::iter::repeat_with(fastrand::alphanumeric)
        .take(EVENT_TEXT_LEN)
        .collect();
    NewEvent::from_domain(&TestEvent::Noted { text }).expect("encode")
}

/// The length of the text in [`event`]'s payload: about 200 bytes of JSON in all.
const EVENT_TEXT_LEN: usize = 190;

/// Decodes a stored payload as the domain event, as a reader of the log would.
fn decode(event_type: &str, payload: serde_json::Value) -> TestEvent {
    use cqrs_core::DomainEvent;
    TestEvent::decode(event_type, payload).expect("decode")
}

fn stream(name: String) -> StreamId {
    StreamId::new(name).expect("stream id")
}

fn rate(events: usize, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

async fn raw_insert(
    pool: &PgPool,
    stream: &str,
    version: i64,
    events: &[NewEvent],
    metadata: &serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         SELECT e.id, $2, $3 + e.n, e.t, e.v, e.p, $7 \
         FROM unnest($1::uuid[], $4::text[], $5::int4[], $6::jsonb[]) WITH ORDINALITY AS e(id, t, v, p, n)",
    )
    .bind(events.iter().map(|e| e.event_id).collect::<Vec<_>>())
    .bind(stream)
    .bind(version)
    .bind(events.iter().map(|e| e.data.event_type.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.data.schema_version as i32).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.data.payload.clone()).collect::<Vec<_>>())
    .bind(metadata)
    .execute(pool)
    .await
    .expect("raw insert");
}

async fn raw_insert_one(
    pool: &PgPool,
    stream: &str,
    event: &NewEvent,
    metadata: &serde_json::Value,
) {
    sqlx::query(
        "INSERT INTO raw_events (event_id, stream_id, stream_version, event_type, schema_version, payload, metadata) \
         VALUES ($1, $2, 1, $3, $4, $5, $6)",
    )
    .bind(event.event_id)
    .bind(stream)
    .bind(&event.data.event_type)
    .bind(event.data.schema_version as i32)
    .bind(&event.data.payload)
    .bind(metadata)
    .execute(pool)
    .await
    .expect("raw insert");
}

/// `writers` tasks each append `per_writer` single events to streams of their own; the
/// time taken.
async fn append_singles(store: &PgEventStore, writers: usize, per_writer: usize) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let run = Uuid::new_v4().simple().to_string();
                for i in 0..per_writer {
                    store
                        .append(
                            &stream(format!("single-{run}{w}x{i}")),
                            ExpectedVersion::NoStream,
                            vec![event()],
                            &Metadata::default(),
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    started.elapsed()
}

/// The raw twin of [`append_singles`]: autocommit single-row inserts; the time taken.
async fn raw_singles(pool: &PgPool, writers: usize, per_writer: usize) -> Duration {
    let metadata = serde_json::to_value(Metadata::default()).expect("metadata");
    let started = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let pool = pool.clone();
            let metadata = metadata.clone();
            tokio::spawn(async move {
                let run = Uuid::new_v4().simple().to_string();
                for i in 0..per_writer {
                    raw_insert_one(&pool, &format!("single-{run}{w}x{i}"), &event(), &metadata)
                        .await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    started.elapsed()
}

/// Runs `raw` and `ours` in `turns` turns each, each side first in every other turn (raw
/// then store, store then raw, …), so that a slow moment of the machine (a checkpoint, a
/// neighbour's disk) falls on both sides: the time each side took in all, `(raw, store)`.
async fn in_turn<R, O>(
    turns: usize,
    mut raw: impl FnMut() -> R,
    mut ours: impl FnMut() -> O,
) -> (Duration, Duration)
where
    R: std::future::Future<Output = Duration>,
    O: std::future::Future<Output = Duration>,
{
    let (mut raw_time, mut our_time) = (Duration::ZERO, Duration::ZERO);
    for turn in 0..turns {
        if turn % 2 == 0 {
            raw_time += raw().await;
            our_time += ours().await;
        } else {
            our_time += ours().await;
            raw_time += raw().await;
        }
    }
    (raw_time, our_time)
}

/// Single-event writes, raw and through the store, in up to [`MAX_SLICES`] turns each (see
/// [`in_turn`]): the events per second of each side, `(raw, store)`.
async fn singles_in_turn(
    store: &PgEventStore,
    pool: &PgPool,
    writers: usize,
    per_writer: usize,
) -> (f64, f64) {
    let slices = (per_writer / MIN_SLICE).clamp(1, MAX_SLICES);
    let per_slice = per_writer.div_ceil(slices);
    let (raw, ours) = in_turn(
        slices,
        || raw_singles(pool, writers, per_slice),
        || append_singles(store, writers, per_slice),
    )
    .await;
    let events = writers * per_slice * slices;
    (rate(events, raw), rate(events, ours))
}

/// The most turns [`singles_in_turn`] and [`batches_in_turn`] take.
const MAX_SLICES: usize = 10;

/// The fewest writes per writer in one turn of [`singles_in_turn`]: shorter turns would be
/// mostly their start and their end, where fewer writers are still writing.
const MIN_SLICE: usize = 50;

/// Appends of `size` events to new streams, raw and through the store, in up to
/// [`MAX_SLICES`] turns of at least two appends each (see [`in_turn`]): the events per
/// second of each side, `(raw, store)`.
async fn batches_in_turn(
    store: &PgEventStore,
    pool: &PgPool,
    batches: usize,
    size: usize,
) -> (f64, f64) {
    let slices = (batches / 2).clamp(1, MAX_SLICES);
    let per_slice = batches.div_ceil(slices);
    let (raw, ours) = in_turn(
        slices,
        || raw_batches(pool, per_slice, size),
        || append_batches(store, per_slice, size),
    )
    .await;
    let events = per_slice * slices * size;
    (rate(events, raw), rate(events, ours))
}

/// `batches` appends of `size` events to new streams through the store; the time taken.
async fn append_batches(store: &PgEventStore, batches: usize, size: usize) -> Duration {
    let prepared: Vec<Vec<NewEvent>> = (0..batches)
        .map(|_| (0..size).map(|_| event()).collect())
        .collect();
    let run = Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    for (b, batch) in prepared.into_iter().enumerate() {
        store
            .append(
                &stream(format!("batch-{run}x{b}")),
                ExpectedVersion::NoStream,
                batch,
                &Metadata::default(),
            )
            .await
            .expect("append batch");
    }
    started.elapsed()
}

/// The raw twin of [`append_batches`]: one `INSERT … SELECT FROM unnest(…)` per batch; the
/// time taken.
async fn raw_batches(pool: &PgPool, batches: usize, size: usize) -> Duration {
    let prepared: Vec<Vec<NewEvent>> = (0..batches)
        .map(|_| (0..size).map(|_| event()).collect())
        .collect();
    let metadata = serde_json::to_value(Metadata::default()).expect("metadata");
    let run = Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    for (b, batch) in prepared.iter().enumerate() {
        raw_insert(pool, &format!("batch-{run}x{b}"), 0, batch, &metadata).await;
    }
    started.elapsed()
}

/// How a reader walks the log: by pages of `page` events, of every type or only of the
/// bench's one event type (the filter then matches every event, so that both walks read the
/// same rows: what it measures is a filtered page's cost), up to `up_to` events.
#[derive(Clone, Copy)]
struct Walk {
    page: usize,
    filtered: bool,
    up_to: usize,
}

/// The whole log by pages of 1,000, unfiltered.
const SCAN: Walk = Walk {
    page: 1_000,
    filtered: false,
    up_to: usize::MAX,
};

/// A projection following the log: pages of 10 through a filter on the event type, where a
/// page's fixed cost (its planning, its round trip) shows.
const TAIL: Walk = Walk {
    page: 10,
    filtered: true,
    up_to: 20_000,
};

/// The event type of [`event`], the one `TAIL` filters on.
const EVENT_TYPE: &str = "Noted";

/// The log walked through the store, each event decoded to the domain event.
async fn read_all(store: &PgEventStore, walk: Walk) -> f64 {
    let filter = if walk.filtered {
        EventFilter::all().event_types([EVENT_TYPE])
    } else {
        EventFilter::all()
    };
    let started = Instant::now();
    let mut after = Position::START;
    let mut count = 0;
    while count < walk.up_to {
        let page = store
            .read_all(after, walk.page, &filter)
            .await
            .expect("read_all");
        if page.events.is_empty() {
            break;
        }
        count += page.events.len();
        for recorded in page.events {
            std::hint::black_box(decode(&recorded.event.event_type, recorded.event.payload));
        }
        after = page.scanned_to;
    }
    rate(count, started.elapsed())
}

/// The same walk by hand: keyset on the position, rows decoded into owned values.
async fn raw_scan(pool: &PgPool, walk: Walk) -> f64 {
    let statement = format!(
        "SELECT position, event_id, stream_id, stream_version, event_type, schema_version, payload, metadata, recorded_at \
         FROM raw_events WHERE position > $1 {} ORDER BY position LIMIT {}",
        if walk.filtered { "AND event_type = ANY($2)" } else { "" },
        walk.page
    );
    let types = [EVENT_TYPE];
    let started = Instant::now();
    let mut after = 0i64;
    let mut count = 0;
    while count < walk.up_to {
        let mut query = sqlx::query(&statement).bind(after);
        if walk.filtered {
            query = query.bind(&types[..]);
        }
        let rows = query.fetch_all(pool).await.expect("scan");
        if rows.is_empty() {
            break;
        }
        for row in &rows {
            let _: Uuid = row.get("event_id");
            let _: String = row.get("stream_id");
            let _: i64 = row.get("stream_version");
            let event_type: String = row.get("event_type");
            let _: i32 = row.get("schema_version");
            let payload: serde_json::Value = row.get("payload");
            std::hint::black_box(decode(&event_type, payload));
            let _: serde_json::Value = row.get("metadata");
            let _: chrono::DateTime<chrono::Utc> = row.get("recorded_at");
            after = row.get("position");
        }
        count += rows.len();
    }
    rate(count, started.elapsed())
}

/// A new counter aggregate of 1,000 events (appends of 100): its id and stream.
async fn seed_1000(store: &Arc<dyn EventStore>) -> (String, StreamId) {
    let id = Uuid::new_v4().simple().to_string();
    let stream = Repository::<Counter>::stream_id(&id).expect("id");
    for version in (0..1_000).step_by(100) {
        let batch: Vec<NewEvent> = (0..100).map(|_| event()).collect();
        store
            .append(
                &stream,
                ExpectedVersion::Exact(version),
                batch,
                &Metadata::default(),
            )
            .await
            .expect("append");
    }
    (id, stream)
}

/// The milliseconds to load a 1,000-event aggregate, median of [`LOAD_ROUNDS`] rounds, three
/// ways taken in turn within each round (so that a slow moment of the machine falls on all
/// three): by hand (one `SELECT` of the stream's rows in version order, each payload decoded
/// to the domain event and folded), through the repository, and through the repository
/// from a snapshot at version 1,000.
struct Loads {
    raw: f64,
    repository: f64,
    snapshot: f64,
}

/// Rounds of [`loads_1000`].
const LOAD_ROUNDS: usize = 31;

async fn loads_1000(store: Arc<dyn EventStore>, pool: &PgPool) -> Loads {
    let plain = Repository::<Counter>::new(Arc::clone(&store), ());
    let snapshots = Repository::<Counter>::new(Arc::clone(&store), ())
        .with_snapshots(SnapshotPolicy::EveryNEvents(100));
    let (id, stream) = seed_1000(&store).await;
    // The snapshot the repository would have taken at version 1,000.
    let state = plain.load(&id).await.expect("load").state;
    store
        .save_snapshot(&cqrs_core::Snapshot {
            stream_id: stream.clone(),
            version: 1_000,
            schema_version: 1,
            state: serde_json::to_value(state).expect("state"),
            taken_at: chrono::Utc::now(),
        })
        .await
        .expect("snapshot");
    let (mut raw, mut repository, mut snapshot) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..LOAD_ROUNDS {
        let started = Instant::now();
        let counter = raw_load(pool, &stream).await;
        raw.push(started.elapsed().as_secs_f64() * 1_000.0);
        assert_eq!(counter.applied, 1_000);
        for (repo, times) in [(&plain, &mut repository), (&snapshots, &mut snapshot)] {
            let started = Instant::now();
            let loaded = repo.load(&id).await.expect("load");
            times.push(started.elapsed().as_secs_f64() * 1_000.0);
            assert_eq!(loaded.state.applied, 1_000);
        }
    }
    Loads {
        raw: median(raw),
        repository: median(repository),
        snapshot: median(snapshot),
    }
}

/// The load by hand: one `SELECT` of the stream's rows in version order, each payload
/// decoded to the domain event and folded.
async fn raw_load(pool: &PgPool, stream: &StreamId) -> Counter {
    let rows = sqlx::query(
        "SELECT event_id, stream_version, event_type, schema_version, payload, metadata, \
                recorded_at FROM es_events WHERE stream_id = $1 ORDER BY stream_version",
    )
    .bind(stream.as_str())
    .fetch_all(pool)
    .await
    .expect("load");
    let mut counter = Counter::default();
    for row in &rows {
        let _: Uuid = row.get("event_id");
        let _: i64 = row.get("stream_version");
        let event_type: String = row.get("event_type");
        let _: i32 = row.get("schema_version");
        let _: serde_json::Value = row.get("metadata");
        let _: chrono::DateTime<chrono::Utc> = row.get("recorded_at");
        let event = decode(&event_type, row.get("payload"));
        cqrs_core::Aggregate::apply(&mut counter, &event);
    }
    counter
}

async fn run_once(store: &PgEventStore, pool: &PgPool, options: &Options) -> Vec<Figure> {
    let scale = options.scale;
    let mut figures = Vec::new();
    let mut push = |name, value, unit| figures.push(Figure { name, value, unit });
    use Unit::*;
    // Each pair runs raw first, then the toolkit, on the same database (the writes in turns,
    // each side first in every other one: see `in_turn`).
    if options.runs("1x1") {
        let (raw, ours) = singles_in_turn(store, pool, 1, 500 * scale).await;
        push("raw_1x1", raw, EventsPerSec);
        push("append_1x1", ours, EventsPerSec);
    }
    if options.runs("16x1") {
        let (raw, ours) = singles_in_turn(store, pool, 16, 150 * scale).await;
        push("raw_16x1", raw, EventsPerSec);
        push("append_16x1", ours, EventsPerSec);
    }
    if options.runs("batch") {
        let (raw, ours) = batches_in_turn(store, pool, 20 * scale, 1_000).await;
        push("raw_batch", raw, EventsPerSec);
        push("append_batch", ours, EventsPerSec);
    }
    if options.runs("scan") {
        // The same events in both logs, whichever workloads ran before.
        let _ = raw_batches(pool, 10 * scale, 1_000).await;
        let _ = append_batches(store, 10 * scale, 1_000).await;
        push("raw_scan", raw_scan(pool, SCAN).await, EventsPerSec);
        push("read_all", read_all(store, SCAN).await, EventsPerSec);
        push("raw_tail", raw_scan(pool, TAIL).await, EventsPerSec);
        push("read_tail", read_all(store, TAIL).await, EventsPerSec);
    }
    if options.runs("load") {
        let loads = loads_1000(Arc::new(store.clone()), pool).await;
        push("raw_load_1000", loads.raw, Ms);
        push("load_1000", loads.repository, Ms);
        push("load_1000_snapshot", loads.snapshot, Ms);
    }
    figures
}

/// Each toolkit figure and the twin it is compared with.
const PAIRS: &[(&str, &str)] = &[
    ("append_1x1", "raw_1x1"),
    ("append_16x1", "raw_16x1"),
    ("append_batch", "raw_batch"),
    ("read_all", "raw_scan"),
    ("read_tail", "raw_tail"),
    ("load_1000", "raw_load_1000"),
    ("load_1000_snapshot", "load_1000"),
];

#[tokio::main]
async fn main() {
    let options = options();
    if let Some(unknown) = options
        .only
        .iter()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        eprintln!(
            "unknown workload {unknown:?}; --only takes {}",
            WORKLOADS.join(",")
        );
        std::process::exit(2);
    }
    let db = TestDatabase::create(20).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    sqlx::query(RAW_TABLE)
        .execute(&db.pool)
        .await
        .expect("raw table");

    // Warm up connections (as many as the most writers) and plans.
    let _ = append_singles(&store, 16, 20).await;
    let _ = raw_singles(&db.pool, 16, 20).await;

    let mut runs = Vec::new();
    for _ in 0..options.runs {
        runs.push(run_once(&store, &db.pool, &options).await);
    }
    let figures: Vec<Figure> = runs[0]
        .iter()
        .enumerate()
        .map(|(i, f)| Figure {
            name: f.name,
            value: median(runs.iter().map(|r| r[i].value).collect()),
            unit: f.unit,
        })
        .collect();
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.value)
            .unwrap_or(f64::NAN)
    };

    if options.json {
        for f in &figures {
            // Milliseconds to the microsecond: a load from a snapshot takes well under one.
            let (key, digits) = match f.unit {
                Unit::EventsPerSec => ("events_per_sec", 1),
                Unit::Ms => ("ms", 3),
            };
            println!("{{\"name\":\"{}\",\"{key}\":{:.digits$}}}", f.name, f.value);
        }
        for (ours, raw) in PAIRS.iter().filter(|(ours, _)| !value(ours).is_nan()) {
            println!(
                "{{\"name\":\"{ours}_vs_{raw}\",\"ratio\":{:.3}}}",
                value(ours) / value(raw)
            );
        }
    } else {
        println!(
            "{:<20} {:>14} {:<10} {:<12} {:>7}",
            "figure", "value", "unit", "vs", "ratio"
        );
        for f in &figures {
            let unit = match f.unit {
                Unit::EventsPerSec => "events/s",
                Unit::Ms => "ms",
            };
            match PAIRS.iter().find(|(ours, _)| *ours == f.name) {
                Some((_, raw)) => println!(
                    "{:<20} {:>14.1} {:<10} {:<12} {:>7.3}",
                    f.name,
                    f.value,
                    unit,
                    raw,
                    f.value / value(raw)
                ),
                None => println!("{:<20} {:>14.1} {:<10}", f.name, f.value, unit),
            }
        }
        println!(
            "(median of {} run(s), scale {})",
            options.runs, options.scale
        );
    }
    db.drop_database().await;
}
