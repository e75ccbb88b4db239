//! The shop's read models: one projection and its queries per file. Queries read only these.

pub mod customer_orders;
pub mod daily_sales;
pub mod order_summaries;
pub mod product_stock;

use std::sync::Arc;

use cqrs_core::{DomainEvent, EventEnvelope, RecordedEvent, Upcasters};
use projections::{ApplyError, Projection};

/// Every read-model projection of the shop (replayable; the checkout is not among them).
pub fn all() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(order_summaries::OrderSummaries),
        Arc::new(product_stock::ProductStock),
        Arc::new(customer_orders::CustomerOrders),
        Arc::new(daily_sales::DailySales),
    ]
}

/// Decodes a stored event for a projection; an undecodable one is a poison event.
pub(crate) fn decode<E: DomainEvent>(
    event: &RecordedEvent,
) -> Result<EventEnvelope<E>, ApplyError> {
    event
        .decode::<E>(&Upcasters::new())
        .map_err(|e| ApplyError::poison(e.to_string()))
}
