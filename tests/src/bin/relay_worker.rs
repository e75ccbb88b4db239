//! A relay process for the messaging kill tests: publishes the `tick` events of the event
//! store at `<database url>` to the broker at `<broker url>` (exchange, stream or topic
//! `<namespace>`) until it is killed (or gets Ctrl-C). `LEASE_TTL_MS` sets the lease's
//! time-to-live (and the batch timeout).

use std::process::ExitCode;
use std::time::Duration;

use messaging::Relay;
use projections::{LeaseOptions, RunnerOptions};

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, broker_url, namespace] = args.as_slice() else {
        eprintln!("usage: relay_worker <database url> <broker url> <namespace>");
        return ExitCode::from(2);
    };
    let ttl = std::env::var("LEASE_TTL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let (store, target) = match tests::connect(url).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("relay_worker: cannot connect: {error}");
            return ExitCode::FAILURE;
        }
    };
    let publisher = match messaging::broker_from_url(broker_url, namespace) {
        Ok(broker) => broker.publisher().await,
        Err(e) => Err(e),
    };
    let publisher = match publisher {
        Ok(publisher) => publisher,
        Err(error) => {
            eprintln!("relay_worker: {error}");
            return ExitCode::FAILURE;
        }
    };
    let relay = Relay::new(format!("relay_{namespace}"), "urn:tests:ticks", publisher)
        .with_filter(cqrs_core::EventFilter::all().categories(["tick"]))
        .runner(store, target.with_batch_timeout(ttl))
        .with_options(RunnerOptions {
            lease: LeaseOptions::with_ttl(ttl),
            standby_retry: Duration::from_millis(100),
            idle_wait: Duration::from_millis(200),
            ..Relay::options()
        });
    match relay
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("relay_worker: {error}");
            ExitCode::FAILURE
        }
    }
}
