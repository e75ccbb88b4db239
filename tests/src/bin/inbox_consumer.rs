//! A consumer process for the messaging kill tests: applies the `tick` messages of the
//! broker at `<broker url>` (exchange, stream or topic `<namespace>`) as rows of `effects`
//! in the database at `<database url>`, exactly once, until it is killed (or gets Ctrl-C).
//! `LEASE_TTL_MS` sets its lease's time-to-live.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use messaging::{Consumer, ConsumerOptions, PgInbox};
use projections::LeaseOptions;
use tests::messaging::RecordEffects;

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, broker_url, namespace] = args.as_slice() else {
        eprintln!("usage: inbox_consumer <database url> <broker url> <namespace>");
        return ExitCode::from(2);
    };
    let ttl = std::env::var("LEASE_TTL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let pool = match sqlx::PgPool::connect(url).await {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("inbox_consumer: cannot connect: {error}");
            return ExitCode::FAILURE;
        }
    };
    let broker = match messaging::broker_from_url(broker_url, namespace) {
        Ok(broker) => broker,
        Err(error) => {
            eprintln!("inbox_consumer: {error}");
            return ExitCode::FAILURE;
        }
    };
    let handler = Arc::new(RecordEffects {
        name: namespace.clone(),
    });
    let consumer =
        Consumer::new(broker, PgInbox::new(pool), handler).with_options(ConsumerOptions {
            lease: LeaseOptions::with_ttl(ttl),
            standby_retry: Duration::from_millis(100),
            idle_wait: Duration::from_millis(200),
            ..ConsumerOptions::default()
        });
    match consumer
        .run(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("inbox_consumer: {error}");
            ExitCode::FAILURE
        }
    }
}
