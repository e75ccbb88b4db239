//! `/metrics` is scraped like Prometheus would: every documented metric is there, and the
//! figures move as they should (appends and requests count up; a projection's lag rises
//! while events are held back and returns to 0 once it has caught up).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tests::spawn_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// The metric families `demo_shop::metrics` documents: the contract.
const DOCUMENTED: &[&str] = &[
    "es_appends_total",
    "es_append_duration_seconds",
    "es_projection_position_commit",
    "es_projection_position_sequence",
    "es_projection_lag_events",
    "es_projection_lag_seconds",
    "es_projection_held_back_events",
    "es_projection_state",
    "es_projection_dead_letters",
    "es_projection_lease_holder",
    "es_process_instances",
    "es_process_due_inputs",
    "http_requests_total",
    "http_request_duration_seconds",
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
    for name in DOCUMENTED {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "{name} is documented but not scraped:\n{text}"
        );
    }
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
    let held = value(
        &text,
        "es_projection_held_back_events",
        &of("order_summaries"),
    );
    assert!(
        lag >= 5.0,
        "lag {lag} while 5 orders are held back:\n{text}"
    );
    assert!(held.unwrap_or(0.0) >= 5.0, "{text}");
    // And returns to 0 once the projection has caught up.
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
            released.elapsed() < Duration::from_secs(10),
            "lag still {lags:?} 10 s after the events were released:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.shutdown().await;
}
