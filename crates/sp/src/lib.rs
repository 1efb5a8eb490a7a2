//! Typed values, file descriptors and payloads of any size between processes, over a
//! shared-memory ring.
//!
//! sp is the crate to import. It builds on [`sp_core`] (socketpairs, descriptor passing, child
//! processes) and [`sp_shm`] (a sealed shared-memory ring per direction) and gives a typed
//! duplex between a parent and its child:
//!
//! - [`spawn`] in the parent and [`adopt`] in the child connect a [`Sender`] for one direction and
//!   a [`Receiver`] for the other (each `Send`, usable on different threads); [`channel`] does the
//!   same within one process.
//! - **Two encodings, chosen by the type** ([`Value`]): any serde type is encoded with postcard
//!   straight into the reserved ring slot; a plain-data type ([`plain_data!`], [`Plain`]) is its own
//!   bytes, written in place by [`Sender::send_with`] and validated by zerocopy on receipt (bad
//!   enum discriminants and bools are a [`DecodeError`], never undefined behaviour).
//! - **Any size**: a value longer than the ring's largest record goes as a sealed memfd
//!   ([`sp_shm::Blob`]) by itself; the receiver gets the same `T` ([`Config::blob_threshold`]).
//! - **Descriptors travel with values**: [`Sender::send_with_fds`] and
//!   [`Receiver::recv_with_fds`]; the receiver gets them with that value and no other.
//! - **Waiting on many peers**: [`Select`] spins over any number of receivers and sp-core
//!   channels, then sleeps on all of them at once with `epoll`.
//! - **Async**: with the `tokio` feature, the `tokio` module wraps a sender as a
//!   `futures::Sink` and a receiver as a `futures::Stream` whose waits end in tokio's reactor.
//! - **Errors split** "would wait" from "broken" per operation ([`TrySendError`],
//!   [`RecvTimeoutError`], ...); the peer's misbehaviour is [`Error::Decode`] or
//!   [`Error::Protocol`] with the cause as an enum.
//!
//! The records, the control messages and what a receiver checks are specified in
//! `docs/protocol.md`, "sp typed records".
//!
//! ```
//! use sp::serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! #[serde(crate = "sp::serde")]
//! struct Job {
//!     id: u64,
//!     name: String,
//! }
//!
//! let (mut tx, mut rx) = sp::channel::<Job>(&sp::Config::new())?;
//! tx.send(&Job { id: 1, name: "resize".into() })?;
//! assert_eq!(rx.recv()?, Job { id: 1, name: "resize".into() });
//! # Ok::<(), sp::Error>(())
//! ```

mod config;
mod connect;
mod error;
mod limit;
pub mod pipeline;
pub mod pool;
mod reap;
mod receiver;
mod select;
mod sender;
#[cfg(feature = "tokio")]
pub mod tokio;
mod value;
pub mod wire;

pub use config::Config;
pub use connect::{adopt, channel, connect, spawn};
pub use error::{
    DecodeError, EncodeError, Error, HelloMismatch, RecvTimeoutError, Result, SendTimeoutError,
    TryRecvError, TrySendError, Violation,
};
pub use pipeline::Pipeline;
pub use pool::{Pool, PoolConfig};
pub use receiver::Receiver;
pub use select::Select;
pub use sender::Sender;
pub use value::{Encoding, Plain, PlainData, Value};
pub use wire::MAX_FDS;

#[doc(hidden)]
pub use value::__private;

/// The serde and zerocopy versions sp implements [`Value`] for: derive through them with
/// `#[serde(crate = "sp::serde")]` and `#[zerocopy(crate = "sp::zerocopy")]`.
pub use {serde, zerocopy};
/// The layers below, for what sp does not wrap (raw rings, untyped messages).
pub use {sp_core, sp_shm};

pub use sp_core::{Child, Signal, SpawnOptions};
pub use sp_shm::{IdleStrategy, RefuseReason, Stats};
