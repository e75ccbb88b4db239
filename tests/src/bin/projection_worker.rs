//! A worker process for the fault tests: runs the `Tallies` projection, and a `sender` that
//! "sends" each event to an outside table fenced by its lease epoch, against the database
//! given as its only argument until it is killed (or gets Ctrl-C). `LEASE_TTL_MS` sets the
//! lease's time-to-live (and the batch timeout).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use projections::testing::{options, runner};
use projections::{ErrorPolicy, LeaseOptions, ProjectionRunner};

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: projection_worker <database url>");
        return ExitCode::from(2);
    };
    let ttl = std::env::var("LEASE_TTL_MS")
        .ok()
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(10), Duration::from_millis);
    let (store, target) = match tests::connect(&url).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("projection_worker: cannot connect: {error}");
            return ExitCode::FAILURE;
        }
    };
    let target = target.with_batch_timeout(ttl);
    let lease = LeaseOptions::with_ttl(ttl);
    let tallies = runner(store.clone(), target.clone(), 1, ErrorPolicy::Stop).with_options(
        projections::RunnerOptions {
            lease,
            ..options(ErrorPolicy::Stop)
        },
    );
    let sends = tests::Sender::new(target.pool().clone());
    if let Err(error) = sends.create_table().await {
        eprintln!("projection_worker: cannot create the table `sent`: {error}");
        return ExitCode::FAILURE;
    }
    let sender = ProjectionRunner::new(store, target.clone(), Arc::new(sends)).with_options(
        projections::RunnerOptions {
            lease,
            ..options(ErrorPolicy::Stop)
        },
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = |r: ProjectionRunner<projections::PgTarget>| {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            r.run(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let workers = [run(tallies), run(sender)];
    let _ = tokio::signal::ctrl_c().await;
    stop.send_replace(true);
    let mut code = ExitCode::SUCCESS;
    for worker in workers {
        if let Ok(Err(error)) = worker.await {
            eprintln!("projection_worker: {error}");
            code = ExitCode::FAILURE;
        }
    }
    code
}
