//! How a value becomes the bytes of a record and back: postcard for any serde type, the value's
//! own bytes for plain data.
//!
//! [`Value`] has two kinds of implementation, and a type has exactly one of them:
//!
//! - every `T: Serialize + DeserializeOwned` gets the blanket impl, which encodes in postcard's
//!   format straight into the slice it is given (the reserved ring slot, or the blob's pieces),
//!   with sp's own serializer (`value/encoder.rs`: the same bytes, each varint written in place),
//!   and decodes with postcard from a bounded slice;
//! - a plain-data type (`#[repr(C)]` or similar, deriving zerocopy's `TryFromBytes`, `IntoBytes`,
//!   `KnownLayout` and `Immutable`) gets its impl from [`plain_data!`](crate::plain_data): the
//!   encoding is the value's bytes, and bytes from a peer become a value only after zerocopy has
//!   checked that they are a valid bit pattern (enum discriminants, bools).
//!
//! Rust's coherence rules enforce "one or the other" for a type defined in the user's crate: the
//! macro's impl conflicts with the blanket impl if the type also implements `Serialize` and
//! `Deserialize`, and the compiler says so. Foreign plain types (arrays of integers, say) go in the
//! [`Plain`] wrapper.
//!
//! # What a peer's bytes can cost the decoder
//!
//! postcard reads from a slice of exactly the record's length and checks every length it reads
//! against what is left of it: a string or byte buffer is taken from the slice itself, and a
//! sequence whose declared length exceeds the bytes left gets no pre-allocation (serde's own cap,
//! 1 MiB, bounds the rest). So a hostile record cannot make the receiver allocate more than a small
//! multiple of its own length. Two limits remain with the type, not the bytes: a sequence of
//! elements that encode to zero bytes (`Vec<()>`) is as long as the declared count says, and a
//! recursive type nests as deep as the record allows; keep such types off channels from peers you
//! do not trust.

use serde::Serialize;
use serde::de::DeserializeOwned;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, TryFromBytes};

use crate::error::{DecodeError, EncodeError};

mod encoder;
mod flavor;

use flavor::{Count, Out, PIECE, Pieces};

/// A type that can travel through an sp channel.
///
/// Implemented for every serde type (postcard encoding) and, through [`plain_data!`](crate::plain_data),
/// for plain-data types (their own bytes). A hand-written impl is possible too: it is then an
/// [`Encoding::Custom`].
pub trait Value: Sized {
    /// How values of this type are encoded; the two sides compare it at set-up.
    const ENCODING: Encoding;

    /// Encodes `self` into the start of `out`; returns how many bytes it wrote.
    ///
    /// # Errors
    /// [`EncodeError::BufferFull`] if `out` is too short (sp then asks [`encoded_len`](Self::encoded_len)
    /// and tries again with room enough); any other error is final.
    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError>;

    /// The exact number of bytes [`encode`](Self::encode) writes.
    ///
    /// # Errors
    /// As [`encode`](Self::encode), never `BufferFull`.
    fn encoded_len(&self) -> Result<usize, EncodeError>;

    /// Decodes a value from exactly the bytes of one record.
    ///
    /// # Errors
    /// A [`DecodeError`] naming what is wrong with the bytes.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Decodes the bytes of one record into `place`, reusing what it holds where the encoding
    /// can (serde types: `Deserialize::deserialize_in_place`, which keeps the capacity of strings
    /// and vectors). The default decodes a new value and moves it in.
    ///
    /// # Errors
    /// As [`decode`](Self::decode). On an error `place` holds some valid value, not necessarily
    /// the one it held before.
    #[inline]
    fn decode_into(bytes: &[u8], place: &mut Self) -> Result<(), DecodeError> {
        *place = Self::decode(bytes)?;
        Ok(())
    }

    /// Encodes `self` as [`encode`](Self::encode) does, handing the bytes to `sink` in order, in
    /// pieces, through `scratch` (resized as needed; what it holds on entry is ignored); returns
    /// how many bytes were handed over. This is how a value sent as a blob is written: straight
    /// into the blob's memfd as the encoding is produced, with no pass for its length first.
    /// The default encodes the whole value into `scratch` and hands it over in one piece.
    ///
    /// # Errors
    /// [`EncodeError::BufferFull`] if `sink` refused a piece (returned `false`); otherwise as
    /// [`encode`](Self::encode).
    fn encode_in_pieces(
        &self,
        scratch: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize, EncodeError> {
        let len = self.encoded_len()?;
        scratch.resize(len, 0);
        let used = self.encode(scratch)?;
        if sink(&scratch[..used]) {
            Ok(used)
        } else {
            Err(EncodeError::BufferFull)
        }
    }
}

/// How a [`Value`] type is encoded (sent in the HELLO at set-up, so that two sides whose types
/// disagree find out then).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// postcard (any serde type).
    Postcard,
    /// The value's own bytes, `size` of them.
    Plain {
        /// `size_of::<T>()`.
        size: usize,
    },
    /// A hand-written [`Value`] impl; not compared at set-up.
    Custom,
}

/// A plain-data type: a value is its bytes. Implemented by [`plain_data!`](crate::plain_data)
/// (with [`Value`]) and by [`Plain`].
///
/// This gives the plain-data operations: [`Sender::send_with`](crate::Sender::send_with) writes
/// the value in place, and [`Receiver::recv_in_place`](crate::Receiver::recv_in_place) reads it
/// without a copy where that is sound.
pub trait PlainData: Value + TryFromBytes + IntoBytes + KnownLayout + Immutable {}

/// Wraps a plain-data type from another crate whose every bit pattern is valid (an array of
/// integers, say) so that it can be sent as plain data: `Sender<Plain<[u64; 8]>>`. Types of this
/// crate, and types with invalid bit patterns (enums, bools), use [`plain_data!`](crate::plain_data).
///
/// # Examples
/// ```
/// let (mut tx, mut rx) = sp::channel::<sp::Plain<[u64; 8]>>(&sp::Config::new())?;
/// tx.send(&sp::Plain([7; 8]))?;
/// assert_eq!(rx.recv()?.0, [7; 8]);
/// # Ok::<(), sp::Error>(())
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(transparent)]
pub struct Plain<T>(pub T);

impl<T: Serialize + DeserializeOwned> Value for T {
    const ENCODING: Encoding = Encoding::Postcard;

    #[inline]
    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        match encoder::encode(self, Out::new(out)) {
            Ok(used) => Ok(used),
            Err(err) => Err(err.into()),
        }
    }

    fn encode_in_pieces(
        &self,
        scratch: &mut Vec<u8>,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<usize, EncodeError> {
        if scratch.len() < PIECE {
            scratch.resize(PIECE, 0);
        }
        encoder::encode(self, Pieces::new(scratch, sink)).map_err(EncodeError::from)
    }

    fn encoded_len(&self) -> Result<usize, EncodeError> {
        encoder::encode(self, Count::default()).map_err(EncodeError::from)
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (value, rest) = postcard::take_from_bytes::<Self>(bytes)?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { n: rest.len() });
        }
        Ok(value)
    }

    #[inline]
    fn decode_into(bytes: &[u8], place: &mut Self) -> Result<(), DecodeError> {
        let mut de = postcard::Deserializer::from_bytes(bytes);
        Self::deserialize_in_place(&mut de, place)?;
        let rest = de.finalize()?;
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes { n: rest.len() });
        }
        Ok(())
    }
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable> Value for Plain<T> {
    const ENCODING: Encoding = Encoding::Plain {
        size: size_of::<T>(),
    };

    #[inline]
    fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        plain::encode(self, out)
    }

    fn encoded_len(&self) -> Result<usize, EncodeError> {
        Ok(size_of::<T>())
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        plain::decode(bytes)
    }
}

impl<T: FromBytes + IntoBytes + KnownLayout + Immutable> PlainData for Plain<T> {}

/// Implements [`Value`] and [`PlainData`] for plain-data types of this crate: their encoding is
/// their bytes.
///
/// The type must derive zerocopy's `TryFromBytes`, `IntoBytes`, `KnownLayout` and `Immutable`
/// (`IntoBytes` refuses types with padding, so no uninitialised byte is ever sent), and must not
/// also implement serde's `Serialize` + `Deserialize` (the compiler reports the conflict). sp
/// re-exports zerocopy: derive through `sp::zerocopy` with `#[zerocopy(crate = "sp::zerocopy")]`.
///
/// # Examples
/// ```
/// use sp::zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};
///
/// #[derive(Debug, PartialEq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[zerocopy(crate = "sp::zerocopy")]
/// #[repr(C)]
/// struct Tick {
///     seq: u64,
///     price: u32,
///     side: Side,
///     pad: [u8; 3],
/// }
///
/// #[derive(Debug, PartialEq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
/// #[zerocopy(crate = "sp::zerocopy")]
/// #[repr(u8)]
/// enum Side {
///     Buy = 1,
///     Sell = 2,
/// }
///
/// sp::plain_data!(Tick);
///
/// let (mut tx, mut rx) = sp::channel::<Tick>(&sp::Config::new())?;
/// tx.send(&Tick { seq: 1, price: 100, side: Side::Sell, pad: [0; 3] })?;
/// assert_eq!(rx.recv()?.side, Side::Sell);
/// # Ok::<(), sp::Error>(())
/// ```
#[macro_export]
macro_rules! plain_data {
    ($($ty:ty),+ $(,)?) => {
        $(
            impl $crate::Value for $ty {
                const ENCODING: $crate::Encoding = $crate::Encoding::Plain {
                    size: ::core::mem::size_of::<$ty>(),
                };

                #[inline]
                fn encode(&self, out: &mut [u8]) -> ::core::result::Result<usize, $crate::EncodeError> {
                    $crate::__private::plain_encode(self, out)
                }

                fn encoded_len(&self) -> ::core::result::Result<usize, $crate::EncodeError> {
                    ::core::result::Result::Ok(::core::mem::size_of::<$ty>())
                }

                #[inline]
                fn decode(bytes: &[u8]) -> ::core::result::Result<Self, $crate::DecodeError> {
                    $crate::__private::plain_decode(bytes)
                }
            }

            impl $crate::PlainData for $ty {}
        )+
    };
}

/// The encoding of plain data, shared by [`Plain`] and [`plain_data!`](crate::plain_data) (whose
/// expansion in the user's crate calls these through `sp::__private`).
#[doc(hidden)]
pub mod __private {
    use zerocopy::{Immutable, IntoBytes, KnownLayout, TryFromBytes};

    use crate::error::{DecodeError, EncodeError};

    /// Copies the value's bytes into the start of `out`.
    #[inline]
    pub fn plain_encode<T: IntoBytes + Immutable>(
        value: &T,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        let bytes = value.as_bytes();
        match out.get_mut(..bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                Ok(bytes.len())
            }
            None => Err(EncodeError::BufferFull),
        }
    }

    /// A validated copy of the value in `bytes` (exactly `size_of::<T>()` of them).
    #[inline]
    pub fn plain_decode<T: TryFromBytes + KnownLayout + Immutable>(
        bytes: &[u8],
    ) -> Result<T, DecodeError> {
        if bytes.len() != size_of::<T>() {
            return Err(DecodeError::Size {
                len: bytes.len(),
                want: size_of::<T>(),
            });
        }
        T::try_read_from_bytes(bytes).map_err(|_| DecodeError::InvalidBitPattern)
    }
}

pub(crate) mod plain {
    use zerocopy::{Immutable, KnownLayout, TryFromBytes};

    use crate::error::DecodeError;

    pub(crate) use super::__private::{plain_decode as decode, plain_encode as encode};

    /// A validated reference to the value in `bytes`, in place.
    #[inline]
    pub(crate) fn view<T: TryFromBytes + KnownLayout + Immutable>(
        bytes: &[u8],
    ) -> Result<&T, DecodeError> {
        if bytes.len() != size_of::<T>() {
            return Err(DecodeError::Size {
                len: bytes.len(),
                want: size_of::<T>(),
            });
        }
        T::try_ref_from_bytes(bytes).map_err(|err| match err {
            zerocopy::ConvertError::Alignment(_) => DecodeError::Misaligned,
            zerocopy::ConvertError::Size(_) => DecodeError::Size {
                len: bytes.len(),
                want: size_of::<T>(),
            },
            zerocopy::ConvertError::Validity(_) => DecodeError::InvalidBitPattern,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        seq: u64,
        name: String,
        values: Vec<u32>,
    }

    #[derive(Debug, PartialEq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(C)]
    struct Pod {
        seq: u64,
        flag: bool,
        side: Side,
        pad: [u8; 6],
    }

    #[derive(Debug, PartialEq, TryFromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(u8)]
    enum Side {
        Buy = 1,
        Sell = 2,
    }

    crate::plain_data!(Pod);

    #[test]
    fn both_enum_variants_decode() {
        let mut buf = [0u8; 16];
        for side in [Side::Buy, Side::Sell] {
            let pod = Pod {
                seq: 1,
                flag: false,
                side,
                pad: [0; 6],
            };
            pod.encode(&mut buf).unwrap();
            assert_eq!(Pod::decode(&buf).unwrap(), pod);
        }
    }

    #[test]
    fn postcard_round_trip_and_exact_length() {
        let rec = Rec {
            seq: 7,
            name: "sixteen-chars-ok".into(),
            values: (0..8).collect(),
        };
        let mut buf = [0u8; 64];
        let n = rec.encode(&mut buf).unwrap();
        assert_eq!(n, rec.encoded_len().unwrap());
        assert_eq!(Rec::decode(&buf[..n]).unwrap(), rec);
        assert_eq!(rec.encode(&mut buf[..n - 1]), Err(EncodeError::BufferFull));
        assert_eq!(
            Rec::decode(&buf[..n + 1]),
            Err(DecodeError::TrailingBytes { n: 1 })
        );
        assert_eq!(Rec::decode(&buf[..n - 1]), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn plain_round_trip_and_validation() {
        let pod = Pod {
            seq: 3,
            flag: true,
            side: Side::Sell,
            pad: [0; 6],
        };
        assert_eq!(Pod::ENCODING, Encoding::Plain { size: 16 });
        let mut buf = [0u8; 16];
        assert_eq!(pod.encode(&mut buf).unwrap(), 16);
        assert_eq!(Pod::decode(&buf).unwrap(), pod);
        let mut bad = buf;
        bad[9] = 3; // no such `Side`
        assert_eq!(Pod::decode(&bad), Err(DecodeError::InvalidBitPattern));
        bad = buf;
        bad[8] = 2; // a bool of 2
        assert_eq!(Pod::decode(&bad), Err(DecodeError::InvalidBitPattern));
        assert_eq!(
            Pod::decode(&buf[..15]),
            Err(DecodeError::Size { len: 15, want: 16 })
        );
        assert_eq!(pod.encode(&mut buf[..15]), Err(EncodeError::BufferFull));
    }

    #[test]
    fn plain_wrapper_for_foreign_types() {
        let v = Plain([1u64, 2, 3]);
        let mut buf = [0u8; 24];
        v.encode(&mut buf).unwrap();
        assert_eq!(Plain::<[u64; 3]>::decode(&buf).unwrap(), v);
        assert_eq!(u64::ENCODING, Encoding::Postcard);
    }

    proptest::proptest! {
        /// Any bytes at all: a value or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Rec::decode(&bytes);
            let _ = Pod::decode(&bytes);
            let _ = <(String, Vec<u64>, Option<char>)>::decode(&bytes);
        }

        #[test]
        fn postcard_round_trips(seq: u64, name in ".{0,40}", values in proptest::collection::vec(proptest::prelude::any::<u32>(), 0..40)) {
            let rec = Rec { seq, name, values };
            let mut buf = vec![0u8; rec.encoded_len().unwrap()];
            let n = rec.encode(&mut buf).unwrap();
            proptest::prop_assert_eq!(n, buf.len());
            proptest::prop_assert_eq!(Rec::decode(&buf).unwrap(), rec);
        }
    }
}
