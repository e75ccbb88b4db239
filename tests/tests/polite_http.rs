//! Bad requests get a clear 4xx answer with a JSON body, and change nothing: unknown routes,
//! wrong methods, wrong content types, oversized bodies, control characters and overlong
//! text in the fields the shop stores.

use std::net::SocketAddr;

use serde_json::{json, Value};
use tests::spawn_app;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

/// Sends `request` as it is (the client cannot send what this test needs to) and returns the
/// status and the body, parsed as JSON (`Value::Null` when it is not JSON).
async fn raw(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{head}\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("head");
    // The server may answer (413) and close before reading a large body.
    let _ = stream.write_all(body).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"));
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_answered_politely_and_change_nothing() {
    let app = spawn_app().await;
    app.add_product("MUG", 1_200, 5).await;

    let (status, body) = raw(app.addr, "GET /no/such/route HTTP/1.1", b"").await;
    assert_eq!(
        (status, &body["kind"]),
        (404, &json!("not_found")),
        "{body}"
    );
    let (status, body) = raw(app.addr, "DELETE /orders HTTP/1.1", b"").await;
    assert_eq!(
        (status, &body["kind"]),
        (405, &json!("method_not_allowed")),
        "{body}"
    );

    let order = json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "MUG", "quantity": 1 }], "card": "card_ok" });
    let bytes = serde_json::to_vec(&order).expect("json");
    let (status, body) = raw(
        app.addr,
        "POST /orders HTTP/1.1\r\nContent-Type: text/plain",
        &bytes,
    )
    .await;
    assert_eq!(status, 415, "{body}");
    let huge = vec![b' '; 3 << 20];
    let (status, body) = raw(
        app.addr,
        "POST /orders HTTP/1.1\r\nContent-Type: application/json",
        &huge,
    )
    .await;
    assert_eq!(status, 413, "{body}");
    let keyed = "POST /orders HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: k1";
    let (status, body) = raw(app.addr, keyed, &huge).await;
    assert_eq!(status, 413, "with an idempotency key too: {body}");

    let with_card = |card: String| json!({ "customer_id": Uuid::new_v4(), "lines": [{ "sku": "MUG", "quantity": 1 }], "card": card });
    for card in ["tok\u{0}en".to_owned(), "x".repeat(10_000)] {
        let (status, body) = app.post("/orders", with_card(card)).await;
        assert_eq!(status, 422, "{body}");
    }
    let (status, body) = app
        .post(
            "/products",
            json!({ "sku": "TEE", "name": "Tee\u{0}", "price_cents": 900 }),
        )
        .await;
    assert_eq!(status, 422, "{body}");

    let (status, body) = app.post("/orders", with_card("card_ok".into())).await;
    assert_eq!(status, 202, "{body}");
    let order_id = body["order_id"].as_str().expect("order id").to_owned();
    for reason in ["why\u{0}".to_owned(), "x".repeat(501)] {
        let (status, body) = app
            .post(
                &format!("/orders/{order_id}/cancel"),
                json!({ "reason": reason }),
            )
            .await;
        assert_eq!(status, 422, "{body}");
    }
    let count = |event_type: &'static str| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM es_events WHERE event_type = $1")
            .bind(event_type)
            .fetch_one(&app.db.pool)
    };
    let placed = count("OrderPlaced").await.expect("count");
    assert_eq!(placed, 1, "only the good order was stored");
    let cancelled = count("OrderCancelled").await.expect("count");
    assert_eq!(cancelled, 0, "no refused cancel was stored");
    let registered = count("ProductRegistered").await.expect("count");
    assert_eq!(registered, 1, "no refused product was stored");
    app.shutdown().await;
}
