//! The HTTP API: commands as `POST` (answering `202 Accepted` with ids and the log position
//! written), queries as `GET` (which may wait for `?min_position=`).
//!
//! | route | does |
//! | --- | --- |
//! | `POST /products` | register a product `{sku, name, price_cents}` |
//! | `POST /products/{sku}/restock` | add stock `{quantity}` |
//! | `GET /products`, `GET /products/{sku}` | products with stock |
//! | `POST /orders` | place an order `{customer_id, lines: [{sku, quantity}], card}` |
//! | `POST /orders/{id}/cancel` | cancel `{reason}` |
//! | `POST /orders/{id}/ship` | ship |
//! | `GET /orders/{id}` | an order's summary |
//! | `GET /customers/{id}/orders` | a customer's orders |
//! | `GET /sales/daily` | sales per day |
//! | `GET /status` | projections with lag |
//! | `GET /status/checkout` | the checkout: counts, and orders retrying or parked |
//! | `GET /healthz` | 200 while the process answers |
//! | `GET /readyz` | 200 when the database answers and the workers run, 503 otherwise |
//! | `GET /metrics` | Prometheus metrics (OpenMetrics text; names and meanings in [`crate::metrics`]) |
//! | `GET /openapi.json` | the OpenAPI 3.1 document of the routes above ([`openapi`]) |
//! | `GET /console` | the web console for operators (HTML; [`console`]) |
//!
//! Every request may carry a W3C `traceparent` header: the events its commands store, the
//! checkout steps and the messages they lead to, in this service and the ones consuming its
//! events, carry the same trace id ([`trace`]); the answer has the `traceparent` of this
//! service's part.
//!
//! Every `POST` may carry an `Idempotency-Key` header: the same request sent again with it
//! gets the first answer again, and nothing is carried out twice ([`idempotency`]).

pub mod consistency;
pub mod console;
pub mod error;
pub mod extract;
pub mod idempotency;
pub mod inventory;
pub mod openapi;
pub mod orders;
pub mod status;
pub mod trace;

use std::sync::Arc;

use axum::extract::State;
use axum::Router;

use crate::shop::Shop;

/// The state every handler gets.
pub type AppState = State<Arc<Shop>>;

/// The whole API over `shop`, the operators' routes included: what `serve` answers on one
/// port.
pub fn router(shop: Arc<Shop>) -> Router {
    serving(
        Router::new()
            .merge(inventory::router())
            .merge(orders::router())
            .merge(operators_routes()),
        shop,
    )
}

/// The API without the operators' routes (the console and `/metrics`): what `serve
/// --admin-addr` answers on its main port.
pub fn api_router(shop: Arc<Shop>) -> Router {
    serving(
        Router::new()
            .merge(inventory::router())
            .merge(orders::router())
            .merge(status::router()),
        shop,
    )
}

/// The operators' routes alone (the console, `/metrics`, status and health): what `serve
/// --admin-addr` answers on the admin port.
pub fn admin_router(shop: Arc<Shop>) -> Router {
    serving(operators_routes(), shop)
}

/// The console, `/metrics`, and the status and health routes the console reads.
fn operators_routes() -> Router<Arc<Shop>> {
    Router::new()
        .merge(status::router())
        .merge(console::router())
        .route("/metrics", axum::routing::get(crate::metrics::scrape))
}

/// `routes` over `shop`, with JSON answers for unknown routes and methods, and the trace,
/// metrics and idempotency layers.
fn serving(routes: Router<Arc<Shop>>, shop: Arc<Shop>) -> Router {
    routes
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { error::ApiError::method_not_allowed() })
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shop),
            idempotency::layer,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shop),
            crate::metrics::track_requests,
        ))
        .layer(axum::middleware::from_fn(trace::trace_context))
        .with_state(shop)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
