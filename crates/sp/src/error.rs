//! The errors of sp: one `Error` for broken outcomes, and one type per operation that tells a
//! "would wait" outcome apart from a broken one (the convention of crossbeam-channel's `err.rs`).
//!
//! This file is also the one place where the errors of sp-core and sp-shm are mapped into sp's:
//! when their variants change, only the `From` impls at the bottom change.

use std::fmt;
use std::io;

/// What went wrong in an sp call. Never a "would wait" outcome: those are the `Full`, `Empty` and
/// `Timeout` variants of [`TrySendError`], [`TryRecvError`], [`SendTimeoutError`] and
/// [`RecvTimeoutError`].
///
/// Nothing a peer sends makes sp panic: bad bytes are [`Error::Decode`], a broken framing or
/// hand-over is [`Error::Protocol`], and every descriptor that arrived with them has been closed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed its end or died. A receiver reports this only after it has delivered every
    /// value the peer sent.
    PeerGone,
    /// A value's encoding is larger than this side can carry (a blob larger than the address
    /// space, say); nothing was sent.
    TooLarge {
        /// The encoded length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More descriptors with one value than [`MAX_FDS`](crate::MAX_FDS); nothing was sent.
    TooManyFds {
        /// How many descriptors were given.
        n_fds: usize,
        /// The cap.
        max: usize,
    },
    /// The value could not be encoded (its `Serialize` impl failed); nothing was sent.
    Encode(EncodeError),
    /// A record's bytes are not a valid encoding of the receiver's type. The record was consumed
    /// (its descriptors closed) and the receiver goes on with the next one.
    Decode(DecodeError),
    /// The peer broke the typed protocol (see [`Violation`]). The receiver cannot tell which later
    /// records go with which descriptors, so it answers this error from then on.
    Protocol(Violation),
    /// Setting up the rings failed (a refused or rejected offer, a bad configuration), or the
    /// ring reported an error not covered above.
    Shm(sp_shm::Error),
    /// The control channel failed in a way not covered above (for example, this process is at its
    /// open-file limit, `FdLimit`).
    Core(sp_core::Error),
    /// A stage of a [`Pipeline`](crate::Pipeline) ended in failure (a non-zero exit or a signal):
    /// the first stage that did, by its index from 0, and how it ended.
    StageFailed {
        /// The stage's index in the pipeline.
        stage: usize,
        /// How its process ended.
        status: std::process::ExitStatus,
    },
    /// Any other operating-system error.
    Os(io::Error),
}

/// How the peer broke the typed protocol (`docs/protocol.md`, "sp typed records").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Violation {
    /// A ring record of a kind the typed protocol does not define.
    UnknownKind(u32),
    /// A record too short for the prefix its kind requires, or with a non-zero reserved field.
    BadPrefix {
        /// The record's kind.
        kind: u32,
        /// Its payload length.
        len: usize,
    },
    /// A sequence number out of order: in a record's prefix or in an ATTACH message.
    Sequence {
        /// The number this side expected.
        expected: u64,
        /// The number that came.
        got: u64,
    },
    /// A record announced descriptors or a blob, and no ATTACH message came within the
    /// attachment timeout (or the peer left without sending it).
    MissingAttachment,
    /// A control message that is not a well-formed ATTACH (length, magic, reserved bits), or whose
    /// descriptors do not match its own count.
    BadAttachment,
    /// An ATTACH that disagrees with the record announcing it (descriptor count, blob or not,
    /// blob length).
    AttachmentMismatch,
    /// A blob's memfd failed the checks (not a memfd, missing seals, wrong size).
    BadBlob(sp_shm::RefuseReason),
    /// The ring's shared memory broke the sp-shm protocol; the ring is unusable.
    Ring {
        /// Which rule the value broke, as sp-shm names it.
        cause: sp_shm::Corruption,
        /// The value read.
        value: u64,
    },
    /// At set-up, the peer's HELLO: not a HELLO, another version of the typed protocol, or
    /// encodings that disagree with this side's types.
    Hello(HelloMismatch),
    /// A pool worker answered an item it does not hold (an id never given to it, or answered
    /// already).
    UnexpectedReply {
        /// The id in the answer.
        id: u64,
    },
    /// A pipeline set-up or supervision message that is not one (length, magic, version,
    /// fields, descriptors), or one out of turn.
    BadSetup,
}

/// How a peer's HELLO disagreed with this side (see [`Violation::Hello`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HelloMismatch {
    /// Not a HELLO message (length or magic).
    NotHello,
    /// Another version of the typed protocol.
    Version(u32),
    /// The peer sends values encoded otherwise than this side's receiving type expects (postcard
    /// against plain data, or plain data of another size).
    Encoding,
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The slice given to [`Value::encode`](crate::Value::encode) is too small. sp handles this
    /// itself (it reserves more, or sends a blob); it never reaches a caller of `send`.
    BufferFull,
    /// A sequence or map whose length is not known in advance (postcard needs it).
    LengthUnknown,
    /// The value's `Serialize` impl reported an error.
    Custom,
    /// Any other encoder error.
    Other,
}

/// Why a record's bytes are not a value of the receiver's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before the value does.
    UnexpectedEnd,
    /// Bytes left over after the value.
    TrailingBytes {
        /// How many.
        n: usize,
    },
    /// A variable-length integer that is too long or out of range.
    BadVarint,
    /// A bool other than 0 or 1.
    BadBool,
    /// A `char` that is not a Unicode scalar value.
    BadChar,
    /// A string that is not UTF-8.
    BadUtf8,
    /// An `Option` tag other than 0 or 1.
    BadOption,
    /// An enum discriminant with no variant.
    BadEnum,
    /// Bytes that do not fit the type in some other way.
    BadEncoding,
    /// The type's `Deserialize` impl refused the value.
    Custom,
    /// The type asks for something postcard cannot do (`deserialize_any`, say).
    Unsupported,
    /// Plain data of the wrong length.
    Size {
        /// The record's length.
        len: usize,
        /// The type's size.
        want: usize,
    },
    /// Plain data with a bit pattern the type does not allow (an enum discriminant with no
    /// variant, a bool other than 0 or 1, ...), as zerocopy's `TryFromBytes` checks it.
    InvalidBitPattern,
    /// Plain data in a buffer not aligned for the type (an impossible case for sp's own buffers,
    /// kept so that the decoder never has to assume it).
    Misaligned,
}

/// The result type of sp.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error of a non-blocking send: [`Full`](sp_core::TrySendError::Full) (the ring has no
/// room now; nothing was sent) or broken. sp-core's generic type, as in sp-shm.
pub type TrySendError = sp_core::TrySendError<Error>;
/// The error of a non-blocking receive: [`Empty`](sp_core::TryRecvError::Empty) or broken (the
/// peer gone is `Broken(Error::PeerGone)`).
pub type TryRecvError = sp_core::TryRecvError<Error>;
/// The error of a send with a time limit: [`Timeout`](sp_core::SendTimeoutError::Timeout)
/// (nothing was sent) or broken.
pub type SendTimeoutError = sp_core::SendTimeoutError<Error>;
/// The error of a receive with a time limit: [`Timeout`](sp_core::RecvTimeoutError::Timeout) or
/// broken.
pub type RecvTimeoutError = sp_core::RecvTimeoutError<Error>;

impl sp_core::BrokenError for Error {
    fn is_peer_gone(&self) -> bool {
        matches!(self, Self::PeerGone)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerGone => f.write_str("the peer closed its end or exited"),
            Self::TooLarge { len, max } => {
                write!(f, "a value of {len} bytes exceeds the limit of {max} bytes")
            }
            Self::TooManyFds { n_fds, max } => {
                write!(f, "{n_fds} descriptors with one value; the cap is {max}")
            }
            Self::Encode(why) => write!(f, "cannot encode the value: {why}"),
            Self::Decode(why) => write!(f, "the peer sent bytes that are not a value: {why}"),
            Self::Protocol(why) => write!(f, "the peer broke the typed protocol: {why}"),
            Self::Shm(err) => write!(f, "ring: {err}"),
            Self::Core(err) => write!(f, "control channel: {err}"),
            Self::StageFailed { stage, status } => {
                write!(f, "pipeline stage {stage} failed ({status})")
            }
            Self::Os(err) => write!(f, "{err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Shm(err) => Some(err),
            Self::Core(err) => Some(err),
            Self::Os(err) => Some(err),
            _ => None,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownKind(kind) => write!(f, "unknown record kind {kind:#x}"),
            Self::BadPrefix { kind, len } => {
                write!(
                    f,
                    "record of kind {kind:#x} with a bad prefix ({len} bytes)"
                )
            }
            Self::Sequence { expected, got } => {
                write!(f, "sequence number {got}, expected {expected}")
            }
            Self::MissingAttachment => {
                f.write_str("a record announced descriptors or a blob that never came")
            }
            Self::BadAttachment => f.write_str("a control message is not a well-formed ATTACH"),
            Self::AttachmentMismatch => {
                f.write_str("an ATTACH disagrees with the record that announced it")
            }
            Self::BadBlob(why) => write!(f, "blob refused: {why}"),
            Self::Ring { cause, value } => {
                write!(f, "shared memory corrupt: {cause} (value {value:#x})")
            }
            Self::Hello(why) => write!(f, "HELLO refused: {why}"),
            Self::UnexpectedReply { id } => {
                write!(f, "an answer for item {id}, which the worker does not hold")
            }
            Self::BadSetup => f.write_str("a pipeline set-up message that is not one"),
        }
    }
}

impl fmt::Display for HelloMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotHello => f.write_str("not a HELLO message"),
            Self::Version(v) => write!(f, "typed protocol version {v}"),
            Self::Encoding => f.write_str("the two sides' value types are encoded differently"),
        }
    }
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BufferFull => "the buffer is too small",
            Self::LengthUnknown => "a sequence or map of unknown length",
            Self::Custom => "the Serialize impl failed",
            Self::Other => "encoder error",
        })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnexpectedEnd => f.write_str("the bytes end inside the value"),
            Self::TrailingBytes { n } => write!(f, "{n} bytes left over after the value"),
            Self::BadVarint => f.write_str("bad variable-length integer"),
            Self::BadBool => f.write_str("bad bool"),
            Self::BadChar => f.write_str("bad char"),
            Self::BadUtf8 => f.write_str("string is not UTF-8"),
            Self::BadOption => f.write_str("bad Option tag"),
            Self::BadEnum => f.write_str("enum discriminant with no variant"),
            Self::BadEncoding => f.write_str("bytes do not fit the type"),
            Self::Custom => f.write_str("the Deserialize impl refused the value"),
            Self::Unsupported => f.write_str("the type needs a feature postcard does not have"),
            Self::Size { len, want } => {
                write!(f, "{len} bytes of plain data for a type of {want} bytes")
            }
            Self::InvalidBitPattern => f.write_str("a bit pattern the type does not allow"),
            Self::Misaligned => f.write_str("buffer misaligned for the type"),
        }
    }
}

impl std::error::Error for Violation {}
impl std::error::Error for HelloMismatch {}
impl std::error::Error for EncodeError {}
impl std::error::Error for DecodeError {}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Self::PeerGone,
            _ => Self::Os(err),
        }
    }
}

impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Os(err) => err,
            Error::PeerGone => io::Error::new(io::ErrorKind::BrokenPipe, err),
            other => io::Error::other(other),
        }
    }
}

// --- sp-core and sp-shm errors, mapped in one place --------------------------------------------

/// A "would wait" outcome of sp-core or sp-shm, or a broken one already mapped.
#[derive(Debug)]
pub(crate) enum Fail {
    /// `Full`, `Empty`, `WouldBlock` or `TimedOut`: the operation would have to wait (longer).
    Wait,
    Broken(Error),
}

impl From<Error> for Fail {
    fn from(err: Error) -> Self {
        Self::Broken(err)
    }
}

impl From<sp_shm::Error> for Fail {
    fn from(err: sp_shm::Error) -> Self {
        Self::Broken(err.into())
    }
}

impl From<sp_core::Error> for Fail {
    fn from(err: sp_core::Error) -> Self {
        Self::Broken(err.into())
    }
}

/// The would-wait types of sp-core, sp-shm and sp share one generic definition; each maps here
/// in one impl per type.
macro_rules! fail_from_would_wait {
    ($($name:ident :: $wait:ident),*) => {$(
        impl<E: Into<Error>> From<sp_core::$name<E>> for Fail {
            fn from(err: sp_core::$name<E>) -> Self {
                match err {
                    sp_core::$name::$wait => Self::Wait,
                    sp_core::$name::Broken(err) => Self::Broken(err.into()),
                }
            }
        }
    )*};
}

fail_from_would_wait!(
    TrySendError::Full,
    TryRecvError::Empty,
    SendTimeoutError::Timeout,
    RecvTimeoutError::Timeout
);

impl From<sp_shm::Error> for Error {
    fn from(err: sp_shm::Error) -> Self {
        match err {
            sp_shm::Error::PeerGone => Self::PeerGone,
            sp_shm::Error::Corrupt { cause, value } => {
                Self::Protocol(Violation::Ring { cause, value })
            }
            sp_shm::Error::Channel(err) => err.into(),
            sp_shm::Error::Os(err) => Self::Os(err),
            other => Self::Shm(other),
        }
    }
}

impl From<sp_core::Error> for Error {
    fn from(err: sp_core::Error) -> Self {
        match err {
            sp_core::Error::PeerGone => Self::PeerGone,
            sp_core::Error::Os(err) => Self::Os(err),
            other => Self::Core(other),
        }
    }
}

impl From<postcard::Error> for EncodeError {
    fn from(err: postcard::Error) -> Self {
        use postcard::Error as P;
        match err {
            P::SerializeBufferFull => Self::BufferFull,
            P::SerializeSeqLengthUnknown => Self::LengthUnknown,
            P::SerdeSerCustom => Self::Custom,
            _ => Self::Other,
        }
    }
}

impl From<postcard::Error> for DecodeError {
    fn from(err: postcard::Error) -> Self {
        use postcard::Error as P;
        match err {
            P::DeserializeUnexpectedEnd => Self::UnexpectedEnd,
            P::DeserializeBadVarint => Self::BadVarint,
            P::DeserializeBadBool => Self::BadBool,
            P::DeserializeBadChar => Self::BadChar,
            P::DeserializeBadUtf8 => Self::BadUtf8,
            P::DeserializeBadOption => Self::BadOption,
            P::DeserializeBadEnum => Self::BadEnum,
            P::SerdeDeCustom => Self::Custom,
            P::WontImplement | P::NotYetImplemented => Self::Unsupported,
            _ => Self::BadEncoding,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_errors_split_waiting_from_broken() {
        assert!(TrySendError::Full.is_full());
        assert!(TryRecvError::Empty.is_empty());
        assert!(RecvTimeoutError::Timeout.is_timeout());
        assert!(SendTimeoutError::from(Error::PeerGone).is_disconnected());
        assert!(TryRecvError::Empty.into_broken().is_none());
        let err = TryRecvError::from(Error::Decode(DecodeError::BadBool));
        assert!(!err.is_disconnected());
        // `Broken` is transparent: it shows its error and adds no link to the chain of causes.
        assert_eq!(
            err.to_string(),
            Error::Decode(DecodeError::BadBool).to_string()
        );
        assert!(std::error::Error::source(&err).is_none());
        assert!(matches!(
            err.into_broken(),
            Some(Error::Decode(DecodeError::BadBool))
        ));
    }

    #[test]
    fn lower_layers_map_waiting_to_wait() {
        assert!(matches!(Fail::from(sp_shm::TrySendError::Full), Fail::Wait));
        assert!(matches!(
            Fail::from(sp_core::RecvTimeoutError::<sp_core::Error>::Timeout),
            Fail::Wait
        ));
        assert!(matches!(
            Fail::from(sp_shm::TryRecvError::Broken(sp_shm::Error::PeerGone)),
            Fail::Broken(Error::PeerGone)
        ));
        assert!(matches!(
            Fail::from(sp_shm::Error::PeerGone),
            Fail::Broken(Error::PeerGone)
        ));
        assert!(matches!(
            Error::from(sp_shm::Error::Channel(sp_core::Error::PeerGone)),
            Error::PeerGone
        ));
    }
}
