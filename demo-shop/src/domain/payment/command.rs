//! What a payment can be asked.

use crate::domain::money::{Money, OrderId};

/// A command to the payment of one order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentCommand {
    /// Asks for the order's payment (a no-op if it was asked already).
    Request {
        /// The order.
        order_id: OrderId,
        /// How much.
        amount: Money,
        /// The card token.
        card: String,
    },
    /// Authorises through the gateway: approved or declined.
    Authorize,
    /// Captures an authorised payment.
    Capture,
    /// Gives a captured payment back.
    Refund {
        /// Why.
        reason: String,
    },
}
