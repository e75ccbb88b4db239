//! The shop and the warehouse over a broker: the relays that publish each service's events,
//! the consumers that apply the other's, and the shop's consumer of dispatches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{CommandId, EventFilter};
use messaging::{Broker, CloudEvent, Consumer, Inbox, InboxTx, MessageHandler, Relay};
use projections::{ApplyError, ProjectionHost, RunnerOptions};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::domain::money::OrderId;
use crate::shop::{Shop, ShopError};
use crate::storage::{Inboxes, Storage};

/// The exchange, JetStream stream or Kafka topic both services use.
pub const NAMESPACE: &str = "demo";

/// The name of the shop's relay of order events.
pub const SHOP_RELAY: &str = "relay_orders";

/// The CloudEvents `source` of the shop's messages.
pub const SHOP_SOURCE: &str = "urn:demo:shop";

/// The shop's consumer of the warehouse's messages.
pub const SHOP_CONSUMER: &str = "shop";

/// The warehouse's events, as the shop reads them.
#[derive(Debug, Deserialize)]
pub enum WarehouseShipment {
    /// An order's parcel left the warehouse.
    ShipmentDispatched {
        /// The order.
        order_id: OrderId,
    },
}

/// Ships an order when the warehouse announces its dispatch.
pub struct DispatchIntake {
    shop: Shop,
}

impl DispatchIntake {
    /// An intake for `shop`.
    pub fn new(shop: Shop) -> Arc<Self> {
        Arc::new(Self { shop })
    }
}

#[async_trait]
impl MessageHandler for DispatchIntake {
    fn name(&self) -> &str {
        SHOP_CONSUMER
    }

    fn categories(&self) -> Vec<String> {
        vec!["shipment".to_owned()]
    }

    async fn handle(&self, _tx: &mut dyn InboxTx, message: &CloudEvent) -> Result<(), ApplyError> {
        if message.event_type != "ShipmentDispatched" {
            return Ok(());
        }
        let WarehouseShipment::ShipmentDispatched { order_id } =
            message.decode().map_err(ApplyError::poison)?;
        let meta = message
            .metadata()
            .with_command_id(CommandId::caused_by(message.id, "ship"))
            .with_actor("warehouse");
        match self.shop.ship_order(order_id, &meta).await {
            Ok(_) => Ok(()),
            Err(e @ (ShopError::Unavailable(_) | ShopError::Conflict(_))) => {
                Err(ApplyError::transient(e))
            }
            Err(e) => Err(ApplyError::poison_from(e)),
        }
    }
}

impl Shop {
    /// Starts the shop's side of the broker: the relay of its order events and the
    /// consumer of the warehouse's dispatches; they stop when `shutdown` turns `true`.
    pub fn spawn_messaging(
        &self,
        broker: Arc<dyn Broker>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<projections::Result<()>>> {
        let workers = vec![
            spawn_relay(
                self.host(),
                Arc::clone(&broker),
                SHOP_RELAY,
                SHOP_SOURCE,
                "order",
                shutdown.clone(),
            ),
            spawn_consumer(
                self.storage(),
                broker,
                DispatchIntake::new(self.clone()),
                shutdown.clone(),
            ),
        ];
        // Watched like the other workers: one that dies makes the shop not ready.
        self.watched(workers, shutdown)
    }
}

async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Starts a relay named `name` of `storage`'s `category` events to `broker`, published as
/// `source`. It connects to the broker when it can: a broker down at start is tried again.
pub fn spawn_relay(
    host: &ProjectionHost,
    broker: Arc<dyn Broker>,
    name: &'static str,
    source: &'static str,
    category: &'static str,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<projections::Result<()>> {
    let host = host.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(200);
        let publisher = loop {
            tokio::select! {
                published = broker.publisher() => match published {
                    Ok(publisher) => break publisher,
                    Err(error) => tracing::warn!(relay = name, %error, ?delay, "cannot reach the broker; trying again"),
                },
                () = stopped(shutdown.clone()) => return Ok(()),
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        };
        let relay = Relay::new(name, source, publisher)
            .with_filter(EventFilter::all().categories([category]));
        let options = RunnerOptions {
            idle_wait: Duration::from_millis(500),
            ..Relay::options()
        };
        host.run_one(Arc::new(relay), options, stopped(shutdown))
            .await
    })
}

/// Starts a consumer of `broker`'s messages for `handler`, with its inbox in `storage`.
pub fn spawn_consumer(
    storage: &Storage,
    broker: Arc<dyn Broker>,
    handler: Arc<dyn MessageHandler>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<projections::Result<()>> {
    async fn run<I: Inbox>(
        consumer: Consumer<I>,
        shutdown: watch::Receiver<bool>,
    ) -> projections::Result<()> {
        consumer
            .run(stopped(shutdown))
            .await
            .map_err(|e| projections::Error::Transient(Box::new(e)))
    }
    match storage.inbox.clone() {
        Inboxes::Memory(inbox) => {
            tokio::spawn(run(Consumer::new(broker, inbox, handler), shutdown))
        }
        Inboxes::Postgres(inbox) => {
            tokio::spawn(run(Consumer::new(broker, inbox, handler), shutdown))
        }
    }
}
