//! [`ProjectionHost`]: every projection and worker of a service, run, watched and rebuilt
//! through one handle, whatever the [`Target`].
//!
//! A service registers its projections (typed or not, relays included) and its workers
//! (process managers), then hands the host around as a plain value: the HTTP layer queries
//! read models and waits for its own writes through it, the CLI asks for status and rebuilds
//! by name, `serve` runs everything until shutdown. The target's type is chosen once, at
//! construction, so nothing downstream is generic over it.
//!
//! ```
//! use std::sync::Arc;
//! use cqrs_core::InMemoryEventStore;
//! use projections::{MemoryTarget, ProjectionHost};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let host = ProjectionHost::new(Arc::new(InMemoryEventStore::new()), MemoryTarget::new());
//! // .with_typed(MyReadModel) for each read model, .with_worker(…) for each process manager
//! host.settle().await.unwrap();
//! assert!(host.status().await.unwrap().is_empty());
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_core::{EventStore, Position};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::dead_letters::{DeadLetter, Resolution};
use crate::documents::document_error;
use crate::error::{Error, Result};
use crate::process::{ProcessManager, ProcessRunner};
use crate::progress::WaitOutcome;
use crate::projection::Projection;
use crate::rebuild::{RebuildProgress, RebuildReport};
use crate::runner::{ProjectionRunner, RunnerOptions};
use crate::status::ProjectionStatus;
use crate::target::Target;
use crate::typed::{collection, Collection, EventProjection, Fold, Typed};

/// A future that resolves when a worker should stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Something the host runs beside its projections: a process manager, a housekeeping loop.
#[async_trait]
pub trait Worker: Send + Sync + 'static {
    /// Its name, for logs.
    fn name(&self) -> &str;

    /// Runs until `shutdown` resolves, then finishes what it has in hand and returns.
    async fn run(&self, shutdown: Shutdown) -> Result<()>;

    /// Does what is due now and returns how much it did (0 when there was nothing to do).
    /// [`ProjectionHost::settle`] calls it until every projection and worker is idle.
    async fn run_until_idle(&self) -> Result<u64>;
}

#[async_trait]
impl<P: ProcessManager> Worker for ProcessRunner<P> {
    fn name(&self) -> &str {
        self.manager().name()
    }

    async fn run(&self, shutdown: Shutdown) -> Result<()> {
        ProcessRunner::run(self, shutdown).await
    }

    async fn run_until_idle(&self) -> Result<u64> {
        let settled = ProcessRunner::run_until_idle(self).await?;
        Ok(settled.filed + settled.reactions)
    }
}

/// The projections and workers of one service over one event store and one [`Target`].
///
/// Cheap to clone. A clone shares the store, the target and what was registered so far;
/// what is registered on it afterwards is its own (a service adds its projections to the
/// bare host its storage gives it).
#[derive(Clone)]
pub struct ProjectionHost {
    store: Arc<dyn EventStore>,
    target: Arc<dyn HostedTarget>,
    projections: Vec<Arc<dyn Projection>>,
    workers: Vec<Arc<dyn Worker>>,
    options: RunnerOptions,
}

impl std::fmt::Debug for ProjectionHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectionHost")
            .field("projections", &self.names())
            .field(
                "workers",
                &self.workers.iter().map(|w| w.name()).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl ProjectionHost {
    /// A host with nothing registered yet, reading `store` and writing read models to `target`.
    pub fn new(store: Arc<dyn EventStore>, target: impl Target) -> Self {
        Self {
            store,
            target: Arc::new(target),
            projections: Vec::new(),
            workers: Vec::new(),
            options: RunnerOptions::default(),
        }
    }

    /// A host on PostgreSQL at `database_url`, events and read models in the same database
    /// (both migrated, the event store's log order checked), or everything in memory when
    /// there is no URL: how a service picks its storage from its configuration.
    ///
    /// ```no_run
    /// # async fn run() -> projections::Result<()> {
    /// let host = projections::ProjectionHost::open(std::env::var("DATABASE_URL").ok().as_deref()).await?;
    /// let store = host.store().clone(); // for the repositories
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "postgres")]
    pub async fn open(database_url: Option<&str>) -> Result<Self> {
        let Some(url) = database_url else {
            let store = Arc::new(cqrs_core::InMemoryEventStore::new());
            return Ok(Self::new(store, crate::MemoryTarget::new()));
        };
        let store = eventstore_postgres::PgEventStore::connect(url).await?;
        store.migrate().await?;
        store.check_log_order().await?;
        let target = crate::PgTarget::new(store.pool().clone());
        target.migrate().await?;
        Ok(Self::new(Arc::new(store), target))
    }

    /// Runs every projection with `options`.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// Registers a typed projection or a [`Fold`].
    pub fn with_typed(self, projection: impl EventProjection) -> Self {
        self.with_projection(Typed::new(projection))
    }

    /// Registers a projection.
    pub fn with_projection(mut self, projection: impl Projection) -> Self {
        self.projections.push(Arc::new(projection));
        self
    }

    /// Registers projections already behind `Arc`s.
    pub fn with_projections(
        mut self,
        projections: impl IntoIterator<Item = Arc<dyn Projection>>,
    ) -> Self {
        self.projections.extend(projections);
        self
    }

    /// Registers a worker (a [`ProcessRunner`], for one).
    pub fn with_worker(mut self, worker: impl Worker) -> Self {
        self.workers.push(Arc::new(worker));
        self
    }

    /// The event store the projections read.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.store
    }

    /// The names of the registered projections, in registration order.
    pub fn names(&self) -> Vec<&str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// The registered projection named `name`.
    pub fn projection(&self, name: &str) -> Result<&Arc<dyn Projection>> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    /// The registered projections, in registration order.
    pub fn projections(&self) -> &[Arc<dyn Projection>] {
        &self.projections
    }

    /// Starts every projection (not the workers) on the current runtime; they stop when
    /// `shutdown` turns `true`.
    pub fn spawn_projections(
        &self,
        shutdown: watch::Receiver<bool>,
    ) -> Vec<JoinHandle<Result<()>>> {
        self.projections
            .iter()
            .map(|projection| {
                let runner = self
                    .target
                    .runner(&self.store, Arc::clone(projection), &self.options);
                let stop = stopped(shutdown.clone());
                tokio::spawn(async move { runner.run(stop).await })
            })
            .collect()
    }

    /// Starts every projection and worker on the current runtime; they stop when `shutdown`
    /// turns `true`, each after finishing the batch in hand (a projection) and giving up its
    /// lease.
    pub fn spawn(&self, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<Result<()>>> {
        let mut tasks = self.spawn_projections(shutdown.clone());
        tasks.extend(self.workers.iter().map(|worker| {
            let (worker, stop) = (Arc::clone(worker), stopped(shutdown.clone()));
            tokio::spawn(async move { worker.run(stop).await })
        }));
        tasks
    }

    /// Runs every projection and worker until `shutdown` resolves, then stops them and
    /// waits for each. One that ends with an error before then (a failure the runner does
    /// not retry, a panic) stops the others too, and its error is returned at once, so a
    /// supervisor sees a service whose read models no longer move.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        let (stop, stopping) = watch::channel(false);
        let mut tasks: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
        for task in self.spawn(stopping) {
            tasks.spawn(async move {
                task.await.unwrap_or_else(|e| {
                    Err(Error::Transient(format!("a worker panicked: {e}").into()))
                })
            });
        }
        let mut first_error = None;
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                ended = tasks.join_next() => match ended {
                    None => break,
                    Some(Ok(Ok(()))) => {}
                    Some(Ok(Err(error))) => {
                        tracing::error!(%error, "a projection or worker stopped; stopping the others");
                        first_error = Some(error);
                        break;
                    }
                    Some(Err(e)) => {
                        first_error = Some(Error::Transient(format!("a worker panicked: {e}").into()));
                        break;
                    }
                },
            }
        }
        let _ = stop.send(true);
        while let Some(ended) = tasks.join_next().await {
            if let Ok(Err(error)) = ended {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Runs one projection that is not registered (a relay whose broker connection was made
    /// after start-up, say) with `options`, until `shutdown` resolves.
    pub async fn run_one(
        &self,
        projection: Arc<dyn Projection>,
        options: RunnerOptions,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        let runner = self.target.runner(&self.store, projection, &options);
        runner.run(Box::pin(shutdown)).await
    }

    /// Brings every projection up to the end of the log; returns how many events they
    /// applied in all. A projection an operator paused is left where it is (and said so in
    /// the log); the others catch up all the same.
    pub async fn catch_up(&self) -> Result<u64> {
        let mut applied = 0;
        for projection in &self.projections {
            let runner = self
                .target
                .runner(&self.store, Arc::clone(projection), &self.options);
            match runner.run_until_caught_up().await {
                Ok(done) => applied += done,
                Err(Error::Paused(name)) => {
                    tracing::warn!(projection = %name, "paused: not caught up")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(applied)
    }

    /// Runs every projection and worker until nothing is left to do: a worker's commands
    /// make new events, so it goes round until a round does nothing.
    pub async fn settle(&self) -> Result<()> {
        loop {
            let mut done = self.catch_up().await?;
            for worker in &self.workers {
                done += worker.run_until_idle().await?;
            }
            if done == 0 {
                return Ok(());
            }
        }
    }

    /// The status of every projection with a state in the target (registered here or by
    /// another process).
    pub async fn status(&self) -> Result<Vec<ProjectionStatus>> {
        self.target.status(self.store.as_ref()).await
    }

    /// Rebuilds the read model of `name` by replay while the current one serves (see
    /// [`ProjectionRunner::rebuild`]); `on_progress` is called after every batch.
    pub async fn rebuild(
        &self,
        name: &str,
        mut on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<RebuildReport> {
        let projection = Arc::clone(self.projection(name)?);
        let runner = self.target.runner(&self.store, projection, &self.options);
        runner.rebuild(&mut on_progress).await
    }

    /// Waits (up to `timeout`) until the read model of `name` has reached `position`, woken
    /// by its worker's progress: how a client reads its own write.
    pub async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<WaitOutcome> {
        self.projection(name)?;
        self.target.wait_for(name, position, timeout).await
    }

    /// Pauses the live worker of `name`, wherever it runs: it finishes the batch in hand,
    /// keeps the lease and applies nothing more until [`resume`](Self::resume)d (a rebuild
    /// goes on). Its status reads [`ProjectionState::Paused`](crate::ProjectionState::Paused).
    /// Pausing a paused projection changes nothing.
    pub async fn pause(&self, name: &str) -> Result<()> {
        self.set_paused(name, true).await
    }

    /// Lets the paused worker of `name` go on from its checkpoint (within
    /// [`RunnerOptions::paused_recheck`]).
    pub async fn resume(&self, name: &str) -> Result<()> {
        self.set_paused(name, false).await
    }

    /// Registers `name` (a projection no worker has run yet can be paused or reset too) and
    /// returns it.
    async fn registered(&self, name: &str) -> Result<&Arc<dyn Projection>> {
        let projection = self.projection(name)?;
        self.target.register(name, projection.version()).await?;
        Ok(projection)
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        self.registered(name).await?;
        if self.target.set_paused(name, paused).await? {
            Ok(())
        } else {
            Err(Error::UnknownProjection(name.to_owned()))
        }
    }

    /// Empties the read model of `name` and has its live worker replay the log into it from
    /// the start (see [`Target::reset`]); returns the new generation. Queries see the read
    /// model fill up again; [`rebuild`](Self::rebuild) is the way to keep serving the old
    /// one meanwhile. [`Error::NotReplayable`] for a projection with side effects (a relay,
    /// say: a replay would do them all again).
    pub async fn reset(&self, name: &str) -> Result<u64> {
        if self.registered(name).await?.has_side_effects() {
            return Err(Error::NotReplayable(name.to_owned()));
        }
        self.target
            .reset(name)
            .await?
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))
    }

    /// The dead letters of `name`, across generations, oldest first.
    pub async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        self.projection(name)?;
        self.target.dead_letters(name).await
    }

    /// Retries or skips the dead letter of `event_id` in `name`; [`Error::NoDeadLetter`]
    /// when there is no open one.
    pub async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<()> {
        self.projection(name)?;
        if self
            .target
            .resolve_dead_letter(name, event_id, resolution)
            .await?
        {
            Ok(())
        } else {
            Err(Error::NoDeadLetter {
                projection: name.to_owned(),
                event_id,
            })
        }
    }

    /// The document under `key` in `collection`, as queries see it (the active generation).
    pub async fn get<D: DeserializeOwned>(
        &self,
        collection: &Collection<D>,
        key: &str,
    ) -> Result<Option<D>> {
        let doc = self
            .target
            .get(collection.projection(), collection.name(), key)
            .await?;
        doc.map(|doc| decode(collection, key, doc)).transpose()
    }

    /// Every document of `collection`, ordered by key.
    pub async fn list<D: DeserializeOwned>(&self, collection: &Collection<D>) -> Result<Vec<D>> {
        let docs = self
            .target
            .list(collection.projection(), collection.name())
            .await?;
        docs.into_iter()
            .map(|(key, doc)| decode(collection, &key, doc))
            .collect()
    }

    /// The document of fold `F` under `key`.
    pub async fn document<F: Fold>(&self, key: &str) -> Result<Option<F::Doc>> {
        self.get(&collection::<F>(), key).await
    }

    /// Every document of fold `F`, ordered by key.
    pub async fn documents<F: Fold>(&self) -> Result<Vec<F::Doc>> {
        self.list(&collection::<F>()).await
    }
}

fn decode<D: DeserializeOwned>(collection: &Collection<D>, key: &str, doc: Value) -> Result<D> {
    serde_json::from_value(doc).map_err(|e| document_error(collection.name(), key, e))
}

fn stopped(mut shutdown: watch::Receiver<bool>) -> Shutdown {
    Box::pin(async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    })
}

/// A [`Target`] behind a trait object: what the host needs of it.
#[async_trait]
trait HostedTarget: Send + Sync + 'static {
    fn runner(
        &self,
        store: &Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        options: &RunnerOptions,
    ) -> Box<dyn HostedRunner>;
    async fn status(&self, store: &dyn EventStore) -> Result<Vec<ProjectionStatus>>;
    async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<WaitOutcome>;
    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>>;
    async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<bool>;
    async fn register(&self, name: &str, version: u32) -> Result<()>;
    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool>;
    async fn reset(&self, name: &str) -> Result<Option<u64>>;
    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>>;
    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>>;
}

#[async_trait]
impl<T: Target> HostedTarget for T {
    fn runner(
        &self,
        store: &Arc<dyn EventStore>,
        projection: Arc<dyn Projection>,
        options: &RunnerOptions,
    ) -> Box<dyn HostedRunner> {
        Box::new(
            ProjectionRunner::new(Arc::clone(store), self.clone(), projection)
                .with_options(options.clone()),
        )
    }

    async fn status(&self, store: &dyn EventStore) -> Result<Vec<ProjectionStatus>> {
        crate::status::status(store, self).await
    }

    async fn wait_for(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<WaitOutcome> {
        crate::progress::wait_for(self, name, position, timeout).await
    }

    async fn dead_letters(&self, name: &str) -> Result<Vec<DeadLetter>> {
        Target::dead_letters(self, name).await
    }

    async fn resolve_dead_letter(
        &self,
        name: &str,
        event_id: Uuid,
        resolution: Resolution,
    ) -> Result<bool> {
        Target::resolve_dead_letter(self, name, event_id, resolution).await
    }

    async fn register(&self, name: &str, version: u32) -> Result<()> {
        Target::register(self, name, version).await.map(drop)
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<bool> {
        Target::set_paused(self, name, paused).await
    }

    async fn reset(&self, name: &str) -> Result<Option<u64>> {
        Target::reset(self, name).await
    }

    async fn get(&self, projection: &str, collection: &str, key: &str) -> Result<Option<Value>> {
        Target::get(self, projection, collection, key).await
    }

    async fn list(&self, projection: &str, collection: &str) -> Result<Vec<(String, Value)>> {
        Target::list(self, projection, collection).await
    }
}

/// A [`ProjectionRunner`] behind a trait object.
#[async_trait]
trait HostedRunner: Send + Sync {
    async fn run(&self, shutdown: Shutdown) -> Result<()>;
    async fn run_until_caught_up(&self) -> Result<u64>;
    async fn rebuild(
        &self,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
    ) -> Result<RebuildReport>;
}

#[async_trait]
impl<T: Target> HostedRunner for ProjectionRunner<T> {
    async fn run(&self, shutdown: Shutdown) -> Result<()> {
        ProjectionRunner::run(self, shutdown).await
    }

    async fn run_until_caught_up(&self) -> Result<u64> {
        Ok(ProjectionRunner::run_until_caught_up(self).await?.applied)
    }

    async fn rebuild(
        &self,
        on_progress: &mut (dyn FnMut(RebuildProgress) + Send),
    ) -> Result<RebuildReport> {
        ProjectionRunner::rebuild(self, on_progress).await
    }
}
