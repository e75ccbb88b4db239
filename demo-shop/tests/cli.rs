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
    let status = || {
        demo_shop()
            .args(["--database-url", &db.url, "status"])
            .output()
            .expect("run")
    };
    let migrated = status();
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );

    // A database an earlier release migrated: its newest migration is not applied yet.
    sqlx::query(
        "DELETE FROM _sqlx_migrations WHERE version = (SELECT max(version) FROM _sqlx_migrations)",
    )
    .execute(&db.pool)
    .await
    .expect("forget the newest migration");
    let earlier = status();
    let stderr = String::from_utf8_lossy(&earlier.stderr);
    assert!(!earlier.status.success(), "{stderr}");
    assert!(
        stderr.contains("an earlier release") && stderr.contains("run `demo-shop migrate` first"),
        "{stderr}"
    );
    db.drop_database().await;
}

/// "What happened to this order?" without SQL: `stream` prints a stream's events with their
/// trace and correlation ids, `follow` the log as it grows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_follow_print_what_was_stored() {
    let (db, shop) = shop_on_a_database_of_its_own().await;
    let trace = cqrs_core::trace::TraceParent::new_root();
    let meta = cqrs_core::Metadata::new_request().with_trace(&trace);
    let mug = register_a_mug(&shop, &meta).await;
    shop.restock(mug.clone(), 7, &meta).await.expect("restock");

    let run = |args: &[&str]| {
        let out = cli(&db, args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stderr}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let stream = run(&["stream", "inventory-MUG"]);
    let lines: Vec<&str> = stream.lines().collect();
    assert_eq!(lines.len(), 2, "{stream}");
    assert!(lines[0].contains("inventory-MUG@1") && lines[0].contains("ProductRegistered"));
    assert!(lines[1].contains("inventory-MUG@2") && lines[1].contains(r#""quantity":7"#));
    let traced = format!("trace={}", trace.trace_id());
    assert!(lines.iter().all(|l| l.contains(&traced)), "{stream}");
    assert_eq!(
        run(&["stream", "inventory-MUG", "--from", "2"])
            .lines()
            .count(),
        1
    );

    let followed = run(&["follow", "--from", "start", "--limit", "2"]);
    assert_eq!(
        followed, stream,
        "follow from the start prints the same events"
    );
    let inventory = run(&[
        "follow",
        "--from",
        "start",
        "--category",
        "inventory",
        "--limit",
        "2",
    ]);
    assert_eq!(inventory, stream);

    // From a position: only what is stored after it (here, the head before the restock).
    let head = shop.storage().store.head().await.expect("head").to_string();
    let tail = demo_shop()
        .args([
            "--database-url",
            &db.url,
            "follow",
            "--from",
            &head,
            "--limit",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start follow");
    // Killed on drop: a failing assertion leaves no follower running.
    let mut tail = KilledOnDrop(tail);
    shop.restock(mug, 3, &meta).await.expect("restock");
    // Never hang the suite: give the follower 30 s to print the event and end.
    let started = Instant::now();
    while tail.0.try_wait().expect("poll follow").is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "follow did not end"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tailed = String::new();
    let stdout = tail.0.stdout.as_mut().expect("stdout");
    std::io::Read::read_to_string(stdout, &mut tailed).expect("read follow's output");
    assert_eq!(tailed.lines().count(), 1, "{tailed}");
    assert!(
        tailed.contains("inventory-MUG@3") && tailed.contains(r#""quantity":3"#),
        "{tailed}"
    );

    let bad = cli(&db, &["follow", "--category", "order-1"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--category \"order-1\""));

    let missing = cli(&db, &["stream", "order-nope"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("holds no event"));
    db.drop_database().await;
}

/// Pause, resume and reset from the command line, against a database the CLI shares with a
/// running shop: the status says so, and a reset read model is replayed by the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_and_reset_a_projection() {
    let (db, shop) = shop_on_a_database_of_its_own().await;
    register_a_mug(&shop, &cqrs_core::Metadata::new_request()).await;
    shop.settle().await.expect("settle");
    let run = |args: &[&str]| {
        let out = cli(&db, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let state_of = |status: &str, projection: &str| {
        status
            .lines()
            .find(|l| l.starts_with(&format!("{projection} ")))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
    };

    let (ok, out, err) = run(&["pause", "product_stock"]);
    assert!(ok && out.contains("paused product_stock"), "{out}{err}");
    let (_, status, _) = run(&["status"]);
    assert_eq!(
        state_of(&status, "product_stock").as_deref(),
        Some("paused"),
        "{status}"
    );
    assert_eq!(
        state_of(&status, "order_summaries").as_deref(),
        Some("running"),
        "{status}"
    );
    shop.host()
        .catch_up()
        .await
        .expect("the projections that are not paused catch up");
    let (ok, out, err) = run(&["resume", "product_stock"]);
    assert!(ok && out.contains("resumed product_stock"), "{out}{err}");
    let (_, status, _) = run(&["status"]);
    assert_eq!(
        state_of(&status, "product_stock").as_deref(),
        Some("running"),
        "{status}"
    );

    let (ok, out, err) = run(&["reset", "product_stock"]);
    assert!(ok && out.contains("generation 2 is empty"), "{out}{err}");
    let products = demo_shop::read_models::product_stock::products(shop.host())
        .await
        .expect("products");
    assert!(
        products.is_empty(),
        "the reset read model is empty: {products:?}"
    );
    shop.settle().await.expect("replay");
    let products = demo_shop::read_models::product_stock::products(shop.host())
        .await
        .expect("products");
    assert_eq!(products.len(), 1, "the replay brought the product back");

    let (ok, _, err) = run(&["pause", "no_such"]);
    assert!(!ok && err.contains("unknown projection `no_such`"), "{err}");
    db.drop_database().await;
}

/// `demo-shop --database-url <db> args…`, run to its end.
fn cli(db: &eventstore_postgres::testing::TestDatabase, args: &[&str]) -> std::process::Output {
    demo_shop()
        .args(["--database-url", db.url.as_str()])
        .args(args)
        .output()
        .expect("run demo-shop")
}

/// Registers the product `MUG` with `meta`; returns its SKU.
async fn register_a_mug(
    shop: &demo_shop::shop::Shop,
    meta: &cqrs_core::Metadata,
) -> demo_shop::domain::money::Sku {
    let mug = demo_shop::domain::money::Sku::new("MUG").expect("sku");
    shop.register_product(
        mug.clone(),
        "Mug".into(),
        demo_shop::domain::money::Money(1_200),
        meta,
    )
    .await
    .expect("register");
    mug
}

/// A shop (its workers not running) on a migrated database of its own, which the CLI
/// processes under test share.
async fn shop_on_a_database_of_its_own() -> (
    eventstore_postgres::testing::TestDatabase,
    demo_shop::shop::Shop,
) {
    let db = eventstore_postgres::testing::TestDatabase::create(4).await;
    let storage = demo_shop::storage::Storage::from_pool(db.pool.clone())
        .await
        .expect("migrate");
    let shop = demo_shop::shop::Shop::new(
        storage,
        std::sync::Arc::new(demo_shop::gateway::SimulatedGateway::new()),
    );
    (db, shop)
}

/// A child process killed when dropped.
struct KilledOnDrop(std::process::Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
