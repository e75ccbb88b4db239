//! Cross-crate integration and fault tests against a real PostgreSQL.
//!
//! | file | proves |
//! | --- | --- |
//! | `tests/projection_faults.rs` | a worker killed with SIGKILL at random moments loses and doubles nothing; a standby process takes over |
//! | `src/bin/projection_worker.rs` | the worker process those tests start and kill |
//! | `tests/connection_loss.rs` | every session killed again and again: retried appends store nothing twice, the read model converges |
//! | `tests/shop_http.rs` | the demo shop end to end through its HTTP API on PostgreSQL |

use std::sync::Arc;

use eventstore_postgres::PgEventStore;
use projections::PgTarget;

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
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the shop on a fresh database: migrations, workers, HTTP server.
pub async fn spawn_app() -> TestApp {
    let db = eventstore_postgres::testing::TestDatabase::create(30).await;
    let storage = demo_shop::storage::Storage::from_pool(db.pool.clone())
        .await
        .expect("migrations apply");
    let gateway = Arc::new(demo_shop::domain::payment::SimulatedGateway::default());
    let shop = Arc::new(demo_shop::shop::Shop::new(storage, gateway));
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
