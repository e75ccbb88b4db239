//! Daily sales totals: confirmed orders and revenue per day (UTC).

use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use serde::{Deserialize, Serialize};

use crate::domain::order::{Order, OrderEvent};

/// The projection's name (its checkpoint, and what `min_position` waits for).
pub const NAME: &str = <DailySales as Fold>::NAME;

/// One day's sales.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DaySales {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Orders confirmed that day.
    pub orders: u64,
    /// Their total, in cents. Wider than [`Money`](crate::domain::money::Money): no number of orders in a day can
    /// overflow it, so no order the write side accepted can stop this read model.
    pub revenue: u128,
}

/// Folds confirmed orders into [`DaySales`], one per day.
pub struct DailySales;

impl Fold for DailySales {
    type Aggregate = Order;
    type Doc = DaySales;
    const NAME: &'static str = "daily_sales";
    const COLLECTION: &'static str = "days";

    fn key(&self, event: &EventOf<Order>) -> Option<String> {
        matches!(event.event, OrderEvent::OrderConfirmed { .. })
            .then(|| event.recorded_at.format("%Y-%m-%d").to_string())
    }

    fn evolve(
        &self,
        day: Option<DaySales>,
        event: &EventOf<Order>,
    ) -> Result<Option<DaySales>, ApplyError> {
        let OrderEvent::OrderConfirmed { total, .. } = event.event else {
            return Ok(day);
        };
        let mut day = day.unwrap_or_else(|| DaySales {
            date: event.recorded_at.format("%Y-%m-%d").to_string(),
            ..DaySales::default()
        });
        day.orders += 1;
        day.revenue += u128::from(total.0);
        Ok(Some(day))
    }
}

/// Sales per day, oldest first.
pub async fn days(host: &ProjectionHost) -> projections::Result<Vec<DaySales>> {
    host.documents::<DailySales>().await
}
