//! The start-up guard of the global order: the log's transaction ids must all be below the
//! server's next one.
//!
//! Positions are transaction ids. A log copied into another cluster (`pg_dump`/restore,
//! logical replication, a failover to an asynchronous standby that was behind) keeps its
//! ids as data; if that cluster's counter is behind them, its new events get smaller ids,
//! sort *before* the copied history, and readers whose checkpoints are past it skip them
//! for ever. So the store compares once, before its first read or write, and refuses to work
//! with [`cqrs_core::Error::LogAhead`] until the cluster is fixed.
//!
//! The same look checks that the `(stream_id, stream_version)` unique constraint is there and
//! not deferred: the append statements rely on it in one window (see `set_append`), so a
//! schema that lost it is refused rather than written with duplicate versions.

use sqlx::PgPool;
use tokio::sync::OnceCell;

use crate::error::{from_sqlx, STREAM_VERSION_UNIQUE};
use cqrs_core::{Error, Result};

/// Remembers a passed check; a failed one is made again at the next call, so a store starts
/// working as soon as the cluster has been fixed.
#[derive(Clone, Debug, Default)]
pub(crate) struct LogOrderGuard {
    passed: std::sync::Arc<OnceCell<()>>,
}

impl LogOrderGuard {
    pub(crate) async fn check(&self, pool: &PgPool) -> Result<()> {
        self.passed
            .get_or_try_init(|| async {
                let (newest, next, versions_unique): (Option<i64>, i64, bool) = sqlx::query_as(
                    "SELECT (SELECT max(transaction_id) FROM es_events)::text::bigint, \
                            pg_snapshot_xmax(pg_current_snapshot())::text::bigint, \
                            EXISTS (SELECT 1 FROM pg_constraint \
                                    WHERE conrelid = 'es_events'::regclass AND conname = $1 \
                                      AND contype = 'u' AND NOT condeferrable)",
                )
                .bind(STREAM_VERSION_UNIQUE)
                .fetch_one(pool)
                .await
                .map_err(from_sqlx)?;
                if !versions_unique {
                    return Err(Error::Backend(
                        format!(
                            "es_events has lost its constraint {STREAM_VERSION_UNIQUE} (unique, \
                             not deferrable), on which appends rely: restore it as the store's \
                             first migration creates it"
                        )
                        .into(),
                    ));
                }
                match newest {
                    Some(newest) if newest >= next => Err(Error::LogAhead {
                        newest: newest as u64,
                        next: next as u64,
                    }),
                    _ => Ok(()),
                }
            })
            .await
            .map(|_| ())
    }
}
