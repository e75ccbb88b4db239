//! Orders: place, cancel, ship, read one, a customer's history, daily sales.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::consistency::MinPosition;
use super::error::ApiError;
use super::extract::{Body, Path, Query};
use super::idempotency::RequestMetadata;
use super::AppState;
use crate::domain::money::{CustomerId, OrderId, Sku};
use crate::read_models::customer_orders::{self, CustomerOrder};
use crate::read_models::daily_sales::{self, DaySales};
use crate::read_models::order_summaries::{self, OrderSummary};

/// One line of `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRequest {
    /// The product.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// `POST /orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrder {
    /// Who orders.
    pub customer_id: Uuid,
    /// What.
    pub lines: Vec<LineRequest>,
    /// The payment card token.
    pub card: String,
}

/// `POST /orders/{id}/cancel`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// Why.
    pub reason: String,
}

fn accepted(order_id: OrderId, position: Option<cqrs_core::Position>) -> (StatusCode, Json<Value>) {
    (
        StatusCode::ACCEPTED,
        Json(json!({ "order_id": order_id, "position": position })),
    )
}

async fn place(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Body(body): Body<PlaceOrder>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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

async fn cancel(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(id): Path<Uuid>,
    Body(body): Body<CancelOrder>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let written = shop.cancel_order(OrderId(id), body.reason, &meta).await?;
    Ok(accepted(OrderId(id), written.position))
}

async fn ship(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(id): Path<Uuid>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let written = shop.ship_order(OrderId(id), &meta).await?;
    Ok(accepted(OrderId(id), written.position))
}

async fn one(
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

async fn of_customer(
    State(shop): AppState,
    Path(id): Path<Uuid>,
    Query(min): Query<MinPosition>,
) -> Result<Json<Vec<CustomerOrder>>, ApiError> {
    min.wait(&shop, customer_orders::NAME).await?;
    Ok(Json(
        customer_orders::orders_of(shop.host(), CustomerId(id)).await?,
    ))
}

async fn sales(
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
