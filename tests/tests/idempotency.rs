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
            .filter(|s| !s["last_error"].is_null())
            .collect();
        assert!(failed.is_empty(), "a projection stopped: {failed:?}");
        assert!(Instant::now() < deadline, "sales: {sales}, orders: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.shutdown().await;
}

/// Starts `shop_server serve` on `addr` against `url` and waits until it answers.
async fn start_server(url: &str, addr: std::net::SocketAddr) -> tests::KilledOnDrop {
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_shop_server"))
        .args(["--database-url", url, "serve", "--addr", &addr.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the server");
    let server = tests::KilledOnDrop(child);
    let started = Instant::now();
    while demo_shop::http_client::request(addr, "GET", "/status", None)
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server did not start"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server
}

async fn send_order(
    addr: std::net::SocketAddr,
    key: &str,
) -> Result<(u16, Value), demo_shop::http_client::ClientError> {
    let body = json!({
        "customer_id": Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes()),
        "lines": [{ "sku": "MUG", "quantity": 1 }],
        "card": "card_approve",
    });
    demo_shop::http_client::request_with_headers(
        addr,
        "POST",
        "/orders",
        Some(&body),
        &[("Idempotency-Key", key)],
        Duration::from_secs(10),
    )
    .await
}

/// Requests cut off by a crash of the server (SIGKILL) are sent again with their keys once
/// it is back: each key makes exactly one order, and a key answered before the crash gets
/// the same answer again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_cut_off_by_a_crash_make_one_order_each_when_retried() {
    let db = eventstore_postgres::testing::TestDatabase::create(10).await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let mut server = start_server(&db.url, addr).await;
    let setup = [
        (
            "/products",
            json!({ "sku": "MUG", "name": "Mug", "price_cents": 900 }),
        ),
        ("/products/MUG/restock", json!({ "quantity": 100_000 })),
    ];
    for (path, body) in setup {
        let (status, answer) = demo_shop::http_client::request(addr, "POST", path, Some(&body))
            .await
            .expect("setup");
        assert_eq!(status, 202, "{answer}");
    }
    let keys: Vec<String> = (0..copies().min(300))
        .map(|i| format!("crash-{i}"))
        .collect();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sends: Vec<_> = keys
        .iter()
        .map(|key| {
            let (key, done) = (key.clone(), std::sync::Arc::clone(&done));
            tokio::spawn(async move {
                let answer = send_order(addr, &key).await;
                done.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                answer
            })
        })
        .collect();
    // Crash once a third has been answered: the rest are in flight or not sent yet.
    let started = Instant::now();
    while done.load(std::sync::atomic::Ordering::SeqCst) < keys.len() / 3
        && started.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill();
    let mut first = Vec::new();
    for send in sends {
        first.push(send.await.expect("task").ok());
    }
    let answered = first.iter().flatten().filter(|(s, _)| *s == 202).count();
    eprintln!(
        "{answered} of {} requests were answered before the crash",
        keys.len()
    );
    let _server = start_server(&db.url, addr).await;
    let mut orders = std::collections::HashSet::new();
    for (key, before) in keys.iter().zip(&first) {
        let again = loop {
            match send_order(addr, key).await {
                Ok(answer) if answer.0 == 202 => break answer,
                Ok((503, _)) | Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(other) => panic!("{key}: {other:?}"),
            }
        };
        if let Some(before @ (202, _)) = before {
            assert_eq!(&again, before, "{key} answered otherwise after the crash");
        }
        orders.insert(again.1["order_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(orders.len(), keys.len(), "one order per key");
    let placed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM es_events WHERE event_type = 'OrderPlaced'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(
        placed as usize,
        keys.len(),
        "{answered} were answered before the crash"
    );
    drop(_server);
    db.drop_database().await;
}

/// Keys past their retention are forgotten: the key can name a new request again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_past_their_retention_are_forgotten() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 10).await;
    let restock = |quantity: u32| json!({ "quantity": quantity });
    let first = app
        .post_with_key("/products/MUG/restock", restock(1), "k")
        .await;
    assert_eq!(first.0, 202, "{first:?}");
    let keys = &app.shop.storage().idempotency_keys;
    let an_hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    assert_eq!(keys.prune(an_hour_ago).await.expect("prune"), 0);
    let (status, _) = app
        .post_with_key("/products/MUG/restock", restock(2), "k")
        .await;
    assert_eq!(status, 422, "kept: the key still names the first request");
    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(keys.prune(soon).await.expect("prune"), 1);
    let (status, body) = app
        .post_with_key("/products/MUG/restock", restock(2), "k")
        .await;
    assert_eq!(
        status, 202,
        "forgotten: the key names a new request: {body}"
    );
    assert_eq!(
        count(&app, "Restocked").await,
        3,
        "the new request was carried out (after the product's own restock and the first)"
    );
    // The first request, sent again once the key is forgotten again, is still one command.
    let soon = chrono::Utc::now() + chrono::Duration::seconds(1);
    assert_eq!(keys.prune(soon).await.expect("prune"), 1);
    let again = app
        .post_with_key("/products/MUG/restock", restock(1), "k")
        .await;
    assert_eq!(again.0, 202);
    assert_eq!(
        again.1["position"], first.1["position"],
        "the original answer"
    );
    assert_eq!(count(&app, "Restocked").await, 3);
    app.shutdown().await;
}
