//! The demo shop's command line: `demo-shop --help`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = demo_shop::cli::Cli::parse();
    let default_level = if matches!(cli.command, Some(demo_shop::cli::Command::Serve { .. })) {
        "info"
    } else {
        "error"
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .init();
    match demo_shop::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-shop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
