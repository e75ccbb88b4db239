//! The payment of one order: requested → authorised (or declined) → captured → refunded.
//! Authorisation asks the [`PaymentGateway`] given as the aggregate's services.

mod command;
mod event;
pub mod gateway;

use std::sync::Arc;

use cqrs_core::Aggregate;
use serde::{Deserialize, Serialize};

pub use command::PaymentCommand;
pub use event::PaymentEvent;
pub use gateway::{Authorization, GatewayUnavailable, PaymentGateway, SimulatedGateway};

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
    /// The gateway did not answer; try again later.
    #[error(transparent)]
    GatewayUnavailable(#[from] GatewayUnavailable),
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
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = Arc<dyn PaymentGateway>;

    fn handle(
        &self,
        command: PaymentCommand,
        gateway: &Arc<dyn PaymentGateway>,
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
            (
                C::Request {
                    order_id,
                    amount,
                    card,
                },
                None,
            ) => {
                if amount == Money(0) {
                    return Err(PaymentError::ZeroAmount);
                }
                Ok(vec![E::PaymentRequested {
                    order_id,
                    amount,
                    card,
                }])
            }
            (C::Request { .. }, Some(_)) => Ok(vec![]),
            (_, None) => refuse("process"),
            (C::Authorize, Some(order_id)) => match self.status {
                S::Requested => Ok(vec![match gateway.authorize(&self.card, self.amount)? {
                    Authorization::Approved(authorization) => E::PaymentAuthorized {
                        order_id,
                        authorization,
                    },
                    Authorization::Declined(reason) => E::PaymentDeclined { order_id, reason },
                }]),
                S::Authorized | S::Declined | S::Captured | S::Refunded => Ok(vec![]),
                S::New => refuse("authorise"),
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
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::testing::AggregateTest;

    use super::gateway::{CARD_APPROVE, CARD_DECLINE, CARD_FLAKY};
    use super::*;

    fn test() -> AggregateTest<Payment> {
        AggregateTest::with_services(
            Arc::new(SimulatedGateway::default()) as Arc<dyn PaymentGateway>
        )
    }

    fn requested(order_id: OrderId, card: &str) -> PaymentEvent {
        PaymentEvent::PaymentRequested {
            order_id,
            amount: Money(900),
            card: card.into(),
        }
    }

    #[test]
    fn requests_once_and_needs_an_amount() {
        let order_id = OrderId::new();
        test()
            .when(PaymentCommand::Request {
                order_id,
                amount: Money(900),
                card: CARD_APPROVE.into(),
            })
            .then_expect([requested(order_id, CARD_APPROVE)]);
        test()
            .given([requested(order_id, CARD_APPROVE)])
            .when(PaymentCommand::Request {
                order_id,
                amount: Money(900),
                card: CARD_APPROVE.into(),
            })
            .then_expect([]);
        test()
            .when(PaymentCommand::Request {
                order_id,
                amount: Money(0),
                card: CARD_APPROVE.into(),
            })
            .then_expect_error(PaymentError::ZeroAmount);
    }

    #[test]
    fn the_gateway_approves_or_declines_by_card() {
        let order_id = OrderId::new();
        let outcome = test()
            .given([requested(order_id, CARD_APPROVE)])
            .when(PaymentCommand::Authorize)
            .into_result();
        assert!(
            matches!(
                outcome.as_deref(),
                Ok([PaymentEvent::PaymentAuthorized { .. }])
            ),
            "{outcome:?}"
        );
        test()
            .given([requested(order_id, CARD_DECLINE)])
            .when(PaymentCommand::Authorize)
            .then_expect([PaymentEvent::PaymentDeclined {
                order_id,
                reason: "insufficient funds".into(),
            }]);
    }

    #[test]
    fn a_flaky_gateway_fails_transiently_then_approves() {
        let order_id = OrderId::new();
        let gateway: Arc<dyn PaymentGateway> = Arc::new(SimulatedGateway::default());
        let first = AggregateTest::<Payment>::with_services(Arc::clone(&gateway))
            .given([requested(order_id, CARD_FLAKY)])
            .when(PaymentCommand::Authorize)
            .into_result();
        assert!(
            matches!(first, Err(PaymentError::GatewayUnavailable(_))),
            "{first:?}"
        );
        let second = AggregateTest::<Payment>::with_services(gateway)
            .given([requested(order_id, CARD_FLAKY)])
            .when(PaymentCommand::Authorize)
            .into_result();
        assert!(
            matches!(
                second.as_deref(),
                Ok([PaymentEvent::PaymentAuthorized { .. }])
            ),
            "{second:?}"
        );
    }

    #[test]
    fn captures_authorised_payments_and_refunds_captured_ones() {
        let order_id = OrderId::new();
        let authorized = PaymentEvent::PaymentAuthorized {
            order_id,
            authorization: "a".into(),
        };
        test()
            .given([requested(order_id, CARD_APPROVE), authorized.clone()])
            .when(PaymentCommand::Capture)
            .then_expect([PaymentEvent::PaymentCaptured {
                order_id,
                amount: Money(900),
            }]);
        test()
            .given([requested(order_id, CARD_DECLINE)])
            .when(PaymentCommand::Capture)
            .then_expect_error(PaymentError::InvalidTransition {
                action: "capture",
                status: PaymentStatus::Requested,
            });
        let captured = PaymentEvent::PaymentCaptured {
            order_id,
            amount: Money(900),
        };
        test()
            .given([
                requested(order_id, CARD_APPROVE),
                authorized.clone(),
                captured,
            ])
            .when(PaymentCommand::Refund {
                reason: "cancelled".into(),
            })
            .then_expect([PaymentEvent::PaymentRefunded {
                order_id,
                amount: Money(900),
                reason: "cancelled".into(),
            }]);
        test()
            .given([requested(order_id, CARD_APPROVE), authorized])
            .when(PaymentCommand::Refund { reason: "x".into() })
            .then_expect_error(PaymentError::InvalidTransition {
                action: "refund",
                status: PaymentStatus::Authorized,
            });
    }
}
