//! Products and stock: register, restock, list with stock.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::consistency::MinPosition;
use super::error::ApiError;
use super::extract::{Body, Path, Query};
use super::idempotency::RequestMetadata;
use super::AppState;
use crate::domain::money::{Money, Sku};
use crate::read_models::product_stock::{self, ProductStockRow};

/// `POST /products`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterProduct {
    /// The SKU.
    pub sku: String,
    /// The display name.
    pub name: String,
    /// The unit price in cents.
    pub price_cents: u64,
}

/// `POST /products/{sku}/restock`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    /// Units to add.
    pub quantity: u32,
}

fn sku(text: String) -> Result<Sku, ApiError> {
    Sku::new(text).map_err(ApiError::bad_request)
}

async fn register(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Body(body): Body<RegisterProduct>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let sku = sku(body.sku)?;
    let written = shop
        .register_product(sku.clone(), body.name, Money(body.price_cents), &meta)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "sku": sku, "position": written.position })),
    ))
}

async fn restock(
    State(shop): AppState,
    RequestMetadata(meta): RequestMetadata,
    Path(sku_text): Path<String>,
    Body(body): Body<Restock>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let sku = sku(sku_text)?;
    let written = shop.restock(sku.clone(), body.quantity, &meta).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "sku": sku, "position": written.position })),
    ))
}

async fn list(
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

async fn one(
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
