//! `/healthz` answers while the process runs; `/readyz` only while the database answers and
//! the workers run.

use std::sync::Arc;

use demo_shop::gateway::SimulatedGateway;
use demo_shop::http;
use demo_shop::http_client::request;
use demo_shop::shop::Shop;
use demo_shop::storage::Storage;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_while_the_workers_run() {
    let shop = Arc::new(Shop::new(
        Storage::in_memory(),
        Arc::new(SimulatedGateway::new()),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(http::serve(
        listener,
        http::router(Arc::clone(&shop)),
        std::future::pending(),
    ));

    let (status, body) = request(addr, "GET", "/healthz", None)
        .await
        .expect("healthz");
    assert_eq!(status, 200, "{body}");
    let (status, body) = request(addr, "GET", "/readyz", None).await.expect("readyz");
    assert_eq!(status, 503, "no worker runs yet: {body}");
    assert!(body["problems"].to_string().contains("workers"), "{body}");

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let workers = shop.spawn_workers(stopped);
    let (status, body) = request(addr, "GET", "/readyz", None).await.expect("readyz");
    assert_eq!(status, 200, "{body}");

    stop.send_replace(true);
    // Draining: no longer ready, though the process still answers.
    let started = std::time::Instant::now();
    loop {
        let (status, _) = request(addr, "GET", "/readyz", None).await.expect("readyz");
        if status == 503 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 5,
            "still ready after shutdown was asked for"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for worker in workers {
        worker.await.expect("join").expect("a worker stops cleanly");
    }
}
