//! The error type of the sp-bench library: each variant names why a measurement failed.

use std::fmt;
use std::io;

/// Why a measurement (or reading a results file) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system error.
    Io(io::Error),
    /// An sp-core error on the control channel or on the transport under test.
    Core(sp_core::Error),
    /// A message arrived with the wrong length, out of order, or the two sides' checksums differ.
    Corrupt(String),
    /// A measurement ran past its time limit; the child was killed.
    TimedOut(&'static str),
    /// The child process reported a failure (its message), or exited early.
    Child(String),
    /// This transport cannot run here or at this size (for example a peer crate not compiled in).
    Unsupported(String),
    /// A peer IPC crate reported an error.
    Peer(String),
    /// An sp-shm error on the ring or a blob under test.
    Shm(sp_shm::Error),
    /// An sp error on the typed channel under test.
    Sp(sp::Error),
    /// A control message or a results file is not valid JSON of the expected shape.
    Json(serde_json::Error),
}

/// The result type of sp-bench.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "{err}"),
            Self::Core(err) => write!(f, "sp-core: {err}"),
            Self::Shm(err) => write!(f, "sp-shm: {err}"),
            Self::Sp(err) => write!(f, "sp: {err}"),
            Self::Corrupt(what) => write!(f, "corrupt data: {what}"),
            Self::TimedOut(what) => write!(f, "timed out: {what}"),
            Self::Child(what) => write!(f, "child process: {what}"),
            Self::Unsupported(what) => write!(f, "not measured: {what}"),
            Self::Peer(what) => write!(f, "peer crate: {what}"),
            Self::Json(err) => write!(f, "JSON: {err}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(err) => Some(err),
            Self::Core(err) => Some(err),
            Self::Shm(err) => Some(err),
            Self::Sp(err) => Some(err),
            Self::Json(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<rustix::io::Errno> for Error {
    fn from(errno: rustix::io::Errno) -> Self {
        Self::Io(errno.into())
    }
}

impl From<sp_core::Error> for Error {
    fn from(err: sp_core::Error) -> Self {
        Self::Core(err)
    }
}

impl<E: Into<Error>> From<sp_core::RecvTimeoutError<E>> for Error {
    fn from(err: sp_core::RecvTimeoutError<E>) -> Self {
        match err {
            sp_core::RecvTimeoutError::Timeout => Self::TimedOut("a receive"),
            sp_core::RecvTimeoutError::Broken(err) => err.into(),
        }
    }
}

impl From<sp_shm::Error> for Error {
    fn from(err: sp_shm::Error) -> Self {
        Self::Shm(err)
    }
}

impl From<sp::Error> for Error {
    fn from(err: sp::Error) -> Self {
        Self::Sp(err)
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Self::Json(err)
    }
}
