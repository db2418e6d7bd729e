//! `Deserialize` for the event structs that keep unknown fields in an `extra` map, and
//! each one's `FIELD_NAMES`, from one list of its fields.
//!
//! Hand-written (through one macro) instead of `#[serde(flatten)]`: flatten first buffers
//! every field of the object in serde's private `Content` tree and deserializes it a second
//! time from there, which made decoding an event about twice as slow (criterion group
//! `decode`). Here each known key goes straight to its field and every other key to
//! `extra`, in arrival order. A known key given twice is an error, as with derived structs.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// An object key, borrowed from the input when it has no escapes.
pub(super) struct Key<'de>(pub(super) Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Implements `Deserialize` for a struct of optional fields (and `required` ones) and an
/// `extra: Map<String, Value>` that takes every other key, and declares the struct's
/// `FIELD_NAMES`. Invoked once per struct with its typed fields in declaration order, each
/// as `rust_name: "jsonName"`, followed by `required` when the key must be present.
macro_rules! deserialize_with_extra {
    ($ty:ident, $expecting:literal, { $($field:ident: $name:literal $($required:ident)?),* $(,)? }) => {
        impl $ty {
            #[doc = concat!("The JSON names of the typed fields of `", stringify!($ty), "`, in declaration order; ")]
            #[doc = "every other key of the object goes to `extra`."]
            pub const FIELD_NAMES: &'static [&'static str] = &[$($name),*];
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct StructVisitor;
                impl<'de> serde::de::Visitor<'de> for StructVisitor {
                    type Value = $ty;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<$ty, A::Error> {
                        $(let mut $field = None;)*
                        let mut extra = serde_json::Map::new();
                        while let Some($crate::event::de::Key(key)) = map.next_key()? {
                            match &*key {
                                $($name => {
                                    if $field.is_some() {
                                        return Err(serde::de::Error::duplicate_field($name));
                                    }
                                    $field = Some(map.next_value()?);
                                })*
                                _ => {
                                    extra.insert(key.into_owned(), map.next_value()?);
                                }
                            }
                        }
                        Ok($ty {
                            $($field: $crate::event::de::field_value!($field, $name $(, $required)?),)*
                            extra,
                        })
                    }
                }
                deserializer.deserialize_map(StructVisitor)
            }
        }
    };
}

/// The value of one field once the object is read: an optional field's `null` counts as
/// absent, like a missing key; a missing `required` field is an error.
macro_rules! field_value {
    ($field:ident, $name:literal) => {
        $field.flatten()
    };
    ($field:ident, $name:literal, required) => {
        $field.ok_or_else(|| serde::de::Error::missing_field($name))?
    };
}

pub(super) use deserialize_with_extra;
pub(super) use field_value;
