//! What a receive does with a value's encoding and its descriptors once it has them, and how it
//! makes the call's result: [`Decode`] a `T` (with its descriptors: [`DecodeWithFds`]), lend a
//! plain `&T` ([`View`]), or hand the bytes to a closure (`recv_encoded`).
//!
//! A receive's fast path (a value record read straight off the ring) returns what
//! [`Deliver::deliver`] returns, the public call's own `Result`, built once: the caller's value
//! (often returned through memory by the caller's closure) is moved once, not once per `Result`
//! converted on the way out, and each such move reloads it with loads wider than the stores that
//! wrote it, which stall. `deliver` is `inline(always)` because it is called from three places
//! (the fast path and the two out-of-line ones), and a closure called from three places is not
//! inlined.

use std::marker::PhantomData;
use std::os::fd::OwnedFd;

use crate::error::{DecodeError, Error, Fail, RecvTimeoutError, TryRecvError};
use crate::value::{PlainData, Value, plain};

/// The result of one receive call when there is no value: `Result<V, E>` for the three kinds
/// of receive (`Error`, `TryRecvError`, `RecvTimeoutError`).
pub(crate) trait Failed {
    /// "Would wait" (`Empty`, `Timeout`) or broken.
    fn fail(fail: Fail) -> Self;
}

/// The result of one receive call, made from a value.
pub(crate) trait Outcome<V>: Failed {
    fn value(value: V) -> Self;
}

impl<V> Failed for Result<V, Error> {
    /// A blocking receive cannot "would wait"; if a lower layer says so anyway, it is an error.
    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => err,
            Fail::Wait => Error::Os(std::io::ErrorKind::WouldBlock.into()),
        })
    }
}

impl<V> Failed for Result<V, TryRecvError> {
    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => TryRecvError::Broken(err),
            Fail::Wait => TryRecvError::Empty,
        })
    }
}

impl<V> Failed for Result<V, RecvTimeoutError> {
    fn fail(fail: Fail) -> Self {
        Err(match fail {
            Fail::Broken(err) => RecvTimeoutError::Broken(err),
            Fail::Wait => RecvTimeoutError::Timeout,
        })
    }
}

impl<V, E> Outcome<V> for Result<V, E>
where
    Self: Failed,
{
    #[inline(always)]
    fn value(value: V) -> Self {
        Ok(value)
    }
}

/// What a receive does with a value's encoding and its descriptors; its result is the call's.
pub(crate) trait Deliver<O> {
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O;
}

/// A closure's result is the value (`recv_encoded`).
impl<R, O: Outcome<R>, F: FnOnce(&[u8], Vec<OwnedFd>) -> R> Deliver<O> for F {
    #[inline(always)]
    fn deliver(self, bytes: &[u8], fds: Vec<OwnedFd>) -> O {
        O::value(self(bytes, fds))
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
}

/// Decodes into the caller's `T` ([`Value::decode_into`]); its descriptors are closed.
pub(crate) struct DecodeInto<'a, T>(pub(crate) &'a mut T);

impl<T: Value, O: Outcome<()>> Deliver<O> for DecodeInto<'_, T> {
    #[inline(always)]
    fn deliver(self, bytes: &[u8], _fds: Vec<OwnedFd>) -> O {
        match T::decode_into(bytes, self.0) {
            Ok(()) => O::value(()),
            Err(err) => decode_error(err),
        }
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
