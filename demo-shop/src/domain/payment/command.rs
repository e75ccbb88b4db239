//! What a payment can be asked.

use crate::domain::money::Money;

/// A command to the payment of one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Asks for the order's payment (a no-op if it was asked already).
    Request {
        /// How much.
        amount: Money,
        /// The card token.
        card: String,
    },
    /// Records the gateway's approval (a no-op once the payment is decided).
    RecordApproval {
        /// The gateway's authorisation code.
        authorization: String,
    },
    /// Records the gateway's refusal (a no-op once the payment is decided).
    RecordDecline {
        /// The gateway's reason.
        reason: String,
    },
    /// Records that the gateway released the payment's authorisation (or will authorise
    /// nothing for it): for a payment requested or authorised, not captured.
    Void,
    /// Captures an authorised payment.
    Capture,
    /// Gives a captured payment back.
    Refund {
        /// Why.
        reason: String,
    },
}
