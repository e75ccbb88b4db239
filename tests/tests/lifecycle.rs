//! The projection lifecycle under live traffic, across processes (ARCHITECTURE.md invariants
//! 8, 12 and 13): a frozen lease holder is replaced within the lease's bound and commits and
//! sends nothing when it wakes; an idle service costs a few queries a second; the demo's
//! read models are rebuilt again and again while orders flow, and always equal a replay.

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore_postgres::testing::TestDatabase;
use serde_json::json;
use sqlx::Row;
use tests::KilledOnDrop;

fn start_worker(url: &str, ttl: Duration) -> KilledOnDrop {
    let child = Command::new(env!("CARGO_BIN_EXE_projection_worker"))
        .arg(url)
        .env("LEASE_TTL_MS", ttl.as_millis().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a worker process");
    // A failing assertion must not leave the worker running against its database.
    KilledOnDrop(child)
}

fn signal(worker: &KilledOnDrop, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), worker.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{name}");
}

/// The pid and epoch of the holder of `name`'s lease, if its lease runs.
async fn holder(pool: &sqlx::PgPool, name: &str) -> Option<(u32, i64)> {
    let row = sqlx::query(
        "SELECT holder, epoch FROM projection_leases WHERE name = $1 AND expires_at > clock_timestamp()",
    )
    .bind(name)
    .fetch_optional(pool)
    .await
    .expect("lease");
    row.map(|r| {
        let holder: String = r.get("holder");
        let pid = holder
            .split('@')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        (pid, r.get("epoch"))
    })
}

async fn until_held_by(pool: &sqlx::PgPool, worker: &KilledOnDrop, within: Duration) -> Vec<i64> {
    let started = Instant::now();
    loop {
        let mut epochs = Vec::new();
        for name in ["tallies", "sender"] {
            if let Some((pid, epoch)) = holder(pool, name).await {
                if pid == worker.0.id() {
                    epochs.push(epoch);
                }
            }
        }
        if epochs.len() == 2 {
            return epochs;
        }
        assert!(
            started.elapsed() < within,
            "worker {} did not take both leases in {within:?}",
            worker.0.id()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A lease holder is frozen with SIGSTOP while writers append: a second process takes both
/// leases within the time-to-live (plus a renewal period), and when the frozen one resumes,
/// nothing it had in flight is committed (the read model is exact) or sent (no message with
/// its epoch after it woke).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_lease_holder_is_replaced_and_commits_and_sends_nothing() {
    let db = TestDatabase::create(10).await;
    let (store, target) = tests::connect(&db.url).await.expect("connect");
    let ttl = Duration::from_secs(2);
    let writer = tokio::spawn(tests::write_tallies(
        store.clone(),
        300,
        Duration::from_millis(10),
    ));
    let a = start_worker(&db.url, ttl);
    let a_epochs = until_held_by(&db.pool, &a, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(fastrand::u64(100..400))).await;
    signal(&a, "STOP");
    let frozen = Instant::now();
    let b = start_worker(&db.url, ttl);
    until_held_by(&db.pool, &b, Duration::from_secs(20)).await;
    let took = frozen.elapsed();
    assert!(
        took < ttl + Duration::from_secs(3),
        "the takeover took {took:?}"
    );
    let woke: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .expect("now");
    signal(&a, "CONT");
    let expected = writer.await.expect("writer");
    tests::until_tallies_equal(&target, &expected, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    tests::until_tallies_equal(&target, &expected, Duration::from_secs(1)).await;

    // The sender follows the same log as the tallies, a batch or two behind under load.
    let deadline = Instant::now() + Duration::from_secs(30);
    let unsent = loop {
        let unsent: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM es_events e WHERE NOT EXISTS (SELECT 1 FROM sent s WHERE s.event_id = e.event_id)",
        )
        .fetch_one(&db.pool)
        .await
        .expect("unsent");
        if unsent == 0 || Instant::now() > deadline {
            break unsent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(unsent, 0, "every event was sent");
    let sent_late: i64 =
        sqlx::query_scalar("SELECT count(*) FROM sent WHERE epoch = ANY($1) AND sent_at > $2")
            .bind(&a_epochs)
            .bind(woke)
            .fetch_one(&db.pool)
            .await
            .expect("sent");
    assert_eq!(sent_late, 0, "the deposed holder sent after it woke");
    for mut worker in [a, b] {
        worker.kill();
    }
    db.drop_database().await;
}

/// After one event that concerns none of the order read models, an idle `serve` with all its
/// workers settles back to a few database transactions a second: each worker's look at the
/// log (a read, a look at its head, its idle checkpoint) and the checkout's. It ran 45.7 to
/// 48.8 a second when waits looked at the head once more at their deadline, the read models
/// waited half a second and readers polled every half second; 33 to 36 since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_serve_stays_quiet_after_an_unrelated_event() {
    let app = tests::spawn_app().await;
    let (status, body) = app
        .post(
            "/products",
            json!({ "sku": "quiet_1", "name": "Quiet", "price_cents": 100 }),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let transactions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&app.db.pool)
        .await
        .expect("stats")
    };
    let window = Duration::from_secs(6);
    let before = transactions().await;
    tokio::time::sleep(window).await;
    let after = transactions().await;
    let per_second = (after - before) as f64 / window.as_secs_f64();
    eprintln!("an idle serve ran {per_second:.1} transactions a second");
    assert!(
        per_second < 45.0,
        "an idle serve ran {per_second:.0} transactions a second"
    );
    app.shutdown().await;
}

/// Each demo read model is rebuilt again and again (`SHOP_REBUILDS`, default 10) while two
/// clients place orders at a steady rate (at least `SHOP_ORDERS`, default 2,000) and the
/// workers run: after
/// each rebuild the active model equals a fresh replay up to its checkpoint, no failure is
/// recorded, and a reader never sees an order it has seen disappear.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn read_models_rebuilt_under_traffic_equal_a_replay() {
    let rebuilds: usize = std::env::var("SHOP_REBUILDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let min_orders: usize = std::env::var("SHOP_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let app = Arc::new(tests::spawn_app().await);
    for sku in ["r_1", "r_2", "r_3"] {
        let (s, b) = app
            .post(
                "/products",
                json!({ "sku": sku, "name": sku, "price_cents": 250 }),
            )
            .await;
        assert_eq!(s, 202, "{b}");
        let (s, b) = app
            .post(
                &format!("/products/{sku}/restock"),
                json!({ "quantity": 1_000_000 }),
            )
            .await;
        assert_eq!(s, 202, "{b}");
    }
    let done = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let (app, done, placed) = (Arc::clone(&app), Arc::clone(&done), Arc::clone(&placed));
            tokio::spawn(async move {
                let mut ids = Vec::new();
                while !done.load(Ordering::Relaxed) || placed.load(Ordering::Relaxed) < min_orders {
                    let sku = ["r_1", "r_2", "r_3"][fastrand::usize(0..3)];
                    let card = if fastrand::u8(0..10) == 0 { "card_decline" } else { "card_approve" };
                    let (s, b) = app
                        .post("/orders", json!({ "customer_id": uuid::Uuid::new_v4(), "lines": [{ "sku": sku, "quantity": 1 }], "card": card }))
                        .await;
                    assert_eq!(s, 202, "client {c}: {b}");
                    ids.push(b["order_id"].as_str().expect("id").to_owned());
                    placed.fetch_add(1, Ordering::Relaxed);
                    // A steady rate (about 60 orders a second in all), so that the log, and
                    // with it every rebuild, grows with the test's length, not its speed.
                    tokio::time::sleep(Duration::from_millis(33)).await;
                }
                ids
            })
        })
        .collect();
    let reader = {
        let (app, done, seen) = (Arc::clone(&app), Arc::clone(&done), Arc::clone(&seen));
        tokio::spawn(async move {
            let mut known: HashSet<String> = HashSet::new();
            let mut checks = 0u64;
            while !done.load(Ordering::Relaxed) {
                let candidates: Vec<String> = seen.lock().expect("seen").clone();
                for id in candidates.iter().rev().take(20) {
                    let (s, _) = app.get(&format!("/orders/{id}")).await;
                    if s == 200 {
                        known.insert(id.clone());
                    } else {
                        assert!(!known.contains(id), "order {id} disappeared ({s})");
                    }
                    checks += 1;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            checks
        })
    };
    let feeder = {
        let (app, done, seen) = (Arc::clone(&app), Arc::clone(&done), Arc::clone(&seen));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT key FROM projection_documents WHERE projection = 'order_summaries' ORDER BY random() LIMIT 50",
                )
                .fetch_all(&app.db.pool)
                .await
                .unwrap_or_default();
                seen.lock().expect("seen").extend(ids);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let models = demo_shop::read_models::all();
    let started = Instant::now();
    for round in 0..rebuilds {
        for projection in &models {
            let name = projection.name();
            let report = app
                .shop
                .host()
                .rebuild(name, |_| {})
                .await
                .expect("rebuild under traffic");
            let (at, failure, docs) = tests::active_model(&app.db.pool, name).await;
            assert_eq!(
                failure, None,
                "{name}: a failure was recorded after rebuild {round}"
            );
            assert!(report.generation >= 2);
            let replayed =
                tests::replay(app.shop.storage().store.as_ref(), projection.as_ref(), at).await;
            assert!(
                docs == replayed,
                "{name}: rebuild {round} differs from a replay up to {at}"
            );
        }
    }
    done.store(true, Ordering::Relaxed);
    let mut orders = 0;
    for client in clients {
        orders += client.await.expect("client").len();
    }
    let checks = reader.await.expect("reader");
    feeder.await.expect("feeder");
    assert!(orders >= min_orders, "{orders} orders");
    assert!(checks > 0, "the reader checked orders");
    let statuses = app.shop.host().status().await.expect("status");
    assert!(
        statuses.iter().all(|s| s.last_error.is_none()),
        "{statuses:?}"
    );
    eprintln!(
        "{} rebuilds of {} read models under {orders} orders in {:?}; {checks} reads",
        rebuilds * models.len(),
        models.len(),
        started.elapsed()
    );
    match Arc::try_unwrap(app) {
        Ok(app) => app.shutdown().await,
        Err(_) => panic!("the app is still shared"),
    }
}
