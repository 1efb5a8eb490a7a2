//! Wake-up tokens between the two sides of one ring: a private seqpacket socketpair per ring.
//!
//! A parked side waits in `poll(2)` on its end for `POLLIN` (a token) or `POLLHUP` (the peer
//! process is gone: every descriptor is close-on-exec and the creator closes its copy of the
//! peer's end, so only the peer holds it). A token is one byte; it persists in the socket buffer,
//! so a wake sent between the waiter's re-check and its `poll` is not lost, and `EAGAIN` on send
//! means the buffer already holds tokens, i.e. "already signalled" (shmem-ipc `sharedring.rs`,
//! iceoryx2's unix-datagram event). On waking, the waiter drains every token without blocking.
//!
//! The producer's end receives "space freed" tokens and the consumer's end "data committed"
//! tokens; because each ring has its own pair and each end has one owner, a producer and a
//! consumer used on different threads never steal each other's tokens.
//!
//! The loom build replaces the socket with a mutex and condition variable holding token counts.

use std::time::Instant;

/// What ended a park.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// A token arrived (all pending tokens were drained).
    Token,
    /// The deadline passed.
    TimedOut,
    /// The peer's end is closed.
    HangUp,
}

#[cfg(not(sp_loom))]
pub(crate) use socket::WakeSocket;

#[cfg(not(sp_loom))]
mod socket {
    use std::time::Instant;

    use rustix::io::Errno;
    use rustix::net::{RecvFlags, SendFlags};
    use sp_core::End;

    use super::Woken;
    use crate::error::Result;

    /// The most tokens one drain receives.
    const MAX_DRAIN: usize = 1024;

    /// One end of a ring's wake socketpair, non-blocking.
    #[derive(Debug)]
    pub(crate) struct WakeSocket {
        end: End,
    }

    impl WakeSocket {
        /// Takes an end of a seqpacket pair and makes it non-blocking.
        pub(crate) fn new(end: End) -> Result<Self> {
            end.set_nonblocking(true)?;
            Ok(Self { end })
        }

        /// The socket, for `poll` and `epoll` outside sp-shm.
        pub(crate) fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
            std::os::fd::AsFd::as_fd(&self.end)
        }

        /// `send(2)` of one token byte with `MSG_DONTWAIT | MSG_NOSIGNAL`.
        ///
        /// `EAGAIN` (the buffer is full of tokens already) counts as success.
        pub(crate) fn notify(&self) -> Result<()> {
            loop {
                match rustix::net::send(&self.end, &[1], SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
                {
                    Ok(_) | Err(Errno::AGAIN) => return Ok(()),
                    Err(Errno::INTR) => {}
                    Err(err) => return Err(err.into()),
                }
            }
        }

        /// Parks in `poll(2)` until a token, hang-up or the deadline; drains tokens.
        pub(crate) fn wait(&self, deadline: Option<Instant>) -> Result<Woken> {
            match self.end.poll_readable(deadline)? {
                None => Ok(Woken::TimedOut),
                Some(ready) if ready.is_hung_up() => Ok(Woken::HangUp),
                Some(_) => self.drain(),
            }
        }

        /// `poll(2)` with a zero timeout: whether the peer's end is closed. Drains tokens.
        pub(crate) fn hung_up(&self) -> Result<bool> {
            match self.end.poll_readable(Some(Instant::now()))? {
                Some(ready) if ready.is_hung_up() => Ok(true),
                Some(_) => Ok(self.drain()? == Woken::HangUp),
                None => Ok(false),
            }
        }

        /// Receives pending tokens without blocking. Bounded, so that a peer flooding tokens
        /// cannot keep this side here: leftovers only cause one more spurious wake-up.
        fn drain(&self) -> Result<Woken> {
            let mut buf = [0u8; 64];
            for _ in 0..MAX_DRAIN {
                match rustix::net::recv(&self.end, &mut buf, RecvFlags::DONTWAIT) {
                    Ok((0, _)) => return Ok(Woken::HangUp),
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(Errno::AGAIN) => return Ok(Woken::Token),
                    Err(Errno::CONNRESET) => return Ok(Woken::HangUp),
                    Err(err) => return Err(err.into()),
                }
            }
            Ok(Woken::Token)
        }
    }
}

#[cfg(sp_loom)]
pub(crate) use model::WakeSocket;

#[cfg(sp_loom)]
mod model {
    use loom::sync::{Arc, Condvar, Mutex};

    use super::Woken;
    use crate::error::Result;

    #[derive(Debug, Default)]
    struct Tokens {
        pending: [u32; 2],
        closed: bool,
    }

    /// The loom model of a wake socketpair: token counts per end under a mutex.
    #[derive(Debug)]
    pub(crate) struct WakeSocket {
        shared: Arc<(Mutex<Tokens>, Condvar)>,
        side: usize,
    }

    impl WakeSocket {
        pub(crate) fn pair() -> (Self, Self) {
            let shared = Arc::new((Mutex::new(Tokens::default()), Condvar::new()));
            (
                Self {
                    shared: shared.clone(),
                    side: 0,
                },
                Self { shared, side: 1 },
            )
        }

        pub(crate) fn notify(&self) -> Result<()> {
            let (lock, cv) = &*self.shared;
            lock.lock().unwrap().pending[1 - self.side] += 1;
            cv.notify_all();
            Ok(())
        }

        pub(crate) fn wait(&self, _deadline: Option<std::time::Instant>) -> Result<Woken> {
            let (lock, cv) = &*self.shared;
            let mut tokens = lock.lock().unwrap();
            loop {
                if tokens.pending[self.side] > 0 {
                    tokens.pending[self.side] = 0;
                    return Ok(Woken::Token);
                }
                if tokens.closed {
                    return Ok(Woken::HangUp);
                }
                tokens = cv.wait(tokens).unwrap();
            }
        }

        /// As the socket's: drains this end's tokens, then says whether the peer is gone.
        pub(crate) fn hung_up(&self) -> Result<bool> {
            let mut tokens = self.shared.0.lock().unwrap();
            tokens.pending[self.side] = 0;
            Ok(tokens.closed)
        }
    }

    impl Drop for WakeSocket {
        fn drop(&mut self) {
            let (lock, cv) = &*self.shared;
            lock.lock().unwrap().closed = true;
            cv.notify_all();
        }
    }
}

/// The deadline `timeout` from now, saturating far in the future.
pub(crate) fn deadline_after(timeout: std::time::Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}
