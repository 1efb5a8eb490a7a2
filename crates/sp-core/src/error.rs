//! The one error type of sp-core: each variant names a cause a caller can act on.

use std::fmt;
use std::io;

/// What went wrong in an sp-core call.
///
/// Nothing a peer can send makes sp-core panic; a malformed or hostile message becomes one of these
/// values, and every file descriptor that arrived with it has already been closed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end or died: end of file on receive, `EPIPE`/`ECONNRESET` on send.
    PeerGone,
    /// The kernel truncated the control data of a message (`MSG_CTRUNC`), so some of its file
    /// descriptors were dropped. Every descriptor that did arrive has been closed.
    FdsTruncated {
        /// How many descriptors the message declared.
        declared: usize,
        /// How many arrived before the truncation.
        received: usize,
    },
    /// The receiving process is at its open-file limit (`EMFILE`, `RLIMIT_NOFILE`): the kernel
    /// dropped the message's descriptors. Every descriptor that did arrive has been closed.
    FdLimit {
        /// How many descriptors the message declared.
        declared: usize,
        /// How many arrived before the limit was hit.
        received: usize,
    },
    /// The number of descriptors that arrived does not match the count the message declared. The
    /// message is dropped and its descriptors closed.
    FdCountMismatch {
        /// How many descriptors the message declared.
        declared: usize,
        /// How many arrived with it.
        received: usize,
    },
    /// A message carried more descriptors than [`MAX_FDS`](crate::MAX_FDS); nothing was sent.
    TooManyFds {
        /// How many descriptors the caller tried to send.
        n_fds: usize,
        /// The cap.
        max: usize,
    },
    /// A message is larger than this channel or the socket can carry; nothing was sent (or, on
    /// receive, the message was dropped and its descriptors closed).
    MessageTooLarge {
        /// The message's payload length in bytes.
        n_bytes: usize,
        /// The largest payload accepted here, in bytes.
        limit: usize,
    },
    /// A message whose frame header is invalid (bad magic or version, data cut short). The
    /// message is dropped and its descriptors closed.
    Malformed(&'static str),
    /// An earlier error left a stream channel without a way to match descriptors to messages; it
    /// refuses further receives. Seqpacket channels never enter this state.
    Poisoned,
    /// The file descriptor handed to a child is not a Unix-domain socket.
    NotASocket,
    /// The descriptor's socket type cannot carry sp-core messages (for example, a datagram pair).
    WrongSocketKind,
    /// The environment variable that names the child's descriptor is absent or not a number.
    NoInheritedEnd,
    /// A wait with a time limit expired before anything arrived.
    TimedOut,
    /// A non-blocking call found nothing to do.
    WouldBlock,
    /// Any other operating-system error, with its errno.
    Os(io::Error),
}

/// The result type of sp-core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerGone => f.write_str("the peer closed its end or exited"),
            Self::FdsTruncated { declared, received } => write!(
                f,
                "control data truncated (MSG_CTRUNC): {received} of {declared} file descriptors arrived and were closed"
            ),
            Self::FdLimit { declared, received } => write!(
                f,
                "receiver is at its open-file limit (EMFILE, RLIMIT_NOFILE): {received} of {declared} file descriptors arrived and were closed"
            ),
            Self::FdCountMismatch { declared, received } => write!(
                f,
                "message declared {declared} file descriptors but {received} arrived; all were closed"
            ),
            Self::TooManyFds { n_fds, max } => {
                write!(f, "{n_fds} file descriptors in one message; the cap is {max}")
            }
            Self::MessageTooLarge { n_bytes, limit } => {
                write!(f, "message of {n_bytes} bytes exceeds the limit of {limit} bytes")
            }
            Self::Malformed(why) => write!(f, "malformed message: {why}"),
            Self::Poisoned => f.write_str(
                "stream channel poisoned by an earlier descriptor error; it can no longer match descriptors to messages",
            ),
            Self::NotASocket => f.write_str("the inherited descriptor is not a Unix-domain socket"),
            Self::WrongSocketKind => {
                f.write_str("socket kind cannot carry messages (use stream or seqpacket)")
            }
            Self::NoInheritedEnd => write!(
                f,
                "environment variable {} is missing or not a descriptor number",
                crate::child::FD_ENV
            ),
            Self::TimedOut => f.write_str("timed out"),
            Self::WouldBlock => f.write_str("operation would block"),
            Self::Os(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Os(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Self::PeerGone,
            io::ErrorKind::WouldBlock => Self::WouldBlock,
            io::ErrorKind::TimedOut => Self::TimedOut,
            _ => Self::Os(err),
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match errno {
            Errno::PIPE | Errno::CONNRESET | Errno::CONNREFUSED => Self::PeerGone,
            Errno::AGAIN => Self::WouldBlock,
            _ => Self::Os(errno.into()),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Os(err) => err,
            Error::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, err),
            Error::TimedOut => io::Error::new(io::ErrorKind::TimedOut, err),
            Error::WouldBlock => io::Error::new(io::ErrorKind::WouldBlock, err),
            other => io::Error::other(other),
        }
    }
}
