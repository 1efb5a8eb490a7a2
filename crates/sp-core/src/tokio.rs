//! sp-core under tokio (feature `tokio`): a message [`Channel`] whose waits end in the
//! application's reactor instead of in `poll(2)`, and [`spawn`]/[`adopt`] for `tokio::process`.
//!
//! tokio cannot pass descriptors over a Unix socket itself (tokio #2975). These types can, because
//! every operation *is* the blocking channel's own: a receive is
//! [`Receiver::try_recv_into`](crate::Receiver::try_recv_into) (one `recvmsg` with
//! `MSG_CMSG_CLOEXEC | MSG_DONTWAIT`, the frame checked against its header, truncation and counts
//! checked, every descriptor of a refused message closed), a send is one `send`/`sendmsg` with
//! `MSG_DONTWAIT | MSG_NOSIGNAL` after the blocking sender's checks. Only the wait differs: the
//! socket is registered with tokio's reactor (`AsyncFd`, edge-triggered `epoll`), and an
//! operation that found nothing to do awaits readiness and tries again.
//!
//! # Waiting
//!
//! An operation is tried first: a message that is already queued never touches the reactor. When
//! the socket has nothing (`EAGAIN`), the task awaits the `AsyncFd`'s readiness, tries again, and
//! clears the readiness only when that try found nothing again (tokio's rule: readiness cleared
//! after an event that arrived meanwhile is kept, so no message is missed). A peer's death is a
//! hang-up, which the reactor reports as readiness; the next try reads end of file
//! ([`Error::PeerGone`]) once every message the peer sent has been
//! delivered. Every operation takes one unit of tokio's cooperative budget, so a task that always
//! finds a message still yields to the others now and then.
//!
//! # Cancellation
//!
//! Dropping a receive future never loses a message: a message is taken from the socket only by the
//! try that returns it, and on a stream pair the bytes and descriptors of an unfinished frame stay
//! in the [`Receiver`]. Dropping a send future before it completes has sent nothing, except on a
//! stream pair once the kernel took part of the frame: the rest stays in the [`Sender`] and goes
//! first on its next [`send`](Sender::send) or [`flush`](Sender::flush), so frames are never
//! interleaved or cut (drop the sender with a frame unfinished and the peer reads a truncated
//! stream). No operation sends or receives a message twice.

#![allow(unsafe_code)] // Registering the socket with tokio's reactor (`AsyncFd::register_with_interest`).

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use ::tokio::io::Interest;
use ::tokio::io::unix::{AsyncFd, AsyncFdReadyGuard};
use ::tokio::task::coop;
use rustix::io::Errno;
use rustix::net::SendFlags;

use crate::child::{pidfd_of, spawn_via};
use crate::end::{End, SocketKind};
use crate::error::{Error, Result};
use crate::frame::{HEADER_LEN, Header, encode_header};
use crate::receiver::Message;
use crate::wait::{Stop, retry_intr};
use crate::{Channel as BlockingChannel, SpawnOptions};

/// A duplex message channel over one end of a seqpacket or stream pair, waiting in tokio's
/// reactor; the async form of [`sp_core::Channel`](crate::Channel).
///
/// # Examples
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), sp_core::Error> {
/// use std::os::fd::AsFd;
/// let (mut a, mut b) = sp_core::tokio::Channel::pair(sp_core::SocketKind::SeqPacket)?;
/// let file = std::fs::File::open("/dev/null")?;
/// a.send(b"here is a file", &[file.as_fd()]).await?;
/// let msg = b.recv().await?;
/// assert_eq!((msg.bytes.as_slice(), msg.fds.len()), (&b"here is a file"[..], 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Channel {
    tx: Sender,
    rx: Receiver,
}

/// The sending half of an async [`Channel`].
#[derive(Debug)]
pub struct Sender {
    io: Arc<AsyncFd<Socket>>,
    /// On a stream pair: what a send left of a frame the kernel took only part of, sent before
    /// anything else.
    unsent: Vec<u8>,
}

/// The receiving half of an async [`Channel`].
#[derive(Debug)]
pub struct Receiver {
    io: Arc<AsyncFd<Socket>>,
    rx: crate::Receiver,
}

/// The socket as the reactor knows it: the blocking sender, which owns (a share of) the
/// descriptor and lends it for registration.
#[derive(Debug)]
struct Socket(crate::Sender);

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A child started by [`spawn`]: tokio's `Child` (whose `wait` is a future) and, where the kernel
/// has them, a pidfd.
#[derive(Debug)]
pub struct Child {
    child: ::tokio::process::Child,
    pidfd: Option<OwnedFd>,
}

impl Channel {
    /// Registers a blocking channel with the current tokio runtime's reactor.
    ///
    /// The socket's blocking mode is left as it is: every call here passes `MSG_DONTWAIT`.
    ///
    /// # Errors
    /// [`Error::Os`] if the reactor refuses the descriptor.
    ///
    /// # Panics
    /// Outside a tokio runtime with its I/O driver enabled (tokio's `AsyncFd::with_interest`).
    pub fn new(channel: BlockingChannel) -> Result<Self> {
        let (tx, rx) = channel.split();
        let interest = Interest::READABLE | Interest::WRITABLE;
        // SAFETY: `Socket` owns a share of the descriptor (the blocking sender's `Arc<OwnedFd>`),
        // so it stays open and names the same socket for as long as the `AsyncFd` holds the
        // `Socket`, and `as_raw_fd` always returns that descriptor.
        let io = unsafe { AsyncFd::register_with_interest(Socket(tx), interest) }
            .map_err(io::Error::from)?;
        let io = Arc::new(io);
        Ok(Self {
            tx: Sender {
                io: Arc::clone(&io),
                unsent: Vec::new(),
            },
            rx: Receiver { io, rx },
        })
    }

    /// A connected pair of async channels of the given kind (see [`pair`](crate::pair)).
    ///
    /// # Errors
    /// As [`sp_core::Channel::pair`](crate::Channel::pair) and [`new`](Self::new).
    pub fn pair(kind: SocketKind) -> Result<(Self, Self)> {
        let (a, b) = BlockingChannel::pair(kind)?;
        Ok((Self::new(a)?, Self::new(b)?))
    }

    /// Sends `bytes` with `fds`; see [`Sender::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub async fn send(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send(bytes, fds).await
    }

    /// Receives the next message; see [`Receiver::recv`].
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub async fn recv(&mut self) -> Result<Message> {
        self.rx.recv().await
    }

    /// Receives the next message into `msg`; see [`Receiver::recv_into`].
    ///
    /// # Errors
    /// As [`Receiver::recv_into`].
    pub async fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.rx.recv_into(msg).await
    }

    /// Splits the channel into halves that can live in different tasks.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }

    /// The sending half.
    pub fn sender(&mut self) -> &mut Sender {
        &mut self.tx
    }

    /// The receiving half.
    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.rx
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.io.get_ref().0.as_fd()
    }
}

impl Sender {
    /// `sendmsg(2)` with `SCM_RIGHTS`: sends one message of `bytes` plus `fds`, awaiting room in
    /// the socket.
    ///
    /// The checks and errors are those of the blocking [`Sender::send`](crate::Sender::send)
    /// (too many descriptors or bytes refused before anything is sent, `EMSGSIZE` on a seqpacket
    /// pair, `PeerGone` and never `SIGPIPE`, `ETOOMANYREFS`).
    ///
    /// **Cancellation:** dropping the future before it completes sends nothing, except on a stream
    /// pair once the kernel has taken part of the frame: then the rest is kept in this sender and
    /// goes first on its next `send` or [`flush`](Self::flush). It never sends a message twice.
    ///
    /// # Errors
    /// As [`sp_core::Sender::send`](crate::Sender::send).
    #[doc(alias = "SCM_RIGHTS")]
    #[doc(alias = "sendmsg")]
    pub async fn send(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        // What a cancelled send left goes first, so that frames are never interleaved.
        self.flush().await?;
        let io = &*self.io;
        let sent = poll_fn(|cx| {
            poll_io(io, cx, Interest::WRITABLE, || {
                io.get_ref().0.send_once(bytes, fds)
            })
        })
        .await?;
        if sent < HEADER_LEN + bytes.len() {
            // A stream took part of the frame: the rest is this sender's now, so that a
            // cancellation from here on still delivers the frame whole (by the next call).
            debug_assert_eq!(io.get_ref().0.kind(), SocketKind::Stream);
            let header = encode_header(Header {
                n_fds: fds.len(),
                n_bytes: bytes.len(),
            });
            if sent < HEADER_LEN {
                self.unsent.extend_from_slice(&header[sent..]);
                crate::copy::extend_bytes(&mut self.unsent, bytes);
            } else {
                crate::copy::extend_bytes(&mut self.unsent, &bytes[sent - HEADER_LEN..]);
            }
            self.flush().await?;
        }
        Ok(())
    }

    /// Whether no frame is left partly sent: `false` only on a stream pair after a cancelled
    /// [`send`](Self::send) whose frame the kernel had taken in part (it goes first on the next
    /// `send` or [`flush`](Self::flush)).
    pub fn is_flushed(&self) -> bool {
        self.unsent.is_empty()
    }

    /// Sends what a cancelled [`send`](Self::send) left of a stream frame, if anything; done at
    /// once otherwise.
    ///
    /// **Cancellation:** dropping the future keeps what is still unsent for the next call.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the peer is gone; other socket errors.
    pub async fn flush(&mut self) -> Result<()> {
        poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// The poll form of [`flush`](Self::flush).
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        while !self.unsent.is_empty() {
            let io = &*self.io;
            let unsent = &self.unsent;
            let n = ready!(poll_io(io, cx, Interest::WRITABLE, || {
                let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
                match retry_intr(|| rustix::net::send(io.get_ref().0.as_fd(), unsent, flags)) {
                    Ok(n) => Ok(n),
                    Err(Errno::AGAIN) => Err(Stop::Waited),
                    Err(err) => Err(Error::from(err).into()),
                }
            }))?;
            self.unsent.drain(..n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Receiver {
    /// `recvmsg(2)` with `MSG_CMSG_CLOEXEC`: awaits the next message.
    ///
    /// Every check of the blocking [`Receiver::recv`](crate::Receiver::recv) is made by the same
    /// code: descriptors are close-on-exec from the kernel, truncated control data, a count that
    /// differs from the header, an oversized or malformed frame are errors with every descriptor
    /// that arrived closed, and [`Error::PeerGone`] comes only after every message the peer sent.
    ///
    /// **Cancellation:** cancel-safe. Dropping the future never loses a message: one is taken
    /// from the socket only by the call that returns it.
    ///
    /// # Errors
    /// As [`sp_core::Receiver::recv`](crate::Receiver::recv).
    #[doc(alias = "recvmsg")]
    pub async fn recv(&mut self) -> Result<Message> {
        let mut msg = Message::default();
        self.recv_into(&mut msg).await?;
        Ok(msg)
    }

    /// As [`recv`](Self::recv), into `msg`, reusing its buffers (see
    /// [`sp_core::Receiver::recv_into`](crate::Receiver::recv_into)): `msg` is replaced when a
    /// message arrives, emptied on error, and left as it was while the future waits or when it
    /// is dropped.
    ///
    /// **Cancellation:** cancel-safe, as [`recv`](Self::recv).
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        poll_fn(|cx| self.poll_recv_into(cx, msg)).await
    }

    /// The poll form of [`recv_into`](Self::recv_into), for hand-written futures and streams.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn poll_recv_into(&mut self, cx: &mut Context<'_>, msg: &mut Message) -> Poll<Result<()>> {
        let rx = &mut self.rx;
        poll_io(&self.io, cx, Interest::READABLE, || {
            rx.try_recv_into(msg).map_err(|err| match err {
                crate::TryRecvError::Empty => Stop::Waited,
                crate::TryRecvError::Broken(err) => Stop::Broken(err),
            })
        })
    }

    /// The blocking receiver underneath, for its non-waiting calls (`try_recv`).
    pub fn as_blocking(&mut self) -> &mut crate::Receiver {
        &mut self.rx
    }
}

/// Runs `op` (a non-waiting socket call that reports "nothing to do" as [`Stop::Waited`]) until
/// it does something, awaiting the socket's readiness for `interest` between tries.
///
/// The first try comes before any readiness is looked at, so a queued message never touches the
/// reactor. Readiness is cleared only after a try found nothing, through the guard of that very
/// readiness: an event the reactor saw after it is kept (tokio's tick check), so none is lost.
fn poll_io<R>(
    io: &AsyncFd<Socket>,
    cx: &mut Context<'_>,
    interest: Interest,
    mut op: impl FnMut() -> Result<R, Stop>,
) -> Poll<Result<R>> {
    let coop = ready!(coop::poll_proceed(cx));
    loop {
        match op() {
            Ok(res) => {
                coop.made_progress();
                return Poll::Ready(Ok(res));
            }
            Err(Stop::Broken(err)) => {
                coop.made_progress();
                return Poll::Ready(Err(err));
            }
            Err(Stop::Waited) => {}
        }
        let mut guard: AsyncFdReadyGuard<'_, Socket> = if interest == Interest::READABLE {
            ready!(io.poll_read_ready(cx))?
        } else {
            ready!(io.poll_write_ready(cx))?
        };
        match op() {
            Ok(res) => {
                coop.made_progress();
                return Poll::Ready(Ok(res));
            }
            Err(Stop::Broken(err)) => {
                coop.made_progress();
                return Poll::Ready(Err(err));
            }
            Err(Stop::Waited) => guard.clear_ready(),
        }
    }
}

/// Starts `cmd` (a `tokio::process::Command`) as a child that inherits `end`; see
/// [`spawn_with`].
///
/// # Errors
/// As [`spawn_with`].
pub fn spawn(cmd: &mut ::tokio::process::Command, end: End) -> Result<Child> {
    spawn_with(cmd, end, SpawnOptions::new())
}

/// The async form of [`sp_core::spawn_with`](crate::spawn_with), by the same code: `end` goes to
/// the child at the number named by [`FD_ENV`](crate::FD_ENV) (close-on-exec cleared only in the
/// forked child), the parent's copy is closed when this returns, and the child's exit status is
/// a future ([`Child::wait`]).
///
/// # Errors
/// As [`sp_core::spawn_with`](crate::spawn_with).
///
/// # Panics
/// Outside a tokio runtime (tokio's `Command::spawn`).
pub fn spawn_with(
    cmd: &mut ::tokio::process::Command,
    end: End,
    opts: SpawnOptions,
) -> Result<Child> {
    let child = spawn_via(
        cmd,
        ::tokio::process::Command::as_std_mut,
        ::tokio::process::Command::spawn,
        end,
        opts,
    )?;
    let pidfd = child.id().and_then(pidfd_of);
    Ok(Child { child, pidfd })
}

/// Creates a seqpacket pair, starts `cmd` with one end (see [`spawn_with`]) and returns the
/// child and the async channel over the other end.
///
/// # Errors
/// As [`spawn_with`] and [`Channel::new`].
///
/// # Examples
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let opts = sp_core::SpawnOptions::new().parent_death_signal(sp_core::Signal::KILL);
/// let mut cmd = tokio::process::Command::new("my-worker");
/// let (mut child, mut channel) = sp_core::tokio::spawn_channel(&mut cmd, opts)?;
/// channel.send(b"job", &[]).await?;
/// let reply = channel.recv().await?;
/// child.wait().await?;
/// # let _ = reply;
/// # Ok(())
/// # }
/// ```
pub fn spawn_channel(
    cmd: &mut ::tokio::process::Command,
    opts: SpawnOptions,
) -> Result<(Child, Channel)> {
    let (ours, theirs) = crate::pair(SocketKind::SeqPacket)?;
    let channel = Channel::new(BlockingChannel::new(ours)?)?;
    let child = spawn_with(cmd, theirs, opts)?;
    Ok((child, channel))
}

/// In a child started by [`spawn`] (or the blocking [`spawn`](crate::spawn)): takes the
/// inherited end ([`sp_core::adopt`](crate::adopt)) and registers it as an async channel.
///
/// `adopt` removes [`FD_ENV`](crate::FD_ENV) from the environment only while the process has a
/// single thread; under a multi-threaded runtime call [`sp_core::adopt`](crate::adopt) in `main`
/// before building the runtime, then [`Channel::new`] inside it.
///
/// # Errors
/// As [`sp_core::adopt`](crate::adopt) and [`Channel::new`].
pub fn adopt() -> Result<Channel> {
    Channel::new(BlockingChannel::new(crate::adopt()?)?)
}

impl Child {
    /// The child's process id, until it has been reaped.
    pub fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// A pidfd for the child (`pidfd_open(2)`), if the kernel provides them.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|fd| fd.as_fd())
    }

    /// Awaits the child's exit.
    ///
    /// **Cancellation:** cancel-safe (tokio's `Child::wait`).
    ///
    /// # Errors
    /// As `tokio::process::Child::wait`.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The exit status if the child has exited.
    ///
    /// # Errors
    /// As `tokio::process::Child::try_wait`.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `SIGKILL` and awaits the child's exit.
    ///
    /// # Errors
    /// As `tokio::process::Child::kill`.
    pub async fn kill(&mut self) -> io::Result<()> {
        self.child.kill().await
    }

    /// Sends `SIGKILL` without waiting.
    ///
    /// # Errors
    /// As `tokio::process::Child::start_kill`.
    pub fn start_kill(&mut self) -> io::Result<()> {
        self.child.start_kill()
    }

    /// tokio's `Child` (for its stdio handles, say).
    pub fn as_tokio_mut(&mut self) -> &mut ::tokio::process::Child {
        &mut self.child
    }
}
