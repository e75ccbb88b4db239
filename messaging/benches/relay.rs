//! The relay beside the same broker client publishing the same messages directly, and the
//! time from an append's commit to the consumer's handler, on each broker that is reachable.
//!
//! Run with: cargo bench -p messaging -- [--json] [--events N] [--runs N]
//!
//! - `direct_<broker>`: the relay's own publisher sends N CloudEvents (about 200 bytes of
//!   data each) in pages of 500 with every confirm awaited, as the relay does — no log read,
//!   no checkpoint.
//! - `relay_<broker>`: the relay publishes the same N events from the PostgreSQL log, from
//!   its checkpoint to the head; its ratio to `direct_<broker>` is what reading the log and
//!   keeping the checkpoint cost.
//! - `e2e_p50_<broker>`, `e2e_p99_<broker>`: events appended at 1,000 per second for five
//!   seconds while the relay and a consumer (with its PostgreSQL inbox) run; the time from
//!   the event's commit (its `time`) to its handler.
//!
//! With `--runs N` each figure is the median of N runs. `--json` prints one JSON object per
//! line: `{"name":"relay_nats","events_per_sec":5210.4}`, `{"name":"e2e_p99_nats","ms":41.2}`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RawEvent, StreamId,
};
use eventstore_postgres::bench::{median, BenchArgs};
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use messaging::{
    Broker, CloudEvent, Consumer, ConsumerOptions, InboxTx, MessageHandler, PgInbox, Relay,
};
use projections::{ApplyError, PgTarget, RunnerOptions};

const BROKERS: [(&str, &str, &str); 3] = [
    (
        "rabbitmq",
        "RABBITMQ_URL",
        "amqp://guest:guest@127.0.0.1:5672/%2f",
    ),
    ("nats", "NATS_URL", "nats://127.0.0.1:4222"),
    ("kafka", "KAFKA_URL", "kafka://127.0.0.1:9092"),
];

fn namespace() -> String {
    format!("b{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

fn tick(n: usize) -> NewEvent {
    NewEvent {
        event_id: uuid::Uuid::new_v4(),
        data: RawEvent {
            event_type: "Ticked".into(),
            schema_version: 1,
            payload: serde_json::json!({ "n": n, "note": "x".repeat(180) }),
        },
    }
}

/// Appends `events` events over 100 streams, 10 per append.
async fn fill(store: &Arc<dyn EventStore>, events: usize) {
    for chunk in 0..events.div_ceil(10) {
        let stream = StreamId::new(format!("tick-{}", chunk % 100)).expect("stream");
        let batch = (0..10).map(|i| tick(chunk * 10 + i)).collect();
        store
            .append(
                &stream,
                ExpectedVersion::Any,
                batch,
                &Metadata::new_request(),
            )
            .await
            .expect("append");
    }
}

fn relay(
    name: &str,
    broker: &Arc<dyn messaging::Publisher>,
    store: &Arc<dyn EventStore>,
    pool: &sqlx::PgPool,
) -> projections::ProjectionRunner<PgTarget> {
    Relay::new(name, "urn:bench", Arc::clone(broker))
        .with_filter(EventFilter::all().categories(["tick"]))
        .runner(Arc::clone(store), PgTarget::new(pool.clone()))
        .with_options(RunnerOptions {
            idle_wait: Duration::from_millis(100),
            ..Relay::options()
        })
}

/// A fresh database with the event store's and the projections' tables, and its store.
async fn log_database(connections: u32) -> (TestDatabase, Arc<dyn EventStore>) {
    let db = TestDatabase::create(connections).await;
    let store = PgEventStore::new(db.pool.clone());
    store.migrate().await.expect("migrate");
    PgTarget::new(db.pool.clone())
        .migrate()
        .await
        .expect("migrate");
    (db, Arc::new(store))
}

/// Events per second: the publisher alone, then the relay, over the same events.
async fn throughput(broker: &Arc<dyn Broker>, events: usize) -> (f64, f64) {
    let (db, store) = log_database(8).await;
    fill(&store, events).await;
    let logged = store
        .read_all(Position::START, events + 10, &EventFilter::all())
        .await
        .expect("read")
        .events;
    let wire: Vec<CloudEvent> = logged
        .iter()
        .map(|e| CloudEvent::from_recorded(e, "urn:bench"))
        .collect();
    let publisher = broker.publisher().await.expect("publisher");
    // Warm up the connection.
    publisher.publish(&wire[..10]).await.expect("publish");

    let started = Instant::now();
    for page in wire.chunks(messaging::relay::DEFAULT_PAGE) {
        publisher.publish(page).await.expect("publish");
    }
    let direct = wire.len() as f64 / started.elapsed().as_secs_f64();

    let runner = relay("relay_bench", &publisher, &store, &db.pool);
    let started = Instant::now();
    runner.run_until_caught_up().await.expect("relay");
    let relayed = logged.len() as f64 / started.elapsed().as_secs_f64();
    db.drop_database().await;
    (direct, relayed)
}

struct Latencies {
    name: String,
    millis: Mutex<Vec<f64>>,
}

#[async_trait]
impl MessageHandler for Latencies {
    fn name(&self) -> &str {
        &self.name
    }

    async fn handle(&self, _tx: &mut dyn InboxTx, event: &CloudEvent) -> Result<(), ApplyError> {
        let ms = (chrono::Utc::now() - event.time)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1e3;
        self.millis
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ms);
        Ok(())
    }
}

/// p50 and p99 from commit to handler, at 1,000 events/s for 5 s.
async fn latency(broker: &Arc<dyn Broker>, consumer_name: &str) -> (f64, f64) {
    let (db, store) = log_database(16).await;
    let inbox_db = TestDatabase::create(8).await;
    let inbox = PgInbox::new(inbox_db.pool.clone());
    inbox.migrate().await.expect("inbox");
    let handler = Arc::new(Latencies {
        name: consumer_name.to_owned(),
        millis: Mutex::new(Vec::new()),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until = |mut s: tokio::sync::watch::Receiver<bool>| async move {
        let _ = s.wait_for(|v| *v).await;
    };
    let runner = relay(
        "relay_latency",
        &broker.publisher().await.expect("publisher"),
        &store,
        &db.pool,
    );
    let relay_task = tokio::spawn({
        let stop = until(stopped.clone());
        async move { runner.run(stop).await }
    });
    let consumer =
        Consumer::new(Arc::clone(broker), inbox, handler.clone()).with_options(ConsumerOptions {
            idle_wait: Duration::from_millis(100),
            ..ConsumerOptions::default()
        });
    let consumer_task = tokio::spawn({
        let stop = until(stopped.clone());
        async move { consumer.run(stop).await }
    });
    // Let both start (queue declared, lease taken), then 1,000 events/s for 5 s: 4 writers
    // of 250 appends per second each.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let total = 5_000;
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut every = tokio::time::interval(Duration::from_millis(4));
                for n in 0..total / 4 {
                    every.tick().await;
                    let stream =
                        StreamId::new(format!("tick-{}", (n * 4 + w) % 200)).expect("stream");
                    store
                        .append(
                            &stream,
                            ExpectedVersion::Any,
                            vec![tick(n)],
                            &Metadata::new_request(),
                        )
                        .await
                        .expect("append");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while handler
        .millis
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .len()
        < total
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send_replace(true);
    let _ = relay_task.await;
    let _ = consumer_task.await;
    let mut millis = handler
        .millis
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    millis.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        millis
            .get(((millis.len() as f64 * q) as usize).min(millis.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    db.drop_database().await;
    inbox_db.drop_database().await;
    (at(0.50), at(0.99))
}

#[tokio::main]
async fn main() {
    let args = BenchArgs::from_env();
    let json = args.flag("--json");
    let events = args.number("--events", 20_000).max(100);
    let runs = args.number("--runs", 1).max(1);
    let mut figures: Vec<(String, f64, &str)> = Vec::new();
    for (kind, var, default) in BROKERS {
        let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        if !messaging::connect::is_reachable(&url) {
            eprintln!("{kind}: not reachable at {url}; skipped");
            continue;
        }
        let (mut direct, mut relayed, mut p50, mut p99) = (vec![], vec![], vec![], vec![]);
        for _ in 0..runs {
            let ns = namespace();
            let broker = messaging::broker_from_url(&url, &ns).expect("broker");
            let rabbit = messaging::RabbitMq::new(&url).with_exchange(&ns);
            if kind == "rabbitmq" {
                // A queue for the messages to go to (RabbitMQ returns unroutable ones).
                rabbit.declare_queue(&ns, &[]).await.expect("queue");
            }
            let (d, r) = throughput(&broker, events).await;
            if kind == "rabbitmq" {
                let _ = rabbit.delete_queue(&ns).await;
                let _ = rabbit.delete_exchange().await;
            }
            direct.push(d);
            relayed.push(r);
            let ns = namespace();
            let broker = messaging::broker_from_url(&url, &ns).expect("broker");
            let (a, b) = latency(&broker, &ns).await;
            p50.push(a);
            p99.push(b);
            if kind == "rabbitmq" {
                let rabbit = messaging::RabbitMq::new(&url).with_exchange(&ns);
                let _ = rabbit.delete_queue(&ns).await;
                let _ = rabbit.delete_exchange().await;
            }
        }
        figures.push((format!("direct_{kind}"), median(direct), "events/s"));
        figures.push((format!("relay_{kind}"), median(relayed), "events/s"));
        figures.push((format!("e2e_p50_{kind}"), median(p50), "ms"));
        figures.push((format!("e2e_p99_{kind}"), median(p99), "ms"));
    }
    let value = |name: &str| {
        figures
            .iter()
            .find(|f| f.0 == name)
            .map_or(f64::NAN, |f| f.1)
    };
    if json {
        for (name, v, unit) in &figures {
            let key = if *unit == "ms" {
                "ms"
            } else {
                "events_per_sec"
            };
            println!("{{\"name\":\"{name}\",\"{key}\":{v:.1}}}");
            if let Some(kind) = name.strip_prefix("relay_") {
                println!(
                    "{{\"name\":\"relay_vs_direct_{kind}\",\"ratio\":{:.3}}}",
                    v / value(&format!("direct_{kind}"))
                );
            }
        }
    } else {
        println!(
            "{:<18} {:>12} {:<9} {:>7}",
            "figure", "value", "unit", "ratio"
        );
        for (name, v, unit) in &figures {
            match name.strip_prefix("relay_") {
                Some(kind) => println!(
                    "{name:<18} {v:>12.1} {unit:<9} {:>7.3}",
                    v / value(&format!("direct_{kind}"))
                ),
                None => println!("{name:<18} {v:>12.1} {unit:<9}"),
            }
        }
        println!("({events} events per throughput run; median of {runs} run(s))");
    }
}
