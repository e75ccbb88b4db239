//! [`ProcessRunner`]: the intake that files events under their instances, and the executors
//! that run the instances' reactions.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cqrs_core::EventStore;
use tokio::sync::Notify;

use super::step::{DeadlineChanges, Step};
use super::store::{Claimed, InputKind, InstanceStore, NewInput};
use super::{Deadline, Input, ProcessManager};
use crate::error::Result;
use crate::projection::{check_name, ApplyError};

/// How a [`ProcessRunner`] works.
#[derive(Clone, Debug)]
pub struct ProcessOptions {
    /// Instances handled at once by this process.
    pub executors: usize,
    /// How long a claim on an instance lasts; a reaction that runs longer is cut off (and
    /// retried) at [`ProcessOptions::reaction_timeout`].
    pub claim_ttl: Duration,
    /// The longest one reaction may take; keep it well below the claim's time-to-live.
    pub reaction_timeout: Duration,
    /// The wait before an instance's first retry; it doubles with each failure in a row.
    pub first_backoff: Duration,
    /// The longest wait between retries.
    pub max_backoff: Duration,
    /// How many events the intake reads at once.
    pub intake_batch: usize,
    /// How long the ids of done inputs are kept (so that an event filed again, by an intake
    /// that lagged that far behind, is not handled again); older ones are pruned hourly.
    pub retain_done_for: Duration,
    /// How often an idle runner looks for instances come due (retries, deadlines) or work
    /// filed by other processes.
    pub poll_every: Duration,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        Self {
            executors: 8,
            claim_ttl: Duration::from_secs(30),
            reaction_timeout: Duration::from_secs(10),
            first_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            intake_batch: 500,
            retain_done_for: Duration::from_secs(7 * 24 * 3600),
            poll_every: Duration::from_millis(500),
        }
    }
}

impl ProcessOptions {
    fn backoff(&self, attempts: u32) -> Duration {
        self.first_backoff
            .saturating_mul(1 << attempts.min(16))
            .min(self.max_backoff)
    }
}

/// What [`ProcessRunner::run_until_idle`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settled {
    /// Events filed as inputs.
    pub filed: u64,
    /// Reactions run (successful or not).
    pub reactions: u64,
}

/// How often an idle intake writes the position it has scanned to.
const IDLE_SAVE_EVERY: Duration = Duration::from_secs(1);
/// How often done inputs past their retention are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How soon the waker looks again while work is due (the executors are busy).
const BUSY_RECHECK: Duration = Duration::from_millis(20);
/// The longest an idle executor waits without being woken.
const IDLE_FALLBACK: Duration = Duration::from_secs(5);

/// Where an intake has read to, and when it last wrote it.
#[derive(Default)]
struct Cursor {
    position: Option<cqrs_core::Position>,
    saved_at: Option<Instant>,
}

/// What one intake page did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    /// Nothing new was readable.
    Nothing,
    /// The log moved on, with nothing for this manager.
    Scanned,
    /// This many events were filed.
    Filed(usize),
}

/// A reaction's task, stopped when its executor is (at shutdown) rather than left running
/// past its claim.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The message of a panic, as far as it is text.
fn panic_message(failed: tokio::task::JoinError) -> String {
    let payload = failed.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// What one executor turn did.
enum Turn {
    /// Nothing was due.
    Idle,
    /// A reaction ran.
    Reacted,
}

/// Runs a [`ProcessManager`]: intake and executors.
pub struct ProcessRunner<P: ProcessManager> {
    store: Arc<dyn EventStore>,
    instances: Arc<dyn InstanceStore>,
    manager: Arc<P>,
    options: ProcessOptions,
    work: Arc<Notify>,
}

impl<P: ProcessManager> Clone for ProcessRunner<P> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            instances: Arc::clone(&self.instances),
            manager: Arc::clone(&self.manager),
            options: self.options.clone(),
            work: Arc::clone(&self.work),
        }
    }
}

impl<P: ProcessManager> ProcessRunner<P> {
    /// A runner of `manager` over the log of `store`, keeping instances in `instances`.
    pub fn new(
        store: Arc<dyn EventStore>,
        instances: Arc<dyn InstanceStore>,
        manager: Arc<P>,
    ) -> Self {
        Self {
            store,
            instances,
            manager,
            options: ProcessOptions::default(),
            work: Arc::new(Notify::new()),
        }
    }

    /// Sets the options.
    pub fn with_options(mut self, options: ProcessOptions) -> Self {
        self.options = options;
        self
    }

    /// The manager.
    pub fn manager(&self) -> &Arc<P> {
        &self.manager
    }

    /// The instance store.
    pub fn instances(&self) -> &Arc<dyn InstanceStore> {
        &self.instances
    }

    /// Runs the intake and [`ProcessOptions::executors`] executors until `shutdown`
    /// completes. Failures of the store or of the instance store are logged and retried:
    /// the runner never gives up on its own.
    pub async fn run(&self, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
        check_name(self.manager.name())?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let intake = self.clone();
        let mut intake_stop = stopped.clone();
        tasks.spawn(async move {
            // The intake runs as a task of its own, started again (loudly) if the manager's
            // `instance_of` or `filter` panics.
            loop {
                let worker = intake.clone();
                let mut running = AbortOnDrop(tokio::spawn(async move {
                    worker.intake_forever().await;
                }));
                let ended = tokio::select! {
                    ended = &mut running.0 => ended,
                    _ = intake_stop.wait_for(|s| *s) => return,
                };
                match ended {
                    Err(failed) if failed.is_panic() => {
                        tracing::error!(
                            process = intake.manager.name(),
                            panic = %panic_message(failed),
                            "the intake panicked; starting it again"
                        );
                        tokio::time::sleep(intake.options.poll_every).await;
                    }
                    _ => return,
                }
            }
        });
        let waker = self.clone();
        let mut waker_stop = stopped.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = waker.wake_when_due() => {}
                _ = waker_stop.wait_for(|s| *s) => {}
            }
        });
        for _ in 0..self.options.executors.max(1) {
            let executor = self.clone();
            let mut executor_stop = stopped.clone();
            tasks.spawn(async move {
                tokio::select! {
                    () = executor.execute_forever() => {}
                    _ = executor_stop.wait_for(|s| *s) => {}
                }
            });
        }
        shutdown.await;
        stop.send_replace(true);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }

    /// Files everything in the log so far and runs every reaction that is due, until none
    /// is (deadlines and retries not yet due are left); for tests and the embedded demo.
    pub async fn run_until_idle(&self) -> Result<Settled> {
        check_name(self.manager.name())?;
        let mut settled = Settled::default();
        loop {
            let filed = self.intake_to_barrier().await?;
            settled.filed += filed;
            let mut reacted = 0;
            while let Turn::Reacted = self.execute_once().await? {
                reacted += 1;
            }
            settled.reactions += reacted;
            if filed == 0 && reacted == 0 {
                return Ok(settled);
            }
        }
    }

    async fn intake_forever(&self) {
        let mut cursor = Cursor::default();
        loop {
            match self.intake_page(&mut cursor).await {
                Ok(Page::Filed(n)) if n > 0 => self.work.notify_waiters(),
                Ok(_) => {
                    let after = cursor.position.unwrap_or_default();
                    let wait = self.options.poll_every.max(Duration::from_millis(500));
                    if let Err(error) = self.store.wait_for_events(after, wait).await {
                        tracing::warn!(process = self.manager.name(), %error, "waiting for events failed");
                        tokio::time::sleep(self.options.poll_every).await;
                    }
                }
                Err(error) => {
                    tracing::warn!(process = self.manager.name(), %error, "intake failed; retrying");
                    cursor = Cursor::default();
                    tokio::time::sleep(self.options.poll_every).await;
                }
            }
        }
    }

    /// Files every event committed before the call (waiting, where the store shows events
    /// only once older transactions end, until they can be read); returns how many.
    async fn intake_to_barrier(&self) -> Result<u64> {
        let barrier = self.store.read_barrier().await?;
        let mut cursor = Cursor::default();
        let mut filed = 0;
        loop {
            let page = self.intake_page(&mut cursor).await?;
            if let Page::Filed(n) = page {
                filed += n as u64;
            }
            let at = cursor.position.unwrap_or_default();
            if at >= barrier {
                if page == Page::Scanned {
                    // Keep what was scanned past, so a restart does not read it again.
                    self.instances.enqueue(self.manager.name(), &[], at).await?;
                }
                return Ok(filed);
            }
            if page == Page::Nothing {
                self.store
                    .wait_for_events(at, self.options.poll_every)
                    .await?;
            }
        }
    }

    /// Reads one page after the intake position and files its events. Where a page holds
    /// nothing for this manager, the position moves on in memory and is written at most
    /// once per [`IDLE_SAVE_EVERY`], so an idle intake costs next to nothing.
    async fn intake_page(&self, cursor: &mut Cursor) -> Result<Page> {
        let name = self.manager.name();
        let after = match cursor.position {
            Some(p) => p,
            None => self.instances.intake_position(name).await?,
        };
        cursor.position = Some(after);
        let page = self
            .store
            .read_all(
                after,
                self.options.intake_batch.max(1),
                &self.manager.filter(),
            )
            .await?;
        if page.scanned_to <= after {
            return Ok(Page::Nothing);
        }
        let inputs: Vec<NewInput> = page
            .events
            .iter()
            .filter_map(|event| {
                self.manager.instance_of(event).map(|instance| NewInput {
                    instance,
                    event_id: event.event_id,
                })
            })
            .collect();
        cursor.position = Some(page.scanned_to);
        if inputs.is_empty() {
            if cursor
                .saved_at
                .is_none_or(|at| at.elapsed() >= IDLE_SAVE_EVERY)
            {
                self.instances.enqueue(name, &[], page.scanned_to).await?;
                cursor.saved_at = Some(Instant::now());
            }
            return Ok(Page::Scanned);
        }
        self.instances
            .enqueue(name, &inputs, page.scanned_to)
            .await?;
        cursor.saved_at = Some(Instant::now());
        Ok(Page::Filed(inputs.len()))
    }

    /// Wakes the executors when an instance is due (a retry, a deadline, work filed by
    /// another process): one query per wait, whatever the number of executors.
    async fn wake_when_due(&self) {
        let mut pruned_at: Option<Instant> = None;
        loop {
            if pruned_at.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                self.prune().await;
                pruned_at = Some(Instant::now());
            }
            let wait = match self.instances.next_due_in(self.manager.name()).await {
                Ok(Some(due)) if due.is_zero() => {
                    self.work.notify_waiters();
                    BUSY_RECHECK
                }
                Ok(Some(due)) => due.min(self.options.poll_every),
                Ok(None) => self.options.poll_every,
                Err(error) => {
                    tracing::warn!(process = self.manager.name(), %error, "looking for due work failed");
                    self.options.poll_every
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Forgets done inputs older than [`ProcessOptions::retain_done_for`].
    async fn prune(&self) {
        let keep = chrono::Duration::from_std(self.options.retain_done_for)
            .unwrap_or(chrono::Duration::MAX);
        let Some(before) = chrono::Utc::now().checked_sub_signed(keep) else {
            return;
        };
        match self.instances.prune_done(self.manager.name(), before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                process = self.manager.name(),
                pruned = n,
                "done inputs pruned"
            ),
            Err(error) => tracing::warn!(process = self.manager.name(), %error, "pruning failed"),
        }
    }

    async fn execute_forever(&self) {
        loop {
            let notified = self.work.notified();
            match self.execute_once().await {
                Ok(Turn::Reacted) => continue,
                // Woken by the intake (new inputs) or the waker (something came due).
                Ok(Turn::Idle) => {
                    let _ = tokio::time::timeout(IDLE_FALLBACK, notified).await;
                }
                Err(error) => {
                    tracing::warn!(process = self.manager.name(), %error, "executor failed; retrying");
                    tokio::time::sleep(self.options.poll_every).await;
                }
            }
        }
    }

    /// Claims one due instance and runs its reaction.
    async fn execute_once(&self) -> Result<Turn> {
        let name = self.manager.name();
        let claimed_at = Instant::now();
        let Some(claimed) = self.instances.claim(name, self.options.claim_ttl).await? else {
            return Ok(Turn::Idle);
        };
        let input = match self.input_of(&claimed).await {
            Ok(Ok(input)) => input,
            Ok(Err(reason)) => {
                self.instances.park(name, &claimed, &reason).await?;
                return Ok(Turn::Reacted);
            }
            Err(error) => {
                let delay = self.options.backoff(claimed.attempts);
                let error = format!("reading the input failed: {error}");
                let changes = DeadlineChanges::default();
                self.instances
                    .retry_later(name, &claimed, &error, delay, &changes)
                    .await?;
                return Ok(Turn::Reacted);
            }
        };
        let mut state: P::State = if claimed.state.is_null() {
            P::State::default()
        } else {
            match serde_json::from_value(claimed.state.clone()) {
                Ok(state) => state,
                Err(e) => {
                    let reason = format!("the instance's state does not decode: {e}");
                    self.instances.park(name, &claimed, &reason).await?;
                    return Ok(Turn::Reacted);
                }
            }
        };
        // The claim is reckoned from before it was asked for: never longer than the store's.
        let mut step = Step::new(
            &claimed.instance,
            claimed.input.id,
            claimed.epoch,
            claimed_at
                + self
                    .options
                    .claim_ttl
                    .saturating_sub(Duration::from_millis(500)),
        );
        // The reaction runs as a task of its own: a panic in it parks the instance instead of
        // ending this executor, and one that outruns its time is stopped.
        let manager = Arc::clone(&self.manager);
        let scheduled = step.shared_changes();
        let span = reaction_span(name, &claimed.instance, &input);
        let mut task = AbortOnDrop(tokio::spawn(tracing::Instrument::instrument(
            async move {
                let outcome = manager.react(&mut state, &input, &mut step).await;
                (outcome, state)
            },
            span.clone(),
        )));
        let (reaction, state) =
            match tokio::time::timeout(self.options.reaction_timeout, &mut task.0).await {
                Ok(Ok((outcome, state))) => (outcome, Some(state)),
                Ok(Err(failed)) if failed.is_panic() => {
                    let reason = format!("the reaction panicked: {}", panic_message(failed));
                    (Err(ApplyError::poison(reason)), None)
                }
                Ok(Err(failed)) => {
                    let reason = format!("the reaction was cancelled: {failed}");
                    (Err(ApplyError::transient(reason)), None)
                }
                Err(_) => {
                    task.0.abort();
                    let late = ApplyError::transient(format!(
                        "the reaction took longer than {:?}",
                        self.options.reaction_timeout
                    ));
                    (Err(late), None)
                }
            };
        // What the reaction scheduled before it ended, however it ended.
        let changes = scheduled
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let kept = match reaction {
            Ok(()) => match serde_json::to_value(&state) {
                Ok(state) => {
                    self.instances
                        .complete(name, &claimed, state, &changes)
                        .await?
                }
                Err(e) => {
                    let reason = format!("the instance's state does not encode: {e}");
                    self.instances.park(name, &claimed, &reason).await?
                }
            },
            Err(ApplyError::Poison(reason)) => {
                let reason = cqrs_core::error::chain(reason.as_ref());
                span.in_scope(|| tracing::warn!(process = name, instance = %claimed.instance, %reason, "instance parked"));
                self.instances.park(name, &claimed, &reason).await?
            }
            Err(error) => {
                let delay = self.options.backoff(claimed.attempts);
                let error = cqrs_core::error::chain(&error);
                span.in_scope(|| tracing::debug!(process = name, instance = %claimed.instance, %error, ?delay, "instance retries"));
                self.instances
                    .retry_later(name, &claimed, &error, delay, &changes)
                    .await?
            }
        };
        if !kept {
            tracing::info!(process = name, instance = %claimed.instance, epoch = claimed.epoch,
                "the claim was taken over; the reaction's writes were refused");
        }
        Ok(Turn::Reacted)
    }

    /// The claimed input: the event read from the store, or the deadline. The inner error
    /// is a reason to park the instance (the event is gone); the outer one, to retry.
    async fn input_of(
        &self,
        claimed: &Claimed,
    ) -> cqrs_core::Result<std::result::Result<Input, String>> {
        Ok(match &claimed.input.kind {
            InputKind::Deadline { name, due_at } => Ok(Input::Deadline(Deadline {
                id: claimed.input.id,
                name: name.clone(),
                due_at: *due_at,
            })),
            InputKind::Event => match self.store.read_event(claimed.input.id).await? {
                Some(event) => Ok(Input::Event(event)),
                None => Err(format!("event {} is not in the store", claimed.input.id)),
            },
        })
    }
}

/// The span a reaction runs in: the process, the instance, the input, and for an event the
/// trace, correlation and causation it carries (so that the step shows in the trace of the
/// request that led to it).
fn reaction_span(process: &str, instance: &str, input: &Input) -> tracing::Span {
    let span = tracing::info_span!(
        "process_step",
        process,
        instance,
        input = %input.id(),
        trace_id = tracing::field::Empty,
        correlation_id = tracing::field::Empty,
        causation_id = tracing::field::Empty,
    );
    if let Input::Event(event) = input {
        cqrs_core::trace::record_on(&span, &event.metadata);
    }
    span
}
