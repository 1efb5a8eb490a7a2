//! How long one operation may wait: the single internal behind every `try_*`, plain and
//! `*_timeout` operation (crossbeam-channel's `deadline: Option<Instant>`, with "not at all" apart).

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::error::{Error, Fail};

/// How long an operation may wait.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Limit {
    /// Not at all (`try_*`).
    Now,
    /// Until this instant (`*_timeout`).
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Limit {
    /// `timeout` from now; a timeout too long for the clock is no limit.
    pub(crate) fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }

    /// What is left of the limit, for the sp-shm and sp-core `*_timeout` calls; `None` for
    /// `Forever`, zero for `Now`.
    #[inline]
    pub(crate) fn remaining(self) -> Option<Duration> {
        match self {
            Self::Now => Some(Duration::ZERO),
            Self::Until(deadline) => Some(deadline.saturating_duration_since(Instant::now())),
            Self::Forever => None,
        }
    }
}

/// `poll(2)` on one descriptor for `events` until `limit`; `Ok(())` when it is ready (or hung up:
/// the next call on it reports that).
pub(crate) fn wait_for(fd: BorrowedFd<'_>, events: PollFlags, limit: Limit) -> Result<(), Fail> {
    loop {
        let timeout = match limit.remaining() {
            None => None,
            Some(left) => {
                Some(Timespec::try_from(left).map_err(|_| Error::Os(Errno::INVAL.into()))?)
            }
        };
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if !matches!(limit, Limit::Forever)
                    && limit.remaining().is_none_or(|left| left.is_zero())
                {
                    return Err(Fail::Wait);
                }
            }
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => {}
            Err(err) => return Err(Fail::Broken(Error::Os(err.into()))),
        }
    }
}
