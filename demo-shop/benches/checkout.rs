//! The checkout on PostgreSQL: how fast it settles orders, and how long an order waits from
//! placed to confirmed at a steady rate, beside raw appends of the same events in one run.
//!
//! Run with: cargo bench -p demo-shop -- [--json] [--orders N] [--rate N] [--seconds N]
//!
//! Orders take one unit of one of 20 products in turn.
//!
//! - `raw_order_events`: the events a settled order consists of, appended one command at a
//!   time by 16 writers (orders' worth per second): the ceiling of the store for this work.
//! - `checkout_settle`: `--orders` orders (default 1,000) placed by 16 clients; orders per
//!   second from the first placed to the last confirmed, the checkout running 16 executors.
//! - `checkout_latency_p50/p99`: placed → confirmed (as the log shows it) for orders placed
//!   at `--rate` per second (default 50) for `--seconds` (default 10).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cqrs_core::{
    EventFilter, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RawEvent, StreamId,
};
use demo_shop::domain::money::{CustomerId, Money, OrderId, Sku};
use demo_shop::gateway::SimulatedGateway;
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use eventstore_postgres::bench::{median, BenchArgs};
use eventstore_postgres::testing::TestDatabase;

const CLIENTS: usize = 16;
/// Products in the catalogue; each order takes one, in turn.
const PRODUCTS: usize = 20;

fn sku(n: usize) -> Sku {
    Sku::new(format!("SKU{}", n % PRODUCTS)).expect("sku")
}

struct Options {
    json: bool,
    orders: usize,
    rate: usize,
    seconds: u64,
}

fn options() -> Options {
    let args = BenchArgs::from_env();
    Options {
        json: args.flag("--json"),
        orders: args.number("--orders", 1_000).max(CLIENTS),
        rate: args.number("--rate", 50).max(1),
        seconds: args.number("--seconds", 10).max(1) as u64,
    }
}

/// A shop on a fresh database with its workers running and a product in stock.
async fn shop_on(db: &TestDatabase) -> (Arc<Shop>, tokio::sync::watch::Sender<bool>) {
    let storage = Storage::from_pool(db.pool.clone())
        .await
        .expect("migrations");
    let shop = Arc::new(Shop::new(storage, Arc::new(SimulatedGateway::new())));
    let meta = Metadata::new_request();
    for n in 0..PRODUCTS {
        shop.register_product(sku(n), format!("Product {n}"), Money(1_200), &meta)
            .await
            .expect("register");
        shop.restock(sku(n), 1_000_000, &meta)
            .await
            .expect("restock");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    std::mem::drop(shop.spawn_workers(stopped));
    (shop, stop)
}

async fn place(shop: &Shop, n: usize) -> OrderId {
    shop.place_order(
        CustomerId::new(),
        vec![(sku(n), 1)],
        "card_approve".into(),
        &Metadata::new_request(),
    )
    .await
    .expect("place")
    .0
}

/// Follows the log and notes when each order's confirmation shows up in it.
fn watch_confirmations(
    store: Arc<dyn EventStore>,
    from: Position,
) -> (
    Arc<Mutex<HashMap<OrderId, Instant>>>,
    tokio::task::AbortHandle,
) {
    let seen = Arc::new(Mutex::new(HashMap::new()));
    let noted = Arc::clone(&seen);
    let watcher = tokio::spawn(async move {
        let filter = EventFilter::all().event_types(["OrderConfirmed"]);
        let mut after = from;
        loop {
            let page = store.read_all(after, 1_000, &filter).await.expect("read");
            let now = Instant::now();
            for event in &page.events {
                if let Some(id) = event.stream_id.as_str().strip_prefix("order-") {
                    if let Ok(id) = id.parse() {
                        noted.lock().expect("lock").insert(id, now);
                    }
                }
            }
            after = page.scanned_to.max(after);
            if page.events.is_empty() {
                let _ = store
                    .wait_for_events(after, Duration::from_millis(100))
                    .await;
            }
        }
    });
    (seen, watcher.abort_handle())
}

/// Orders per second, from the first placed to the last confirmed.
async fn settle(orders: usize) -> (f64, usize) {
    let db = TestDatabase::create(40).await;
    let (shop, stop) = shop_on(&db).await;
    let store = Arc::clone(&shop.storage().store);
    let (confirmed, watcher) =
        watch_confirmations(Arc::clone(&store), store.head().await.expect("head"));
    let before: i64 = event_count(&db).await;
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let shop = Arc::clone(&shop);
            tokio::spawn(async move {
                for n in (c..orders).step_by(CLIENTS) {
                    place(&shop, n).await;
                }
            })
        })
        .collect();
    for client in clients {
        client.await.expect("client");
    }
    while confirmed.lock().expect("lock").len() < orders {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "orders did not settle"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = orders as f64 / started.elapsed().as_secs_f64();
    let events = (event_count(&db).await - before) as usize;
    watcher.abort();
    stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.drop_database().await;
    (rate, events / orders)
}

async fn event_count(db: &TestDatabase) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM es_events")
        .fetch_one(&db.pool)
        .await
        .expect("count")
}

/// The same number of events per order, appended one per command by 16 writers, as orders
/// per second.
async fn raw_order_events(orders: usize, per_order: usize) -> f64 {
    let db = TestDatabase::create(40).await;
    let store = Arc::new(eventstore_postgres::PgEventStore::new(db.pool.clone()));
    store.migrate().await.expect("migrate");
    let started = Instant::now();
    let writers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for o in (w..orders).step_by(CLIENTS) {
                    for e in 0..per_order {
                        // Events of the order's, its payment's and its product's streams.
                        let stream = match e % 3 {
                            0 => format!("order-{o}"),
                            1 => format!("payment-{o}"),
                            _ => format!("inventory-SKU{}", o % PRODUCTS),
                        };
                        let event = NewEvent {
                            event_id: uuid::Uuid::new_v4(),
                            data: RawEvent {
                                event_type: "Raw".into(),
                                schema_version: 1,
                                payload: serde_json::json!({ "order": o, "n": e }),
                            },
                        };
                        store
                            .append(
                                &StreamId::new(stream).expect("id"),
                                ExpectedVersion::Any,
                                vec![event],
                                &Metadata::default(),
                            )
                            .await
                            .expect("append");
                    }
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let rate = orders as f64 / started.elapsed().as_secs_f64();
    db.drop_database().await;
    rate
}

/// Placed → confirmed at a steady `rate` for `seconds`: p50 and p99 in ms.
async fn latency(rate: usize, seconds: u64) -> (f64, f64) {
    let db = TestDatabase::create(40).await;
    let (shop, stop) = shop_on(&db).await;
    let store = Arc::clone(&shop.storage().store);
    let (confirmed, watcher) =
        watch_confirmations(Arc::clone(&store), store.head().await.expect("head"));
    let placed = Arc::new(Mutex::new(HashMap::new()));
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let total = rate * seconds as usize;
    let mut ticks = tokio::time::interval(every);
    let mut tasks = Vec::with_capacity(total);
    for n in 0..total {
        ticks.tick().await;
        let (shop, placed) = (Arc::clone(&shop), Arc::clone(&placed));
        tasks.push(tokio::spawn(async move {
            let id = place(&shop, n).await;
            placed.lock().expect("lock").insert(id, Instant::now());
        }));
    }
    for task in tasks {
        task.await.expect("place");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while confirmed.lock().expect("lock").len() < total {
        assert!(Instant::now() < deadline, "orders did not settle");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let confirmed = confirmed.lock().expect("lock").clone();
    let mut waits: Vec<f64> = placed
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|(id, at)| confirmed.get(id).map(|c| c.saturating_duration_since(*at)))
        .map(|d| d.as_secs_f64() * 1_000.0)
        .collect();
    waits.sort_by(f64::total_cmp);
    let p99 = waits[(waits.len() * 99 / 100).min(waits.len() - 1)];
    watcher.abort();
    stop.send_replace(true);
    tokio::time::sleep(Duration::from_millis(200)).await;
    db.drop_database().await;
    (median(waits), p99)
}

#[tokio::main]
async fn main() {
    let options = options();
    let (ours, per_order) = settle(options.orders).await;
    let raw = raw_order_events(options.orders, per_order).await;
    let (p50, p99) = latency(options.rate, options.seconds).await;
    if options.json {
        println!("{{\"name\":\"raw_order_events\",\"orders_per_sec\":{raw:.1}}}");
        println!("{{\"name\":\"checkout_settle\",\"orders_per_sec\":{ours:.1}}}");
        println!(
            "{{\"name\":\"checkout_settle_vs_raw\",\"ratio\":{:.3}}}",
            ours / raw
        );
        println!("{{\"name\":\"checkout_latency_p50\",\"ms\":{p50:.2}}}");
        println!("{{\"name\":\"checkout_latency_p99\",\"ms\":{p99:.2}}}");
    } else {
        println!(
            "{:<24} {:>10.1} orders/s ({per_order} events each)",
            "raw_order_events", raw
        );
        println!(
            "{:<24} {:>10.1} orders/s ({:.2}x raw)",
            "checkout_settle",
            ours,
            ours / raw
        );
        println!(
            "{:<24} {:>10.2} ms at {} orders/s",
            "checkout_latency_p50", p50, options.rate
        );
        println!(
            "{:<24} {:>10.2} ms at {} orders/s",
            "checkout_latency_p99", p99, options.rate
        );
    }
}
