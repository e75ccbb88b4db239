//! [`Documents`]: what a projection writes its read model through, the same on PostgreSQL and
//! in memory.
//!
//! A read model is a set of JSON documents, each under a `(collection, key)`. Within one
//! batch, reads see the batch's own writes; the writes become visible to queries only when
//! the batch commits, together with the checkpoint. On PostgreSQL they are the rows of
//! `projection_documents`, readable with plain SQL:
//!
//! ```sql
//! SELECT d.key, d.doc FROM projection_documents d
//! JOIN projection_state s ON s.name = d.projection AND s.active_generation = d.generation
//! WHERE d.projection = 'order_summaries' AND d.collection = 'orders';
//! ```

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::lease::LeaseToken;
use crate::typed::Collection;

/// The read-model side of one batch's transaction.
#[async_trait]
pub trait Documents: Send {
    /// The document under `collection`/`key`, if any.
    async fn get(&mut self, collection: &str, key: &str) -> Result<Option<Value>>;

    /// Stores `doc` under `collection`/`key`, replacing what was there.
    async fn put(&mut self, collection: &str, key: &str, doc: Value) -> Result<()>;

    /// Removes the document under `collection`/`key`, if any.
    async fn delete(&mut self, collection: &str, key: &str) -> Result<()>;

    /// The generation of the read model this batch writes: a rebuild writes a new one while
    /// queries read the active one.
    fn generation(&self) -> u64;

    /// The batch's open PostgreSQL transaction (`None` in memory), for a projection that
    /// also writes tables of its own: they commit with the documents and the checkpoint.
    /// Such tables should carry [`generation`](Documents::generation) in their rows, so that
    /// a rebuild does not disturb what queries read.
    #[cfg(feature = "postgres")]
    fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        None
    }

    /// The lease of the worker applying this batch (`None` in a rebuild, which has no
    /// effects): a handler with side effects checks [`LeaseToken::is_live`] right before an
    /// effect and sends the epoch along, so that what a deposed worker sends can be fenced.
    fn lease(&self) -> Option<&LeaseToken> {
        None
    }
}

/// Typed access to [`Documents`]: serde in, serde out.
#[async_trait]
pub trait DocumentsExt: Documents {
    /// The document under `collection`/`key`, decoded as `T`.
    async fn load<T: DeserializeOwned>(
        &mut self,
        collection: &str,
        key: &str,
    ) -> Result<Option<T>> {
        match self.get(collection, key).await? {
            None => Ok(None),
            Some(doc) => serde_json::from_value(doc)
                .map(Some)
                .map_err(|e| document_error(collection, key, e)),
        }
    }

    /// Stores `value` under `collection`/`key`.
    async fn save<T: Serialize + Sync>(
        &mut self,
        collection: &str,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let doc = serde_json::to_value(value).map_err(|e| document_error(collection, key, e))?;
        self.put(collection, key, doc).await
    }

    /// The document under `key` in `collection`.
    async fn read<T: DeserializeOwned>(
        &mut self,
        collection: &Collection<T>,
        key: &str,
    ) -> Result<Option<T>> {
        self.load(collection.name(), key).await
    }

    /// Stores `doc` under `key` in `collection`.
    async fn write<T: Serialize + Sync>(
        &mut self,
        collection: &Collection<T>,
        key: &str,
        doc: &T,
    ) -> Result<()> {
        self.save(collection.name(), key, doc).await
    }
}

impl<D: Documents + ?Sized> DocumentsExt for D {}

pub(crate) fn document_error(
    collection: &str,
    key: &str,
    error: impl Into<cqrs_core::BoxError>,
) -> Error {
    Error::Document {
        collection: collection.to_owned(),
        key: key.to_owned(),
        source: error.into(),
    }
}
