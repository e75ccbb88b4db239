//! [`PgBatch`]: one batch's transaction on PostgreSQL, with its documents cached.
//!
//! Reads go to the database once per document and batch; writes are kept in memory and
//! flushed with one statement when the batch commits, in the same transaction as the
//! checkpoint. (Only the lease holder writes the active generation, and only rebuilders a
//! newer one; the commit's compare-and-set refuses a batch that raced another.)

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use serde_json::Value;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::documents::Documents;
use crate::error::Result;
use crate::lease::LeaseToken;
use crate::target::Role;

type Key = (String, String);

/// One batch's transaction.
#[derive(Debug)]
pub struct PgBatch {
    pub(crate) tx: Transaction<'static, Postgres>,
    pub(crate) name: String,
    pub(crate) generation: i64,
    pub(crate) role: Role,
    pub(crate) lease: Option<LeaseToken>,
    /// The failure the commit records on the generation (a blocking dead letter).
    pub(crate) failure: Option<Value>,
    cache: HashMap<Key, Option<Value>>,
    dirty: HashSet<Key>,
}

impl PgBatch {
    pub(crate) fn new(
        tx: Transaction<'static, Postgres>,
        name: &str,
        generation: i64,
        role: Role,
        lease: Option<LeaseToken>,
    ) -> Self {
        Self {
            tx,
            name: name.to_owned(),
            generation,
            role,
            lease,
            failure: None,
            cache: HashMap::new(),
            dirty: HashSet::new(),
        }
    }

    /// Writes the buffered documents: one upsert for the puts, one delete for the deletes.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        let (mut put_c, mut put_k, mut put_d) = (Vec::new(), Vec::new(), Vec::new());
        let (mut del_c, mut del_k) = (Vec::new(), Vec::new());
        // In key order, so that two batches writing the same documents (rebuilders of one
        // generation) lock them in the same order. (Puts go before deletes, so two batches
        // that put and delete the same keys crosswise can still deadlock; the server breaks
        // it and the batch is retried as a transient failure.)
        let mut dirty: Vec<Key> = std::mem::take(&mut self.dirty).into_iter().collect();
        dirty.sort();
        for key in dirty {
            match self.cache.get(&key) {
                Some(Some(doc)) => {
                    put_c.push(key.0);
                    put_k.push(key.1);
                    put_d.push(doc.clone());
                }
                Some(None) => {
                    del_c.push(key.0);
                    del_k.push(key.1);
                }
                None => {}
            }
        }
        if !put_c.is_empty() {
            sqlx::query(
                "INSERT INTO projection_documents (projection, generation, collection, key, doc) \
                 SELECT $1, $2, c, k, d FROM unnest($3::text[], $4::text[], $5::jsonb[]) AS u(c, k, d) \
                 ON CONFLICT (projection, generation, collection, key) DO UPDATE SET doc = EXCLUDED.doc",
            )
            .bind(&self.name)
            .bind(self.generation)
            .bind(&put_c)
            .bind(&put_k)
            .bind(&put_d)
            .execute(&mut *self.tx)
            .await?;
        }
        if !del_c.is_empty() {
            sqlx::query(
                "DELETE FROM projection_documents d USING unnest($3::text[], $4::text[]) AS u(c, k) \
                 WHERE d.projection = $1 AND d.generation = $2 AND d.collection = u.c AND d.key = u.k",
            )
            .bind(&self.name)
            .bind(self.generation)
            .bind(&del_c)
            .bind(&del_k)
            .execute(&mut *self.tx)
            .await?;
        }
        Ok(())
    }

    fn mark(&mut self, key: Key, doc: Option<Value>) {
        self.cache.insert(key.clone(), doc);
        self.dirty.insert(key);
    }
}

#[async_trait]
impl Documents for PgBatch {
    async fn get(&mut self, collection: &str, key: &str) -> Result<Option<Value>> {
        let k = (collection.to_owned(), key.to_owned());
        if let Some(cached) = self.cache.get(&k) {
            return Ok(cached.clone());
        }
        let doc: Option<Value> = sqlx::query_scalar(
            "SELECT doc FROM projection_documents \
             WHERE projection = $1 AND generation = $2 AND collection = $3 AND key = $4",
        )
        .bind(&self.name)
        .bind(self.generation)
        .bind(collection)
        .bind(key)
        .fetch_optional(&mut *self.tx)
        .await?;
        self.cache.insert(k, doc.clone());
        Ok(doc)
    }

    async fn put(&mut self, collection: &str, key: &str, doc: Value) -> Result<()> {
        self.mark((collection.to_owned(), key.to_owned()), Some(doc));
        Ok(())
    }

    async fn delete(&mut self, collection: &str, key: &str) -> Result<()> {
        self.mark((collection.to_owned(), key.to_owned()), None);
        Ok(())
    }

    fn generation(&self) -> u64 {
        // Made from a `u64` (`PgTarget::begin`): never negative.
        self.generation.unsigned_abs()
    }

    fn postgres(&mut self) -> Option<&mut PgConnection> {
        Some(&mut self.tx)
    }

    fn lease(&self) -> Option<&LeaseToken> {
        self.lease.as_ref()
    }
}
