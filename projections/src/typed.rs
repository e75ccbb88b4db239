//! Typed projections: a read model written against an aggregate's own event type.
//!
//! The aggregate names everything the untyped [`Projection`] asks for by hand: its
//! [`TYPE`](Aggregate::TYPE) is the category followed (so every event type of its enum, and no
//! type name is spelt anywhere), its event enum decodes the events, and its
//! [`upcasters`](Aggregate::upcasters) bring old events to the current shape exactly as the
//! [`Repository`](cqrs_core::Repository) does. An event of the category that the enum does
//! not know (written by a newer release) stops the read model as poison, by the error
//! policy, rather than being passed over unseen.
//!
//! - [`Fold`]: the usual read model, one typed document per key, written as
//!   `evolve(document, event)`.
//! - [`EventProjection`]: anything else (several collections, tables of its own through
//!   [`Documents::postgres`]), handed each event decoded.
//!
//! [`Typed`] turns either into a [`Projection`] for a runner or the
//! [`ProjectionHost`](crate::ProjectionHost).

use std::marker::PhantomData;

use async_trait::async_trait;
use cqrs_core::{Aggregate, EventEnvelope, EventFilter, RecordedEvent, Upcasters};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
/// #     const TYPE: &'static str = "cart"; type Id = str; type Command = (); type Event = CartEvent; type Error = Never; type Services = ();
/// #     fn handle(&self, _: &str, _: (), _: &()) -> Result<Vec<CartEvent>, Never> { Ok(vec![]) }
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
/// [`key`](Fold::key), by [`evolve`](Fold::evolve). The documents are the collection
/// [`COLLECTION`](Fold::COLLECTION); queries read them with
/// [`ProjectionHost::document`](crate::ProjectionHost::document).
///
/// The runner hands each event over once (exactly once, even across crashes), in log
/// order, and a rebuild replays them all into an empty read model: `evolve` must depend on
/// nothing but the document and the event (no clock, no random ids) for a rebuild to give
/// the same read model. `projections::testing::given` (feature `testing`) checks that.
///
/// ```
/// use projections::{ApplyError, EventOf, Fold};
/// # use cqrs_core::{Aggregate, DomainEvent};
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] struct Cart;
/// # #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)] enum CartEvent { ItemAdded { sku: String } }
/// # impl DomainEvent for CartEvent { fn event_type(&self) -> &'static str { "ItemAdded" } }
/// # #[derive(Debug, thiserror::Error)] #[error("never")] struct Never;
/// # impl Aggregate for Cart {
/// #     const TYPE: &'static str = "cart"; type Id = str; type Command = (); type Event = CartEvent; type Error = Never; type Services = ();
/// #     fn handle(&self, _: &str, _: (), _: &()) -> Result<Vec<CartEvent>, Never> { Ok(vec![]) }
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

    /// A stable name: the key of its checkpoint and read model.
    const NAME: &'static str;

    /// The collection its documents are kept in; the projection's name unless set.
    const COLLECTION: &'static str = Self::NAME;

    /// The version of its code; raising it rebuilds the read model.
    const VERSION: u32 = 1;

    /// The key of the document `event` changes, `None` if it changes none. By default one
    /// document per aggregate, under its id.
    fn key(&self, event: &EventOf<Self::Aggregate>) -> Option<String> {
        Some(event.stream_id.aggregate_id().to_owned())
    }

    /// The document after `event` (`None` before the first event of its key). Returning
    /// `None` deletes it.
    fn evolve(
        &self,
        doc: Option<Self::Doc>,
        event: &EventOf<Self::Aggregate>,
    ) -> Result<Option<Self::Doc>, ApplyError>;
}

/// The collection holding the documents of fold `F`.
pub fn collection<F: Fold>() -> Collection<F::Doc> {
    Collection::new(<F as Fold>::NAME, <F as Fold>::COLLECTION)
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
        let collection = collection::<F>();
        let doc = docs.read(&collection, &key).await?;
        match self.evolve(doc, event)? {
            Some(doc) => docs.write(&collection, &key, &doc).await?,
            None => docs.delete(collection.name(), &key).await?,
        }
        Ok(())
    }
}

/// An [`EventProjection`] (or a [`Fold`]) as a [`Projection`]: it follows the aggregate's
/// category and decodes each event with the aggregate's upcasters.
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

    /// The filter of `P`: its aggregate's category.
    pub fn event_filter() -> EventFilter {
        EventFilter::all().categories([<P::Aggregate as Aggregate>::TYPE])
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
