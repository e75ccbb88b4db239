//! The relay and the consumer, each a process of its own, killed with SIGKILL again and
//! again at random moments while events are appended, on each broker: every event's effect
//! is applied exactly once at the consumer, in stream order, nothing lost, and the broker's
//! own counts agree (queue drained; JetStream kept one copy of each; Kafka read to its end).
//!
//! `MESSAGING_KILL_EVENTS` (default 4,000), `MESSAGING_KILL_STREAMS` (default 200) and
//! `MESSAGING_KILLS` (kills of each process, default 8) scale it; the acceptance run is
//! `MESSAGING_KILL_EVENTS=10000 MESSAGING_KILL_STREAMS=500 MESSAGING_KILLS=20`.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::EventStore;
use eventstore_postgres::testing::TestDatabase;
use messaging::{Inbox, PgInbox};
use tests::messaging::{
    append_ticks, create_effects_table, unique_namespace, wait_for_effects, BrokerKind,
};
use tests::KilledOnDrop;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn start(bin: &str, db: &str, broker: &str, namespace: &str) -> KilledOnDrop {
    let child = Command::new(bin)
        .args([db, broker, namespace])
        .env("LEASE_TTL_MS", "1500")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a worker process");
    KilledOnDrop(child)
}

async fn killed_again_and_again(kind: BrokerKind) {
    let Some(url) = kind.url() else { return };
    let events = env_or("MESSAGING_KILL_EVENTS", 4_000);
    let streams = env_or("MESSAGING_KILL_STREAMS", 200).max(1);
    let kills = env_or("MESSAGING_KILLS", 8);
    let per_stream = events.div_ceil(streams);
    let expected = (per_stream * streams) as i64;

    let namespace = unique_namespace();
    let shop = TestDatabase::create(8).await;
    let warehouse = TestDatabase::create(8).await;
    let (store, _target) = tests::connect(&shop.url).await.expect("shop database");
    let store: Arc<dyn EventStore> = store;
    let inbox = PgInbox::new(warehouse.pool.clone());
    inbox.migrate().await.expect("inbox tables");
    create_effects_table(&warehouse.pool).await;

    let relay_bin = env!("CARGO_BIN_EXE_relay_worker");
    let consumer_bin = env!("CARGO_BIN_EXE_inbox_consumer");
    let mut relay = start(relay_bin, &shop.url, &url, &namespace);
    let mut consumer = start(consumer_bin, &warehouse.url, &url, &namespace);

    // Appends spread over the time the kills take, so that both processes die mid-flow.
    let kill_period = Duration::from_millis(525 * 2 * kills as u64);
    let pause = kill_period / u32::try_from(per_stream).unwrap_or(u32::MAX);
    let appender = tokio::spawn({
        let store = store.clone();
        async move { append_ticks(&store, streams, per_stream, 1, pause).await }
    });
    let (mut relay_kills, mut consumer_kills) = (0, 0);
    while relay_kills < kills || consumer_kills < kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(150..900))).await;
        let kill_relay = consumer_kills >= kills || (relay_kills < kills && fastrand::bool());
        if kill_relay {
            relay.kill();
            relay = start(relay_bin, &shop.url, &url, &namespace);
            relay_kills += 1;
        } else {
            consumer.kill();
            consumer = start(consumer_bin, &warehouse.url, &url, &namespace);
            consumer_kills += 1;
        }
    }
    appender.await.expect("appender");

    let done = wait_for_effects(&warehouse.pool, expected, Duration::from_secs(180)).await;
    assert_eq!(
        done.rows, expected,
        "{kind:?}: every event's effect: {done:?}"
    );
    // A moment more for a late double application to show.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let done = tests::messaging::applied(&warehouse.pool).await;
    assert_eq!(
        done.rows, expected,
        "{kind:?}: nothing applied twice: {done:?}"
    );
    assert_eq!(done.distinct, expected, "{kind:?}: {done:?}");
    assert!(
        done.out_of_order.is_empty(),
        "{kind:?}: stream order: {:?}",
        done.out_of_order
    );
    assert_eq!(inbox.received(&namespace).await.unwrap(), expected as u64);

    // The broker's own view agrees.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let settled = match kind {
            BrokerKind::RabbitMq => {
                let rabbit = messaging::RabbitMq::new(&url).with_exchange(&namespace);
                rabbit.queue_depth(&namespace).await.unwrap() == 0
            }
            BrokerKind::Nats => {
                let nats = messaging::Nats::new(&url).with_stream(&namespace, &namespace);
                let (messages, _) = nats.stream_state().await.unwrap();
                assert_eq!(
                    messages, expected as u64,
                    "JetStream dropped every re-sent copy (Nats-Msg-Id)"
                );
                true
            }
            BrokerKind::Kafka => {
                let kafka = messaging::Kafka::new(&url).with_topic(&namespace, 3);
                let marks: u64 = kafka.high_watermarks().await.unwrap().iter().sum();
                let read: u64 = inbox.cursors(&namespace).await.unwrap().values().sum();
                assert!(marks >= expected as u64, "Kafka holds every event: {marks}");
                read == marks
            }
        };
        if settled {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?}: the broker's counts did not settle"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    relay.kill();
    consumer.kill();
    tests::messaging::remove_namespace(kind, &url, &namespace, &[&namespace]).await;
    shop.drop_database().await;
    warehouse.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_relay_and_consumer_killed_again_and_again_apply_each_event_once() {
    killed_again_and_again(BrokerKind::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_relay_and_consumer_killed_again_and_again_apply_each_event_once() {
    killed_again_and_again(BrokerKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_relay_and_consumer_killed_again_and_again_apply_each_event_once() {
    killed_again_and_again(BrokerKind::Kafka).await;
}
