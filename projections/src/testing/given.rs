//! Given / then for projections: apply events to a projection in memory and read what it
//! made, with the check every read model must pass to be rebuilt: projecting the same events
//! again, from nothing, gives the same read model (a projection that reads the clock or
//! draws random ids fails it).
//!
//! ```
//! use projections::testing::given;
//! use projections::{ApplyError, EventOf, Fold, Typed};
//! # use cqrs_core::{Aggregate, DomainEvent};
//! # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Cart;
//! # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)] enum CartEvent { ItemAdded { sku: String } }
//! # impl DomainEvent for CartEvent { fn event_type(&self) -> &'static str { "ItemAdded" } }
//! # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
//! # impl Aggregate for Cart {
//! #     const TYPE: &'static str = "cart"; type Id = str; type Command = (); type Event = CartEvent; type Error = Never; type Services = ();
//! #     fn handle(&self, _: &str, _: (), _: &()) -> Result<Vec<CartEvent>, Never> { Ok(vec![]) }
//! #     fn apply(&mut self, _: &CartEvent) {}
//! # }
//! struct ItemCounts;
//!
//! impl Fold for ItemCounts {
//!     type Aggregate = Cart;
//!     type Doc = u32;
//!     const NAME: &'static str = "item_counts";
//!     fn evolve(&self, count: Option<u32>, _: &EventOf<Cart>) -> Result<Option<u32>, ApplyError> {
//!         Ok(Some(count.unwrap_or(0) + 1))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let added = |sku: &str| CartEvent::ItemAdded { sku: sku.into() };
//! let model = given::<Cart>("c1", [added("MUG"), added("TEE")])
//!     .and::<Cart>("c2", [added("MUG")])
//!     .project(Typed::new(ItemCounts))
//!     .await
//!     .unwrap();
//! assert_eq!(model.document::<ItemCounts>("c1"), Some(2));
//! assert_eq!(model.documents::<ItemCounts>(), vec![2, 1]);
//! # });
//! ```

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::Utc;
use cqrs_core::{Aggregate, EventEnvelope, Metadata, NewEvent, Position, RecordedEvent, StreamId};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use crate::documents::Documents;
use crate::projection::{ApplyError, Projection};
use crate::typed::{collection, Collection, Fold};

/// Events to give a projection, in log order: start with [`given`].
#[derive(Clone, Debug, Default)]
pub struct Given {
    events: Vec<RecordedEvent>,
    versions: BTreeMap<StreamId, u64>,
}

/// The events of aggregate `A` with id `id`, in order.
///
/// # Panics
///
/// If `id` is not a valid aggregate id or an event does not encode: both are mistakes in the
/// test itself.
pub fn given<A: Aggregate>(id: &str, events: impl IntoIterator<Item = A::Event>) -> Given {
    Given::default().and::<A>(id, events)
}

impl Given {
    /// Then the events of aggregate `A` with id `id`, after those given so far.
    ///
    /// # Panics
    ///
    /// As [`given`].
    pub fn and<A: Aggregate>(
        mut self,
        id: &str,
        events: impl IntoIterator<Item = A::Event>,
    ) -> Self {
        let stream = match StreamId::for_aggregate(A::TYPE, id) {
            Ok(stream) => stream,
            Err(e) => panic!("given: {e}"),
        };
        for event in events {
            let encoded = match NewEvent::from_domain(&event) {
                Ok(encoded) => encoded,
                Err(e) => panic!("given: {e}"),
            };
            let version = self.versions.entry(stream.clone()).or_default();
            *version += 1;
            let n = self.events.len() as u64 + 1;
            self.events.push(EventEnvelope {
                event_id: Uuid::new_v4(),
                stream_id: stream.clone(),
                stream_version: *version,
                position: Position::new(n, n),
                recorded_at: Utc::now(),
                metadata: Metadata::default(),
                event: encoded.data,
            });
        }
        self
    }

    /// Applies every given event the projection's filter takes, in order, to an empty read
    /// model and returns it, or the first event's error.
    ///
    /// # Panics
    ///
    /// If projecting the same events a second time, from nothing, gives another read model:
    /// a rebuild by replay would not give back what the live worker built.
    pub async fn project(&self, projection: impl Projection) -> Result<ReadModel, ApplyError> {
        let once = self.replay(&projection).await?;
        let again = self.replay(&projection).await?;
        assert!(
            once == again,
            "projecting the same events twice gave two read models of `{}`: a rebuild would \
             differ from the live read model\nonce:  {:?}\nagain: {:?}",
            projection.name(),
            once.docs,
            again.docs
        );
        Ok(once)
    }

    async fn replay(&self, projection: &impl Projection) -> Result<ReadModel, ApplyError> {
        let filter = projection.filter();
        let mut model = ReadModel::default();
        for event in self.events.iter().filter(|e| filter.matches(e)) {
            projection.apply(&mut model, event).await?;
        }
        Ok(model)
    }
}

/// A read model built in memory by [`Given::project`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReadModel {
    docs: BTreeMap<(String, String), Value>,
}

impl ReadModel {
    /// The document under `key` in `collection`.
    ///
    /// # Panics
    ///
    /// If the stored document is not a `D`.
    pub fn get<D: DeserializeOwned>(&self, collection: &Collection<D>, key: &str) -> Option<D> {
        let doc = self
            .docs
            .get(&(collection.name().to_owned(), key.to_owned()))?;
        Some(decode(collection, doc))
    }

    /// Every document of `collection`, ordered by key.
    ///
    /// # Panics
    ///
    /// If a stored document is not a `D`.
    pub fn list<D: DeserializeOwned>(&self, collection: &Collection<D>) -> Vec<D> {
        self.docs
            .iter()
            .filter(|((c, _), _)| c == collection.name())
            .map(|(_, doc)| decode(collection, doc))
            .collect()
    }

    /// The document of fold `F` under `key`.
    pub fn document<F: Fold>(&self, key: &str) -> Option<F::Doc> {
        self.get(&collection::<F>(), key)
    }

    /// Every document of fold `F`, ordered by key.
    pub fn documents<F: Fold>(&self) -> Vec<F::Doc> {
        self.list(&collection::<F>())
    }

    /// How many documents it holds, in all collections.
    pub fn len(&self) -> usize {
        self.docs.len()
    }

    /// Whether it holds no document.
    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }
}

fn decode<D: DeserializeOwned>(collection: &Collection<D>, doc: &Value) -> D {
    match serde_json::from_value(doc.clone()) {
        Ok(doc) => doc,
        Err(e) => panic!("a document of {collection:?} does not decode: {e}"),
    }
}

#[async_trait]
impl Documents for ReadModel {
    async fn get(&mut self, collection: &str, key: &str) -> crate::Result<Option<Value>> {
        Ok(self
            .docs
            .get(&(collection.to_owned(), key.to_owned()))
            .cloned())
    }

    async fn put(&mut self, collection: &str, key: &str, doc: Value) -> crate::Result<()> {
        self.docs
            .insert((collection.to_owned(), key.to_owned()), doc);
        Ok(())
    }

    async fn delete(&mut self, collection: &str, key: &str) -> crate::Result<()> {
        self.docs.remove(&(collection.to_owned(), key.to_owned()));
        Ok(())
    }

    fn generation(&self) -> u64 {
        1
    }
}
