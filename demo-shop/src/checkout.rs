//! The checkout process manager: drives an order from placed to confirmed across the
//! inventory, the order and its payment, or cancels it and gives everything back.
//!
//! ```text
//! OrderPlaced       → reserve each line ─ all reserved → mark stock reserved → request payment
//!                                       │                → authorise → (approved) capture
//!                                       └ any line short → release what was reserved → cancel
//! PaymentCaptured   → mark paid → confirm          (order cancelled meanwhile → refund)
//! PaymentDeclined   → release the stock → cancel
//! OrderCancelled    → release the stock; refund a captured payment
//! OrderShipped      → commit the reservations
//! ```
//!
//! It runs as a projection with side effects (a durable checkpoint of its own, never
//! replayed by a rebuild). Every command it sends carries the causing event as causation and
//! the order's correlation id, and is idempotent on the aggregate's side, so an event
//! delivered again (after a crash before the checkpoint moved) changes nothing twice.

use async_trait::async_trait;
use cqrs_core::{Aggregate, CommandError, EventFilter, Metadata, RecordedEvent, Repository};
use projections::{ApplyError, Documents, LeaseToken, Projection};

use crate::domain::inventory::{Inventory, InventoryCommand, InventoryError};
use crate::domain::money::{Money, OrderId, Sku};
use crate::domain::order::{Order, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus};
use crate::domain::payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
use crate::read_models::decode;

/// The process manager's name (its checkpoint's key).
pub const NAME: &str = "checkout";

/// The metadata key of the lease epoch a command of the checkout was sent under.
pub const LEASE_EPOCH: &str = "lease_epoch";

/// The checkout process manager.
pub struct Checkout {
    /// Stock per SKU.
    pub inventory: Repository<Inventory>,
    /// Orders.
    pub orders: Repository<Order>,
    /// Payments, one per order.
    pub payments: Repository<Payment>,
}

/// A command's failure, as the runner should see it: lost races and unreachable stores are
/// retried; anything else is a poison event.
fn failed<E: std::fmt::Display>(error: CommandError<E>) -> ApplyError {
    match error {
        CommandError::Store(e) if e.is_retryable() || e.is_conflict() => {
            ApplyError::Transient(e.to_string())
        }
        other => ApplyError::poison(other),
    }
}

impl Checkout {
    async fn reserve_or_cancel(
        &self,
        order_id: OrderId,
        lines: &[OrderLine],
        total: Money,
        card: &str,
        meta: &Metadata,
    ) -> Result<(), ApplyError> {
        for line in lines {
            let reserve = InventoryCommand::Reserve {
                order_id,
                quantity: line.quantity,
            };
            match self
                .inventory
                .execute(line.sku.as_str(), (line.sku.clone(), reserve), meta)
                .await
            {
                Ok(_) => {}
                Err(CommandError::Rejected(
                    short @ (InventoryError::InsufficientStock { .. }
                    | InventoryError::NotRegistered(_)),
                )) => {
                    self.release(order_id, lines, meta).await?;
                    return self
                        .cancel(order_id, &format!("out of stock: {short}"), meta)
                        .await;
                }
                Err(other) => return Err(failed(other)),
            }
        }
        match self
            .orders
            .execute(
                &order_id.to_string(),
                (order_id, OrderCommand::MarkStockReserved),
                meta,
            )
            .await
        {
            Ok(_) => {}
            // Cancelled by the customer meanwhile: its OrderCancelled releases the stock.
            Err(CommandError::Rejected(OrderError::InvalidTransition {
                status: OrderStatus::Cancelled,
                ..
            })) => return Ok(()),
            Err(other) => return Err(failed(other)),
        }
        let payment = order_id.to_string();
        let request = PaymentCommand::Request {
            order_id,
            amount: total,
            card: card.to_owned(),
        };
        self.payments
            .execute(&payment, request, meta)
            .await
            .map_err(failed)?;
        match self
            .payments
            .execute(&payment, PaymentCommand::Authorize, meta)
            .await
        {
            Ok(_) => {}
            Err(CommandError::Rejected(PaymentError::GatewayUnavailable(e))) => {
                return Err(ApplyError::Transient(e.to_string()))
            }
            Err(other) => return Err(failed(other)),
        }
        if self.payments.load(&payment).await?.state.status == PaymentStatus::Authorized {
            self.payments
                .execute(&payment, PaymentCommand::Capture, meta)
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    async fn release(
        &self,
        order_id: OrderId,
        lines: &[OrderLine],
        meta: &Metadata,
    ) -> Result<(), ApplyError> {
        for sku in lines.iter().map(|l| &l.sku) {
            self.inventory_command(sku, InventoryCommand::Release { order_id }, meta)
                .await?;
        }
        Ok(())
    }

    async fn inventory_command(
        &self,
        sku: &Sku,
        command: InventoryCommand,
        meta: &Metadata,
    ) -> Result<(), ApplyError> {
        match self
            .inventory
            .execute(sku.as_str(), (sku.clone(), command), meta)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(InventoryError::NotRegistered(_))) => Ok(()),
            Err(other) => Err(failed(other)),
        }
    }

    async fn cancel(
        &self,
        order_id: OrderId,
        reason: &str,
        meta: &Metadata,
    ) -> Result<(), ApplyError> {
        let cancel = OrderCommand::Cancel {
            reason: reason.to_owned(),
        };
        match self
            .orders
            .execute(&order_id.to_string(), (order_id, cancel), meta)
            .await
        {
            Ok(_) | Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => Ok(()),
            Err(other) => Err(failed(other)),
        }
    }

    async fn lines_of(&self, order_id: OrderId) -> Result<Vec<OrderLine>, ApplyError> {
        Ok(self.orders.load(&order_id.to_string()).await?.state.lines)
    }

    async fn on_order_event(&self, event: OrderEvent, meta: &Metadata) -> Result<(), ApplyError> {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                lines,
                total,
                card,
                ..
            } => {
                self.reserve_or_cancel(order_id, &lines, total, &card, meta)
                    .await
            }
            OrderEvent::OrderCancelled { order_id, .. } => {
                self.release(order_id, &self.lines_of(order_id).await?, meta)
                    .await?;
                let payment = order_id.to_string();
                if self.payments.load(&payment).await?.state.status == PaymentStatus::Captured {
                    let refund = PaymentCommand::Refund {
                        reason: "order cancelled".into(),
                    };
                    self.payments
                        .execute(&payment, refund, meta)
                        .await
                        .map_err(failed)?;
                }
                Ok(())
            }
            OrderEvent::OrderShipped { order_id } => {
                for line in self.lines_of(order_id).await? {
                    self.inventory_command(&line.sku, InventoryCommand::Commit { order_id }, meta)
                        .await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_payment_event(
        &self,
        event: PaymentEvent,
        meta: &Metadata,
    ) -> Result<(), ApplyError> {
        match event {
            PaymentEvent::PaymentCaptured { order_id, .. } => {
                let id = order_id.to_string();
                for step in [OrderCommand::MarkPaid, OrderCommand::Confirm] {
                    match self.orders.execute(&id, (order_id, step), meta).await {
                        Ok(_) => {}
                        Err(CommandError::Rejected(OrderError::InvalidTransition {
                            status: OrderStatus::Cancelled,
                            ..
                        })) => {
                            let refund = PaymentCommand::Refund {
                                reason: "order cancelled".into(),
                            };
                            self.payments
                                .execute(&id, refund, meta)
                                .await
                                .map_err(failed)?;
                            return Ok(());
                        }
                        Err(other) => return Err(failed(other)),
                    }
                }
                Ok(())
            }
            PaymentEvent::PaymentDeclined { order_id, reason } => {
                self.release(order_id, &self.lines_of(order_id).await?, meta)
                    .await?;
                self.cancel(order_id, &format!("payment declined: {reason}"), meta)
                    .await
            }
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Projection for Checkout {
    fn name(&self) -> &str {
        NAME
    }

    fn filter(&self) -> EventFilter {
        EventFilter::all().event_types([
            "OrderPlaced",
            "OrderCancelled",
            "OrderShipped",
            "PaymentCaptured",
            "PaymentDeclined",
        ])
    }

    fn has_side_effects(&self) -> bool {
        true
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        // A worker whose lease ran out (it was frozen, or cut off) starts no new event: its
        // batch would not commit (the epoch is fenced), and the next holder handles the event
        // again. One frozen in the middle of an event can still send that event's remaining
        // commands; the epoch travels with each of them, so what was sent can be traced to
        // its lease (making such commands collapse into the originals is the work of command
        // ids).
        let epoch = docs.lease().map(LeaseToken::ensure_live).transpose()?;
        let metadata = |caused: Metadata| match epoch {
            Some(epoch) => caused.with(LEASE_EPOCH, epoch.to_string()),
            None => caused,
        };
        match event.stream_id.category() {
            c if c == Order::TYPE => {
                let envelope = decode::<OrderEvent>(event)?;
                let meta = metadata(Metadata::caused_by(&envelope));
                self.on_order_event(envelope.event.clone(), &meta).await
            }
            c if c == Payment::TYPE => {
                let envelope = decode::<PaymentEvent>(event)?;
                let meta = metadata(Metadata::caused_by(&envelope));
                self.on_payment_event(envelope.event.clone(), &meta).await
            }
            _ => Ok(()),
        }
    }
}
