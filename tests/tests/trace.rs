//! One order's trace, followed from the HTTP request through the shop's events, its checkout
//! steps and its relay, over a broker, to the warehouse's handler and the events it stores,
//! and back: every event of the round trip carries the request's trace id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{EventFilter, EventStore, Metadata, Position, RecordedEvent, StreamId};
use demo_shop::domain::money::{Money, Sku};
use demo_shop::gateway::{SimulatedGateway, CARD_APPROVE, CARD_UNAVAILABLE};
use demo_shop::http_client::{request, request_with_headers};
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use demo_shop::warehouse::Warehouse;
use serde_json::json;
use uuid::Uuid;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

fn trace_id(event: &RecordedEvent) -> Option<String> {
    event.metadata.trace().map(|t| t.trace_id().to_owned())
}

async fn all_events(store: &dyn EventStore) -> Vec<RecordedEvent> {
    store
        .read_all(Position::START, 10_000, &EventFilter::all())
        .await
        .expect("read the log")
        .events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orders_trace_runs_from_the_request_to_the_warehouse_and_back() {
    let broker: Arc<dyn messaging::Broker> = Arc::new(messaging::ChannelBroker::new());
    // A short payment timeout: the order whose gateway never answers is cancelled by the
    // checkout's deadline, a step no event starts.
    let shop = Arc::new(
        Shop::new(Storage::in_memory(), Arc::new(SimulatedGateway::new()))
            .with_payment_timeout(Duration::from_secs(1)),
    );
    let warehouse = Warehouse::new(Storage::in_memory());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut workers = shop.spawn_workers(stopped.clone());
    workers.extend(shop.spawn_messaging(Arc::clone(&broker), stopped.clone()));
    workers.extend(warehouse.spawn_workers(Arc::clone(&broker), stopped.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let mut serving = stopped.clone();
    let server = tokio::spawn(demo_shop::http::serve(
        listener,
        demo_shop::http::router(Arc::clone(&shop)),
        async move {
            let _ = serving.wait_for(|s| *s).await;
        },
    ));

    let mug = Sku::new("MUG").expect("sku");
    let meta = Metadata::new_request();
    shop.register_product(mug.clone(), "Mug".into(), Money(1_200), &meta)
        .await
        .expect("register");
    shop.restock(mug, 10, &meta).await.expect("restock");
    let order_with = |card: &str| json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "MUG", "quantity": 1 }], "card": card });
    let order = |_: Uuid| order_with(CARD_APPROVE);
    let caller = format!("00-{TRACE_ID}-00f067aa0ba902b7-01");
    let (status, traced) = request_with_headers(
        addr,
        "POST",
        "/orders",
        Some(&order(Uuid::new_v4())),
        &[("traceparent", &caller)],
        Duration::from_secs(10),
    )
    .await
    .expect("place the traced order");
    assert_eq!(status, 202, "{traced}");
    let (status, untraced) = request(addr, "POST", "/orders", Some(&order(Uuid::new_v4())))
        .await
        .expect("place an order without a trace");
    assert_eq!(status, 202, "{untraced}");

    let timed_out_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, timed_out) = request_with_headers(
        addr,
        "POST",
        "/orders",
        Some(&order_with(CARD_UNAVAILABLE)),
        &[(
            "traceparent",
            &format!("00-{timed_out_trace}-b7ad6b7169203331-01"),
        )],
        Duration::from_secs(10),
    )
    .await
    .expect("place an order whose payment never settles");
    assert_eq!(status, 202, "{timed_out}");

    // Both orders go round: the warehouse ships them and tells the shop.
    let started = Instant::now();
    for placed in [&traced, &untraced] {
        let id = placed["order_id"].as_str().expect("order id");
        loop {
            let (_, summary) = request(addr, "GET", &format!("/orders/{id}"), None)
                .await
                .expect("order");
            if summary["status"] == "shipped" {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "{summary}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The shop: every event of the traced order's stream (placed, confirmed by the
    // checkout's steps, shipped on the warehouse's message) carries the trace id.
    let traced_id = traced["order_id"].as_str().expect("order id");
    let stream = StreamId::new(format!("order-{traced_id}")).expect("stream");
    let events = shop
        .storage()
        .store
        .read_stream(&stream, 0, 100)
        .await
        .expect("read");
    let types: Vec<&str> = events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert!(types.contains(&"OrderShipped"), "{types:?}");
    for event in &events {
        assert_eq!(trace_id(event).as_deref(), Some(TRACE_ID), "{event:?}");
    }
    // The untraced order got a trace of its own, started by the shop.
    let untraced_id = untraced["order_id"].as_str().expect("order id");
    let other = shop
        .storage()
        .store
        .read_stream(
            &StreamId::new(format!("order-{untraced_id}")).expect("stream"),
            0,
            100,
        )
        .await
        .expect("read");
    let other_trace = trace_id(&other[0]).expect("a trace started by the shop");
    assert_ne!(other_trace, TRACE_ID);
    assert!(other
        .iter()
        .all(|e| trace_id(e).as_deref() == Some(other_trace.as_str())));

    // The order cancelled by the payment deadline: the cancellation, started by no event,
    // is in the request's trace too.
    let timed_out_id = timed_out["order_id"].as_str().expect("order id");
    loop {
        let (_, summary) = request(addr, "GET", &format!("/orders/{timed_out_id}"), None)
            .await
            .expect("order");
        if summary["status"] == "cancelled" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{summary}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancelled = shop
        .storage()
        .store
        .read_stream(
            &StreamId::new(format!("order-{timed_out_id}")).expect("stream"),
            0,
            100,
        )
        .await
        .expect("read");
    assert!(cancelled
        .iter()
        .any(|e| e.event.event_type == "OrderCancelled"));
    for event in &cancelled {
        assert_eq!(
            trace_id(event).as_deref(),
            Some(timed_out_trace),
            "{event:?}"
        );
    }

    // The warehouse: its handler ran in the order's trace, so what it stored carries it.
    let shipped: Vec<RecordedEvent> = all_events(warehouse.storage().store.as_ref())
        .await
        .into_iter()
        .filter(|e| e.event.payload.to_string().contains(traced_id))
        .collect();
    assert!(
        !shipped.is_empty(),
        "the warehouse stored nothing for the order"
    );
    for event in &shipped {
        assert_eq!(trace_id(event).as_deref(), Some(TRACE_ID), "{event:?}");
    }

    stop.send_replace(true);
    for worker in workers {
        worker.await.expect("join").expect("a worker stops cleanly");
    }
    server.await.expect("join").expect("server");
}
