//! Cross-crate integration and fault tests against a real PostgreSQL.
//!
//! | file | proves |
//! | --- | --- |
//! | `tests/projection_faults.rs` | a worker killed with SIGKILL at random moments loses and doubles nothing; a standby process takes over |
//! | `src/bin/projection_worker.rs` | the worker process those tests start and kill |

use std::sync::Arc;

use eventstore_postgres::PgEventStore;
use projections::PgTarget;

/// A store and a target on the database at `url`, with both crates' migrations applied.
pub async fn connect(
    url: &str,
) -> Result<(Arc<PgEventStore>, PgTarget), Box<dyn std::error::Error>> {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect(url)
        .await?;
    let store = PgEventStore::new(pool.clone());
    store.migrate().await?;
    let target = PgTarget::new(pool);
    target.migrate().await?;
    Ok((Arc::new(store), target))
}
