//! What holds readers back: the open write transactions below the visibility horizon.

use std::time::Duration;

use cqrs_core::Result;
use sqlx::{PgPool, Row};

use crate::error::from_sqlx;

/// An open transaction that has written something and so holds back every reader of the log
/// until it ends (readers only see events below the oldest such transaction's id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HorizonBlocker {
    /// The backend's process id (`pg_terminate_backend(pid)` ends it).
    pub pid: i32,
    /// The database it is connected to.
    pub database: Option<String>,
    /// The client's `application_name`.
    pub application_name: Option<String>,
    /// How long its transaction has been open.
    pub transaction_age: Duration,
    /// `active`, `idle in transaction`, …
    pub state: Option<String>,
    /// The start of its current or last query.
    pub query: Option<String>,
}

pub(crate) async fn blockers(pool: &PgPool) -> Result<Vec<HorizonBlocker>> {
    let rows = sqlx::query(
        "SELECT pid, datname, application_name, state, left(query, 200) AS query, \
                EXTRACT(EPOCH FROM (clock_timestamp() - xact_start))::float8 AS age_secs \
         FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
         ORDER BY xact_start",
    )
    .fetch_all(pool)
    .await
    .map_err(from_sqlx)?;
    rows.iter()
        .map(|row| {
            let age: Option<f64> = row.try_get("age_secs").map_err(from_sqlx)?;
            Ok(HorizonBlocker {
                pid: row.try_get("pid").map_err(from_sqlx)?,
                database: row.try_get("datname").map_err(from_sqlx)?,
                application_name: row.try_get("application_name").map_err(from_sqlx)?,
                transaction_age: Duration::from_secs_f64(age.unwrap_or(0.0).max(0.0)),
                state: row.try_get("state").map_err(from_sqlx)?,
                query: row.try_get("query").map_err(from_sqlx)?,
            })
        })
        .collect()
}
