//! Projection status with lag, and the checkout's orders in trouble.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use projections::ProjectionStatus;
use serde_json::{json, Value};

use super::error::ApiError;
use super::openapi::StoreErrors;
use super::AppState;

/// Every projection with its state, checkpoint and lag.
#[utoipa::path(get, path = "/status", tag = "operations",
    responses((status = 200, description = "One entry per projection", body = Vec<ProjectionStatus>), StoreErrors))]
pub(super) async fn status(State(shop): AppState) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    Ok(Json(shop.host().status().await?))
}

/// `{"summary": {...}, "troubled": [...]}`: the checkout's counts, and its orders that are
/// retrying or parked, with their last error.
#[utoipa::path(get, path = "/status/checkout", tag = "operations",
    responses((status = 200, description = "`summary`: the checkout's counts; `troubled`: its orders retrying or parked, with their last error", body = Object), StoreErrors))]
pub(super) async fn checkout(State(shop): AppState) -> Result<Json<Value>, ApiError> {
    let (summary, troubled) = shop.checkout_status().await?;
    Ok(Json(json!({ "summary": summary, "troubled": troubled })))
}

/// `/healthz`: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "`{\"status\": \"ok\"}`", body = Object)))]
pub(super) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `/readyz`: 200 when the database answers (within a second) and the workers run, 503
/// otherwise, with what is wrong.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "`{\"ready\": true}`", body = Object),
        (status = 503, description = "`{\"ready\": false, \"problems\": [...]}`", body = Object)))]
pub(super) async fn readyz(State(shop): AppState) -> (StatusCode, Json<Value>) {
    let store = shop.storage().store.as_ref();
    let database = match tokio::time::timeout(Duration::from_secs(1), store.head()).await {
        Ok(Ok(_)) => None,
        Ok(Err(error)) => Some(format!("the database does not answer: {error}")),
        Err(_) => Some("the database does not answer within a second".to_owned()),
    };
    let workers = (!shop.workers_running()).then(|| "the workers are not running".to_owned());
    let problems: Vec<String> = database.into_iter().chain(workers).collect();
    if problems.is_empty() {
        (StatusCode::OK, Json(json!({ "ready": true })))
    } else {
        let body = json!({ "ready": false, "problems": problems });
        (StatusCode::SERVICE_UNAVAILABLE, Json(body))
    }
}

/// The routes of the projections' and the checkout's status, and the health checks.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/status", get(status))
        .route("/status/checkout", get(checkout))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(super::openapi::document))
}
