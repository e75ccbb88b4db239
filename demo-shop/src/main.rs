//! The demo shop's command line: `demo-shop --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = demo_shop::cli::Cli::parse();
    let default_level = if matches!(cli.command, Some(demo_shop::cli::Command::Serve { .. })) {
        "info"
    } else {
        "error"
    };
    let _telemetry = demo_shop::telemetry::init(default_level);
    match demo_shop::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-shop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
