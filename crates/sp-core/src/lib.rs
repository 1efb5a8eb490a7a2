//! Unix socketpairs, file-descriptor passing and child processes, done safely, on `rustix`.
//!
//! sp-core starts from the classic Unix idiom: create a connected pair of sockets, start a child
//! that holds one end, and talk over it. It adds what the idiom needs to be safe in a real program:
//!
//! - [`pair`] creates a stream, seqpacket or datagram pair whose descriptors are close-on-exec from
//!   birth; [`End`] is one end, with `Read`/`Write`, half-close, timeouts and readiness waits.
//! - [`Channel`] sends messages of bytes plus file descriptors (`SCM_RIGHTS`). Received descriptors
//!   are close-on-exec from the kernel (`MSG_CMSG_CLOEXEC`); truncated control data, a wrong count,
//!   or a message over the limits is an [`Error`] and every descriptor that arrived is closed.
//! - [`spawn`] starts a `std::process::Command` whose child finds its end through [`FD_ENV`] and
//!   takes it with [`adopt`]; the parent's copy is closed at once, so the parent sees end of file
//!   when the child dies.
//! - [`Bridge`] feeds received messages into a `crossbeam_channel::Receiver` for `select!`.
//! - With the `tokio` feature, the `tokio` module has the same channel waiting in tokio's
//!   reactor (`AsyncFd`), and spawn/adopt for `tokio::process`.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! let (mut sock1, sock2) = sp_core::pair(sp_core::SocketKind::Stream)?;
//! writeln!(sock1, "Hello from sock1!")?;
//! let mut line = String::new();
//! BufReader::new(sock2).read_line(&mut line)?;
//! print!("sock2 received: {line}");
//! # Ok::<(), sp_core::Error>(())
//! ```

mod bridge;
mod channel;
mod child;
mod copy;
mod end;
mod error;
mod frame;
mod handover;
mod receiver;
mod sender;
mod spill;
#[cfg(feature = "tokio")]
pub mod tokio;
mod wait;

pub use bridge::Bridge;
pub use channel::{Channel, DEFAULT_MAX_MESSAGE_LEN};
pub use child::{Child, FD_ENV, SpawnOptions, adopt, spawn, spawn_with};
pub use copy::{copy_bytes, extend_bytes};
pub use end::{Credentials, End, PairOptions, Readiness, SocketKind, pair};
pub use error::{
    BrokenError, Error, Handover, Malformed, RecvTimeoutError, Result, SendTimeoutError,
    TryRecvError, TrySendError,
};
pub use frame::{FRAME_MAGIC, FRAME_VERSION, HEADER_LEN, MAX_FDS};
pub use handover::RENDEZVOUS_ENV;
pub use receiver::{Message, Receiver};
pub use rustix::process::Signal;
pub use sender::Sender;
