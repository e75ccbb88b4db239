//! Daily sales totals: confirmed orders and revenue per day (UTC).

use async_trait::async_trait;
use cqrs_core::{EventFilter, RecordedEvent};
use projections::{ApplyError, Documents, DocumentsExt, Projection};
use serde::{Deserialize, Serialize};

use crate::domain::order::OrderEvent;
use crate::read_models::decode;
use crate::storage::ReadModels;

/// The projection's name.
pub const NAME: &str = "daily_sales";
const DAYS: &str = "days";

/// One day's sales.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaySales {
    /// The day, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Orders confirmed that day.
    pub orders: u64,
    /// Their total, in cents. Wider than [`Money`](crate::domain::money::Money): no number of orders in a day can
    /// overflow it, so no order the write side accepted can stop this read model.
    pub revenue: u128,
}

/// Builds [`DaySales`] from confirmed orders.
pub struct DailySales;

#[async_trait]
impl Projection for DailySales {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types(["OrderConfirmed"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let envelope = decode::<OrderEvent>(event)?;
        let OrderEvent::OrderConfirmed { total, .. } = envelope.event else {
            return Ok(());
        };
        let date = envelope.recorded_at.format("%Y-%m-%d").to_string();
        let mut day: DaySales = docs.load(DAYS, &date).await?.unwrap_or_else(|| DaySales {
            date: date.clone(),
            ..DaySales::default()
        });
        day.orders += 1;
        day.revenue += u128::from(total.0);
        docs.save(DAYS, &date, &day).await?;
        Ok(())
    }
}

/// Sales per day, oldest first.
pub async fn days(read_models: &ReadModels) -> projections::Result<Vec<DaySales>> {
    read_models.list(NAME, DAYS).await
}
