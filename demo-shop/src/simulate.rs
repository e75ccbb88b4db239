//! `demo-shop simulate`: drives orders through the HTTP API and reports throughput and
//! latency.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::gateway::{CARD_APPROVE, CARD_DECLINE};
use crate::http_client::request;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct Load {
    /// Orders to place.
    pub orders: usize,
    /// Orders in flight at once.
    pub concurrency: usize,
}

const SKUS: usize = 5;

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Places `load.orders` orders against the server at `addr`, then waits for the checkout
/// to settle them and reports.
pub async fn run(addr: SocketAddr, load: Load, out: &mut impl Write) -> Result<()> {
    let run = Uuid::new_v4().simple().to_string()[..8].to_owned();
    let skus: Vec<String> = (0..SKUS).map(|i| format!("SIM{run}_{i}")).collect();
    for sku in &skus {
        let (status, body) = request(
            addr,
            "POST",
            "/products",
            Some(&json!({ "sku": sku, "name": "Simulated", "price_cents": 999 })),
        )
        .await?;
        if status != 202 {
            return Err(format!("registering {sku}: {status} {body}").into());
        }
        let stock = json!({ "quantity": load.orders });
        request(
            addr,
            "POST",
            &format!("/products/{sku}/restock"),
            Some(&stock),
        )
        .await?;
    }

    writeln!(
        out,
        "placing {} orders, {} at a time, against http://{addr}",
        load.orders, load.concurrency
    )?;
    let gate = Arc::new(Semaphore::new(load.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(load.orders);
    for i in 0..load.orders {
        let permit = Arc::clone(&gate).acquire_owned().await?;
        let sku = skus[i % SKUS].clone();
        tasks.push(tokio::spawn(async move {
            let _permit = permit;
            let card = if i % 10 == 9 { CARD_DECLINE } else { CARD_APPROVE };
            let order = json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": sku, "quantity": 1 }], "card": card });
            let sent = Instant::now();
            let answer = request(addr, "POST", "/orders", Some(&order)).await;
            (answer, sent.elapsed())
        }));
    }
    let mut latencies = Vec::with_capacity(load.orders);
    let mut order_ids = Vec::new();
    let mut failures = 0usize;
    for task in tasks {
        let (answer, took) = task.await?;
        latencies.push(took.as_secs_f64() * 1_000.0);
        match answer {
            Ok((202, body)) => order_ids.extend(body["order_id"].as_str().map(str::to_owned)),
            _ => failures += 1,
        }
    }
    let elapsed = started.elapsed();
    latencies.sort_by(|a, b| a.total_cmp(b));
    writeln!(
        out,
        "accepted {} orders in {:.2} s: {:.1} orders/s; latency p50 {:.1} ms, p99 {:.1} ms; {} failed",
        order_ids.len(),
        elapsed.as_secs_f64(),
        order_ids.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        failures
    )?;

    let settled = Instant::now();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    for id in &order_ids {
        loop {
            let (status, body) = request(addr, "GET", &format!("/orders/{id}"), None).await?;
            let state = body["status"].as_str().unwrap_or("unknown").to_owned();
            if status == 200 && matches!(state.as_str(), "confirmed" | "cancelled" | "shipped") {
                *outcomes.entry(state).or_default() += 1;
                break;
            }
            if settled.elapsed() > Duration::from_secs(120) {
                return Err(format!("order {id} did not settle in 120 s").into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    writeln!(
        out,
        "all settled {:.2} s after the last order: {outcomes:?}",
        settled.elapsed().as_secs_f64()
    )?;
    Ok(())
}
