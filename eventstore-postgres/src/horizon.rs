//! What holds readers back: committed events not yet readable, and the open transactions
//! (sessions and prepared transactions) in the way.

use std::time::Duration;

use cqrs_core::{Horizon, HorizonBlocker, Result};
use sqlx::{PgPool, Row};

use crate::error::from_sqlx;

/// Committed events that readers cannot see yet: their transaction ids are at or above the
/// horizon (the oldest transaction still open).
const HELD_BACK: &str = "SELECT count(*) FROM es_events \
     WHERE transaction_id >= pg_snapshot_xmin(pg_current_snapshot())";

/// Every open transaction that has written (so holds the horizon): sessions, and prepared
/// transactions, which outlive their sessions. Another role's session shows no start time
/// without `pg_read_all_stats`; its age in transactions is always known.
const BLOCKERS: &str = "SELECT pid, NULL::text AS prepared, backend_xid::text::bigint AS xid, \
            datname AS database, usename AS role, application_name, \
            EXTRACT(EPOCH FROM (clock_timestamp() - xact_start))::float8 AS age_secs, \
            age(backend_xid) AS since, state, left(query, 200) AS query \
     FROM pg_stat_activity \
     WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
     UNION ALL \
     SELECT NULL, gid, transaction::text::bigint, database, owner::text, NULL, \
            EXTRACT(EPOCH FROM (clock_timestamp() - prepared))::float8, age(transaction), \
            'prepared', NULL \
     FROM pg_prepared_xacts \
     ORDER BY since DESC";

pub(crate) async fn horizon(pool: &PgPool) -> Result<Horizon> {
    let held_back: i64 = sqlx::query_scalar(HELD_BACK)
        .fetch_one(pool)
        .await
        .map_err(from_sqlx)?;
    let blockers = if held_back > 0 {
        blockers(pool).await?
    } else {
        Vec::new()
    };
    Ok(Horizon {
        held_back: u64::try_from(held_back).unwrap_or(0),
        blockers,
    })
}

pub(crate) async fn blockers(pool: &PgPool) -> Result<Vec<HorizonBlocker>> {
    let rows = sqlx::query(BLOCKERS)
        .fetch_all(pool)
        .await
        .map_err(from_sqlx)?;
    rows.iter()
        .map(|row| {
            let age: Option<f64> = row.try_get("age_secs").map_err(from_sqlx)?;
            let xid: Option<i64> = row.try_get("xid").map_err(from_sqlx)?;
            let since: Option<i32> = row.try_get("since").map_err(from_sqlx)?;
            Ok(HorizonBlocker {
                pid: row.try_get("pid").map_err(from_sqlx)?,
                prepared: row.try_get("prepared").map_err(from_sqlx)?,
                transaction_id: xid.and_then(|x| u64::try_from(x).ok()).unwrap_or(0),
                database: row.try_get("database").map_err(from_sqlx)?,
                role: row.try_get("role").map_err(from_sqlx)?,
                application_name: row.try_get("application_name").map_err(from_sqlx)?,
                transaction_age: age.map(|a| Duration::from_secs_f64(a.max(0.0))),
                transactions_since: since.and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                state: row.try_get("state").map_err(from_sqlx)?,
                query: row.try_get("query").map_err(from_sqlx)?,
            })
        })
        .collect()
}
