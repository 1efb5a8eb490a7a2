//! The one wait behind every blocking, `try_` and `_timeout` form of a send or receive: how long
//! an operation may wait ([`Wait`]), why it stopped without its result ([`Stop`]), and how each
//! form turns that into its own error type.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;

use crate::end::poll_one;
use crate::error::{Error, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};

/// How long an operation may wait for the socket.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Until it can proceed (the blocking forms).
    Forever,
    /// Not at all (the `try_` forms).
    Never,
    /// Until this instant (the `_timeout` forms).
    Until(Instant),
}

/// Why a waiting operation ended without its result: its wait ran out, or it broke. Each public
/// form turns this into its own error type.
///
/// Invariant: "would wait" and "broken" never share a public enum; `Waited` becomes `Empty`,
/// `Full` or `Timeout` of the form's own type, and a blocking form cannot produce it.
#[derive(Debug)]
pub(crate) enum Stop {
    /// [`Wait::Never`] found nothing to do, or [`Wait::Until`] passed its instant.
    Waited,
    /// The operation failed.
    Broken(Error),
}

impl Wait {
    /// Until `timeout` from now; a timeout too long to add to the clock is no limit.
    pub(crate) fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }

    /// Whether the socket call itself may block (the blocking forms let the kernel wait).
    pub(crate) fn kernel_blocks(self) -> bool {
        matches!(self, Self::Forever)
    }

    /// After a socket call found nothing to do (`EAGAIN`): waits per `self` until `fd` reports
    /// one of `events`, or stops with [`Stop::Waited`].
    pub(crate) fn until_ready(self, fd: BorrowedFd<'_>, events: PollFlags) -> Result<(), Stop> {
        let deadline = match self {
            Self::Never => return Err(Stop::Waited),
            Self::Forever => None,
            Self::Until(deadline) => Some(deadline),
        };
        match poll_one(fd, events, deadline)? {
            Some(_) => Ok(()),
            None => Err(Stop::Waited),
        }
    }
}

impl Stop {
    /// The error of a blocking form, which waits without limit and so never stops with
    /// [`Stop::Waited`].
    pub(crate) fn blocking(self) -> Error {
        match self {
            Self::Broken(err) => err,
            Self::Waited => unreachable!("an operation without a time limit stopped waiting"),
        }
    }
}

impl From<Error> for Stop {
    fn from(err: Error) -> Self {
        Self::Broken(err)
    }
}

impl From<io::Error> for Stop {
    fn from(err: io::Error) -> Self {
        Self::Broken(err.into())
    }
}

impl From<Stop> for TryRecvError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Waited => Self::Empty,
            Stop::Broken(err) => Self::Broken(err),
        }
    }
}

impl From<Stop> for RecvTimeoutError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Waited => Self::Timeout,
            Stop::Broken(err) => Self::Broken(err),
        }
    }
}

impl From<Stop> for TrySendError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Waited => Self::Full,
            Stop::Broken(err) => Self::Broken(err),
        }
    }
}

impl From<Stop> for SendTimeoutError {
    fn from(stop: Stop) -> Self {
        match stop {
            Stop::Waited => Self::Timeout,
            Stop::Broken(err) => Self::Broken(err),
        }
    }
}

/// Calls `f` again while it fails with `EINTR`.
pub(crate) fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}
