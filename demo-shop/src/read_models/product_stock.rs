//! Products with their stock: available, reserved and sold units.

use async_trait::async_trait;
use cqrs_core::{EventFilter, RecordedEvent};
use projections::{ApplyError, Documents, DocumentsExt, Projection};
use serde::{Deserialize, Serialize};

use crate::domain::inventory::InventoryEvent;
use crate::domain::money::{Money, Sku};
use crate::read_models::decode;
use crate::storage::ReadModels;

/// The projection's name.
pub const NAME: &str = "product_stock";
const PRODUCTS: &str = "products";

/// A product and its stock, as queries see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductStockRow {
    /// The SKU.
    pub sku: Sku,
    /// The name.
    pub name: String,
    /// The unit price.
    pub price: Money,
    /// Units free to reserve.
    pub available: u32,
    /// Units reserved by orders.
    pub reserved: u32,
    /// Units shipped.
    pub sold: u32,
}

/// Builds [`ProductStockRow`]s from inventory events.
pub struct ProductStock;

#[async_trait]
impl Projection for ProductStock {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["inventory"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let event = decode::<InventoryEvent>(event)?.event;
        if let InventoryEvent::ProductRegistered { sku, name, price } = event {
            let row = ProductStockRow {
                sku: sku.clone(),
                name,
                price,
                available: 0,
                reserved: 0,
                sold: 0,
            };
            docs.save(PRODUCTS, sku.as_str(), &row).await?;
            return Ok(());
        }
        let sku = match &event {
            InventoryEvent::ProductRegistered { sku, .. }
            | InventoryEvent::Restocked { sku, .. }
            | InventoryEvent::StockReserved { sku, .. }
            | InventoryEvent::ReservationReleased { sku, .. }
            | InventoryEvent::ReservationCommitted { sku, .. } => sku.clone(),
        };
        let mut row: ProductStockRow =
            docs.load(PRODUCTS, sku.as_str()).await?.ok_or_else(|| {
                ApplyError::poison(format!("stock of {sku} changed before it was registered"))
            })?;
        let broken = || ApplyError::poison(format!("stock of {sku} would go negative"));
        match event {
            InventoryEvent::ProductRegistered { .. } => {}
            InventoryEvent::Restocked { quantity, .. } => row.available += quantity,
            InventoryEvent::StockReserved { quantity, .. } => {
                row.available = row.available.checked_sub(quantity).ok_or_else(broken)?;
                row.reserved += quantity;
            }
            InventoryEvent::ReservationReleased { quantity, .. } => {
                row.reserved = row.reserved.checked_sub(quantity).ok_or_else(broken)?;
                row.available += quantity;
            }
            InventoryEvent::ReservationCommitted { quantity, .. } => {
                row.reserved = row.reserved.checked_sub(quantity).ok_or_else(broken)?;
                row.sold += quantity;
            }
        }
        docs.save(PRODUCTS, sku.as_str(), &row).await?;
        Ok(())
    }
}

/// Every product with its stock, by SKU.
pub async fn products(read_models: &ReadModels) -> projections::Result<Vec<ProductStockRow>> {
    read_models.list(NAME, PRODUCTS).await
}

/// One product with its stock.
pub async fn product(
    read_models: &ReadModels,
    sku: &Sku,
) -> projections::Result<Option<ProductStockRow>> {
    read_models.get(NAME, PRODUCTS, sku.as_str()).await
}
