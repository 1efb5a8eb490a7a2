//! The errors of sp-core: [`Error`] for what breaks a call, [`Malformed`] for what was wrong with
//! a frame the peer sent, and one "would wait" type per waiting form of an operation
//! ([`TryRecvError`], [`RecvTimeoutError`], [`TrySendError`], [`SendTimeoutError`]), so that
//! "nothing yet" and "broken" never share an enum.

use std::fmt;
use std::io;

/// What went wrong in an sp-core call.
///
/// Nothing a peer can send makes sp-core panic; a malformed or hostile message becomes one of these
/// values, and every file descriptor that arrived with it has already been closed. There is no
/// "would block" or "timed out" here: those are the [`Empty`](TryRecvError::Empty),
/// [`Full`](TrySendError::Full) and `Timeout` variants of the `try_*` and `*_timeout` forms'
/// own error types.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end or died: end of file on receive (after every message it sent has
    /// been delivered), `EPIPE`/`ECONNRESET` on send.
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
    TooLarge {
        /// The message's payload length in bytes.
        len: usize,
        /// The largest payload accepted here, in bytes.
        max: usize,
    },
    /// The peer sent something that is not a valid frame; the cause says what. The message is
    /// dropped and its descriptors closed.
    Malformed(Malformed),
    /// An earlier error left a stream channel without a way to match descriptors to messages; it
    /// refuses further receives. Seqpacket channels never enter this state.
    Poisoned,
    /// The file descriptor handed to a child is not a Unix-domain socket.
    NotASocket,
    /// The descriptor's socket type cannot carry sp-core messages (for example, a datagram pair).
    WrongSocketKind,
    /// The environment variable that names the child's descriptor is absent or not a number, or
    /// the end was already adopted.
    NoInheritedEnd,
    /// Handing a child its end after `exec` (through a rendezvous socket) failed; the cause says
    /// how. The parent has killed and reaped the child by the time it sees this.
    Handover(Handover),
    /// Any other operating-system error, with its errno.
    Os(io::Error),
}

/// Why handing a child its end after `exec` failed: the cause of [`Error::Handover`].
///
/// docs/protocol.md ("Handing the end over after exec") describes the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Handover {
    /// The child did not take its end within the spawn's handover timeout (in the parent), or the
    /// parent accepted the connection but sent nothing in time (in the child).
    TimedOut,
    /// In the parent: the child exited before taking its end.
    ChildExited,
    /// In the child: nobody listens under the name, or the listener is not this process's parent
    /// (or the parent died while the end was on its way).
    NotParent,
    /// In the child: the parent's message is not a handover (wrong length, magic or version, a
    /// signal number that names no signal, or not exactly one descriptor).
    BadMessage,
}

/// What was wrong with a frame the peer sent: the cause of [`Error::Malformed`].
///
/// docs/protocol.md ("sp-core frames") lists the checks in the order a receiver makes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// A seqpacket record of zero bytes from a peer that is still connected (every frame has a
    /// header, so no sp-core sender writes one).
    EmptyRecord,
    /// A seqpacket record shorter than a frame header.
    ShortFrame {
        /// The record's length in bytes.
        len: usize,
    },
    /// The header does not start with [`FRAME_MAGIC`](crate::FRAME_MAGIC).
    BadMagic {
        /// The first two bytes, read little-endian.
        found: u16,
    },
    /// The header's version is not [`FRAME_VERSION`](crate::FRAME_VERSION).
    BadVersion {
        /// The version byte.
        found: u8,
    },
    /// The header's reserved bytes (8 to 15) are not zero.
    BadReserved {
        /// The reserved bytes, read as a little-endian `u64`.
        found: u64,
    },
    /// The header declares more descriptors than [`MAX_FDS`](crate::MAX_FDS).
    TooManyFdsDeclared {
        /// The declared count.
        declared: usize,
    },
    /// A seqpacket record's payload is not as long as its header says.
    LengthMismatch {
        /// The payload length the header declares.
        declared: usize,
        /// The payload length that arrived.
        received: usize,
    },
    /// On a stream pair, more descriptors arrived than the buffered frames can claim (more than
    /// two messages' worth ahead of their frames).
    UnclaimedFds {
        /// How many descriptors were waiting for frames.
        queued: usize,
    },
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
            Self::TooLarge { len, max } => {
                write!(f, "message of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::Malformed(cause) => write!(f, "malformed message: {cause}"),
            Self::Poisoned => f.write_str(
                "stream channel poisoned by an earlier descriptor error; it can no longer match descriptors to messages",
            ),
            Self::NotASocket => f.write_str("the inherited descriptor is not a Unix-domain socket"),
            Self::WrongSocketKind => {
                f.write_str("socket kind cannot carry messages (use stream or seqpacket)")
            }
            // The name is `FD_ENV`'s (child.rs checks that they agree): spelled out here so that
            // errors depend on nothing else in the crate.
            Self::NoInheritedEnd => f.write_str(
                "environment variable SP_CORE_FD is missing, not a descriptor number, or already adopted",
            ),
            Self::Handover(cause) => write!(f, "handing the child its end failed: {cause}"),
            Self::Os(err) => write!(f, "{err}"),
        }
    }
}

impl fmt::Display for Handover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TimedOut => "the other side did not complete the handover in time",
            Self::ChildExited => "the child exited before taking its end",
            Self::NotParent => "the rendezvous socket is not held by this process's parent",
            Self::BadMessage => "the handover message is malformed",
        })
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::EmptyRecord => f.write_str("an empty record (every frame has an 8-byte header)"),
            Self::ShortFrame { len } => {
                write!(f, "a record of {len} bytes, shorter than a frame header")
            }
            Self::BadMagic { found } => write!(f, "bad magic {found:#06x}"),
            Self::BadVersion { found } => write!(f, "unsupported frame version {found}"),
            Self::BadReserved { found } => {
                write!(f, "reserved header bytes are {found:#x}, not zero")
            }
            Self::TooManyFdsDeclared { declared } => {
                write!(f, "{declared} descriptors declared, more than MAX_FDS")
            }
            Self::LengthMismatch { declared, received } => write!(
                f,
                "the header declares a payload of {declared} bytes but {received} arrived"
            ),
            Self::UnclaimedFds { queued } => {
                write!(
                    f,
                    "{queued} descriptors arrived without frames to claim them"
                )
            }
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
            _ => Self::Os(err),
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match errno {
            Errno::PIPE | Errno::CONNRESET | Errno::CONNREFUSED => Self::PeerGone,
            _ => Self::Os(errno.into()),
        }
    }
}

impl From<Malformed> for Error {
    fn from(cause: Malformed) -> Self {
        Self::Malformed(cause)
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Os(err) => err,
            Error::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, err),
            Error::TooLarge { .. } | Error::TooManyFds { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, err)
            }
            Error::Malformed(_) => io::Error::new(io::ErrorKind::InvalidData, err),
            other => io::Error::other(other),
        }
    }
}

/// An error that can say whether it means "the peer is gone": the `Broken` half of the
/// would-wait types below. sp-core's, sp-shm's and sp's `Error` implement it, so the three crates
/// share one set of would-wait types (`sp_shm::TryRecvError` is `TryRecvError<sp_shm::Error>`).
pub trait BrokenError: std::error::Error + 'static {
    /// Whether this is the crate's `PeerGone`: everything the peer sent has been delivered and
    /// nothing more will come.
    fn is_peer_gone(&self) -> bool;
}

impl BrokenError for Error {
    fn is_peer_gone(&self) -> bool {
        matches!(self, Self::PeerGone)
    }
}

/// Defines a would-wait error type: the waiting outcome `$wait`, or `Broken` with an error `E`
/// (sp-core's [`Error`] by default).
macro_rules! would_wait_error {
    (
        $(#[$doc:meta])*
        $name:ident {
            $(#[$wait_doc:meta])*
            $wait:ident,
        }
        is_wait: $is_wait:ident,
        wait_msg: $wait_msg:literal,
        io_kind: $io_kind:ident,
    ) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name<E = Error> {
            $(#[$wait_doc])*
            $wait,
            /// The operation failed; nothing more will come of waiting for it.
            Broken(E),
        }

        impl<E> $name<E> {
            #[doc = concat!("Whether this is [`", stringify!($wait), "`](Self::", stringify!($wait), "): waiting longer may succeed.")]
            pub fn $is_wait(&self) -> bool {
                matches!(self, Self::$wait)
            }

            /// The error if the operation broke, `None` if it only would have waited.
            pub fn into_broken(self) -> Option<E> {
                match self {
                    Self::Broken(err) => Some(err),
                    Self::$wait => None,
                }
            }

            /// The same outcome with the broken error mapped, for a layer above that wraps this
            /// crate's errors in its own.
            pub fn map_broken<F>(self, f: impl FnOnce(E) -> F) -> $name<F> {
                match self {
                    Self::Broken(err) => $name::Broken(f(err)),
                    Self::$wait => $name::$wait,
                }
            }
        }

        impl<E: BrokenError> $name<E> {
            /// Whether the peer is gone: everything it sent has been delivered and nothing more
            /// will come.
            pub fn is_disconnected(&self) -> bool {
                matches!(self, Self::Broken(err) if err.is_peer_gone())
            }
        }

        impl<E> From<E> for $name<E> {
            fn from(err: E) -> Self {
                Self::Broken(err)
            }
        }

        /// `Broken` shows its error, and its `source()` is that error's: the wrapper adds no
        /// context of its own (so a chain of causes does not repeat the message).
        impl<E: fmt::Display> fmt::Display for $name<E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$wait => f.write_str($wait_msg),
                    Self::Broken(err) => fmt::Display::fmt(err, f),
                }
            }
        }

        impl<E: std::error::Error + 'static> std::error::Error for $name<E> {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                match self {
                    Self::Broken(err) => err.source(),
                    Self::$wait => None,
                }
            }
        }

        impl<E: fmt::Debug + fmt::Display + Send + Sync + 'static + Into<io::Error>> From<$name<E>>
            for io::Error
        {
            fn from(err: $name<E>) -> Self {
                match err {
                    $name::$wait => io::Error::new(io::ErrorKind::$io_kind, $wait_msg),
                    $name::Broken(err) => err.into(),
                }
            }
        }
    };
}

would_wait_error! {
    /// The error of a non-blocking receive (`try_recv`, `try_recv_into`, and the `try_` reads
    /// of sp-shm and sp).
    TryRecvError {
        /// No complete message is waiting.
        Empty,
    }
    is_wait: is_empty,
    wait_msg: "no complete message is waiting",
    io_kind: WouldBlock,
}

would_wait_error! {
    /// The error of a receive with a time limit (`recv_timeout`, `recv_into_timeout`, and the
    /// timed reads of sp-shm and sp).
    RecvTimeoutError {
        /// No complete message arrived within the time limit.
        Timeout,
    }
    is_wait: is_timeout,
    wait_msg: "timed out waiting for a message",
    io_kind: TimedOut,
}

would_wait_error! {
    /// The error of a non-blocking send (`try_send`, and the `try_` writes of sp-shm and sp).
    TrySendError {
        /// The socket's send buffer has no room for the frame now; nothing was sent.
        Full,
    }
    is_wait: is_full,
    wait_msg: "the socket's send buffer is full",
    io_kind: WouldBlock,
}

would_wait_error! {
    /// The error of a send with a time limit (`send_timeout`, and the timed writes of sp-shm and
    /// sp).
    SendTimeoutError {
        /// The socket's send buffer had no room for the frame within the time limit; nothing was
        /// sent.
        Timeout,
    }
    is_wait: is_timeout,
    wait_msg: "timed out waiting for room to send",
    io_kind: TimedOut,
}
