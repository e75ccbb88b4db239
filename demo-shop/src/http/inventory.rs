//! Products and stock: register, restock, list with stock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

use super::consistency::MinPosition;
use super::error::ApiError;
use super::extract::{Body, Path, Query};
use super::idempotency::RequestMetadata;
use super::openapi::{CommandErrors, ProductAccepted, QueryErrors};
use super::AppState;
use crate::domain::money::{Money, Sku};
use crate::read_models::product_stock::{self, ProductStockRow};

/// `POST /products`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterProduct {
    /// The SKU: 1 to 40 of `[A-Za-z0-9_.]`.
    #[schema(example = "MUG.1", pattern = "^[A-Za-z0-9_.]{1,40}$")]
    pub sku: String,
    /// The display name: 1 to 100 characters, not blank, no control or text-direction
    /// characters.
    #[schema(example = "Mug, blue", min_length = 1, max_length = 100)]
    pub name: String,
    /// The unit price in cents: 1 to 100,000,000.
    #[schema(minimum = 1, maximum = 100_000_000)]
    pub price_cents: u64,
}

/// `POST /products/{sku}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add: 1 to 1,000,000.
    #[schema(minimum = 1, maximum = 1_000_000)]
    pub quantity: u32,
}

fn sku(text: String) -> Result<Sku, ApiError> {
    Sku::new(text).map_err(ApiError::bad_request)
}

fn accepted(
    sku: Sku,
    position: Option<cqrs_core::Position>,
) -> (StatusCode, Json<ProductAccepted>) {
    (
        StatusCode::ACCEPTED,
        Json(ProductAccepted { sku, position }),
    )
}

/// Registers a product.
#[utoipa::path(post, path = "/products", tag = "inventory", request_body = RegisterProduct,
    params(super::idempotency::IdempotencyKey),
    responses((status = 202, description = "Registered", body = ProductAccepted), CommandErrors))]
pub(super) async fn register(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Body(body): Body<RegisterProduct>,
) -> Result<(StatusCode, Json<ProductAccepted>), ApiError> {
    let sku = sku(body.sku)?;
    let written = shop
        .register_product(sku.clone(), body.name, Money(body.price_cents), &meta)
        .await?;
    Ok(accepted(sku, written.position))
}

/// Adds units to a product's stock.
#[utoipa::path(post, path = "/products/{sku}/restock", tag = "inventory", request_body = Restock,
    params(("sku" = String, Path, description = "The product", pattern = "^[A-Za-z0-9_.]{1,40}$"), super::idempotency::IdempotencyKey),
    responses((status = 202, description = "Restocked", body = ProductAccepted), CommandErrors))]
pub(super) async fn restock(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(sku_text): Path<String>,
    Body(body): Body<Restock>,
) -> Result<(StatusCode, Json<ProductAccepted>), ApiError> {
    let sku = sku(sku_text)?;
    let written = shop.restock(sku.clone(), body.quantity, &meta).await?;
    Ok(accepted(sku, written.position))
}

/// Every product with its stock.
#[utoipa::path(get, path = "/products", tag = "inventory", operation_id = "products", params(MinPosition),
    responses((status = 200, description = "Products by SKU", body = Vec<ProductStockRow>), QueryErrors))]
pub(super) async fn list(
    State(shop): AppState,
    Query(min): Query<MinPosition>,
) -> Result<Json<Vec<ProductStockRow>>, ApiError> {
    min.wait(&shop, product_stock::NAME).await?;
    Ok(Json(product_stock::products(shop.host()).await?))
}

/// The routes of products and stock.
pub fn router() -> Router<std::sync::Arc<crate::shop::Shop>> {
    Router::new()
        .route("/products", post(register).get(list))
        .route("/products/{sku}/restock", post(restock))
        .route("/products/{sku}", get(one))
}

/// One product with its stock.
#[utoipa::path(get, path = "/products/{sku}", tag = "inventory", operation_id = "product",
    params(("sku" = String, Path, description = "The product", pattern = "^[A-Za-z0-9_.]{1,40}$"), MinPosition),
    responses((status = 200, description = "The product", body = ProductStockRow),
        (status = 404, description = "No such product", body = super::openapi::ErrorBody), QueryErrors))]
pub(super) async fn one(
    State(shop): AppState,
    Path(sku_text): Path<String>,
    Query(min): Query<MinPosition>,
) -> Result<Json<ProductStockRow>, ApiError> {
    let sku = sku(sku_text)?;
    min.wait(&shop, product_stock::NAME).await?;
    product_stock::product(shop.host(), &sku)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no product {sku}")))
}
