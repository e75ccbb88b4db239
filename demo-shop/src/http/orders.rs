//! Orders: place, cancel, ship, read one, a customer's history, daily sales.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::consistency::MinPosition;
use super::error::ApiError;
use super::extract::{Body, Path, Query};
use super::idempotency::{IdempotencyKey, RequestMetadata};
use super::openapi::{CommandErrors, ErrorBody, OrderAccepted, QueryErrors};
use super::AppState;
use crate::domain::money::{CustomerId, OrderId, Sku};
use crate::read_models::customer_orders::{self, CustomerOrder};
use crate::read_models::daily_sales::{self, DaySales};
use crate::read_models::order_summaries::{self, OrderSummary};

/// One line of `POST /orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// The product.
    #[schema(example = "MUG.1", pattern = "^[A-Za-z0-9_.]{1,40}$")]
    pub sku: String,
    /// Units: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
}

/// `POST /orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Who orders.
    pub customer_id: Uuid,
    /// What: 1 to 50 lines.
    #[schema(min_items = 1, max_items = 50)]
    pub lines: Vec<LineRequest>,
    /// The payment card token: 1 to 64 characters, not blank, no control or text-direction
    /// characters.
    #[schema(example = "card_approve", min_length = 1, max_length = 64)]
    pub card: String,
}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why: 1 to 500 characters, not blank, no control or text-direction characters.
    #[schema(example = "changed my mind", min_length = 1, max_length = 500)]
    pub reason: String,
}

fn accepted(
    order_id: OrderId,
    position: Option<cqrs_core::Position>,
) -> (StatusCode, Json<OrderAccepted>) {
    (
        StatusCode::ACCEPTED,
        Json(OrderAccepted { order_id, position }),
    )
}

/// Places an order; the checkout then reserves its stock and takes its payment.
#[utoipa::path(post, path = "/orders", tag = "orders", request_body = PlaceOrder, params(IdempotencyKey),
    responses((status = 202, description = "Placed", body = OrderAccepted), CommandErrors))]
pub(super) async fn place(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Body(body): Body<PlaceOrder>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let lines = body
        .lines
        .into_iter()
        .map(|l| Sku::new(l.sku).map(|sku| (sku, l.quantity)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ApiError::bad_request)?;
    let (order_id, written) = shop
        .place_order(CustomerId(body.customer_id), lines, body.card, &meta)
        .await?;
    Ok(accepted(order_id, written.position))
}

/// Cancels an order that has not shipped.
#[utoipa::path(post, path = "/orders/{id}/cancel", tag = "orders", request_body = CancelOrder,
    params(("id" = Uuid, Path, description = "The order"), IdempotencyKey),
    responses((status = 202, description = "Cancelled", body = OrderAccepted), CommandErrors))]
pub(super) async fn cancel(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(id): Path<Uuid>,
    Body(body): Body<CancelOrder>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let written = shop.cancel_order(OrderId(id), body.reason, &meta).await?;
    Ok(accepted(OrderId(id), written.position))
}

/// Ships a confirmed order.
#[utoipa::path(post, path = "/orders/{id}/ship", tag = "orders",
    params(("id" = Uuid, Path, description = "The order"), IdempotencyKey),
    responses((status = 202, description = "Shipped", body = OrderAccepted), CommandErrors))]
pub(super) async fn ship(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<OrderAccepted>), ApiError> {
    let written = shop.ship_order(OrderId(id), &meta).await?;
    Ok(accepted(OrderId(id), written.position))
}

/// One order's summary.
#[utoipa::path(get, path = "/orders/{id}", tag = "orders", operation_id = "order",
    params(("id" = Uuid, Path, description = "The order"), MinPosition),
    responses((status = 200, description = "The order", body = OrderSummary),
        (status = 404, description = "No such order", body = ErrorBody), QueryErrors))]
pub(super) async fn one(
    State(shop): AppState,
    Path(id): Path<Uuid>,
    Query(min): Query<MinPosition>,
) -> Result<Json<OrderSummary>, ApiError> {
    min.wait(&shop, order_summaries::NAME).await?;
    order_summaries::order(shop.host(), OrderId(id))
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no order {id}")))
}

/// A customer's orders, oldest first.
#[utoipa::path(get, path = "/customers/{id}/orders", tag = "orders",
    params(("id" = Uuid, Path, description = "The customer"), MinPosition),
    responses((status = 200, description = "The customer's orders (none for an unknown customer)", body = Vec<CustomerOrder>), QueryErrors))]
pub(super) async fn of_customer(
    State(shop): AppState,
    Path(id): Path<Uuid>,
    Query(min): Query<MinPosition>,
) -> Result<Json<Vec<CustomerOrder>>, ApiError> {
    min.wait(&shop, customer_orders::NAME).await?;
    Ok(Json(
        customer_orders::orders_of(shop.host(), CustomerId(id)).await?,
    ))
}

/// Sales per day.
#[utoipa::path(get, path = "/sales/daily", tag = "orders", params(MinPosition),
    responses((status = 200, description = "Confirmed orders and revenue per day", body = Vec<DaySales>), QueryErrors))]
pub(super) async fn sales(
    State(shop): AppState,
    Query(min): Query<MinPosition>,
) -> Result<Json<Vec<DaySales>>, ApiError> {
    min.wait(&shop, daily_sales::NAME).await?;
    Ok(Json(daily_sales::days(shop.host()).await?))
}

/// The routes of orders, customers and sales.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/orders", post(place))
        .route("/orders/{id}", get(one))
        .route("/orders/{id}/cancel", post(cancel))
        .route("/orders/{id}/ship", post(ship))
        .route("/customers/{id}/orders", get(of_customer))
        .route("/sales/daily", get(sales))
}
