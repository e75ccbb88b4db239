//! The type names of a [`DomainEvent`] enum, read from its serde derive, so that a filter
//! built from the enum cannot name a type the enum does not have.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// The variant names (after `#[serde(rename)]`) of an externally tagged serde enum: the event
/// types of the default [`DomainEvent`](crate::DomainEvent) encoding. `None` for any other
/// shape (a struct, an internally tagged enum), which serde does not describe up front.
///
/// ```
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// enum CartEvent {
///     #[serde(rename = "ItemAdded")]
///     Added { sku: String },
///     Emptied,
/// }
///
/// assert_eq!(cqrs_core::event_types::variant_names::<CartEvent>(), Some(&["ItemAdded", "Emptied"][..]));
/// ```
pub fn variant_names<'de, T: de::Deserialize<'de>>() -> Option<&'static [&'static str]> {
    let mut names = None;
    // The derive hands its variant names to `deserialize_enum` before it reads anything; the
    // introspector keeps them and fails, so the value itself is never built.
    let _ = T::deserialize(Introspector { names: &mut names });
    names
}

struct Introspector<'a> {
    names: &'a mut Option<&'static [&'static str]>,
}

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("introspection only")
    }
}

impl std::error::Error for Stop {}

impl de::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

impl<'de> Deserializer<'de> for Introspector<'_> {
    type Error = Stop;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
        Err(Stop)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Stop> {
        *self.names = Some(variants);
        Err(Stop)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct identifier
        ignored_any
    }
}
