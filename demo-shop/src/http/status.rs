//! Projection status with lag, and the checkout's orders in trouble.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use projections::ProjectionStatus;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

async fn status(State(shop): AppState) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    Ok(Json(shop.host().status().await?))
}

/// `{"summary": {...}, "troubled": [...]}`: the checkout's counts, and its orders that are
/// retrying or parked, with their last error.
async fn checkout(State(shop): AppState) -> Result<Json<Value>, ApiError> {
    let (summary, troubled) = shop.checkout_status().await?;
    Ok(Json(json!({ "summary": summary, "troubled": troubled })))
}

/// The routes of the projections' and the checkout's status.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/status", get(status))
        .route("/status/checkout", get(checkout))
}
