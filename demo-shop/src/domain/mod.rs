//! The shop's domain: three aggregates and the money and ids they share.

pub mod inventory;
pub mod money;
pub mod order;
pub mod payment;
pub mod text;
