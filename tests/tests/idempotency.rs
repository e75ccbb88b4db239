//! Retried requests over HTTP: an `Idempotency-Key` makes a request happen once, across
//! concurrent copies and restarts; values out of the domain's range are refused before they
//! reach it.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{spawn_app, TestApp};
use uuid::Uuid;

async fn count(app: &TestApp, event_type: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM es_events WHERE event_type = $1")
        .bind(event_type)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

/// How many copies of one request are sent at once.
fn copies() -> usize {
    std::env::var("SHOP_IDEMPOTENT_COPIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_sent_a_thousand_times_places_one_order_even_across_a_restart() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 10_000).await;
    let order = json!({
        "customer_id": Uuid::new_v4(),
        "lines": [{ "sku": "MUG", "quantity": 1 }],
        "card": "card_approve",
    });
    let key = Uuid::new_v4().to_string();
    let sends = (0..copies()).map(|_| {
        let (addr, order, key) = (app.addr, order.clone(), key.clone());
        tokio::spawn(async move {
            demo_shop::http_client::request_with_headers(
                addr,
                "POST",
                "/orders",
                Some(&order),
                &[("Idempotency-Key", &key)],
                Duration::from_secs(120),
            )
            .await
            .expect("request")
        })
    });
    let mut answers = Vec::new();
    for send in sends {
        answers.push(send.await.expect("task"));
    }
    let first = answers[0].clone();
    assert_eq!(first.0, 202, "{first:?}");
    assert!(
        answers.iter().all(|a| a == &first),
        "the answers differ: {:?}",
        answers.iter().find(|a| *a != &first)
    );
    assert_eq!(count(&app, "OrderPlaced").await, 1);

    let app = app.restart().await;
    let again = app.post_with_key("/orders", order.clone(), &key).await;
    assert_eq!(again, first, "the answer after a restart");
    assert_eq!(count(&app, "OrderPlaced").await, 1);

    // The same key with another body is refused, and changes nothing.
    let other = json!({
        "customer_id": Uuid::new_v4(),
        "lines": [{ "sku": "MUG", "quantity": 2 }],
        "card": "card_approve",
    });
    let (status, body) = app.post_with_key("/orders", other, &key).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("another request"),
        "{body}"
    );
    // …and so is the same key on another route.
    let (status, body) = app
        .post_with_key("/products/MUG/restock", json!({ "quantity": 1 }), &key)
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(count(&app, "OrderPlaced").await, 1);
    assert_eq!(count(&app, "Restocked").await, 1);

    // A rejected request is answered the same way the second time, too.
    let bad_key = Uuid::new_v4().to_string();
    let unknown = json!({
        "customer_id": Uuid::new_v4(),
        "lines": [{ "sku": "NOPE", "quantity": 1 }],
        "card": "card_approve",
    });
    let refused = app
        .post_with_key("/orders", unknown.clone(), &bad_key)
        .await;
    assert_eq!(refused.0, 422, "{refused:?}");
    assert_eq!(
        app.post_with_key("/orders", unknown, &bad_key).await,
        refused
    );

    // Without a key, the same body is a new order each time.
    assert_eq!(app.post("/orders", order.clone()).await.0, 202);
    assert_eq!(app.post("/orders", order).await.0, 202);
    assert_eq!(count(&app, "OrderPlaced").await, 3);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_key_is_refused() {
    let app = spawn_app().await;
    let long = "k".repeat(201);
    for key in ["", long.as_str(), "with space"] {
        let (status, body) = app
            .post_with_key(
                "/products",
                json!({ "sku": "A", "name": "A", "price_cents": 1 }),
                key,
            )
            .await;
        assert_eq!(status, 400, "key {key:?}: {body}");
    }
    assert_eq!(app.event_count().await, 0);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prices_and_quantities_out_of_range_are_refused_with_422() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 10).await;
    let before = app.event_count().await;
    let products = [
        json!({ "sku": "FREE", "name": "Free", "price_cents": 0 }),
        json!({ "sku": "HUGE", "name": "Huge", "price_cents": 100_000_001u64 }),
        json!({ "sku": "WRAP", "name": "Wrap", "price_cents": 9_223_372_036_854_775_807u64 }),
        json!({ "sku": "OVER", "name": "Over", "price_cents": 1.8446744073709552e19 }),
        json!({ "sku": "NEG", "name": "Negative", "price_cents": -1 }),
    ];
    for body in products {
        let (status, answer) = app.post("/products", body.clone()).await;
        assert_eq!(status, 422, "{body} → {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    for quantity in [json!(0), json!(1_000_001), json!(4_294_967_296u64)] {
        let (status, answer) = app
            .post("/products/MUG/restock", json!({ "quantity": quantity }))
            .await;
        assert_eq!(status, 422, "restock {quantity} → {answer}");
        let order = json!({
            "customer_id": Uuid::new_v4(),
            "lines": [{ "sku": "MUG", "quantity": quantity }],
            "card": "card_approve",
        });
        let (status, answer) = app.post("/orders", order).await;
        assert_eq!(status, 422, "order of {quantity} → {answer}");
    }
    assert_eq!(app.event_count().await, before, "nothing was stored");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_largest_orders_the_shop_accepts_keep_daily_sales_running() {
    let app = spawn_app().await;
    app.add_product("GOLD", 100_000_000, 1_000_000).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, body) = app
            .post(
                "/orders",
                json!({
                    "customer_id": Uuid::new_v4(),
                    "lines": [{ "sku": "GOLD", "quantity": 300_000 }],
                    "card": "card_approve",
                }),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["order_id"].as_str().expect("id").to_owned());
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, sales) = app.get("/sales/daily").await;
        if sales[0]["orders"] == 3 {
            let expected: u128 = 3 * 300_000 * 100_000_000;
            assert_eq!(
                sales[0]["revenue"].as_u64().map(u128::from),
                Some(expected),
                "{sales}"
            );
            break;
        }
        let (_, status) = app.get("/status").await;
        let failed: Vec<&Value> = status
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| !s["failure"].is_null())
            .collect();
        assert!(failed.is_empty(), "a projection stopped: {failed:?}");
        assert!(Instant::now() < deadline, "sales: {sales}, orders: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}
