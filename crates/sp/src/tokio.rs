//! Typed values under tokio (feature `tokio`): [`AsyncSender`] (a `futures::Sink`) and
//! [`AsyncReceiver`] (a `futures::Stream`), whose waits end in the application's reactor.
//!
//! Each wraps the blocking [`Sender`]/[`Receiver`] and runs its `try_*` calls, so values are
//! encoded, attached and checked by the same code; only the waiting differs. A receive that finds
//! the ring empty waits as sp-shm's async consumer does ([`sp_shm::tokio::RingWait`]: the idle
//! budget, then `prepare_wait`, readability of the wake socket in the reactor, `finish_wait`,
//! retry). A send that finds no room waits for the ring the same way, or, when it was the control
//! socket that was full (descriptors and blobs travel there), for the socket's writability.
//!
//! A record that announces an attachment (descriptors, a blob) is taken off the ring and kept in
//! the receiver until its ATTACH message comes on the control socket; meanwhile the receive waits
//! in the reactor for the socket's readability and for the record's deadline,
//! [`Config::attachment_timeout`](crate::Config::attachment_timeout) after it was taken. An sp
//! sender queues the ATTACH before the record becomes visible, so against sp peers this never
//! waits; a peer that announces an attachment and never sends it costs the awaiting task (not its
//! thread) that timeout, then
//! [`Violation::MissingAttachment`](crate::Violation::MissingAttachment) as in the blocking API.
//!
//! # Many receivers
//!
//! Every receive is cancel-safe, so `tokio::select!` over several receivers' `recv()` simply
//! works: the branches that lose are dropped and take nothing. Each branch spins through its
//! receiver's idle budget before it parks; a task that selects over many receivers should give
//! them [`IdleStrategy::park`](crate::IdleStrategy::park) ([`Config::idle`](crate::Config::idle)) so
//! that it parks at once. As streams, receivers combine with `futures`' `select_all`.
//!
//! # Cancellation
//!
//! Dropping a receive future never loses a value: a ring record is taken only by the poll that
//! returns its value, or, for a record whose ATTACH has not come yet, kept in the receiver, where
//! the next receive (or the blocking receiver, after
//! [`into_inner`](AsyncReceiver::into_inner)) resumes it, within the same deadline. Dropping a
//! send future never sends a value twice and never half-sends one: the value is encoded, attached
//! and committed within the one poll that finds room, which then returns; a dropped future has
//! sent nothing.

#![allow(unsafe_code)] // Registering the control socket with tokio's reactor (`AsyncFd::register`).

use std::future::poll_fn;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_core::Stream;
use futures_sink::Sink;
use rustix::event::{PollFd, PollFlags, Timespec};
use sp_shm::tokio::RingWait;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::error::{Error, Result, TryRecvError, TrySendError};
use crate::limit::Limit;
use crate::receiver::Receiver;
use crate::sender::Sender;
use crate::value::Value;

/// Sends values of type `T`, waiting in tokio's reactor; also a `futures::Sink<T>`.
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sp::Error> {
/// let (tx, rx) = sp::channel::<String>(&sp::Config::new())?;
/// let (mut tx, mut rx) = (sp::tokio::AsyncSender::new(tx)?, sp::tokio::AsyncReceiver::new(rx)?);
/// tx.send(&"hello".to_string()).await?;
/// assert_eq!(rx.recv().await?, "hello");
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncSender<T> {
    tx: Sender<T>,
    ring: RingWait,
    /// A duplicate of the control socket, registered for writability.
    control: AsyncFd<OwnedFd>,
    /// The value a `Sink::start_send` took and `poll_flush` has not sent yet.
    queued: Option<T>,
}

/// Receives values of type `T`, waiting in tokio's reactor; also a `futures::Stream` of
/// `Result<T>`.
#[derive(Debug)]
pub struct AsyncReceiver<T> {
    rx: Receiver<T>,
    ring: RingWait,
    /// A duplicate of the control socket, registered for readability (an ATTACH awaited).
    control: AsyncFd<OwnedFd>,
    /// The deadline of the record awaiting its ATTACH, once a receive has waited for it.
    attach_timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The stream has ended (the peer is gone, or the receiver is broken for good).
    ended: bool,
}

impl<T: Value> AsyncSender<T> {
    /// Registers the sender's ring and control socket with the current runtime's reactor.
    ///
    /// # Errors
    /// `EMFILE` when no descriptor is free for the two duplicates the reactor watches.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O and time drivers.
    pub fn new(mut tx: Sender<T>) -> Result<Self> {
        let (producer, _, control) = tx.wait_parts();
        let ring = RingWait::for_producer(producer)?;
        let control = register(control, Interest::WRITABLE)?;
        Ok(Self {
            tx,
            ring,
            control,
            queued: None,
        })
    }

    /// Sends `value`, awaiting room in the ring (and in the control socket for a value with
    /// descriptors or a blob).
    ///
    /// **Cancellation:** a dropped future has sent nothing; the value is sent whole within the
    /// poll that finds room, and the future then completes. Never sends a value twice.
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub async fn send(&mut self, value: &T) -> Result<()> {
        poll_fn(|cx| self.poll_send_with(cx, |tx| tx.try_send(value))).await
    }

    /// Sends `value` with `fds` (see [`Sender::send_with_fds`]), awaiting room.
    ///
    /// **Cancellation:** as [`send`](Self::send).
    ///
    /// # Errors
    /// As [`Sender::send_with_fds`].
    pub async fn send_with_fds(&mut self, value: &T, fds: &[BorrowedFd<'_>]) -> Result<()> {
        poll_fn(|cx| self.poll_send_with(cx, |tx| tx.try_send_with_fds(value, fds))).await
    }

    /// The poll behind every send: `send` (a `try_*` call) until it does not say `Full`.
    fn poll_send_with(
        &mut self,
        cx: &mut Context<'_>,
        mut send: impl FnMut(&mut Sender<T>) -> std::result::Result<(), TrySendError>,
    ) -> Poll<Result<()>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            let res = match send(&mut self.tx) {
                Ok(()) => Ok(()),
                Err(TrySendError::Broken(err)) => Err(err),
                Err(TrySendError::Full) => {
                    ready!(self.poll_room(cx))?;
                    continue;
                }
            };
            let (producer, _, _) = self.tx.wait_parts();
            self.ring.done_producer(producer);
            coop.made_progress();
            return Poll::Ready(res);
        }
    }

    /// After a send found no room: waits for the control socket if it is full, else for the
    /// ring. `Ready` means "try again".
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let (producer, wanted, control) = self.tx.wait_parts();
        if writable_now(control)? {
            return self
                .ring
                .poll_producer(cx, producer, wanted)
                .map_err(Error::from);
        }
        loop {
            let mut guard = ready!(self.control.poll_write_ready(cx)).map_err(Error::Os)?;
            if writable_now(self.control.get_ref().as_fd())? {
                return Poll::Ready(Ok(()));
            }
            guard.clear_ready();
        }
    }

    /// The blocking sender back.
    pub fn into_inner(mut self) -> Sender<T> {
        let (producer, _, _) = self.tx.wait_parts();
        self.ring.done_producer(producer);
        self.tx
    }

    /// The blocking sender, for its non-waiting calls and counters.
    pub fn get_mut(&mut self) -> &mut Sender<T> {
        &mut self.tx
    }
}

/// A duplicate of `fd`, close-on-exec, registered with the current runtime's reactor for
/// `interest`.
fn register(fd: BorrowedFd<'_>, interest: Interest) -> Result<AsyncFd<OwnedFd>> {
    let dup = rustix::io::fcntl_dupfd_cloexec(fd, 0).map_err(|e| Error::Os(e.into()))?;
    // SAFETY: the `AsyncFd` owns `dup`, so the descriptor stays open and names the same socket
    // until the `AsyncFd` is dropped, and `OwnedFd::as_raw_fd` always returns it.
    unsafe { AsyncFd::register_with_interest(dup, interest) }.map_err(|e| Error::Os(e.into()))
}

/// `poll(2)` with a zero timeout: whether a send on `fd` would find room.
fn writable_now(fd: BorrowedFd<'_>) -> Result<bool> {
    ready_now(fd, PollFlags::OUT)
}

/// `poll(2)` with a zero timeout: whether a receive on `fd` would find a message (or the peer's
/// hang-up).
fn readable_now(fd: BorrowedFd<'_>) -> Result<bool> {
    ready_now(fd, PollFlags::IN)
}

/// `poll(2)` on `fd` for `events` with a zero timeout.
fn ready_now(fd: BorrowedFd<'_>, events: PollFlags) -> Result<bool> {
    let mut fds = [PollFd::from_borrowed_fd(fd, events)];
    loop {
        match rustix::event::poll(&mut fds, Some(&Timespec::default())) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(Error::Os(err.into())),
        }
    }
}

/// A `Sink` of values: `start_send` keeps one value, `poll_flush` sends it (awaiting room).
/// Cancelling a flush keeps the value for the next `poll_ready`/`poll_flush`, so none is lost or
/// sent twice.
impl<T: Value + Unpin> Sink<T> for AsyncSender<T> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<()> {
        let this = self.get_mut();
        debug_assert!(this.queued.is_none(), "start_send without poll_ready");
        this.queued = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = self.get_mut();
        let Some(value) = this.queued.take() else {
            return Poll::Ready(Ok(()));
        };
        let res = this.poll_send_with(cx, |tx| tx.try_send(&value));
        if res.is_pending() {
            this.queued = Some(value);
        }
        res
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.poll_flush(cx)
    }
}

impl<T: Value> AsyncReceiver<T> {
    /// Registers the receiver's ring and control socket with the current runtime's reactor.
    ///
    /// # Errors
    /// `EMFILE` when no descriptor is free for the two duplicates the reactor watches.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O and time drivers.
    pub fn new(rx: Receiver<T>) -> Result<Self> {
        let ring = RingWait::for_consumer(rx.consumer_ref())?;
        let control = register(rx.control_fd(), Interest::READABLE)?;
        Ok(Self {
            rx,
            ring,
            control,
            attach_timer: None,
            ended: false,
        })
    }

    /// Awaits the next value. Descriptors sent with it are closed (use
    /// [`recv_with_fds`](Self::recv_with_fds)).
    ///
    /// **Cancellation:** cancel-safe. A value is taken from the ring only by the poll that
    /// returns it, so a dropped future (a losing `select!` branch, an expired timeout) takes none;
    /// a record whose ATTACH had not come yet stays in the receiver for the next receive.
    ///
    /// # Errors
    /// As [`Receiver::recv`]: [`Error::PeerGone`] after every value the peer sent.
    pub async fn recv(&mut self) -> Result<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Awaits the next value, decoded into `value` ([`Receiver::recv_into`]: a serde value's
    /// strings and vectors keep their allocations).
    ///
    /// **Cancellation:** cancel-safe, as [`recv`](Self::recv); only the poll that returns
    /// `Ready` writes `value`, so a dropped future leaves it as it was.
    ///
    /// # Errors
    /// As [`Receiver::recv_into`].
    pub async fn recv_into(&mut self, value: &mut T) -> Result<()> {
        poll_fn(|cx| self.poll_take(cx, |rx| rx.try_recv_into_resumable(value))).await
    }

    /// Awaits the next value and the descriptors sent with it.
    ///
    /// **Cancellation:** cancel-safe, as [`recv`](Self::recv).
    ///
    /// # Errors
    /// As [`Receiver::recv_with_fds`].
    pub async fn recv_with_fds(&mut self) -> Result<(T, Vec<OwnedFd>)> {
        poll_fn(|cx| self.poll_take(cx, Receiver::try_recv_with_fds_resumable)).await
    }

    /// The poll form of [`recv`](Self::recv).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        self.poll_take(cx, Receiver::try_recv_resumable)
    }

    fn poll_take<R>(
        &mut self,
        cx: &mut Context<'_>,
        mut take: impl FnMut(&mut Receiver<T>) -> std::result::Result<R, TryRecvError>,
    ) -> Poll<Result<R>> {
        let coop = ready!(tokio::task::coop::poll_proceed(cx));
        loop {
            let res = match take(&mut self.rx) {
                Ok(value) => Ok(value),
                Err(TryRecvError::Broken(err)) => Err(err),
                Err(TryRecvError::Empty) => {
                    match self.rx.attach_limit() {
                        None => ready!(self.ring.poll_consumer(cx, self.rx.consumer()))
                            .map_err(Error::from)?,
                        Some(limit) => {
                            // A record was taken: the wait for the ring is over.
                            self.ring.done_consumer(self.rx.consumer());
                            ready!(self.poll_attach(cx, limit))?;
                        }
                    }
                    continue;
                }
            };
            self.ring.done_consumer(self.rx.consumer());
            coop.made_progress();
            return Poll::Ready(res);
        }
    }

    /// After a receive found the ATTACH of the record it took missing: waits for the control
    /// socket's readability or the record's deadline. `Ready` means "try again" (which completes
    /// the record, or, past the deadline, answers `MissingAttachment`).
    fn poll_attach(&mut self, cx: &mut Context<'_>, limit: Limit) -> Poll<Result<()>> {
        if let Limit::Until(deadline) = limit {
            let deadline = tokio::time::Instant::from_std(deadline);
            let timer = match &mut self.attach_timer {
                Some(timer) => {
                    if timer.deadline() != deadline {
                        timer.as_mut().reset(deadline);
                    }
                    timer
                }
                None => self
                    .attach_timer
                    .insert(Box::pin(tokio::time::sleep_until(deadline))),
            };
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Ok(()));
            }
        }
        loop {
            let mut guard = ready!(self.control.poll_read_ready(cx)).map_err(Error::Os)?;
            if readable_now(self.control.get_ref().as_fd())? {
                return Poll::Ready(Ok(()));
            }
            guard.clear_ready();
        }
    }

    /// The blocking receiver back.
    pub fn into_inner(mut self) -> Receiver<T> {
        self.ring.done_consumer(self.rx.consumer());
        self.rx
    }

    /// The blocking receiver, for its non-waiting calls and counters.
    pub fn get_mut(&mut self) -> &mut Receiver<T> {
        &mut self.rx
    }
}

/// A stream of values: `Some(Ok(value))`; `Some(Err(Error::Decode(..)))` for a record that is not
/// a `T` (the stream goes on); `None` once the peer is gone and every value was delivered. Any
/// other error is yielded once and ends the stream (a protocol violation would repeat forever).
impl<T: Value + Unpin> Stream for AsyncReceiver<T> {
    type Item = Result<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<T>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.poll_recv(cx)) {
            Ok(value) => Poll::Ready(Some(Ok(value))),
            Err(Error::PeerGone) => {
                this.ended = true;
                Poll::Ready(None)
            }
            Err(err @ Error::Decode(_)) => Poll::Ready(Some(Err(err))),
            Err(err) => {
                this.ended = true;
                Poll::Ready(Some(Err(err)))
            }
        }
    }
}
