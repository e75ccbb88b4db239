//! Products with their stock: available, reserved and sold units.

use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use serde::{Deserialize, Serialize};

use crate::domain::inventory::{Inventory, InventoryEvent};
use crate::domain::money::{Money, Sku};

/// The projection's name (its checkpoint, and what `min_position` waits for).
pub const NAME: &str = <ProductStock as Fold>::NAME;

/// A product and its stock, as queries see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Folds inventory events into [`ProductStockRow`]s, one per product.
pub struct ProductStock;

impl Fold for ProductStock {
    type Aggregate = Inventory;
    type Doc = ProductStockRow;
    const NAME: &'static str = "product_stock";
    const COLLECTION: &'static str = "products";

    fn evolve(
        &self,
        row: Option<ProductStockRow>,
        event: &EventOf<Inventory>,
    ) -> Result<Option<ProductStockRow>, ApplyError> {
        if let InventoryEvent::ProductRegistered { sku, name, price } = &event.event {
            return Ok(Some(ProductStockRow {
                sku: sku.clone(),
                name: name.clone(),
                price: *price,
                available: 0,
                reserved: 0,
                sold: 0,
            }));
        }
        let stream = &event.stream_id;
        let mut row = row.ok_or_else(|| {
            ApplyError::poison(format!("{stream} changed before it was registered"))
        })?;
        let broken = || ApplyError::poison(format!("the stock of {stream} would go negative"));
        match event.event {
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
        Ok(Some(row))
    }
}

/// Every product with its stock, by SKU.
pub async fn products(host: &ProjectionHost) -> projections::Result<Vec<ProductStockRow>> {
    host.documents::<ProductStock>().await
}

/// One product with its stock.
pub async fn product(
    host: &ProjectionHost,
    sku: &Sku,
) -> projections::Result<Option<ProductStockRow>> {
    host.document::<ProductStock>(sku.as_str()).await
}
