//! The payment of one order: requested → authorised (or declined) → captured → refunded.
//!
//! The aggregate records what the payment provider decided; it never calls the provider
//! itself (a call inside its decision would be repeated by every retry of the command). The
//! checkout calls the [`PaymentGateway`](crate::gateway::PaymentGateway) with an idempotency
//! key and records the answer here.

mod command;
mod event;

use cqrs_core::Aggregate;
use serde::{Deserialize, Serialize};

pub use command::PaymentCommand;
pub use event::PaymentEvent;

use crate::domain::money::{Money, OrderId};

/// Where a payment is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Not requested yet.
    #[default]
    New,
    /// Requested, not authorised yet.
    Requested,
    /// Approved by the gateway.
    Authorized,
    /// Refused by the gateway.
    Declined,
    /// Money taken.
    Captured,
    /// Money given back.
    Refunded,
    /// Released before capture.
    Voided,
}

/// Why a payment refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The command does not fit the payment's state.
    #[error("cannot {action} a payment that is {status:?}")]
    InvalidTransition {
        /// What was asked.
        action: &'static str,
        /// Where the payment is.
        status: PaymentStatus,
    },
    /// A payment needs an amount.
    #[error("a payment needs an amount above zero")]
    ZeroAmount,
}

/// The payment of one order.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    /// The order.
    pub order_id: Option<OrderId>,
    /// How much.
    pub amount: Money,
    /// The card token.
    pub card: String,
    /// Where it is.
    pub status: PaymentStatus,
}

impl Aggregate for Payment {
    const TYPE: &'static str = "payment";
    type Id = OrderId;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    fn handle(
        &self,
        order: &OrderId,
        command: PaymentCommand,
        _: &(),
    ) -> Result<Vec<PaymentEvent>, PaymentError> {
        use PaymentCommand as C;
        use PaymentEvent as E;
        use PaymentStatus as S;
        let refuse = |action| {
            Err(PaymentError::InvalidTransition {
                action,
                status: self.status,
            })
        };
        match (command, self.order_id) {
            (C::Request { amount, card }, None) => {
                if amount == Money(0) {
                    return Err(PaymentError::ZeroAmount);
                }
                Ok(vec![E::PaymentRequested {
                    order_id: *order,
                    amount,
                    card,
                }])
            }
            (C::Request { .. }, Some(_)) => Ok(vec![]),
            (_, None) => refuse("process"),
            (C::RecordApproval { authorization }, Some(order_id)) => match self.status {
                S::Requested => Ok(vec![E::PaymentAuthorized {
                    order_id,
                    authorization,
                }]),
                S::Authorized | S::Declined | S::Captured | S::Refunded | S::Voided => Ok(vec![]),
                S::New => refuse("authorise"),
            },
            (C::RecordDecline { reason }, Some(order_id)) => match self.status {
                S::Requested => Ok(vec![E::PaymentDeclined { order_id, reason }]),
                S::Authorized | S::Declined | S::Captured | S::Refunded | S::Voided => Ok(vec![]),
                S::New => refuse("decline"),
            },
            (C::Void, Some(order_id)) => match self.status {
                S::Requested | S::Authorized => Ok(vec![E::PaymentVoided { order_id }]),
                S::Voided | S::Declined => Ok(vec![]),
                _ => refuse("void"),
            },
            (C::Capture, Some(order_id)) => match self.status {
                S::Authorized => Ok(vec![E::PaymentCaptured {
                    order_id,
                    amount: self.amount,
                }]),
                S::Captured | S::Refunded => Ok(vec![]),
                _ => refuse("capture"),
            },
            (C::Refund { reason }, Some(order_id)) => match self.status {
                S::Captured => Ok(vec![E::PaymentRefunded {
                    order_id,
                    amount: self.amount,
                    reason,
                }]),
                S::Refunded => Ok(vec![]),
                _ => refuse("refund"),
            },
        }
    }

    fn apply(&mut self, event: &PaymentEvent) {
        match event {
            PaymentEvent::PaymentRequested {
                order_id,
                amount,
                card,
            } => {
                self.order_id = Some(*order_id);
                self.amount = *amount;
                self.card = card.clone();
                self.status = PaymentStatus::Requested;
            }
            PaymentEvent::PaymentAuthorized { .. } => self.status = PaymentStatus::Authorized,
            PaymentEvent::PaymentDeclined { .. } => self.status = PaymentStatus::Declined,
            PaymentEvent::PaymentCaptured { .. } => self.status = PaymentStatus::Captured,
            PaymentEvent::PaymentRefunded { .. } => self.status = PaymentStatus::Refunded,
            PaymentEvent::PaymentVoided { .. } => self.status = PaymentStatus::Voided,
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::testing::AggregateTest;

    use super::*;

    fn test() -> AggregateTest<Payment> {
        AggregateTest::with_services(())
    }

    fn requested(order_id: OrderId) -> PaymentEvent {
        PaymentEvent::PaymentRequested {
            order_id,
            amount: Money(900),
            card: "card_approve".into(),
        }
    }

    #[test]
    fn requests_once_and_needs_an_amount() {
        let order_id = OrderId::new();
        let request = |amount| PaymentCommand::Request {
            amount: Money(amount),
            card: "card_approve".into(),
        };
        test()
            .when_on(&order_id, request(900))
            .then_expect([requested(order_id)]);
        test()
            .given([requested(order_id)])
            .when_on(&order_id, request(900))
            .then_expect([]);
        test()
            .when_on(&order_id, request(0))
            .then_expect_error(PaymentError::ZeroAmount);
    }

    #[test]
    fn records_the_gateways_answer_once() {
        let order_id = OrderId::new();
        let authorized = PaymentEvent::PaymentAuthorized {
            order_id,
            authorization: "a".into(),
        };
        test()
            .given([requested(order_id)])
            .when_on(
                &order_id,
                PaymentCommand::RecordApproval {
                    authorization: "a".into(),
                },
            )
            .then_expect([authorized.clone()]);
        test()
            .given([requested(order_id)])
            .when_on(
                &order_id,
                PaymentCommand::RecordDecline {
                    reason: "insufficient funds".into(),
                },
            )
            .then_expect([PaymentEvent::PaymentDeclined {
                order_id,
                reason: "insufficient funds".into(),
            }]);
        // Decided already: a later answer changes nothing.
        test()
            .given([requested(order_id), authorized])
            .when_on(
                &order_id,
                PaymentCommand::RecordDecline { reason: "x".into() },
            )
            .then_expect([]);
        test()
            .when_on(
                &order_id,
                PaymentCommand::RecordApproval {
                    authorization: "a".into(),
                },
            )
            .then_expect_error(PaymentError::InvalidTransition {
                action: "process",
                status: PaymentStatus::New,
            });
    }

    #[test]
    fn voids_what_was_not_captured() {
        let order_id = OrderId::new();
        let authorized = PaymentEvent::PaymentAuthorized {
            order_id,
            authorization: "a".into(),
        };
        let voided = PaymentEvent::PaymentVoided { order_id };
        test()
            .given([requested(order_id), authorized.clone()])
            .when_on(&order_id, PaymentCommand::Void)
            .then_expect([voided.clone()]);
        test()
            .given([requested(order_id)])
            .when_on(&order_id, PaymentCommand::Void)
            .then_expect([voided.clone()]);
        test()
            .given([requested(order_id), voided.clone()])
            .when_on(
                &order_id,
                PaymentCommand::RecordApproval {
                    authorization: "late".into(),
                },
            )
            .then_expect([]);
        test()
            .given([requested(order_id), voided])
            .when_on(&order_id, PaymentCommand::Capture)
            .then_expect_error(PaymentError::InvalidTransition {
                action: "capture",
                status: PaymentStatus::Voided,
            });
        let captured = PaymentEvent::PaymentCaptured {
            order_id,
            amount: Money(900),
        };
        test()
            .given([requested(order_id), authorized, captured])
            .when_on(&order_id, PaymentCommand::Void)
            .then_expect_error(PaymentError::InvalidTransition {
                action: "void",
                status: PaymentStatus::Captured,
            });
    }

    #[test]
    fn captures_authorised_payments_and_refunds_captured_ones() {
        let order_id = OrderId::new();
        let authorized = PaymentEvent::PaymentAuthorized {
            order_id,
            authorization: "a".into(),
        };
        test()
            .given([requested(order_id), authorized.clone()])
            .when_on(&order_id, PaymentCommand::Capture)
            .then_expect([PaymentEvent::PaymentCaptured {
                order_id,
                amount: Money(900),
            }]);
        test()
            .given([requested(order_id)])
            .when_on(&order_id, PaymentCommand::Capture)
            .then_expect_error(PaymentError::InvalidTransition {
                action: "capture",
                status: PaymentStatus::Requested,
            });
        let captured = PaymentEvent::PaymentCaptured {
            order_id,
            amount: Money(900),
        };
        test()
            .given([requested(order_id), authorized.clone(), captured])
            .when_on(
                &order_id,
                PaymentCommand::Refund {
                    reason: "cancelled".into(),
                },
            )
            .then_expect([PaymentEvent::PaymentRefunded {
                order_id,
                amount: Money(900),
                reason: "cancelled".into(),
            }]);
        test()
            .given([requested(order_id), authorized])
            .when_on(&order_id, PaymentCommand::Refund { reason: "x".into() })
            .then_expect_error(PaymentError::InvalidTransition {
                action: "refund",
                status: PaymentStatus::Authorized,
            });
    }
}
