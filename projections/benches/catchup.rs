//! Projection throughput and latency beside raw PostgreSQL doing the same work, in one run.
//!
//! Run with: cargo bench -p projections -- [--json] [--events N] [--runs N] [--seconds N]
//!
//! - `catchup`: a rebuild of a counter read model (one upsert per event, by stream) over the
//!   whole log, beside `raw_catchup`: the same paged reads and upserts by hand, one
//!   transaction per 1,000 events.
//! - `latency`: append → visible in the read model, under a steady 500 appends/s, p50/p99.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_core::conformance::TestEvent;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent, StreamId,
};
use eventstore_postgres::bench::{median, BenchArgs};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use projections::{
    ApplyError, Documents, DocumentsExt, PgTarget, Projection, ProjectionRunner, RunnerOptions,
    Target,
};
use sqlx::Row;

const STREAMS: usize = 1_000;

struct Options {
    json: bool,
    events: usize,
    runs: usize,
    seconds: u64,
}

fn options() -> Options {
    let args = BenchArgs::from_env();
    Options {
        json: args.flag("--json"),
        events: args.number("--events", 200_000).max(1_000),
        runs: args.number("--runs", 1).max(1),
        seconds: args.number("--seconds", 5).max(1) as u64,
    }
}

/// Counts events per stream: a read and an upsert per event.
struct Counter;

#[async_trait]
impl Projection for Counter {
    fn name(&self) -> &str {
        "bench_counter"
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["bench"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let key = event.stream_id.as_str();
        let count: u64 = docs.load("counts", key).await?.unwrap_or(0);
        docs.save("counts", key, &(count + 1)).await?;
        Ok(())
    }
}

/// `events` events in appends of 20, spread over [`STREAMS`] streams by 8 writers, so that
/// consecutive events of the log belong to different streams.
async fn seed(store: &Arc<PgEventStore>, events: usize) {
    const PER_APPEND: usize = 20;
    const WRITERS: usize = 8;
    let appends = events / PER_APPEND;
    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                for i in (w..appends).step_by(WRITERS) {
                    let batch: Vec<NewEvent> = (0..PER_APPEND)
                        .map(|a| {
                            NewEvent::from_domain(&TestEvent::Added { amount: a as u64 })
                                .expect("encode")
                        })
                        .collect();
                    let stream =
                        StreamId::new(format!("bench-{}", (i * 7919) % STREAMS)).expect("id");
                    store
                        .append(&stream, ExpectedVersion::Any, batch, &Metadata::default())
                        .await
                        .expect("seed");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("seeder");
    }
}

async fn catchup(runner: &ProjectionRunner<PgTarget>) -> f64 {
    let started = Instant::now();
    let report = runner.rebuild(|_| {}).await.expect("rebuild");
    report.applied as f64 / started.elapsed().as_secs_f64()
}

/// The same work by hand: pages of 1,000 by the log order, one transaction per page, an
/// upsert per event.
async fn raw_catchup(pool: &sqlx::PgPool) -> f64 {
    sqlx::query("DROP TABLE IF EXISTS raw_counts")
        .execute(pool)
        .await
        .expect("drop");
    sqlx::query("CREATE TABLE raw_counts (key text PRIMARY KEY, n bigint NOT NULL)")
        .execute(pool)
        .await
        .expect("create");
    let started = Instant::now();
    let (mut after_tx, mut after_pos, mut applied) = (0i64, 0i64, 0usize);
    loop {
        let rows = sqlx::query(
            "SELECT transaction_id::text::bigint AS tx, position, stream_id, payload FROM es_events \
             WHERE (transaction_id, position) > ($1::text::xid8, $2) AND split_part(stream_id, '-', 1) = 'bench' \
             ORDER BY transaction_id, position LIMIT 1000",
        )
        .bind(after_tx.to_string())
        .bind(after_pos)
        .fetch_all(pool)
        .await
        .expect("page");
        if rows.is_empty() {
            break;
        }
        let mut tx = pool.begin().await.expect("begin");
        for row in &rows {
            let stream: String = row.get("stream_id");
            let _payload: serde_json::Value = row.get("payload");
            sqlx::query(
                "INSERT INTO raw_counts (key, n) VALUES ($1, 1) \
                 ON CONFLICT (key) DO UPDATE SET n = raw_counts.n + 1",
            )
            .bind(&stream)
            .execute(&mut *tx)
            .await
            .expect("upsert");
            after_tx = row.get("tx");
            after_pos = row.get("position");
        }
        tx.commit().await.expect("commit");
        applied += rows.len();
    }
    applied as f64 / started.elapsed().as_secs_f64()
}

/// Appends at 500/s for `seconds` while a live runner follows; returns (p50, p99) in ms from
/// the append's return to the read model's checkpoint passing it.
async fn latency(store: Arc<PgEventStore>, target: PgTarget, seconds: u64) -> (f64, f64) {
    let runner = ProjectionRunner::new(store.clone(), target.clone(), Arc::new(Counter))
        .with_options(RunnerOptions {
            idle_wait: Duration::from_millis(500),
            ..RunnerOptions::default()
        });
    runner.run_until_caught_up().await.expect("caught up");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let live = tokio::spawn(async move {
        runner
            .run(async {
                let _ = stopped.await;
            })
            .await
    });

    let (sent_tx, mut sent_rx) = tokio::sync::mpsc::unbounded_channel::<(Position, Instant)>();
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(2));
            let until = Instant::now() + Duration::from_secs(seconds);
            let mut i = 0usize;
            while Instant::now() < until {
                tick.tick().await;
                let stream = StreamId::new(format!("bench-{}", i % STREAMS)).expect("id");
                let event = NewEvent::from_domain(&TestEvent::Added { amount: 1 }).expect("encode");
                let written = store
                    .append(
                        &stream,
                        ExpectedVersion::Any,
                        vec![event],
                        &Metadata::default(),
                    )
                    .await
                    .expect("append");
                let _ = sent_tx.send((written.positions[0], Instant::now()));
                i += 1;
            }
        })
    };

    let mut pending: Vec<(Position, Instant)> = Vec::new();
    let mut samples = Vec::new();
    let mut writer_done = false;
    loop {
        while let Ok(sent) = sent_rx.try_recv() {
            pending.push(sent);
        }
        writer_done = writer_done || writer.is_finished();
        let generation = target
            .register("bench_counter", 1)
            .await
            .expect("state")
            .active_generation;
        let checkpoint = target
            .checkpoint("bench_counter", generation)
            .await
            .expect("checkpoint")
            .map_or(Position::START, |c| c.position);
        let now = Instant::now();
        pending.retain(|(position, at)| {
            if *position <= checkpoint {
                samples.push(now.duration_since(*at).as_secs_f64() * 1_000.0);
                false
            } else {
                true
            }
        });
        if writer_done && pending.is_empty() && sent_rx.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let _ = stop.send(());
    live.await.expect("runner").expect("clean stop");
    samples.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    (pick(0.50), pick(0.99))
}

#[tokio::main]
async fn main() {
    let options = options();
    let db = TestDatabase::create(16).await;
    let store = Arc::new(PgEventStore::new(db.pool.clone()));
    store.migrate().await.expect("migrate store");
    let target = PgTarget::new(db.pool.clone());
    target.migrate().await.expect("migrate target");
    seed(&store, options.events).await;
    sqlx::query("ANALYZE")
        .execute(&db.pool)
        .await
        .expect("analyze");

    let runner = ProjectionRunner::new(store.clone(), target.clone(), Arc::new(Counter));
    let (mut ours, mut raw, mut p50s, mut p99s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.runs {
        raw.push(raw_catchup(&db.pool).await);
        ours.push(catchup(&runner).await);
        let (p50, p99) = latency(store.clone(), target.clone(), options.seconds).await;
        p50s.push(p50);
        p99s.push(p99);
    }
    let (ours, raw, p50, p99) = (median(ours), median(raw), median(p50s), median(p99s));
    if options.json {
        println!("{{\"name\":\"raw_catchup\",\"events_per_sec\":{raw:.1}}}");
        println!("{{\"name\":\"catchup\",\"events_per_sec\":{ours:.1}}}");
        println!(
            "{{\"name\":\"catchup_vs_raw_catchup\",\"ratio\":{:.3}}}",
            ours / raw
        );
        println!("{{\"name\":\"latency_p50\",\"ms\":{p50:.2}}}");
        println!("{{\"name\":\"latency_p99\",\"ms\":{p99:.2}}}");
    } else {
        println!(
            "{:<14} {:>14} {:<10} {:<12} {:>7}",
            "figure", "value", "unit", "vs", "ratio"
        );
        println!("{:<14} {:>14.1} {:<10}", "raw_catchup", raw, "events/s");
        println!(
            "{:<14} {:>14.1} {:<10} {:<12} {:>7.3}",
            "catchup",
            ours,
            "events/s",
            "raw_catchup",
            ours / raw
        );
        println!("{:<14} {:>14.2} {:<10}", "latency_p50", p50, "ms");
        println!("{:<14} {:>14.2} {:<10}", "latency_p99", p99, "ms");
        println!(
            "({} events, median of {} run(s), latency at 500 appends/s for {} s)",
            options.events, options.runs, options.seconds
        );
    }
    db.drop_database().await;
}
