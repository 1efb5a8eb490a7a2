//! The ring under tokio (feature `tokio`): [`AsyncProducer`] and [`AsyncConsumer`], whose waits
//! end in the application's reactor, and [`RingWait`], the same wait for a ring side owned by a
//! layer above (sp's typed receiver).
//!
//! # How a wait ends in the reactor
//!
//! An operation is tried first, exactly as its `try_*` form: a ring with a record (or room) never
//! touches the reactor. When it finds nothing, the side waits as its [`IdleStrategy`] says, with
//! the blocking wait's budget: it spins (inside the poll, between tries), then yields to the
//! runtime (the task wakes itself and returns `Pending`, so other tasks, the peer among them if it
//! lives on this thread, can run), then parks; a consumer's first wait, before any record, parks
//! at once, as the blocking consumer's does. Parking is sp-shm's own protocol for callers that
//! sleep elsewhere: [`Consumer::prepare_wait`] (publish, set the waiting flag, full fence,
//! re-check) and, if that says [`WaitPrep::Armed`], the task awaits readability of the ring's
//! wake socket through an `AsyncFd` registered with the reactor (a duplicate of the socket, so
//! the ring side keeps its own). The peer sends a wake-up byte when it publishes and finds the
//! flag set; its death is a hang-up, which the reactor reports as readability too. Either way
//! [`Consumer::finish_wait`] clears the flag, drains the bytes and notes a hang-up, readiness is
//! cleared through the guard that reported it (an event that arrived meanwhile is kept), and the
//! operation is tried again. A process without `membarrier` gets a `recheck` from
//! `prepare_wait`: the task then also sleeps on a tokio timer of that length (this needs the
//! runtime's time driver).
//!
//! No wake-up is lost: a record committed after `prepare_wait` was either seen by its re-check or
//! its producer saw the flag and sent a byte, which stays queued in the socket and makes it
//! readable (the Dekker argument of `ring/wait.rs`; the loom model
//! `loom_external_wait_no_lost_wakeup` checks exactly this sequence, and
//! `loom_cancelled_external_wait_no_lost_wakeup` the one a cancelled future leaves). Nothing
//! spins while parked: an idle side costs no CPU once its spin and yield budget is spent.
//!
//! # Cancellation
//!
//! Every piece of waiting state lives in the [`RingWait`], not in a future: a dropped future
//! leaves the side armed or mid-spin, and the next call goes on from there (or, if it finds a
//! record at once, disarms first). A record is taken from the ring only inside the poll that
//! returns it, and a reservation is made only inside the poll that commits it, so no future
//! ever loses or duplicates a record by being dropped.

#![allow(unsafe_code)] // Registering the wake socket with tokio's reactor (`AsyncFd::register`).

use std::future::poll_fn;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use ::tokio::io::Interest;
use ::tokio::io::unix::AsyncFd;
use ::tokio::task::coop;
use ::tokio::time::Sleep;

use crate::error::{Result, TryRecvError, TrySendError};
use crate::idle::{Backoff, IdleStrategy, Step};
use crate::ring::{Consumer, Producer, ReadGrant, ReadGrantRef, WaitPrep, WriteGrant};

/// Spin hints per spin step of a waiting consumer and producer: those of the blocking waits
/// (`ring/wait.rs`): a consumer checks after every pause, a producer reads the consumer's head
/// line less often so that the line stays with the consumer.
const CONSUMER_PAUSES: u32 = 1;
const PRODUCER_PAUSES: u32 = 16;

/// The consuming side of a ring, waiting in tokio's reactor.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sp_shm::Error> {
/// use sp_shm::tokio::{AsyncConsumer, AsyncProducer};
/// let (tx, rx) = sp_shm::channel(&sp_shm::Config::new())?;
/// let (mut tx, mut rx) = (AsyncProducer::new(tx)?, AsyncConsumer::new(rx)?);
/// let reader = tokio::spawn(async move {
///     let mut buf = Vec::new();
///     rx.recv_into(&mut buf).await.map(|_| buf)
/// });
/// tx.send(b"hello").await?;
/// assert_eq!(reader.await.unwrap()?, b"hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncConsumer {
    consumer: Consumer,
    wait: RingWait,
}

/// The producing side of a ring, waiting in tokio's reactor.
#[derive(Debug)]
pub struct AsyncProducer {
    producer: Producer,
    wait: RingWait,
}

/// The async wait of one ring side, for a side owned elsewhere (an sp typed receiver owns its
/// consumer): what [`AsyncConsumer`] and [`AsyncProducer`] are built on.
///
/// After a `try_*` call on the side found nothing, call [`poll_consumer`](Self::poll_consumer)
/// (or [`poll_producer`](Self::poll_producer)); when it returns `Ready(Ok(()))`, try again.
/// After a try succeeds, call [`done_consumer`](Self::done_consumer) (or
/// [`done_producer`](Self::done_producer)): it disarms a side that is still armed.
#[derive(Debug)]
pub struct RingWait {
    /// A duplicate of the side's wake socket, registered with the reactor.
    io: AsyncFd<OwnedFd>,
    pauses: u32,
    state: State,
}

#[derive(Debug)]
enum State {
    /// Not waiting.
    Idle,
    /// Spinning or yielding through the idle budget (`Backoff` also says when to park).
    Backing(Backoff),
    /// The waiting flag is set; sleeping on the wake socket (and on a timer when the process
    /// has no `membarrier`). The backoff stays at its park step.
    Armed {
        backoff: Backoff,
        recheck: Option<Pin<Box<Sleep>>>,
    },
}

/// A ring side [`RingWait`] parks: sp-shm's park protocol for callers that sleep elsewhere.
trait Park {
    fn prepare_wait(&mut self) -> Result<WaitPrep>;
    fn finish_wait(&mut self) -> Result<()>;
    /// The idle strategy of the wait that starts now.
    fn strategy(&self) -> IdleStrategy;
}

impl Park for Consumer {
    fn prepare_wait(&mut self) -> Result<WaitPrep> {
        Consumer::prepare_wait(self)
    }

    fn finish_wait(&mut self) -> Result<()> {
        Consumer::finish_wait(self)
    }

    fn strategy(&self) -> IdleStrategy {
        self.wait_strategy()
    }
}

/// A producer waiting for room for a record of `.1` bytes.
struct Room<'a>(&'a mut Producer, usize);

impl Park for Room<'_> {
    fn prepare_wait(&mut self) -> Result<WaitPrep> {
        self.0.prepare_wait(self.1)
    }

    fn finish_wait(&mut self) -> Result<()> {
        self.0.finish_wait()
    }

    fn strategy(&self) -> IdleStrategy {
        self.0.idle_strategy()
    }
}

impl RingWait {
    /// The wait of a consumer: registers a duplicate of its wake socket with the current
    /// runtime's reactor, and waits by the consumer's idle strategy.
    ///
    /// # Errors
    /// `EMFILE` when no descriptor is free for the duplicate; a refusal of the reactor.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver.
    pub fn for_consumer(consumer: &Consumer) -> Result<Self> {
        Self::new(consumer.wake_fd(), CONSUMER_PAUSES)
    }

    /// The wait of a producer; see [`for_consumer`](Self::for_consumer).
    ///
    /// # Errors
    /// As [`for_consumer`](Self::for_consumer).
    ///
    /// # Panics
    /// As [`for_consumer`](Self::for_consumer).
    pub fn for_producer(producer: &Producer) -> Result<Self> {
        Self::new(producer.wake_fd(), PRODUCER_PAUSES)
    }

    fn new(wake: BorrowedFd<'_>, pauses: u32) -> Result<Self> {
        // Invariant: every descriptor sp creates is close-on-exec from the call that makes it.
        let dup = rustix::io::fcntl_dupfd_cloexec(wake, 0)?;
        // SAFETY: the `AsyncFd` owns `dup`, so the descriptor stays open and names the same
        // socket until the `AsyncFd` is dropped, and `OwnedFd::as_raw_fd` always returns it.
        let io = unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self {
            io,
            pauses,
            state: State::Idle,
        })
    }

    /// After `consumer`'s `try_*` call found no record: takes the next step of the wait. `Ready`
    /// means "try again" (or an error of the park protocol); `Pending` means the task will be
    /// woken when it is worth trying again.
    ///
    /// # Errors
    /// As [`Consumer::prepare_wait`] and [`Consumer::finish_wait`].
    pub fn poll_consumer(
        &mut self,
        cx: &mut Context<'_>,
        consumer: &mut Consumer,
    ) -> Poll<Result<()>> {
        self.poll_step(cx, consumer)
    }

    /// After `producer`'s `try_*` call found no room for `n_bytes`: as
    /// [`poll_consumer`](Self::poll_consumer).
    ///
    /// # Errors
    /// As [`Producer::prepare_wait`] and [`Producer::finish_wait`].
    pub fn poll_producer(
        &mut self,
        cx: &mut Context<'_>,
        producer: &mut Producer,
        n_bytes: usize,
    ) -> Poll<Result<()>> {
        self.poll_step(cx, &mut Room(producer, n_bytes))
    }

    /// After a try succeeded (or broke): ends the wait, disarming the side if a dropped future
    /// left it armed. The next wait starts with a full idle budget again.
    #[inline]
    pub fn done_consumer(&mut self, consumer: &mut Consumer) {
        self.done(consumer);
    }

    /// As [`done_consumer`](Self::done_consumer), for a producer.
    #[inline]
    pub fn done_producer(&mut self, producer: &mut Producer) {
        self.done(&mut Room(producer, 0));
    }

    #[inline]
    fn done(&mut self, side: &mut dyn Park) {
        // The common case, a try that succeeded at once, touches nothing.
        if matches!(self.state, State::Idle) {
            return;
        }
        if let State::Armed { .. } = std::mem::replace(&mut self.state, State::Idle) {
            // Only clears the flag and drains wake-up bytes; a hang-up it notes is reported by
            // the side's next call anyway.
            let _ = side.finish_wait();
        }
    }

    fn poll_step(&mut self, cx: &mut Context<'_>, side: &mut dyn Park) -> Poll<Result<()>> {
        loop {
            match &mut self.state {
                State::Idle => {
                    self.state = State::Backing(Backoff::new(side.strategy()));
                }
                State::Backing(backoff) => match backoff.next_step() {
                    Step::Spin => {
                        for _ in 0..self.pauses {
                            std::hint::spin_loop();
                        }
                        if backoff.check_due() {
                            // A side that never parks (`IdleStrategy::spin`) still notes a
                            // hang-up and lets the runtime run other tasks now and then.
                            side.finish_wait()?;
                            cx.waker().wake_by_ref();
                            return Poll::Pending;
                        }
                        return Poll::Ready(Ok(()));
                    }
                    Step::Yield => {
                        // Yield to the runtime rather than to the kernel: other tasks (perhaps
                        // the peer) run, then this one tries again.
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    Step::Park => {
                        let State::Backing(backoff) =
                            std::mem::replace(&mut self.state, State::Idle)
                        else {
                            unreachable!("matched above");
                        };
                        match side.prepare_wait() {
                            Ok(WaitPrep::Ready) => {
                                self.state = State::Backing(backoff);
                                return Poll::Ready(Ok(()));
                            }
                            Ok(WaitPrep::Armed { recheck }) => {
                                let recheck = recheck.map(|d| Box::pin(::tokio::time::sleep(d)));
                                self.state = State::Armed { backoff, recheck };
                            }
                            Err(err) => return Poll::Ready(Err(err)),
                        }
                    }
                },
                State::Armed { recheck, .. } => {
                    let woken = match self.io.poll_read_ready(cx) {
                        Poll::Ready(guard) => Some(guard?),
                        Poll::Pending => None,
                    };
                    let rechecked = recheck
                        .as_mut()
                        .is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready());
                    if woken.is_none() && !rechecked {
                        return Poll::Pending;
                    }
                    // Awake: clear the flag, drain the bytes, note a hang-up; then clear the
                    // readiness this guard reported (not an event that came after it).
                    let finished = side.finish_wait();
                    if let Some(mut guard) = woken {
                        guard.clear_ready();
                    }
                    let State::Armed { backoff, .. } =
                        std::mem::replace(&mut self.state, State::Idle)
                    else {
                        unreachable!("matched above");
                    };
                    self.state = State::Backing(backoff);
                    finished?;
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

impl AsyncConsumer {
    /// Registers `consumer`'s wake socket with the current runtime's reactor.
    ///
    /// # Errors
    /// As [`RingWait::for_consumer`].
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver.
    pub fn new(consumer: Consumer) -> Result<Self> {
        let wait = RingWait::for_consumer(&consumer)?;
        Ok(Self { consumer, wait })
    }

    /// Awaits the next record and copies its payload into `buf` (replacing its contents);
    /// returns its kind.
    ///
    /// **Cancellation:** cancel-safe. A record is taken only by the poll that returns it; a
    /// dropped future takes none.
    ///
    /// # Errors
    /// As [`Consumer::recv_into`]: [`Error::PeerGone`](crate::Error::PeerGone) once the producer is gone and every
    /// record it committed has been delivered; [`Error::Corrupt`](crate::Error::Corrupt) for a bad header.
    pub async fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u32> {
        poll_fn(|cx| self.poll_take(cx, |c| c.try_recv_into(buf))).await
    }

    /// Awaits the next record and lends it to `f` in place; the record is released when `f`
    /// returns.
    ///
    /// **Cancellation:** cancel-safe. `f` runs in the poll that finds the record, so a dropped
    /// future has neither called `f` nor taken a record.
    ///
    /// # Errors
    /// As [`recv_into`](Self::recv_into).
    pub async fn read_with<R>(&mut self, f: impl FnOnce(&ReadGrant<'_>) -> R) -> Result<R> {
        let mut f = Some(f);
        poll_fn(|cx| {
            self.poll_take(cx, |c| {
                let grant = c.try_read()?;
                let f = f
                    .take()
                    .expect("`f` runs once: the poll that calls it returns Ready");
                Ok(f(&grant))
            })
        })
        .await
    }

    /// Awaits at least one record, then lends up to `max` committed records to `f` in place,
    /// one after the other, and publishes the head once; returns how many (at least 1 when
    /// `max > 0`). The batch form of [`read_with`](Self::read_with), as tokio's `recv_many`:
    /// while records flow, one await takes all that are there.
    ///
    /// **Cancellation:** cancel-safe. `f` runs only in the poll that returns, so a dropped future
    /// has neither called `f` nor taken a record.
    ///
    /// # Errors
    /// As [`recv_into`](Self::recv_into).
    pub async fn read_many_with(
        &mut self,
        max: usize,
        mut f: impl FnMut(&ReadGrantRef<'_>),
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        poll_fn(|cx| self.poll_take(cx, |c| c.try_for_each_available(max, &mut f))).await
    }

    /// The poll behind every receive: `take` (a `try_*` call) until it does not say `Empty`.
    fn poll_take<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Consumer) -> std::result::Result<R, TryRecvError>,
    ) -> Poll<Result<R>> {
        let coop = ready!(coop::poll_proceed(cx));
        loop {
            let res = match take(&mut self.consumer) {
                Ok(res) => Ok(res),
                Err(TryRecvError::Broken(err)) => Err(err),
                Err(TryRecvError::Empty) => {
                    ready!(self.wait.poll_consumer(cx, &mut self.consumer))?;
                    continue;
                }
            };
            self.wait.done_consumer(&mut self.consumer);
            coop.made_progress();
            return Poll::Ready(res);
        }
    }

    /// The consumer, for its non-waiting calls and counters.
    pub fn get_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The consumer, for its counters.
    pub fn get_ref(&self) -> &Consumer {
        &self.consumer
    }

    /// The consumer back (disarmed), for blocking use.
    pub fn into_inner(mut self) -> Consumer {
        self.wait.done_consumer(&mut self.consumer);
        self.consumer
    }
}

impl AsyncProducer {
    /// Registers `producer`'s wake socket with the current runtime's reactor.
    ///
    /// # Errors
    /// As [`RingWait::for_producer`].
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver.
    pub fn new(producer: Producer) -> Result<Self> {
        let wait = RingWait::for_producer(&producer)?;
        Ok(Self { producer, wait })
    }

    /// Copies `bytes` into one record (kind 0) and publishes it, awaiting room.
    ///
    /// **Cancellation:** a dropped future has sent nothing; the record is written and committed
    /// in the poll that finds room, which then returns.
    ///
    /// # Errors
    /// As [`Producer::send`]: [`Error::TooLarge`](crate::Error::TooLarge), [`Error::PeerGone`](crate::Error::PeerGone), [`Error::Corrupt`](crate::Error::Corrupt).
    pub async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        poll_fn(|cx| self.poll_give(cx, bytes.len(), |p| p.try_send(bytes))).await
    }

    /// Awaits room for a record of `n_bytes`, then hands the reserved [`WriteGrant`] to `f`,
    /// which writes the payload in place and commits it (a grant `f` drops is abandoned).
    ///
    /// **Cancellation:** a dropped future has reserved nothing and not called `f`.
    ///
    /// # Errors
    /// As [`Producer::reserve`].
    pub async fn reserve_with<R>(
        &mut self,
        n_bytes: usize,
        f: impl FnOnce(WriteGrant<'_>) -> R,
    ) -> Result<R> {
        let mut f = Some(f);
        poll_fn(|cx| {
            self.poll_give(cx, n_bytes, |p| {
                let grant = p.try_reserve(n_bytes)?;
                let f = f
                    .take()
                    .expect("`f` runs once: the poll that calls it returns Ready");
                Ok(f(grant))
            })
        })
        .await
    }

    /// Reserves room for a record of `n_bytes` if there is room now, as
    /// [`Producer::try_reserve`]: the fast path to try before awaiting
    /// [`reserve_with`](Self::reserve_with), which it equals when the ring has room, without a
    /// future, the reactor or tokio's cooperative budget. It disarms a wait a dropped future
    /// left armed (see [`RingWait::done_producer`]).
    ///
    /// A loop that only calls this never yields to the runtime; await a send when it says
    /// `Full`.
    ///
    /// **Cancellation:** not a future; the grant, when dropped uncommitted, is abandoned.
    ///
    /// # Errors
    /// As [`Producer::try_reserve`]: [`TrySendError::Full`](sp_core::TrySendError::Full) when
    /// there is no room now.
    #[inline]
    pub fn try_reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>, TrySendError> {
        self.wait.done_producer(&mut self.producer);
        self.producer.try_reserve(n_bytes)
    }

    /// Sends if there is room now, as [`Producer::try_send`]: the fast path to try before
    /// awaiting [`send`](Self::send); see [`try_reserve`](Self::try_reserve).
    ///
    /// **Cancellation:** not a future.
    ///
    /// # Errors
    /// As [`Producer::try_send`].
    #[inline]
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
        self.wait.done_producer(&mut self.producer);
        self.producer.try_send(bytes)
    }

    /// The poll behind every send: `give` (a `try_*` call) until it does not say `Full`.
    fn poll_give<R>(
        &mut self,
        cx: &mut Context<'_>,
        n_bytes: usize,
        mut give: impl FnMut(&mut Producer) -> std::result::Result<R, TrySendError>,
    ) -> Poll<Result<R>> {
        let coop = ready!(coop::poll_proceed(cx));
        loop {
            let res = match give(&mut self.producer) {
                Ok(res) => Ok(res),
                Err(TrySendError::Broken(err)) => Err(err),
                Err(TrySendError::Full) => {
                    ready!(self.wait.poll_producer(cx, &mut self.producer, n_bytes))?;
                    continue;
                }
            };
            self.wait.done_producer(&mut self.producer);
            coop.made_progress();
            return Poll::Ready(res);
        }
    }

    /// Wakes a parked consumer for records committed with [`WriteGrant::commit_deferred`]; see
    /// [`Producer::flush`]. Never waits.
    ///
    /// # Errors
    /// As [`Producer::flush`].
    pub fn flush(&mut self) -> Result<()> {
        self.producer.flush()
    }

    /// The producer, for its non-waiting calls and counters.
    pub fn get_mut(&mut self) -> &mut Producer {
        &mut self.producer
    }

    /// The producer, for its counters.
    pub fn get_ref(&self) -> &Producer {
        &self.producer
    }

    /// The producer back (disarmed), for blocking use.
    pub fn into_inner(mut self) -> Producer {
        self.wait.done_producer(&mut self.producer);
        self.producer
    }
}
