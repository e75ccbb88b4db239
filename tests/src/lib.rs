//! Cross-crate integration and fault tests against a real PostgreSQL.
//!
//! | file | proves |
//! | --- | --- |
//! | `tests/projection_faults.rs` | a worker killed with SIGKILL at random moments loses and doubles nothing; a standby process takes over |
//! | `tests/lifecycle.rs` | a lease holder frozen with SIGSTOP is replaced and commits and sends nothing; an idle `serve` stays quiet; the demo's read models rebuilt under orders equal a replay |
//! | `src/bin/projection_worker.rs` | the worker process those tests start, freeze and kill |
//! | `tests/connection_loss.rs` | every session killed again and again: retried appends store nothing twice, the read model converges |
//! | `tests/shop_http.rs` | the demo shop end to end through its HTTP API on PostgreSQL |
//! | `tests/idempotency.rs` | `Idempotency-Key`: concurrent copies, restarts and crashes make one order per key; bounds |
//! | `tests/checkout.rs` | the checkout per order: retries, parking, deadlines, legacy orders |
//! | `tests/checkout_kills.rs` | the checkout process killed again and again: one authorisation per order |
//! | `src/bin/checkout_worker.rs`, `src/bin/shop_server.rs` | the processes those tests kill |
//! | `tests/messaging.rs` | relay and consumer on RabbitMQ, NATS and Kafka: confirmed publishing, the wire format, copies dropped, poison set aside, lag |
//! | `tests/messaging_kills.rs` | relay and consumer killed again and again on each broker: every effect exactly once, in stream order |
//! | `src/bin/relay_worker.rs`, `src/bin/inbox_consumer.rs` | the processes those tests kill |

pub mod messaging;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::RecordedEvent;
use eventstore_postgres::PgEventStore;
use projections::testing::Tally;
use projections::{ApplyError, Documents, PgTarget, Projection, Target};
use sqlx::Row;

/// A projection with a side effect: it "sends" every event to the table `sent` (see
/// [`Sender::create_table`]) over a connection of its own, as an outside service would receive it, fenced by
/// its lease: it checks its token before sending, and the insert itself checks the epoch
/// with `projection_fence`, so a deposed worker sends nothing.
pub struct Sender {
    pool: sqlx::PgPool,
}

impl Sender {
    /// A sender writing to the database of `pool`.
    pub fn new(pool: sqlx::PgPool) -> Self {
        Self { pool }
    }

    /// Creates the table `sent` (what an outside service received), if it is not there.
    pub async fn create_table(&self) -> Result<(), sqlx::Error> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS sent \
             (event_id uuid, epoch bigint, sent_at timestamptz DEFAULT clock_timestamp())",
        )
        .execute(&self.pool)
        .await
        .map(|_| ())
    }
}

#[async_trait]
impl Projection for Sender {
    fn name(&self) -> &str {
        "sender"
    }

    fn has_side_effects(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let epoch = docs
            .lease()
            .ok_or_else(|| ApplyError::poison("a sender needs a lease"))?
            .ensure_live()?;
        let transient = |e: sqlx::Error| ApplyError::transient(e);
        sqlx::query(
            "INSERT INTO sent (event_id, epoch) SELECT $1, $2 WHERE projection_fence('sender', $2)",
        )
        .bind(event.event_id)
        .bind(epoch as i64)
        .execute(&self.pool)
        .await
        .map_err(transient)?;
        Ok(())
    }
}

/// Appends `rounds` small batches to random tally streams, pausing between them; returns the
/// expected tallies.
pub async fn write_tallies(
    store: Arc<dyn cqrs_core::EventStore>,
    rounds: usize,
    pause: std::time::Duration,
) -> BTreeMap<String, Tally> {
    let mut expected: BTreeMap<String, Tally> = BTreeMap::new();
    for _ in 0..rounds {
        let stream = format!("tally-{}", fastrand::u8(0..12));
        let amounts: Vec<u64> = (0..fastrand::u64(1..5))
            .map(|_| fastrand::u64(1..100))
            .collect();
        projections::testing::append(
            store.as_ref(),
            &stream,
            amounts
                .iter()
                .copied()
                .map(projections::testing::added)
                .collect(),
        )
        .await;
        let tally = expected.entry(stream).or_default();
        tally.count += amounts.len() as u64;
        tally.total += amounts.iter().sum::<u64>();
        tokio::time::sleep(pause).await;
    }
    expected
}

/// Waits until the tallies read model equals `expected`; returns how long it took.
pub async fn until_tallies_equal(
    target: &PgTarget,
    expected: &BTreeMap<String, Tally>,
    within: std::time::Duration,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    let expected: Vec<(String, Tally)> = expected.clone().into_iter().collect();
    loop {
        if projections::testing::tallies(target).await == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "the read model did not converge in {within:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A store and a target on the database at `url`, with both crates' migrations applied.
pub async fn connect(
    url: &str,
) -> Result<(Arc<PgEventStore>, PgTarget), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    let store = PgEventStore::new(pool.clone());
    store.migrate().await?;
    let target = PgTarget::new(pool);
    target.migrate().await?;
    Ok((Arc::new(store), target))
}

/// The demo shop served on a free port of 127.0.0.1, on a fresh database, with its workers
/// running.
pub struct TestApp {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    /// The shop behind the API (for rebuilds and direct checks).
    pub shop: Arc<demo_shop::shop::Shop>,
    /// Its database.
    pub db: eventstore_postgres::testing::TestDatabase,
    /// The payment gateway it calls (in process), with its ledger.
    pub gateway: Arc<demo_shop::gateway::SimulatedGateway>,
    options: AppOptions,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How a [`TestApp`] differs from the shop's defaults.
#[derive(Clone, Copy, Debug)]
pub struct AppOptions {
    /// How long an order may wait for its payment.
    pub payment_timeout: std::time::Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            payment_timeout: demo_shop::shop::PAYMENT_TIMEOUT,
        }
    }
}

/// Starts the shop on a fresh database: migrations, workers, HTTP server.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(AppOptions::default()).await
}

/// Starts the shop with `options` on a fresh database.
pub async fn spawn_app_with(options: AppOptions) -> TestApp {
    let db = eventstore_postgres::testing::TestDatabase::create(30).await;
    let gateway = Arc::new(demo_shop::gateway::SimulatedGateway::default());
    serve_app(db, gateway, options).await
}

/// Starts the shop on `db`: migrations, workers, HTTP server.
async fn serve_app(
    db: eventstore_postgres::testing::TestDatabase,
    gateway: Arc<demo_shop::gateway::SimulatedGateway>,
    options: AppOptions,
) -> TestApp {
    let storage = demo_shop::storage::Storage::from_pool(db.pool.clone())
        .await
        .expect("migrations apply");
    let shop = Arc::new(
        demo_shop::shop::Shop::new(storage, Arc::clone(&gateway) as _)
            .with_payment_timeout(options.payment_timeout),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = shop
        .spawn_workers(stopped.clone())
        .into_iter()
        .map(|worker| {
            tokio::spawn(async move {
                if let Ok(Err(error)) = worker.await {
                    panic!("a projection worker failed: {error}");
                }
            })
        })
        .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let router = demo_shop::http::router(Arc::clone(&shop));
    tasks.push(tokio::spawn(async move {
        let mut stopped = stopped;
        demo_shop::http::serve(listener, router, async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .await
        .expect("server");
    }));
    TestApp {
        addr,
        shop,
        db,
        gateway,
        options,
        stop,
        tasks,
    }
}

impl TestApp {
    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        demo_shop::http_client::request(self.addr, "POST", path, Some(&body))
            .await
            .expect("request")
    }

    /// `POST path` with a JSON body and an `Idempotency-Key`.
    pub async fn post_with_key(
        &self,
        path: &str,
        body: serde_json::Value,
        key: &str,
    ) -> (u16, serde_json::Value) {
        demo_shop::http_client::request_with_headers(
            self.addr,
            "POST",
            path,
            Some(&body),
            &[("Idempotency-Key", key)],
            std::time::Duration::from_secs(60),
        )
        .await
        .expect("request")
    }

    /// Stops the server and the workers and starts them again on the same database (on
    /// another port).
    pub async fn restart(self) -> TestApp {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("a task of the app panicked");
        }
        serve_app(self.db, self.gateway, self.options).await
    }

    /// Registers a product at `price_cents` and stocks `stock` units of it (asserting 202).
    pub async fn add_product(&self, sku: &str, price_cents: u64, stock: u32) {
        let (status, body) = self
            .post(
                "/products",
                serde_json::json!({ "sku": sku, "name": format!("Product {sku}"), "price_cents": price_cents }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        let (status, body) = self
            .post(
                &format!("/products/{sku}/restock"),
                serde_json::json!({ "quantity": stock }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        demo_shop::http_client::request(self.addr, "GET", path, None)
            .await
            .expect("request")
    }

    /// How many events the store holds.
    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM es_events")
            .fetch_one(&self.db.pool)
            .await
            .expect("count")
    }

    /// Stops the server and the workers and drops the database.
    pub async fn shutdown(self) {
        self.stop.send_replace(true);
        for task in self.tasks {
            task.await.expect("a task of the app panicked");
        }
        self.db.drop_database().await;
    }
}

/// The active read model of `name` and its checkpoint, read in one snapshot.
pub async fn active_model(
    pool: &sqlx::PgPool,
    name: &str,
) -> (
    cqrs_core::Position,
    Option<serde_json::Value>,
    Vec<(String, String, serde_json::Value)>,
) {
    let mut tx = pool.begin().await.expect("begin");
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .expect("isolation");
    let row = sqlx::query(
        "SELECT c.commit, c.sequence, c.failure FROM projection_state s \
         JOIN projection_checkpoints c ON c.name = s.name AND c.generation = s.active_generation \
         WHERE s.name = $1",
    )
    .bind(name)
    .fetch_one(&mut *tx)
    .await
    .expect("checkpoint");
    let at = cqrs_core::Position::new(
        row.get::<i64, _>("commit") as u64,
        row.get::<i64, _>("sequence") as u64,
    );
    let docs = sqlx::query(
        "SELECT d.collection, d.key, d.doc FROM projection_documents d JOIN projection_state s \
         ON s.name = d.projection AND s.active_generation = d.generation \
         WHERE d.projection = $1 ORDER BY d.collection, d.key",
    )
    .bind(name)
    .fetch_all(&mut *tx)
    .await
    .expect("documents")
    .iter()
    .map(|r| (r.get("collection"), r.get("key"), r.get("doc")))
    .collect();
    tx.commit().await.expect("commit");
    (at, row.get("failure"), docs)
}

/// `projection`'s read model replayed from the start of the log up to `until`, in memory.
pub async fn replay(
    store: &dyn cqrs_core::EventStore,
    projection: &dyn projections::Projection,
    until: cqrs_core::Position,
) -> Vec<(String, String, serde_json::Value)> {
    let target = projections::MemoryTarget::new();
    let name = projection.name();
    target
        .register(name, projection.version())
        .await
        .expect("register");
    let mut batch = target
        .begin(name, 1, projections::target::Role::Live, None)
        .await
        .expect("begin");
    let filter = projection.filter();
    let mut after = cqrs_core::Position::START;
    'pages: while after < until {
        let page = store.read_all(after, 1_000, &filter).await.expect("read");
        for event in &page.events {
            if event.position > until {
                break 'pages;
            }
            projection
                .apply(&mut batch, event)
                .await
                .expect("replay applies");
        }
        if page.events.is_empty() && page.scanned_to <= after {
            break;
        }
        after = page.scanned_to;
    }
    target
        .commit(batch, cqrs_core::Position::START, until, None)
        .await
        .expect("commit");
    target.documents(name)
}

/// A child process killed (SIGKILL) when dropped, so that a failing test leaves no worker
/// behind.
pub struct KilledOnDrop(pub std::process::Child);

impl KilledOnDrop {
    /// Kills it with SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}
