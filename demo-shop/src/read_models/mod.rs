//! The shop's read models: one projection and its queries per file. Queries read only these.

pub mod customer_orders;
pub mod daily_sales;
pub mod order_summaries;
pub mod product_stock;

use std::sync::Arc;

use projections::{Projection, ProjectionHost, Typed};

/// Every read-model projection of the shop (replayable; the checkout is not among them).
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(Typed::new(order_summaries::OrderSummaries)),
        Arc::new(Typed::new(product_stock::ProductStock)),
        Arc::new(Typed::new(customer_orders::CustomerOrders)),
        Arc::new(Typed::new(daily_sales::DailySales)),
    ]
}

/// Registers every read model of the shop with `host`.
pub fn register(host: ProjectionHost) -> ProjectionHost {
    host.with_projections(all())
}

#[cfg(test)]
mod tests {
    use projections::testing::given;
    use projections::Typed;
    use uuid::Uuid;

    use super::*;
    use crate::domain::inventory::{Inventory, InventoryEvent};
    use crate::domain::money::{CustomerId, Money, OrderId, Sku};
    use crate::domain::order::{Order, OrderEvent, OrderLine, OrderStatus};

    fn placed(order_id: OrderId, customer_id: CustomerId, sku: &Sku) -> OrderEvent {
        let line = OrderLine {
            sku: sku.clone(),
            quantity: 2,
            unit_price: Money(250),
        };
        OrderEvent::OrderPlaced {
            order_id,
            customer_id,
            lines: vec![line],
            total: Money(500),
            card: "tok_visa".into(),
        }
    }

    #[tokio::test]
    async fn an_order_is_summed_up_listed_and_counted() {
        let (order_id, customer) = (OrderId(Uuid::new_v4()), CustomerId(Uuid::new_v4()));
        let sku = Sku::new("MUG").expect("sku");
        let events = given::<Order>(
            &order_id.to_string(),
            [
                placed(order_id, customer, &sku),
                OrderEvent::OrderStockReserved { order_id },
                OrderEvent::OrderPaid { order_id },
                OrderEvent::OrderConfirmed {
                    order_id,
                    total: Money(500),
                },
            ],
        );

        let summaries = events
            .project(Typed::new(order_summaries::OrderSummaries))
            .await;
        let summary = summaries
            .expect("applies")
            .document::<order_summaries::OrderSummaries>(&order_id.to_string());
        assert_eq!(
            summary.map(|s| (s.status, s.total)),
            Some((OrderStatus::Confirmed, Money(500)))
        );

        let histories = events
            .project(Typed::new(customer_orders::CustomerOrders))
            .await;
        let model = histories.expect("applies");
        let history = model
            .get(&customer_orders::CUSTOMERS, &customer.to_string())
            .expect("history");
        assert_eq!(history.orders.len(), 1);
        assert_eq!(history.orders[0].status, OrderStatus::Confirmed);

        let sales = events
            .project(Typed::new(daily_sales::DailySales))
            .await
            .expect("applies");
        let days = sales.documents::<daily_sales::DailySales>();
        assert_eq!(
            days.iter()
                .map(|d| (d.orders, d.revenue))
                .collect::<Vec<_>>(),
            vec![(1, 500)]
        );
    }

    #[tokio::test]
    async fn stock_moves_and_never_goes_negative() {
        let sku = Sku::new("MUG").expect("sku");
        let order_id = OrderId(Uuid::new_v4());
        let registered = InventoryEvent::ProductRegistered {
            sku: sku.clone(),
            name: "Mug".into(),
            price: Money(250),
        };
        let restocked = InventoryEvent::Restocked {
            sku: sku.clone(),
            quantity: 5,
        };
        let reserved = InventoryEvent::StockReserved {
            sku: sku.clone(),
            order_id,
            quantity: 2,
        };
        let committed = InventoryEvent::ReservationCommitted {
            sku: sku.clone(),
            order_id,
            quantity: 2,
        };
        let stock = given::<Inventory>("MUG", [registered.clone(), restocked, reserved, committed])
            .project(Typed::new(product_stock::ProductStock))
            .await
            .expect("applies")
            .document::<product_stock::ProductStock>("MUG")
            .expect("row");
        assert_eq!((stock.available, stock.reserved, stock.sold), (3, 0, 2));

        let oversold = InventoryEvent::StockReserved {
            sku: sku.clone(),
            order_id,
            quantity: 1,
        };
        let refused = given::<Inventory>("MUG", [registered, oversold])
            .project(Typed::new(product_stock::ProductStock))
            .await;
        assert!(
            matches!(refused, Err(projections::ApplyError::Poison(_))),
            "{refused:?}"
        );
    }
}
