//! An order: placed → stock reserved → paid → confirmed → shipped, or cancelled with a
//! reason from any state before shipping.

mod command;
mod event;

use std::collections::BTreeSet;
use std::fmt;

use cqrs_core::Aggregate;
use serde::{Deserialize, Serialize};

pub use command::{OrderCommand, OrderLine};
pub use event::OrderEvent;

use crate::domain::inventory::MAX_QUANTITY;
use crate::domain::money::{CustomerId, Money, OrderId};
use crate::domain::text;

/// The most lines one order may have.
pub const MAX_LINES: usize = 50;

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Not placed yet.
    #[default]
    New,
    /// Placed, waiting for stock.
    Placed,
    /// Stock reserved, waiting for payment.
    StockReserved,
    /// Paid, waiting for confirmation.
    Paid,
    /// Confirmed: will ship.
    Confirmed,
    /// Shipped.
    Shipped,
    /// Cancelled.
    Cancelled,
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Self::New => "new",
            Self::Placed => "placed",
            Self::StockReserved => "stock_reserved",
            Self::Paid => "paid",
            Self::Confirmed => "confirmed",
            Self::Shipped => "shipped",
            Self::Cancelled => "cancelled",
        };
        f.write_str(text)
    }
}

/// Why an order refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    /// An order needs at least one line.
    #[error("an order needs at least one line")]
    NoLines,
    /// Too many lines.
    #[error("an order has at most {MAX_LINES} lines")]
    TooManyLines,
    /// A line's quantity is out of range.
    #[error("the quantity of {sku} must be between 1 and {MAX_QUANTITY}, not {quantity}")]
    InvalidQuantity {
        /// The line's SKU.
        sku: String,
        /// The quantity given.
        quantity: u32,
    },
    /// A line's unit price is not a valid price (a product registered before prices were
    /// bounded).
    #[error("{sku} has no valid price ({price}); it cannot be ordered")]
    InvalidPrice {
        /// The line's SKU.
        sku: String,
        /// Its price.
        price: Money,
    },
    /// A SKU appears on two lines.
    #[error("{0} appears on more than one line")]
    DuplicateSku(String),
    /// The total does not fit.
    #[error("the order's total is too large")]
    TotalTooLarge,
    /// A card token is needed: 1 to 64 characters, no control or text-direction characters.
    #[error(
        "a payment card token of 1 to {} characters, without control or text-direction characters, is needed",
        text::MAX_CARD
    )]
    NoCard,
    /// The command does not fit the order's state.
    #[error("cannot {action} an order that is {status}")]
    InvalidTransition {
        /// What was asked.
        action: &'static str,
        /// Where the order is.
        status: OrderStatus,
    },
    /// A reason is needed to cancel: 1 to 500 characters, no control or text-direction characters.
    #[error(
        "a cancellation needs a reason of 1 to {} characters, without control or text-direction characters",
        text::MAX_REASON
    )]
    NoReason,
}

/// One order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Its id, once placed.
    pub id: Option<OrderId>,
    /// Who ordered.
    pub customer_id: Option<CustomerId>,
    /// What.
    pub lines: Vec<OrderLine>,
    /// The sum of the lines.
    pub total: Money,
    /// Where it is.
    pub status: OrderStatus,
}

impl Aggregate for Order {
    const TYPE: &'static str = "order";
    type Id = OrderId;
    type Command = OrderCommand;
    type Event = OrderEvent;
    type Error = OrderError;
    type Services = ();

    fn handle(
        &self,
        order_id: &OrderId,
        command: OrderCommand,
        _: &(),
    ) -> Result<Vec<OrderEvent>, OrderError> {
        let order_id = *order_id;
        use OrderCommand as C;
        use OrderEvent as E;
        use OrderStatus as S;
        let refuse = |action| {
            Err(OrderError::InvalidTransition {
                action,
                status: self.status,
            })
        };
        match command {
            C::Place {
                customer_id,
                lines,
                card,
            } => {
                if self.status != S::New {
                    return refuse("place");
                }
                let total = check_lines(&lines)?;
                if !text::is_valid(&card, text::MAX_CARD) {
                    return Err(OrderError::NoCard);
                }
                Ok(vec![E::OrderPlaced {
                    order_id,
                    customer_id,
                    lines,
                    total,
                    card,
                }])
            }
            // The checkout's commands: repeating one that already took effect changes nothing.
            C::MarkStockReserved => match self.status {
                S::Placed => Ok(vec![E::OrderStockReserved { order_id }]),
                S::StockReserved | S::Paid | S::Confirmed | S::Shipped => Ok(vec![]),
                _ => refuse("reserve stock for"),
            },
            C::MarkPaid => match self.status {
                S::StockReserved => Ok(vec![E::OrderPaid { order_id }]),
                S::Paid | S::Confirmed | S::Shipped => Ok(vec![]),
                _ => refuse("mark paid"),
            },
            C::Confirm => match self.status {
                S::Paid => Ok(vec![E::OrderConfirmed {
                    order_id,
                    total: self.total,
                }]),
                S::Confirmed | S::Shipped => Ok(vec![]),
                _ => refuse("confirm"),
            },
            C::Ship => match self.status {
                S::Confirmed => Ok(vec![E::OrderShipped { order_id }]),
                _ => refuse("ship"),
            },
            C::Cancel { reason } => match self.status {
                _ if !text::is_valid(&reason, text::MAX_REASON) => Err(OrderError::NoReason),
                S::Placed | S::StockReserved | S::Paid | S::Confirmed => {
                    Ok(vec![E::OrderCancelled { order_id, reason }])
                }
                S::Cancelled => Ok(vec![]),
                S::New | S::Shipped => refuse("cancel"),
            },
        }
    }

    fn apply(&mut self, event: &OrderEvent) {
        match event {
            OrderEvent::OrderPlaced {
                order_id,
                customer_id,
                lines,
                total,
                ..
            } => {
                self.id = Some(*order_id);
                self.customer_id = Some(*customer_id);
                self.lines = lines.clone();
                self.total = *total;
                self.status = OrderStatus::Placed;
            }
            OrderEvent::OrderStockReserved { .. } => self.status = OrderStatus::StockReserved,
            OrderEvent::OrderPaid { .. } => self.status = OrderStatus::Paid,
            OrderEvent::OrderConfirmed { .. } => self.status = OrderStatus::Confirmed,
            OrderEvent::OrderShipped { .. } => self.status = OrderStatus::Shipped,
            OrderEvent::OrderCancelled { .. } => self.status = OrderStatus::Cancelled,
        }
    }
}

/// Checks the lines of a new order and returns its total.
fn check_lines(lines: &[OrderLine]) -> Result<Money, OrderError> {
    if lines.is_empty() {
        return Err(OrderError::NoLines);
    }
    if lines.len() > MAX_LINES {
        return Err(OrderError::TooManyLines);
    }
    let mut seen = BTreeSet::new();
    let mut total = Money(0);
    for line in lines {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(OrderError::InvalidQuantity {
                sku: line.sku.to_string(),
                quantity: line.quantity,
            });
        }
        if !line.unit_price.is_valid_price() {
            return Err(OrderError::InvalidPrice {
                sku: line.sku.to_string(),
                price: line.unit_price,
            });
        }
        if !seen.insert(&line.sku) {
            return Err(OrderError::DuplicateSku(line.sku.to_string()));
        }
        total = line
            .unit_price
            .times(line.quantity)
            .and_then(|amount| total.plus(amount))
            .ok_or(OrderError::TotalTooLarge)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use cqrs_core::testing::AggregateTest;

    use super::*;
    use crate::domain::money::Sku;

    fn line(sku: &str, quantity: u32) -> OrderLine {
        OrderLine {
            sku: Sku::new(sku).expect("sku"),
            quantity,
            unit_price: Money(250),
        }
    }

    fn placed(id: OrderId, customer: CustomerId) -> OrderEvent {
        OrderEvent::OrderPlaced {
            order_id: id,
            customer_id: customer,
            lines: vec![line("MUG", 2)],
            total: Money(500),
            card: "card_ok".into(),
        }
    }

    fn test() -> AggregateTest<Order> {
        AggregateTest::default()
    }

    #[test]
    fn places_an_order_with_valid_lines() {
        let (id, customer) = (OrderId::new(), CustomerId::new());
        let place = |lines| OrderCommand::Place {
            customer_id: customer,
            lines,
            card: "card_ok".into(),
        };
        let state = test()
            .when_on(&id, place(vec![line("MUG", 2)]))
            .then_expect([placed(id, customer)]);
        assert_eq!(
            (state.status, state.total),
            (OrderStatus::Placed, Money(500))
        );
        test()
            .when_on(&id, place(vec![]))
            .then_expect_error(OrderError::NoLines);
        test()
            .when_on(&id, place(vec![line("MUG", 0)]))
            .then_expect_error(OrderError::InvalidQuantity {
                sku: "MUG".into(),
                quantity: 0,
            });
        test()
            .when_on(&id, place(vec![line("MUG", 1), line("MUG", 2)]))
            .then_expect_error(OrderError::DuplicateSku("MUG".into()));
        test()
            .given([placed(id, customer)])
            .when_on(&id, place(vec![line("MUG", 1)]))
            .then_expect_error(OrderError::InvalidTransition {
                action: "place",
                status: OrderStatus::Placed,
            });
        test()
            .when_on(
                &id,
                OrderCommand::Place {
                    customer_id: customer,
                    lines: vec![line("MUG", 1)],
                    card: " ".into(),
                },
            )
            .then_expect_error(OrderError::NoCard);
    }

    #[test]
    fn walks_the_happy_path_and_ships() {
        let (id, customer) = (OrderId::new(), CustomerId::new());
        let history = vec![
            placed(id, customer),
            OrderEvent::OrderStockReserved { order_id: id },
            OrderEvent::OrderPaid { order_id: id },
        ];
        test()
            .given(history.clone())
            .when_on(&id, OrderCommand::Confirm)
            .then_expect([OrderEvent::OrderConfirmed {
                order_id: id,
                total: Money(500),
            }]);
        let mut confirmed = history;
        confirmed.push(OrderEvent::OrderConfirmed {
            order_id: id,
            total: Money(500),
        });
        let state = test()
            .given(confirmed)
            .when_on(&id, OrderCommand::Ship)
            .then_expect([OrderEvent::OrderShipped { order_id: id }]);
        assert_eq!(state.status, OrderStatus::Shipped);
    }

    #[test]
    fn refuses_illegal_transitions() {
        let (id, customer) = (OrderId::new(), CustomerId::new());
        test()
            .given([placed(id, customer)])
            .when_on(&id, OrderCommand::Ship)
            .then_expect_error(OrderError::InvalidTransition {
                action: "ship",
                status: OrderStatus::Placed,
            });
        test()
            .given([placed(id, customer)])
            .when_on(&id, OrderCommand::MarkPaid)
            .then_expect_error(OrderError::InvalidTransition {
                action: "mark paid",
                status: OrderStatus::Placed,
            });
        test()
            .when_on(&id, OrderCommand::Confirm)
            .then_expect_error(OrderError::InvalidTransition {
                action: "confirm",
                status: OrderStatus::New,
            });
    }

    #[test]
    fn repeated_checkout_commands_change_nothing() {
        let (id, customer) = (OrderId::new(), CustomerId::new());
        test()
            .given([
                placed(id, customer),
                OrderEvent::OrderStockReserved { order_id: id },
            ])
            .when_on(&id, OrderCommand::MarkStockReserved)
            .then_expect([]);
    }

    #[test]
    fn cancels_before_shipping_only_and_needs_a_reason() {
        let (id, customer) = (OrderId::new(), CustomerId::new());
        let cancel = |reason: &str| OrderCommand::Cancel {
            reason: reason.into(),
        };
        test()
            .given([placed(id, customer)])
            .when_on(&id, cancel("changed my mind"))
            .then_expect([OrderEvent::OrderCancelled {
                order_id: id,
                reason: "changed my mind".into(),
            }]);
        test()
            .given([placed(id, customer)])
            .when_on(&id, cancel(""))
            .then_expect_error(OrderError::NoReason);
        let shipped = [
            placed(id, customer),
            OrderEvent::OrderStockReserved { order_id: id },
            OrderEvent::OrderPaid { order_id: id },
            OrderEvent::OrderConfirmed {
                order_id: id,
                total: Money(500),
            },
            OrderEvent::OrderShipped { order_id: id },
        ];
        test()
            .given(shipped)
            .when_on(&id, cancel("too late"))
            .then_expect_error(OrderError::InvalidTransition {
                action: "cancel",
                status: OrderStatus::Shipped,
            });
        test()
            .given([
                placed(id, customer),
                OrderEvent::OrderCancelled {
                    order_id: id,
                    reason: "x".into(),
                },
            ])
            .when_on(&id, OrderCommand::MarkStockReserved)
            .then_expect_error(OrderError::InvalidTransition {
                action: "reserve stock for",
                status: OrderStatus::Cancelled,
            });
    }
}
