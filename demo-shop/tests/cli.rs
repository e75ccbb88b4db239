//! The command line as an operator meets it: errors that say what is wrong at once and
//! keep secrets out, and output without colour codes when it is not a terminal.

use std::process::Command;
use std::time::{Duration, Instant};

fn demo_shop() -> Command {
    Command::new(env!("CARGO_BIN_EXE_demo-shop"))
}

#[test]
fn a_closed_port_is_reported_at_once_without_the_password() {
    let started = Instant::now();
    let out = demo_shop()
        .args([
            "--database-url",
            "postgres://shop:s3cret@127.0.0.1:1/shop",
            "status",
        ])
        .output()
        .expect("run demo-shop");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(stderr.to_lowercase().contains("refused"), "{stderr}");
    assert!(stderr.contains("shop:***@127.0.0.1:1"), "{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password was printed: {stderr}"
    );
}

#[test]
fn piped_output_has_no_colour_codes_and_logs_go_to_stderr() {
    let out = demo_shop()
        .env("RUST_LOG", "info")
        .env_remove("DATABASE_URL")
        .output()
        .expect("run demo-shop");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Done."), "{stdout}");
    assert!(!stdout.contains("INFO"), "logs went to stdout: {stdout}");
    assert!(stderr.contains("INFO"), "no logs on stderr: {stderr}");
    assert!(
        !stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'),
        "colour codes when piped"
    );
}
