//! The inventory of one SKU: its product, its stock and the reservations of orders.
//! Available and reserved units never go negative.

mod command;
mod event;

use std::collections::{BTreeMap, BTreeSet};

use cqrs_core::Aggregate;
use serde::{Deserialize, Serialize};

pub use command::InventoryCommand;
pub use event::InventoryEvent;

use crate::domain::money::{Money, OrderId, Sku};
use crate::domain::text;

/// The most units one restock or reservation may move.
pub const MAX_QUANTITY: u32 = 1_000_000;

/// Why the inventory refused a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// The SKU is not in the catalogue.
    #[error("product {0} is not registered")]
    NotRegistered(Sku),
    /// The SKU is in the catalogue already.
    #[error("product {0} is already registered")]
    AlreadyRegistered(Sku),
    /// A product needs a name.
    #[error(
        "a product needs a name of 1 to {} characters, without control or text-direction characters",
        text::MAX_NAME
    )]
    InvalidName,
    /// A price must be between [`Money::MIN_PRICE`] and [`Money::MAX_PRICE`].
    #[error("the price {0} is not between {min} and {max}", min = Money::MIN_PRICE, max = Money::MAX_PRICE)]
    InvalidPrice(Money),
    /// A quantity must be between 1 and [`MAX_QUANTITY`].
    #[error("quantity {0} is not between 1 and {MAX_QUANTITY}")]
    InvalidQuantity(u32),
    /// Not enough units are available.
    #[error("not enough {sku}: {requested} requested, {available} available")]
    InsufficientStock {
        /// The SKU.
        sku: Sku,
        /// Units asked for.
        requested: u32,
        /// Units available.
        available: u32,
    },
    /// Commit of an order that holds no reservation here.
    #[error("order {order_id} holds no reservation of {sku}")]
    NoReservation {
        /// The SKU.
        sku: Sku,
        /// The order.
        order_id: OrderId,
    },
}

/// The inventory of one SKU.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The SKU, once registered.
    pub sku: Option<Sku>,
    /// The product's name.
    pub name: String,
    /// The unit price.
    pub price: Money,
    /// Units free to reserve.
    pub available: u32,
    /// Units set aside, by order.
    pub reservations: BTreeMap<OrderId, u32>,
    /// Orders whose units shipped.
    pub committed: BTreeSet<OrderId>,
}

impl Inventory {
    /// Units set aside for orders.
    pub fn reserved(&self) -> u32 {
        self.reservations.values().sum()
    }
}

fn check_quantity(quantity: u32) -> Result<u32, InventoryError> {
    if (1..=MAX_QUANTITY).contains(&quantity) {
        Ok(quantity)
    } else {
        Err(InventoryError::InvalidQuantity(quantity))
    }
}

impl Aggregate for Inventory {
    const TYPE: &'static str = "inventory";
    type Id = Sku;
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Error = InventoryError;
    type Services = ();

    fn handle(
        &self,
        sku: &Sku,
        command: InventoryCommand,
        _: &(),
    ) -> Result<Vec<InventoryEvent>, InventoryError> {
        let sku = sku.clone();
        use InventoryCommand as C;
        use InventoryEvent as E;
        if let C::RegisterProduct { name, price } = command {
            if self.sku.is_some() {
                return Err(InventoryError::AlreadyRegistered(sku));
            }
            if !text::is_valid(&name, text::MAX_NAME) {
                return Err(InventoryError::InvalidName);
            }
            if !price.is_valid_price() {
                return Err(InventoryError::InvalidPrice(price));
            }
            return Ok(vec![E::ProductRegistered { sku, name, price }]);
        }
        let Some(sku) = self.sku.clone() else {
            return Err(InventoryError::NotRegistered(sku));
        };
        match command {
            C::RegisterProduct { .. } => Ok(vec![]),
            C::Restock { quantity } => {
                let quantity = check_quantity(quantity)?;
                if self.available.checked_add(quantity).is_none() {
                    return Err(InventoryError::InvalidQuantity(quantity));
                }
                Ok(vec![E::Restocked { sku, quantity }])
            }
            C::Reserve { order_id, .. }
                if self.reservations.contains_key(&order_id)
                    || self.committed.contains(&order_id) =>
            {
                Ok(vec![])
            }
            C::Reserve { order_id, quantity } => {
                let quantity = check_quantity(quantity)?;
                if quantity > self.available {
                    return Err(InventoryError::InsufficientStock {
                        sku,
                        requested: quantity,
                        available: self.available,
                    });
                }
                Ok(vec![E::StockReserved {
                    sku,
                    order_id,
                    quantity,
                }])
            }
            C::Release { order_id } => Ok(self
                .reservations
                .get(&order_id)
                .map(|&quantity| E::ReservationReleased {
                    sku,
                    order_id,
                    quantity,
                })
                .into_iter()
                .collect()),
            C::Commit { order_id } if self.committed.contains(&order_id) => Ok(vec![]),
            C::Commit { order_id } => match self.reservations.get(&order_id) {
                Some(&quantity) => Ok(vec![E::ReservationCommitted {
                    sku,
                    order_id,
                    quantity,
                }]),
                None => Err(InventoryError::NoReservation { sku, order_id }),
            },
        }
    }

    fn apply(&mut self, event: &InventoryEvent) {
        match event {
            InventoryEvent::ProductRegistered { sku, name, price } => {
                self.sku = Some(sku.clone());
                self.name = name.clone();
                self.price = *price;
            }
            InventoryEvent::Restocked { quantity, .. } => {
                self.available = self.available.saturating_add(*quantity)
            }
            InventoryEvent::StockReserved {
                order_id, quantity, ..
            } => {
                self.available = self.available.saturating_sub(*quantity);
                self.reservations.insert(*order_id, *quantity);
            }
            InventoryEvent::ReservationReleased {
                order_id, quantity, ..
            } => {
                self.available = self.available.saturating_add(*quantity);
                self.reservations.remove(order_id);
            }
            InventoryEvent::ReservationCommitted { order_id, .. } => {
                self.reservations.remove(order_id);
                self.committed.insert(*order_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use cqrs_core::testing::AggregateTest;

    use super::*;

    fn sku() -> Sku {
        Sku::new("MUG").expect("sku")
    }

    fn registered() -> InventoryEvent {
        InventoryEvent::ProductRegistered {
            sku: sku(),
            name: "Mug".into(),
            price: Money(1200),
        }
    }

    fn restocked(quantity: u32) -> InventoryEvent {
        InventoryEvent::Restocked {
            sku: sku(),
            quantity,
        }
    }

    fn test() -> AggregateTest<Inventory> {
        AggregateTest::default()
    }

    #[test]
    fn registers_a_product_once() {
        test()
            .when_on(
                &sku(),
                InventoryCommand::RegisterProduct {
                    name: "Mug".into(),
                    price: Money(1200),
                },
            )
            .then_expect([registered()]);
        test()
            .given([registered()])
            .when_on(
                &sku(),
                InventoryCommand::RegisterProduct {
                    name: "Mug".into(),
                    price: Money(1200),
                },
            )
            .then_expect_error(InventoryError::AlreadyRegistered(sku()));
        test()
            .when_on(
                &sku(),
                InventoryCommand::RegisterProduct {
                    name: " ".into(),
                    price: Money(1),
                },
            )
            .then_expect_error(InventoryError::InvalidName);
    }

    #[test]
    fn restocks_only_registered_products_with_positive_quantities() {
        test()
            .when_on(&sku(), InventoryCommand::Restock { quantity: 5 })
            .then_expect_error(InventoryError::NotRegistered(sku()));
        test()
            .given([registered()])
            .when_on(&sku(), InventoryCommand::Restock { quantity: 0 })
            .then_expect_error(InventoryError::InvalidQuantity(0));
        let state = test()
            .given([registered()])
            .when_on(&sku(), InventoryCommand::Restock { quantity: 5 })
            .then_expect([restocked(5)]);
        assert_eq!(state.available, 5);
    }

    #[test]
    fn reserves_what_is_available_and_names_what_is_short() {
        let order_id = OrderId::new();
        let state = test()
            .given([registered(), restocked(3)])
            .when_on(
                &sku(),
                InventoryCommand::Reserve {
                    order_id,
                    quantity: 2,
                },
            )
            .then_expect([InventoryEvent::StockReserved {
                sku: sku(),
                order_id,
                quantity: 2,
            }]);
        assert_eq!((state.available, state.reserved()), (1, 2));
        test()
            .given([registered(), restocked(3)])
            .when_on(
                &sku(),
                InventoryCommand::Reserve {
                    order_id,
                    quantity: 4,
                },
            )
            .then_expect_error(InventoryError::InsufficientStock {
                sku: sku(),
                requested: 4,
                available: 3,
            });
    }

    #[test]
    fn reserving_twice_for_one_order_is_a_no_op() {
        let order_id = OrderId::new();
        test()
            .given([
                registered(),
                restocked(3),
                InventoryEvent::StockReserved {
                    sku: sku(),
                    order_id,
                    quantity: 2,
                },
            ])
            .when_on(
                &sku(),
                InventoryCommand::Reserve {
                    order_id,
                    quantity: 2,
                },
            )
            .then_expect([]);
    }

    #[test]
    fn releases_and_commits_reservations() {
        let order_id = OrderId::new();
        let reserved = InventoryEvent::StockReserved {
            sku: sku(),
            order_id,
            quantity: 2,
        };
        let state = test()
            .given([registered(), restocked(3), reserved.clone()])
            .when_on(&sku(), InventoryCommand::Release { order_id })
            .then_expect([InventoryEvent::ReservationReleased {
                sku: sku(),
                order_id,
                quantity: 2,
            }]);
        assert_eq!((state.available, state.reserved()), (3, 0));
        test()
            .given([registered(), restocked(3)])
            .when_on(&sku(), InventoryCommand::Release { order_id })
            .then_expect([]);
        let state = test()
            .given([registered(), restocked(3), reserved.clone()])
            .when_on(&sku(), InventoryCommand::Commit { order_id })
            .then_expect([InventoryEvent::ReservationCommitted {
                sku: sku(),
                order_id,
                quantity: 2,
            }]);
        assert_eq!((state.available, state.reserved()), (1, 0));
        test()
            .given([
                registered(),
                restocked(3),
                reserved,
                InventoryEvent::ReservationCommitted {
                    sku: sku(),
                    order_id,
                    quantity: 2,
                },
            ])
            .when_on(&sku(), InventoryCommand::Commit { order_id })
            .then_expect([]);
        test()
            .given([registered()])
            .when_on(&sku(), InventoryCommand::Commit { order_id })
            .then_expect_error(InventoryError::NoReservation {
                sku: sku(),
                order_id,
            });
    }
}
