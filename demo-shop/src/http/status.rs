//! Projection status with lag.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use projections::ProjectionStatus;

use super::error::ApiError;
use super::AppState;

async fn status(State(shop): AppState) -> Result<Json<Vec<ProjectionStatus>>, ApiError> {
    Ok(Json(shop.status().await?))
}

/// The route of the projections' status.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new().route("/status", get(status))
}
