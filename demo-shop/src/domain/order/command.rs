//! What an order can be asked.

use serde::{Deserialize, Serialize};

use crate::domain::money::{CustomerId, Money, Sku};

/// One line of an order, priced when it was placed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderLine {
    /// The product.
    pub sku: Sku,
    /// Units (more than 0).
    pub quantity: u32,
    /// The unit price when the order was placed.
    pub unit_price: Money,
}

/// A command to one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OrderCommand {
    /// Places the order.
    Place {
        /// Who orders.
        customer_id: CustomerId,
        /// What: at least one line, each SKU at most once.
        lines: Vec<OrderLine>,
        /// The payment card token (see the simulated gateway's test cards).
        card: String,
    },
    /// Every line's stock is reserved (sent by the checkout).
    MarkStockReserved,
    /// The payment was captured (sent by the checkout).
    MarkPaid,
    /// The order is confirmed (sent by the checkout once paid).
    Confirm,
    /// The order left the warehouse.
    Ship,
    /// The order is cancelled, with a reason, from any state before shipping.
    Cancel {
        /// Why.
        reason: String,
    },
}
