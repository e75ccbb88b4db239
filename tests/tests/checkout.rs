//! The checkout, one instance per order, through the demo's HTTP API on PostgreSQL: an order
//! whose payment keeps failing retries alone, one that fails for good is parked for an
//! operator, and an order whose payment never settles is cancelled once by its deadline.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tests::{spawn_app, spawn_app_with, AppOptions, TestApp};
use uuid::Uuid;

async fn order(app: &TestApp, sku: &str, card: &str) -> String {
    let (status, body) = app
        .post(
            "/orders",
            json!({
                "customer_id": Uuid::new_v4(),
                "lines": [{ "sku": sku, "quantity": 1 }],
                "card": card,
            }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    body["order_id"].as_str().expect("order id").to_owned()
}

/// The order's status as the order summaries show it.
async fn status_of(app: &TestApp, order_id: &str) -> String {
    let (_, body) = app.get(&format!("/orders/{order_id}")).await;
    body["status"].as_str().unwrap_or("").to_owned()
}

async fn until_status(app: &TestApp, order_id: &str, wanted: &str, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let status = status_of(app, order_id).await;
        if status == wanted {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "order {order_id} is {status:?}, not {wanted:?}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn checkout_status(app: &TestApp) -> Value {
    let (status, body) = app.get("/status/checkout").await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits (up to 5 s) until `sku` has `units` available: its stock was given back.
async fn until_available(app: &TestApp, sku: &str, units: u64) {
    let started = Instant::now();
    while available(app, sku).await != units {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the stock of {sku} was not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn available(app: &TestApp, sku: &str) -> u64 {
    let (_, body) = app.get(&format!("/products/{sku}")).await;
    body["available"].as_u64().unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn orders_on_failing_cards_do_not_hold_up_an_ordinary_one() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 1_000).await;
    let mut flaky = Vec::new();
    for _ in 0..20 {
        flaky.push(order(&app, "MUG", "card_flaky").await);
    }
    // And ten whose gateway never answers: they retry until their deadline.
    for _ in 0..10 {
        order(&app, "MUG", "card_unavailable").await;
    }
    let ordinary = order(&app, "MUG", "card_approve").await;
    let took = until_status(&app, &ordinary, "confirmed", Duration::from_secs(2)).await;
    assert!(took < Duration::from_secs(2), "{took:?}");
    for id in &flaky {
        until_status(&app, id, "confirmed", Duration::from_secs(30)).await;
    }
    let troubled = checkout_status(&app).await;
    assert_eq!(troubled["summary"]["parked"], 0, "{troubled}");
    let retrying = troubled["troubled"].as_array().cloned().unwrap_or_default();
    assert_eq!(retrying.len(), 10, "the unavailable ones retry: {troubled}");
    assert!(retrying.iter().all(|i| i["state"] == "retrying"
        && i["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("unavailable")));
    // The flaky card's first call under each key failed; the second authorised: one each.
    let ledger = app.gateway.ledger();
    assert_eq!(ledger.len(), 21, "{ledger:?}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_order_waits_for_an_operator_and_stops_no_other() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 10).await;
    let bad = order(&app, "MUG", "card_invalid").await;
    let good = order(&app, "MUG", "card_approve").await;
    until_status(&app, &good, "confirmed", Duration::from_secs(5)).await;
    let started = Instant::now();
    let parked = loop {
        let body = checkout_status(&app).await;
        if body["summary"]["parked"] == 1 {
            break body["troubled"][0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(parked["instance"], bad.as_str());
    assert_eq!(parked["state"], "parked");
    assert!(
        parked["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("malformed"),
        "{parked}"
    );
    // Later orders still go through.
    let later = order(&app, "MUG", "card_approve").await;
    until_status(&app, &later, "confirmed", Duration::from_secs(5)).await;
    assert_eq!(
        available(&app, "MUG").await,
        7,
        "the parked order holds its unit"
    );

    // The operator cancels the order and skips the input it is parked at: the checkout goes
    // on with the cancellation and gives the stock back.
    let (status, body) = app
        .post(
            &format!("/orders/{bad}/cancel"),
            json!({ "reason": "card refused" }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    let order_id = bad.parse().expect("uuid");
    app.shop
        .resolve_checkout(
            demo_shop::domain::money::OrderId(order_id),
            projections::Resolution::Skip,
        )
        .await
        .expect("skip");
    until_available(&app, "MUG", 8).await;
    let after = checkout_status(&app).await;
    assert_eq!(after["summary"]["parked"], 0, "{after}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_whose_payment_never_settles_is_cancelled_once_by_its_deadline() {
    let app = spawn_app_with(AppOptions {
        payment_timeout: Duration::from_secs(2),
    })
    .await;
    app.add_product("MUG", 1_200, 5).await;
    let placing = Instant::now();
    let stuck = order(&app, "MUG", "card_unavailable").await;
    let paid = order(&app, "MUG", "card_approve").await;
    until_status(&app, &paid, "confirmed", Duration::from_secs(5)).await;
    // The paid order's deadline is dropped by the reaction that confirmed it, as it ends.
    let started = Instant::now();
    loop {
        let body = checkout_status(&app).await;
        if body["summary"]["scheduled_deadlines"] == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "only the unpaid order waits: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    until_status(&app, &stuck, "cancelled", Duration::from_secs(10)).await;
    // Its deadline is 2 s after it was placed (the database's clock; a little slack for
    // the two clocks' reading).
    let took = placing.elapsed();
    assert!(
        took >= Duration::from_millis(1_900),
        "cancelled before its deadline: {took:?} after it was placed"
    );
    let (_, summary) = app.get(&format!("/orders/{stuck}")).await;
    assert!(
        summary["cancel_reason"]
            .as_str()
            .or(summary["reason"].as_str())
            .unwrap_or("")
            .contains("payment not settled"),
        "{summary}"
    );
    // Its stock comes back, the instance stops retrying, and nothing fires again.
    until_available(&app, "MUG", 4).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let cancelled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM es_events WHERE event_type = 'OrderCancelled' AND stream_id = $1",
    )
    .bind(format!("order-{stuck}"))
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(cancelled, 1);
    // Its payment is voided, at the gateway too: a late approval under its key is declined.
    let voided: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM es_events WHERE event_type = 'PaymentVoided' AND stream_id = $1",
    )
    .bind(format!("payment-{stuck}"))
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(voided, 1);
    let key = cqrs_core::CommandId::caused_by(stuck.parse().expect("uuid"), "authorize");
    let late = app.gateway.decide(
        &key.to_string(),
        &demo_shop::gateway::AuthorizationRequest {
            reference: stuck.clone(),
            card: "card_approve".into(),
            amount_cents: 1_200,
        },
    );
    assert!(
        matches!(late, Ok(demo_shop::gateway::Authorization::Declined { .. })),
        "{late:?}"
    );
    let fired: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM process_inputs WHERE process = 'checkout' AND deadline IS NOT NULL \
         AND done AND instance = $1",
    )
    .bind(&stuck)
    .fetch_one(&app.db.pool)
    .await
    .expect("count");
    assert_eq!(fired, 1);
    let body = checkout_status(&app).await;
    assert_eq!(body["troubled"], json!([]), "{body}");
    assert_eq!(body["summary"]["scheduled_deadlines"], 0, "{body}");
    app.shutdown().await;
}

/// An order the write side took before prices were bounded (a product at price 0) cannot be
/// paid: the checkout cancels it and gives its stock back, and every other order goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_order_from_before_prices_were_bounded_is_cancelled_not_stuck() {
    use cqrs_core::{ExpectedVersion, Metadata, NewEvent, StreamId};
    use demo_shop::domain::money::{CustomerId, Money, OrderId, Sku};
    use demo_shop::domain::order::{OrderEvent, OrderLine};

    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 10).await;
    let legacy = OrderId::new();
    let placed = OrderEvent::OrderPlaced {
        order_id: legacy,
        customer_id: CustomerId::new(),
        lines: vec![OrderLine {
            sku: Sku::new("MUG").expect("sku"),
            quantity: 1,
            unit_price: Money(0),
        }],
        total: Money(0),
        card: "card_approve".into(),
    };
    app.shop
        .storage()
        .store
        .append(
            &StreamId::for_aggregate("order", &legacy.to_string()).expect("stream"),
            ExpectedVersion::NoStream,
            vec![NewEvent::from_domain(&placed).expect("encode")],
            &Metadata::new_request(),
        )
        .await
        .expect("append");
    let ordinary = order(&app, "MUG", "card_approve").await;
    until_status(&app, &ordinary, "confirmed", Duration::from_secs(5)).await;
    until_status(
        &app,
        &legacy.to_string(),
        "cancelled",
        Duration::from_secs(5),
    )
    .await;
    until_available(&app, "MUG", 9).await;
    let body = checkout_status(&app).await;
    assert_eq!(body["summary"]["parked"], 0, "{body}");
    app.shutdown().await;
}

/// A payment timeout too long to add to the clock means "never", not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_payment_timeout_is_never_due() {
    let app = spawn_app_with(AppOptions {
        payment_timeout: Duration::MAX,
    })
    .await;
    app.add_product("MUG", 1_200, 5).await;
    let stuck = order(&app, "MUG", "card_unavailable").await;
    let paid = order(&app, "MUG", "card_approve").await;
    until_status(&app, &paid, "confirmed", Duration::from_secs(5)).await;
    let body = checkout_status(&app).await;
    assert_eq!(body["summary"]["parked"], 0, "{body}");
    assert_eq!(status_of(&app, &stuck).await, "stock_reserved");
    app.shutdown().await;
}
