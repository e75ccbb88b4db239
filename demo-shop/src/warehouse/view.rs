//! The warehouse's read model `shipments`: each order's shipment, for queries.

use projections::{ApplyError, EventOf, Fold, ProjectionHost};
use serde::{Deserialize, Serialize};

use super::shipment::{PickLine, Shipment, ShipmentEvent, ShipmentStatus};
use crate::domain::money::OrderId;

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

/// Folds the shipment events into [`ShipmentView`]s, one per order.
pub struct Shipments;

impl Fold for Shipments {
    type Aggregate = Shipment;
    type Doc = ShipmentView;
    const NAME: &'static str = "shipments";
    const COLLECTION: &'static str = "shipments";

    fn evolve(
        &self,
        view: Option<ShipmentView>,
        event: &EventOf<Shipment>,
    ) -> Result<Option<ShipmentView>, ApplyError> {
        let order_id = match &event.event {
            ShipmentEvent::ShipmentExpected { order_id, .. }
            | ShipmentEvent::ShipmentPicked { order_id }
            | ShipmentEvent::ShipmentDispatched { order_id, .. }
            | ShipmentEvent::ShipmentCancelled { order_id } => *order_id,
        };
        let mut view = view.unwrap_or(ShipmentView {
            order_id,
            status: ShipmentStatus::Expected,
            lines: Vec::new(),
            tracking: None,
        });
        match &event.event {
            ShipmentEvent::ShipmentExpected { lines, .. } => view.lines = lines.clone(),
            ShipmentEvent::ShipmentPicked { .. } => view.status = ShipmentStatus::Picked,
            ShipmentEvent::ShipmentDispatched { tracking, .. } => {
                view.status = ShipmentStatus::Dispatched;
                view.tracking = Some(tracking.clone());
            }
            ShipmentEvent::ShipmentCancelled { .. } => view.status = ShipmentStatus::Cancelled,
        }
        Ok(Some(view))
    }
}

/// The shipment of `order_id`, if the warehouse knows it.
pub async fn shipment(
    host: &ProjectionHost,
    order_id: OrderId,
) -> projections::Result<Option<ShipmentView>> {
    host.document::<Shipments>(&order_id.to_string()).await
}

/// Every shipment.
pub async fn all(host: &ProjectionHost) -> projections::Result<Vec<ShipmentView>> {
    host.documents::<Shipments>().await
}
