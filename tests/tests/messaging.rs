//! The relay and a consumer on each broker, in one process: every event applied once and in
//! stream order, copies dropped, a poison message set aside, lag reported, and the broker's
//! own counts consistent with that.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, RawEvent, StreamId};
use eventstore_postgres::testing::TestDatabase;
use messaging::{Consumer, ConsumerOptions, Inbox, PgInbox, Relay};
use projections::{ProjectionRunner, RunnerOptions};
use tests::messaging::{
    append_ticks, applied, create_effects_table, remove_namespace, unique_namespace,
    wait_for_effects, BrokerKind, RecordEffects,
};

const STREAMS: usize = 50;
const PER_STREAM: usize = 10;
const EVENTS: i64 = (STREAMS * PER_STREAM) as i64;

fn relay_runner(
    name: &str,
    broker_publisher: Arc<dyn messaging::Publisher>,
    store: Arc<dyn EventStore>,
    pool: sqlx::PgPool,
) -> ProjectionRunner<projections::PgTarget> {
    Relay::new(name, "urn:tests:ticks", broker_publisher)
        .with_filter(EventFilter::all().categories(["tick"]))
        .runner(store, projections::PgTarget::new(pool))
        .with_options(RunnerOptions {
            idle_wait: Duration::from_millis(100),
            ..Relay::options()
        })
}

async fn round_trip(kind: BrokerKind) {
    let Some(url) = kind.url() else { return };
    let namespace = unique_namespace();
    let broker = messaging::broker_from_url(&url, &namespace).expect("broker");
    let shop = TestDatabase::create(8).await;
    let warehouse = TestDatabase::create(8).await;
    let (store, target) = tests::connect(&shop.url).await.expect("shop database");
    let store: Arc<dyn EventStore> = store;
    let inbox = PgInbox::new(warehouse.pool.clone());
    inbox.migrate().await.expect("inbox tables");
    create_effects_table(&warehouse.pool).await;

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let relay = relay_runner(
        "relay_main",
        broker.publisher().await.expect("publisher"),
        store.clone(),
        target.pool().clone(),
    );
    let relay_task = tokio::spawn({
        let stop = until_stopped();
        async move { relay.run(stop).await }
    });
    let consumer = Arc::new(
        Consumer::new(
            broker.clone(),
            inbox.clone(),
            Arc::new(RecordEffects {
                name: namespace.clone(),
            }),
        )
        .with_options(ConsumerOptions {
            idle_wait: Duration::from_millis(100),
            ..ConsumerOptions::default()
        }),
    );
    let consumer_task = tokio::spawn({
        let consumer = consumer.clone();
        let stop = until_stopped();
        async move { consumer.run(stop).await }
    });

    // Live traffic, with one message the consumer cannot apply in the middle.
    append_ticks(&store, STREAMS, PER_STREAM / 2, 1, Duration::ZERO).await;
    let poison = NewEvent {
        event_id: uuid::Uuid::new_v4(),
        data: RawEvent {
            event_type: "Poison".into(),
            schema_version: 1,
            payload: serde_json::json!({}),
        },
    };
    store
        .append(
            &StreamId::new("tick-poison").unwrap(),
            ExpectedVersion::Any,
            vec![poison.clone()],
            &Metadata::default(),
        )
        .await
        .unwrap();
    append_ticks(&store, STREAMS, PER_STREAM / 2, 1, Duration::ZERO).await;
    let done = wait_for_effects(&warehouse.pool, EVENTS, Duration::from_secs(60)).await;
    assert_eq!(done.rows, EVENTS, "{kind:?}: every event applied: {done:?}");
    assert_eq!(done.distinct, EVENTS, "{kind:?}: none twice");
    assert!(
        done.out_of_order.is_empty(),
        "{kind:?}: order: {:?}",
        done.out_of_order
    );

    // A second relay (a new destination name) sends the whole log again: all copies.
    let resend = relay_runner(
        "relay_again",
        broker.publisher().await.expect("publisher"),
        store.clone(),
        target.pool().clone(),
    );
    resend.run_until_caught_up().await.expect("re-send");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = consumer.status();
        let copies_seen = match kind {
            // JetStream drops the copies itself, within its duplicate window.
            BrokerKind::Nats => true,
            _ => status.duplicates > EVENTS as u64,
        };
        if copies_seen && status.backlog == Some(0) && status.lag_seconds == Some(0.0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?}: the copies were not all acknowledged: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let again = applied(&warehouse.pool).await;
    assert_eq!(
        again.rows, EVENTS,
        "{kind:?}: copies applied nothing: {again:?}"
    );

    let status = consumer.status();
    assert_eq!(status.applied, EVENTS as u64, "{status:?}");
    assert_eq!(status.dead_lettered, 1, "{status:?}");
    let dead = inbox.dead_letters(&namespace).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].message_id, Some(poison.event_id));
    assert!(dead[0].error.contains("poison"), "{:?}", dead[0]);
    assert!(
        dead[0].body.contains("\"type\":\"Poison\""),
        "{:?}",
        dead[0]
    );
    assert_eq!(inbox.received(&namespace).await.unwrap(), EVENTS as u64 + 1);

    // The broker's own view.
    match kind {
        BrokerKind::RabbitMq => {
            let rabbit = messaging::RabbitMq::new(&url).with_exchange(&namespace);
            assert_eq!(rabbit.queue_depth(&namespace).await.unwrap(), 0);
        }
        BrokerKind::Nats => {
            let nats = messaging::Nats::new(&url).with_stream(&namespace, &namespace);
            let (messages, last) = nats.stream_state().await.unwrap();
            assert_eq!(
                messages,
                EVENTS as u64 + 1,
                "JetStream kept one copy of each"
            );
            assert_eq!(last, EVENTS as u64 + 1);
        }
        BrokerKind::Kafka => {
            let kafka = messaging::Kafka::new(&url).with_topic(&namespace, 3);
            let marks: u64 = kafka.high_watermarks().await.unwrap().iter().sum();
            assert_eq!(marks, 2 * (EVENTS as u64 + 1), "Kafka keeps both sends");
            let cursors = inbox.cursors(&namespace).await.unwrap();
            assert_eq!(
                cursors.values().sum::<u64>(),
                marks,
                "the consumer read it all"
            );
        }
    }
    stop.send_replace(true);
    relay_task.await.unwrap().unwrap();
    consumer_task.await.unwrap().unwrap();
    remove_namespace(kind, &url, &namespace, &[&namespace]).await;
    shop.drop_database().await;
    warehouse.drop_database().await;
    let _ = broker;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_round_trip_applies_every_event_once_in_order() {
    round_trip(BrokerKind::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_round_trip_applies_every_event_once_in_order() {
    round_trip(BrokerKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_round_trip_applies_every_event_once_in_order() {
    round_trip(BrokerKind::Kafka).await;
}

/// RabbitMQ drops a message no queue is bound for, yet confirms it: the relay publishes
/// mandatory messages and waits for a queue rather than lose what comes before the first
/// consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_events_published_before_the_first_consumer_are_not_lost() {
    let Some(url) = BrokerKind::RabbitMq.url() else {
        return;
    };
    let namespace = unique_namespace();
    let broker = messaging::broker_from_url(&url, &namespace).expect("broker");
    let shop = TestDatabase::create(4).await;
    let warehouse = TestDatabase::create(4).await;
    let (store, target) = tests::connect(&shop.url).await.expect("shop database");
    let store: Arc<dyn EventStore> = store;
    let inbox = PgInbox::new(warehouse.pool.clone());
    inbox.migrate().await.expect("inbox tables");
    create_effects_table(&warehouse.pool).await;

    append_ticks(&store, 5, 4, 1, Duration::ZERO).await;
    let relay = relay_runner(
        "relay_early",
        broker.publisher().await.expect("publisher"),
        store.clone(),
        target.pool().clone(),
    );
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let relay_task = tokio::spawn(async move {
        relay
            .run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let consumer = Consumer::new(
        broker,
        inbox,
        Arc::new(RecordEffects {
            name: namespace.clone(),
        }),
    );
    let consuming = tokio::spawn(async move {
        consumer
            .run(tokio::time::sleep(Duration::from_secs(20)))
            .await
    });
    let done = wait_for_effects(&warehouse.pool, 20, Duration::from_secs(20)).await;
    assert_eq!(done.rows, 20, "{done:?}");
    assert!(done.out_of_order.is_empty(), "{done:?}");
    stop.send_replace(true);
    relay_task.await.unwrap().unwrap();
    consuming.abort();
    remove_namespace(BrokerKind::RabbitMq, &url, &namespace, &[&namespace]).await;
    shop.drop_database().await;
    warehouse.drop_database().await;
}

/// The wire format read from another language: `messaging/examples/python/consumer.py`
/// (standard library only) subscribes to the JetStream subjects and reads every event the
/// relay publishes, with each attribute as the log has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_python_consumer_reads_the_published_cloudevents() {
    use std::io::{BufRead, BufReader};
    let Some(url) = BrokerKind::Nats.url() else {
        return;
    };
    let namespace = unique_namespace();
    let broker = messaging::broker_from_url(&url, &namespace).expect("broker");
    let shop = TestDatabase::create(4).await;
    let (store, target) = tests::connect(&shop.url).await.expect("shop database");
    let store: Arc<dyn EventStore> = store;
    append_ticks(&store, 3, 4, 2, Duration::ZERO).await;

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../messaging/examples/python/consumer.py"
    );
    let mut python = std::process::Command::new("python3")
        .args([script, &url, &format!("{namespace}.>"), "12"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs the example consumer");
    let mut ready = String::new();
    BufReader::new(python.stderr.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");

    relay_runner(
        "relay_python",
        broker.publisher().await.expect("publisher"),
        store.clone(),
        target.pool().clone(),
    )
    .run_until_caught_up()
    .await
    .expect("relay");
    let output = tokio::task::spawn_blocking(move || python.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let logged = store
        .read_all(cqrs_core::Position::START, 100, &EventFilter::all())
        .await
        .unwrap()
        .events;
    assert_eq!(lines.len(), logged.len());
    // Each stream's events arrive in order (events of different streams may interleave
    // otherwise than in the log).
    let mut last_version = std::collections::HashMap::new();
    for line in &lines {
        let version = line["streamversion"].as_u64().unwrap();
        let before = last_version.insert(line["subject"].to_string(), version);
        assert_eq!(before.unwrap_or(0) + 1, version, "{line}");
    }
    for event in &logged {
        let line = lines
            .iter()
            .find(|l| l["id"] == event.event_id.to_string())
            .expect("every logged event was read");
        assert_eq!(line["type"], "Ticked");
        assert_eq!(line["subject"], event.stream_id.as_str());
        assert_eq!(line["category"], "tick");
        assert_eq!(line["position"], event.position.to_string());
        assert_eq!(line["streamversion"], event.stream_version);
        assert_eq!(line["source"], "urn:tests:ticks");
        assert_eq!(line["data"], event.event.payload);
        assert_eq!(
            line["correlationid"],
            event.metadata.correlation_id.unwrap().to_string()
        );
    }
    remove_namespace(BrokerKind::Nats, &url, &namespace, &[]).await;
    shop.drop_database().await;
}

/// Fails on `Poison` events until it is "fixed" (a new deployment, say).
struct Fixable {
    fixed: std::sync::atomic::AtomicBool,
    applied: std::sync::Mutex<Vec<uuid::Uuid>>,
}

#[async_trait::async_trait]
impl messaging::MessageHandler for Fixable {
    fn name(&self) -> &str {
        "fixable"
    }

    async fn handle(
        &self,
        _tx: &mut dyn messaging::InboxTx,
        event: &messaging::CloudEvent,
    ) -> Result<(), projections::ApplyError> {
        if event.event_type == "Poison" && !self.fixed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(projections::ApplyError::poison("not handled yet"));
        }
        self.applied.lock().unwrap().push(event.id);
        Ok(())
    }
}

/// A consumer's dead letters are the operator's to retry (the live consumer applies them)
/// or skip, as a projection's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_retries_or_skips_a_consumers_dead_letters() {
    let db = TestDatabase::create(4).await;
    let inbox = PgInbox::new(db.pool.clone());
    inbox.migrate().await.unwrap();
    let broker = messaging::ChannelBroker::new();
    let poison = |n: u32| messaging::CloudEvent {
        specversion: "1.0".into(),
        id: uuid::Uuid::new_v4(),
        source: "urn:tests".into(),
        event_type: "Poison".into(),
        subject: format!("tick-{n}"),
        time: chrono::Utc::now(),
        datacontenttype: "application/json".into(),
        data: serde_json::json!({ "n": n }),
        category: "tick".into(),
        position: format!("{n}/1"),
        streamversion: 1,
        schemaversion: 1,
        correlationid: None,
        causationid: None,
        traceparent: None,
    };
    let (first, second) = (poison(1), poison(2));
    messaging::Publisher::publish(&broker, &[first.clone(), second.clone()])
        .await
        .unwrap();
    let handler = Arc::new(Fixable {
        fixed: false.into(),
        applied: Default::default(),
    });
    let consumer = Arc::new(Consumer::new(
        Arc::new(broker),
        inbox.clone(),
        handler.clone(),
    ));
    let running = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.run(std::future::pending()).await }
    });
    let letters = loop {
        let letters = inbox.dead_letters("fixable").await.unwrap();
        if letters.len() == 2 {
            break letters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(letters[0].message_id, Some(first.id));
    assert_eq!(letters[0].status, messaging::DeadStatus::Open);

    handler
        .fixed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    use projections::Resolution;
    assert!(inbox
        .resolve("fixable", letters[0].id, Resolution::Retry)
        .await
        .unwrap());
    assert!(inbox
        .resolve("fixable", letters[1].id, Resolution::Skip)
        .await
        .unwrap());
    assert!(
        !inbox
            .resolve("fixable", letters[1].id, Resolution::Retry)
            .await
            .unwrap(),
        "a closed dead letter is not open to resolve"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let letters = inbox.dead_letters("fixable").await.unwrap();
        if letters[0].status == messaging::DeadStatus::Retried {
            assert_eq!(letters[1].status, messaging::DeadStatus::Skipped);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{letters:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(*handler.applied.lock().unwrap(), vec![first.id]);
    running.abort();
    db.drop_database().await;
}

/// The consumer's database sessions killed again and again (a restart, a failover): the
/// consumer keeps going and applies every message once; a late copy of an old message does
/// not rewind its cursor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_outlives_its_database_sessions_being_killed() {
    let db = TestDatabase::create(8).await;
    let inbox = PgInbox::new(db.pool.clone());
    inbox.migrate().await.unwrap();
    create_effects_table(&db.pool).await;
    let broker = messaging::ChannelBroker::new();
    let consumer = Arc::new(
        Consumer::new(
            Arc::new(broker.clone()),
            inbox.clone(),
            Arc::new(RecordEffects {
                name: "killed".into(),
            }),
        )
        .with_options(ConsumerOptions {
            batch_size: 20,
            idle_wait: Duration::from_millis(50),
            max_backoff: Duration::from_millis(200),
            ..ConsumerOptions::default()
        }),
    );
    let running = tokio::spawn({
        let consumer = consumer.clone();
        async move { consumer.run(std::future::pending()).await }
    });
    let admin = sqlx::PgPool::connect(&eventstore_postgres::testing::server_url())
        .await
        .unwrap();
    let mut published = 0;
    for round in 0..10 {
        let page: Vec<messaging::CloudEvent> = (0..100)
            .map(|i| messaging::CloudEvent {
                specversion: "1.0".into(),
                id: uuid::Uuid::new_v4(),
                source: "urn:tests".into(),
                event_type: "Ticked".into(),
                subject: format!("tick-{i}"),
                time: chrono::Utc::now(),
                datacontenttype: "application/json".into(),
                data: serde_json::json!({}),
                category: "tick".into(),
                position: format!("{round}/{i}"),
                streamversion: round + 1,
                schemaversion: 1,
                correlationid: None,
                causationid: None,
                traceparent: None,
            })
            .collect();
        messaging::Publisher::publish(&broker, &page).await.unwrap();
        published += page.len() as i64;
        tokio::time::sleep(Duration::from_millis(30)).await;
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&db.name)
        .execute(&admin)
        .await
        .unwrap();
    }
    let done = wait_for_effects(&db.pool, published, Duration::from_secs(60)).await;
    assert_eq!(done.rows, published, "every message applied: {done:?}");
    assert_eq!(done.distinct, published, "none twice");
    assert!(done.out_of_order.is_empty(), "{:?}", done.out_of_order);
    assert!(!running.is_finished(), "the consumer is still running");
    running.abort();
    admin.close().await;
    db.drop_database().await;
}
