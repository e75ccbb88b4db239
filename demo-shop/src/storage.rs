//! Where the shop keeps its events and read models: in memory (the embedded default) or in
//! PostgreSQL.

use std::sync::Arc;

use crate::idempotency_keys::IdempotencyKeys;
use cqrs_core::{EventStore, InMemoryEventStore};
use eventstore_postgres::PgEventStore;
use messaging::{MemoryInbox, PgInbox};
use projections::process::{InstanceStore, MemoryInstances, PgInstances};
use projections::{MemoryTarget, PgTarget, ProjectionHost};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};

/// How long the first connection to PostgreSQL may take.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Every migration the shop's database takes, by the crate that owns it; `migrate` applies
/// them all, and the commands that only read or operate check that none is pending.
static MIGRATIONS: [sqlx::migrate::Migrator; 4] = [
    sqlx::migrate!("../eventstore-postgres/migrations"),
    sqlx::migrate!("../projections/migrations"),
    sqlx::migrate!("../messaging/migrations"),
    sqlx::migrate!("./migrations"),
];

/// Where a service's consumers record the messages they applied.
#[derive(Clone)]
pub enum Inboxes {
    /// In memory.
    Memory(MemoryInbox),
    /// In PostgreSQL, beside the read models.
    Postgres(PgInbox),
}

/// The event store, read models and inbox of one service (the shop's, or the
/// warehouse's: each has its own).
#[derive(Clone)]
pub struct Storage {
    /// The event store.
    pub store: Arc<dyn EventStore>,
    /// The read models' host, with nothing registered yet: each service registers its own.
    pub host: ProjectionHost,
    /// The answers kept for requests with an `Idempotency-Key`.
    pub idempotency_keys: IdempotencyKeys,
    /// The instances of the process managers (the checkout's orders).
    pub instances: Arc<dyn InstanceStore>,
    /// The inbox of its broker consumers.
    pub inbox: Inboxes,
    /// `"PostgreSQL"` or `"memory"`.
    pub kind: &'static str,
}

impl Storage {
    /// Everything in memory: nothing survives the process.
    pub fn in_memory() -> Self {
        let store: Arc<dyn EventStore> = Arc::new(InMemoryEventStore::new());
        Self {
            host: ProjectionHost::new(Arc::clone(&store), MemoryTarget::new()),
            store,
            idempotency_keys: IdempotencyKeys::in_memory(),
            instances: Arc::new(MemoryInstances::new()),
            inbox: Inboxes::Memory(MemoryInbox::new()),
            kind: "memory",
        }
    }

    /// Connects to PostgreSQL at `url` and applies the store's, the projections' and the
    /// shop's own migrations. A server that cannot be reached is reported at once (one
    /// connection is tried before the pool, which would wait out its timeout), and never with
    /// the URL's password.
    pub async fn postgres(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Self::from_pool(Self::connect(url).await?).await
    }

    /// Connects to PostgreSQL at `url`, which `demo-shop migrate` (or `serve`) brought up to
    /// this release's schema, changing nothing: a database without the shop, or one an
    /// earlier release migrated, is refused with what to run.
    pub async fn postgres_migrated(
        url: &str,
    ) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let pool = Self::connect(url).await?;
        let applied: Vec<i64> = match sqlx::query_scalar::<_, Option<String>>(
            "SELECT to_regclass('_sqlx_migrations')::text",
        )
        .fetch_one(&pool)
        .await?
        {
            Some(_) => {
                sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
                    .fetch_all(&pool)
                    .await?
            }
            None => Vec::new(),
        };
        let pending: Vec<String> = MIGRATIONS
            .iter()
            .flat_map(|migrator| migrator.iter())
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| format!("{}_{}", m.version, m.description.replace(' ', "_")))
            .collect();
        if applied.is_empty() {
            return Err(format!(
                "{} holds no shop: run `demo-shop migrate` first",
                redacted(url)
            )
            .into());
        }
        if !pending.is_empty() {
            return Err(format!(
                "{} holds a shop of an earlier release (not applied: {}): run `demo-shop migrate` first",
                redacted(url),
                pending.join(", ")
            )
            .into());
        }
        let store = PgEventStore::new(pool.clone());
        store.check_log_order().await?;
        Ok(Self::on(pool, store))
    }

    /// A pool on PostgreSQL at `url`; an unreachable server is reported at once, without
    /// the URL's password.
    async fn connect(url: &str) -> Result<PgPool, Box<dyn std::error::Error + Send + Sync>> {
        let shown = redacted(url);
        let options: PgConnectOptions = url
            .parse()
            .map_err(|e| format!("{shown} is not a PostgreSQL URL: {e}"))?;
        let unreachable = |e: sqlx::Error| format!("cannot connect to PostgreSQL at {shown}: {e}");
        // One connection first, within 10 s: a refused or unknown host is said at once rather
        // than after the pool's own timeout, and a silent one does not hang the start.
        let first = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                format!("PostgreSQL at {shown} did not answer within {CONNECT_TIMEOUT:?}")
            })?
            .map_err(unreachable)?;
        first.close().await.map_err(unreachable)?;
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(unreachable)?;
        Ok(pool)
    }

    /// Uses `pool` for both events and read models, after applying the migrations.
    pub async fn from_pool(pool: PgPool) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let store = PgEventStore::new(pool.clone());
        store.migrate().await?;
        store.check_log_order().await?;
        let target = PgTarget::new(pool.clone());
        target.migrate().await?;
        let mut migrator = sqlx::migrate!("./migrations");
        migrator.set_ignore_missing(true);
        migrator.run(&pool).await?;
        PgInbox::new(pool.clone()).migrate().await?;
        Ok(Self::on(pool, store))
    }

    /// Everything on `pool`, whose tables exist.
    fn on(pool: PgPool, store: PgEventStore) -> Self {
        let store: Arc<dyn EventStore> = Arc::new(store);
        Self {
            host: ProjectionHost::new(Arc::clone(&store), PgTarget::new(pool.clone())),
            store,
            idempotency_keys: IdempotencyKeys::Postgres(pool.clone()),
            instances: Arc::new(PgInstances::new(pool.clone())),
            inbox: Inboxes::Postgres(PgInbox::new(pool)),
            kind: "PostgreSQL",
        }
    }
}

/// `url` with its password, if any, replaced by `***`: what may be printed or logged. It
/// covers the password of the user part, a `password=` query parameter, and a `password=`
/// key of a `key=value` connection string.
///
/// ```
/// use demo_shop::storage::redacted;
/// assert_eq!(redacted("postgres://shop:s3cret@db:5432/shop"), "postgres://shop:***@db:5432/shop");
/// assert_eq!(redacted("postgres://shop:p@ss@db/shop"), "postgres://shop:***@db/shop");
/// assert_eq!(redacted("postgres://shop@db/shop?password=x&sslmode=off"), "postgres://shop@db/shop?password=***&sslmode=off");
/// assert_eq!(redacted("host=db password=x user=shop"), "host=db password=*** user=shop");
/// assert_eq!(redacted("postgres://shop@db/shop"), "postgres://shop@db/shop");
/// ```
pub fn redacted(url: &str) -> String {
    let (main, query) = match url.split_once('?') {
        Some((main, query)) => (main, Some(query)),
        None => (url, None),
    };
    let main = match main.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((user_info, host)) if user_info.contains(':') => {
                let user = user_info.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:***@{host}")
            }
            _ => main.to_owned(),
        },
        None => mask_pairs(main, ' '),
    };
    match query {
        Some(query) => format!("{main}?{}", mask_pairs(query, '&')),
        None => main,
    }
}

/// `key=value` pairs split by `separator`, with the value of `password` masked.
fn mask_pairs(pairs: &str, separator: char) -> String {
    pairs
        .split(separator)
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if key.trim().eq_ignore_ascii_case("password") => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(&separator.to_string())
}
