//! What the messaging tests share: broker URLs (with one clear message when a broker is
//! not running), a consumer whose effect is a row per message, the events it consumes, and
//! the checks of "exactly once, in stream order".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{EventStore, ExpectedVersion, Metadata, NewEvent, RawEvent, StreamId};
use messaging::{CloudEvent, InboxTx, MessageHandler};
use projections::ApplyError;
use sqlx::PgPool;

/// The brokers the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// RabbitMQ (`RABBITMQ_URL`, default `amqp://guest:guest@127.0.0.1:5672/%2f`).
    RabbitMq,
    /// NATS JetStream (`NATS_URL`, default `nats://127.0.0.1:4222`).
    Nats,
    /// Kafka (`KAFKA_URL`, default `kafka://127.0.0.1:9092`): tansu, started by
    /// `scripts/ensure-kafka`.
    Kafka,
}

impl BrokerKind {
    /// The broker's URL, if it is reachable. RabbitMQ and NATS are services the tests need:
    /// unreachable, they fail the test with one message saying what to start. Kafka's tests
    /// run whenever a broker is reachable: unreachable, this says how to start one and the
    /// test returns.
    pub fn url(self) -> Option<String> {
        let (var, default, start) = match self {
            Self::RabbitMq => (
                "RABBITMQ_URL",
                "amqp://guest:guest@127.0.0.1:5672/%2f",
                "start RabbitMQ (`rabbitmq-server -detached`) or set RABBITMQ_URL",
            ),
            Self::Nats => (
                "NATS_URL",
                "nats://127.0.0.1:4222",
                "start nats-server with JetStream (`nats-server -js`) or set NATS_URL",
            ),
            Self::Kafka => (
                "KAFKA_URL",
                "kafka://127.0.0.1:9092",
                "run `scripts/ensure-kafka` (installs and starts tansu) or set KAFKA_URL",
            ),
        };
        let url = std::env::var(var).unwrap_or_else(|_| default.to_owned());
        if messaging::connect::is_reachable(&url) {
            return Some(url);
        }
        let message = format!("{self:?} is not reachable at {url}: {start}.");
        if self == Self::Kafka {
            eprintln!("skipped: {message}");
            return None;
        }
        panic!("{message}");
    }
}

/// A name no other test uses: the exchange, JetStream stream or Kafka topic of one test.
pub fn unique_namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The consumer the tests run: each message it applies becomes one row of `effects`, in
/// the same transaction as its inbox entry (a message applied twice would show as two rows).
pub struct RecordEffects {
    /// The consumer's name.
    pub name: String,
}

/// Creates the `effects` table in the consumer's database.
pub async fn create_effects_table(pool: &PgPool) {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS effects (seq bigserial PRIMARY KEY, event_id uuid NOT NULL, \
         stream_id text NOT NULL, stream_version bigint NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp(), \
         recorded_at timestamptz NOT NULL)",
    )
    .execute(pool)
    .await
    .expect("effects table");
}

#[async_trait]
impl MessageHandler for RecordEffects {
    fn name(&self) -> &str {
        &self.name
    }

    fn categories(&self) -> Vec<String> {
        vec!["tick".to_owned()]
    }

    async fn handle(&self, tx: &mut dyn InboxTx, event: &CloudEvent) -> Result<(), ApplyError> {
        if event.event_type == "Poison" {
            return Err(ApplyError::poison("a poison message, on purpose"));
        }
        let db = tx
            .postgres()
            .ok_or_else(|| ApplyError::poison("the effects live in PostgreSQL"))?;
        sqlx::query(
            "INSERT INTO effects (event_id, stream_id, stream_version, recorded_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(event.id)
        .bind(&event.subject)
        .bind(i64::try_from(event.streamversion).map_err(ApplyError::poison)?)
        .bind(event.time)
        .execute(db)
        .await
        .map_err(ApplyError::transient)?;
        Ok(())
    }
}

/// Appends `per_stream` `Ticked` events to each of `streams` streams `tick-<i>`, `per_append`
/// at a time, round-robin over the streams (so streams interleave in the log), with
/// `pause` between rounds.
pub async fn append_ticks(
    store: &Arc<dyn EventStore>,
    streams: usize,
    per_stream: usize,
    per_append: usize,
    pause: Duration,
) {
    let rounds = per_stream.div_ceil(per_append.max(1));
    for round in 0..rounds {
        for s in 0..streams {
            let stream = StreamId::new(format!("tick-{s}")).expect("stream id");
            let from = round * per_append;
            let events: Vec<NewEvent> = (from..(from + per_append).min(per_stream))
                .map(|n| NewEvent {
                    event_id: uuid::Uuid::new_v4(),
                    data: RawEvent {
                        event_type: "Ticked".into(),
                        schema_version: 1,
                        payload: serde_json::json!({ "stream": s, "n": n, "pad": "x".repeat(120) }),
                    },
                })
                .collect();
            let mut tries = 0;
            while let Err(e) = store
                .append(
                    &stream,
                    ExpectedVersion::Any,
                    events.clone(),
                    &Metadata::new_request(),
                )
                .await
            {
                tries += 1;
                assert!(tries < 50 && e.is_retryable(), "append failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
    }
}

/// What the consumer applied: its `effects` rows.
#[derive(Debug)]
pub struct Applied {
    /// Rows in all.
    pub rows: i64,
    /// Distinct events among them.
    pub distinct: i64,
    /// Streams whose events were applied out of version order (with the first bad pair).
    pub out_of_order: Vec<String>,
}

/// Reads and checks the `effects` table.
pub async fn applied(pool: &PgPool) -> Applied {
    let (rows, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT event_id) FROM effects")
            .fetch_one(pool)
            .await
            .expect("count effects");
    let out_of_order: Vec<String> = sqlx::query_scalar(
        "SELECT stream_id || ': ' || prev || ' then ' || stream_version FROM ( \
           SELECT stream_id, stream_version, lag(stream_version) OVER (PARTITION BY stream_id ORDER BY seq) AS prev \
           FROM effects) t WHERE prev IS NOT NULL AND stream_version <> prev + 1 LIMIT 20",
    )
    .fetch_all(pool)
    .await
    .expect("order check");
    Applied {
        rows,
        distinct,
        out_of_order,
    }
}

/// Waits until `effects` holds `expected` rows (or `timeout` passes), then returns what it
/// holds.
pub async fn wait_for_effects(pool: &PgPool, expected: i64, timeout: Duration) -> Applied {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let done = applied(pool).await;
        if done.rows >= expected || tokio::time::Instant::now() >= deadline {
            return done;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Removes what a test made on `kind`'s broker under `namespace`: the consumers' queues and
/// the exchange (RabbitMQ), the stream (NATS) or the topic (Kafka).
pub async fn remove_namespace(kind: BrokerKind, url: &str, namespace: &str, consumers: &[&str]) {
    match kind {
        BrokerKind::RabbitMq => {
            let rabbit = messaging::RabbitMq::new(url).with_exchange(namespace);
            for consumer in consumers {
                let _ = rabbit.delete_queue(consumer).await;
            }
            let _ = rabbit.delete_exchange().await;
        }
        BrokerKind::Nats => {
            let nats = messaging::Nats::new(url).with_stream(namespace, namespace);
            let _ = nats.delete_stream().await;
        }
        BrokerKind::Kafka => {
            let kafka = messaging::Kafka::new(url).with_topic(namespace, 3);
            let _ = kafka.delete_topic().await;
        }
    }
}
