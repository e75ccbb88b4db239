//! The demo as two services talking only through a broker: the shop (in this process) and
//! the warehouse (a process of its own, with its own database). Orders placed at the shop
//! reach `shipped` through the round trip — order events to the warehouse, its dispatches
//! back — while the warehouse is killed with SIGKILL and started again mid-way; then the
//! read models of both services equal a replay of their logs.
//!
//! `TWO_SERVICES_ORDERS` (default 500) scales it.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cqrs_core::Metadata;
use demo_shop::domain::money::{CustomerId, Money, Sku};
use demo_shop::domain::order::OrderStatus;
use demo_shop::gateway::{SimulatedGateway, CARD_APPROVE};
use demo_shop::read_models::order_summaries;
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use eventstore_postgres::testing::TestDatabase;
use eventstore_postgres::PgEventStore;
use tests::messaging::{unique_namespace, BrokerKind};
use tests::{active_model, replay, KilledOnDrop};

fn start_warehouse(db: &str, broker: &str, namespace: &str) -> KilledOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_shop_server"))
        .args([
            "--database-url",
            db,
            "--broker",
            broker,
            "--broker-namespace",
            namespace,
            "warehouse",
        ])
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the warehouse");
    KilledOnDrop(child)
}

async fn orders_ship_through_the_broker(kind: BrokerKind) {
    let Some(url) = kind.url() else { return };
    let orders: usize = std::env::var("TWO_SERVICES_ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(500);
    let namespace = unique_namespace();
    let shop_db = TestDatabase::create(30).await;
    let warehouse_db = TestDatabase::create(8).await;
    let storage = Storage::from_pool(shop_db.pool.clone())
        .await
        .expect("shop storage");
    let shop = Shop::new(storage, Arc::new(SimulatedGateway::new()));
    let broker = messaging::broker_from_url(&url, &namespace).expect("broker");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = shop.spawn_workers(stopped.clone());
    workers.extend(shop.spawn_messaging(broker, stopped));
    let mut warehouse = start_warehouse(&warehouse_db.url, &url, &namespace);

    let meta = Metadata::new_request();
    let mug = Sku::new("MUG").unwrap();
    shop.register_product(mug.clone(), "Mug".into(), Money(1_200), &meta)
        .await
        .unwrap();
    shop.restock(mug.clone(), 1_000_000, &meta).await.unwrap();
    let mut placed = Vec::with_capacity(orders);
    for i in 0..orders {
        if i == orders / 2 {
            warehouse.kill();
            tokio::time::sleep(Duration::from_millis(300)).await;
            warehouse = start_warehouse(&warehouse_db.url, &url, &namespace);
        }
        let (order_id, _) = shop
            .place_order(
                CustomerId::new(),
                vec![(mug.clone(), 1)],
                CARD_APPROVE.into(),
                &meta,
            )
            .await
            .expect("place an order");
        placed.push(order_id);
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let all = order_summaries::all_orders(shop.host()).await.unwrap();
        let shipped = all
            .iter()
            .filter(|o| o.status == OrderStatus::Shipped)
            .count();
        if shipped == orders {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind:?}: {shipped} of {orders} orders shipped"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Everything has arrived; let the warehouse's read model catch up, then stop both.
    tokio::time::sleep(Duration::from_secs(1)).await;
    warehouse.kill();
    stop.send_replace(true);
    for worker in workers {
        worker.await.expect("worker").expect("worker result");
    }

    let shop_store = PgEventStore::new(shop_db.pool.clone());
    for projection in demo_shop::read_models::all() {
        let (at, failure, live) = active_model(&shop_db.pool, projection.name()).await;
        assert!(failure.is_none(), "{}: {failure:?}", projection.name());
        let replayed = replay(&shop_store, projection.as_ref(), at).await;
        assert_eq!(
            live,
            replayed,
            "{kind:?}: shop read model {}",
            projection.name()
        );
    }
    let warehouse_store = PgEventStore::new(warehouse_db.pool.clone());
    let shipments = projections::Typed::new(demo_shop::warehouse::view::Shipments);
    let (at, failure, live) = active_model(&warehouse_db.pool, "shipments").await;
    assert!(failure.is_none(), "{failure:?}");
    assert_eq!(live.len(), orders, "{kind:?}: one shipment per order");
    assert_eq!(live, replay(&warehouse_store, &shipments, at).await);
    for (_, _, doc) in &live {
        assert_eq!(doc["status"], "dispatched", "{doc}");
    }
    // Each order shipped once, each shipment dispatched once.
    let shipped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM es_events WHERE event_type = 'OrderShipped'")
            .fetch_one(&shop_db.pool)
            .await
            .unwrap();
    assert_eq!(shipped, orders as i64);
    let dispatched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM es_events WHERE event_type = 'ShipmentDispatched'",
    )
    .fetch_one(&warehouse_db.pool)
    .await
    .unwrap();
    assert_eq!(dispatched, orders as i64);

    tests::messaging::remove_namespace(kind, &url, &namespace, &["shop", "warehouse"]).await;
    shop_db.drop_database().await;
    warehouse_db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_ship_through_rabbitmq_with_the_warehouse_restarted() {
    orders_ship_through_the_broker(BrokerKind::RabbitMq).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_ship_through_nats_with_the_warehouse_restarted() {
    orders_ship_through_the_broker(BrokerKind::Nats).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_ship_through_kafka_with_the_warehouse_restarted() {
    orders_ship_through_the_broker(BrokerKind::Kafka).await;
}
