//! The error types of sp-shm: [`Error`] for what is broken, each variant naming a cause a
//! caller can act on, and the would-wait types of sp-core's convention over it.
//!
//! As in crossbeam-channel, "would wait" and "broken" never share an enum: a blocking call
//! returns [`Result`]`<T, Error>`, a `try_*` call a [`TrySendError`] or [`TryRecvError`] whose
//! `Full`/`Empty` means "nothing yet", and a `*_timeout` call a [`SendTimeoutError`] or
//! [`RecvTimeoutError`] whose `Timeout` means "not within the time". They are sp-core's generic
//! types over this crate's [`Error`], so sp-core, sp-shm and sp match the same way.

use std::fmt;
use std::io;

/// What went wrong in an sp-shm call; never "would wait" (see the module docs).
///
/// Nothing the peer writes into shared memory or sends over the socket makes sp-shm panic or read
/// outside a mapping: a bad value becomes [`Error::Corrupt`], a bad hand-over [`Error::Refused`].
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer process closed its end or died. A consumer reports this only after it has
    /// delivered every record the peer committed.
    PeerGone,
    /// A record is larger than the ring's largest payload (fixed at the handshake).
    TooLarge {
        /// The requested payload length.
        len: usize,
        /// The largest payload this ring carries.
        max: usize,
    },
    /// The record kind `u32::MAX` is reserved for padding records.
    ReservedKind,
    /// A value read from shared memory breaks the protocol. The ring is unusable.
    Corrupt {
        /// Which rule the value broke.
        cause: Corruption,
        /// The value that was read.
        value: u64,
    },
    /// This side refused what the peer handed over at the handshake (or a blob); the peer is
    /// told the reason.
    Refused(RefuseReason),
    /// The peer refused what this side handed over at the handshake.
    Rejected(RefuseReason),
    /// A step of the handshake (the peer's OFFER or READY) did not arrive within
    /// [`Config::handshake_timeout`](crate::Config::handshake_timeout).
    HandshakeTimedOut,
    /// An invalid configuration.
    InvalidConfig(InvalidConfig),
    /// An error of the underlying socket channel.
    Channel(sp_core::Error),
    /// Any other operating-system error.
    Os(io::Error),
}

/// Which rule of `docs/protocol.md` ("Validation") a value read from shared memory broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Corruption {
    /// A header word that is neither zero nor carries the commit bit.
    NotAHeader,
    /// A padding record at offset 0, or one that does not reach exactly to the end of the area.
    BadPadding,
    /// A record longer than the ring's largest payload.
    TooLong,
    /// A record whose slot passes the end of the data area.
    PastTheEnd,
    /// A record (or padding) ending past `published head + capacity - 8`, where no honest
    /// producer can have written.
    BeyondTheProducer,
    /// A committed header changed while the consumer read it.
    HeaderChanged,
    /// The consumer's published head moved backwards.
    HeadBackwards,
    /// The consumer's published head passed the producer's committed tail.
    HeadPastTail,
    /// The consumer's published head is not a multiple of 8.
    HeadUnaligned,
}

/// What is wrong with a [`Config`](crate::Config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InvalidConfig {
    /// The capacity is not a power of two from 4 KiB to 4 GiB.
    Capacity,
    /// The largest payload is not a multiple of 8 from 8 to a quarter of the capacity.
    MaxPayload,
}

/// The error of a non-blocking write: [`Full`](sp_core::TrySendError::Full) or broken.
pub type TrySendError = sp_core::TrySendError<Error>;
/// The error of a non-blocking read: [`Empty`](sp_core::TryRecvError::Empty) or broken.
pub type TryRecvError = sp_core::TryRecvError<Error>;
/// The error of a write with a time limit: [`Timeout`](sp_core::SendTimeoutError::Timeout) or
/// broken.
pub type SendTimeoutError = sp_core::SendTimeoutError<Error>;
/// The error of a read with a time limit: [`Timeout`](sp_core::RecvTimeoutError::Timeout) or
/// broken.
pub type RecvTimeoutError = sp_core::RecvTimeoutError<Error>;

impl sp_core::BrokenError for Error {
    fn is_peer_gone(&self) -> bool {
        matches!(self, Self::PeerGone)
    }
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

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotAHeader => "not a record header",
            Self::BadPadding => "bad padding record",
            Self::TooLong => "record longer than the largest payload",
            Self::PastTheEnd => "record past the end of the data area",
            Self::BeyondTheProducer => "record beyond what the producer could write",
            Self::HeaderChanged => "a committed header changed while it was read",
            Self::HeadBackwards => "head moved backwards",
            Self::HeadPastTail => "head beyond the committed tail",
            Self::HeadUnaligned => "head not a multiple of 8",
        })
    }
}

impl fmt::Display for InvalidConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Capacity => "capacity must be a power of two from 4 KiB to 4 GiB",
            Self::MaxPayload => "largest payload must be a multiple of 8 from 8 to capacity / 4",
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerGone => f.write_str("the peer closed its end or exited"),
            Self::TooLarge { len, max } => {
                write!(
                    f,
                    "record of {len} bytes exceeds the ring's limit of {max} bytes"
                )
            }
            Self::ReservedKind => f.write_str("record kind u32::MAX is reserved for padding"),
            Self::Corrupt { cause, value } => {
                write!(f, "shared memory corrupt: {cause} (value {value:#x})")
            }
            Self::Refused(why) => write!(f, "refused the peer's hand-over: {why}"),
            Self::Rejected(why) => write!(f, "the peer refused our hand-over: {why}"),
            Self::HandshakeTimedOut => f.write_str("the peer did not answer the handshake in time"),
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

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Os(err) => err,
            Error::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, err),
            Error::HandshakeTimedOut => io::Error::new(io::ErrorKind::TimedOut, err),
            Error::Corrupt { .. } | Error::Refused(_) | Error::Rejected(_) => {
                io::Error::new(io::ErrorKind::InvalidData, err)
            }
            other => io::Error::other(other),
        }
    }
}
