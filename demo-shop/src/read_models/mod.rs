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
