//! sp's serde serializer. It writes postcard's wire format (postcard 1.x, which the receiving
//! side decodes with postcard itself) into a [`Sink`].
//!
//! Why not postcard's own serializer: it builds every integer as a varint in a stack buffer and
//! hands that buffer to its flavor, which copies it out again. An integer-heavy value spends most
//! of its encoding there. This one writes each varint straight into the output whenever ten bytes
//! are at hand ([`Sink::varint`]). The bytes are the same: the tests compare them with
//! `postcard::to_slice` over the whole serde data model.
//!
//! The format, as postcard writes it (and as docs/protocol.md states it for a peer):
//!
//! - `bool` and `u8`/`i8`: one byte; `f32`/`f64`: their little-endian bits;
//! - other integers: LEB128 varints, signed ones zigzag-mapped first;
//! - `char`, `str` and byte buffers: the length as a varint, then the (UTF-8) bytes;
//! - `Option`: a byte 0 or 1, then the value; unit and unit structs: nothing;
//! - sequences and maps: the count as a varint (it must be known), then the elements;
//! - tuples and structs: the fields in order; enum variants: the index as a varint, then the
//!   content.
//!
//! Errors are postcard's, so that the caller maps both directions' errors the same way.

use core::fmt::{self, Write as _};

use postcard::{Error, Result};
use serde::{Serialize, ser};

use super::flavor::Sink;

/// Encodes `value` into `out`; returns what the sink makes of it when finished.
pub(super) fn encode<T: Serialize + ?Sized, S: Sink>(value: &T, out: S) -> Result<S::Output> {
    let mut enc = Encoder { out };
    value.serialize(&mut enc)?;
    enc.out.finish()
}

/// The serializer: all it holds is where the bytes go.
pub(super) struct Encoder<S> {
    out: S,
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

impl<S: Sink> Encoder<S> {
    fn varint_u128(&mut self, mut v: u128) -> Result<()> {
        let mut buf = [0u8; 19];
        let mut i = 0;
        while v >= 0x80 {
            buf[i] = v as u8 | 0x80;
            v >>= 7;
            i += 1;
        }
        buf[i] = v as u8;
        self.out.extend(&buf[..=i])
    }

    fn len(&mut self, len: Option<usize>) -> Result<()> {
        let len = len.ok_or(Error::SerializeSeqLengthUnknown)?;
        self.out.varint(len as u64)
    }
}

impl<S: Sink> ser::Serializer for &mut Encoder<S> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn serialize_bool(self, v: bool) -> Result<()> {
        self.out.push(u8::from(v))
    }

    #[inline]
    fn serialize_i8(self, v: i8) -> Result<()> {
        self.out.push(v as u8)
    }

    #[inline]
    fn serialize_i16(self, v: i16) -> Result<()> {
        self.out.varint(zigzag(v.into()))
    }

    #[inline]
    fn serialize_i32(self, v: i32) -> Result<()> {
        self.out.varint(zigzag(v.into()))
    }

    #[inline]
    fn serialize_i64(self, v: i64) -> Result<()> {
        self.out.varint(zigzag(v))
    }

    fn serialize_i128(self, v: i128) -> Result<()> {
        self.varint_u128(((v << 1) ^ (v >> 127)) as u128)
    }

    #[inline]
    fn serialize_u8(self, v: u8) -> Result<()> {
        self.out.push(v)
    }

    #[inline]
    fn serialize_u16(self, v: u16) -> Result<()> {
        self.out.varint(v.into())
    }

    #[inline]
    fn serialize_u32(self, v: u32) -> Result<()> {
        self.out.varint(v.into())
    }

    #[inline]
    fn serialize_u64(self, v: u64) -> Result<()> {
        self.out.varint(v)
    }

    fn serialize_u128(self, v: u128) -> Result<()> {
        self.varint_u128(v)
    }

    #[inline]
    fn serialize_f32(self, v: f32) -> Result<()> {
        self.out.extend(&v.to_bits().to_le_bytes())
    }

    #[inline]
    fn serialize_f64(self, v: f64) -> Result<()> {
        self.out.extend(&v.to_bits().to_le_bytes())
    }

    fn serialize_char(self, v: char) -> Result<()> {
        self.serialize_str(v.encode_utf8(&mut [0; 4]))
    }

    #[inline]
    fn serialize_str(self, v: &str) -> Result<()> {
        self.serialize_bytes(v.as_bytes())
    }

    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> Result<()> {
        self.out.varint(v.len() as u64)?;
        self.out.extend(v)
    }

    #[inline]
    fn serialize_none(self) -> Result<()> {
        self.out.push(0)
    }

    #[inline]
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        self.out.push(1)?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_unit(self) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        index: u32,
        _: &'static str,
    ) -> Result<()> {
        self.out.varint(index.into())
    }

    #[inline]
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<()> {
        value.serialize(self)
    }

    #[inline]
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<()> {
        self.out.varint(index.into())?;
        value.serialize(self)
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Self> {
        self.len(len)?;
        Ok(self)
    }

    #[inline]
    fn serialize_tuple(self, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.out.varint(index.into())?;
        Ok(self)
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Self> {
        self.len(len)?;
        Ok(self)
    }

    #[inline]
    fn serialize_struct(self, _name: &'static str, _len: usize) -> Result<Self> {
        Ok(self)
    }

    #[inline]
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self> {
        self.out.varint(index.into())?;
        Ok(self)
    }

    /// A string shown by `Display`: formatted twice, once to count its bytes (the length comes
    /// first) and once to write them, as postcard does.
    fn collect_str<T: fmt::Display + ?Sized>(self, value: &T) -> Result<()> {
        struct Count(usize);
        impl fmt::Write for Count {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0 += s.len();
                Ok(())
            }
        }
        struct Text<'a, S>(&'a mut S);
        impl<S: Sink> fmt::Write for Text<'_, S> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.0.extend(s.as_bytes()).map_err(|_| fmt::Error)
            }
        }
        let mut count = Count(0);
        write!(count, "{value}").map_err(|_| Error::CollectStrError)?;
        self.out.varint(count.0 as u64)?;
        write!(Text(&mut self.out), "{value}").map_err(|_| Error::CollectStrError)
    }
}

/// The compound forms write their parts one after the other, with nothing between or after.
macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ty)?) => {
        impl<S: Sink> ser::$trait for &mut Encoder<S> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, $(_key: $key,)? value: &T) -> Result<()> {
                value.serialize(&mut **self)
            }

            #[inline]
            fn end(self) -> Result<()> {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);
compound!(SerializeStruct, serialize_field, &'static str);
compound!(SerializeStructVariant, serialize_field, &'static str);

impl<S: Sink> ser::SerializeMap for &mut Encoder<S> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        key.serialize(&mut **self)
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        value.serialize(&mut **self)
    }

    #[inline]
    fn end(self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
#[path = "encoder_tests.rs"]
mod tests;
