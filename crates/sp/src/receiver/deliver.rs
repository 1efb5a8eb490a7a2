//! What a receive does with a value's encoding and its descriptors once it has them, and how it
//! makes the call's result: [`Decode`] a `T` (with its descriptors: [`DecodeWithFds`]), lend a
//! plain `&T` ([`View`]), or hand the bytes to a closure (`recv_encoded`).
//!
//! A receive's fast path (a value record read straight off the ring) returns what
//! [`Deliver::deliver`] returns, the public call's own `Result`: built once, with the caller's
//! value moved into it once. A chain of results converted on the way out (the decode's, the
//! wait's, the call's) moved a value returned through memory several times, which cost as much
//! as the rest of a 64-byte receive; so did a closure called from three places, which is not
//! inlined. `deliver` is `inline(always)`.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use crate::error::{DecodeError, Error, Fail, RecvTimeoutError, TryRecvError};
use crate::value::{PlainData, Value, plain};

/// The result of one receive call, made from a value or from what went wrong: `Result<V, E>`
/// for the three kinds of receive (`Error`, `TryRecvError`, `RecvTimeoutError`).
pub(crate) trait Outcome<V> {
    fn value(value: V) -> Self;

    /// "Would wait" (`Empty`, `Timeout`) or broken.
    fn fail(fail: Fail) -> Self;
}

impl<V> Outcome<V> for Result<V, Error> {
    #[inline(always)]
    fn value(value: V) -> Self {
        Ok(value)
    }

    /// A blocking receive cannot "would wait"; if a lower layer says so anyway, it is an error.
    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => err,
            Fail::Wait => Error::Os(std::io::ErrorKind::WouldBlock.into()),
        })
    }
}

impl<V> Outcome<V> for Result<V, TryRecvError> {
    #[inline(always)]
    fn value(value: V) -> Self {
        Ok(value)
    }

    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => TryRecvError::Broken(err),
            Fail::Wait => TryRecvError::Empty,
        })
    }
}

impl<V> Outcome<V> for Result<V, RecvTimeoutError> {
    #[inline(always)]
    fn value(value: V) -> Self {
        Ok(value)
    }

    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => RecvTimeoutError::Broken(err),
            Fail::Wait => RecvTimeoutError::Timeout,
        })
    }
}

/// What a receive does with a value's encoding and its descriptors; its result is the call's.
pub(crate) trait Deliver<O> {
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O;

    /// The call's result when there is no value to deliver.
    fn fail(fail: Fail) -> O;
}

/// A closure's result is the value (`recv_encoded`).
impl<R, O: Outcome<R>, F: FnOnce(&[u8], Vec<OwnedFd>) -> R> Deliver<O> for F {
    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O {
        O::value(self(bytes, fds))
    }

    fn fail(fail: Fail) -> O {
        O::fail(fail)
    }
}

/// Decodes a `T`; its descriptors are closed.
pub(crate) struct Decode<T>(PhantomData<fn() -> T>);

impl<T> Decode<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Value, O: Outcome<T>> Deliver<O> for Decode<T> {
    #[inline(always)]
    fn deliver(self, bytes: &[u8], _fds: Vec<OwnedFd>) -> O {
        match T::decode(bytes) {
            Ok(value) => O::value(value),
            Err(err) => decode_error(err),
        }
    }

    fn fail(fail: Fail) -> O {
        O::fail(fail)
    }
}

/// Decodes a `T` and keeps its descriptors.
pub(crate) struct DecodeWithFds<T>(PhantomData<fn() -> T>);

impl<T> DecodeWithFds<T> {
    pub(crate) fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Value, O: Outcome<(T, Vec<OwnedFd>)>> Deliver<O> for DecodeWithFds<T> {
    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O {
        match T::decode(bytes) {
            Ok(value) => O::value((value, fds)),
            Err(err) => decode_error(err),
        }
    }

    fn fail(fail: Fail) -> O {
        O::fail(fail)
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

impl<T: PlainData, R, O: Outcome<R>, F: FnOnce(&T, Vec<OwnedFd>) -> R> Deliver<O> for View<T, F> {
    /// Bytes not aligned for `T` (a type aligned to more than 8 bytes in a ring record) are
    /// validated into a copy instead, out of line.
    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O {
        match plain::view::<T>(bytes) {
            Ok(value) => O::value((self.f)(value, fds)),
            Err(DecodeError::Misaligned) => view_copy(bytes, fds, self.f),
            Err(err) => decode_error(err),
        }
    }

    fn fail(fail: Fail) -> O {
        O::fail(fail)
    }
}

#[cold]
#[inline(never)]
fn view_copy<T: PlainData, R, O: Outcome<R>>(
    bytes: &[u8],
    fds: Vec<OwnedFd>,
    f: impl FnOnce(&T, Vec<OwnedFd>) -> R,
) -> O {
    match plain::decode::<T>(bytes) {
        Ok(value) => O::value(f(&value, fds)),
        Err(err) => decode_error(err),
    }
}

/// A record that is not a `T`: the call is broken with [`Error::Decode`] (the next goes on).
#[cold]
fn decode_error<V, O: Outcome<V>>(err: DecodeError) -> O {
    O::fail(Fail::Broken(Error::Decode(err)))
}
