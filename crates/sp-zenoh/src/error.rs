//! The errors of sp-zenoh: how a gateway ended when it did not end cleanly.
//!
//! A gateway has no "would wait" outcome of its own (it is a loop that runs until its stream ends),
//! so there is one [`Error`]; the remote's misbehaviour is [`Error::Protocol`] with the cause as a
//! [`Violation`], as in sp.

use std::fmt;
use std::time::Duration;

/// Why a gateway (or setting one up) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A zenoh call failed (opening a session, declaring a publisher, subscriber or token).
    Zenoh(zenoh::Error),
    /// The local sp channel failed in a way other than its normal end.
    Local(sp::Error),
    /// The remote side went away (its process died, its host stopped answering within zenoh's
    /// lease, or it closed its session) before the stream ended.
    RemoteGone {
        /// The key the gateway serves.
        key: String,
        /// Records the gateway had forwarded by then.
        records: u64,
    },
    /// The remote publishing gateway failed and ended the stream early (its own
    /// [`Gateway::join`](crate::Gateway::join) says why: a value that could not cross, its
    /// local channel broken). Every record it sent before was delivered.
    RemoteFailed {
        /// The key the gateway serves.
        key: String,
        /// Records delivered.
        records: u64,
    },
    /// No remote side appeared within the time allowed (at the start, or after a loss with
    /// [`OnLoss::Resume`](crate::OnLoss::Resume)).
    NoRemote {
        /// The key the gateway serves.
        key: String,
        /// How long it waited.
        waited: Duration,
    },
    /// A value that cannot leave this machine; nothing of it was sent, and the gateway ended.
    CannotCross(Refusal),
    /// The remote side broke the gateway protocol; the gateway ended.
    Protocol(Violation),
}

/// Why a value cannot cross to another host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Refusal {
    /// The value was sent with file descriptors, which mean nothing on another host.
    Descriptors {
        /// How many.
        n_fds: usize,
    },
    /// The value's encoding is larger than the gateway's limit
    /// ([`Options::max_value_len`](crate::Options::max_value_len)).
    TooLarge {
        /// The encoding's length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// How the remote side broke the gateway protocol (`docs/protocol.md`, "sp-zenoh samples").
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// A sample shorter than its 16-byte header.
    ShortSample {
        /// Its length.
        len: usize,
    },
    /// A header with an unknown kind or flag, or a record count that does not fit its kind.
    BadHeader {
        /// The kind byte.
        kind: u8,
        /// The flags byte.
        flags: u8,
        /// The record count.
        n_records: u16,
    },
    /// A record whose length prefix is cut off (`len: None`) or runs past the end of the sample.
    RecordOverrun {
        /// The record's declared length, if its prefix was whole.
        len: Option<usize>,
        /// The bytes left in the sample.
        left: usize,
    },
    /// Bytes after the last record of a sample.
    TrailingBytes {
        /// How many.
        n: usize,
    },
    /// A record out of sequence: one was lost or duplicated on the way.
    Sequence {
        /// The sequence number expected.
        expected: u64,
        /// The one that came.
        got: u64,
    },
    /// A sample of a stream (epoch) other than the one being received, while that one is still
    /// alive: two publishers on one key.
    OtherStream {
        /// The stream being received.
        current: u32,
        /// The other.
        other: u32,
    },
    /// The remote side carries values encoded otherwise than this side's type (postcard against
    /// plain data, plain data of another size).
    Encoding {
        /// This side's encoding, as its token names it.
        ours: String,
        /// The remote's.
        theirs: String,
    },
    /// A second remote on a key that has one already (a gateway connects one publisher to one
    /// subscriber).
    SecondRemote {
        /// The token of the second one.
        token: String,
    },
}

/// The result type of sp-zenoh.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Zenoh(err) => write!(f, "zenoh: {err}"),
            Self::Local(err) => write!(f, "local channel: {err}"),
            Self::RemoteGone { key, records } => write!(
                f,
                "the remote side of {key} went away after {records} records, before the stream ended"
            ),
            Self::RemoteFailed { key, records } => write!(
                f,
                "the publisher of {key} failed after {records} records and ended the stream early"
            ),
            Self::NoRemote { key, waited } => {
                write!(f, "no remote side of {key} appeared within {waited:?}")
            }
            Self::CannotCross(why) => write!(f, "a value cannot cross to another host: {why}"),
            Self::Protocol(why) => write!(f, "the remote side broke the gateway protocol: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Zenoh(err) => Some(err.as_ref()),
            Self::Local(err) => Some(err),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Descriptors { n_fds } => write!(
                f,
                "it carries {n_fds} file descriptors, which do not exist on another host"
            ),
            Self::TooLarge { len, max } => {
                write!(f, "its encoding of {len} bytes exceeds the limit of {max}")
            }
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortSample { len } => write!(f, "a sample of {len} bytes has no header"),
            Self::BadHeader {
                kind,
                flags,
                n_records,
            } => write!(
                f,
                "bad header (kind {kind}, flags {flags:#x}, {n_records} records)"
            ),
            Self::RecordOverrun {
                len: Some(len),
                left,
            } => {
                write!(
                    f,
                    "a record of {len} bytes with {left} bytes left in the sample"
                )
            }
            Self::RecordOverrun { len: None, left } => {
                write!(f, "a record's length cut off ({left} bytes left)")
            }
            Self::TrailingBytes { n } => write!(f, "{n} bytes after the last record"),
            Self::Sequence { expected, got } => write!(
                f,
                "record {got} where {expected} was expected: a record was lost or duplicated"
            ),
            Self::OtherStream { current, other } => write!(
                f,
                "samples of stream {other:08x} while {current:08x} is alive: two publishers on one key"
            ),
            Self::Encoding { ours, theirs } => write!(
                f,
                "the remote carries {theirs} values, this side {ours}: the types differ"
            ),
            Self::SecondRemote { token } => {
                write!(f, "a second remote side ({token}) on a point-to-point key")
            }
        }
    }
}

impl std::error::Error for Refusal {}
impl std::error::Error for Violation {}

impl From<zenoh::Error> for Error {
    fn from(err: zenoh::Error) -> Self {
        Self::Zenoh(err)
    }
}

impl From<sp::Error> for Error {
    fn from(err: sp::Error) -> Self {
        Self::Local(err)
    }
}
