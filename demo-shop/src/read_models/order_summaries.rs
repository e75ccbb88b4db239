//! Order summaries: status, lines, total and timestamps of every order.

use chrono::{DateTime, Utc};
use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use serde::{Deserialize, Serialize};

use crate::domain::money::{CustomerId, Money, OrderId};
use crate::domain::order::{Order, OrderEvent, OrderLine, OrderStatus};

/// The projection's name (its checkpoint, and what `min_position` waits for).
pub const NAME: &str = <OrderSummaries as Fold>::NAME;

/// One order, as queries see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderSummary {
    /// The order.
    pub order_id: OrderId,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// Where it is.
    pub status: OrderStatus,
    /// What.
    pub lines: Vec<OrderLine>,
    /// The sum of the lines.
    pub total: Money,
    /// Why it was cancelled, if it was.
    pub cancel_reason: Option<String>,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

/// Folds order events into [`OrderSummary`]s, one per order.
pub struct OrderSummaries;

impl Fold for OrderSummaries {
    type Aggregate = Order;
    type Doc = OrderSummary;
    const NAME: &'static str = "order_summaries";
    const COLLECTION: &'static str = "orders";

    fn evolve(
        &self,
        summary: Option<OrderSummary>,
        event: &EventOf<Order>,
    ) -> Result<Option<OrderSummary>, ApplyError> {
        let at = event.recorded_at;
        let (status, reason) = match &event.event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
                ..
            } => {
                return Ok(Some(OrderSummary {
                    order_id: *order_id,
                    customer_id: *customer_id,
                    status: OrderStatus::Placed,
                    lines: lines.clone(),
                    total: *total,
                    cancel_reason: None,
                    placed_at: at,
                    updated_at: at,
                }))
            }
            OrderEvent::OrderStockReserved { .. } => (OrderStatus::StockReserved, None),
            OrderEvent::OrderPaid { .. } => (OrderStatus::Paid, None),
            OrderEvent::OrderConfirmed { .. } => (OrderStatus::Confirmed, None),
            OrderEvent::OrderShipped { .. } => (OrderStatus::Shipped, None),
            OrderEvent::OrderCancelled { reason, .. } => (OrderStatus::Cancelled, Some(reason)),
        };
        let mut summary = summary.ok_or_else(|| {
            ApplyError::poison(format!("{} changed before it was placed", event.stream_id))
        })?;
        summary.status = status;
        summary.cancel_reason = reason.cloned().or(summary.cancel_reason);
        summary.updated_at = at;
        Ok(Some(summary))
    }
}

/// One order's summary.
pub async fn order(
    host: &ProjectionHost,
    order_id: OrderId,
) -> projections::Result<Option<OrderSummary>> {
    host.document::<OrderSummaries>(&order_id.to_string()).await
}

/// Every order's summary, by order id.
pub async fn all_orders(host: &ProjectionHost) -> projections::Result<Vec<OrderSummary>> {
    host.documents::<OrderSummaries>().await
}
