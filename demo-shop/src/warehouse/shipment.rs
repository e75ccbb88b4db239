//! The [`Shipment`] of one order, in the warehouse: expected (the order was placed) → picked
//! and dispatched (it was confirmed), or cancelled.

use cqrs_core::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

use crate::domain::money::OrderId;

/// One line to pick: a product and how many.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PickLine {
    /// The product's code.
    pub sku: String,
    /// Units.
    pub quantity: u32,
}

/// Where a shipment is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShipmentStatus {
    /// Nothing known yet.
    #[default]
    Unknown,
    /// The order was placed: its goods may be asked for.
    Expected,
    /// Its goods were picked from the shelves.
    Picked,
    /// It left the warehouse.
    Dispatched,
    /// The order was cancelled before it was picked.
    Cancelled,
}

/// What the warehouse is asked to do with a shipment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShipmentCommand {
    /// Expect an order's goods.
    Expect {
        /// Its lines.
        lines: Vec<PickLine>,
    },
    /// Pick its goods.
    Pick,
    /// Send it off.
    Dispatch,
    /// Drop it: the order was cancelled. Cancelled before anything is known of it, it stays
    /// cancelled: a late "expect" is ignored and a "pick" refused.
    Cancel,
}

/// What happened to a shipment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ShipmentEvent {
    /// An order's goods are expected.
    ShipmentExpected {
        /// The order.
        order_id: OrderId,
        /// Its lines.
        lines: Vec<PickLine>,
    },
    /// They were picked.
    ShipmentPicked {
        /// The order.
        order_id: OrderId,
    },
    /// The parcel left, with a tracking number.
    ShipmentDispatched {
        /// The order.
        order_id: OrderId,
        /// The carrier's tracking number.
        tracking: String,
    },
    /// The order was cancelled before picking.
    ShipmentCancelled {
        /// The order.
        order_id: OrderId,
    },
}

impl DomainEvent for ShipmentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::ShipmentExpected { .. } => "ShipmentExpected",
            Self::ShipmentPicked { .. } => "ShipmentPicked",
            Self::ShipmentDispatched { .. } => "ShipmentDispatched",
            Self::ShipmentCancelled { .. } => "ShipmentCancelled",
        }
    }
}

/// Why a shipment refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a shipment that is {status:?}")]
pub struct ShipmentError {
    /// What was asked.
    pub action: &'static str,
    /// Where the shipment is.
    pub status: ShipmentStatus,
}

/// The shipment of one order (stream `shipment-<order id>`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shipment {
    /// The order.
    pub order_id: Option<OrderId>,
    /// Where it is.
    pub status: ShipmentStatus,
    /// What to pick.
    pub lines: Vec<PickLine>,
}

impl Aggregate for Shipment {
    const TYPE: &'static str = "shipment";
    type Id = OrderId;
    type Command = ShipmentCommand;
    type Event = ShipmentEvent;
    type Error = ShipmentError;
    type Services = ();

    fn handle(
        &self,
        order: &OrderId,
        command: ShipmentCommand,
        _: &(),
    ) -> Result<Vec<ShipmentEvent>, ShipmentError> {
        use ShipmentStatus as S;
        let refuse = |action| ShipmentError {
            action,
            status: self.status,
        };
        let order_id = *order;
        match command {
            ShipmentCommand::Expect { lines } => Ok(match self.status {
                S::Unknown => vec![ShipmentEvent::ShipmentExpected { order_id, lines }],
                _ => vec![],
            }),
            ShipmentCommand::Pick => match self.status {
                S::Expected => Ok(vec![ShipmentEvent::ShipmentPicked { order_id }]),
                S::Picked | S::Dispatched => Ok(vec![]),
                S::Unknown | S::Cancelled => Err(refuse("pick")),
            },
            ShipmentCommand::Dispatch => match self.status {
                S::Picked => Ok(vec![ShipmentEvent::ShipmentDispatched {
                    order_id,
                    tracking: format!("TRK-{}", &order_id.0.simple().to_string()[..10]),
                }]),
                S::Dispatched => Ok(vec![]),
                S::Unknown | S::Expected | S::Cancelled => Err(refuse("dispatch")),
            },
            ShipmentCommand::Cancel => Ok(match self.status {
                S::Unknown | S::Expected => vec![ShipmentEvent::ShipmentCancelled { order_id }],
                S::Picked | S::Dispatched | S::Cancelled => vec![],
            }),
        }
    }

    fn apply(&mut self, event: &ShipmentEvent) {
        match event {
            ShipmentEvent::ShipmentExpected { order_id, lines } => {
                self.order_id = Some(*order_id);
                self.lines = lines.clone();
                self.status = ShipmentStatus::Expected;
            }
            ShipmentEvent::ShipmentPicked { .. } => self.status = ShipmentStatus::Picked,
            ShipmentEvent::ShipmentDispatched { .. } => self.status = ShipmentStatus::Dispatched,
            ShipmentEvent::ShipmentCancelled { order_id } => {
                self.order_id = Some(*order_id);
                self.status = ShipmentStatus::Cancelled;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_core::testing::AggregateTest;

    fn expected(order_id: OrderId) -> ShipmentEvent {
        ShipmentEvent::ShipmentExpected {
            order_id,
            lines: vec![PickLine {
                sku: "MUG".into(),
                quantity: 2,
            }],
        }
    }

    #[test]
    fn an_expected_shipment_is_picked_then_dispatched_once() {
        let order_id = OrderId::new();
        AggregateTest::<Shipment>::default()
            .given(vec![expected(order_id)])
            .when_on(&order_id, ShipmentCommand::Pick)
            .then_expect(vec![ShipmentEvent::ShipmentPicked { order_id }]);
        AggregateTest::<Shipment>::default()
            .given(vec![
                expected(order_id),
                ShipmentEvent::ShipmentPicked { order_id },
            ])
            .when_on(&order_id, ShipmentCommand::Pick)
            .then_expect(vec![]);
    }

    #[test]
    fn a_shipment_cancelled_before_it_was_expected_stays_cancelled() {
        let order_id = OrderId::new();
        AggregateTest::<Shipment>::default()
            .when_on(&order_id, ShipmentCommand::Cancel)
            .then_expect(vec![ShipmentEvent::ShipmentCancelled { order_id }]);
        let cancelled = vec![ShipmentEvent::ShipmentCancelled { order_id }];
        AggregateTest::<Shipment>::default()
            .given(cancelled.clone())
            .when_on(&order_id, ShipmentCommand::Expect { lines: vec![] })
            .then_expect(vec![]);
        AggregateTest::<Shipment>::default()
            .given(cancelled)
            .when_on(&order_id, ShipmentCommand::Pick)
            .then_expect_error(ShipmentError {
                action: "pick",
                status: ShipmentStatus::Cancelled,
            });
    }

    #[test]
    fn nothing_is_dispatched_before_picking_or_after_a_cancel() {
        let order_id = OrderId::new();
        AggregateTest::<Shipment>::default()
            .given(vec![expected(order_id)])
            .when_on(&order_id, ShipmentCommand::Dispatch)
            .then_expect_error(ShipmentError {
                action: "dispatch",
                status: ShipmentStatus::Expected,
            });
        AggregateTest::<Shipment>::default()
            .given(vec![
                expected(order_id),
                ShipmentEvent::ShipmentCancelled { order_id },
            ])
            .when_on(&order_id, ShipmentCommand::Pick)
            .then_expect_error(ShipmentError {
                action: "pick",
                status: ShipmentStatus::Cancelled,
            });
    }
}
