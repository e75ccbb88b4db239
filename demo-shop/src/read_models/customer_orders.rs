//! A customer's order history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_core::{EventFilter, RecordedEvent};
use projections::{ApplyError, Documents, DocumentsExt, Projection};
use serde::{Deserialize, Serialize};

use crate::domain::money::{CustomerId, Money, OrderId};
use crate::domain::order::{OrderEvent, OrderStatus};
use crate::read_models::decode;
use crate::storage::ReadModels;

/// The projection's name.
pub const NAME: &str = "customer_orders";
const CUSTOMERS: &str = "customers";
/// Which customer placed each order (the later events name only the order).
const OWNERS: &str = "order_owners";

/// One order in a customer's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerOrder {
    /// The order.
    pub order_id: OrderId,
    /// Where it is.
    pub status: OrderStatus,
    /// Its total.
    pub total: Money,
    /// When it was placed.
    pub placed_at: DateTime<Utc>,
}

/// A customer's orders, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomerHistory {
    /// The orders.
    pub orders: Vec<CustomerOrder>,
}

/// Builds [`CustomerHistory`]s from order events.
pub struct CustomerOrders;

#[async_trait]
impl Projection for CustomerOrders {
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
        let (order_id, status) = match envelope.event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                total,
                ..
            } => {
                docs.save(OWNERS, &order_id.to_string(), &customer_id)
                    .await?;
                let key = customer_id.to_string();
                let mut history: CustomerHistory =
                    docs.load(CUSTOMERS, &key).await?.unwrap_or_default();
                history.orders.push(CustomerOrder {
                    order_id,
                    status: OrderStatus::Placed,
                    total,
                    placed_at: envelope.recorded_at,
                });
                docs.save(CUSTOMERS, &key, &history).await?;
                return Ok(());
            }
            OrderEvent::OrderStockReserved { order_id } => (order_id, OrderStatus::StockReserved),
            OrderEvent::OrderPaid { order_id } => (order_id, OrderStatus::Paid),
            OrderEvent::OrderConfirmed { order_id, .. } => (order_id, OrderStatus::Confirmed),
            OrderEvent::OrderShipped { order_id } => (order_id, OrderStatus::Shipped),
            OrderEvent::OrderCancelled { order_id, .. } => (order_id, OrderStatus::Cancelled),
        };
        let customer: CustomerId =
            docs.load(OWNERS, &order_id.to_string())
                .await?
                .ok_or_else(|| {
                    ApplyError::poison(format!("order {order_id} changed before it was placed"))
                })?;
        let key = customer.to_string();
        let mut history: CustomerHistory = docs.load(CUSTOMERS, &key).await?.unwrap_or_default();
        if let Some(entry) = history.orders.iter_mut().find(|o| o.order_id == order_id) {
            entry.status = status;
        }
        docs.save(CUSTOMERS, &key, &history).await?;
        Ok(())
    }
}

/// A customer's orders, oldest first (empty for an unknown customer).
pub async fn orders_of(
    read_models: &ReadModels,
    customer: CustomerId,
) -> projections::Result<Vec<CustomerOrder>> {
    let history: Option<CustomerHistory> = read_models
        .get(NAME, CUSTOMERS, &customer.to_string())
        .await?;
    Ok(history.unwrap_or_default().orders)
}
