//! Order summaries: status, lines, total and timestamps of every order.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::{EventFilter, RecordedEvent};
use projections::{ApplyError, Documents, DocumentsExt, Projection};
use serde::{Deserialize, Serialize};

use crate::domain::money::{CustomerId, Money, OrderId};
use crate::domain::order::{OrderEvent, OrderLine, OrderStatus};
use crate::read_models::decode;
use crate::storage::ReadModels;

/// The projection's name.
pub const NAME: &str = "order_summaries";
const ORDERS: &str = "orders";

/// One order, as queries see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Builds [`OrderSummary`]s from order events.
pub struct OrderSummaries;

#[async_trait]
impl Projection for OrderSummaries {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["order"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let envelope = decode::<OrderEvent>(event)?;
        let at = envelope.recorded_at;
        if let OrderEvent::OrderPlaced {
            order_id,
            customer_id,
            lines,
            total,
            ..
        } = envelope.event
        {
            let summary = OrderSummary {
                order_id,
                customer_id,
                status: OrderStatus::Placed,
                lines,
                total,
                cancel_reason: None,
                placed_at: at,
                updated_at: at,
            };
            docs.save(ORDERS, &order_id.to_string(), &summary).await?;
            return Ok(());
        }
        let (order_id, status, reason) = match envelope.event {
            OrderEvent::OrderPlaced { .. } => return Ok(()),
            OrderEvent::OrderStockReserved { order_id } => {
                (order_id, OrderStatus::StockReserved, None)
            }
            OrderEvent::OrderPaid { order_id } => (order_id, OrderStatus::Paid, None),
            OrderEvent::OrderConfirmed { order_id, .. } => (order_id, OrderStatus::Confirmed, None),
            OrderEvent::OrderShipped { order_id } => (order_id, OrderStatus::Shipped, None),
            OrderEvent::OrderCancelled { order_id, reason } => {
                (order_id, OrderStatus::Cancelled, Some(reason))
            }
        };
        let key = order_id.to_string();
        let mut summary: OrderSummary = docs.load(ORDERS, &key).await?.ok_or_else(|| {
            ApplyError::poison(format!("order {order_id} changed before it was placed"))
        })?;
        summary.status = status;
        summary.cancel_reason = reason.or(summary.cancel_reason);
        summary.updated_at = at;
        docs.save(ORDERS, &key, &summary).await?;
        Ok(())
    }
}

/// One order's summary.
pub async fn order(
    read_models: &ReadModels,
    order_id: OrderId,
) -> projections::Result<Option<OrderSummary>> {
    read_models.get(NAME, ORDERS, &order_id.to_string()).await
}

/// Every order's summary, by order id.
pub async fn all_orders(read_models: &ReadModels) -> projections::Result<Vec<OrderSummary>> {
    read_models.list(NAME, ORDERS).await
}
