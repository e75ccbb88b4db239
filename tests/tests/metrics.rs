//! `/metrics` is scraped like Prometheus would: every documented metric is there, and the
//! figures move as they should (appends and requests count up; a projection's lag rises
//! while events are held back and returns to 0 once it has caught up).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::spawn_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The metric families `demo_shop::metrics` documents, with their types: the contract.
const DOCUMENTED: &[(&str, &str)] = &[
    ("es_appends", "counter"),
    ("es_append_duration_seconds", "histogram"),
    ("es_projection_position_commit", "gauge"),
    ("es_projection_position_sequence", "gauge"),
    ("es_projection_lag_events", "gauge"),
    ("es_projection_lag_seconds", "gauge"),
    ("es_log_held_back_events", "gauge"),
    ("es_projection_state", "gauge"),
    ("es_projection_dead_letters", "gauge"),
    ("es_projection_lease_held", "gauge"),
    ("es_projection_lease_holder", "gauge"),
    ("es_process_instances", "gauge"),
    ("es_process_due_inputs", "gauge"),
    ("es_metrics_refresh_errors", "counter"),
    ("http_requests", "counter"),
    ("http_request_duration_seconds", "histogram"),
];

/// `GET /metrics`: the content type and the text.
async fn scrape(addr: SocketAddr) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .expect("a content type");
    (content_type, body.to_owned())
}

/// The samples of `name` (labels as written, value).
fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let labels = series.strip_prefix(name)?;
            if !(labels.is_empty() || labels.starts_with('{')) {
                return None; // another metric whose name starts with `name`
            }
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `name` with exactly these `labels` (`{a="b",c="d"}`).
fn value(text: &str, name: &str, labels: &str) -> Option<f64> {
    samples(text, name)
        .into_iter()
        .find(|(l, _)| l == labels)
        .map(|(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_metric_is_scraped_and_moves() {
    let app = spawn_app().await;
    // A relay run on its own, outside the host (as `serve` runs its relays): its status is
    // listed, but only its host could list its dead letters.
    let (stop_relay, relay_stopped) = tokio::sync::watch::channel(false);
    let relay = demo_shop::integration::spawn_relay(
        app.shop.host(),
        Arc::new(messaging::ChannelBroker::new()),
        "relay_orders",
        "shop",
        "order",
        relay_stopped,
    );
    app.add_product("MUG", 1_200, 50).await;
    let order = json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "MUG", "quantity": 1 }], "card": "card_ok" });
    let (status, placed) = app.post("/orders", order.clone()).await;
    assert_eq!(status, 202, "{placed}");
    let (status, _) = app.get("/no/such/route").await;
    assert_eq!(status, 404);
    // Settled: the order confirmed, every projection caught up.
    let order_id = placed["order_id"].as_str().expect("an order id").to_owned();
    let started = Instant::now();
    loop {
        let (_, summary) = app.get(&format!("/orders/{order_id}")).await;
        let (_, status) = app.get("/status").await;
        let caught_up = status
            .as_array()
            .is_some_and(|rows| rows.iter().all(|s| s["lag_events"] == 0));
        let settled =
            ["confirmed", "cancelled"].contains(&summary["status"].as_str().unwrap_or(""));
        if settled && caught_up {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{summary} {status}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let (content_type, text) = scrape(app.addr).await;
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    for (family, kind) in DOCUMENTED {
        let declared = format!("# TYPE {family} {kind}");
        assert!(
            text.lines().any(|l| l == declared),
            "{family} ({kind}) is documented but not scraped:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| !l.starts_with('#') && l.starts_with(family)),
            "{family} has no sample:\n{text}"
        );
    }
    // Every outcome is there from the start (at 0), so rate() never sees a missing series.
    assert_eq!(
        value(&text, "es_appends_total", r#"{outcome="conflict"}"#),
        Some(0.0)
    );
    // Appends and requests count up, by outcome and by route template.
    assert!(value(&text, "es_appends_total", r#"{outcome="appended"}"#).unwrap_or(0.0) >= 3.0);
    assert!(
        value(&text, "es_append_duration_seconds_count", "").unwrap_or(0.0) >= 3.0,
        "{text}"
    );
    let posted = r#"{method="POST",route="/orders",status="202"}"#;
    assert_eq!(
        value(&text, "http_requests_total", posted),
        Some(1.0),
        "{text}"
    );
    let stock = r#"{method="POST",route="/products/{sku}/restock",status="202"}"#;
    assert_eq!(
        value(&text, "http_requests_total", stock),
        Some(1.0),
        "{text}"
    );
    let unmatched = r#"{method="GET",route="unmatched",status="404"}"#;
    assert_eq!(
        value(&text, "http_requests_total", unmatched),
        Some(1.0),
        "{text}"
    );
    // Caught up: every projection at lag 0, running, its lease held by this process.
    let of = |p: &str| format!(r#"{{projection="{p}"}}"#);
    for p in ["order_summaries", "product_stock"] {
        assert_eq!(
            value(&text, "es_projection_lag_events", &of(p)),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "es_projection_lag_seconds", &of(p)),
            Some(0.0),
            "{text}"
        );
        assert!(value(&text, "es_projection_position_commit", &of(p)).unwrap_or(0.0) > 0.0);
        let failed = format!(r#"{{projection="{p}",state="failed"}}"#);
        assert_eq!(
            value(&text, "es_projection_state", &failed),
            Some(0.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "es_projection_lease_held", &of(p)),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            value(&text, "es_projection_dead_letters", &of(p)),
            Some(0.0),
            "{text}"
        );
        let running = format!(r#"{{projection="{p}",state="running"}}"#);
        assert_eq!(
            value(&text, "es_projection_state", &running),
            Some(1.0),
            "{text}"
        );
        assert!(
            samples(&text, "es_projection_lease_holder")
                .iter()
                .any(|(l, v)| l.contains(&format!(r#"projection="{p}""#)) && *v == 1.0),
            "{text}"
        );
    }

    let relay_seen = Instant::now();
    while value(
        &scrape(app.addr).await.1,
        "es_projection_lag_events",
        &of("relay_orders"),
    )
    .is_none()
    {
        assert!(
            relay_seen.elapsed() < Duration::from_secs(10),
            "the relay never shows"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Lag rises while events are held back: a transaction that took its id before the
    // appends below keeps every reader from seeing them until it ends.
    let mut blocker = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT pg_current_xact_id()")
        .execute(&mut *blocker)
        .await
        .expect("an id");
    for _ in 0..5 {
        let (status, body) = app.post("/orders", order.clone()).await;
        assert_eq!(status, 202, "{body}");
    }
    let (_, text) = scrape(app.addr).await;
    let lag = value(&text, "es_projection_lag_events", &of("order_summaries")).unwrap_or(0.0);
    let held = value(&text, "es_log_held_back_events", "");
    assert!(
        lag >= 5.0,
        "lag {lag} while 5 orders are held back:\n{text}"
    );
    assert!(held.unwrap_or(0.0) >= 5.0, "{text}");
    // And returns to 0 once the projections have caught up: applying five orders and the
    // next idle checkpoint (a second at most) take well under three seconds here.
    blocker.commit().await.expect("commit");
    let released = Instant::now();
    loop {
        let (_, text) = scrape(app.addr).await;
        let lags: Vec<f64> = samples(&text, "es_projection_lag_events")
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        if !lags.is_empty() && lags.iter().all(|v| *v == 0.0) {
            assert_eq!(
                value(&text, "es_projection_lag_seconds", &of("order_summaries")),
                Some(0.0)
            );
            break;
        }
        assert!(
            released.elapsed() < Duration::from_secs(3),
            "lag still {lags:?} 3 s after the events were released:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_relay.send_replace(true);
    relay.await.expect("join").expect("the relay stops cleanly");
    app.shutdown().await;
}
