//! What a pool hands back: a [`Reply`] per submitted item (its result, or the item itself when
//! its worker went down), and [`SubmitError`], which returns an item that could not be submitted.

use std::fmt;
use std::process::ExitStatus;
use std::sync::Arc;

use crate::error::Error;

/// The answer to one submitted item.
#[derive(Debug)]
pub struct Reply<In, Out> {
    /// The id [`submit`](crate::Pool::submit) returned for the item.
    pub id: u64,
    /// The worker that had it.
    pub worker: usize,
    /// The worker's result, or the item back if the worker went down before answering.
    pub result: Result<Out, Lost<In>>,
    /// The item, handed back with its result so that the caller can reuse it (its buffers, say:
    /// the pool keeps every item until it is answered, to hand it back if its worker goes
    /// down). `None` when the worker went down: the item is in [`Lost`] then.
    pub item: Option<In>,
}

/// An item whose worker went down before it answered: it is handed back, never silently dropped.
/// The pool reports each such item once, and no result for it comes later.
#[derive(Debug)]
pub struct Lost<In> {
    /// The item, as it was submitted.
    pub item: In,
    /// How the worker's process ended.
    pub status: ExitStatus,
    /// Why the pool stopped the worker, when it did: the worker broke the protocol (a reply that
    /// does not decode, or for an item it does not have) or its channel failed. `None` when the
    /// worker went away by itself (it exited, or something else killed it).
    pub cause: Option<Arc<Error>>,
}

/// An item that [`submit`](crate::Pool::submit) (or its `try_`/`_timeout` forms) did not take,
/// handed back with the reason: `E` is [`Error`], [`TrySendError`](crate::TrySendError) or
/// [`SendTimeoutError`](crate::SendTimeoutError).
pub struct SubmitError<In, E = Error> {
    /// The item, untouched.
    pub item: In,
    /// Why it was not taken.
    pub error: E,
}

impl<In, E> SubmitError<In, E> {
    /// The item back.
    pub fn into_item(self) -> In {
        self.item
    }
}

impl<In> SubmitError<In, crate::TrySendError> {
    /// Whether every worker was full (nothing else went wrong).
    pub fn is_full(&self) -> bool {
        self.error.is_full()
    }
}

impl<In> SubmitError<In, crate::SendTimeoutError> {
    /// Whether every worker stayed full until the timeout.
    pub fn is_timeout(&self) -> bool {
        self.error.is_timeout()
    }
}

impl<In, E: fmt::Debug> fmt::Debug for SubmitError<In, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubmitError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<In, E: fmt::Display> fmt::Display for SubmitError<In, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "item not submitted: {}", self.error)
    }
}

impl<In, E: std::error::Error + 'static> std::error::Error for SubmitError<In, E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl<In> fmt::Display for Lost<In> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the worker went down ({})", self.status)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl<In: fmt::Debug> std::error::Error for Lost<In> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_deref()
            .map(|err| err as &(dyn std::error::Error + 'static))
    }
}
