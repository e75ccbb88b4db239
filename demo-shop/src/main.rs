//! The demo shop's command line: `demo-shop --help`.

use std::io::IsTerminal;

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
    // Logs go to stderr (stdout holds what a command prints), coloured only on a terminal
    // and never with NO_COLOR set (https://no-color.org).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .init();
    match demo_shop::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-shop: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}
