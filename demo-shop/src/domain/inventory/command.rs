//! What the inventory of one SKU can be asked.

use crate::domain::money::{Money, OrderId};

/// A command to the inventory of one SKU.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InventoryCommand {
    /// Adds the product to the catalogue.
    RegisterProduct {
        /// Its display name.
        name: String,
        /// Its unit price.
        price: Money,
    },
    /// Adds units to the stock.
    Restock {
        /// How many.
        quantity: u32,
    },
    /// Sets units aside for an order (a second reservation for the same order is a no-op).
    Reserve {
        /// The order.
        order_id: OrderId,
        /// How many units.
        quantity: u32,
    },
    /// Gives an order's reserved units back (a no-op if it holds none).
    Release {
        /// The order.
        order_id: OrderId,
    },
    /// The order shipped: its reserved units leave the stock for good.
    Commit {
        /// The order.
        order_id: OrderId,
    },
}
