//! The gateway as an HTTP service of its own (`demo-shop gateway`):
//!
//! | route | does |
//! | --- | --- |
//! | `POST /authorizations` | authorise `{reference, card, amount_cents}`; requires `Idempotency-Key` |
//! | `GET /authorizations` | the ledger: every answer given, by key |
//!
//! `201` with the answer (`{"status": "approved", "authorization": …}` or
//! `{"status": "declined", "reason": …}`), `503` when it is "unavailable" (retry with the
//! same key), `422` for a key used with another request, `400` without a key.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;

use super::{GatewayError, SimulatedGateway};
use crate::http::extract::Body;

async fn authorize(
    State(gateway): State<Arc<SimulatedGateway>>,
    headers: HeaderMap,
    Body(request): Body<super::AuthorizationRequest>,
) -> Response {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .filter(|k| !k.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "an Idempotency-Key header is required" })),
        )
            .into_response();
    };
    if !gateway.latency().is_zero() {
        // Simulated network and processing time, outside the ledger's lock.
        tokio::time::sleep(gateway.latency()).await;
    }
    match gateway.decide(key, &request) {
        Ok(answer) => (StatusCode::CREATED, Json(answer)).into_response(),
        Err(GatewayError::Unavailable(reason)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": reason })),
        )
            .into_response(),
        Err(GatewayError::Refused(reason)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(json!({ "error": reason })),
        )
            .into_response(),
    }
}

async fn ledger(State(gateway): State<Arc<SimulatedGateway>>) -> Json<Vec<super::LedgerEntry>> {
    Json(gateway.ledger())
}

/// The service's routes over `gateway`.
pub fn router(gateway: Arc<SimulatedGateway>) -> Router {
    Router::new()
        .route("/authorizations", post(authorize).get(ledger))
        .with_state(gateway)
}

/// Serves the gateway on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    gateway: Arc<SimulatedGateway>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(gateway))
        .with_graceful_shutdown(shutdown)
        .await
}
