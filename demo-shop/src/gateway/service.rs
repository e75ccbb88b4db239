//! The gateway as an HTTP service of its own (`demo-shop gateway`):
//!
//! | route | does |
//! | --- | --- |
//! | `POST /authorizations` | authorise `{reference, card, amount_cents}`; requires `Idempotency-Key` |
//! | `GET /authorizations` | the ledger: every answer given, by key |
//! | `POST /voids` | void what the `Idempotency-Key` authorised or will authorise: `{"released": bool}` |
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

/// The request's idempotency key, if it has one.
fn key_of(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .filter(|k| !k.is_empty())
}

/// The answer to a request without an idempotency key.
fn no_key() -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({ "error": "an Idempotency-Key header is required" })),
    )
        .into_response()
}

/// Simulated network and processing time, outside the ledger's lock.
async fn delay(gateway: &SimulatedGateway) {
    if !gateway.latency().is_zero() {
        tokio::time::sleep(gateway.latency()).await;
    }
}

/// The answer to a call: `status` with its body, or the gateway's error.
fn respond<T: serde::Serialize>(status: StatusCode, outcome: Result<T, GatewayError>) -> Response {
    match outcome {
        Ok(answer) => (status, Json(answer)).into_response(),
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

async fn authorize(
    State(gateway): State<Arc<SimulatedGateway>>,
    headers: HeaderMap,
    Body(request): Body<super::AuthorizationRequest>,
) -> Response {
    let Some(key) = key_of(&headers) else {
        return no_key();
    };
    delay(&gateway).await;
    respond(StatusCode::CREATED, gateway.decide(key, &request))
}

async fn void(State(gateway): State<Arc<SimulatedGateway>>, headers: HeaderMap) -> Response {
    let Some(key) = key_of(&headers) else {
        return no_key();
    };
    delay(&gateway).await;
    let released = gateway
        .void_key(key)
        .map(|released| json!({ "released": released }));
    respond(StatusCode::OK, released)
}

async fn ledger(State(gateway): State<Arc<SimulatedGateway>>) -> Json<Vec<super::LedgerEntry>> {
    Json(gateway.ledger())
}

/// The service's routes over `gateway`.
pub fn router(gateway: Arc<SimulatedGateway>) -> Router {
    Router::new()
        .route("/authorizations", post(authorize).get(ledger))
        .route("/voids", post(void))
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
