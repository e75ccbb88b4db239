//! What happened to the inventory of one SKU.

use cqrs_core::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::money::{Money, OrderId, Sku};

/// An event of the inventory of one SKU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    /// The product joined the catalogue.
    ProductRegistered {
        /// Its SKU.
        sku: Sku,
        /// Its display name.
        name: String,
        /// Its unit price.
        price: Money,
    },
    /// Units were added.
    Restocked {
        /// Its SKU.
        sku: Sku,
        /// How many.
        quantity: u32,
    },
    /// Units were set aside for an order.
    StockReserved {
        /// Its SKU.
        sku: Sku,
        /// The order.
        order_id: OrderId,
        /// How many.
        quantity: u32,
    },
    /// An order's reserved units went back to the stock.
    ReservationReleased {
        /// Its SKU.
        sku: Sku,
        /// The order.
        order_id: OrderId,
        /// How many.
        quantity: u32,
    },
    /// An order's reserved units shipped.
    ReservationCommitted {
        /// Its SKU.
        sku: Sku,
        /// The order.
        order_id: OrderId,
        /// How many.
        quantity: u32,
    },
}

impl DomainEvent for InventoryEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::ProductRegistered { .. } => "ProductRegistered",
            Self::Restocked { .. } => "Restocked",
            Self::StockReserved { .. } => "StockReserved",
            Self::ReservationReleased { .. } => "ReservationReleased",
            Self::ReservationCommitted { .. } => "ReservationCommitted",
        }
    }
}
