//! Messages of bytes plus file descriptors (`SCM_RIGHTS`) over a seqpacket or stream pair.
//!
//! Every message is one *frame*: an 8-byte header, then the payload. The header is
//!
//! | offset | size | field                                   |
//! |--------|------|-----------------------------------------|
//! | 0      | 2    | magic `0x5350` ("SP"), little-endian     |
//! | 2      | 1    | version, 1                              |
//! | 3      | 1    | `n_fds`, descriptors sent with the frame |
//! | 4      | 4    | `n_bytes`, payload length, little-endian |
//!
//! The header gives every message at least one data byte (an empty seqpacket record is
//! indistinguishable from end of file in `recvmsg`, and a stream cannot carry descriptors without
//! data) and declares how many
//! descriptors belong to the frame, so the receiver can insist on an exact match.
//!
//! On a seqpacket pair a frame is one record and its descriptors travel with it. On a stream pair
//! the descriptors are attached to the first byte of the frame, but a `recvmsg` can return the tail
//! of one frame together with the start of the next and the next one's descriptors; the receiver
//! therefore keeps a FIFO of arrived descriptors and hands each completed frame exactly the number
//! its header declares (the scheme Wayland uses).

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::end::{End, SocketKind, poll_one};
use crate::error::{Error, Result};

/// The most file descriptors one message may carry.
///
/// Well under the kernel's `SCM_MAX_FD` (253): the receive buffer for control data is sized for
/// exactly this many, so a peer that sends more has its message truncated by the kernel, which
/// sp-core reports as [`Error::FdsTruncated`] after closing what arrived. A sender asking to send
/// more gets [`Error::TooManyFds`] and nothing is sent; split the descriptors over several
/// messages.
pub const MAX_FDS: usize = 64;

/// The default cap on a message's payload, in bytes (1 MiB). See
/// [`Channel::with_max_message_len`].
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 1 << 20;

/// Bytes of frame header in front of every payload.
pub const HEADER_LEN: usize = 8;

const MAGIC: u16 = 0x5350;
const VERSION: u8 = 1;
/// The kernel refuses a seqpacket record longer than `SO_SNDBUF` minus this overhead
/// (`unix_dgram_sendmsg`: `len > sk_sndbuf - 32`).
const SEQPACKET_OVERHEAD: usize = 32;
/// The largest frame (header included) that [`Sender::send`] copies into one buffer for a plain
/// `send` when it carries no descriptors.
const SMALL_FRAME: usize = 512;
/// How much a stream receiver asks the kernel for at a time when the frame needs less.
const STREAM_CHUNK: usize = 64 * 1024;

/// A received message: its bytes and the file descriptors that came with it, each close-on-exec.
#[derive(Debug, Default)]
pub struct Message {
    /// The payload.
    pub bytes: Vec<u8>,
    /// The descriptors, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// The sending half of a message channel. `send` takes `&self`; a `Sender` can be shared between
/// threads, and on a stream pair whole frames never interleave.
#[derive(Debug)]
pub struct Sender {
    fd: Arc<OwnedFd>,
    kind: SocketKind,
    max_len: usize,
    /// Serialises stream frames: a stream `sendmsg` can be partial, and two senders must not
    /// interleave their pieces.
    stream_lock: Mutex<()>,
}

/// The receiving half of a message channel.
#[derive(Debug)]
pub struct Receiver {
    fd: Arc<OwnedFd>,
    kind: SocketKind,
    max_len: usize,
    /// Seqpacket: one record at a time lands here. Stream: bytes `start..end` are received and not
    /// yet handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream only: descriptors that arrived and are not yet matched to a frame.
    fd_fifo: VecDeque<OwnedFd>,
    poisoned: bool,
}

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

/// How long a receive may wait.
#[derive(Clone, Copy)]
enum Wait {
    Forever,
    Never,
    Until(Instant),
}

impl Wait {
    /// Until `timeout` from now; a timeout too long to add to the clock is no limit.
    fn after(timeout: Duration) -> Self {
        Instant::now()
            .checked_add(timeout)
            .map_or(Self::Forever, Self::Until)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    n_fds: usize,
    n_bytes: usize,
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
        let (a, b) = crate::pair(kind)?;
        Ok((Self::new(a)?, Self::new(b)?))
    }

    /// Sets the largest payload this channel sends or accepts (default
    /// [`DEFAULT_MAX_MESSAGE_LEN`]). Both ends should agree: a larger incoming message is dropped
    /// with [`Error::MessageTooLarge`]. On a seqpacket pair the socket's send buffer also bounds a
    /// message (see [`Sender::send`]).
    #[must_use]
    pub fn with_max_message_len(mut self, n_bytes: usize) -> Self {
        let n_bytes = n_bytes.min(u32::MAX as usize);
        self.tx.max_len = n_bytes;
        self.rx.max_len = n_bytes;
        self
    }

    /// Sends `bytes` with `fds`; see [`Sender::send`].
    ///
    /// # Errors
    /// As [`Sender::send`].
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.tx.send(bytes, fds)
    }

    /// Receives the next message, blocking; see [`Receiver::recv`].
    ///
    /// # Errors
    /// As [`Receiver::recv`].
    pub fn recv(&mut self) -> Result<Message> {
        self.rx.recv()
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`Error::TimedOut`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        self.rx.recv_timeout(timeout)
    }

    /// Receives a message if one is complete, without blocking.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Message> {
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
    /// As [`Receiver::recv`], plus [`Error::TimedOut`].
    pub fn recv_into_timeout(&mut self, msg: &mut Message, timeout: Duration) -> Result<()> {
        self.rx.recv_into_timeout(msg, timeout)
    }

    /// As [`recv_into`](Self::recv_into), without blocking.
    ///
    /// # Errors
    /// As [`Receiver::recv`], plus [`Error::WouldBlock`].
    pub fn try_recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.rx.try_recv_into(msg)
    }

    /// Splits the channel into halves that can live on different threads.
    pub fn split(self) -> (Sender, Receiver) {
        (self.tx, self.rx)
    }

    /// Gives back the socket, for a protocol that continues without frames (sp-shm uses the
    /// socket for wake-ups after its handshake). Returns the channel unchanged if the receiver
    /// still holds bytes or descriptors of an unfinished stream frame, which would be lost.
    ///
    /// # Errors
    /// The channel itself, when it still buffers received data.
    pub fn into_end(self) -> std::result::Result<End, Box<Self>> {
        if self.rx.start != self.rx.end || !self.rx.fd_fifo.is_empty() {
            return Err(Box::new(self));
        }
        let Self { tx, rx } = self;
        drop(tx);
        match Arc::try_unwrap(rx.fd) {
            Ok(fd) => Ok(End::from(fd)),
            // Unreachable: the sender's clone was dropped above and no other clone exists.
            Err(fd) => Err(Box::new(Self::from_parts(fd, rx.kind, rx.max_len))),
        }
    }

    fn from_parts(fd: Arc<OwnedFd>, kind: SocketKind, max_len: usize) -> Self {
        Self {
            tx: Sender {
                fd: Arc::clone(&fd),
                kind,
                max_len,
                stream_lock: Mutex::new(()),
            },
            rx: Receiver {
                fd,
                kind,
                max_len,
                buf: Vec::new(),
                start: 0,
                end: 0,
                fd_fifo: VecDeque::new(),
                poisoned: false,
            },
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
        self.tx.fd.as_fd()
    }
}

impl Sender {
    /// `sendmsg(2)` with `SCM_RIGHTS` and `MSG_NOSIGNAL`: sends one message of `bytes` plus `fds`.
    ///
    /// The descriptors are duplicated into the receiver by the kernel; the caller keeps its own.
    /// On a stream pair the whole frame is always sent (a partial write is finished, waiting for
    /// buffer space if needed), so frames stay intact even on a non-blocking socket. On a seqpacket
    /// pair a non-blocking socket with a full buffer gives [`Error::WouldBlock`] and sends nothing.
    ///
    /// # Errors
    /// - [`Error::TooManyFds`] for more than [`MAX_FDS`] descriptors and
    ///   [`Error::MessageTooLarge`] for more than the channel's maximum, both before anything is
    ///   sent; on a seqpacket pair also when the record does not fit the socket's send buffer
    ///   (`EMSGSIZE`), with the limit that buffer sets;
    /// - [`Error::PeerGone`] when the peer has closed its end (never `SIGPIPE`);
    /// - [`Error::Os`] with `ETOOMANYREFS` when descriptors in flight nest too deeply.
    ///
    /// # References
    /// [sendmsg(2)](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
    /// [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
    #[doc(alias = "SCM_RIGHTS")]
    #[doc(alias = "sendmsg")]
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyFds {
                n_fds: fds.len(),
                max: MAX_FDS,
            });
        }
        if bytes.len() > self.max_len {
            return Err(Error::MessageTooLarge {
                n_bytes: bytes.len(),
                limit: self.max_len,
            });
        }
        let header = encode_header(Header {
            n_fds: fds.len(),
            n_bytes: bytes.len(),
        });
        match self.kind {
            SocketKind::Stream => {
                let _guard = self.stream_lock.lock().unwrap_or_else(|e| e.into_inner());
                let sent = retry_intr(|| send_frame(&self.fd, &header, bytes, fds))?;
                self.finish_stream_frame(&header, bytes, sent)
            }
            _ => match retry_intr(|| send_frame(&self.fd, &header, bytes, fds)) {
                Ok(_) => Ok(()),
                Err(Errno::MSGSIZE) => Err(Error::MessageTooLarge {
                    n_bytes: bytes.len(),
                    limit: self.seqpacket_limit(),
                }),
                Err(err) => Err(err.into()),
            },
        }
    }

    /// The largest payload the socket's current send buffer lets one seqpacket record carry.
    fn seqpacket_limit(&self) -> usize {
        let sndbuf = rustix::net::sockopt::socket_send_buffer_size(&*self.fd).unwrap_or(0);
        sndbuf
            .saturating_sub(SEQPACKET_OVERHEAD + HEADER_LEN)
            .min(self.max_len)
    }

    /// Sends what a partial stream `sendmsg` left of the frame; the descriptors went with the
    /// first byte, so the rest is plain data.
    fn finish_stream_frame(
        &self,
        header: &[u8; HEADER_LEN],
        bytes: &[u8],
        mut sent: usize,
    ) -> Result<()> {
        let total = HEADER_LEN + bytes.len();
        while sent < total {
            let rest = if sent < HEADER_LEN {
                let iov = [IoSlice::new(&header[sent..]), IoSlice::new(bytes)];
                let mut none = SendAncillaryBuffer::default();
                rustix::net::sendmsg(&*self.fd, &iov, &mut none, SendFlags::NOSIGNAL)
            } else {
                rustix::net::send(&*self.fd, &bytes[sent - HEADER_LEN..], SendFlags::NOSIGNAL)
            };
            match rest {
                Ok(n) => sent += n,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    // A non-blocking socket or SO_SNDTIMEO: finish the frame anyway, or the
                    // stream would be left mid-frame.
                    poll_one(self.fd.as_fd(), PollFlags::OUT, None)?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }
}

impl Receiver {
    /// `recvmsg(2)` with `MSG_CMSG_CLOEXEC`: receives the next message, blocking until one is
    /// complete.
    ///
    /// Received descriptors are close-on-exec from the kernel. If anything about a message is
    /// wrong, every descriptor that arrived with it is closed before the error is returned.
    ///
    /// # Errors
    /// - [`Error::PeerGone`] at end of file (the peer closed its end or died);
    /// - [`Error::FdLimit`] when this process is at `RLIMIT_NOFILE` and the kernel dropped
    ///   descriptors; [`Error::FdsTruncated`] for any other `MSG_CTRUNC`;
    /// - [`Error::FdCountMismatch`] when the arrived descriptors do not match the declared count;
    /// - [`Error::MessageTooLarge`] / [`Error::Malformed`] for a message this channel does not
    ///   accept.
    ///
    /// On a seqpacket pair the bad message is consumed and the channel keeps working. On a stream
    /// pair a descriptor error leaves no safe way to match later descriptors to later frames, so the
    /// receiver answers [`Error::Poisoned`] from then on.
    ///
    /// # References
    /// [recvmsg(2)](https://man7.org/linux/man-pages/man2/recvmsg.2.html),
    /// [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
    #[doc(alias = "recvmsg")]
    #[doc(alias = "MSG_CMSG_CLOEXEC")]
    pub fn recv(&mut self) -> Result<Message> {
        self.recv_wait(Wait::Forever)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus [`Error::TimedOut`].
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Message> {
        self.recv_wait(Wait::after(timeout))
    }

    /// Receives a message if one is complete now.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), plus [`Error::WouldBlock`].
    pub fn try_recv(&mut self) -> Result<Message> {
        self.recv_wait(Wait::Never)
    }

    /// As [`recv`](Self::recv), into `msg`, reusing its buffers: the payload replaces
    /// `msg.bytes` (whose capacity is kept, so a loop over one `Message` allocates only when a
    /// payload outgrows it) and the descriptors replace `msg.fds` (the ones it held are closed).
    /// On error `msg` is left empty: any descriptor that arrived with a refused message is closed.
    ///
    /// On a seqpacket pair the kernel writes the payload straight into `msg.bytes` as far as its
    /// current length reaches, so a loop whose payloads keep one size copies nothing; the part of
    /// a payload beyond that length is received into the channel's own buffer and appended.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.recv_wait_into(Wait::Forever, msg)
    }

    /// As [`recv_timeout`](Self::recv_timeout), into `msg` (see [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(&mut self, msg: &mut Message, timeout: Duration) -> Result<()> {
        self.recv_wait_into(Wait::after(timeout), msg)
    }

    /// As [`try_recv`](Self::try_recv), into `msg` (see [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.recv_wait_into(Wait::Never, msg)
    }

    /// Turns this receiver into a [`crossbeam_channel::Receiver`] fed by a reader thread; see
    /// [`Bridge`](crate::Bridge).
    ///
    /// # Errors
    /// When the stop pipe or the thread cannot be created.
    pub fn into_crossbeam(self, capacity: usize) -> Result<crate::Bridge> {
        crate::bridge::Bridge::start(self, capacity)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn recv_wait(&mut self, wait: Wait) -> Result<Message> {
        let mut msg = Message::default();
        self.recv_wait_into(wait, &mut msg)?;
        Ok(msg)
    }

    fn recv_wait_into(&mut self, wait: Wait, msg: &mut Message) -> Result<()> {
        // `msg.bytes` keeps its contents for now: a record is received into them (they are
        // overwritten, then cut to the new payload).
        msg.fds.clear();
        if self.poisoned {
            msg.bytes.clear();
            return Err(Error::Poisoned);
        }
        let res = match self.kind {
            SocketKind::Stream => {
                msg.bytes.clear();
                self.recv_stream(wait, msg)
            }
            _ => self.recv_record(wait, msg),
        };
        if res.is_err() {
            // Descriptors taken before the error are closed here, not handed to the caller.
            msg.bytes.clear();
            msg.fds.clear();
        }
        res
    }

    /// Blocks (per `wait`) until the socket is readable; returns the flags for `recvmsg`.
    fn wait_readable(&self, wait: Wait) -> Result<RecvFlags> {
        match wait {
            Wait::Forever => Ok(RecvFlags::empty()),
            Wait::Never => Ok(RecvFlags::DONTWAIT),
            Wait::Until(deadline) => {
                match poll_one(self.fd.as_fd(), PollFlags::IN, Some(deadline))? {
                    Some(_) => Ok(RecvFlags::DONTWAIT),
                    None => Err(Error::TimedOut),
                }
            }
        }
    }

    fn recv_record(&mut self, wait: Wait, msg: &mut Message) -> Result<()> {
        let flags = self.wait_readable(wait)? | RecvFlags::TRUNC;
        // The payload goes straight into `msg.bytes`, as far as its initialised length already
        // reaches, and the rest into `self.buf`: a loop over one `Message` with payloads of one
        // size copies nothing, and a payload that outgrows the message copies only its growth.
        let held = msg.bytes.len().min(self.max_len);
        if self.buf.len() < self.max_len - held {
            self.buf.resize(self.max_len, 0);
        }
        let mut head = [0u8; HEADER_LEN];
        let mut iov = [
            IoSliceMut::new(&mut head),
            IoSliceMut::new(&mut msg.bytes[..held]),
            IoSliceMut::new(&mut self.buf[..self.max_len - held]),
        ];
        let (n, rflags) = recvmsg_fds(&self.fd, &mut iov, flags, &mut msg.fds)?;
        let fds = &mut msg.fds;
        if n == 0 && fds.is_empty() {
            // End of file, or an empty record, which no sp-core sender writes (every frame has a
            // header): a peer that is still connected sent garbage, not a hang-up.
            return Err(self.empty_record());
        }
        let head = &head[..n.min(HEADER_LEN)];
        if rflags.contains(ReturnFlags::CTRUNC) {
            let declared = declared_fds(head).unwrap_or(fds.len());
            return Err(self.truncated(declared, std::mem::take(fds)));
        }
        if rflags.contains(ReturnFlags::TRUNC) || n > HEADER_LEN + self.max_len {
            return Err(Error::MessageTooLarge {
                n_bytes: n.saturating_sub(HEADER_LEN),
                limit: self.max_len,
            });
        }
        let header = decode_header(head)?;
        let n_bytes = n - HEADER_LEN;
        if header.n_bytes != n_bytes {
            return Err(Error::Malformed("payload length differs from the header"));
        }
        if header.n_fds != fds.len() {
            return Err(Error::FdCountMismatch {
                declared: header.n_fds,
                received: fds.len(),
            });
        }
        if n_bytes <= held {
            msg.bytes.truncate(n_bytes);
        } else {
            msg.bytes.extend_from_slice(&self.buf[..n_bytes - held]);
        }
        Ok(())
    }

    fn recv_stream(&mut self, wait: Wait, msg: &mut Message) -> Result<()> {
        loop {
            match self.parse_stream_frame(msg) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => {
                    self.poison();
                    return Err(err);
                }
            }
            self.fill_stream(wait)?;
        }
    }

    /// Hands out the first buffered frame into `msg` if it is complete (`true`).
    fn parse_stream_frame(&mut self, msg: &mut Message) -> Result<bool> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER_LEN {
            return Ok(false);
        }
        let header = decode_header(avail)?;
        if header.n_bytes > self.max_len {
            return Err(Error::MessageTooLarge {
                n_bytes: header.n_bytes,
                limit: self.max_len,
            });
        }
        if avail.len() < HEADER_LEN + header.n_bytes {
            return Ok(false);
        }
        if self.fd_fifo.len() < header.n_fds {
            return Err(Error::FdCountMismatch {
                declared: header.n_fds,
                received: self.fd_fifo.len(),
            });
        }
        let frame_end = self.start + HEADER_LEN + header.n_bytes;
        msg.bytes
            .extend_from_slice(&self.buf[self.start + HEADER_LEN..frame_end]);
        msg.fds.extend(self.fd_fifo.drain(..header.n_fds));
        self.start = frame_end;
        if self.start == self.end && !self.fd_fifo.is_empty() {
            // Descriptors arrive with the first byte of their frame, so with no bytes left over
            // any descriptor still queued came with this frame beyond its declared count.
            let received = header.n_fds + self.fd_fifo.len();
            return Err(Error::FdCountMismatch {
                declared: header.n_fds,
                received,
            });
        }
        Ok(true)
    }

    /// Reads more stream bytes (and descriptors) after the buffered ones.
    fn fill_stream(&mut self, wait: Wait) -> Result<()> {
        // Move a partial frame to the front so the buffer never grows past one frame plus a chunk.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let frame_len =
            decode_header(&self.buf[..self.end]).map_or(HEADER_LEN, |h| HEADER_LEN + h.n_bytes);
        let want = frame_len.max(self.end + STREAM_CHUNK);
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let flags = self.wait_readable(wait)?;
        let mut fds = Vec::new();
        let old_end = self.end;
        let mut iov = [IoSliceMut::new(&mut self.buf[old_end..])];
        let (n, rflags) = recvmsg_fds(&self.fd, &mut iov, flags, &mut fds)?;
        if rflags.contains(ReturnFlags::CTRUNC) {
            // Descriptors come with the first byte of the data they were sent with; when no
            // partial frame was buffered, that is the header of the frame that declared them.
            let declared = if old_end == 0 {
                declared_fds(&self.buf[..n]).unwrap_or(fds.len())
            } else {
                fds.len()
            };
            let err = self.truncated(declared, fds);
            self.poison();
            return Err(err);
        }
        if n == 0 {
            self.poison_quiet();
            return Err(Error::PeerGone);
        }
        self.end += n;
        self.fd_fifo.extend(fds);
        if self.fd_fifo.len() > MAX_FDS * 2 {
            self.poison();
            return Err(Error::Malformed(
                "descriptors arrived without frames to claim them",
            ));
        }
        Ok(())
    }

    /// A zero-length seqpacket read: end of file if the peer has hung up (`POLLHUP` or
    /// `POLLRDHUP` now) and nothing else is queued, so `PeerGone`; otherwise the peer sent an
    /// empty record, which is `Malformed`, and the records after it are still delivered.
    fn empty_record(&self) -> Error {
        let malformed = Error::Malformed("an empty record: every frame has an 8-byte header");
        let hung_up = PollFlags::HUP | PollFlags::RDHUP;
        match poll_one(self.fd.as_fd(), PollFlags::RDHUP, Some(Instant::now())) {
            Ok(Some(revents)) if revents.intersects(hung_up) => {
                // Gone, but records it sent after the empty one may still be queued: only when
                // nothing (or nothing but another empty record) is left is this the end.
                let mut probe = [0u8; 1];
                let flags = RecvFlags::PEEK | RecvFlags::DONTWAIT | RecvFlags::TRUNC;
                match retry_intr(|| rustix::net::recv(&*self.fd, &mut probe, flags)) {
                    Ok((_, len)) if len > 0 => malformed,
                    _ => Error::PeerGone,
                }
            }
            Ok(_) => malformed,
            Err(err) => err.into(),
        }
    }

    /// Builds the error for `MSG_CTRUNC`, telling `EMFILE` apart from other causes while the
    /// arrived descriptors are still open, then closes them.
    fn truncated(&self, declared: usize, fds: Vec<OwnedFd>) -> Error {
        let received = fds.len();
        let declared = declared.max(received);
        let at_limit = matches!(
            rustix::io::fcntl_dupfd_cloexec(&*self.fd, 0),
            Err(Errno::MFILE)
        );
        drop(fds);
        if at_limit {
            Error::FdLimit { declared, received }
        } else {
            Error::FdsTruncated { declared, received }
        }
    }

    /// Closes queued descriptors and refuses further receives.
    fn poison(&mut self) {
        self.poison_quiet();
        self.poisoned = true;
    }

    /// Drops buffered state after end of file; later receives report end of file again.
    fn poison_quiet(&mut self) {
        self.fd_fifo.clear();
        self.start = 0;
        self.end = 0;
    }
}

/// One `send`/`sendmsg` of a frame with `MSG_NOSIGNAL`: the header, `bytes` and `fds` (at most
/// [`MAX_FDS`]). Returns the bytes sent (on a stream, possibly fewer than the frame).
fn send_frame(
    fd: &OwnedFd,
    header: &[u8; HEADER_LEN],
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
) -> rustix::io::Result<usize> {
    if fds.is_empty() && bytes.len() <= SMALL_FRAME - HEADER_LEN {
        // A small frame is copied whole into one buffer and sent with `send`, which the kernel
        // takes in fewer steps than a `sendmsg` of two pieces (no message header or iovec array
        // to copy in); a larger one goes as it is, where that copy would cost more than it saves.
        let mut frame = [0u8; SMALL_FRAME];
        let len = HEADER_LEN + bytes.len();
        frame[..HEADER_LEN].copy_from_slice(header);
        frame[HEADER_LEN..len].copy_from_slice(bytes);
        return rustix::net::send(fd, &frame[..len], SendFlags::NOSIGNAL);
    }
    let mut cmsg_space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = SendAncillaryBuffer::new(&mut cmsg_space);
    if !fds.is_empty() {
        // Cannot fail: the buffer has room for MAX_FDS descriptors, and the caller sends no more.
        let pushed = cmsg.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed);
    }
    let iov = [IoSlice::new(header), IoSlice::new(bytes)];
    rustix::net::sendmsg(fd, &iov, &mut cmsg, SendFlags::NOSIGNAL)
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`: bytes into `iov`, descriptors appended to `fds` (even
/// when the call fails, so each is closed by drop rather than left to a later reader). Returns
/// the byte count (the whole record's length under `MSG_TRUNC`) and the flags.
fn recvmsg_fds(
    fd: &OwnedFd,
    iov: &mut [IoSliceMut<'_>],
    flags: RecvFlags,
    fds: &mut Vec<OwnedFd>,
) -> Result<(usize, ReturnFlags)> {
    let mut cmsg_space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut cmsg_space);
    let flags = flags | RecvFlags::CMSG_CLOEXEC;
    let mut reset_seen = false;
    let res = loop {
        match rustix::net::recvmsg(fd, iov, &mut cmsg, flags) {
            Err(Errno::INTR) => continue,
            // A peer that closed with data of ours unread leaves us ECONNRESET, which a
            // seqpacket receive reports ahead of the messages the peer sent before closing.
            // The kernel reports it once: read on, so those messages are not lost; end of
            // file follows them.
            Err(Errno::CONNRESET) if !reset_seen => reset_seen = true,
            other => break other,
        }
    };
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(iter) = msg {
            fds.extend(iter);
        }
    }
    let res = res?;
    Ok((res.bytes, res.flags))
}

fn encode_header(header: Header) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0..2].copy_from_slice(&MAGIC.to_le_bytes());
    out[2] = VERSION;
    // Both fit: n_fds <= MAX_FDS < 256 and n_bytes <= max_len <= u32::MAX, checked by the caller.
    out[3] = header.n_fds as u8;
    out[4..8].copy_from_slice(&(header.n_bytes as u32).to_le_bytes());
    out
}

/// The header at the front of `bytes` with its magic and version checked, its counts not yet:
/// `(n_fds, n_bytes)`.
fn raw_header(bytes: &[u8]) -> Result<(usize, usize)> {
    let Some(head) = bytes.first_chunk::<HEADER_LEN>() else {
        return Err(Error::Malformed("shorter than a frame header"));
    };
    if u16::from_le_bytes([head[0], head[1]]) != MAGIC {
        return Err(Error::Malformed("bad magic"));
    }
    if head[2] != VERSION {
        return Err(Error::Malformed("unsupported version"));
    }
    let n_bytes = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) as usize;
    Ok((usize::from(head[3]), n_bytes))
}

/// The descriptor count a frame header declares, even when it is over [`MAX_FDS`] (for the
/// error report of a truncated frame); `None` unless `bytes` starts with our magic and version.
fn declared_fds(bytes: &[u8]) -> Option<usize> {
    raw_header(bytes).ok().map(|(n_fds, _)| n_fds)
}

/// Parses the header at the front of `bytes` (which may hold more than a header).
fn decode_header(bytes: &[u8]) -> Result<Header> {
    let (n_fds, n_bytes) = raw_header(bytes)?;
    if n_fds > MAX_FDS {
        return Err(Error::Malformed("more descriptors declared than MAX_FDS"));
    }
    Ok(Header { n_fds, n_bytes })
}

fn retry_intr<T>(mut f: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match f() {
            Err(Errno::INTR) => {}
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = Header {
            n_fds: 3,
            n_bytes: 70_000,
        };
        assert_eq!(decode_header(&encode_header(h)).unwrap(), h);
    }

    #[test]
    fn header_rejects_garbage() {
        assert!(matches!(decode_header(&[0; 4]), Err(Error::Malformed(_))));
        assert!(matches!(
            decode_header(&[0; 8]),
            Err(Error::Malformed("bad magic"))
        ));
        let mut h = encode_header(Header {
            n_fds: 0,
            n_bytes: 0,
        });
        h[2] = 9;
        assert!(matches!(
            decode_header(&h),
            Err(Error::Malformed("unsupported version"))
        ));
        let mut h = encode_header(Header {
            n_fds: 0,
            n_bytes: 0,
        });
        h[3] = 200;
        assert!(matches!(decode_header(&h), Err(Error::Malformed(_))));
    }

    proptest::proptest! {
        /// Any bytes: a header that decodes has the magic, version 1 and at most `MAX_FDS`
        /// descriptors, and re-encodes to the same 8 bytes; anything else is `Malformed`.
        #[test]
        fn header_decoder_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..16)) {
            match decode_header(&bytes) {
                Ok(h) => {
                    proptest::prop_assert!(h.n_fds <= MAX_FDS);
                    proptest::prop_assert_eq!(&encode_header(h)[..], &bytes[..HEADER_LEN]);
                }
                Err(Error::Malformed(_)) => {}
                Err(err) => proptest::prop_assert!(false, "unexpected {err:?}"),
            }
        }
    }
}
