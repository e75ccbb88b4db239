//! A customer's order history.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use projections::{
    ApplyError, Collection, Documents, DocumentsExt, EventOf, EventProjection, ProjectionHost,
};
use serde::{Deserialize, Serialize};

use crate::domain::money::{CustomerId, Money, OrderId};
use crate::domain::order::{Order, OrderEvent, OrderStatus};

/// The projection's name (its checkpoint, and what `min_position` waits for).
pub const NAME: &str = <CustomerOrders as EventProjection>::NAME;

/// Each customer's history, by customer id.
pub(crate) const CUSTOMERS: Collection<CustomerHistory> =
    Collection::new(CustomerOrders::NAME, "customers");
/// Which customer placed each order (the later events name only the order).
const OWNERS: Collection<CustomerId> = Collection::new(CustomerOrders::NAME, "order_owners");

/// One order in a customer's history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
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

/// Builds [`CustomerHistory`]s from order events. Each event sets what it says (an order is
/// listed once, a status is set, not stepped), so applying one twice changes nothing.
pub struct CustomerOrders;

#[async_trait]
impl EventProjection for CustomerOrders {
    type Aggregate = Order;
    const NAME: &'static str = "customer_orders";

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &EventOf<Order>,
    ) -> Result<(), ApplyError> {
        let order_id = event.stream_id.aggregate_id();
        let status = match &event.event {
            OrderEvent::OrderPlaced { customer_id, .. } => {
                docs.write(&OWNERS, order_id, customer_id).await?;
                OrderStatus::Placed
            }
            OrderEvent::OrderStockReserved { .. } => OrderStatus::StockReserved,
            OrderEvent::OrderPaid { .. } => OrderStatus::Paid,
            OrderEvent::OrderConfirmed { .. } => OrderStatus::Confirmed,
            OrderEvent::OrderShipped { .. } => OrderStatus::Shipped,
            OrderEvent::OrderCancelled { .. } => OrderStatus::Cancelled,
        };
        let customer = docs.read(&OWNERS, order_id).await?.ok_or_else(|| {
            ApplyError::poison(format!("{} changed before it was placed", event.stream_id))
        })?;
        let key = customer.to_string();
        let mut history = docs.read(&CUSTOMERS, &key).await?.unwrap_or_default();
        match (
            &event.event,
            history
                .orders
                .iter_mut()
                .find(|o| o.order_id.to_string() == order_id),
        ) {
            (_, Some(entry)) => entry.status = status,
            (
                OrderEvent::OrderPlaced {
                    order_id, total, ..
                },
                None,
            ) => {
                history.orders.push(CustomerOrder {
                    order_id: *order_id,
                    status,
                    total: *total,
                    placed_at: event.recorded_at,
                });
            }
            (_, None) => {}
        }
        docs.write(&CUSTOMERS, &key, &history).await?;
        Ok(())
    }
}

/// A customer's orders, oldest first (empty for an unknown customer).
pub async fn orders_of(
    host: &ProjectionHost,
    customer: CustomerId,
) -> projections::Result<Vec<CustomerOrder>> {
    let history = host.get(&CUSTOMERS, &customer.to_string()).await?;
    Ok(history.unwrap_or_default().orders)
}
