//! What happened to a payment.

use cqrs_core::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::domain::money::{Money, OrderId};

/// An event of one order's payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentEvent {
    /// Payment was asked for.
    PaymentRequested {
        /// The order.
        order_id: OrderId,
        /// How much.
        amount: Money,
        /// The card token.
        card: String,
    },
    /// The gateway approved it.
    PaymentAuthorized {
        /// The order.
        order_id: OrderId,
        /// The gateway's code.
        authorization: String,
    },
    /// The gateway declined it.
    PaymentDeclined {
        /// The order.
        order_id: OrderId,
        /// The gateway's reason.
        reason: String,
    },
    /// The money was taken.
    PaymentCaptured {
        /// The order.
        order_id: OrderId,
        /// How much.
        amount: Money,
    },
    /// The money was given back.
    PaymentRefunded {
        /// The order.
        order_id: OrderId,
        /// How much.
        amount: Money,
        /// Why.
        reason: String,
    },
    /// The authorisation was released at the gateway before any capture (the order was
    /// cancelled).
    PaymentVoided {
        /// The order.
        order_id: OrderId,
    },
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::PaymentRequested { .. } => "PaymentRequested",
            Self::PaymentAuthorized { .. } => "PaymentAuthorized",
            Self::PaymentDeclined { .. } => "PaymentDeclined",
            Self::PaymentCaptured { .. } => "PaymentCaptured",
            Self::PaymentRefunded { .. } => "PaymentRefunded",
            Self::PaymentVoided { .. } => "PaymentVoided",
        }
    }
}
