//! The warehouse: a second service, with its own database, that talks to the shop only
//! through a broker. It receives the shop's order events, expects, picks and dispatches
//! each confirmed order's goods, and announces the dispatch, which the shop turns into
//! shipping the order.
//!
//! | module | holds |
//! | --- | --- |
//! | [`shipment`] | the [`Shipment`] aggregate |
//! | [`intake`] | [`OrderIntake`]: the consumer of the shop's order events |
//! | [`view`] | the read model `shipments` |

pub mod intake;
pub mod shipment;
pub mod view;

use std::sync::Arc;

use cqrs_core::Repository;
use projections::ProjectionHost;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use intake::OrderIntake;
pub use shipment::{Shipment, ShipmentCommand, ShipmentEvent, ShipmentStatus};

use crate::integration;
use crate::storage::Storage;

/// The name of the warehouse's relay (its checkpoint and lease).
pub const RELAY: &str = "relay_shipments";

/// The CloudEvents `source` of the warehouse's messages.
pub const SOURCE: &str = "urn:demo:warehouse";

/// The warehouse service.
#[derive(Clone)]
pub struct Warehouse {
    storage: Storage,
    host: ProjectionHost,
    shipments: Repository<Shipment>,
}

impl Warehouse {
    /// A warehouse on `storage` (its own: never the shop's).
    pub fn new(storage: Storage) -> Self {
        Self {
            shipments: Repository::new(Arc::clone(&storage.store), ()),
            host: storage.host.clone().with_typed(view::Shipments),
            storage,
        }
    }

    /// Its storage.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// Its read models.
    pub fn host(&self) -> &ProjectionHost {
        &self.host
    }

    /// Starts its workers: the `shipments` read model, the consumer of the shop's order
    /// events, and the relay that announces shipments to `broker`; they stop when
    /// `shutdown` turns `true`.
    pub fn spawn_workers(
        &self,
        broker: Arc<dyn messaging::Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<projections::Result<()>>> {
        let mut workers = self.host.spawn(shutdown.clone());
        workers.push(integration::spawn_consumer(
            &self.storage,
            Arc::clone(&broker),
            OrderIntake::new(self.shipments.clone()),
            shutdown.clone(),
        ));
        workers.push(integration::spawn_relay(
            &self.host, broker, RELAY, SOURCE, "shipment", shutdown,
        ));
        workers
    }

    /// Brings its read models up to date with its log (for the embedded scenario and tests).
    pub async fn catch_up(&self) -> projections::Result<u64> {
        self.host.catch_up().await
    }
}
