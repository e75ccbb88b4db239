//! The demo shop end to end through its HTTP API, on PostgreSQL, with its workers running.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{spawn_app, TestApp};
use uuid::Uuid;

async fn order(app: &TestApp, customer: Uuid, lines: Value, card: &str) -> String {
    let (status, body) = app
        .post(
            "/orders",
            json!({ "customer_id": customer, "lines": lines, "card": card }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert!(body["position"].is_string(), "{body}");
    body["order_id"].as_str().expect("order id").to_owned()
}

/// Waits until the order is confirmed, cancelled or shipped, and returns its summary.
async fn settled(app: &TestApp, order_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = app.get(&format!("/orders/{order_id}")).await;
        if status == 200
            && ["confirmed", "cancelled", "shipped"]
                .contains(&body["status"].as_str().unwrap_or(""))
        {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "order {order_id} did not settle: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The stock of `sku` once its read model has caught up with the log's head.
async fn stock(app: &TestApp, sku: &str) -> Value {
    settle_read_models(app).await;
    let (status, body) = app.get(&format!("/products/{sku}")).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until every projection has no lag.
async fn settle_read_models(app: &TestApp) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, status) = app.get("/status").await;
        let rows = status.as_array().cloned().unwrap_or_default();
        if rows.len() == 4 && rows.iter().all(|s| s["lag_events"] == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "projections did not catch up: {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_happy_checkout_confirms_ships_and_counts_the_sale() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 5).await;
    let customer = Uuid::new_v4();
    let order_id = order(
        &app,
        customer,
        json!([{ "sku": "MUG", "quantity": 2 }]),
        "card_approve",
    )
    .await;

    let summary = settled(&app, &order_id).await;
    assert_eq!(summary["status"], "confirmed");
    assert_eq!(summary["total"], 2_400);
    let mug = stock(&app, "MUG").await;
    assert_eq!(
        (mug["available"].clone(), mug["reserved"].clone()),
        (json!(3), json!(2))
    );

    let (status, shipped) = app
        .post(&format!("/orders/{order_id}/ship"), json!(null))
        .await;
    assert_eq!(status, 202, "{shipped}");
    let position = shipped["position"].as_str().expect("position").to_owned();
    let (_, summary) = app
        .get(&format!("/orders/{order_id}?min_position={position}"))
        .await;
    assert_eq!(
        summary["status"], "shipped",
        "a query waits for its own write"
    );
    let mug = stock(&app, "MUG").await;
    assert_eq!(
        (
            mug["available"].clone(),
            mug["reserved"].clone(),
            mug["sold"].clone()
        ),
        (json!(3), json!(0), json!(2))
    );

    let (_, history) = app.get(&format!("/customers/{customer}/orders")).await;
    assert_eq!(history[0]["order_id"], order_id.as_str());
    assert_eq!(history[0]["status"], "shipped");
    let (_, sales) = app.get("/sales/daily").await;
    assert_eq!(sales[0]["orders"], 1);
    assert_eq!(sales[0]["revenue"], 2_400);

    // The checkout's commands carry the epoch of the claim they were sent under, and a
    // command id derived from the event they react to.
    let epochs: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT metadata::jsonb #>> '{extra,claim_epoch}' FROM es_events \
         WHERE event_type IN ('StockReserved', 'PaymentRequested', 'OrderConfirmed') \
           AND metadata ? 'command_id'",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("metadata");
    assert!(!epochs.is_empty());
    assert!(
        epochs
            .iter()
            .all(|e| e.as_deref().is_some_and(|e| e.parse::<u64>().is_ok())),
        "{epochs:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_short_of_stock_is_cancelled_and_its_reservations_released() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 5).await;
    app.add_product("TEE", 2_500, 1).await;
    let order_id = order(
        &app,
        Uuid::new_v4(),
        json!([{ "sku": "MUG", "quantity": 3 }, { "sku": "TEE", "quantity": 2 }]),
        "card_approve",
    )
    .await;
    let summary = settled(&app, &order_id).await;
    assert_eq!(summary["status"], "cancelled");
    let reason = summary["cancel_reason"].as_str().expect("reason");
    assert!(
        reason.contains("TEE") && reason.contains("2 requested, 1 available"),
        "{reason}"
    );
    // The checkout releases the reservations after the cancel, in reactions of its own.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (sku, available) in [("MUG", 5), ("TEE", 1)] {
        loop {
            let row = stock(&app, sku).await;
            let now = (row["available"].clone(), row["reserved"].clone());
            if now == (json!(available), json!(0)) {
                break;
            }
            assert!(Instant::now() < deadline, "{sku} not released: {now:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_declined_payment_cancels_the_order_and_restores_stock() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 5).await;
    let order_id = order(
        &app,
        Uuid::new_v4(),
        json!([{ "sku": "MUG", "quantity": 4 }]),
        "card_decline",
    )
    .await;
    let summary = settled(&app, &order_id).await;
    assert_eq!(summary["status"], "cancelled");
    assert!(
        summary["cancel_reason"]
            .as_str()
            .unwrap_or("")
            .contains("payment declined"),
        "{summary}"
    );
    let mug = stock(&app, "MUG").await;
    assert_eq!(
        (mug["available"].clone(), mug["reserved"].clone()),
        (json!(5), json!(0))
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_orders_for_fifty_units_sell_exactly_fifty() {
    let app = spawn_app().await;
    app.add_product("HOT", 500, 50).await;
    let mut placing = Vec::new();
    for _ in 0..200 {
        let addr = app.addr;
        placing.push(tokio::spawn(async move {
            let body = json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "HOT", "quantity": 1 }], "card": "card_approve" });
            demo_shop::http_client::request(addr, "POST", "/orders", Some(&body)).await.expect("request")
        }));
    }
    let mut order_ids = Vec::new();
    for task in placing {
        let (status, body) = task.await.expect("task");
        assert_eq!(status, 202, "{body}");
        order_ids.push(body["order_id"].as_str().expect("id").to_owned());
    }
    let (mut confirmed, mut cancelled) = (0, 0);
    for id in &order_ids {
        match settled(&app, id).await["status"].as_str() {
            Some("confirmed") => confirmed += 1,
            Some("cancelled") => cancelled += 1,
            other => panic!("order {id} ended {other:?}"),
        }
    }
    assert_eq!((confirmed, cancelled), (50, 150));
    let hot = stock(&app, "HOT").await;
    assert_eq!(
        (hot["available"].clone(), hot["reserved"].clone()),
        (json!(0), json!(50))
    );
    let (_, sales) = app.get("/sales/daily").await;
    assert_eq!(sales[0]["orders"], 50);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rebuild_of_every_read_model_equals_the_live_one() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 3).await;
    app.add_product("TEE", 2_500, 2).await;
    let customers = [Uuid::new_v4(), Uuid::new_v4()];
    let mut orders = Vec::new();
    for (i, card) in [
        "card_approve",
        "card_decline",
        "card_approve",
        "card_flaky",
        "card_approve",
    ]
    .iter()
    .enumerate()
    {
        let lines =
            json!([{ "sku": if i % 2 == 0 { "MUG" } else { "TEE" }, "quantity": 1 + i % 2 }]);
        orders.push(order(&app, customers[i % 2], lines, card).await);
    }
    for id in &orders {
        settled(&app, id).await;
    }
    settle_read_models(&app).await;

    let snapshot = || async {
        let mut all = vec![
            app.get("/products").await.1,
            app.get("/sales/daily").await.1,
        ];
        for c in &customers {
            all.push(app.get(&format!("/customers/{c}/orders")).await.1);
        }
        for id in &orders {
            all.push(app.get(&format!("/orders/{id}")).await.1);
        }
        all
    };
    let live = snapshot().await;
    for name in [
        "order_summaries",
        "product_stock",
        "customer_orders",
        "daily_sales",
    ] {
        let report = app
            .shop
            .host()
            .rebuild(name, |_| {})
            .await
            .expect("rebuild");
        assert!(
            report.generation >= 2,
            "{name} was rebuilt into a new generation"
        );
    }
    assert_eq!(snapshot().await, live);
    let refused = app.shop.host().rebuild("checkout", |_| {}).await;
    assert!(
        matches!(refused, Err(projections::Error::UnknownProjection(_))),
        "the checkout is a process manager, not a read model, and is never replayed: {refused:?}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn malformed_requests_get_a_4xx_and_store_nothing() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 5).await;
    settle_read_models(&app).await;
    let before = app.event_count().await;
    let customer = Uuid::new_v4();
    let unknown_order = Uuid::new_v4();
    let raw = |method: &str, path: &str, body: &str, content_type: Option<&str>| {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{}Content-Length: {}\r\n\r\n{body}",
            content_type.map(|c| format!("Content-Type: {c}\r\n")).unwrap_or_default(),
            body.len()
        );
        (head, app.addr)
    };
    let mut cases: Vec<(String, u16, Value)> = Vec::new();
    let json_cases: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "MUG", "quantity": 0 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "NOPE", "quantity": 1 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "MUG", "quantity": 1 }, { "sku": "MUG", "quantity": 1 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "MUG", "quantity": 1 }], "card": "" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": "not-a-uuid", "lines": [{ "sku": "MUG", "quantity": 1 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "MUG", "quantity": 1 }], "card": "card_approve", "coupon": "FREE" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "M-U-G", "quantity": 1 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/orders".into(),
            json!({ "customer_id": customer, "lines": [{ "sku": "MUG", "quantity": -1 }], "card": "card_approve" }),
        ),
        (
            "POST",
            "/products".into(),
            json!({ "sku": "MUG", "name": "Again", "price_cents": 100 }),
        ),
        (
            "POST",
            "/products".into(),
            json!({ "sku": "CUP", "name": "", "price_cents": 100 }),
        ),
        (
            "POST",
            "/products".into(),
            json!({ "sku": "CUP", "name": "Cup", "price_cents": -5 }),
        ),
        (
            "POST",
            "/products/NOPE/restock".into(),
            json!({ "quantity": 3 }),
        ),
        (
            "POST",
            "/products/MUG/restock".into(),
            json!({ "quantity": 0 }),
        ),
        (
            "POST",
            format!("/orders/{unknown_order}/cancel"),
            json!({ "reason": "gone" }),
        ),
        ("POST", format!("/orders/{unknown_order}/ship"), json!(null)),
        ("POST", "/orders/not-a-uuid/ship".into(), json!(null)),
        ("GET", "/orders/xyz".into(), json!(null)),
    ];
    for (method, path, body) in json_cases {
        let (status, answer) = demo_shop::http_client::request(
            app.addr,
            method,
            &path,
            (method == "POST").then_some(&body),
        )
        .await
        .expect("request");
        cases.push((format!("{method} {path} {body}"), status, answer));
    }
    for (label, (head, addr)) in [
        (
            "broken JSON",
            raw(
                "POST",
                "/orders",
                "{\"customer_id\": ",
                Some("application/json"),
            ),
        ),
        (
            "no content type",
            raw(
                "POST",
                "/products",
                "{\"sku\":\"CUP\",\"name\":\"Cup\",\"price_cents\":1}",
                None,
            ),
        ),
        (
            "bad min_position",
            raw("GET", "/products?min_position=soon", "", None),
        ),
    ] {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status: u16 = response
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b)
            .unwrap_or("");
        cases.push((
            label.to_owned(),
            status,
            serde_json::from_str(body).unwrap_or(Value::Null),
        ));
    }
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (label, status, body) in &cases {
        assert!((400..500).contains(status), "{label}: got {status} {body}");
        assert!(
            body["error"].is_string(),
            "{label}: a JSON error body, got {body}"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.event_count().await,
        before,
        "bad requests stored nothing"
    );
    app.shutdown().await;
}

/// A query asked to wait for a position its read model does not reach in time (here it is
/// paused) answers 503 with a JSON body saying it is behind, never stale data as if fresh;
/// a position past the end of the log, which no command returned, is refused at once (422).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_model_behind_min_position_answers_503() {
    let app = spawn_app().await;
    app.add_product("late_1", 500, 3).await;
    app.shop
        .host()
        .pause("order_summaries")
        .await
        .expect("pause");
    let (status, placed) = app
        .post(
            "/orders",
            json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "late_1", "quantity": 1 }], "card": "card_approve" }),
        )
        .await;
    assert_eq!(status, 202, "{placed}");
    let (order_id, position) = (
        placed["order_id"].as_str().expect("id"),
        placed["position"].as_str().expect("position"),
    );
    let (status, body) = app
        .get(&format!("/orders/{order_id}?min_position={position}"))
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["kind"], "behind", "{body}");
    assert_eq!(body["projection"], "order_summaries", "{body}");
    assert!(body["checkpoint"].is_string(), "{body}");

    let (status, body) = app
        .get(&format!("/orders/{order_id}?min_position=999999999999/0"))
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]
        .as_str()
        .expect("error")
        .contains("beyond the end of the log"));

    app.shop
        .host()
        .resume("order_summaries")
        .await
        .expect("resume");
    let (status, body) = app
        .get(&format!("/orders/{order_id}?min_position={position}"))
        .await;
    assert_eq!(status, 200, "resumed, it catches up: {body}");
    app.shutdown().await;
}
