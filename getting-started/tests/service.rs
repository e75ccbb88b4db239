//! The getting-started service end to end, in memory and on PostgreSQL: the same requests,
//! the same answers.

use axum::body::{to_bytes, Body};
use axum::http::{Request, StatusCode};
use axum::Router;
use getting_started::{open, Account, AccountEvent, Balances};
use projections::testing::given;
use projections::Typed;
use tower::ServiceExt;

async fn call(app: &Router, method: &str, uri: &str, body: &str) -> (StatusCode, String) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn scenario((app, host): (Router, projections::ProjectionHost)) {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let workers = tokio::spawn(async move {
        host.run(async {
            stopped.await.ok();
        })
        .await
    });
    let deposit = r#"{"Deposit": 100}"#;
    let withdraw = |amount: u64| format!(r#"{{"Withdraw": {amount}}}"#);

    assert_eq!(call(&app, "GET", "/accounts/alice", "").await.0, StatusCode::NOT_FOUND);
    // Each command answers the balance as the read model has it: its own write included.
    assert_eq!(
        call(&app, "POST", "/accounts/alice", deposit).await,
        (StatusCode::OK, "100".into())
    );
    assert_eq!(
        call(&app, "POST", "/accounts/alice", &withdraw(30)).await,
        (StatusCode::OK, "70".into())
    );
    let refused = call(&app, "POST", "/accounts/alice", &withdraw(500)).await;
    assert_eq!(refused.0, StatusCode::UNPROCESSABLE_ENTITY, "{refused:?}");
    assert!(refused.1.contains("Withdraw(500) refused: the balance is 70"), "{refused:?}");
    assert_eq!(call(&app, "GET", "/accounts/alice", "").await, (StatusCode::OK, "70".into()));
    let too_much = format!(r#"{{"Deposit": {}}}"#, u64::MAX);
    assert_eq!(
        call(&app, "POST", "/accounts/alice", &too_much).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    // Bad input changes nothing.
    let long_id = format!("/accounts/{}", "x".repeat(300));
    assert_eq!(call(&app, "POST", &long_id, deposit).await.0, StatusCode::BAD_REQUEST);
    assert!(call(&app, "POST", "/accounts/alice", r#"{"steal": {}}"#).await.0.is_client_error());
    assert!(call(&app, "POST", "/accounts/alice", "not json").await.0.is_client_error());
    assert_eq!(call(&app, "GET", "/accounts/alice", "").await.1, "70");

    stop.send(()).expect("workers running");
    workers.await.expect("join").expect("workers stop cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory() {
    scenario(open(None).await.expect("open")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_postgres() {
    let db = eventstore_postgres::testing::TestDatabase::create(8).await;
    scenario(open(Some(&db.url)).await.expect("open")).await;
    db.drop_database().await;
}

#[tokio::test]
async fn the_read_model_folds_each_event_once() {
    let events = [AccountEvent::Deposited { amount: 100 }, AccountEvent::Withdrew { amount: 30 }];
    let model = given::<Account>("alice", events)
        .and::<Account>("bob", [AccountEvent::Deposited { amount: 5 }])
        .project(Typed::new(Balances))
        .await
        .expect("applies");
    assert_eq!(model.document::<Balances>("alice"), Some(70));
    assert_eq!(model.documents::<Balances>(), vec![70, 5]);
}
