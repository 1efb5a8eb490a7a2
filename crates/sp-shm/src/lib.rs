//! A sealed shared-memory ring between two processes, set up over an sp-core socket.
//!
//! A Unix socket costs two copies and a system call per message. For bulk data, sp-shm moves
//! records through shared memory instead: a single-producer single-consumer ring of
//! variable-length records in a sealed anonymous memfd, with the socket left for the set-up,
//! for handing over descriptors, and for waking a side that sleeps.
//!
//! - [`spawn`] starts a child and [`adopt`] (in the child) completes the handshake; or
//!   [`Duplex::connect`] runs it over any sp-core [`Channel`](sp_core::Channel). Each side gets
//!   a [`Producer`] for one direction and a [`Consumer`] for the other.
//! - One ring, one way: [`offer_ring`] gives a producer's OFFER, which may be relayed by a third
//!   process, [`accept_ring`] attaches the consumer and answers READY ([`produce_over`] and
//!   [`consume_over`] do both steps over one channel).
//! - [`Producer::reserve`] / [`WriteGrant::commit`] write in place; [`Consumer::read`] returns a
//!   [`ReadGrant`] that releases the record on drop. [`Producer::send`] and
//!   [`Consumer::recv_into`] copy; the `*_batch` forms publish once per batch. Every operation
//!   comes as `try_*` (never waits), plain (waits), and `*_timeout`.
//! - Waiting follows an [`IdleStrategy`]: spin, yield, then park in `poll(2)` until the peer
//!   sends a wake-up byte. A side learns of its peer's death within one poll.
//! - The peer is untrusted: whatever it writes into shared memory, this side returns valid
//!   records or [`Error::Corrupt`], never panics and never touches memory outside its mappings.
//!   The consumer maps the data read-only (`F_SEAL_FUTURE_WRITE`).
//! - [`Blob`] hands over an immutable sealed memfd for data larger than a ring.
//! - With the `tokio` feature, the `tokio` module has an async producer and consumer
//!   whose waits end in tokio's reactor (the wake socket under an `AsyncFd`).
//!
//! The wire format, the handshake and the trust model are specified in `docs/protocol.md`.
//!
//! ```
//! let (mut tx, mut rx) = sp_shm::channel(&sp_shm::Config::new())?;
//! let mut grant = tx.reserve(5)?;
//! grant.copy_from_slice(b"hello");
//! grant.commit(5)?;
//! let record = rx.read()?;
//! assert_eq!(record.to_vec(), b"hello");
//! # Ok::<(), sp_shm::Error>(())
//! ```

// The loom build compiles the ring protocol and its models only; the memfd set-up that uses the
// remaining constants and helpers is left out of it.
#![cfg_attr(sp_loom, allow(dead_code))]

#[cfg(not(sp_loom))]
mod blob;
mod config;
mod error;
#[cfg(not(sp_loom))]
mod handshake;
mod idle;
mod layout;
#[cfg(all(test, sp_loom))]
mod loom_tests;
#[cfg(not(sp_loom))]
mod region;
mod ring;
#[cfg(not(sp_loom))]
mod setup;
#[cfg(not(sp_loom))]
mod simplex;
mod sync;
#[cfg(all(feature = "tokio", not(sp_loom)))]
pub mod tokio;
mod wake;

#[cfg(not(sp_loom))]
pub use blob::{BLOB_MAGIC, BLOB_MSG_LEN, Blob, BlobWriter};
pub use config::Config;
pub use error::{
    Corruption, Error, InvalidConfig, RecvTimeoutError, RefuseReason, Result, SendTimeoutError,
    TryRecvError, TrySendError,
};
#[cfg(not(sp_loom))]
pub use handshake::{
    Duplex, OFFER_LEN, OFFER_MAGIC, READY_LEN, READY_MAGIC, adopt, adopt_with_greeting, spawn,
    spawn_with_greeting,
};
pub use idle::IdleStrategy;
pub use ring::{Consumer, Producer, ReadGrant, ReadGrantRef, Stats, WaitPrep, WriteGrant};
#[cfg(not(sp_loom))]
pub use setup::channel;
#[cfg(not(sp_loom))]
pub use simplex::{
    PendingProducer, accept_ring, consume_over, offer_ring, produce_over, refusal_for,
};
pub use sync::NO_MEMBARRIER_ENV;
