//! [`Channel`], a duplex message channel over one end of a seqpacket or stream pair, made of a
//! [`Sender`] and a [`Receiver`].
//!
//! Every message is one *frame*: an 8-byte header (see [`frame`](crate::frame)), then the
//! payload. The header gives every message at least one data byte (an empty seqpacket record is
//! indistinguishable from end of file in `recvmsg`, and a stream cannot carry descriptors without
//! data) and declares how many descriptors belong to the frame, so the receiver can insist on an
//! exact match.
//!
//! On a seqpacket pair a frame is one record and its descriptors travel with it. On a stream pair
//! the descriptors are attached to the first byte of the frame, but a `recvmsg` can return the tail
//! of one frame together with the start of the next and the next one's descriptors; the receiver
//! therefore keeps a FIFO of arrived descriptors and hands each completed frame exactly the number
//! its header declares (the scheme Wayland uses).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use rustix::io::Errno;

use crate::end::{End, SocketKind};
use crate::error::{Error, RecvTimeoutError, Result, SendTimeoutError, TryRecvError, TrySendError};
use crate::receiver::{Message, Receiver};
use crate::sender::Sender;

/// The default cap on a message's payload, in bytes (1 MiB). See
/// [`Channel::with_max_message_len`].
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;

/// A duplex message channel over one end of a seqpacket (default) or stream pair.
///
/// # Examples
/// ```
/// use std::os::fd::AsFd;
/// let (a, mut b) = sp_core::Channel::pair(sp_core::SocketKind::SeqPacket)?;
/// let file = std::fs::File::open("/dev/null")?;
/// a.send(b"here is a file", &[file.as_fd()])?;
/// let msg = b.recv()?;
/// assert_eq!(msg.bytes, b"here is a file");
/// assert_eq!(msg.fds.len(), 1);
/// # Ok::<(), sp_core::Error>(())
/// ```
#[derive(Debug)]
pub struct Channel {
    tx: Sender,
    rx: Receiver,
}

impl Channel {
    /// Wraps an end of a stream or seqpacket pair as a message channel.
    ///
    /// # Errors
    /// [`Error::NotASocket`] if the descriptor is not a socket; [`Error::WrongSocketKind`] for a
    /// datagram socket, which cannot tell a reader that its peer is gone.
    pub fn new(end: End) -> Result<Self> {
        let kind = end.kind().map_err(|err| match Errno::from_io_error(&err) {
            Some(Errno::NOTSOCK) => Error::NotASocket,
            Some(Errno::INVAL) => Error::WrongSocketKind,
            _ => Error::Os(err),
        })?;
        if kind == SocketKind::Datagram {
            return Err(Error::WrongSocketKind);
        }
        Ok(Self::from_parts(
            Arc::new(OwnedFd::from(end)),
            kind,
            DEFAULT_MAX_MESSAGE_LEN,
        ))
    }

    /// A connected pair of channels of the given kind (see [`pair`](crate::pair)).
    ///
    /// # Errors
    /// `EMFILE` when out of descriptors; [`Error::WrongSocketKind`] for a datagram kind.
    pub fn pair(kind: SocketKind) -> Result<(Self, Self)> {
        let (a, b) = crate::end::pair(kind)?;
        Ok((Self::new(a)?, Self::new(b)?))
    }

    /// Sets the largest payload this channel sends or accepts (default
    /// [`DEFAULT_MAX_MESSAGE_LEN`]). Both ends should agree: a larger incoming message is dropped
    /// with [`Error::TooLarge`]. On a seqpacket pair the socket's send buffer also bounds a
    /// message (see [`Sender::send`]).
    #[must_use]
    pub fn with_max_message_len(mut self, n_bytes: usize) -> Self {
        let n_bytes = n_bytes.min(u32::MAX as usize);
        self.tx.set_max_len(n_bytes);
        self.rx.set_max_len(n_bytes);
        self
    }

    /// Sends `bytes` with `fds`, blocking until the socket takes the frame; see
    /// [`Sender::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send(bytes, fds)
    }

    /// Sends `bytes` with `fds` if the socket has room now; see [`Sender::try_send`].
    ///
    /// # Errors
    /// As [`Sender::try_send`].
    pub fn try_send(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<(), TrySendError> {
        self.tx.try_send(bytes, fds)
    }

    /// Sends `bytes` with `fds`, waiting at most `timeout` for room; see
    /// [`Sender::send_timeout`].
    ///
    /// # Errors
    /// As [`Sender::send_timeout`].
    pub fn send_timeout(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError> {
        self.tx.send_timeout(bytes, fds, timeout)
    }

    /// Receives the next message, blocking; see [`Receiver::recv`].
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv(&mut self) -> Result<Message> {
        self.rx.recv()
    }

    /// Receives the next message, waiting at most `timeout`; see [`Receiver::recv_timeout`].
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<Message, RecvTimeoutError> {
        self.rx.recv_timeout(timeout)
    }

    /// Receives a message if one is complete, without blocking; see [`Receiver::try_recv`].
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv(&mut self) -> std::result::Result<Message, TryRecvError> {
        self.rx.try_recv()
    }

    /// Receives the next message into `msg`, reusing its buffers; see [`Receiver::recv_into`].
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.rx.recv_into(msg)
    }

    /// As [`recv_into`](Self::recv_into), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv_timeout`].
    pub fn recv_into_timeout(
        &mut self,
        msg: &mut Message,
        timeout: Duration,
    ) -> std::result::Result<(), RecvTimeoutError> {
        self.rx.recv_into_timeout(msg, timeout)
    }

    /// As [`recv_into`](Self::recv_into), without blocking.
    ///
    /// # Errors
    /// As [`Receiver::try_recv`].
    pub fn try_recv_into(&mut self, msg: &mut Message) -> std::result::Result<(), TryRecvError> {
        self.rx.try_recv_into(msg)
    }

    /// Splits the channel into halves that can live on different threads.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }

    /// Gives back the socket, for a protocol that continues without frames on it. Returns the channel unchanged if the receiver
    /// still holds bytes or descriptors of an unfinished stream frame, which would be lost.
    ///
    /// # Errors
    /// The channel itself, when it still buffers received data.
    pub fn into_end(self) -> std::result::Result<End, Box<Self>> {
        if !self.rx.is_idle() {
            return Err(Box::new(self));
        }
        let Self { tx, rx } = self;
        drop(tx);
        let (fd, kind, max_len) = rx.into_parts();
        match Arc::try_unwrap(fd) {
            Ok(fd) => Ok(End::from(fd)),
            // Unreachable: the sender's clone was dropped above and no other clone exists.
            Err(fd) => Err(Box::new(Self::from_parts(fd, kind, max_len))),
        }
    }

    fn from_parts(fd: Arc<OwnedFd>, kind: SocketKind, max_len: usize) -> Self {
        Self {
            tx: Sender::new(Arc::clone(&fd), kind, max_len),
            rx: Receiver::new(fd, kind, max_len),
        }
    }

    /// The sending half.
    pub fn sender(&self) -> &Sender {
        &self.tx
    }

    /// The receiving half.
    pub fn receiver(&mut self) -> &mut Receiver {
        &mut self.rx
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.tx.as_fd()
    }
}
