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

#[tokio::test]
async fn only_migrate_and_serve_change_the_schema() {
    let db = eventstore_postgres::testing::TestDatabase::create(2).await;
    let tables = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            .fetch_one(&db.pool)
            .await
            .expect("count tables")
    };
    for command in [["status"], ["rebuild"]].map(|c| c.to_vec()) {
        let mut args = vec!["--database-url", db.url.as_str()];
        args.extend(command);
        if args.last() == Some(&"rebuild") {
            args.push("order_summaries");
        }
        let out = demo_shop().args(&args).output().expect("run demo-shop");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {stderr}");
        assert!(stderr.contains("run `demo-shop migrate` first"), "{stderr}");
        assert_eq!(tables().await, 0, "{args:?} created tables");
    }
    let migrate = demo_shop()
        .args(["--database-url", &db.url, "migrate"])
        .output()
        .expect("run");
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(tables().await > 0);
    let status = demo_shop()
        .args(["--database-url", &db.url, "status"])
        .output()
        .expect("run");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    db.drop_database().await;
}
