//! Connected pairs of Unix-domain sockets (`socketpair(2)`) and [`End`], one end of such a pair.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType, socketpair, sockopt,
};

use crate::error::Result;

/// The socket type of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SocketKind {
    /// `SOCK_STREAM`: a byte stream, like a pipe in both directions.
    Stream,
    /// `SOCK_SEQPACKET`: reliable, ordered records with boundaries; the default for messages.
    SeqPacket,
    /// `SOCK_DGRAM`: records with boundaries. A datagram pair does not report the peer's death to a
    /// reader, so [`Channel`](crate::Channel) refuses it.
    Datagram,
}

/// How to create a pair: the socket kind and whether both ends start non-blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PairOptions {
    kind: SocketKind,
    nonblocking: bool,
}

/// One end of a connected pair of Unix-domain sockets.
///
/// The descriptor is close-on-exec from birth. `End` implements [`Read`] and [`Write`] (also through
/// `&End`), so `BufReader::new(end).read_line(..)` reads a line just as Perl's `<$sock>` does;
/// writes never raise `SIGPIPE` (a gone peer is a `BrokenPipe` error).
#[derive(Debug)]
pub struct End {
    fd: OwnedFd,
}

/// What a readiness wait ([`End::poll_readable`]) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    revents: PollFlags,
}

impl Readiness {
    /// Data (or end of file) is there to read without blocking (`POLLIN`).
    pub fn is_readable(self) -> bool {
        self.revents.contains(PollFlags::IN)
    }

    /// The peer has closed its end, or the socket has an error (`POLLHUP`, `POLLERR`). Data the
    /// peer sent before it closed may still be readable.
    pub fn is_hung_up(self) -> bool {
        self.revents.intersects(PollFlags::HUP | PollFlags::ERR)
    }
}

/// Credentials the kernel recorded for the peer of a socket (`SO_PEERCRED`).
///
/// On a socketpair these are the credentials of the process that *created* the pair, for both ends,
/// even after one end is handed to a child: use [`Child::id`](crate::Child::id) to know the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credentials {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

impl SocketKind {
    fn socket_type(self) -> SocketType {
        match self {
            Self::Stream => SocketType::STREAM,
            Self::SeqPacket => SocketType::SEQPACKET,
            Self::Datagram => SocketType::DGRAM,
        }
    }

    fn from_socket_type(ty: SocketType) -> Option<Self> {
        match ty {
            SocketType::STREAM => Some(Self::Stream),
            SocketType::SEQPACKET => Some(Self::SeqPacket),
            SocketType::DGRAM => Some(Self::Datagram),
            _ => None,
        }
    }
}

impl PairOptions {
    /// Options for a blocking pair of the given kind.
    pub fn new(kind: SocketKind) -> Self {
        Self {
            kind,
            nonblocking: false,
        }
    }

    /// Whether both ends start in non-blocking mode (`SOCK_NONBLOCK`).
    pub fn nonblocking(mut self, yes: bool) -> Self {
        self.nonblocking = yes;
        self
    }

    /// `socketpair(AF_UNIX, kind | SOCK_CLOEXEC [| SOCK_NONBLOCK], 0)`: creates the pair.
    ///
    /// # Errors
    /// `EMFILE`/`ENFILE` when the process or system is out of descriptors.
    ///
    /// # References
    /// [socketpair(2)](https://man7.org/linux/man-pages/man2/socketpair.2.html)
    pub fn create(self) -> Result<(End, End)> {
        // Invariant: every descriptor sp-core creates is close-on-exec from the call that creates
        // it, never made so afterwards (which would race with a `fork` in another thread).
        let mut flags = SocketFlags::CLOEXEC;
        if self.nonblocking {
            flags |= SocketFlags::NONBLOCK;
        }
        let (a, b) = socketpair(AddressFamily::UNIX, self.kind.socket_type(), flags, None)?;
        Ok((End { fd: a }, End { fd: b }))
    }
}

/// `socketpair(AF_UNIX, kind | SOCK_CLOEXEC, 0)`: a connected, blocking pair of the given kind.
///
/// # Errors
/// `EMFILE`/`ENFILE` when the process or system is out of descriptors.
///
/// # Examples
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// let (mut sock1, sock2) = sp_core::pair(sp_core::SocketKind::Stream)?;
/// writeln!(sock1, "Hello from sock1!")?;
/// let mut line = String::new();
/// BufReader::new(sock2).read_line(&mut line)?;
/// assert_eq!(line, "Hello from sock1!\n");
/// # Ok::<(), sp_core::Error>(())
/// ```
///
/// # References
/// [socketpair(2)](https://man7.org/linux/man-pages/man2/socketpair.2.html),
/// [unix(7)](https://man7.org/linux/man-pages/man7/unix.7.html)
#[doc(alias = "socketpair")]
pub fn pair(kind: SocketKind) -> Result<(End, End)> {
    PairOptions::new(kind).create()
}

impl End {
    /// The socket's kind (`getsockopt(SO_TYPE)`).
    ///
    /// # Errors
    /// `ENOTSOCK` if the descriptor is not a socket; `WrongSocketKind`-like cases map to `EINVAL`.
    pub fn kind(&self) -> io::Result<SocketKind> {
        let ty = sockopt::socket_type(&self.fd)?;
        SocketKind::from_socket_type(ty).ok_or_else(|| Errno::INVAL.into())
    }

    /// `shutdown(2)`: closes the reading half, the writing half, or both. After
    /// `shutdown(Shutdown::Write)` the peer reads end of file while this end can still read.
    ///
    /// # Errors
    /// `ENOTCONN` if the peer has gone.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => rustix::net::Shutdown::Read,
            Shutdown::Write => rustix::net::Shutdown::Write,
            Shutdown::Both => rustix::net::Shutdown::Both,
        };
        Ok(rustix::net::shutdown(&self.fd, how)?)
    }

    /// Sets `SO_RCVTIMEO`: a blocking read fails with `WouldBlock` after this long (`None`: never).
    ///
    /// # Errors
    /// `EINVAL` for a zero duration, which the kernel would read as "no timeout".
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        set_timeout(&self.fd, sockopt::Timeout::Recv, timeout)
    }

    /// Sets `SO_SNDTIMEO`: a blocking write fails with `WouldBlock` after this long (`None`: never).
    ///
    /// # Errors
    /// `EINVAL` for a zero duration.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        set_timeout(&self.fd, sockopt::Timeout::Send, timeout)
    }

    /// The current `SO_RCVTIMEO`.
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(sockopt::socket_timeout(&self.fd, sockopt::Timeout::Recv)?)
    }

    /// The current `SO_SNDTIMEO`.
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(sockopt::socket_timeout(&self.fd, sockopt::Timeout::Send)?)
    }

    /// `ioctl(FIONBIO)`: switches non-blocking mode on or off.
    ///
    /// # Errors
    /// Only if the descriptor is invalid.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        Ok(rustix::io::ioctl_fionbio(&self.fd, nonblocking)?)
    }

    /// `poll(POLLIN)`: waits until a read will not block (data, end of file or an error is
    /// pending), for at most `timeout` (`None`: no limit). Returns `false` if the time ran out.
    ///
    /// # Errors
    /// Only if `poll` itself fails.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        // A timeout too long to add to the clock is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(poll_one(self.fd.as_fd(), PollFlags::IN, deadline)?.is_some())
    }

    /// `poll(POLLIN)` until `deadline` (`None`: no limit), telling data apart from hang-up;
    /// `EINTR` restarts with the time that is left. Returns `None` if the deadline passed.
    ///
    /// # Errors
    /// Only if `poll` itself fails.
    pub fn poll_readable(&self, deadline: Option<Instant>) -> io::Result<Option<Readiness>> {
        Ok(
            poll_one(self.fd.as_fd(), PollFlags::IN, deadline)?
                .map(|revents| Readiness { revents }),
        )
    }

    /// `poll(POLLOUT)`: waits until a write will not block, for at most `timeout`. Returns `false`
    /// if the time ran out.
    ///
    /// # Errors
    /// Only if `poll` itself fails.
    pub fn wait_writable(&self, timeout: Option<Duration>) -> io::Result<bool> {
        // A timeout too long to add to the clock is no limit.
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        Ok(poll_one(self.fd.as_fd(), PollFlags::OUT, deadline)?.is_some())
    }

    /// `SO_SNDBUF`: the kernel's send buffer size in bytes (the kernel reports double what was set).
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        Ok(sockopt::socket_send_buffer_size(&self.fd)?)
    }

    /// Sets `SO_SNDBUF`; the kernel caps it at `net.core.wmem_max` and doubles it.
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn set_send_buffer_size(&self, n_bytes: usize) -> io::Result<()> {
        Ok(sockopt::set_socket_send_buffer_size(&self.fd, n_bytes)?)
    }

    /// `SO_RCVBUF`: the kernel's receive buffer size in bytes.
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        Ok(sockopt::socket_recv_buffer_size(&self.fd)?)
    }

    /// Sets `SO_RCVBUF`; the kernel caps it at `net.core.rmem_max` and doubles it.
    ///
    /// # Errors
    /// Only if the descriptor is not a socket.
    pub fn set_recv_buffer_size(&self, n_bytes: usize) -> io::Result<()> {
        Ok(sockopt::set_socket_recv_buffer_size(&self.fd, n_bytes)?)
    }

    /// `getsockopt(SO_PEERCRED)`: the credentials recorded for the peer.
    ///
    /// On a socketpair the kernel records the creator of the pair for *both* ends, so in a parent
    /// and its child this reports the parent for both. The child's pid comes from the spawn.
    ///
    /// # Errors
    /// Only if the descriptor is not a connected Unix socket.
    #[doc(alias = "SO_PEERCRED")]
    pub fn peer_credentials(&self) -> io::Result<Credentials> {
        let cred = sockopt::socket_peercred(&self.fd)?;
        Ok(Credentials {
            pid: cred.pid.as_raw_nonzero().get() as u32,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
        })
    }

    /// `fcntl(F_DUPFD_CLOEXEC)`: another handle to the same socket, also close-on-exec.
    ///
    /// # Errors
    /// `EMFILE` when the process is out of descriptors.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(Self {
            fd: rustix::io::fcntl_dupfd_cloexec(&self.fd, 0)?,
        })
    }
}

impl Read for &End {
    /// `recv(2)`. Data the peer sent before it closed is read before end of file, even when the
    /// kernel reports `ECONNRESET` first (a peer that closed with our data unread).
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match rustix::net::recv(&self.fd, &mut *buf, RecvFlags::empty()) {
            Ok((n, _)) => Ok(n),
            // Invariant: end of file only after everything the peer sent. The error is reported
            // once; what the peer sent before closing is still queued.
            Err(Errno::CONNRESET) => Ok(rustix::net::recv(&self.fd, buf, RecvFlags::empty())?.0),
            Err(err) => Err(err.into()),
        }
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        Ok(rustix::io::readv(&self.fd, bufs)?)
    }
}

impl Read for End {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        (&*self).read_vectored(bufs)
    }
}

impl Write for &End {
    // Invariant: no write raises SIGPIPE (`MSG_NOSIGNAL`); a gone peer is `BrokenPipe`.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(rustix::net::send(&self.fd, buf, SendFlags::NOSIGNAL)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut no_fds = rustix::net::SendAncillaryBuffer::default();
        Ok(rustix::net::sendmsg(
            &self.fd,
            bufs,
            &mut no_fds,
            SendFlags::NOSIGNAL,
        )?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Write for End {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for End {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for End {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for End {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

#[allow(unsafe_code)] // The I/O-safety conversion set includes this unsafe constructor.
impl FromRawFd for End {
    /// # Safety
    /// `fd` must be an open socket descriptor that nothing else owns.
    // Invariant: one of the places where a raw number becomes an `OwnedFd` (see
    // docs/architecture.md); sp-core itself never calls it, the caller vouches for ownership.
    unsafe fn from_raw_fd(fd: RawFd) -> Self {
        // SAFETY: the caller hands over ownership of an open descriptor, as this function's
        // contract requires.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Self { fd }
    }
}

impl From<OwnedFd> for End {
    /// Wraps a descriptor the caller knows to be a Unix socket; nothing is checked here (the
    /// child-side [`adopt`](crate::adopt) checks).
    fn from(fd: OwnedFd) -> Self {
        Self { fd }
    }
}

impl From<End> for OwnedFd {
    fn from(end: End) -> Self {
        end.fd
    }
}

fn set_timeout(fd: &OwnedFd, which: sockopt::Timeout, timeout: Option<Duration>) -> io::Result<()> {
    if timeout == Some(Duration::ZERO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a zero timeout would mean no timeout",
        ));
    }
    Ok(sockopt::set_socket_timeout(fd, which, timeout)?)
}

/// `poll(2)` on one descriptor until one of `events` (or an error/hang-up) is reported or the
/// deadline passes; `EINTR` restarts with the time that is left. Returns the reported events, or
/// `None` when the deadline passed.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: Option<Instant>,
) -> io::Result<Option<PollFlags>> {
    loop {
        let timeout = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(Timespec::try_from(left).map_err(|_| Errno::INVAL)?)
            }
        };
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, timeout.as_ref()) {
            Ok(0) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(None);
                }
            }
            Ok(_) => return Ok(Some(fds[0].revents())),
            Err(Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}
