//! The one error type of sp-shm: each variant names a cause a caller can act on.

use std::fmt;
use std::io;

/// What went wrong in an sp-shm call.
///
/// Nothing the peer writes into shared memory or sends over the socket makes sp-shm panic or read
/// outside a mapping: a bad value becomes [`Error::Corrupt`], a bad hand-over [`Error::Refused`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A non-blocking reserve or send found too little free space in the ring.
    Full,
    /// A non-blocking read found no committed record.
    Empty,
    /// A wait with a time limit expired.
    TimedOut,
    /// The peer process closed its end or died. A consumer reports this only after it has
    /// delivered every record the peer committed.
    PeerGone,
    /// A record is larger than the ring's largest payload (fixed at the handshake).
    TooLarge {
        /// The requested payload length.
        n_bytes: usize,
        /// The largest payload this ring carries.
        max: usize,
    },
    /// The record kind `u32::MAX` is reserved for padding records.
    ReservedKind,
    /// A value read from shared memory breaks the protocol (an index out of range or moving
    /// backwards, a record length past the end, a bad padding record). The ring is unusable.
    Corrupt {
        /// Which value was wrong.
        what: &'static str,
        /// The value that was read.
        value: u64,
    },
    /// This side refused what the peer handed over at the handshake (or a blob); the peer is
    /// told the reason.
    Refused(RefuseReason),
    /// The peer refused what this side handed over at the handshake.
    Rejected(RefuseReason),
    /// An invalid configuration (capacity not a power of two, and so on).
    InvalidConfig(&'static str),
    /// An error of the underlying socket channel.
    Channel(sp_core::Error),
    /// Any other operating-system error.
    Os(io::Error),
}

/// Why a ring offer or a blob was refused. The numeric codes travel in the handshake's READY
/// message (see `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefuseReason {
    /// The message is not an offer of this protocol (length or magic).
    BadMagic,
    /// A protocol version this side does not speak.
    BadVersion,
    /// A layout word this side does not know.
    BadLayout,
    /// Capacity not a power of two or outside the supported range.
    BadCapacity,
    /// Largest payload zero, above a quarter of the capacity, or not a multiple of 8.
    BadMaxPayload,
    /// The wrong number of file descriptors came with the message.
    WrongFdCount,
    /// A memory descriptor is not a regular (memfd) file.
    NotAFile,
    /// A memory descriptor lacks a required seal.
    MissingSeals,
    /// A memory descriptor's size differs from what the message declares.
    SizeMismatch,
    /// The control block's header disagrees with the message.
    HeaderMismatch,
    /// The wake descriptor is not a Unix seqpacket socket.
    BadWakeSocket,
    /// The peer sent a reason code this side does not know.
    Unknown(u32),
}

/// The result type of sp-shm.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl RefuseReason {
    /// The code sent on the wire.
    pub fn code(self) -> u32 {
        match self {
            Self::BadMagic => 1,
            Self::BadVersion => 2,
            Self::BadLayout => 3,
            Self::BadCapacity => 4,
            Self::BadMaxPayload => 5,
            Self::WrongFdCount => 6,
            Self::NotAFile => 7,
            Self::MissingSeals => 8,
            Self::SizeMismatch => 9,
            Self::HeaderMismatch => 10,
            Self::BadWakeSocket => 11,
            Self::Unknown(code) => code,
        }
    }

    /// The reason for a code received on the wire.
    pub fn from_code(code: u32) -> Self {
        match code {
            1 => Self::BadMagic,
            2 => Self::BadVersion,
            3 => Self::BadLayout,
            4 => Self::BadCapacity,
            5 => Self::BadMaxPayload,
            6 => Self::WrongFdCount,
            7 => Self::NotAFile,
            8 => Self::MissingSeals,
            9 => Self::SizeMismatch,
            10 => Self::HeaderMismatch,
            11 => Self::BadWakeSocket,
            other => Self::Unknown(other),
        }
    }
}

impl fmt::Display for RefuseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadMagic => f.write_str("not an sp-shm message (length or magic)"),
            Self::BadVersion => f.write_str("unsupported protocol version"),
            Self::BadLayout => f.write_str("unknown layout word"),
            Self::BadCapacity => {
                f.write_str("capacity is not a power of two in the supported range")
            }
            Self::BadMaxPayload => f.write_str("largest payload is out of range"),
            Self::WrongFdCount => f.write_str("wrong number of file descriptors"),
            Self::NotAFile => f.write_str("memory descriptor is not a regular file"),
            Self::MissingSeals => f.write_str("memory descriptor lacks required seals"),
            Self::SizeMismatch => f.write_str("memory descriptor size differs from the message"),
            Self::HeaderMismatch => f.write_str("control block header differs from the message"),
            Self::BadWakeSocket => f.write_str("wake descriptor is not a unix seqpacket socket"),
            Self::Unknown(code) => write!(f, "unknown reason code {code}"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Full => f.write_str("ring is full"),
            Self::Empty => f.write_str("ring is empty"),
            Self::TimedOut => f.write_str("timed out"),
            Self::PeerGone => f.write_str("the peer closed its end or exited"),
            Self::TooLarge { n_bytes, max } => {
                write!(
                    f,
                    "record of {n_bytes} bytes exceeds the ring's limit of {max} bytes"
                )
            }
            Self::ReservedKind => f.write_str("record kind u32::MAX is reserved for padding"),
            Self::Corrupt { what, value } => {
                write!(f, "shared memory corrupt: {what} (value {value:#x})")
            }
            Self::Refused(why) => write!(f, "refused the peer's hand-over: {why}"),
            Self::Rejected(why) => write!(f, "the peer refused our hand-over: {why}"),
            Self::InvalidConfig(why) => write!(f, "invalid configuration: {why}"),
            Self::Channel(err) => write!(f, "control channel: {err}"),
            Self::Os(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Channel(err) => Some(err),
            Self::Os(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Self::PeerGone,
            io::ErrorKind::TimedOut => Self::TimedOut,
            _ => Self::Os(err),
        }
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        use rustix::io::Errno;
        match errno {
            Errno::PIPE | Errno::CONNRESET => Self::PeerGone,
            _ => Self::Os(errno.into()),
        }
    }
}

impl From<sp_core::Error> for Error {
    fn from(err: sp_core::Error) -> Self {
        match err {
            sp_core::Error::PeerGone => Self::PeerGone,
            other => Self::Channel(other),
        }
    }
}

impl From<sp_core::RecvTimeoutError> for Error {
    fn from(err: sp_core::RecvTimeoutError) -> Self {
        match err {
            sp_core::RecvTimeoutError::Timeout => Self::TimedOut,
            sp_core::RecvTimeoutError::Broken(err) => err.into(),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Os(err) => err,
            Error::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, err),
            Error::TimedOut => io::Error::new(io::ErrorKind::TimedOut, err),
            Error::Full | Error::Empty => io::Error::new(io::ErrorKind::WouldBlock, err),
            other => io::Error::other(other),
        }
    }
}
