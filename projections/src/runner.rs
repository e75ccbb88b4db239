//! [`ProjectionRunner`]: follows the global log from a projection's checkpoint and applies
//! it in batches, each batch and its checkpoint in one transaction.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{EventStore, Position, ReadAllPage};
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::policy::{Backoff, ErrorPolicy};
use crate::projection::{ApplyError, Projection};
use crate::target::{Failure, Role, Target};

/// How a runner works.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Events per batch (and per transaction).
    pub batch_size: usize,
    /// How long a caught-up worker waits for new events before looking again.
    pub idle_wait: Duration,
    /// How often a standby worker tries to take the lease.
    pub standby_retry: Duration,
    /// What to do with an event the projection cannot handle.
    pub error_policy: ErrorPolicy,
    /// The longest wait between retries of a transient failure.
    pub max_backoff: Duration,
    /// How often an idle worker records that the log moved on without events for it, so that
    /// its status and a restart need not scan what the filter rejects.
    pub idle_checkpoint_every: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 300,
            idle_wait: Duration::from_secs(1),
            standby_retry: Duration::from_millis(500),
            error_policy: ErrorPolicy::Stop,
            max_backoff: Duration::from_secs(5),
            idle_checkpoint_every: Duration::from_secs(5),
        }
    }
}

/// How often a working runner makes sure it still holds its lease.
const LEASE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a stint of work ended.
enum Stint {
    ShutDown,
    CaughtUp(CaughtUp),
    LeaseLost,
}

/// What [`ProjectionRunner::run_until_caught_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaughtUp {
    /// The checkpoint reached: at or after every event committed when the call began.
    pub checkpoint: Position,
    /// Events applied by this call.
    pub applied: u64,
}

/// Runs one projection: the lease, the catch-up, the live loop, the error policy.
///
/// Several processes may run the same projection; the lease makes one of them the worker,
/// and the others stand by until it dies.
pub struct ProjectionRunner<T: Target> {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) target: T,
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) options: RunnerOptions,
}

impl<T: Target + Clone> Clone for ProjectionRunner<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            target: self.target.clone(),
            projection: Arc::clone(&self.projection),
            options: self.options.clone(),
        }
    }
}

impl<T: Target> ProjectionRunner<T> {
    /// A runner of `projection` over `store`, writing to `target`, with default options.
    pub fn new(store: Arc<dyn EventStore>, target: T, projection: Arc<dyn Projection>) -> Self {
        Self {
            store,
            target,
            projection,
            options: RunnerOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RunnerOptions) -> Self {
        self.options = options;
        self
    }

    /// The projection it runs.
    pub fn projection(&self) -> &Arc<dyn Projection> {
        &self.projection
    }

    /// The target it writes to.
    pub fn target(&self) -> &T {
        &self.target
    }

    /// Runs until `shutdown` completes: stands by while another worker holds the lease, works
    /// while it holds it. A batch in hand when `shutdown` completes is finished first.
    ///
    /// Returns an error when the projection stops on an event it cannot handle (policy
    /// [`ErrorPolicy::Stop`]) or is found failed; transient failures are retried.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let name = self.projection.name().to_owned();
        loop {
            let lease = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                lease = self.target.try_lease(&name) => lease,
            };
            match lease {
                Ok(Some(mut lease)) => {
                    tracing::info!(projection = %name, "took the lease");
                    match self.work(&mut lease, None, &mut shutdown).await {
                        Ok(Stint::ShutDown) => return Ok(()),
                        Ok(Stint::LeaseLost) => {
                            tracing::warn!(projection = %name, "lost the lease; standing by")
                        }
                        Ok(Stint::CaughtUp(_)) => {}
                        Err(e) if e.is_transient() => {
                            tracing::warn!(projection = %name, error = %e, "transient failure")
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(None) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(projection = %name, error = %e, "cannot reach the lease")
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(self.options.standby_retry) => {}
            }
        }
    }

    /// Takes the lease (waiting for it) and applies every event committed before the call,
    /// then returns. For tests, tools and the demo's scenario.
    pub async fn run_until_caught_up(&self) -> Result<CaughtUp> {
        let name = self.projection.name().to_owned();
        let barrier = self.store.read_barrier().await?;
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        loop {
            if let Some(mut lease) = self.target.try_lease(&name).await? {
                match self.work(&mut lease, Some(barrier), &mut never).await? {
                    Stint::CaughtUp(done) => return Ok(done),
                    Stint::LeaseLost | Stint::ShutDown => {}
                }
            }
            tokio::time::sleep(self.options.standby_retry).await;
        }
    }

    /// Works while the lease holds: live, or (with `until`) until the checkpoint reaches it.
    async fn work<S>(
        &self,
        lease: &mut T::Lease,
        until: Option<Position>,
        shutdown: &mut S,
    ) -> Result<Stint>
    where
        S: Future<Output = ()> + Unpin + Send,
    {
        let projection = &self.projection;
        let name = projection.name().to_owned();
        let mut state = self.target.register(&name, projection.version()).await?;
        if let Some(failure) = state.failure {
            return Err(failed(&name, &failure));
        }
        // A rebuild another process has under way is its business; this worker rebuilds only
        // when its own version is not the one that built the active read model.
        let outdated = state.checkpoint.version != projection.version();
        if outdated && !projection.has_side_effects() {
            tracing::info!(projection = %name, "read model is outdated: rebuilding");
            crate::rebuild::rebuild_with(self, |_| {}).await?;
            state = self.target.register(&name, projection.version()).await?;
        }
        let generation = state.active_generation;
        let mut checkpoint = state.checkpoint.position;
        let filter = projection.filter();
        let mut backoff = Backoff::new(self.options.max_backoff);
        let mut last_idle_checkpoint = Instant::now();
        let mut applied = 0u64;
        let mut lease_checked = Instant::now();

        loop {
            if futures_ready(shutdown).await {
                return Ok(Stint::ShutDown);
            }
            // The compare-and-set at every commit is what fences a stale worker; this check
            // only makes one that lost its lease stand down sooner, so once a second will do.
            if lease_checked.elapsed() >= LEASE_CHECK_EVERY {
                if !self.target.lease_held(lease).await {
                    return Ok(Stint::LeaseLost);
                }
                lease_checked = Instant::now();
            }
            let page = match self
                .store
                .read_all(checkpoint, self.options.batch_size, &filter)
                .await
            {
                Ok(page) => page,
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };

            if page.events.is_empty() {
                let idle_long =
                    last_idle_checkpoint.elapsed() >= self.options.idle_checkpoint_every;
                if page.scanned_to > checkpoint && (until.is_some() || idle_long) {
                    match self
                        .apply_page(generation, Role::Live, checkpoint, &page)
                        .await
                    {
                        Ok(to) => checkpoint = to,
                        Err(Error::LeaseLost { .. }) => return Ok(Stint::LeaseLost),
                        Err(e) => return Err(e),
                    }
                    last_idle_checkpoint = Instant::now();
                }
                if until.is_some_and(|barrier| checkpoint >= barrier) {
                    return Ok(Stint::CaughtUp(CaughtUp {
                        checkpoint,
                        applied,
                    }));
                }
                let wait = match until {
                    // Older transactions still hold events back: look again soon.
                    Some(_) => self.options.idle_wait.min(Duration::from_millis(20)),
                    None => self.options.idle_wait,
                };
                tokio::select! {
                    _ = &mut *shutdown => return Ok(Stint::ShutDown),
                    _ = self.store.wait_for_events(checkpoint, wait) => {}
                }
                continue;
            }

            let span = tracing::debug_span!("batch", projection = %name, from = %checkpoint, events = page.events.len());
            match self
                .apply_page(generation, Role::Live, checkpoint, &page)
                .instrument(span)
                .await
            {
                Ok(to) => {
                    applied += page.events.iter().filter(|e| e.position <= to).count() as u64;
                    checkpoint = to;
                    backoff.reset();
                }
                Err(Error::LeaseLost { .. }) => return Ok(Stint::LeaseLost),
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(projection = %name, error = %e, ?delay, "transient failure; retrying");
                    tokio::time::sleep(delay).await;
                    // The batch was rolled back; read the checkpoint again to be sure.
                    match self.target.checkpoint(&name, generation).await? {
                        Some(c) => checkpoint = c.position,
                        None => return Ok(Stint::LeaseLost),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies one page of events to `generation` and moves its checkpoint from `from`, in
    /// one transaction; returns the new checkpoint. Poison events go by the error policy.
    pub(crate) async fn apply_page(
        &self,
        generation: u64,
        role: Role,
        from: Position,
        page: &ReadAllPage,
    ) -> Result<Position> {
        let name = self.projection.name();
        let mut batch = self.target.begin(name, generation).await?;
        for (i, event) in page.events.iter().enumerate() {
            if let Err(error) = self.projection.apply(&mut batch, event).await {
                drop(batch); // rolls back
                return self
                    .handle_failure(generation, role, from, page, i, error)
                    .await;
            }
        }
        let last_recorded = page.events.last().map(|e| e.recorded_at);
        self.target
            .commit(batch, role, from, page.scanned_to, last_recorded)
            .await?;
        Ok(page.scanned_to)
    }

    /// Event `index` of the page failed. A transient error is returned for a retry; a poison
    /// event keeps the events before it and then stops or dead-letters, by policy.
    async fn handle_failure(
        &self,
        generation: u64,
        role: Role,
        from: Position,
        page: &ReadAllPage,
        index: usize,
        error: ApplyError,
    ) -> Result<Position> {
        let name = self.projection.name();
        match error {
            ApplyError::Transient(reason) => return Err(Error::Transient(reason)),
            ApplyError::Storage(e) if e.is_transient() => return Err(e),
            _ => {}
        }
        let event = &page.events[index];
        let failure = Failure {
            position: event.position,
            event_id: event.event_id,
            event_type: event.event.event_type.clone(),
            stream_id: event.stream_id.to_string(),
            error: error.to_string(),
        };
        tracing::error!(projection = %name, position = %event.position, event_id = %event.event_id, error = %failure.error, "cannot apply event");

        // Keep what came before the poison event: the same events, in a fresh transaction.
        let mut batch = self.target.begin(name, generation).await?;
        for earlier in &page.events[..index] {
            self.projection
                .apply(&mut batch, earlier)
                .await
                .map_err(|e| Error::Transient(format!("re-applying {}: {e}", earlier.position)))?;
        }
        let before = index.checked_sub(1).map(|i| &page.events[i]);
        match self.options.error_policy {
            ErrorPolicy::DeadLetter => {
                self.target.dead_letter(&mut batch, &failure).await?;
                self.target
                    .commit(batch, role, from, event.position, Some(event.recorded_at))
                    .await?;
                Ok(event.position)
            }
            ErrorPolicy::Stop => {
                if let Some(before) = before {
                    self.target
                        .commit(batch, role, from, before.position, Some(before.recorded_at))
                        .await?;
                }
                if role == Role::Live {
                    self.target.set_failure(name, Some(&failure)).await?;
                }
                Err(failed(name, &failure))
            }
        }
    }
}

fn failed(name: &str, failure: &Failure) -> Error {
    Error::Failed {
        projection: name.to_owned(),
        position: failure.position,
        event_id: failure.event_id,
        reason: failure.error.clone(),
    }
}

/// Whether `future` has completed, without waiting for it.
async fn futures_ready<S: Future<Output = ()> + Unpin>(future: &mut S) -> bool {
    tokio::select! {
        biased;
        _ = future => true,
        _ = std::future::ready(()) => false,
    }
}
