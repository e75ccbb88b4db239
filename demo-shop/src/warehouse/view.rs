//! The warehouse's read model `shipments`: each order's shipment, for queries.

use async_trait::async_trait;
use cqrs_core::{EventFilter, RecordedEvent};
use projections::{ApplyError, Documents, DocumentsExt, Projection};
use serde::{Deserialize, Serialize};

use super::shipment::{PickLine, ShipmentEvent, ShipmentStatus};
use crate::domain::money::OrderId;
use crate::read_models::decode;
use crate::storage::ReadModels;

/// The projection's name.
pub const NAME: &str = "shipments";
const COLLECTION: &str = "shipments";

/// One order's shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShipmentView {
    /// The order.
    pub order_id: OrderId,
    /// Where it is.
    pub status: ShipmentStatus,
    /// What it holds.
    pub lines: Vec<PickLine>,
    /// The tracking number, once dispatched.
    pub tracking: Option<String>,
}

/// Builds [`ShipmentView`]s from the shipment events.
pub struct Shipments;

#[async_trait]
impl Projection for Shipments {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().categories(["shipment"])
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let event = decode::<ShipmentEvent>(event)?.event;
        let (order_id, change): (OrderId, Box<dyn FnOnce(&mut ShipmentView) + Send>) = match event {
            ShipmentEvent::ShipmentExpected { order_id, lines } => {
                (order_id, Box::new(move |v| v.lines = lines))
            }
            ShipmentEvent::ShipmentPicked { order_id } => {
                (order_id, Box::new(|v| v.status = ShipmentStatus::Picked))
            }
            ShipmentEvent::ShipmentDispatched { order_id, tracking } => (
                order_id,
                Box::new(move |v| {
                    v.status = ShipmentStatus::Dispatched;
                    v.tracking = Some(tracking);
                }),
            ),
            ShipmentEvent::ShipmentCancelled { order_id } => {
                (order_id, Box::new(|v| v.status = ShipmentStatus::Cancelled))
            }
        };
        let key = order_id.to_string();
        let mut view = docs
            .load::<ShipmentView>(COLLECTION, &key)
            .await?
            .unwrap_or(ShipmentView {
                order_id,
                status: ShipmentStatus::Expected,
                lines: Vec::new(),
                tracking: None,
            });
        change(&mut view);
        docs.save(COLLECTION, &key, &view).await?;
        Ok(())
    }
}

/// The shipment of `order_id`, if the warehouse knows it.
pub async fn shipment(
    read_models: &ReadModels,
    order_id: OrderId,
) -> projections::Result<Option<ShipmentView>> {
    read_models
        .get(NAME, COLLECTION, &order_id.to_string())
        .await
}

/// Every shipment.
pub async fn all(read_models: &ReadModels) -> projections::Result<Vec<ShipmentView>> {
    read_models.list(NAME, COLLECTION).await
}
