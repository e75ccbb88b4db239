//! A checkout process for the kill tests: runs the demo shop's checkout (only) against the
//! database given as its only argument, paying through the gateway service at
//! `GATEWAY_ADDR`, until it is killed (or gets Ctrl-C). `CLAIM_TTL_MS` sets how long its
//! claims on orders last.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use demo_shop::gateway::HttpGateway;
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;
use projections::process::ProcessOptions;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: checkout_worker <database url>");
        return ExitCode::from(2);
    };
    let Some(gateway) = std::env::var("GATEWAY_ADDR")
        .ok()
        .and_then(|a| a.parse().ok())
    else {
        eprintln!("checkout_worker: set GATEWAY_ADDR to the gateway service's host:port");
        return ExitCode::from(2);
    };
    let ttl = std::env::var("CLAIM_TTL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(30), Duration::from_millis);
    let storage = match Storage::postgres(&url).await {
        Ok(storage) => storage,
        Err(error) => {
            eprintln!("checkout_worker: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shop = Shop::new(storage, Arc::new(HttpGateway::new(gateway))).with_checkout_options(
        ProcessOptions {
            executors: 16,
            claim_ttl: ttl,
            reaction_timeout: ttl / 2,
            ..ProcessOptions::default()
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let worker = shop.spawn_checkout(stopped);
    let _ = tokio::signal::ctrl_c().await;
    stop.send_replace(true);
    match worker.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(error)) => {
            eprintln!("checkout_worker: {error}");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("checkout_worker: {error}");
            ExitCode::FAILURE
        }
    }
}
