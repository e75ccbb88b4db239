//! What happened to an order.

use cqrs_core::DomainEvent;
use serde::{Deserialize, Serialize};

use super::command::OrderLine;
use crate::domain::money::{CustomerId, Money, OrderId};

/// An event of one order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderEvent {
    /// The order was placed.
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// Who ordered.
        customer_id: CustomerId,
        /// What.
        lines: Vec<OrderLine>,
        /// The sum of the lines.
        total: Money,
        /// The payment card token.
        card: String,
    },
    /// All its stock is reserved.
    OrderStockReserved {
        /// The order.
        order_id: OrderId,
    },
    /// Its payment was captured.
    OrderPaid {
        /// The order.
        order_id: OrderId,
    },
    /// It is confirmed.
    OrderConfirmed {
        /// The order.
        order_id: OrderId,
        /// What was sold, for sales figures.
        total: Money,
    },
    /// It shipped.
    OrderShipped {
        /// The order.
        order_id: OrderId,
    },
    /// It was cancelled.
    OrderCancelled {
        /// The order.
        order_id: OrderId,
        /// Why.
        reason: String,
    },
}

impl DomainEvent for OrderEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::OrderPlaced { .. } => "OrderPlaced",
            Self::OrderStockReserved { .. } => "OrderStockReserved",
            Self::OrderPaid { .. } => "OrderPaid",
            Self::OrderConfirmed { .. } => "OrderConfirmed",
            Self::OrderShipped { .. } => "OrderShipped",
            Self::OrderCancelled { .. } => "OrderCancelled",
        }
    }
}
