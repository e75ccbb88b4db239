//! A worker process for the fault tests: runs the `Tallies` projection against the database
//! given as its only argument until it is killed (or gets Ctrl-C).

use std::process::ExitCode;

use projections::testing::runner;
use projections::ErrorPolicy;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(url) = std::env::args().nth(1) else {
        eprintln!("usage: projection_worker <database url>");
        return ExitCode::from(2);
    };
    let (store, target) = match tests::connect(&url).await {
        Ok(connected) => connected,
        Err(error) => {
            eprintln!("projection_worker: cannot connect: {error}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match runner(store, target, 1, ErrorPolicy::Stop)
        .run(shutdown)
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("projection_worker: {error}");
            ExitCode::FAILURE
        }
    }
}
