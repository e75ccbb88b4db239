//! The payment gateway the payment aggregate decides with, and a simulated one with
//! deterministic test cards.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::domain::money::Money;

/// A card that is always approved.
pub const CARD_APPROVE: &str = "card_approve";
/// A card that is always declined.
pub const CARD_DECLINE: &str = "card_decline";
/// A card whose first authorisation fails transiently (the gateway is "unavailable"); the
/// next one is approved.
pub const CARD_FLAKY: &str = "card_flaky";

/// What a gateway answers to an authorisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// Approved, with the gateway's code.
    Approved(String),
    /// Declined, with the gateway's reason.
    Declined(String),
}

/// The gateway could not answer; asking again later may work.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("payment gateway unavailable: {0}")]
pub struct GatewayUnavailable(pub String);

/// A payment gateway.
pub trait PaymentGateway: Send + Sync {
    /// Asks to authorise `amount` on `card`.
    fn authorize(&self, card: &str, amount: Money) -> Result<Authorization, GatewayUnavailable>;
}

/// A gateway for demos and tests: [`CARD_APPROVE`] approves, [`CARD_DECLINE`] declines,
/// [`CARD_FLAKY`] fails every other call transiently; any other card is declined.
#[derive(Debug, Default)]
pub struct SimulatedGateway {
    calls: Mutex<HashMap<String, u64>>,
}

impl PaymentGateway for SimulatedGateway {
    fn authorize(&self, card: &str, amount: Money) -> Result<Authorization, GatewayUnavailable> {
        let call = {
            let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
            let n = calls.entry(card.to_owned()).or_insert(0);
            *n += 1;
            *n
        };
        match card {
            CARD_APPROVE => Ok(Authorization::Approved(format!("auth-{amount}-{call}"))),
            CARD_FLAKY if call % 2 == 1 => Err(GatewayUnavailable("timed out".into())),
            CARD_FLAKY => Ok(Authorization::Approved(format!("auth-{amount}-{call}"))),
            CARD_DECLINE => Ok(Authorization::Declined("insufficient funds".into())),
            _ => Ok(Authorization::Declined("unknown card".into())),
        }
    }
}
