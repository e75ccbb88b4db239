//! Typed projections: a read model written against an aggregate's own event type.
//!
//! The aggregate names everything the untyped [`Projection`] asks for by hand: its
//! [`TYPE`](Aggregate::TYPE) is the category followed, its event enum's variants are the event
//! types (read from the serde derive, so a misspelt type cannot exist), and its
//! [`upcasters`](Aggregate::upcasters) bring old events to the current shape exactly as the
//! [`Repository`](cqrs_core::Repository) does.
//!
//! - [`Fold`]: the usual read model, one typed document per key, written as
//!   `evolve(document, event)`. It is idempotent by construction: each document remembers the
//!   last event folded into it, and an event at or before that is skipped.
//! - [`EventProjection`]: anything else (several collections, tables of its own through
//!   [`Documents::postgres`]), handed each event decoded.
//!
//! [`Typed`] turns either into a [`Projection`] for a runner or the
//! [`ProjectionHost`](crate::ProjectionHost).

use std::marker::PhantomData;

use async_trait::async_trait;
use cqrs_core::{
    Aggregate, DomainEvent, EventEnvelope, EventFilter, Position, RecordedEvent, Upcasters,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::documents::{Documents, DocumentsExt};
use crate::projection::{ApplyError, Projection};

/// An event of aggregate `A`, decoded, in its envelope.
pub type EventOf<A> = EventEnvelope<<A as Aggregate>::Event>;

/// A named collection of documents of type `D` in one projection's read model: the typed
/// handle through which the projection writes ([`DocumentsExt::read`]) and queries read
/// ([`ProjectionHost::get`](crate::ProjectionHost::get)).
///
/// ```
/// use projections::Collection;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Cart;
/// const CARTS: Collection<Cart> = Collection::new("carts", "by_id");
/// assert_eq!((CARTS.projection(), CARTS.name()), ("carts", "by_id"));
/// ```
pub struct Collection<D> {
    projection: &'static str,
    name: &'static str,
    doc: PhantomData<fn() -> D>,
}

impl<D> Collection<D> {
    /// The collection `name` of `projection`'s read model.
    pub const fn new(projection: &'static str, name: &'static str) -> Self {
        Self {
            projection,
            name,
            doc: PhantomData,
        }
    }

    /// The projection whose read model holds it.
    pub const fn projection(&self) -> &'static str {
        self.projection
    }

    /// The collection's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<D> Clone for Collection<D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for Collection<D> {}

impl<D> std::fmt::Debug for Collection<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.projection, self.name)
    }
}

/// A projection of one aggregate's events, each handed over decoded and upcast.
///
/// ```
/// use async_trait::async_trait;
/// use projections::{ApplyError, Collection, Documents, DocumentsExt, EventOf, EventProjection};
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)] enum CartEvent { ItemAdded { sku: String } }
/// # impl DomainEvent for CartEvent { fn event_type(&self) -> &'static str { "ItemAdded" } }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl Aggregate for Cart {
/// #     const TYPE: &'static str = "cart"; type Command = (); type Event = CartEvent; type Error = Never; type Services = ();
/// #     fn handle(&self, _: (), _: &()) -> Result<Vec<CartEvent>, Never> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &CartEvent) {}
/// # }
///
/// /// How many carts each product was put in.
/// struct Popularity;
/// const COUNTS: Collection<u64> = Collection::new(Popularity::NAME, "counts");
///
/// #[async_trait]
/// impl EventProjection for Popularity {
///     type Aggregate = Cart;
///     const NAME: &'static str = "popularity";
///
///     async fn apply(&self, docs: &mut dyn Documents, event: &EventOf<Cart>) -> Result<(), ApplyError> {
///         let CartEvent::ItemAdded { sku } = &event.event;
///         let count = docs.read(&COUNTS, sku).await?.unwrap_or(0);
///         docs.write(&COUNTS, sku, &(count + 1)).await?;
///         Ok(())
///     }
/// }
/// ```
#[async_trait]
pub trait EventProjection: Send + Sync + 'static {
    /// The aggregate whose events it follows.
    type Aggregate: Aggregate;

    /// A stable name: the key of its checkpoint and read model (see [`Projection::name`]).
    const NAME: &'static str;

    /// The version of its code; raising it rebuilds the read model (see
    /// [`Projection::version`]).
    const VERSION: u32 = 1;

    /// Applies one event to the read model.
    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &EventOf<Self::Aggregate>,
    ) -> Result<(), ApplyError>;
}

/// A read model as a fold: each event changes at most one typed document, chosen by
/// [`key`](Fold::key), by [`evolve`](Fold::evolve).
///
/// Folding the same event twice changes nothing: each document keeps the position of the last
/// event folded into it (stored as `{"at": position, "doc": …}`) and skips any event at or
/// before it. Queries read the documents with
/// [`ProjectionHost::document`](crate::ProjectionHost::document).
///
/// ```
/// use projections::{ApplyError, EventOf, Fold};
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)] enum CartEvent { ItemAdded { sku: String } }
/// # impl DomainEvent for CartEvent { fn event_type(&self) -> &'static str { "ItemAdded" } }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl Aggregate for Cart {
/// #     const TYPE: &'static str = "cart"; type Command = (); type Event = CartEvent; type Error = Never; type Services = ();
/// #     fn handle(&self, _: (), _: &()) -> Result<Vec<CartEvent>, Never> { Ok(vec![]) }
/// #     fn apply(&mut self, _: &CartEvent) {}
/// # }
///
/// /// The items of each cart.
/// struct CartItems;
///
/// impl Fold for CartItems {
///     type Aggregate = Cart;
///     type Doc = Vec<String>;
///     const NAME: &'static str = "cart_items";
///
///     fn key(&self, event: &EventOf<Cart>) -> Option<String> {
///         Some(event.stream_id.to_string())
///     }
///
///     fn evolve(&self, items: Option<Vec<String>>, event: &EventOf<Cart>) -> Result<Option<Vec<String>>, ApplyError> {
///         let CartEvent::ItemAdded { sku } = &event.event;
///         let mut items = items.unwrap_or_default();
///         items.push(sku.clone());
///         Ok(Some(items))
///     }
/// }
/// ```
pub trait Fold: Send + Sync + 'static {
    /// The aggregate whose events it folds.
    type Aggregate: Aggregate;

    /// The document type.
    type Doc: Serialize + DeserializeOwned + Send + Sync;

    /// A stable name: the key of its checkpoint and read model; its documents are the
    /// collection of the same name.
    const NAME: &'static str;

    /// The version of its code; raising it rebuilds the read model.
    const VERSION: u32 = 1;

    /// The key of the document `event` changes, `None` if it changes none.
    fn key(&self, event: &EventOf<Self::Aggregate>) -> Option<String>;

    /// The document after `event` (`None` before the first event of its key). Returning
    /// `None` deletes it.
    fn evolve(
        &self,
        doc: Option<Self::Doc>,
        event: &EventOf<Self::Aggregate>,
    ) -> Result<Option<Self::Doc>, ApplyError>;
}

/// A fold's document as stored: the document and the position of the last event folded into it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Folded<D> {
    /// The position of the last event folded into the document.
    pub at: Position,
    /// The document.
    pub doc: D,
}

/// The collection holding the documents of fold `F`.
pub fn folded<F: Fold>() -> Collection<Folded<F::Doc>> {
    Collection::new(<F as Fold>::NAME, <F as Fold>::NAME)
}

#[async_trait]
impl<F: Fold> EventProjection for F {
    type Aggregate = <F as Fold>::Aggregate;
    const NAME: &'static str = <F as Fold>::NAME;
    const VERSION: u32 = <F as Fold>::VERSION;

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &EventOf<Self::Aggregate>,
    ) -> Result<(), ApplyError> {
        let Some(key) = self.key(event) else {
            return Ok(());
        };
        let collection = folded::<F>();
        let stored = docs.read(&collection, &key).await?;
        if stored.as_ref().is_some_and(|s| s.at >= event.position) {
            return Ok(());
        }
        match self.evolve(stored.map(|s| s.doc), event)? {
            Some(doc) => {
                let folded = Folded {
                    at: event.position,
                    doc,
                };
                docs.write(&collection, &key, &folded).await?;
            }
            None => docs.delete(collection.name(), &key).await?,
        }
        Ok(())
    }
}

/// An [`EventProjection`] (or a [`Fold`]) as a [`Projection`]: it follows the aggregate's
/// category and event types, and decodes each event with the aggregate's upcasters.
pub struct Typed<P> {
    projection: P,
    upcasters: Upcasters,
}

impl<P: EventProjection> Typed<P> {
    /// Wraps `projection`.
    pub fn new(projection: P) -> Self {
        Self {
            projection,
            upcasters: <P::Aggregate as Aggregate>::upcasters(),
        }
    }

    /// The filter of `P`: its aggregate's category and, when the event enum lists them, its
    /// event types.
    pub fn event_filter() -> EventFilter {
        let filter = EventFilter::all().categories([<P::Aggregate as Aggregate>::TYPE]);
        match <<P::Aggregate as Aggregate>::Event as DomainEvent>::event_types() {
            Some(types) => filter.event_types(types.iter().copied()),
            None => filter,
        }
    }
}

#[async_trait]
impl<P: EventProjection> Projection for Typed<P> {
    fn name(&self) -> &str {
        P::NAME
    }

    fn version(&self) -> u32 {
        P::VERSION
    }

    fn filter(&self) -> EventFilter {
        Self::event_filter()
    }

    async fn apply(
        &self,
        docs: &mut dyn Documents,
        event: &RecordedEvent,
    ) -> Result<(), ApplyError> {
        let decoded = event.decode(&self.upcasters)?;
        self.projection.apply(docs, &decoded).await
    }
}
