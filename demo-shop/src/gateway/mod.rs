//! The payment provider, seen from the shop: a [`PaymentGateway`] called with an
//! idempotency key, outside any aggregate, by the checkout.
//!
//! Two gateways fulfil it: [`SimulatedGateway`], in process (the embedded default, and what
//! the gateway service serves), and [`HttpGateway`], a client of the gateway service
//! (`demo-shop gateway`), which runs as a service of its own like a real provider: it
//! requires an idempotency key and keeps a ledger of authorisations per key.
//!
//! Test cards (the same everywhere):
//!
//! | card | answer |
//! | --- | --- |
//! | [`CARD_APPROVE`] | approved |
//! | [`CARD_DECLINE`] | declined, "insufficient funds" |
//! | [`CARD_FLAKY`] | unavailable on a key's first call, approved on the next |
//! | [`CARD_UNAVAILABLE`] | always unavailable: the payment never settles |
//! | [`CARD_INVALID`] | refused as a malformed request (asking again will not help) |
//! | any other | declined, "unknown card" |

mod client;
mod service;
mod simulated;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use client::HttpGateway;
pub use service::{router as service_router, serve as serve_service};
pub use simulated::{LedgerEntry, SimulatedGateway};

use crate::domain::money::Money;

/// A card that is always approved.
pub const CARD_APPROVE: &str = "card_approve";
/// A card that is always declined.
pub const CARD_DECLINE: &str = "card_decline";
/// A card whose first authorisation under a key fails transiently (the gateway is
/// "unavailable"); the next one is approved.
pub const CARD_FLAKY: &str = "card_flaky";
/// A card the gateway never answers for: its payment never settles.
pub const CARD_UNAVAILABLE: &str = "card_unavailable";

/// A card whose requests the gateway refuses as malformed.
pub const CARD_INVALID: &str = "card_invalid";

/// An authorisation asked of the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationRequest {
    /// What it is for (the order id).
    pub reference: String,
    /// The card token.
    pub card: String,
    /// How much, in cents.
    pub amount_cents: u64,
}

/// The gateway's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Authorization {
    /// Approved, with the gateway's authorisation code.
    Approved {
        /// The code.
        authorization: String,
    },
    /// Declined, with the gateway's reason.
    Declined {
        /// Why.
        reason: String,
    },
}

/// Why the gateway gave no answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// It could not answer now (timed out, unreachable); asking again with the same key
    /// is safe and may work.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
    /// It refused the request itself (a key used for another request, a bad amount):
    /// asking again will not help.
    #[error("payment gateway refused the request: {0}")]
    Refused(String),
}

/// A payment provider.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// Asks to authorise `request` under `key`. The same key always gets the same answer
    /// and authorises at most once; the same key with another request is refused.
    async fn authorize(
        &self,
        key: &str,
        request: &AuthorizationRequest,
    ) -> Result<Authorization, GatewayError>;

    /// Voids what `key` authorised, or will authorise: an approval under it is released, and
    /// an authorisation asked under it later (a call whose answer was lost, a deposed
    /// worker's) is declined. Voiding again changes nothing. Answers whether an approval
    /// was released.
    async fn void(&self, key: &str) -> Result<bool, GatewayError>;
}

/// `amount` as the gateway takes it.
pub fn amount_cents(amount: Money) -> u64 {
    amount.0
}
