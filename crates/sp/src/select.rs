//! Waiting on many receivers and sp-core channels at once: try each, spin within the idle budget,
//! then sleep on all their wake sockets in one `epoll_wait`.
//!
//! # Algorithm
//!
//! crossbeam-channel's `Select`, across processes: register operations, try each once, block on
//! all, try again. A pass tries every source once, starting one past the source that was ready
//! last time (so a busy source cannot starve the others). A typed [`Receiver`] is tried by taking
//! its next value (or error) into the receiver's one-value stash, where the caller's next receive
//! finds it; an sp-core [`Channel`] is tried with a zero-timeout `poll(2)` (its message stays in
//! the socket), which costs a system call, so while spinning channels are polled only every
//! [`CHANNEL_POLL_EVERY`] passes.
//!
//! When the idle strategy says park: every typed source's ring is armed with sp-shm's
//! `Consumer::prepare_wait` (publish the head, set the waiting flag, full fence, re-check), which
//! is the park protocol of sp-shm's own blocking calls. If any ring is `Ready` (a record arrived
//! meanwhile, or its peer is gone), nothing sleeps: the rings armed so far are disarmed with
//! `finish_wait` and the next pass takes it. Otherwise this thread sleeps in `epoll_wait` on all
//! the rings' wake sockets and all the channels (registered once, level-triggered) until one is
//! readable, the deadline, or the shortest `recheck` a ring asked for (a process without
//! `membarrier`); then every armed ring gets `finish_wait` and a pass follows.
//!
//! No wake-up is lost: a record committed after a ring's `prepare_wait` either was seen by its
//! re-check, or its producer saw the flag and sent a byte, which stays in the wake socket, so
//! `epoll_wait` returns (the Dekker argument of docs/protocol.md, "Wake-ups and liveness", per
//! ring). A peer's death is a hang-up on its wake socket (or its channel), which `epoll_wait`
//! reports like a byte; `finish_wait` notes it, and that receiver's next try stashes
//! `PeerGone` once its last record is taken. It is reported for that index only; the others keep
//! going.

use std::any::Any;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use sp_core::Channel;
use sp_shm::WaitPrep;

use crate::error::{Error, RecvTimeoutError, Result, TryRecvError};
use crate::limit::Limit;
use crate::receiver::Receiver;
use crate::value::Value;

/// While spinning, sp-core channels are polled (a system call each) once per this many passes.
const CHANNEL_POLL_EVERY: u32 = 16;
/// How often (in idle steps) a wait that does not park checks its deadline.
const CHECK_EVERY: u32 = 1024;
/// Events taken from one `epoll_wait`.
const MAX_EVENTS: usize = 32;

/// Waits on any number of typed [`Receiver`]s and sp-core [`Channel`]s; a parent gathers from N
/// children on one thread.
///
/// Register sources with [`recv`](Self::recv) and [`channel`](Self::channel) (each returns the
/// source's index), then [`ready`](Self::ready) returns the index of a source whose next receive
/// will not wait: a value, or an error to report (the peer gone, a decode error). Receive through
/// [`receiver`](Self::receiver) or [`channel_at`](Self::channel_at) (or after dropping the
/// `Select`). A dead peer's receiver stays ready (with `PeerGone`) until it is
/// [`remove`](Self::remove)d; the others are served in turn meanwhile.
///
/// Replacing the receiver behind a registered index (`mem::swap` through
/// [`receiver`](Self::receiver)) is a logic error: the `Select` keeps sleeping on the old one's
/// wake socket. Remove it and register the new one instead.
///
/// # Examples
/// ```
/// let config = sp::Config::new();
/// let (mut tx_a, mut rx_a) = sp::channel::<u32>(&config)?;
/// let (mut tx_b, mut rx_b) = sp::channel::<String>(&config)?;
/// tx_b.send(&"hello".to_string())?;
/// let mut sel = sp::Select::new();
/// let a = sel.recv(&mut rx_a);
/// let b = sel.recv(&mut rx_b);
/// let i = sel.ready()?;
/// assert_eq!(i, b);
/// let text = sel.receiver::<String>(b).unwrap().try_recv().map_err(|e| e.into_broken().unwrap())?;
/// assert_eq!(text, "hello");
/// # let _ = (a, &mut tx_a);
/// # Ok::<(), sp::Error>(())
/// ```
pub struct Select<'a> {
    sources: Vec<Option<Source<'a>>>,
    /// Created at the first park; every live source is registered with its index as data.
    epoll: Option<OwnedFd>,
    /// Where the next pass starts.
    start: usize,
    /// Passes that spin, then passes that yield, before a park.
    spins: u32,
    yields: u32,
    /// Channels `epoll_wait` reported readable, to try in the next pass without a `poll`.
    channel_hints: Vec<bool>,
}

enum Source<'a> {
    Typed(&'a mut dyn TypedSource),
    Channel(&'a mut Channel),
}

/// What [`Select`] needs of a typed receiver, whatever its value type.
pub(crate) trait TypedSource: Any {
    /// Takes the next value or error into the stash if there is one now; whether the stash holds
    /// something.
    fn fill_pending(&mut self) -> bool;
    /// Puts an error into the stash.
    fn stash_error(&mut self, err: Error);
    fn wake_fd(&self) -> BorrowedFd<'_>;
    fn prepare_wait(&mut self) -> sp_shm::Result<WaitPrep>;
    fn finish_wait(&mut self) -> sp_shm::Result<()>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Value + 'static> TypedSource for Receiver<T> {
    fn fill_pending(&mut self) -> bool {
        Receiver::fill_pending(self)
    }

    fn stash_error(&mut self, err: Error) {
        Receiver::stash_error(self, err);
    }

    fn wake_fd(&self) -> BorrowedFd<'_> {
        self.consumer_ref().wake_fd()
    }

    fn prepare_wait(&mut self) -> sp_shm::Result<WaitPrep> {
        self.consumer().prepare_wait()
    }

    fn finish_wait(&mut self) -> sp_shm::Result<()> {
        self.consumer().finish_wait()
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl<'a> Select<'a> {
    /// An empty `Select` that waits like sp-shm's adaptive strategy: 20,000 passes spinning,
    /// 64 yielding, then it parks.
    pub fn new() -> Self {
        Self {
            sources: Vec::new(),
            epoll: None,
            start: 0,
            spins: 20_000,
            yields: 64,
            channel_hints: Vec::new(),
        }
    }

    /// Sets how many passes spin and then yield before a wait parks (`(0, 0)`: park at once).
    #[must_use]
    pub fn idle(mut self, spins: u32, yields: u32) -> Self {
        self.spins = spins;
        self.yields = yields;
        self
    }

    /// Registers a typed receiver; returns its index.
    pub fn recv<T: Value + 'static>(&mut self, rx: &'a mut Receiver<T>) -> usize {
        self.push(Source::Typed(rx))
    }

    /// Registers an sp-core channel: it is ready when a message (or end of file) can be received
    /// without waiting. Returns its index.
    pub fn channel(&mut self, channel: &'a mut Channel) -> usize {
        self.push(Source::Channel(channel))
    }

    /// Removes the source at `index` (other indexes do not change). Does nothing for an index that
    /// is not registered.
    pub fn remove(&mut self, index: usize) {
        let Some(slot) = self.sources.get_mut(index) else {
            return;
        };
        if let (Some(source), Some(epoll)) = (slot.take(), &self.epoll) {
            // The descriptor is still open (the source is borrowed until now); failing to remove
            // it only costs a spurious wake-up, which a pass absorbs.
            let _ = epoll::delete(epoll, source.fd());
        }
    }

    /// How many sources are registered.
    pub fn len(&self) -> usize {
        self.sources.iter().filter(|s| s.is_some()).count()
    }

    /// Whether no source is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The typed receiver at `index`, if it is one of `Receiver<T>`.
    pub fn receiver<T: Value + 'static>(&mut self, index: usize) -> Option<&mut Receiver<T>> {
        match self.sources.get_mut(index)? {
            Some(Source::Typed(rx)) => rx.as_any_mut().downcast_mut(),
            _ => None,
        }
    }

    /// The sp-core channel at `index`, if it is one.
    pub fn channel_at(&mut self, index: usize) -> Option<&mut Channel> {
        match self.sources.get_mut(index)? {
            Some(Source::Channel(channel)) => Some(&mut **channel),
            _ => None,
        }
    }

    /// Waits until a source is ready; returns its index.
    ///
    /// # Errors
    /// `InvalidInput` ([`Error::Os`]) with no source registered; errors of `epoll` and `poll`.
    /// A source's own errors are not errors of `ready`: its index is returned and its next receive
    /// reports them.
    pub fn ready(&mut self) -> Result<usize> {
        match self.wait(Limit::Forever) {
            Ok(index) => Ok(index),
            Err(RecvTimeoutError::Broken(err)) => Err(err),
            Err(RecvTimeoutError::Timeout) => Err(Error::Os(Errno::TIMEDOUT.into())),
        }
    }

    /// The index of a source that is ready now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] if none is; otherwise as [`ready`](Self::ready).
    pub fn try_ready(&mut self) -> Result<usize, TryRecvError> {
        self.wait(Limit::Now).map_err(|err| match err {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Broken(err) => TryRecvError::Broken(err),
        })
    }

    /// Waits at most `timeout` for a source to be ready.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`]; otherwise as [`ready`](Self::ready).
    pub fn ready_timeout(&mut self, timeout: Duration) -> Result<usize, RecvTimeoutError> {
        self.wait(Limit::after(timeout))
    }

    fn push(&mut self, source: Source<'a>) -> usize {
        let index = self.sources.len();
        if let Some(epoll) = &self.epoll {
            // Registered at once if the set exists; if this fails, the next park rebuilds it.
            if register(epoll, &source, index).is_err() {
                self.epoll = None;
            }
        }
        self.sources.push(Some(source));
        self.channel_hints.push(false);
        index
    }

    fn wait(&mut self, limit: Limit) -> Result<usize, RecvTimeoutError> {
        if self.is_empty() {
            return Err(RecvTimeoutError::Broken(Error::Os(Errno::INVAL.into())));
        }
        let mut n_steps: u32 = 0;
        let mut poll_channels = true;
        loop {
            if let Some(index) = self.pass(poll_channels)? {
                return Ok(index);
            }
            if matches!(limit, Limit::Now) {
                return Err(RecvTimeoutError::Timeout);
            }
            n_steps = n_steps.wrapping_add(1);
            poll_channels = n_steps.is_multiple_of(CHANNEL_POLL_EVERY);
            let step = u64::from(n_steps);
            let (spins, yields) = (u64::from(self.spins), u64::from(self.yields));
            if step <= spins {
                std::hint::spin_loop();
            } else if step <= spins + yields {
                std::thread::yield_now();
            } else {
                self.park(limit)?;
                poll_channels = true;
                continue;
            }
            if n_steps.is_multiple_of(CHECK_EVERY)
                && limit.remaining().is_some_and(|left| left.is_zero())
            {
                return Err(RecvTimeoutError::Timeout);
            }
        }
    }

    /// Tries every source once, starting at `self.start`; the first ready index.
    fn pass(&mut self, poll_channels: bool) -> Result<Option<usize>, Error> {
        let n = self.sources.len();
        for k in 0..n {
            let index = (self.start + k) % n;
            let ready = match &mut self.sources[index] {
                None => false,
                Some(Source::Typed(rx)) => rx.fill_pending(),
                Some(Source::Channel(channel)) => {
                    let hinted = std::mem::take(&mut self.channel_hints[index]);
                    (hinted || poll_channels) && readable_now(channel.as_fd())?
                }
            };
            if ready {
                self.start = index + 1;
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Arms every ring, sleeps in `epoll_wait` until a wake-up, a hang-up, the deadline or a
    /// recheck, then disarms them.
    fn park(&mut self, limit: Limit) -> Result<(), RecvTimeoutError> {
        self.ensure_epoll()?;
        let mut recheck: Option<Duration> = None;
        let mut armed = Vec::new();
        let mut sleep = true;
        for (index, slot) in self.sources.iter_mut().enumerate() {
            let Some(Source::Typed(rx)) = slot else {
                continue;
            };
            match rx.prepare_wait() {
                Ok(WaitPrep::Armed { recheck: r }) => {
                    armed.push(index);
                    if let Some(r) = r {
                        recheck = Some(recheck.map_or(r, |old| old.min(r)));
                    }
                }
                Ok(WaitPrep::Ready) => {
                    sleep = false;
                    break;
                }
                Err(err) => {
                    // That receiver's error, reported when it is taken; do not sleep.
                    rx.stash_error(err.into());
                    sleep = false;
                    break;
                }
            }
        }
        let res = if sleep {
            self.sleep(limit, recheck)
        } else {
            Ok(())
        };
        for index in armed {
            if let Some(Some(Source::Typed(rx))) = self.sources.get_mut(index)
                && let Err(err) = rx.finish_wait()
            {
                rx.stash_error(err.into());
            }
        }
        res
    }

    /// `epoll_wait(2)` until an event, the deadline or `recheck`; notes readable channels.
    fn sleep(&mut self, limit: Limit, recheck: Option<Duration>) -> Result<(), RecvTimeoutError> {
        let left = limit.remaining();
        if left.is_some_and(|left| left.is_zero()) {
            return Err(RecvTimeoutError::Timeout);
        }
        let timeout = match (left, recheck) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let timeout = timeout
            .map(Timespec::try_from)
            .transpose()
            .map_err(|_| Error::Os(Errno::INVAL.into()))?;
        let Some(epoll) = &self.epoll else {
            return Ok(());
        };
        let mut events = [MaybeUninit::<Event>::uninit(); MAX_EVENTS];
        let (events, _) = match epoll::wait(epoll, &mut events, timeout.as_ref()) {
            Ok(got) => got,
            Err(Errno::INTR) => return Ok(()),
            Err(err) => return Err(Error::Os(err.into()).into()),
        };
        for event in events.iter() {
            let index = event.data.u64() as usize;
            if let Some(hint) = self.channel_hints.get_mut(index) {
                *hint = true;
            }
        }
        Ok(())
    }

    /// Creates the epoll set and registers every live source, the first time a park needs it.
    fn ensure_epoll(&mut self) -> Result<(), Error> {
        if self.epoll.is_some() {
            return Ok(());
        }
        let epoll = epoll::create(CreateFlags::CLOEXEC).map_err(|e| Error::Os(e.into()))?;
        for (index, source) in self.sources.iter().enumerate() {
            if let Some(source) = source {
                register(&epoll, source, index).map_err(|e| Error::Os(e.into()))?;
            }
        }
        self.epoll = Some(epoll);
        Ok(())
    }
}

impl Source<'_> {
    fn fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Typed(rx) => rx.wake_fd(),
            Self::Channel(channel) => channel.as_fd(),
        }
    }
}

impl Default for Select<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Select<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Select")
            .field("sources", &self.len())
            .field("spins", &self.spins)
            .field("yields", &self.yields)
            .finish_non_exhaustive()
    }
}

/// Adds `source` to the epoll set, level-triggered, with its index as data. Hang-ups and errors
/// are always reported.
fn register(epoll: &OwnedFd, source: &Source<'_>, index: usize) -> rustix::io::Result<()> {
    epoll::add(
        epoll,
        source.fd(),
        EventData::new_u64(index as u64),
        EventFlags::IN | EventFlags::RDHUP,
    )
}

/// `poll(2)` with a zero timeout: whether a receive on `fd` would not wait (data or a hang-up).
fn readable_now(fd: BorrowedFd<'_>) -> Result<bool, Error> {
    let mut fds = [PollFd::from_borrowed_fd(fd, PollFlags::IN)];
    loop {
        match rustix::event::poll(&mut fds, Some(&Timespec::default())) {
            Ok(n) => return Ok(n > 0),
            Err(Errno::INTR) => {}
            Err(err) => return Err(Error::Os(err.into())),
        }
    }
}
