//! [`OrderIntake`]: the warehouse's consumer of the shop's order messages.
//!
//! The warehouse reads the shop's events in its own terms ([`ShopOrder`]: the fields it
//! needs, nothing else), so the shop can add to its events without breaking it.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_core::{CommandError, CommandId, Repository};
use messaging::{CloudEvent, InboxTx, MessageHandler};
use projections::ApplyError;
use serde::Deserialize;

use super::shipment::{PickLine, Shipment, ShipmentCommand};
use crate::domain::money::OrderId;

/// The consumer's name: its queue or durable consumer, and its inbox.
pub const CONSUMER: &str = "warehouse";

/// The shop's order events, as the warehouse reads them.
#[derive(Debug, Deserialize)]
pub enum ShopOrder {
    /// An order was placed: its lines are to be expected.
    OrderPlaced {
        /// The order.
        order_id: OrderId,
        /// What it holds.
        lines: Vec<PickLine>,
    },
    /// It was confirmed (paid, stock reserved): pick and dispatch it.
    OrderConfirmed {
        /// The order.
        order_id: OrderId,
    },
    /// It was cancelled.
    OrderCancelled {
        /// The order.
        order_id: OrderId,
    },
}

/// Turns the shop's orders into shipments: expected when placed, picked and dispatched when
/// confirmed, dropped when cancelled. Each command's id is derived from the message and the
/// step, so a message handled again changes nothing.
pub struct OrderIntake {
    shipments: Repository<Shipment>,
}

impl OrderIntake {
    /// An intake writing to `shipments`.
    pub fn new(shipments: Repository<Shipment>) -> Arc<Self> {
        Arc::new(Self { shipments })
    }

    async fn carry_out(
        &self,
        message: &CloudEvent,
        order_id: OrderId,
        step: &str,
        command: ShipmentCommand,
    ) -> Result<(), ApplyError> {
        let meta = message
            .metadata()
            .with_command_id(CommandId::caused_by(message.id, step));
        match self.shipments.execute(&order_id, command, &meta).await {
            Ok(_) => Ok(()),
            Err(CommandError::Rejected(e)) => Err(ApplyError::poison_from(e)),
            Err(CommandError::Store(e)) if e.is_retryable() || e.is_conflict() => {
                Err(ApplyError::transient(e))
            }
            Err(e) => Err(ApplyError::poison_from(e)),
        }
    }
}

#[async_trait]
impl MessageHandler for OrderIntake {
    fn name(&self) -> &str {
        CONSUMER
    }

    fn categories(&self) -> Vec<String> {
        vec!["order".to_owned()]
    }

    async fn handle(&self, _tx: &mut dyn InboxTx, message: &CloudEvent) -> Result<(), ApplyError> {
        if !matches!(
            message.event_type.as_str(),
            "OrderPlaced" | "OrderConfirmed" | "OrderCancelled"
        ) {
            return Ok(());
        }
        match message.decode::<ShopOrder>().map_err(ApplyError::poison)? {
            ShopOrder::OrderPlaced { order_id, lines } => {
                let expect = ShipmentCommand::Expect { lines };
                self.carry_out(message, order_id, "expect", expect).await
            }
            ShopOrder::OrderConfirmed { order_id } => {
                self.carry_out(message, order_id, "pick", ShipmentCommand::Pick)
                    .await?;
                self.carry_out(message, order_id, "dispatch", ShipmentCommand::Dispatch)
                    .await
            }
            ShopOrder::OrderCancelled { order_id } => {
                self.carry_out(message, order_id, "cancel", ShipmentCommand::Cancel)
                    .await
            }
        }
    }
}
