//! The receiving half of a message channel, and the [`Message`] it fills: `recvmsg` with
//! `MSG_CMSG_CLOEXEC`, each frame checked against its header, descriptors matched to frames.

use std::collections::VecDeque;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use crate::end::{SocketKind, poll_one};
use crate::error::{Error, Malformed, RecvTimeoutError, Result, TryRecvError};
use crate::frame::{HEADER_LEN, MAX_FDS, declared_fds, decode_header};
use crate::spill::Spill;
use crate::wait::{Stop, Wait, retry_intr};

/// How much a stream receiver asks the kernel for at a time when the frame needs less.
const STREAM_CHUNK: usize = 64 * 1024;

/// `CMSG_SPACE(MAX_FDS * 4)`: a `cmsghdr` (16 bytes on 64-bit Linux) and room for exactly
/// [`MAX_FDS`] descriptors. The kernel delivers `(msg_controllen - sizeof(cmsghdr)) / 4`
/// descriptors at most (`scm_detach_fds`) and sets `MSG_CTRUNC` for the rest.
const RECV_CMSG_LEN: usize = CMSGHDR_LEN + (MAX_FDS * 4).next_multiple_of(size_of::<usize>());
/// `CMSG_ALIGN(sizeof(struct cmsghdr))`: `cmsg_len` (a `size_t`), `cmsg_level`, `cmsg_type`.
const CMSGHDR_LEN: usize = (size_of::<usize>() + 8).next_multiple_of(size_of::<usize>());
// rustix's `cmsg_space!` is the same plus the alignment slack it trims off an unaligned start.
const _: () =
    assert!(RECV_CMSG_LEN + align_of::<usize>() == rustix::cmsg_space!(ScmRights(MAX_FDS)));

/// The control-data buffer of every receive.
///
/// Invariant: it starts on a `cmsghdr` boundary, so rustix hands the kernel all
/// [`RECV_CMSG_LEN`] bytes and the cut-off is exactly [`MAX_FDS`] descriptors. (A plain byte
/// array of `cmsg_space!` bytes holds 64 to 66, depending on where the stack puts it.)
#[repr(C, align(8))]
struct RecvCmsgSpace([MaybeUninit<u8>; RECV_CMSG_LEN]);

/// A received message: its bytes and the file descriptors that came with it, each close-on-exec.
#[derive(Debug, Default)]
pub struct Message {
    /// The payload.
    pub bytes: Vec<u8>,
    /// The descriptors, in the order they were sent.
    pub fds: Vec<OwnedFd>,
}

/// The receiving half of a message channel.
#[derive(Debug)]
pub struct Receiver {
    fd: Arc<OwnedFd>,
    kind: SocketKind,
    max_len: usize,
    /// Seqpacket: the part of a payload that does not fit the caller's `Message` lands here.
    spill: Spill,
    /// Stream: bytes `start..end` are received and not yet handed out.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream only: descriptors that arrived and are not yet matched to a frame.
    fd_fifo: VecDeque<OwnedFd>,
    poisoned: bool,
}

type WaitResult<T> = std::result::Result<T, Stop>;

impl Receiver {
    pub(crate) fn new(fd: Arc<OwnedFd>, kind: SocketKind, max_len: usize) -> Self {
        Self {
            fd,
            kind,
            max_len,
            spill: Spill::default(),
            buf: Vec::new(),
            start: 0,
            end: 0,
            fd_fifo: VecDeque::new(),
            poisoned: false,
        }
    }

    pub(crate) fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// Whether nothing of an unfinished stream frame is buffered (always so on seqpacket).
    pub(crate) fn is_idle(&self) -> bool {
        self.start == self.end && self.fd_fifo.is_empty()
    }

    pub(crate) fn into_parts(self) -> (Arc<OwnedFd>, SocketKind, usize) {
        (self.fd, self.kind, self.max_len)
    }

    /// `recvmsg(2)` with `MSG_CMSG_CLOEXEC`: receives the next message, blocking until one is
    /// complete (even on a non-blocking socket).
    ///
    /// Received descriptors are close-on-exec from the kernel. If anything about a message is
    /// wrong, every descriptor that arrived with it is closed before the error is returned.
    ///
    /// # Errors
    /// - [`Error::PeerGone`] at end of file (the peer closed its end or died), after every
    ///   message it sent before has been delivered;
    /// - [`Error::FdLimit`] when this process is at `RLIMIT_NOFILE` and the kernel dropped
    ///   descriptors; [`Error::FdsTruncated`] for any other `MSG_CTRUNC`;
    /// - [`Error::FdCountMismatch`] when the arrived descriptors do not match the declared count;
    /// - [`Error::TooLarge`] / [`Error::Malformed`] for a message this channel does not accept.
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
        self.recv_wait(Wait::Forever).map_err(Stop::blocking)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] when no complete message arrived in time; otherwise
    /// [`RecvTimeoutError::Broken`] with an error of [`recv`](Self::recv).
    pub fn recv_timeout(
        &mut self,
        timeout: Duration,
    ) -> std::result::Result<Message, RecvTimeoutError> {
        self.recv_wait(Wait::after(timeout)).map_err(Into::into)
    }

    /// Receives a message if one is complete now.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when no complete message is waiting; otherwise
    /// [`TryRecvError::Broken`] with an error of [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> std::result::Result<Message, TryRecvError> {
        self.recv_wait(Wait::Never).map_err(Into::into)
    }

    /// As [`recv`](Self::recv), into `msg`, reusing its buffers: the payload replaces
    /// `msg.bytes` (whose capacity is kept, so a loop over one `Message` allocates only when a
    /// payload outgrows it) and the descriptors replace `msg.fds` (the ones it held are closed).
    /// On error `msg` is left empty: any descriptor that arrived with a refused message is closed.
    /// (The waiting outcomes of the `try_` and `_timeout` forms leave `msg` as it was.)
    ///
    /// On a seqpacket pair the kernel writes the payload straight into `msg.bytes` as far as its
    /// current length reaches, so a loop whose payloads keep one size copies nothing; the part of
    /// a payload beyond that length is received into the channel's own buffer and appended.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_into(&mut self, msg: &mut Message) -> Result<()> {
        self.recv_wait_into(Wait::Forever, msg)
            .map_err(Stop::blocking)
    }

    /// As [`recv_timeout`](Self::recv_timeout), into `msg` (see [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(
        &mut self,
        msg: &mut Message,
        timeout: Duration,
    ) -> std::result::Result<(), RecvTimeoutError> {
        self.recv_wait_into(Wait::after(timeout), msg)
            .map_err(Into::into)
    }

    /// As [`try_recv`](Self::try_recv), into `msg` (see [`recv_into`](Self::recv_into)).
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_into(&mut self, msg: &mut Message) -> std::result::Result<(), TryRecvError> {
        self.recv_wait_into(Wait::Never, msg).map_err(Into::into)
    }

    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn recv_wait(&mut self, wait: Wait) -> WaitResult<Message> {
        let mut msg = Message::default();
        self.recv_wait_into(wait, &mut msg)?;
        Ok(msg)
    }

    /// The one receive behind every form. `msg` is written only once a message is complete (so
    /// [`Stop::Waited`] leaves it as it was) and emptied on a broken outcome.
    fn recv_wait_into(&mut self, wait: Wait, msg: &mut Message) -> WaitResult<()> {
        let res = if self.poisoned {
            Err(Error::Poisoned.into())
        } else if self.kind == SocketKind::Stream {
            self.recv_stream(wait, msg)
        } else {
            self.recv_record(wait, msg)
        };
        if let Err(Stop::Broken(_)) = res {
            // Descriptors taken before the error are closed here, not handed to the caller.
            msg.bytes.clear();
            msg.fds.clear();
        }
        res
    }

    fn recv_record(&mut self, wait: Wait, msg: &mut Message) -> WaitResult<()> {
        let mut flags = RecvFlags::TRUNC;
        if !wait.kernel_blocks() {
            flags |= RecvFlags::DONTWAIT;
        }
        // The payload goes straight into `msg.bytes`, as far as its initialised length already
        // reaches, and the rest into the spill: a loop over one `Message` with payloads of one
        // size copies nothing, and a payload that outgrows the message copies only its growth.
        let held = msg.bytes.len().min(self.max_len);
        let spill = self.spill.get(self.max_len - held, self.max_len)?;
        let mut head = [0u8; HEADER_LEN];
        let mut fds = Vec::new();
        let (n, rflags) = loop {
            let mut iov = [
                IoSliceMut::new(&mut head),
                IoSliceMut::new(&mut msg.bytes[..held]),
                IoSliceMut::new(&mut *spill),
            ];
            match recvmsg_fds(&self.fd, &mut iov, flags, &mut fds) {
                Ok(res) => break res,
                Err(Errno::AGAIN) => wait.until_ready(self.fd.as_fd(), PollFlags::IN)?,
                Err(err) => return Err(Error::from(err).into()),
            }
        };
        if n == 0 && fds.is_empty() {
            // End of file, or an empty record, which no sp-core sender writes (every frame has a
            // header): a peer that is still connected sent garbage, not a hang-up.
            return Err(self.empty_record().into());
        }
        let head = &head[..n.min(HEADER_LEN)];
        if rflags.contains(ReturnFlags::CTRUNC) {
            let declared = declared_fds(head).unwrap_or(fds.len());
            return Err(self.truncated(declared, fds).into());
        }
        if rflags.contains(ReturnFlags::TRUNC) || n > HEADER_LEN + self.max_len {
            return Err(Error::TooLarge {
                len: n.saturating_sub(HEADER_LEN),
                max: self.max_len,
            }
            .into());
        }
        let header = decode_header(head).map_err(Error::Malformed)?;
        let n_bytes = n - HEADER_LEN;
        if header.n_bytes != n_bytes {
            return Err(Error::Malformed(Malformed::LengthMismatch {
                declared: header.n_bytes,
                received: n_bytes,
            })
            .into());
        }
        if header.n_fds != fds.len() {
            return Err(Error::FdCountMismatch {
                declared: header.n_fds,
                received: fds.len(),
            }
            .into());
        }
        if n_bytes <= held {
            msg.bytes.truncate(n_bytes);
        } else {
            crate::copy::extend_bytes(&mut msg.bytes, &spill[..n_bytes - held]);
        }
        msg.fds = fds;
        Ok(())
    }

    fn recv_stream(&mut self, wait: Wait, msg: &mut Message) -> WaitResult<()> {
        loop {
            match self.parse_stream_frame(msg) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(err) => {
                    self.poison();
                    return Err(err.into());
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
        let header = decode_header(avail).map_err(Error::Malformed)?;
        if header.n_bytes > self.max_len {
            return Err(Error::TooLarge {
                len: header.n_bytes,
                max: self.max_len,
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
        msg.bytes.clear();
        crate::copy::extend_bytes(
            &mut msg.bytes,
            &self.buf[self.start + HEADER_LEN..frame_end],
        );
        msg.fds.clear();
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
    fn fill_stream(&mut self, wait: Wait) -> WaitResult<()> {
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
        let mut flags = RecvFlags::empty();
        if !wait.kernel_blocks() {
            flags |= RecvFlags::DONTWAIT;
        }
        let old_end = self.end;
        let mut fds = Vec::new();
        let (n, rflags) = loop {
            let mut iov = [IoSliceMut::new(&mut self.buf[old_end..])];
            match recvmsg_fds(&self.fd, &mut iov, flags, &mut fds) {
                Ok(res) => break res,
                Err(Errno::AGAIN) => wait.until_ready(self.fd.as_fd(), PollFlags::IN)?,
                Err(err) => return Err(Error::from(err).into()),
            }
        };
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
            return Err(err.into());
        }
        if n == 0 {
            self.poison_quiet();
            return Err(Error::PeerGone.into());
        }
        self.end += n;
        self.fd_fifo.extend(fds);
        if self.fd_fifo.len() > MAX_FDS * 2 {
            let queued = self.fd_fifo.len();
            self.poison();
            return Err(Error::Malformed(Malformed::UnclaimedFds { queued }).into());
        }
        Ok(())
    }

    /// A zero-length seqpacket read: end of file if the peer has hung up (`POLLHUP` or
    /// `POLLRDHUP` now) and nothing else is queued, so `PeerGone`; otherwise the peer sent an
    /// empty record, which is `Malformed`, and the records after it are still delivered.
    // Invariant: every frame has its 8-byte header, so only a hang-up makes an empty read the end.
    fn empty_record(&self) -> Error {
        let malformed = Error::Malformed(Malformed::EmptyRecord);
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

/// The socket, to wait for readability with `poll`/`epoll` outside sp-core. Readable means a
/// frame (or part of one, on a stream) or the peer's hang-up is waiting; reading it is the
/// receiver's business: use `try_recv`.
impl AsFd for Receiver {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`: bytes into `iov`, descriptors appended to `fds` (even
/// when the call fails, so each is closed by drop rather than left to a later reader). Returns
/// the byte count (the whole record's length under `MSG_TRUNC`) and the flags.
fn recvmsg_fds(
    fd: &OwnedFd,
    iov: &mut [IoSliceMut<'_>],
    flags: RecvFlags,
    fds: &mut Vec<OwnedFd>,
) -> rustix::io::Result<(usize, ReturnFlags)> {
    let mut cmsg_space = RecvCmsgSpace([MaybeUninit::uninit(); RECV_CMSG_LEN]);
    let mut cmsg = RecvAncillaryBuffer::new(&mut cmsg_space.0);
    // Invariant: received descriptors are close-on-exec from the kernel, never set so later.
    let flags = flags | RecvFlags::CMSG_CLOEXEC;
    let mut reset_seen = false;
    let res = loop {
        match rustix::net::recvmsg(fd, iov, &mut cmsg, flags) {
            Err(Errno::INTR) => continue,
            // Invariant: `PeerGone` only after everything the peer sent. A peer that closed with
            // data of ours unread leaves us ECONNRESET, which a seqpacket receive reports ahead
            // of the messages the peer sent before closing (a stream one after them, instead of
            // end of file). The kernel reports it once: read on, so those messages are not lost.
            Err(Errno::CONNRESET) if !reset_seen => reset_seen = true,
            other => break other,
        }
    };
    // Invariant: every descriptor that arrived becomes an `OwnedFd` here, even when the call
    // failed, so every error path after this closes it by drop.
    for msg in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(iter) = msg {
            fds.extend(iter);
        }
    }
    let res = res?;
    Ok((res.bytes, res.flags))
}
