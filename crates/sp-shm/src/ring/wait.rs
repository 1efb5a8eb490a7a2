//! Waiting for the other side: the one wait loop behind every blocking and `*_timeout` call
//! (spin, yield, park), the wake-up check a publishing side makes, and the same park protocol
//! offered to callers that sleep elsewhere ([`Consumer::prepare_wait`], an epoll set or an async
//! reactor).
//!
//! Parking is a Dekker handshake between the parking side and the publishing side. The parker
//! publishes its own position, sets its waiting flag, issues the heavy fence and re-checks the
//! ring; the publisher stores its position, issues the light fence and loads the flag. At least
//! one of them sees the other's store: either the re-check succeeds, or the publisher sees the
//! flag, clears it and sends a wake-up byte, which stays in the wake socket until the parker
//! reads it. See `sync::light_fence` and `sync::heavy_fence` for why the fences may be asymmetric.

#[cfg(not(sp_loom))]
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use super::Stats;
use super::consumer::Consumer;
use super::producer::Producer;
use crate::error::{Error, RecvTimeoutError, Result, SendTimeoutError};
use crate::idle::{Backoff, IdleStrategy, Step};
use crate::sync::{AtomicU64, Ordering, heavy_fence, light_fence};
use crate::wake::{WakeSocket, Woken, deadline_after};

/// A parked side whose `membarrier` failed re-checks the ring this often instead of trusting the
/// wake-up byte alone (the peer's light fence may then not have ordered its publication).
const RECHECK_EVERY: Duration = Duration::from_millis(1);

/// A producer waiting for space re-reads the consumer's head line, which the consumer writes
/// after every record: reading it less often leaves that line with the consumer, whose stores
/// then need no cache-line transfer. Nobody waits on a producer's reaction time here.
const PRODUCER_SPIN_PAUSES: u32 = 16;

/// What [`Consumer::prepare_wait`] and [`Producer::prepare_wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPrep {
    /// Do not sleep: a record (or room) is there, or the peer is gone, or the peer's last
    /// publication needs reading. Try the operation again.
    Ready,
    /// The waiting flag is set: sleep until the wake socket ([`Consumer::wake_fd`]) is readable
    /// (a wake-up byte, or the peer's hang-up), then call `finish_wait` and try again. With
    /// `recheck`, wake up after at most that long even without a byte: this process could not
    /// use `membarrier`, so a wake-up can be late.
    Armed {
        /// The longest to sleep without a wake-up byte, if there is a limit.
        recheck: Option<Duration>,
    },
}

/// How a wait ended without success: its deadline passed, or something broke.
#[derive(Debug)]
pub(super) enum WaitError {
    TimedOut,
    Broken(Error),
}

impl From<Error> for WaitError {
    fn from(err: Error) -> Self {
        Self::Broken(err)
    }
}

impl WaitError {
    /// The error of a wait with no deadline, which cannot time out (crossbeam-channel's blocking
    /// `send` unwraps its `SendTimeoutError` the same way).
    pub(super) fn forever(self) -> Error {
        match self {
            Self::Broken(err) => err,
            Self::TimedOut => unreachable!("a wait without a deadline never times out"),
        }
    }

    pub(super) fn into_send(self) -> SendTimeoutError {
        match self {
            Self::Broken(err) => SendTimeoutError::Broken(err),
            Self::TimedOut => SendTimeoutError::Timeout,
        }
    }

    pub(super) fn into_recv(self) -> RecvTimeoutError {
        match self {
            Self::Broken(err) => RecvTimeoutError::Broken(err),
            Self::TimedOut => RecvTimeoutError::Timeout,
        }
    }
}

/// How long a wait may last.
#[derive(Debug, Clone, Copy)]
pub(super) enum Limit {
    Forever,
    /// From the moment the wait first checks the clock: at its first park or periodic check, so
    /// at most [`CHECK_EVERY`](crate::idle::CHECK_EVERY) idle steps after it began. A wait that
    /// ends while spinning never reads the clock (about 20 ns a read).
    After(Duration),
    /// Until a deadline already computed (`None`: forever).
    Until(Option<Instant>),
}

impl Limit {
    fn deadline(self) -> Option<Instant> {
        match self {
            Self::Forever => None,
            Self::After(timeout) => deadline_after(timeout),
            Self::Until(deadline) => deadline,
        }
    }
}

/// A [`Limit`] turned into a deadline on first use, so that a spinning wait that ends quickly
/// never reads the clock.
#[derive(Debug)]
struct LazyDeadline {
    limit: Limit,
    deadline: Option<Option<Instant>>,
}

impl LazyDeadline {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            deadline: None,
        }
    }

    fn get(&mut self) -> Option<Instant> {
        let limit = self.limit;
        *self.deadline.get_or_insert_with(|| limit.deadline())
    }
}

/// One side's view for the shared wait loop.
pub(super) trait Side {
    type Ready;
    /// `spin_loop` hints per spin step between attempts.
    const SPIN_PAUSES: u32;
    /// Tries once; `None` means "not yet".
    fn attempt(&mut self) -> Result<Option<Self::Ready>>;
    /// Publishes this side's own position before it waits.
    fn publish_own(&mut self) -> Result<()>;
    fn waiting_flag(&self) -> &AtomicU64;
    fn wake(&self) -> &WakeSocket;
    fn idle(&self) -> IdleStrategy;
    fn stats(&mut self) -> &mut Stats;
    /// The peer hung up: what to return.
    fn on_hang_up(&mut self) -> Result<Self::Ready>;
}

pub(super) struct ClaimWait<'a> {
    pub(super) producer: &'a mut Producer,
    pub(super) n_bytes: usize,
}

pub(super) struct RecordWait<'a> {
    pub(super) consumer: &'a mut Consumer,
}

impl Side for ClaimWait<'_> {
    /// The claim itself is in `Producer::claimed`.
    type Ready = ();
    const SPIN_PAUSES: u32 = PRODUCER_SPIN_PAUSES;

    fn attempt(&mut self) -> Result<Option<()>> {
        Ok(self.producer.try_claim(self.n_bytes)?.then_some(()))
    }

    fn publish_own(&mut self) -> Result<()> {
        self.producer.publish()
    }

    fn waiting_flag(&self) -> &AtomicU64 {
        &self.producer.shared.ctrl().producer_waiting.word
    }

    fn wake(&self) -> &WakeSocket {
        &self.producer.wake
    }

    fn idle(&self) -> IdleStrategy {
        self.producer.idle
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.producer.stats
    }

    fn on_hang_up(&mut self) -> Result<()> {
        self.producer.peer_gone = true;
        Err(Error::PeerGone)
    }
}

impl Side for RecordWait<'_> {
    /// The record itself is the consumer's `current` one.
    type Ready = ();
    /// A consumer's reaction time is the round-trip latency: check after every pause.
    const SPIN_PAUSES: u32 = 1;

    fn attempt(&mut self) -> Result<Option<()>> {
        Ok(self.consumer.poll_record()?.then_some(()))
    }

    fn publish_own(&mut self) -> Result<()> {
        self.consumer.publish()
    }

    fn waiting_flag(&self) -> &AtomicU64 {
        &self.consumer.shared.ctrl().consumer_waiting.word
    }

    fn wake(&self) -> &WakeSocket {
        &self.consumer.wake
    }

    fn idle(&self) -> IdleStrategy {
        self.consumer.wait_strategy()
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.consumer.stats
    }

    fn on_hang_up(&mut self) -> Result<()> {
        // The producer's last publication happened before its process ended; drain it first.
        self.consumer.peer_gone = true;
        if self.consumer.poll_record()? {
            Ok(())
        } else {
            Err(Error::PeerGone)
        }
    }
}

/// What arming a side's waiting flag found.
enum Armed<R> {
    /// The re-check succeeded; the flag is clear again.
    Ready(R),
    /// The flag is set and the ring re-checked: park. `fenced` says whether `membarrier`
    /// worked (if not, re-check on a short timeout).
    Parked { fenced: bool },
}

/// Sets the waiting flag, issues the heavy fence and re-checks (steps 2-4 of parking in
/// `docs/protocol.md`). The caller has published its own position.
fn arm<S: Side>(side: &mut S) -> Result<Armed<S::Ready>> {
    // A swap rather than a store: the same under the C++ model, and it keeps loom's model of
    // `fence(SeqCst)` exact. With a plain store here, loom (bound 4) admits an outcome the C++
    // rules for SC fences forbid: the peer's last swap of this flag read an older value, its
    // later load sees neither our new flag nor our re-check its position, and both sides park
    // (a false deadlock).
    side.waiting_flag().swap(1, Ordering::Relaxed);
    // SYNC: StoreLoad. Pairs with the light fence in `wake_if_waiting` on the other side: either
    // our re-check below sees its new position, or it sees our flag and sends a wake-up byte
    // (which persists in the socket until we poll).
    let fenced = heavy_fence();
    match side.attempt() {
        Ok(None) => {
            side.stats().parks += 1;
            if !fenced {
                side.stats().rechecked_parks += 1;
            }
            Ok(Armed::Parked { fenced })
        }
        // Not parking after all (ready, or an error): no wake-up wanted.
        Ok(Some(ready)) => {
            side.waiting_flag().store(0, Ordering::Relaxed);
            Ok(Armed::Ready(ready))
        }
        Err(err) => {
            side.waiting_flag().store(0, Ordering::Relaxed);
            Err(err)
        }
    }
}

/// Waits until `side.attempt()` succeeds: spin, yield, then park (see the module docs). The
/// caller has just made an attempt that failed (the inlined fast path).
pub(super) fn wait_for<S: Side>(side: &mut S, limit: Limit) -> Result<S::Ready, WaitError> {
    // The clock is read only once the wait checks it (see `Limit::After`).
    let mut deadline = LazyDeadline::new(limit);
    if let Err(err) = side.publish_own() {
        // The peer is gone: nobody will free space or commit more; let `on_hang_up` decide.
        if matches!(err, Error::PeerGone) {
            return Ok(side.on_hang_up()?);
        }
        return Err(err.into());
    }
    let mut backoff = Backoff::new(side.idle());
    loop {
        match backoff.next_step() {
            Step::Spin => (0..S::SPIN_PAUSES).for_each(|_| spin()),
            Step::Yield => yield_now(),
            Step::Park => {
                let fenced = match arm(side)? {
                    Armed::Ready(ready) => return Ok(ready),
                    Armed::Parked { fenced } => fenced,
                };
                let deadline = deadline.get();
                let park_until = if fenced {
                    deadline
                } else {
                    let recheck = Instant::now() + RECHECK_EVERY;
                    Some(deadline.map_or(recheck, |d| d.min(recheck)))
                };
                let woken = side.wake().wait(park_until);
                // Awake, whatever woke us: clear the flag so that the peer sends no stale byte. A
                // later park sets it again, with the fence and a re-check.
                side.waiting_flag().store(0, Ordering::Relaxed);
                match woken? {
                    Woken::Token => {}
                    Woken::TimedOut if deadline.is_none_or(|d| Instant::now() < d) => {}
                    Woken::TimedOut => {
                        return match side.attempt()? {
                            Some(ready) => Ok(ready),
                            None => Err(WaitError::TimedOut),
                        };
                    }
                    Woken::HangUp => return Ok(side.on_hang_up()?),
                }
            }
        }
        if let Some(ready) = side.attempt()? {
            return Ok(ready);
        }
        if backoff.check_due() {
            // Give the core away once in a while, so that an oversubscribed machine (more
            // spinning threads than cores) still makes progress.
            yield_now();
            if side.wake().hung_up()? {
                return Ok(side.on_hang_up()?);
            }
            if deadline.get().is_some_and(|d| Instant::now() >= d) {
                return Err(WaitError::TimedOut);
            }
        }
    }
}

/// The park protocol for a caller that sleeps elsewhere: publish, then arm.
fn prepare<S: Side>(side: &mut S) -> Result<WaitPrep> {
    match side.publish_own() {
        Ok(()) => {}
        // The peer is gone: the next try call reports it (after the last records).
        Err(Error::PeerGone) => return Ok(WaitPrep::Ready),
        Err(err) => return Err(err),
    }
    Ok(match arm(side)? {
        Armed::Ready(_) => WaitPrep::Ready,
        Armed::Parked { fenced } => WaitPrep::Armed {
            recheck: (!fenced).then_some(RECHECK_EVERY),
        },
    })
}

impl Consumer {
    /// The ring's wake socket: readable when the producer sends a wake-up byte or its process
    /// is gone (`POLLHUP`). Register it with `epoll` or an async reactor, after
    /// [`prepare_wait`](Self::prepare_wait).
    #[cfg(not(sp_loom))]
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Prepares to sleep outside sp-shm, on [`wake_fd`](Self::wake_fd): publishes the head,
    /// sets the waiting flag, issues the full fence and looks at the ring once more. This is the
    /// park of the blocking calls, for a caller that waits on many rings at once (`epoll`) or in
    /// an async reactor.
    ///
    /// After [`WaitPrep::Armed`], sleep until the wake socket is readable (or `recheck` has
    /// passed), then call [`finish_wait`](Self::finish_wait) and `try_read` again. No wake-up
    /// is lost: a record committed after this call returns either was seen by its re-check, or
    /// its producer sees the flag and sends a byte.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if the re-check finds a bad header; socket errors.
    pub fn prepare_wait(&mut self) -> Result<WaitPrep> {
        if self.peer_gone {
            return Ok(WaitPrep::Ready);
        }
        prepare(&mut RecordWait { consumer: self })
    }

    /// Ends a sleep begun with [`prepare_wait`](Self::prepare_wait), woken or not: clears the
    /// waiting flag, drains the wake-up bytes, and notes a hang-up of the producer, so that
    /// `try_read` delivers the records it left and then reports [`Error::PeerGone`].
    ///
    /// # Errors
    /// Only if `poll` on the wake socket fails.
    pub fn finish_wait(&mut self) -> Result<()> {
        self.shared
            .ctrl()
            .consumer_waiting
            .word
            .store(0, Ordering::Relaxed);
        if self.wake.hung_up()? {
            self.peer_gone = true;
        }
        Ok(())
    }
}

#[cfg(sp_loom)]
impl Consumer {
    /// Sleeps on the model of the wake socket until a byte or a hang-up (the models' stand-in
    /// for `poll` on [`Consumer::wake_fd`]).
    pub(crate) fn sleep_on_wake(&self) -> Result<()> {
        self.wake.wait(None).map(|_| ())
    }
}

impl Producer {
    /// The ring's wake socket: readable when the consumer sends a wake-up byte (it freed space)
    /// or its process is gone (`POLLHUP`). See [`Consumer::wake_fd`].
    #[cfg(not(sp_loom))]
    pub fn wake_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Prepares to sleep outside sp-shm until there is room for a record of `n_bytes`; see
    /// [`Consumer::prepare_wait`], whose protocol this mirrors (the producer first wakes a parked
    /// consumer for records it committed with `commit_deferred`).
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`max_payload`](Self::max_payload); [`Error::Corrupt`] for a bad
    /// head; socket errors.
    pub fn prepare_wait(&mut self, n_bytes: usize) -> Result<WaitPrep> {
        if self.peer_gone {
            return Ok(WaitPrep::Ready);
        }
        prepare(&mut ClaimWait {
            producer: self,
            n_bytes,
        })
    }

    /// Ends a sleep begun with [`prepare_wait`](Self::prepare_wait): clears the waiting flag,
    /// drains the wake-up bytes, and notes a hang-up of the consumer, so that a `try_*` call
    /// that finds no room reports [`Error::PeerGone`].
    ///
    /// # Errors
    /// Only if `poll` on the wake socket fails.
    pub fn finish_wait(&mut self) -> Result<()> {
        self.shared
            .ctrl()
            .producer_waiting
            .word
            .store(0, Ordering::Relaxed);
        if self.wake.hung_up()? {
            self.peer_gone = true;
        }
        Ok(())
    }
}

/// After publishing: the light fence, then wake the peer if its waiting flag was set.
#[inline]
pub(super) fn wake_if_waiting(
    waiting: &AtomicU64,
    wake: &WakeSocket,
    stats: &mut Stats,
) -> Result<()> {
    // SYNC: StoreLoad. Pairs with the heavy fence in `arm` that the parking side issues between
    // setting its waiting flag and re-checking our position (Dekker): either it sees our
    // publication, or we see its flag. Asymmetric: a compiler barrier here when `membarrier`
    // lets the parking side supply the full barrier (see `sync::light_fence`).
    light_fence();
    // The plain load keeps the flag's cache line shared while nobody parks.
    if waiting.load(Ordering::Relaxed) != 0 {
        return wake_peer(waiting, wake, stats);
    }
    Ok(())
}

#[cold]
fn wake_peer(waiting: &AtomicU64, wake: &WakeSocket, stats: &mut Stats) -> Result<()> {
    if waiting.swap(0, Ordering::Relaxed) != 0 {
        stats.wakes_sent += 1;
        wake.notify()?;
    }
    Ok(())
}

#[cfg(not(sp_loom))]
fn spin() {
    std::hint::spin_loop();
}

#[cfg(not(sp_loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(sp_loom)]
fn spin() {
    loom::thread::yield_now();
}

#[cfg(sp_loom)]
fn yield_now() {
    loom::thread::yield_now();
}
