//! Where the shop keeps its events and read models: in memory (the embedded default) or in
//! PostgreSQL.

use std::sync::Arc;

use crate::idempotency_keys::IdempotencyKeys;
use cqrs_core::{EventStore, InMemoryEventStore};
use eventstore_postgres::PgEventStore;
use messaging::{MemoryInbox, PgInbox};
use projections::process::{InstanceStore, MemoryInstances, PgInstances};
use projections::{MemoryTarget, PgTarget, Target};
use serde::de::DeserializeOwned;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

/// The read models, wherever they live. Queries go through it.
#[derive(Clone, Debug)]
pub enum ReadModels {
    /// In memory.
    Memory(MemoryTarget),
    /// In PostgreSQL.
    Postgres(PgTarget),
}

impl ReadModels {
    /// A document of `projection`'s read model.
    pub async fn get<T: DeserializeOwned>(
        &self,
        projection: &str,
        collection: &str,
        key: &str,
    ) -> projections::Result<Option<T>> {
        let doc = match self {
            Self::Memory(t) => t.get(projection, collection, key).await?,
            Self::Postgres(t) => t.get(projection, collection, key).await?,
        };
        doc.map(|d| decode(collection, key, d)).transpose()
    }

    /// Every document of a collection of `projection`'s read model, by key.
    pub async fn list<T: DeserializeOwned>(
        &self,
        projection: &str,
        collection: &str,
    ) -> projections::Result<Vec<T>> {
        let docs = match self {
            Self::Memory(t) => t.list(projection, collection).await?,
            Self::Postgres(t) => t.list(projection, collection).await?,
        };
        docs.into_iter()
            .map(|(key, d)| decode(collection, &key, d))
            .collect()
    }
}

fn decode<T: DeserializeOwned>(
    collection: &str,
    key: &str,
    doc: serde_json::Value,
) -> projections::Result<T> {
    serde_json::from_value(doc).map_err(|e| projections::Error::Document {
        collection: collection.to_owned(),
        key: key.to_owned(),
        reason: e.to_string(),
    })
}

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
    /// The read models.
    pub read_models: ReadModels,
    /// The answers kept for requests with an `Idempotency-Key`.
    pub idempotency_keys: IdempotencyKeys,
    /// The instances of the process managers (the checkout's orders).
    pub instances: Arc<dyn InstanceStore>,
    /// The inbox of its broker consumers.
    pub inbox: Inboxes,
}

impl Storage {
    /// Everything in memory: nothing survives the process.
    pub fn in_memory() -> Self {
        Self {
            store: Arc::new(InMemoryEventStore::new()),
            read_models: ReadModels::Memory(MemoryTarget::new()),
            idempotency_keys: IdempotencyKeys::in_memory(),
            instances: Arc::new(MemoryInstances::new()),
            inbox: Inboxes::Memory(MemoryInbox::new()),
        }
    }

    /// Connects to PostgreSQL at `url` and applies the store's, the projections' and the
    /// shop's own migrations.
    pub async fn postgres(url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let pool = PgPoolOptions::new()
            .max_connections(24)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect(url)
            .await
            .map_err(|e| format!("cannot connect to PostgreSQL at {url}: {e}"))?;
        Self::from_pool(pool).await
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
        let inbox = PgInbox::new(pool.clone());
        inbox.migrate().await?;
        Ok(Self {
            store: Arc::new(store),
            read_models: ReadModels::Postgres(target),
            idempotency_keys: IdempotencyKeys::Postgres(pool.clone()),
            instances: Arc::new(PgInstances::new(pool)),
            inbox: Inboxes::Postgres(inbox),
        })
    }

    /// `"PostgreSQL"` or `"memory"`.
    pub fn kind(&self) -> &'static str {
        match self.read_models {
            ReadModels::Memory(_) => "memory",
            ReadModels::Postgres(_) => "PostgreSQL",
        }
    }
}
