//! The checkout process killed with SIGKILL again and again while orders arrive: the
//! gateway's ledger shows at most one authorisation per order, every order settles, the
//! payments match the ledger, and the read models equal a fresh replay.
//!
//! `SHOP_KILL_ORDERS` (default 500) and `SHOP_KILLS` (default 20) scale it up.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::Metadata;
use demo_shop::domain::money::{CustomerId, Money, Sku};
use demo_shop::gateway::{Authorization, HttpGateway, SimulatedGateway};
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use eventstore_postgres::testing::TestDatabase;
use sqlx::Row;
use tests::KilledOnDrop;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

fn start_worker(url: &str, gateway: std::net::SocketAddr) -> KilledOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_checkout_worker"))
        .arg(url)
        .env("GATEWAY_ADDR", gateway.to_string())
        .env("CLAIM_TTL_MS", "2000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the checkout worker");
    KilledOnDrop(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_checkout_killed_again_and_again_authorises_each_order_at_most_once() {
    let orders = env_or("SHOP_KILL_ORDERS", 500);
    let kills = env_or("SHOP_KILLS", 20);
    let db = TestDatabase::create(30).await;

    // The payment provider: a service of its own, a little slow, like a real one.
    let provider = Arc::new(SimulatedGateway::with_latency(Duration::from_millis(5)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gateway_addr = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let gateway_task = {
        let (provider, mut stopped) = (Arc::clone(&provider), stopped.clone());
        tokio::spawn(demo_shop::gateway::serve_service(
            listener,
            provider,
            async move {
                let _ = stopped.wait_for(|s| *s).await;
            },
        ))
    };

    // This process places orders and runs the read models; the checkout runs in the child.
    let storage = Storage::from_pool(db.pool.clone())
        .await
        .expect("migrations");
    let shop = Arc::new(Shop::new(storage, Arc::new(HttpGateway::new(gateway_addr))));
    let read_models = shop.spawn_read_models(stopped.clone());
    let meta = Metadata::new_request();
    let mug = Sku::new("MUG").expect("sku");
    let tee = Sku::new("TEE").expect("sku");
    shop.register_product(mug.clone(), "Mug".into(), Money(1_200), &meta)
        .await
        .expect("mug");
    shop.register_product(tee.clone(), "Tee".into(), Money(2_500), &meta)
        .await
        .expect("tee");
    shop.restock(mug.clone(), u32::try_from(orders).expect("fits"), &meta)
        .await
        .expect("restock");
    // Fewer tees than orders for them: some orders are cancelled for want of stock.
    shop.restock(tee.clone(), u32::try_from(orders / 8).expect("fits"), &meta)
        .await
        .expect("restock");

    let mut worker = start_worker(&db.url, gateway_addr);
    let placing = {
        let shop = Arc::clone(&shop);
        let (mug, tee) = (mug.clone(), tee.clone());
        tokio::spawn(async move {
            for i in 0..orders {
                let card = match i % 20 {
                    0 => "card_decline",
                    1 | 2 => "card_flaky",
                    _ => "card_approve",
                };
                let sku = if i % 4 == 0 { tee.clone() } else { mug.clone() };
                shop.place_order(
                    CustomerId::new(),
                    vec![(sku, 1)],
                    card.into(),
                    &Metadata::new_request(),
                )
                .await
                .expect("place");
                tokio::time::sleep(Duration::from_millis(4)).await;
            }
        })
    };
    for _ in 0..kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(50..250))).await;
        worker.kill();
        worker = start_worker(&db.url, gateway_addr);
    }
    placing.await.expect("placing");

    // Every order settles: confirmed or cancelled.
    let started = Instant::now();
    loop {
        let settled: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT stream_id) FROM es_events \
             WHERE event_type IN ('OrderConfirmed', 'OrderCancelled')",
        )
        .fetch_one(&db.pool)
        .await
        .expect("count");
        if settled == orders as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{settled} of {orders} orders settled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // At most one authorisation per order at the provider, and the payments record it.
    let ledger = provider.ledger();
    let mut per_order: HashMap<String, Vec<&demo_shop::gateway::LedgerEntry>> = HashMap::new();
    for entry in &ledger {
        per_order
            .entry(entry.request.reference.clone())
            .or_default()
            .push(entry);
    }
    let twice: Vec<_> = per_order.iter().filter(|(_, e)| e.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} orders authorised more than once, for example {:?}",
        twice.len(),
        twice.first()
    );
    let recorded = sqlx::query(
        "SELECT substr(stream_id, 9) AS order_id, payload->>'authorization' AS code \
         FROM es_events WHERE event_type = 'PaymentAuthorized'",
    )
    .fetch_all(&db.pool)
    .await
    .expect("authorisations");
    let approved = ledger
        .iter()
        .filter(|e| matches!(e.answer, Authorization::Approved { .. }))
        .count();
    assert_eq!(recorded.len(), approved, "every approval is recorded once");
    for row in &recorded {
        let order: String = row.get("order_id");
        let code: String = row.get("code");
        let entries = &per_order[&order];
        assert_eq!(
            entries[0].answer,
            Authorization::Approved {
                authorization: code
            },
            "order {order}"
        );
    }
    let doubled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT stream_id FROM es_events \
         WHERE event_type IN ('PaymentAuthorized', 'PaymentCaptured', 'OrderConfirmed', \
                              'StockReserved', 'ReservationReleased') \
         GROUP BY stream_id, event_type, payload->>'order_id' HAVING count(*) > 1) d",
    )
    .fetch_one(&db.pool)
    .await
    .expect("doubles");
    assert_eq!(doubled, 0, "no effect happened twice");

    // The read models equal a fresh replay of the log.
    let head = shop.storage().store.read_barrier().await.expect("barrier");
    for projection in shop.host().projections() {
        let name = projection.name().to_owned();
        let started = Instant::now();
        let (at, failure, docs) = loop {
            let model = tests::active_model(&db.pool, &name).await;
            if model.0 >= head {
                break model;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{name} did not catch up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(failure, None, "{name} failed");
        let replayed = tests::replay(shop.storage().store.as_ref(), projection.as_ref(), at).await;
        assert!(docs == replayed, "{name} differs from a replay");
    }

    worker.kill();
    stop.send_replace(true);
    for task in read_models {
        task.await.expect("task").expect("read model worker");
    }
    gateway_task.await.expect("task").expect("gateway");
    db.drop_database().await;
}
