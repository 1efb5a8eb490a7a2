//! The sending half of a message channel: one `send`/`sendmsg` per frame, with `SCM_RIGHTS` and
//! `MSG_NOSIGNAL`.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustix::event::PollFlags;
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::end::{SocketKind, poll_one};
use crate::error::{Error, Result, SendTimeoutError, TrySendError};
use crate::frame::{HEADER_LEN, Header, MAX_FDS, encode_header};
use crate::wait::{Stop, Wait, retry_intr};

/// The kernel refuses a seqpacket record longer than `SO_SNDBUF` minus this overhead
/// (`unix_dgram_sendmsg`: `len > sk_sndbuf - 32`).
const SEQPACKET_OVERHEAD: usize = 32;
/// The largest frame (header included) that a send copies into one buffer for a plain `send`
/// when it carries no descriptors.
const SMALL_FRAME: usize = 512;

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

impl Sender {
    pub(crate) fn new(fd: Arc<OwnedFd>, kind: SocketKind, max_len: usize) -> Self {
        Self {
            fd,
            kind,
            max_len,
            stream_lock: Mutex::new(()),
        }
    }

    pub(crate) fn set_max_len(&mut self, max_len: usize) {
        self.max_len = max_len;
    }

    /// `sendmsg(2)` with `SCM_RIGHTS` and `MSG_NOSIGNAL`: sends one message of `bytes` plus
    /// `fds`, blocking until the socket takes it.
    ///
    /// The descriptors are duplicated into the receiver by the kernel; the caller keeps its own.
    /// This waits for room even on a non-blocking socket (use [`try_send`](Self::try_send) not
    /// to wait). On a stream pair the whole frame is always sent: a partial write is finished,
    /// so frames stay intact.
    ///
    /// # Errors
    /// - [`Error::TooManyFds`] for more than [`MAX_FDS`] descriptors and [`Error::TooLarge`] for
    ///   more than the channel's maximum, both before anything is sent; on a seqpacket pair also
    ///   when the record does not fit the socket's send buffer (`EMSGSIZE`), with the limit that
    ///   buffer sets;
    /// - [`Error::PeerGone`] when the peer has closed its end (never `SIGPIPE`);
    /// - [`Error::Os`] with `ETOOMANYREFS` when this user already has more descriptors in flight
    ///   (sent, not yet received) than this process's `RLIMIT_NOFILE` soft limit (root,
    ///   `CAP_SYS_RESOURCE` and `CAP_SYS_ADMIN` are exempt); nothing is sent.
    ///
    /// # References
    /// [sendmsg(2)](https://man7.org/linux/man-pages/man2/sendmsg.2.html),
    /// [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
    #[doc(alias = "SCM_RIGHTS")]
    #[doc(alias = "sendmsg")]
    pub fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        self.send_wait(bytes, fds, Wait::Forever)
            .map_err(Stop::blocking)
    }

    /// As [`send`](Self::send), but only if the socket has room for the frame now.
    ///
    /// On a stream pair, once the kernel has taken part of the frame the rest is sent even if
    /// that means waiting, so that no frame is left half-sent.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when the send buffer has no room (nothing was sent); otherwise
    /// [`TrySendError::Broken`] with an error of [`send`](Self::send).
    pub fn try_send(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<(), TrySendError> {
        self.send_wait(bytes, fds, Wait::Never).map_err(Into::into)
    }

    /// As [`send`](Self::send), waiting at most `timeout` for room.
    ///
    /// On a stream pair the limit applies until the kernel takes the first part of the frame;
    /// the rest is then sent even if that takes longer.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] when no room appeared in time (nothing was sent); otherwise
    /// [`SendTimeoutError::Broken`] with an error of [`send`](Self::send).
    pub fn send_timeout(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> std::result::Result<(), SendTimeoutError> {
        self.send_wait(bytes, fds, Wait::after(timeout))
            .map_err(Into::into)
    }

    /// One attempt for a sender that waits elsewhere (the async sender of `sp_core::tokio`):
    /// the checks of [`send`](Self::send), then one `send`/`sendmsg` with `MSG_DONTWAIT`.
    /// Returns how many bytes of the frame (header included) the kernel took: all of it, or on a
    /// stream possibly a part, whose rest is plain data for the caller to send
    /// ([`Stop::Waited`] when it took nothing).
    #[cfg(feature = "tokio")]
    pub(crate) fn send_once(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::result::Result<usize, Stop> {
        let header = self.frame_header(bytes, fds)?;
        let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
        match retry_intr(|| send_frame(&self.fd, &header, bytes, fds, flags)) {
            Ok(sent) => Ok(sent),
            Err(Errno::AGAIN) => Err(Stop::Waited),
            Err(Errno::MSGSIZE) if self.kind != SocketKind::Stream => Err(Error::TooLarge {
                len: bytes.len(),
                max: self.seqpacket_limit(),
            }
            .into()),
            Err(err) => Err(Error::from(err).into()),
        }
    }

    /// The socket kind (a stream's frames may be sent in parts).
    #[cfg(feature = "tokio")]
    pub(crate) fn kind(&self) -> SocketKind {
        self.kind
    }

    /// The frame header for `bytes` and `fds`, after the limits are checked.
    fn frame_header(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<[u8; HEADER_LEN]> {
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyFds {
                n_fds: fds.len(),
                max: MAX_FDS,
            });
        }
        if bytes.len() > self.max_len {
            return Err(Error::TooLarge {
                len: bytes.len(),
                max: self.max_len,
            });
        }
        Ok(encode_header(Header {
            n_fds: fds.len(),
            n_bytes: bytes.len(),
        }))
    }

    /// The one send behind the blocking, `try_` and `_timeout` forms.
    fn send_wait(
        &self,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        wait: Wait,
    ) -> std::result::Result<(), Stop> {
        let header = self.frame_header(bytes, fds)?;
        // Invariant: no send raises SIGPIPE; a gone peer is `PeerGone` (EPIPE).
        let mut flags = SendFlags::NOSIGNAL;
        if !wait.kernel_blocks() {
            flags |= SendFlags::DONTWAIT;
        }
        let _guard = (self.kind == SocketKind::Stream)
            .then(|| self.stream_lock.lock().unwrap_or_else(|e| e.into_inner()));
        loop {
            match retry_intr(|| send_frame(&self.fd, &header, bytes, fds, flags)) {
                Ok(sent) if self.kind == SocketKind::Stream => {
                    return Ok(self.finish_stream_frame(&header, bytes, sent)?);
                }
                Ok(_) => return Ok(()),
                // Nothing was sent: a seqpacket record goes whole or not at all, and a stream
                // `sendmsg` reports EAGAIN only when it took no byte.
                Err(Errno::AGAIN) => wait.until_ready(self.fd.as_fd(), PollFlags::OUT)?,
                Err(Errno::MSGSIZE) if self.kind != SocketKind::Stream => {
                    return Err(Error::TooLarge {
                        len: bytes.len(),
                        max: self.seqpacket_limit(),
                    }
                    .into());
                }
                Err(err) => return Err(Error::from(err).into()),
            }
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

impl AsFd for Sender {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// One `send`/`sendmsg` of a frame: the header, `bytes` and `fds` (at most [`MAX_FDS`]). Returns
/// the bytes sent (on a stream, possibly fewer than the frame).
fn send_frame(
    fd: &OwnedFd,
    header: &[u8; HEADER_LEN],
    bytes: &[u8],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> rustix::io::Result<usize> {
    if fds.is_empty() && bytes.len() <= SMALL_FRAME - HEADER_LEN {
        // A small frame is copied whole into one buffer and sent with `send`, which the kernel
        // takes in fewer steps than a `sendmsg` of two pieces (no message header or iovec array
        // to copy in); a larger one goes as it is, where that copy would cost more than it saves.
        let mut frame = [0u8; SMALL_FRAME];
        let len = HEADER_LEN + bytes.len();
        frame[..HEADER_LEN].copy_from_slice(header);
        frame[HEADER_LEN..len].copy_from_slice(bytes);
        return rustix::net::send(fd, &frame[..len], flags);
    }
    let mut cmsg_space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
    let mut cmsg = SendAncillaryBuffer::new(&mut cmsg_space);
    if !fds.is_empty() {
        // Cannot fail: the buffer has room for MAX_FDS descriptors, and the caller sends no more.
        let pushed = cmsg.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(pushed);
    }
    let iov = [IoSlice::new(header), IoSlice::new(bytes)];
    rustix::net::sendmsg(fd, &iov, &mut cmsg, flags)
}
