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

/// With the operators' routes on a port of their own (`serve --admin-addr`), the API's port
/// answers no console and no metrics, and the admin port nothing but them, status and health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_routes_can_have_a_port_of_their_own() {
    let shop = Arc::new(Shop::new(
        Storage::in_memory(),
        Arc::new(SimulatedGateway::new()),
    ));
    let mut addrs = Vec::new();
    for router in [
        http::api_router(Arc::clone(&shop)),
        http::admin_router(Arc::clone(&shop)),
    ] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        addrs.push(listener.local_addr().expect("addr"));
        tokio::spawn(http::serve(listener, router, std::future::pending()));
    }
    let (api, admin) = (addrs[0], addrs[1]);
    let status_of = |addr, path: &'static str| async move { status_line(addr, path).await };
    for path in ["/console", "/metrics"] {
        assert_eq!(status_of(api, path).await, 404, "{path} on the API's port");
        assert_eq!(
            status_of(admin, path).await,
            200,
            "{path} on the admin port"
        );
    }
    for path in ["/status", "/healthz"] {
        assert_eq!(status_of(api, path).await, 200, "{path} on the API's port");
        assert_eq!(
            status_of(admin, path).await,
            200,
            "{path} on the admin port"
        );
    }
    assert_eq!(status_of(api, "/products").await, 200);
    assert_eq!(
        status_of(admin, "/products").await,
        404,
        "no API on the admin port"
    );
}

/// The status of `GET path` (whatever the body is: HTML, text or JSON).
async fn status_line(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .expect("a status line")
}
