//! The checkout process manager: drives each order from placed to confirmed across the
//! inventory, the order and its payment, or cancels it and gives everything back.
//!
//! ```text
//! OrderPlaced       → reserve each line ─ all reserved → mark stock reserved → request payment
//!                                       │    → authorise at the gateway (key: the step's id)
//!                                       │    → record approval → capture  (or record decline)
//!                                       └ any line short → release what was reserved → cancel
//! PaymentCaptured   → mark paid → confirm          (order cancelled meanwhile → refund)
//! PaymentDeclined   → release the stock → cancel
//! OrderCancelled    → release the stock; refund a captured payment, void any other
//! OrderShipped      → commit the reservations
//! deadline payment  → an order still unpaid after `payment_timeout` is cancelled
//! ```
//!
//! It runs as a [`ProcessManager`]: one instance per order, so that an order whose gateway
//! call keeps failing retries on its own (with backoff) and one whose reaction fails for
//! good is parked (`demo-shop checkout`) while every other order goes on. Every command it
//! sends has an id derived from the input it reacts to and the step
//! ([`Step::command_id`]), and the gateway is called with one key per order: a reaction that
//! runs again (after a crash, a timeout, a takeover) repeats nothing, and a cancelled order's
//! authorisation is voided by that key, even one whose answer never arrived.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{Aggregate, CommandError, EventFilter, Metadata, RecordedEvent, Repository};
use projections::process::{Input, ProcessManager, Step};
use projections::ApplyError;
use serde::{Deserialize, Serialize};

use crate::domain::inventory::{Inventory, InventoryCommand, InventoryError};
use crate::domain::money::{Money, OrderId, Sku};
use crate::domain::order::{Order, OrderCommand, OrderError, OrderEvent, OrderLine, OrderStatus};
use crate::domain::payment::{Payment, PaymentCommand, PaymentError, PaymentEvent, PaymentStatus};
use crate::gateway::{Authorization, AuthorizationRequest, GatewayError, PaymentGateway};

/// The process manager's name.
pub const NAME: &str = "checkout";

/// The deadline by which an order's payment must have settled.
pub const PAYMENT_DEADLINE: &str = "payment";

/// The checkout process manager.
pub struct Checkout {
    /// Stock per SKU.
    pub inventory: Repository<Inventory>,
    /// Orders.
    pub orders: Repository<Order>,
    /// Payments, one per order.
    pub payments: Repository<Payment>,
    /// The payment provider.
    pub gateway: Arc<dyn PaymentGateway>,
    /// How long an order may wait for its payment to settle before it is cancelled.
    pub payment_timeout: std::time::Duration,
}

/// What the checkout keeps per order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutState {
    /// The order was cancelled: nothing more is started for it.
    pub closed: bool,
    /// The payment deadline fired for it.
    pub timed_out: bool,
}

/// A command's failure, as the runner should see it: lost races and unreachable stores are
/// retried; anything else parks the order.
fn failed<E: std::error::Error + Send + Sync + 'static>(error: CommandError<E>) -> ApplyError {
    match error {
        CommandError::Store(e) if e.is_retryable() || e.is_conflict() => ApplyError::transient(e),
        other => ApplyError::poison_from(other),
    }
}

/// What an `OrderPlaced` says.
struct Placed<'a> {
    order_id: OrderId,
    lines: &'a [OrderLine],
    total: Money,
    card: &'a str,
}

/// One reaction: the step (ids, deadlines) and the metadata of what caused it.
struct Reaction<'a> {
    step: &'a mut Step,
    caused: Metadata,
}

impl Reaction<'_> {
    /// The metadata of the command sent as `name`.
    fn meta(&self, name: &str) -> Metadata {
        self.step.metadata(self.caused.clone(), name)
    }
}

impl Checkout {
    async fn on_placed(
        &self,
        state: &mut CheckoutState,
        r: &mut Reaction<'_>,
        placed: Placed<'_>,
    ) -> Result<(), ApplyError> {
        let Placed {
            order_id,
            lines,
            total,
            card,
        } = placed;
        // Cancelled by the checkout itself (a customer's cancellation shows in the commands
        // below, and its own input releases what they reserved).
        if state.closed {
            return Ok(());
        }
        // A timeout too long to add to now is "never" (the end of time), not a panic.
        let due = chrono::Duration::from_std(self.payment_timeout)
            .ok()
            .and_then(|timeout| Utc::now().checked_add_signed(timeout))
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC);
        r.step.schedule(PAYMENT_DEADLINE, due);
        for line in lines {
            let reserve = InventoryCommand::Reserve {
                order_id,
                quantity: line.quantity,
            };
            let meta = r.meta(&format!("reserve:{}", line.sku));
            match self.inventory.execute(&line.sku, reserve, &meta).await {
                Ok(_) => {}
                Err(CommandError::Rejected(
                    short @ (InventoryError::InsufficientStock { .. }
                    | InventoryError::NotRegistered(_)),
                )) => {
                    return self
                        .give_up(state, r, order_id, &format!("out of stock: {short}"))
                        .await;
                }
                Err(other) => return Err(failed(other)),
            }
        }
        match self
            .orders
            .execute(
                &order_id,
                OrderCommand::MarkStockReserved,
                &r.meta("stock-reserved"),
            )
            .await
        {
            Ok(_) => {}
            // Cancelled meanwhile: its OrderCancelled releases the stock.
            Err(CommandError::Rejected(OrderError::InvalidTransition {
                status: OrderStatus::Cancelled,
                ..
            })) => return Ok(()),
            Err(other) => return Err(failed(other)),
        }
        let payment = order_id;
        let request = PaymentCommand::Request {
            amount: total,
            card: card.to_owned(),
        };
        match self
            .payments
            .execute(&payment, request, &r.meta("request-payment"))
            .await
        {
            Ok(_) => {}
            // An order that cannot be paid (from before prices were bounded) is cancelled,
            // not left to block anything.
            Err(CommandError::Rejected(PaymentError::ZeroAmount)) => {
                return self
                    .give_up(state, r, order_id, "the order has nothing to pay")
                    .await;
            }
            Err(other) => return Err(failed(other)),
        }
        self.authorize_and_capture(r, order_id).await
    }

    /// Asks the gateway (once per order: the key is the step's id), records its answer on
    /// the payment, and captures an approval.
    async fn authorize_and_capture(
        &self,
        r: &mut Reaction<'_>,
        order_id: OrderId,
    ) -> Result<(), ApplyError> {
        let id = order_id;
        let payment = self.payments.load(&id).await?.state;
        if payment.status == PaymentStatus::Requested {
            r.step.ensure_claimed()?;
            let request = AuthorizationRequest {
                reference: id.to_string(),
                card: payment.card.clone(),
                amount_cents: payment.amount.0,
            };
            let key = authorization_key(order_id);
            let record = match self.gateway.authorize(&key, &request).await {
                Ok(Authorization::Approved { authorization }) => {
                    PaymentCommand::RecordApproval { authorization }
                }
                Ok(Authorization::Declined { reason }) => PaymentCommand::RecordDecline { reason },
                Err(e @ GatewayError::Unavailable(_)) => return Err(ApplyError::transient(e)),
                Err(e @ GatewayError::Refused(_)) => return Err(ApplyError::poison_from(e)),
            };
            self.payments
                .execute(&id, record, &r.meta("record-authorization"))
                .await
                .map_err(failed)?;
        }
        if self.payments.load(&id).await?.state.status == PaymentStatus::Authorized {
            self.payments
                .execute(&id, PaymentCommand::Capture, &r.meta("capture"))
                .await
                .map_err(failed)?;
        }
        Ok(())
    }

    /// Cancels the order. Its `OrderCancelled` then releases whatever was reserved: the
    /// decision is one effect, so a retry of a reaction that failed after it cannot decide
    /// otherwise (say, reserve a line that was short the first time) with half of the first
    /// decision carried out.
    async fn give_up(
        &self,
        state: &mut CheckoutState,
        r: &mut Reaction<'_>,
        order_id: OrderId,
        reason: &str,
    ) -> Result<(), ApplyError> {
        self.cancel(r, order_id, reason).await?;
        state.closed = true;
        r.step.cancel(PAYMENT_DEADLINE);
        Ok(())
    }

    async fn release(
        &self,
        r: &Reaction<'_>,
        order_id: OrderId,
        lines: &[OrderLine],
    ) -> Result<(), ApplyError> {
        for sku in lines.iter().map(|l| &l.sku) {
            let meta = r.meta(&format!("release:{sku}"));
            self.inventory_command(sku, InventoryCommand::Release { order_id }, &meta)
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
        match self.inventory.execute(sku, command, meta).await {
            Ok(_) | Err(CommandError::Rejected(InventoryError::NotRegistered(_))) => Ok(()),
            Err(other) => Err(failed(other)),
        }
    }

    async fn cancel(
        &self,
        r: &Reaction<'_>,
        order_id: OrderId,
        reason: &str,
    ) -> Result<(), ApplyError> {
        // The reason may quote another service (a gateway's decline): made to fit the
        // rule for reasons, so that a long or multi-line one cannot park the order.
        let cancel = OrderCommand::Cancel {
            reason: crate::domain::text::fitted(reason, crate::domain::text::MAX_REASON),
        };
        match self
            .orders
            .execute(&order_id, cancel, &r.meta("cancel"))
            .await
        {
            Ok(_) | Err(CommandError::Rejected(OrderError::InvalidTransition { .. })) => Ok(()),
            Err(other) => Err(failed(other)),
        }
    }

    /// Gives a captured payment back (every caller knows it was captured; a payment
    /// refunded already stays as it is).
    async fn refund(&self, r: &Reaction<'_>, order_id: OrderId) -> Result<(), ApplyError> {
        let refund = PaymentCommand::Refund {
            reason: "order cancelled".into(),
        };
        self.payments
            .execute(&order_id, refund, &r.meta("refund"))
            .await
            .map_err(failed)?;
        Ok(())
    }

    /// The order was cancelled: a captured payment is refunded; anything short of that is
    /// voided at the gateway, so that an approval (even one whose answer was lost, or one a
    /// deposed worker is still asking for) holds no money, and recorded on the payment.
    async fn release_payment(
        &self,
        r: &mut Reaction<'_>,
        order_id: OrderId,
    ) -> Result<(), ApplyError> {
        let payment = order_id;
        match self.payments.load(&payment).await?.state.status {
            PaymentStatus::Captured => self.refund(r, order_id).await,
            PaymentStatus::Declined | PaymentStatus::Refunded | PaymentStatus::Voided => Ok(()),
            status
            @ (PaymentStatus::New | PaymentStatus::Requested | PaymentStatus::Authorized) => {
                r.step.ensure_claimed()?;
                match self.gateway.void(&authorization_key(order_id)).await {
                    Ok(_) => {}
                    Err(e @ GatewayError::Unavailable(_)) => return Err(ApplyError::transient(e)),
                    Err(e @ GatewayError::Refused(_)) => return Err(ApplyError::poison_from(e)),
                }
                if status == PaymentStatus::New {
                    return Ok(());
                }
                match self
                    .payments
                    .execute(&payment, PaymentCommand::Void, &r.meta("void"))
                    .await
                {
                    Ok(_) => Ok(()),
                    // Captured meanwhile (a deposed worker finished its reaction): give it back.
                    Err(CommandError::Rejected(PaymentError::InvalidTransition {
                        status: PaymentStatus::Captured,
                        ..
                    })) => self.refund(r, order_id).await,
                    Err(other) => Err(failed(other)),
                }
            }
        }
    }

    async fn lines_of(&self, order_id: OrderId) -> Result<Vec<OrderLine>, ApplyError> {
        Ok(self.orders.load(&order_id).await?.state.lines)
    }

    async fn on_order_event(
        &self,
        state: &mut CheckoutState,
        r: &mut Reaction<'_>,
        event: OrderEvent,
    ) -> Result<(), ApplyError> {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                lines,
                total,
                card,
                ..
            } => {
                let placed = Placed {
                    order_id,
                    lines: &lines,
                    total,
                    card: &card,
                };
                self.on_placed(state, r, placed).await
            }
            OrderEvent::OrderCancelled { order_id, .. } => {
                state.closed = true;
                r.step.cancel(PAYMENT_DEADLINE);
                self.release(r, order_id, &self.lines_of(order_id).await?)
                    .await?;
                self.release_payment(r, order_id).await
            }
            OrderEvent::OrderShipped { order_id } => {
                for line in self.lines_of(order_id).await? {
                    let meta = r.meta(&format!("commit:{}", line.sku));
                    self.inventory_command(&line.sku, InventoryCommand::Commit { order_id }, &meta)
                        .await?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn on_payment_event(
        &self,
        state: &mut CheckoutState,
        r: &mut Reaction<'_>,
        event: PaymentEvent,
    ) -> Result<(), ApplyError> {
        match event {
            PaymentEvent::PaymentCaptured { order_id, .. } => {
                r.step.cancel(PAYMENT_DEADLINE);
                let id = order_id;
                for (name, command) in [
                    ("paid", OrderCommand::MarkPaid),
                    ("confirm", OrderCommand::Confirm),
                ] {
                    match self.orders.execute(&id, command, &r.meta(name)).await {
                        Ok(_) => {}
                        Err(CommandError::Rejected(OrderError::InvalidTransition {
                            status: OrderStatus::Cancelled,
                            ..
                        })) => return self.refund(r, order_id).await,
                        Err(other) => return Err(failed(other)),
                    }
                }
                Ok(())
            }
            PaymentEvent::PaymentDeclined { order_id, reason } => {
                self.give_up(state, r, order_id, &format!("payment declined: {reason}"))
                    .await
            }
            _ => Ok(()),
        }
    }

    /// The payment did not settle in time: an order whose payment the gateway never
    /// answered is cancelled (its OrderCancelled releases the stock). One whose payment was
    /// approved or taken is left to finish: its capture or confirmation is on its way.
    async fn on_payment_deadline(
        &self,
        state: &mut CheckoutState,
        r: &mut Reaction<'_>,
        order_id: OrderId,
    ) -> Result<(), ApplyError> {
        let id = order_id;
        let status = self.orders.load(&id).await?.state.status;
        let payment = self.payments.load(&id).await?.state.status;
        let unanswered = matches!(payment, PaymentStatus::New | PaymentStatus::Requested);
        if unanswered && matches!(status, OrderStatus::Placed | OrderStatus::StockReserved) {
            let reason = format!(
                "payment not settled within {} s",
                self.payment_timeout.as_secs_f64()
            );
            self.cancel(r, order_id, &reason).await?;
            state.closed = true;
            state.timed_out = true;
        }
        Ok(())
    }
}

/// The idempotency key of the one authorisation an order's payment asks for: every reaction
/// to the order (a retry, a deposed worker's, the cancellation's void) computes the same.
fn authorization_key(order_id: OrderId) -> String {
    cqrs_core::CommandId::caused_by(order_id.0, "authorize").to_string()
}

/// The order an event of an order or a payment stream belongs to.
fn order_of(event: &RecordedEvent) -> Option<OrderId> {
    let (_, id) = event.stream_id.as_str().split_once('-')?;
    id.parse().ok()
}

#[async_trait]
impl ProcessManager for Checkout {
    type State = CheckoutState;

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

    fn instance_of(&self, event: &RecordedEvent) -> Option<String> {
        order_of(event).map(|order| order.to_string())
    }

    async fn react(
        &self,
        state: &mut CheckoutState,
        input: &Input,
        step: &mut Step,
    ) -> Result<(), ApplyError> {
        let order_id: OrderId = step.instance().parse().map_err(|e| {
            ApplyError::poison(format!(
                "instance {} is not an order id: {e}",
                step.instance()
            ))
        })?;
        match input {
            Input::Deadline(deadline) if deadline.name == PAYMENT_DEADLINE => {
                // A deadline carries no metadata: its steps belong to the request that
                // placed the order, whose correlation and trace the order's first event has.
                let placed = self.placed_metadata(order_id).await?;
                let caused = Metadata {
                    correlation_id: placed.correlation_id.or(Some(order_id.0)),
                    causation_id: Some(deadline.id),
                    actor: Some(NAME.into()),
                    traceparent: placed.traceparent,
                    ..Metadata::default()
                };
                let mut r = Reaction { step, caused };
                self.on_payment_deadline(state, &mut r, order_id).await
            }
            Input::Deadline(_) => Ok(()),
            Input::Event(event) => self.on_event(state, step, event).await,
        }
    }
}

impl Checkout {
    /// The metadata of the order's first event (empty if it has none yet).
    async fn placed_metadata(&self, order_id: OrderId) -> Result<Metadata, ApplyError> {
        let stream = cqrs_core::StreamId::for_aggregate(Order::TYPE, &order_id.to_string())
            .map_err(ApplyError::poison_from)?;
        let first = self.orders.store().read_stream(&stream, 1, 1).await;
        let first = first.map_err(|e| match e.is_retryable() {
            true => ApplyError::transient(e),
            false => ApplyError::poison_from(e),
        })?;
        Ok(first
            .into_iter()
            .next()
            .map(|e| e.metadata)
            .unwrap_or_default())
    }

    /// Reacts to an event of the order's, its payment's or its products' streams.
    async fn on_event(
        &self,
        state: &mut CheckoutState,
        step: &mut Step,
        event: &cqrs_core::RecordedEvent,
    ) -> Result<(), ApplyError> {
        match event.stream_id.category() {
            c if c == Order::TYPE => {
                let envelope = event.decode::<OrderEvent>(&Order::upcasters())?;
                let mut r = Reaction {
                    step,
                    caused: Metadata::caused_by(&envelope),
                };
                self.on_order_event(state, &mut r, envelope.event).await
            }
            c if c == Payment::TYPE => {
                let envelope = event.decode::<PaymentEvent>(&Payment::upcasters())?;
                let mut r = Reaction {
                    step,
                    caused: Metadata::caused_by(&envelope),
                };
                self.on_payment_event(state, &mut r, envelope.event).await
            }
            _ => Ok(()),
        }
    }
}
