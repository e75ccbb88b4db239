//! The demo shop's command line in a process of its own, for the tests that kill a server
//! mid-request: the same as `demo-shop` (`shop_server --database-url … serve --addr …`).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match demo_shop::cli::run(demo_shop::cli::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("shop_server: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
