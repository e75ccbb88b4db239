//! The type name of a [`DomainEvent`](crate::DomainEvent) value, read from its serde derive,
//! so that an event enum does not spell its variants' names a second time.

use std::fmt;

use serde::ser;

#[derive(Debug)]
struct Stop;

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("introspection only")
    }
}

impl std::error::Error for Stop {}

/// The serde variant name (after `#[serde(rename)]`) of an externally tagged enum value:
/// its event type under the default [`DomainEvent`](crate::DomainEvent) encoding. `None` for
/// any other shape. Nothing is serialised: the name is taken as serde announces the variant.
///
/// ```
/// use serde::Serialize;
///
/// #[derive(Serialize)]
/// enum CartEvent {
///     #[serde(rename = "ItemAdded")]
///     Added { sku: String },
///     Emptied,
/// }
///
/// let added = CartEvent::Added { sku: "MUG".into() };
/// assert_eq!(cqrs_core::event_types::variant_name(&added), Some("ItemAdded"));
/// assert_eq!(cqrs_core::event_types::variant_name(&CartEvent::Emptied), Some("Emptied"));
/// ```
pub fn variant_name<T: ser::Serialize + ?Sized>(value: &T) -> Option<&'static str> {
    let mut name = None;
    let _ = value.serialize(VariantName { name: &mut name });
    name
}

struct VariantName<'a> {
    name: &'a mut Option<&'static str>,
}

impl ser::Error for Stop {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Stop
    }
}

/// Every method but the variant ones stops at once: only an enum variant has a name.
macro_rules! stop {
    ($($method:ident($($arg:ty),*) -> $out:ty;)*) => {
        $(fn $method(self, $(_: $arg),*) -> Result<$out, Stop> { Err(Stop) })*
    };
}

impl ser::Serializer for VariantName<'_> {
    type Ok = ();
    type Error = Stop;
    type SerializeSeq = ser::Impossible<(), Stop>;
    type SerializeTuple = ser::Impossible<(), Stop>;
    type SerializeTupleStruct = ser::Impossible<(), Stop>;
    type SerializeTupleVariant = ser::Impossible<(), Stop>;
    type SerializeMap = ser::Impossible<(), Stop>;
    type SerializeStruct = ser::Impossible<(), Stop>;
    type SerializeStructVariant = ser::Impossible<(), Stop>;

    fn serialize_unit_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
    ) -> Result<(), Stop> {
        *self.name = Some(variant);
        Err(Stop)
    }

    fn serialize_newtype_variant<T: ser::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        *self.name = Some(variant);
        Err(Stop)
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, Stop> {
        *self.name = Some(variant);
        Err(Stop)
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, Stop> {
        *self.name = Some(variant);
        Err(Stop)
    }

    fn serialize_newtype_struct<T: ser::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: &T,
    ) -> Result<(), Stop> {
        Err(Stop)
    }

    fn serialize_some<T: ser::Serialize + ?Sized>(self, _: &T) -> Result<(), Stop> {
        Err(Stop)
    }

    stop! {
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_str(&str) -> ();
        serialize_bytes(&[u8]) -> ();
        serialize_none() -> ();
        serialize_unit() -> ();
        serialize_unit_struct(&'static str) -> ();
        serialize_seq(Option<usize>) -> Self::SerializeSeq;
        serialize_tuple(usize) -> Self::SerializeTuple;
        serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
        serialize_map(Option<usize>) -> Self::SerializeMap;
        serialize_struct(&'static str, usize) -> Self::SerializeStruct;
    }
}
