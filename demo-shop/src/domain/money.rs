//! Money in minor units (cents), never floating point, and the ids of the shop.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An amount of money in minor units (cents). Never negative in this shop.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct Money(pub u64);

impl Money {
    /// The lowest price a product can have: one cent.
    pub const MIN_PRICE: Money = Money(1);
    /// The highest price a product can have: 1,000,000.00. With at most
    /// [`MAX_LINES`](crate::domain::order::MAX_LINES) lines of at most
    /// [`MAX_QUANTITY`](crate::domain::inventory::MAX_QUANTITY) units, an order's total stays
    /// below 2^53, exact in any JSON reader.
    pub const MAX_PRICE: Money = Money(100_000_000);

    /// Whether this is a price a product can have ([`Money::MIN_PRICE`] to [`Money::MAX_PRICE`]).
    pub fn is_valid_price(self) -> bool {
        (Self::MIN_PRICE..=Self::MAX_PRICE).contains(&self)
    }

    /// `self × quantity`, or `None` on overflow.
    pub fn times(self, quantity: u32) -> Option<Money> {
        self.0.checked_mul(u64::from(quantity)).map(Money)
    }

    /// `self + other`, or `None` on overflow.
    pub fn plus(self, other: Money) -> Option<Money> {
        self.0.checked_add(other.0).map(Money)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// A product's stock-keeping unit: 1 to 40 of `[A-Za-z0-9_.]`.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, pattern = "^[A-Za-z0-9_.]{1,40}$")]
pub struct Sku(String);

impl Sku {
    /// Checks and wraps a SKU.
    pub fn new(sku: impl Into<String>) -> Result<Self, String> {
        let sku = sku.into();
        let ok = (1..=40).contains(&sku.len())
            && sku
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if ok {
            Ok(Self(sku))
        } else {
            Err(format!(
                "{sku:?} is not a SKU (1 to 40 of letters, digits, '_' and '.')"
            ))
        }
    }

    /// The SKU as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = String;

    fn try_from(value: String) -> Result<Self, String> {
        Self::new(value)
    }
}

impl From<Sku> for String {
    fn from(value: Sku) -> Self {
        value.0
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh random id.
            pub fn new() -> Self {
                Self(Uuid::new_v4())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// An order's id (also its payment's id: one payment per order).
    OrderId
);
uuid_id!(
    /// A customer's id.
    CustomerId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_prints_in_major_units_and_refuses_overflow() {
        assert_eq!(Money(1234).to_string(), "12.34");
        assert_eq!(Money(5).to_string(), "0.05");
        assert_eq!(Money(250).times(3), Some(Money(750)));
        assert_eq!(Money(u64::MAX).times(2), None);
        assert!(!Money(0).is_valid_price());
        assert!(Money(1).is_valid_price() && Money::MAX_PRICE.is_valid_price());
        assert!(!Money(Money::MAX_PRICE.0 + 1).is_valid_price());
        // The largest possible order is exact in a JSON reader that uses doubles.
        let largest = Money::MAX_PRICE
            .times(crate::domain::inventory::MAX_QUANTITY)
            .and_then(|line| line.times(crate::domain::order::MAX_LINES as u32));
        assert!(largest.is_some_and(|m| m.0 < 1 << 53), "{largest:?}");
    }

    #[test]
    fn skus_are_checked() {
        assert!(Sku::new("MUG-1").is_err());
        assert!(Sku::new("").is_err());
        assert_eq!(
            Sku::new("MUG_1.red").map(|s| s.to_string()),
            Ok("MUG_1.red".to_owned())
        );
    }
}
