//! Rebuild by replay: a fresh generation of the read model, built from the start of the log
//! while the current one keeps serving queries, then switched in atomically.

use std::time::{Duration, Instant};

use cqrs_core::Position;

use crate::error::{Error, Result};
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
    /// keeps its own checkpoint, moved with its documents in each batch). A live worker of
    /// the same projection, elsewhere, notices the switch at its next batch and carries on
    /// from the new generation's checkpoint.
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
    let generation = match state.rebuilding {
        Some((generation, checkpoint)) if checkpoint.version == version => generation,
        Some((generation, _)) => generation + 1,
        None => state.active_generation + 1,
    };
    runner
        .target
        .create_generation(&name, generation, version)
        .await?;
    let mut checkpoint = runner
        .target
        .checkpoint(&name, generation)
        .await?
        .ok_or_else(|| Error::UnknownProjection(name.clone()))?
        .position;

    let started = Instant::now();
    let barrier = runner.store.read_barrier().await?;
    let total = runner.store.head().await?.sequence;
    let filter = projection.filter();
    let mut applied = 0u64;
    loop {
        let page = runner
            .store
            .read_all(checkpoint, runner.options.batch_size.max(500), &filter)
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
            .apply_page(generation, Role::Rebuild, checkpoint, &page)
            .await
        {
            Ok(to) => to,
            // Another rebuilder of the same generation moved it on (a second `rebuild`
            // started elsewhere): carry on from where it got, or stop if it finished.
            Err(Error::LeaseLost { .. }) => {
                let state = runner.target.register(&name, version).await?;
                if state.active_generation >= generation {
                    tracing::info!(projection = %name, generation, "another rebuilder finished this generation");
                    return Ok(RebuildReport {
                        generation,
                        applied,
                        checkpoint: state.checkpoint.position,
                        elapsed: started.elapsed(),
                    });
                }
                match runner.target.checkpoint(&name, generation).await? {
                    Some(c) => c.position,
                    None => return Err(Error::UnknownProjection(name)),
                }
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
    runner.target.switch_generation(&name, generation).await?;
    tracing::info!(projection = %name, generation, applied, "rebuild switched in");
    Ok(RebuildReport {
        generation,
        applied,
        checkpoint,
        elapsed: started.elapsed(),
    })
}
