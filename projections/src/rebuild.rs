//! Rebuild by replay: a fresh generation of the read model, built from the start of the log
//! while the current one keeps serving queries, then switched in atomically.

use std::time::{Duration, Instant};

use cqrs_core::Position;

use crate::error::{Error, Result};
use crate::policy::ErrorPolicy;
use crate::projection::ApplyError;
use crate::runner::ProjectionRunner;
use crate::target::{Role, Target};

/// How far a rebuild has got.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildProgress {
    /// Events applied so far by this run of the rebuild.
    pub applied: u64,
    /// Where the rebuild stands in the log, by event sequence.
    pub done: u64,
    /// The head of the log when the rebuild started, by event sequence (the work to do).
    pub total: u64,
    /// Events applied per second so far.
    pub events_per_sec: f64,
    /// The estimated time left.
    pub eta: Option<Duration>,
}

/// What a finished rebuild did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RebuildReport {
    /// The generation now active.
    pub generation: u64,
    /// Events applied by this run.
    pub applied: u64,
    /// The new generation's checkpoint at the switch.
    pub checkpoint: Position,
    /// How long it took.
    pub elapsed: Duration,
}

impl<T: Target> ProjectionRunner<T> {
    /// Rebuilds the projection's read model by replaying the log into a fresh generation,
    /// then makes queries read it and deletes the old one. Queries keep reading the old
    /// generation until the switch.
    ///
    /// An interrupted rebuild resumes where it stopped when started again (its generation
    /// keeps its own checkpoint, moved with its documents in each batch). The switch is a
    /// last batch that keeps the live worker out while it applies what the live generation
    /// already has, so the read model never moves back; a live worker of the same
    /// projection, here or elsewhere, finds its generation switched out at its next batch
    /// and carries on from the new one. Two rebuilders of one generation share the work;
    /// the second to reach the switch finds it done. A rebuild by an older version of the
    /// projection than the one that built the active read model is refused
    /// ([`Error::Superseded`]).
    ///
    /// `on_progress` is called after every batch.
    pub async fn rebuild(
        &self,
        on_progress: impl FnMut(RebuildProgress) + Send,
    ) -> Result<RebuildReport> {
        rebuild_with(self, on_progress).await
    }
}

pub(crate) async fn rebuild_with<T: Target>(
    runner: &ProjectionRunner<T>,
    mut on_progress: impl FnMut(RebuildProgress) + Send,
) -> Result<RebuildReport> {
    let projection = &runner.projection;
    let name = projection.name().to_owned();
    if projection.has_side_effects() {
        return Err(Error::NotReplayable(name));
    }
    let version = projection.version();
    let state = runner.target.register(&name, version).await?;
    if state.checkpoint.version > version {
        return Err(Error::Superseded {
            projection: name,
            version,
            active_version: state.checkpoint.version,
        });
    }
    let mut generation = match state.rebuilding {
        Some((generation, checkpoint)) if checkpoint.version == version => generation,
        Some((generation, _)) => generation + 1,
        None => state.active_generation + 1,
    };
    let started = Instant::now();
    // A rebuilder of another version may create the same generation first: then take the
    // next one, so that no generation mixes two versions.
    let start = loop {
        runner
            .target
            .create_generation(&name, generation, version)
            .await?;
        match runner.target.checkpoint(&name, generation).await? {
            Some(start) if start.version == version => break start,
            Some(_) => generation += 1,
            // Switched in (or passed) by another rebuilder before this one began.
            None => return finished_elsewhere(runner, generation, 0, started).await,
        }
    };
    if let Some(failure) = &start.failure {
        // Stopped at an event it cannot handle: it stays there until an operator retries or
        // skips the event.
        return Err(crate::runner::failed(&name, failure));
    }
    let mut checkpoint = start.position;

    let barrier = runner.store.read_barrier().await?;
    let total = runner.store.head().await?.sequence;
    let filter = projection.filter();
    let batch_size = runner.options.batch_size.max(500);
    let mut applied = 0u64;
    loop {
        let page = runner
            .store
            .read_all(checkpoint, batch_size, &filter)
            .await?;
        if page.events.is_empty() && page.scanned_to <= checkpoint {
            if checkpoint >= barrier {
                break;
            }
            // Events committed before the rebuild began are still held back by older
            // transactions: wait for them.
            runner
                .store
                .wait_for_events(checkpoint, Duration::from_millis(20))
                .await?;
            continue;
        }
        checkpoint = match runner
            .apply_page(generation, Role::Rebuild, None, checkpoint, &page)
            .await
        {
            Ok(to) => to,
            // Another rebuilder of the same generation moved it on (a second `rebuild`
            // started elsewhere), or a race of another kind was lost (a deadlock, a dropped
            // connection): carry on from the stored checkpoint, counting nothing of this page.
            Err(e) if matches!(e, Error::LeaseLost { .. }) || e.is_transient() => {
                if e.is_transient() {
                    tracing::warn!(projection = %name, error = %e, "transient failure in a rebuild; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match runner.target.checkpoint(&name, generation).await? {
                    Some(c) => checkpoint = c.position,
                    None => return finished_elsewhere(runner, generation, applied, started).await,
                }
                continue;
            }
            // It was switched in, or a newer generation was: nothing more to do here.
            Err(Error::GenerationMoved { .. }) => {
                return finished_elsewhere(runner, generation, applied, started).await
            }
            Err(e) => return Err(e),
        };
        applied += page
            .events
            .iter()
            .filter(|e| e.position <= checkpoint)
            .count() as u64;
        let done = page
            .events
            .last()
            .map_or(total, |e| e.position.sequence)
            .min(total);
        let rate = applied as f64 / started.elapsed().as_secs_f64().max(1e-6);
        let left = total.saturating_sub(done);
        on_progress(RebuildProgress {
            applied,
            done,
            total,
            events_per_sec: rate,
            eta: (rate > 0.0).then(|| Duration::from_secs_f64(left as f64 / rate)),
        });
        if page.events.is_empty() && checkpoint >= barrier {
            break;
        }
    }
    let Some((checkpoint, last)) = switch_in(runner, generation, &filter, &mut applied).await?
    else {
        return finished_elsewhere(runner, generation, applied, started).await;
    };
    runner.target.retire_generations(&name).await?;
    runner
        .target
        .progress()
        .reached(&name, generation, checkpoint);
    tracing::info!(projection = %name, generation, applied, caught_up_at_switch = last, "rebuild switched in");
    Ok(RebuildReport {
        generation,
        applied,
        checkpoint,
        elapsed: started.elapsed(),
    })
}

/// The rebuild's last batch: with every other batch of the projection kept out, applies what
/// the live generation has and this one has not yet, then switches this one in — so queries
/// never see the read model move back. Returns the checkpoint and how many events that last
/// batch applied, or `None` when another rebuilder switched this generation (or a newer one)
/// in first.
async fn switch_in<T: Target>(
    runner: &ProjectionRunner<T>,
    generation: u64,
    filter: &cqrs_core::EventFilter,
    applied: &mut u64,
) -> Result<Option<(Position, u64)>> {
    let name = runner.projection.name();
    let mut backoff = crate::policy::Backoff::new(runner.options.max_backoff);
    loop {
        let mut batch = match runner
            .target
            .begin(name, generation, Role::Switch, None)
            .await
        {
            Ok(batch) => batch,
            Err(Error::GenerationMoved { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let from = runner
            .target
            .checkpoint(name, generation)
            .await?
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?
            .position;
        let live_at = runner
            .target
            .state(name)
            .await?
            .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?
            .checkpoint
            .position;
        let mut scanned = from;
        let mut last_recorded = None;
        let mut last = 0u64;
        let mut transient = None;
        while scanned < live_at {
            let page = runner
                .store
                .read_all(scanned, runner.options.batch_size.max(500), filter)
                .await?;
            if page.events.is_empty() && page.scanned_to <= scanned {
                break;
            }
            for event in &page.events {
                match runner.projection.apply(&mut batch, event).await {
                    Ok(()) => last += 1,
                    Err(e @ ApplyError::Transient(_)) => {
                        transient = Some(e);
                        break;
                    }
                    Err(ApplyError::Storage(e)) if e.is_transient() => {
                        transient = Some(ApplyError::Storage(e));
                        break;
                    }
                    Err(error) => match runner.options.error_policy {
                        ErrorPolicy::DeadLetter => {
                            let failure = crate::runner::failure_of(event, &error);
                            runner
                                .target
                                .dead_letter(&mut batch, &failure, false)
                                .await?;
                        }
                        ErrorPolicy::Stop => {
                            let failure = crate::runner::failure_of(event, &error);
                            return Err(crate::runner::failed(name, &failure));
                        }
                    },
                }
            }
            if transient.is_some() {
                break;
            }
            scanned = page.scanned_to;
            last_recorded = page.events.last().map(|e| e.recorded_at).or(last_recorded);
        }
        if let Some(error) = transient {
            drop(batch);
            tracing::warn!(projection = %name, %error, "transient failure in the switch; retrying");
            tokio::time::sleep(backoff.next_delay()).await;
            continue;
        }
        match runner
            .target
            .commit(batch, from, scanned, last_recorded)
            .await
        {
            Ok(()) => {
                *applied += last;
                return Ok(Some((scanned, last)));
            }
            // The live generation got further than the log let this batch read (the
            // horizon): read on and try again.
            Err(Error::RebuildBehind { .. } | Error::LeaseLost { .. }) => {
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(Error::GenerationMoved { .. }) => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// The report of a rebuild whose generation another rebuilder finished (or passed).
async fn finished_elsewhere<T: Target>(
    runner: &ProjectionRunner<T>,
    generation: u64,
    applied: u64,
    started: Instant,
) -> Result<RebuildReport> {
    let name = runner.projection.name();
    let state = runner
        .target
        .state(name)
        .await?
        .ok_or_else(|| Error::UnknownProjection(name.to_owned()))?;
    tracing::info!(projection = %name, generation, active = state.active_generation, "another rebuilder switched its generation in");
    Ok(RebuildReport {
        generation: state.active_generation,
        applied,
        checkpoint: state.checkpoint.position,
        elapsed: started.elapsed(),
    })
}
