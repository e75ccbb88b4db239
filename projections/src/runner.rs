//! [`ProjectionRunner`]: follows the global log from a projection's checkpoint and applies
//! it in batches, each batch and its checkpoint in one transaction.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::{EventFilter, EventStore, Position, ReadAllPage, RecordedEvent};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::lease::{Lease, LeaseOptions, LeaseToken};
use crate::policy::{Backoff, ErrorPolicy};
use crate::projection::{ApplyError, Projection};
use crate::target::{Failure, Role, StoredState, Target};

/// How a runner works.
#[derive(Clone, Debug)]
pub struct RunnerOptions {
    /// Events per batch (and per transaction).
    pub batch_size: usize,
    /// Events per batch for a projection with side effects. Its batch's transaction waits
    /// while the handler sends commands or calls services, and a session idle in its
    /// transaction longer than the batch timeout is ended by the server (the guard against
    /// frozen workers), so such a projection takes small batches: one event by default.
    pub effect_batch_size: usize,
    /// How long a caught-up worker waits for new events before looking again (less when
    /// its idle checkpoint, see `idle_checkpoint_every`, comes due sooner).
    pub idle_wait: Duration,
    /// How often a standby worker tries to take the lease.
    pub standby_retry: Duration,
    /// What to do with an event the projection cannot handle.
    pub error_policy: ErrorPolicy,
    /// The longest wait between retries of a transient failure.
    pub max_backoff: Duration,
    /// How often an idle worker records that the log moved on without events for it, so that
    /// its status, a restart and waiters in other processes need not scan what the filter
    /// rejects.
    pub idle_checkpoint_every: Duration,
    /// The lease's time-to-live and renewal period.
    pub lease: LeaseOptions,
    /// How often a stopped projection (an event it cannot handle) looks whether an operator
    /// has retried or skipped the event.
    pub failed_recheck: Duration,
    /// How often a paused projection's worker (which keeps the lease) looks whether an
    /// operator has resumed it.
    pub paused_recheck: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 300,
            effect_batch_size: 1,
            idle_wait: Duration::from_secs(1),
            standby_retry: Duration::from_millis(500),
            error_policy: ErrorPolicy::Stop,
            max_backoff: Duration::from_secs(5),
            idle_checkpoint_every: Duration::from_secs(1),
            lease: LeaseOptions::default(),
            failed_recheck: Duration::from_secs(2),
            paused_recheck: Duration::from_millis(500),
        }
    }
}

/// How often an idle worker looks for dead letters an operator asked to retry.
const RETRY_CHECK_EVERY: Duration = Duration::from_secs(5);

/// Why a stint of work ended.
enum Stint {
    ShutDown,
    CaughtUp(CaughtUp),
    LeaseLost,
    /// The projection stopped at an event it cannot handle (stop policy).
    Stopped(Failure),
    /// The active read model was built by a newer version of the projection: this worker is
    /// the old code of a rolling deploy and leaves the projection to the new one.
    Superseded {
        active_version: u32,
    },
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
/// and the others stand by until it dies or stops renewing. A standby whose projection
/// version is newer than the active read model's rebuilds it meanwhile (a rolling deploy);
/// one whose version is older leaves the projection alone.
pub struct ProjectionRunner<T: Target> {
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) target: T,
    pub(crate) projection: Arc<dyn Projection>,
    pub(crate) options: RunnerOptions,
}

impl<T: Target> Clone for ProjectionRunner<T> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            target: self.target.clone(),
            projection: Arc::clone(&self.projection),
            options: self.options.clone(),
        }
    }
}

/// Where a worker stands in one generation.
struct Cursor {
    generation: u64,
    /// Committed: every matching event up to it is in the read model.
    checkpoint: Position,
    /// Read: no matching event lies between the checkpoint and it (the filter rejected
    /// everything in between). Idle workers wait on it, not on the checkpoint.
    scanned: Position,
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
    /// while it holds it, and gives the lease up on the way out. A batch in hand when
    /// `shutdown` completes is finished first.
    ///
    /// A projection stopped at an event it cannot handle (policy [`ErrorPolicy::Stop`]) stays
    /// stopped, checking every [`RunnerOptions::failed_recheck`] whether an operator retried
    /// or skipped the event ([`dead_letters`](crate::dead_letters)); transient failures are
    /// retried. Returns an error only for what no retry can mend (an invalid name).
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        tokio::pin!(shutdown);
        let name = self.projection.name().to_owned();
        let mut reported_failure = None;
        loop {
            let mut pause = self.options.standby_retry;
            let lease = tokio::select! {
                _ = &mut shutdown => return Ok(()),
                lease = Lease::acquire(&self.target, &name, self.options.lease) => lease,
            };
            match lease {
                Ok(Some(lease)) => {
                    tracing::info!(projection = %name, epoch = lease.token().epoch(), "took the lease");
                    self.target.progress().working(&name, true);
                    let stint = self.work(&lease, None, &mut shutdown).await;
                    self.target.progress().working(&name, false);
                    lease.release(&self.target).await;
                    match stint {
                        Ok(Stint::ShutDown) => return Ok(()),
                        Ok(Stint::LeaseLost) => {
                            tracing::warn!(projection = %name, "lost the lease; standing by")
                        }
                        Ok(Stint::CaughtUp(_)) => {}
                        Ok(Stint::Stopped(failure)) => {
                            if reported_failure.as_ref() != Some(&failure) {
                                tracing::error!(projection = %name, position = %failure.position, event_id = %failure.event_id, error = %failure.error, "stopped at an event it cannot handle; retry or skip it to go on");
                                reported_failure = Some(failure);
                            }
                            pause = self.options.failed_recheck;
                        }
                        Ok(Stint::Superseded { active_version }) => {
                            tracing::info!(projection = %name, version = self.projection.version(), active_version, "a newer version runs this projection; standing by");
                            pause = self.options.failed_recheck;
                        }
                        Err(e) if e.is_transient() => {
                            tracing::warn!(projection = %name, error = %e, "transient failure")
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(None) => {
                    if let Err(e) = self.rebuild_if_newer().await {
                        tracing::warn!(projection = %name, error = %e, "cannot rebuild while standing by");
                    }
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!(projection = %name, error = %e, "cannot reach the lease")
                }
                Err(e) => return Err(e),
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Takes the lease (waiting for it) and applies every event committed before the call,
    /// then returns. For tests, tools and the demo's scenario.
    ///
    /// Errors with [`Error::Failed`] when the projection is stopped at an event it cannot
    /// handle, with [`Error::Superseded`] when a newer version of it runs, and with
    /// [`Error::Paused`] when an operator has paused it.
    pub async fn run_until_caught_up(&self) -> Result<CaughtUp> {
        let name = self.projection.name().to_owned();
        if self
            .target
            .state(&name)
            .await?
            .is_some_and(|s| s.paused_at.is_some())
        {
            return Err(Error::Paused(name));
        }
        let barrier = self.store.read_barrier().await?;
        let never = std::future::pending::<()>();
        tokio::pin!(never);
        loop {
            if let Some(lease) = Lease::acquire(&self.target, &name, self.options.lease).await? {
                let stint = self.work(&lease, Some(barrier), &mut never).await;
                lease.release(&self.target).await;
                match stint? {
                    Stint::CaughtUp(done) => return Ok(done),
                    Stint::Stopped(failure) => return Err(failed(&name, &failure)),
                    Stint::Superseded { active_version } => {
                        return Err(Error::Superseded {
                            projection: name,
                            version: self.projection.version(),
                            active_version,
                        })
                    }
                    Stint::LeaseLost | Stint::ShutDown => {}
                }
            }
            tokio::time::sleep(self.options.standby_retry).await;
        }
    }

    /// A standby's part in a rolling deploy: when its version is newer than the active read
    /// model's, it rebuilds the read model (the live worker, older, moves over or stands by
    /// once it is switched in).
    async fn rebuild_if_newer(&self) -> Result<()> {
        if self.projection.has_side_effects() {
            return Ok(());
        }
        let name = self.projection.name();
        let Some(state) = self.target.state(name).await? else {
            return Ok(());
        };
        if state.checkpoint.version < self.projection.version() {
            tracing::info!(projection = %name, "the active read model is of an older version: rebuilding it while standing by");
            crate::rebuild::rebuild_with(self, |_| {}).await?;
        }
        Ok(())
    }

    /// Works while the lease holds: live, or (with `until`) until the checkpoint reaches it.
    async fn work<S>(
        &self,
        lease: &Lease,
        until: Option<Position>,
        shutdown: &mut S,
    ) -> Result<Stint>
    where
        S: Future<Output = ()> + Unpin + Send,
    {
        let name = self.projection.name().to_owned();
        let filter = self.projection.filter();
        let token = lease.token();
        let mut applied = 0u64;
        // Each round works one generation; a rebuild switching a new one in starts the next.
        loop {
            let state = self
                .target
                .register(&name, self.projection.version())
                .await?;
            let state = match self.prepare(state).await? {
                Ok(state) => state,
                Err(stint) => return Ok(stint),
            };
            let mut cursor = Cursor {
                generation: state.active_generation,
                checkpoint: state.checkpoint.position,
                scanned: state.checkpoint.position,
            };
            self.target
                .progress()
                .reached(&name, cursor.generation, cursor.checkpoint);
            match self
                .follow(&mut cursor, token, until, &filter, &mut applied, shutdown)
                .await
            {
                Err(Error::GenerationMoved { active, .. }) => {
                    tracing::info!(projection = %name, from = cursor.generation, to = active, "a new generation was switched in (a rebuild or a reset); moving over");
                }
                // The caller of `run_until_caught_up` learns of the pause; a worker sits it out.
                Err(Error::Paused(_)) if until.is_none() => {
                    if let Some(stint) = self.sit_out_pause(token, shutdown).await? {
                        return Ok(stint);
                    }
                }
                other => return other,
            }
        }
    }

    /// Keeps the lease while an operator has paused the projection, looking every
    /// [`RunnerOptions::paused_recheck`] whether it was resumed. `None` once it was (the
    /// worker goes on from its checkpoint); the stint's end if the worker must stop first.
    async fn sit_out_pause<S>(&self, token: &LeaseToken, shutdown: &mut S) -> Result<Option<Stint>>
    where
        S: Future<Output = ()> + Unpin + Send,
    {
        let name = self.projection.name();
        tracing::info!(projection = %name, "paused by an operator; holding the lease until resumed");
        loop {
            tokio::select! {
                _ = &mut *shutdown => return Ok(Some(Stint::ShutDown)),
                _ = tokio::time::sleep(self.options.paused_recheck) => {}
            }
            if !token.is_live() {
                return Ok(Some(Stint::LeaseLost));
            }
            match self.target.state(name).await {
                Ok(Some(state)) if state.paused_at.is_some() => {}
                Ok(_) => break,
                Err(e) if e.is_transient() => {
                    tracing::warn!(projection = %name, error = %e, "cannot read whether it was resumed")
                }
                Err(e) => return Err(e),
            }
        }
        tracing::info!(projection = %name, "resumed");
        Ok(None)
    }

    /// Checks the state before work: superseded, outdated (then rebuilt first), or stopped.
    /// A rebuild stopped at an event it cannot handle stops the stint like a live failure:
    /// the runner stands by until an operator retries or skips the event.
    async fn prepare(&self, state: StoredState) -> Result<std::result::Result<StoredState, Stint>> {
        let name = self.projection.name();
        let version = self.projection.version();
        let active_version = state.checkpoint.version;
        if active_version > version {
            return Ok(Err(Stint::Superseded { active_version }));
        }
        let state = if active_version < version && !self.projection.has_side_effects() {
            tracing::info!(projection = %name, "read model is outdated: rebuilding");
            match crate::rebuild::rebuild_with(self, |_| {}).await {
                // Looked at again: a reset meanwhile may have started an older version's
                // generation over, which must be rebuilt in turn.
                Ok(_) => {
                    let state = self.target.register(name, version).await?;
                    return Box::pin(self.prepare(state)).await;
                }
                Err(Error::Failed { .. }) => {
                    let failure = self
                        .target
                        .state(name)
                        .await?
                        .and_then(|s| s.rebuilding.and_then(|(_, c)| c.failure));
                    return match failure {
                        Some(failure) => Ok(Err(Stint::Stopped(failure))),
                        None => Ok(Err(Stint::LeaseLost)),
                    };
                }
                Err(e) => return Err(e),
            }
        } else {
            state
        };
        if let Some(failure) = state.failure() {
            self.target.progress().failed(name, failure);
            return Ok(Err(Stint::Stopped(failure.clone())));
        }
        self.target.retire_generations(name).await?;
        Ok(Ok(state))
    }

    /// Follows the log in one generation until the stint ends.
    async fn follow<S>(
        &self,
        cursor: &mut Cursor,
        token: &LeaseToken,
        until: Option<Position>,
        filter: &EventFilter,
        applied: &mut u64,
        shutdown: &mut S,
    ) -> Result<Stint>
    where
        S: Future<Output = ()> + Unpin + Send,
    {
        let name = self.projection.name();
        let batch_size = if self.projection.has_side_effects() {
            self.options.effect_batch_size
        } else {
            self.options.batch_size
        };
        let mut backoff = Backoff::new(self.options.max_backoff);
        let mut last_idle_checkpoint = Instant::now();
        let mut last_retry_check: Option<Instant> = None;
        // The next page, read while this one is applied when this one was full (more waits).
        let mut ahead: Option<(Position, JoinHandle<cqrs_core::Result<ReadAllPage>>)> = None;
        loop {
            if futures_ready(shutdown).await {
                return Ok(Stint::ShutDown);
            }
            if !token.is_live() {
                return Ok(Stint::LeaseLost);
            }
            if last_retry_check.is_none_or(|at| at.elapsed() >= RETRY_CHECK_EVERY) {
                match self.retry_asked(cursor, token).await {
                    Err(Error::LeaseLost { .. }) => return Ok(Stint::LeaseLost),
                    other => other?,
                }
                last_retry_check = Some(Instant::now());
            }
            let read = match ahead.take() {
                Some((from, task)) if from == cursor.scanned => match task.await {
                    Ok(read) => read,
                    Err(_) => self.store.read_all(from, batch_size.max(1), filter).await,
                },
                stale => {
                    if let Some((_, task)) = stale {
                        task.abort();
                    }
                    self.store
                        .read_all(cursor.scanned, batch_size.max(1), filter)
                        .await
                }
            };
            let page = match read {
                Ok(page) => page,
                Err(e) if e.is_retryable() => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };

            if page.events.is_empty() {
                cursor.scanned = cursor.scanned.max(page.scanned_to);
                self.target
                    .progress()
                    .reached(name, cursor.generation, cursor.scanned);
                let idle_long =
                    last_idle_checkpoint.elapsed() >= self.options.idle_checkpoint_every;
                if cursor.scanned > cursor.checkpoint && (until.is_some() || idle_long) {
                    match self.commit_idle(cursor, token).await {
                        Ok(()) => last_idle_checkpoint = Instant::now(),
                        Err(Error::LeaseLost { .. }) => return Ok(Stint::LeaseLost),
                        Err(e) => return Err(e),
                    }
                } else if idle_long {
                    // With nothing to commit, only a look tells an idle worker that a reset
                    // started its read model over.
                    self.check_generation(cursor.generation).await?;
                    last_idle_checkpoint = Instant::now();
                }
                if let Some(barrier) = until {
                    if cursor.checkpoint >= barrier {
                        return Ok(Stint::CaughtUp(CaughtUp {
                            checkpoint: cursor.checkpoint,
                            applied: *applied,
                        }));
                    }
                }
                let wait = match until {
                    // Older transactions still hold events back: look again soon.
                    Some(_) => self.options.idle_wait.min(Duration::from_millis(20)),
                    // The log moved on without events for it: back when the idle checkpoint
                    // is due, so that it is recorded every `idle_checkpoint_every`, whatever
                    // woke the worker in between.
                    None if cursor.scanned > cursor.checkpoint => self.options.idle_wait.min(
                        self.options
                            .idle_checkpoint_every
                            .saturating_sub(last_idle_checkpoint.elapsed()),
                    ),
                    None => self.options.idle_wait,
                };
                tokio::select! {
                    _ = &mut *shutdown => return Ok(Stint::ShutDown),
                    woke = self.store.wait_for_events(cursor.scanned, wait) => {
                        if let Err(e) = woke {
                            if !e.is_retryable() {
                                return Err(e.into());
                            }
                            tokio::time::sleep(backoff.next_delay()).await;
                        }
                    }
                }
                continue;
            }

            if page.events.len() >= batch_size.max(1) {
                let (store, filter, from) =
                    (Arc::clone(&self.store), filter.clone(), page.scanned_to);
                ahead = Some((
                    from,
                    tokio::spawn(
                        async move { store.read_all(from, batch_size.max(1), &filter).await },
                    ),
                ));
            }
            let span = tracing::debug_span!("batch", projection = %name, from = %cursor.checkpoint, events = page.events.len());
            match self
                .apply_page(
                    cursor.generation,
                    Role::Live,
                    Some(token),
                    cursor.checkpoint,
                    &page,
                )
                .instrument(span)
                .await
            {
                Ok(to) => {
                    *applied += page.events.iter().filter(|e| e.position <= to).count() as u64;
                    cursor.checkpoint = to;
                    cursor.scanned = to;
                    self.target.progress().reached(name, cursor.generation, to);
                    backoff.reset();
                }
                Err(Error::LeaseLost { .. }) => return Ok(Stint::LeaseLost),
                Err(Error::Failed { .. }) => {
                    let failure = self
                        .target
                        .checkpoint(name, cursor.generation)
                        .await?
                        .and_then(|c| c.failure);
                    match failure {
                        Some(failure) => return Ok(Stint::Stopped(failure)),
                        None => return Ok(Stint::LeaseLost),
                    }
                }
                Err(e) if e.is_transient() => {
                    let delay = backoff.next_delay();
                    tracing::warn!(projection = %name, error = %e, ?delay, "transient failure; retrying");
                    tokio::time::sleep(delay).await;
                    // The batch was rolled back; read the checkpoint again to be sure.
                    match self.target.checkpoint(name, cursor.generation).await? {
                        Some(c) => {
                            cursor.checkpoint = c.position;
                            cursor.scanned = c.position;
                        }
                        None => return Ok(Stint::LeaseLost),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// [`Error::GenerationMoved`] when `generation` is no longer the active one.
    async fn check_generation(&self, generation: u64) -> Result<()> {
        let name = self.projection.name();
        match self.target.state(name).await? {
            Some(state) if state.active_generation != generation => Err(Error::GenerationMoved {
                projection: name.to_owned(),
                generation,
                active: state.active_generation,
            }),
            _ => Ok(()),
        }
    }

    /// Records that the log moved on without events for this projection.
    async fn commit_idle(&self, cursor: &mut Cursor, token: &LeaseToken) -> Result<()> {
        let name = self.projection.name();
        let batch = self
            .target
            .begin(name, cursor.generation, Role::Live, Some(token.clone()))
            .await?;
        self.target
            .commit(batch, cursor.checkpoint, cursor.scanned, None)
            .await?;
        cursor.checkpoint = cursor.scanned;
        Ok(())
    }

    /// Applies again the parked dead letters an operator asked to retry, each in a batch of
    /// its own that leaves the checkpoint where it is. One that fails again is parked again.
    async fn retry_asked(&self, cursor: &Cursor, token: &LeaseToken) -> Result<()> {
        let name = self.projection.name();
        for letter in self.target.retries_asked(name, 100).await? {
            let at = letter.failure.position;
            let before = Position::new(at.commit, at.sequence.saturating_sub(1));
            let page = self.store.read_all(before, 1, &EventFilter::all()).await?;
            let Some(event) = page
                .events
                .first()
                .filter(|e| e.event_id == letter.failure.event_id)
            else {
                tracing::warn!(projection = %name, event_id = %letter.failure.event_id, "the dead letter's event is not in the log");
                continue;
            };
            let mut batch = self
                .target
                .begin(name, cursor.generation, Role::Live, Some(token.clone()))
                .await?;
            match self.projection.apply(&mut batch, event).await {
                Ok(()) => {
                    self.target.retried(&mut batch, event.event_id).await?;
                    tracing::info!(projection = %name, event_id = %event.event_id, "dead letter retried");
                }
                Err(error) => {
                    drop(batch);
                    batch = self
                        .target
                        .begin(name, cursor.generation, Role::Live, Some(token.clone()))
                        .await?;
                    let failure = failure_of(event, &error);
                    self.target.dead_letter(&mut batch, &failure, false).await?;
                }
            }
            self.target
                .commit(batch, cursor.checkpoint, cursor.checkpoint, None)
                .await?;
        }
        Ok(())
    }

    /// Applies one page of events to `generation` and moves its checkpoint from `from`, in
    /// one transaction; returns the new checkpoint. Poison events go by the error policy.
    pub(crate) async fn apply_page(
        &self,
        generation: u64,
        role: Role,
        lease: Option<&LeaseToken>,
        from: Position,
        page: &ReadAllPage,
    ) -> Result<Position> {
        let name = self.projection.name();
        let mut batch = self
            .target
            .begin(name, generation, role, lease.cloned())
            .await?;
        if let Err((i, error)) = self.apply_all(&mut batch, &page.events).await {
            drop(batch); // rolls back
            return self
                .handle_failure(generation, role, lease, from, page, i, error)
                .await;
        }
        let last_recorded = page.events.last().map(|e| e.recorded_at);
        self.target
            .commit(batch, from, page.scanned_to, last_recorded)
            .await?;
        Ok(page.scanned_to)
    }

    /// Applies `events` in order to `batch`; on a failure, which one and why.
    pub(crate) async fn apply_all(
        &self,
        batch: &mut T::Batch,
        events: &[RecordedEvent],
    ) -> std::result::Result<(), (usize, ApplyError)> {
        if events.is_empty() {
            return Ok(());
        }
        self.projection.apply_batch(batch, events).await
    }

    /// Event `index` of the page failed. A transient error is returned for a retry; a poison
    /// event keeps the events before it and then stops or dead-letters, by policy.
    #[allow(clippy::too_many_arguments)]
    async fn handle_failure(
        &self,
        generation: u64,
        role: Role,
        lease: Option<&LeaseToken>,
        from: Position,
        page: &ReadAllPage,
        index: usize,
        error: ApplyError,
    ) -> Result<Position> {
        let name = self.projection.name();
        match error {
            ApplyError::Transient(reason) => return Err(Error::Transient(reason)),
            ApplyError::Storage(e) if e.is_transient() => return Err(e),
            ApplyError::Storage(e @ (Error::GenerationMoved { .. } | Error::LeaseLost { .. })) => {
                return Err(e)
            }
            _ => {}
        }
        let event = &page.events[index];
        let failure = failure_of(event, &error);
        tracing::error!(projection = %name, generation, position = %event.position, event_id = %event.event_id, error = %failure.error, "cannot apply event");

        // Keep what came before the poison event: the same events, in a fresh transaction.
        let mut batch = self
            .target
            .begin(name, generation, role, lease.cloned())
            .await?;
        if let Err((i, e)) = self.apply_all(&mut batch, &page.events[..index]).await {
            if matches!(e, ApplyError::Poison(_)) {
                // An earlier event fails for good now (a relay meets a refusal a wave had
                // not reached): it is the one to stop at or set aside.
                drop(batch);
                return Box::pin(self.handle_failure(generation, role, lease, from, page, i, e))
                    .await;
            }
            return Err(Error::Transient(
                format!("re-applying {}: {e}", page.events[i].position).into(),
            ));
        }
        match self.options.error_policy {
            ErrorPolicy::DeadLetter => {
                self.target.dead_letter(&mut batch, &failure, false).await?;
                self.target
                    .commit(batch, from, event.position, Some(event.recorded_at))
                    .await?;
                Ok(event.position)
            }
            ErrorPolicy::Stop => {
                // The failure is this generation's (the live one's, or the one a rebuild
                // builds): recorded with the events before it by the same fenced commit, so a
                // deposed worker cannot stop the projection.
                let before = index
                    .checked_sub(1)
                    .map_or(from, |i| page.events[i].position);
                let recorded_at = index.checked_sub(1).map(|i| page.events[i].recorded_at);
                self.target.dead_letter(&mut batch, &failure, true).await?;
                self.target.commit(batch, from, before, recorded_at).await?;
                if role == Role::Live {
                    self.target.progress().failed(name, &failure);
                }
                Err(failed(name, &failure))
            }
        }
    }
}

pub(crate) fn failure_of(event: &RecordedEvent, error: &ApplyError) -> Failure {
    Failure {
        position: event.position,
        event_id: event.event_id,
        event_type: event.event.event_type.clone(),
        stream_id: event.stream_id.to_string(),
        error: cqrs_core::error::chain(error),
    }
}

pub(crate) fn failed(name: &str, failure: &Failure) -> Error {
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
