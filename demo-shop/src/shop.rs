//! [`Shop`]: the application: commands through the aggregates, queries through the read
//! models, and the workers (read-model projections and the checkout) in between.

use std::sync::Arc;
use std::time::Duration;

use cqrs_core::{
    BoxError, CommandError, EventEnvelope, Metadata, Position, Repository, SnapshotPolicy,
};
use projections::{ProjectionHost, Resolution};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use projections::process::{InstanceStatus, ProcessOptions, ProcessRunner, ProcessSummary};

use crate::checkout::{self, Checkout};
use crate::domain::inventory::{Inventory, InventoryCommand};
use crate::domain::money::{CustomerId, Money, OrderId, Sku};
use crate::domain::order::{Order, OrderCommand, OrderLine};
use crate::domain::payment::Payment;
use crate::gateway::PaymentGateway;
use crate::read_models;
use crate::storage::Storage;

/// How often a command is tried again after losing a race on its aggregate.
const CONFLICT_RETRIES: u32 = 20;

/// How many events of a product's stream are replayed at most on top of its snapshot.
const INVENTORY_SNAPSHOT_EVERY: u64 = 50;

/// How long [`Shop::settle`] waits for orders whose checkout is retrying.
pub const SETTLE_RETRIES_FOR: Duration = Duration::from_secs(10);

/// How long the answers to requests with an `Idempotency-Key` are kept: a client retrying
/// within it gets the first answer again.
pub const IDEMPOTENCY_KEYS_KEPT_FOR: Duration = Duration::from_secs(24 * 3600);

/// How often the shop's housekeeping runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(3600);

/// How long an order may wait for its payment to settle, by default.
pub const PAYMENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the shop did not carry out a command. Nothing was stored in any case.
#[derive(Debug, thiserror::Error)]
pub enum ShopError {
    /// A rule of the domain refused it.
    #[error("{0}")]
    Rejected(String),
    /// What it names does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Another writer kept winning the race on the same aggregate.
    #[error("{0}")]
    Conflict(String),
    /// The event store or the read models could not be reached; trying again later may
    /// work, and is safe with the same command id.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// The event store or the read models failed.
    #[error("storage failure: {0}")]
    Storage(#[source] BoxError),
}

impl ShopError {
    /// The failure of a store or a read model, classified: out of reach (`transient`) is
    /// [`ShopError::Unavailable`], anything else [`ShopError::Storage`].
    fn storage(error: impl std::error::Error + Send + Sync + 'static, transient: bool) -> Self {
        if transient {
            Self::Unavailable(Box::new(error))
        } else {
            Self::Storage(Box::new(error))
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<CommandError<E>> for ShopError {
    fn from(error: CommandError<E>) -> Self {
        match error {
            CommandError::Rejected(e) => Self::Rejected(e.to_string()),
            CommandError::Store(e) if e.is_conflict() => Self::Conflict(e.to_string()),
            CommandError::Store(cqrs_core::Error::InvalidInput(e)) => Self::Rejected(e),
            CommandError::Store(e @ cqrs_core::Error::CommandReused { .. }) => {
                Self::Rejected(e.to_string())
            }
            CommandError::Store(e) => e.into(),
            other => Self::storage(other, false),
        }
    }
}

impl From<cqrs_core::Error> for ShopError {
    fn from(error: cqrs_core::Error) -> Self {
        let transient = error.is_retryable();
        Self::storage(error, transient)
    }
}

impl From<projections::Error> for ShopError {
    fn from(error: projections::Error) -> Self {
        match error {
            e @ projections::Error::NotReplayable(_) => Self::Rejected(e.to_string()),
            projections::Error::UnknownProjection(name) => {
                Self::NotFound(format!("no projection named {name}"))
            }
            e @ projections::Error::NoDeadLetter { .. } => Self::NotFound(e.to_string()),
            other => {
                let transient = other.is_transient();
                Self::storage(other, transient)
            }
        }
    }
}

/// What a command stored: where its last event stands in the log. A client passes it as
/// `min_position` to read its own write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// The position of the command's last event (`None` when the command changed nothing).
    pub position: Option<Position>,
}

fn written<E>(events: &[EventEnvelope<E>]) -> Written {
    Written {
        position: events.last().map(|e| e.position),
    }
}

/// The shop.
#[derive(Clone)]
pub struct Shop {
    storage: Storage,
    host: ProjectionHost,
    inventory: Repository<Inventory>,
    orders: Repository<Order>,
    payments: Repository<Payment>,
    checkout: Arc<Checkout>,
    checkout_options: ProcessOptions,
    /// Whether the workers started by [`Shop::spawn_workers`] all run (for `/readyz`).
    workers_running: Arc<std::sync::atomic::AtomicBool>,
    /// Its Prometheus metrics; the repositories append through a store that records them.
    metrics: Arc<crate::metrics::Metrics>,
}

impl Shop {
    /// A shop on `storage`, paying through `gateway`.
    pub fn new(storage: Storage, gateway: Arc<dyn PaymentGateway>) -> Self {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let store: Arc<dyn cqrs_core::EventStore> = Arc::new(crate::metrics::MeteredStore::new(
            Arc::clone(&storage.store),
            Arc::clone(&metrics),
        ));
        // A product's stream grows with every order of it: load it from a snapshot.
        let inventory = Repository::new(Arc::clone(&store), ())
            .with_conflict_retries(CONFLICT_RETRIES)
            .with_snapshots(SnapshotPolicy::EveryNEvents(INVENTORY_SNAPSHOT_EVERY));
        let orders =
            Repository::new(Arc::clone(&store), ()).with_conflict_retries(CONFLICT_RETRIES);
        let payments = Repository::new(store, ()).with_conflict_retries(CONFLICT_RETRIES);
        let checkout = Arc::new(Checkout {
            inventory: inventory.clone(),
            orders: orders.clone(),
            payments: payments.clone(),
            gateway,
            payment_timeout: PAYMENT_TIMEOUT,
        });
        let mut shop = Self {
            workers_running: Arc::default(),
            metrics,
            host: storage.host.clone(),
            inventory,
            orders,
            payments,
            checkout,
            checkout_options: ProcessOptions {
                executors: 16,
                ..ProcessOptions::default()
            },
            storage,
        };
        shop.host = Self::host_for(&shop.storage, shop.checkout());
        shop
    }

    /// Runs the checkout with `options` (executors, claim time-to-live, backoff).
    pub fn with_checkout_options(mut self, options: ProcessOptions) -> Self {
        self.checkout_options = options;
        self.host = Self::host_for(&self.storage, self.checkout());
        self
    }

    /// Cancels an order whose payment has not settled `timeout` after it was placed
    /// (default [`PAYMENT_TIMEOUT`]).
    pub fn with_payment_timeout(mut self, timeout: Duration) -> Self {
        self.checkout = Arc::new(Checkout {
            inventory: self.inventory.clone(),
            orders: self.orders.clone(),
            payments: self.payments.clone(),
            gateway: Arc::clone(&self.checkout.gateway),
            payment_timeout: timeout,
        });
        self.host = Self::host_for(&self.storage, self.checkout());
        self
    }

    /// The checkout's runner: intake and executors of its instances (one per order).
    pub fn checkout(&self) -> ProcessRunner<Checkout> {
        ProcessRunner::new(
            Arc::clone(&self.storage.store),
            Arc::clone(&self.storage.instances),
            Arc::clone(&self.checkout),
        )
        .with_options(self.checkout_options.clone())
    }

    /// The host of the read models and the checkout, over this shop's storage.
    fn host_for(storage: &Storage, checkout: ProcessRunner<Checkout>) -> ProjectionHost {
        read_models::register(storage.host.clone()).with_worker(checkout)
    }

    /// Where events and read models live.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The read models and the checkout: queries, status, rebuilds and dead letters go
    /// through it.
    pub fn host(&self) -> &ProjectionHost {
        &self.host
    }

    /// Starts every worker: one per read-model projection, the checkout and the
    /// housekeeping; they stop when `shutdown` turns `true`.
    pub fn spawn_workers(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<projections::Result<()>>> {
        let mut workers = self.host.spawn(shutdown.clone());
        workers.push(self.spawn_housekeeping(shutdown.clone()));
        self.workers_running
            .store(true, std::sync::atomic::Ordering::SeqCst);
        // Not ready from the moment shutdown is asked for: a load balancer stops sending
        // requests while the server drains.
        let (running, mut stopping) = (Arc::clone(&self.workers_running), shutdown.clone());
        tokio::spawn(async move {
            if stopping.wait_for(|stop| *stop).await.is_ok() {
                running.store(false, std::sync::atomic::Ordering::SeqCst);
            }
        });
        self.watched(workers, shutdown)
    }

    /// `workers`, each of which makes the shop not ready if it ends before `shutdown` is
    /// asked for (and says so in the log).
    pub(crate) fn watched(
        &self,
        workers: Vec<JoinHandle<projections::Result<()>>>,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<projections::Result<()>>> {
        let running = &self.workers_running;
        workers
            .into_iter()
            .map(|worker| {
                let (running, shutdown) = (Arc::clone(running), shutdown.clone());
                tokio::spawn(async move {
                    let ended = worker.await.unwrap_or_else(|e| {
                        Err(projections::Error::Transient(
                            format!("a worker panicked: {e}").into(),
                        ))
                    });
                    if !*shutdown.borrow() {
                        running.store(false, std::sync::atomic::Ordering::SeqCst);
                        tracing::error!(outcome = ?ended, "a worker stopped while the shop runs");
                    }
                    ended
                })
            })
            .collect()
    }

    /// Whether the workers started by [`Shop::spawn_workers`] all run: read models move and
    /// orders are checked out.
    pub fn workers_running(&self) -> bool {
        self.workers_running
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Starts one worker per read-model projection (not the checkout).
    pub fn spawn_read_models(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<projections::Result<()>>> {
        self.host.spawn_projections(shutdown)
    }

    /// Starts the housekeeping: every hour, forgets the idempotency keys older than
    /// [`IDEMPOTENCY_KEYS_KEPT_FOR`].
    pub fn spawn_housekeeping(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<projections::Result<()>> {
        let keys = self.storage.idempotency_keys.clone();
        tokio::spawn(async move {
            loop {
                let keep = chrono::Duration::from_std(IDEMPOTENCY_KEYS_KEPT_FOR)
                    .unwrap_or(chrono::Duration::MAX);
                if let Some(before) = chrono::Utc::now().checked_sub_signed(keep) {
                    match keys.prune(before).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(pruned = n, "idempotency keys pruned"),
                        Err(error) => tracing::warn!(%error, "pruning idempotency keys failed"),
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(HOUSEKEEPING_EVERY) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
                }
            }
        })
    }

    /// Starts the checkout (its intake and executors) alone.
    pub fn spawn_checkout(
        &self,
        mut shutdown: watch::Receiver<bool>,
    ) -> JoinHandle<projections::Result<()>> {
        let checkout = self.checkout();
        tokio::spawn(async move {
            checkout
                .run(async move {
                    let _ = shutdown.wait_for(|stop| *stop).await;
                })
                .await
        })
    }

    /// Runs every projection and the checkout until nothing is left to do, and waits (up
    /// to [`SETTLE_RETRIES_FOR`]) for orders whose checkout is retrying. Deadlines not yet
    /// due are left.
    pub async fn settle(&self) -> Result<(), ShopError> {
        let started = std::time::Instant::now();
        loop {
            self.host.settle().await?;
            let retrying = self
                .storage
                .instances
                .summary(checkout::NAME)
                .await?
                .retrying;
            if retrying == 0 || started.elapsed() > SETTLE_RETRIES_FOR {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its Prometheus metrics (served at `/metrics`).
    pub fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.metrics
    }

    /// The checkout at a glance.
    pub async fn checkout_summary(&self) -> Result<ProcessSummary, ShopError> {
        Ok(self.storage.instances.summary(checkout::NAME).await?)
    }

    /// The checkout at a glance, and its orders that are retrying or parked.
    pub async fn checkout_status(
        &self,
    ) -> Result<(ProcessSummary, Vec<InstanceStatus>), ShopError> {
        let instances = &self.storage.instances;
        Ok((
            instances.summary(checkout::NAME).await?,
            instances.troubled(checkout::NAME).await?,
        ))
    }

    /// Retries or skips the input an order's checkout is parked at.
    pub async fn resolve_checkout(
        &self,
        order_id: OrderId,
        resolution: Resolution,
    ) -> Result<(), ShopError> {
        let instance = order_id.to_string();
        if self
            .storage
            .instances
            .resolve(checkout::NAME, &instance, resolution)
            .await?
        {
            Ok(())
        } else {
            Err(ShopError::NotFound(format!(
                "the checkout of order {order_id} is not parked"
            )))
        }
    }

    /// Adds a product to the catalogue.
    pub async fn register_product(
        &self,
        sku: Sku,
        name: String,
        price: Money,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        self.inventory_command(sku, InventoryCommand::RegisterProduct { name, price }, meta)
            .await
    }

    /// Adds units of a product to the stock.
    pub async fn restock(
        &self,
        sku: Sku,
        quantity: u32,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        self.inventory_command(sku, InventoryCommand::Restock { quantity }, meta)
            .await
    }

    async fn inventory_command(
        &self,
        sku: Sku,
        command: InventoryCommand,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        let events = self.inventory.execute(&sku, command, meta).await?;
        Ok(written(&events))
    }

    /// Places an order at today's prices; the checkout takes it from there.
    pub async fn place_order(
        &self,
        customer_id: CustomerId,
        lines: Vec<(Sku, u32)>,
        card: String,
        meta: &Metadata,
    ) -> Result<(OrderId, Written), ShopError> {
        let mut priced = Vec::with_capacity(lines.len());
        for (sku, quantity) in lines {
            let product = self.inventory.load(&sku).await?;
            if product.state.sku.is_none() {
                return Err(ShopError::Rejected(format!(
                    "product {sku} is not registered"
                )));
            }
            priced.push(OrderLine {
                sku,
                quantity,
                unit_price: product.state.price,
            });
        }
        // A command named by its caller (an Idempotency-Key) names its order too, so that
        // carrying it out again finds the same order instead of placing another.
        let order_id = meta
            .command_id
            .map_or_else(OrderId::new, |command| OrderId(command.as_uuid()));
        let command = OrderCommand::Place {
            customer_id,
            lines: priced,
            card,
        };
        let events = self.orders.execute(&order_id, command, meta).await?;
        Ok((order_id, written(&events)))
    }

    /// Cancels an order, with a reason, before it ships.
    pub async fn cancel_order(
        &self,
        order_id: OrderId,
        reason: String,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        self.existing_order_command(order_id, OrderCommand::Cancel { reason }, meta)
            .await
    }

    /// Ships a confirmed order.
    pub async fn ship_order(
        &self,
        order_id: OrderId,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        self.existing_order_command(order_id, OrderCommand::Ship, meta)
            .await
    }

    /// Carries out `command` on an order that must have been placed (404 otherwise).
    async fn existing_order_command(
        &self,
        order_id: OrderId,
        command: OrderCommand,
        meta: &Metadata,
    ) -> Result<Written, ShopError> {
        if self.orders.load(&order_id).await?.version == 0 {
            return Err(ShopError::NotFound(format!("no order {order_id}")));
        }
        Ok(written(
            &self.orders.execute(&order_id, command, meta).await?,
        ))
    }
}
