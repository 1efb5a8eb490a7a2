//! What a receive does with a value's encoding and its descriptors once it has them: decode a `T`
//! ([`decode`], [`decode_with_fds`]), lend a plain `&T` ([`View`]), or hand the bytes to the
//! caller (any closure, for `recv_encoded`).
//!
//! A receive calls its [`Deliver`] from three places (the fast path for a value record, and the
//! out-of-line paths for a value held back and for an announcing record). A closure called from
//! three places is not inlined into the fast path, so its result comes back through memory,
//! which costs as much as the rest of a 64-byte receive; `Deliver::deliver` is `inline(always)`.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use crate::error::DecodeError;
use crate::value::{PlainData, Value, plain};

/// What a receive does with a value's encoding and its descriptors.
pub(crate) trait Deliver {
    type Out;

    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> Self::Out;
}

impl<R, F: FnOnce(&[u8], Vec<OwnedFd>) -> R> Deliver for F {
    type Out = R;

    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> R {
        self(bytes, fds)
    }
}

/// Validates the bytes as a `T` in place and lends it to `F` with the descriptors.
pub(crate) struct View<T, F> {
    f: F,
    _type: PhantomData<fn(&T)>,
}

impl<T, F> View<T, F> {
    pub(crate) fn new(f: F) -> Self {
        Self {
            f,
            _type: PhantomData,
        }
    }
}

impl<T: PlainData, R, F: FnOnce(&T, Vec<OwnedFd>) -> R> Deliver for View<T, F> {
    type Out = Result<R, DecodeError>;

    /// Bytes not aligned for `T` (a type aligned to more than 8 bytes in a ring record) are
    /// validated into a copy instead, out of line.
    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> Self::Out {
        match plain::view::<T>(bytes) {
            Ok(value) => Ok((self.f)(value, fds)),
            Err(DecodeError::Misaligned) => view_copy(bytes, fds, self.f),
            Err(err) => Err(err),
        }
    }
}

#[cold]
#[inline(never)]
fn view_copy<T: PlainData, R>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    f: impl FnOnce(&T, Vec<OwnedFd>) -> R,
) -> Result<R, DecodeError> {
    let value = plain::decode::<T>(bytes)?;
    Ok(f(&value, fds))
}

/// Decodes a value; its descriptors are closed.
pub(crate) fn decode<T: Value>(bytes: &[u8], _fds: Vec<OwnedFd>) -> Result<T, DecodeError> {
    T::decode(bytes)
}

pub(crate) fn decode_with_fds<T: Value>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
) -> Result<(T, Vec<OwnedFd>), DecodeError> {
    Ok((T::decode(bytes)?, fds))
}
