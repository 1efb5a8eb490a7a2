//! The worker's side of a pool: adopt the channel the pool set up, then answer each item with the
//! result of a function, until the pool closes the channel.

#![allow(unsafe_code)] // `serve_bytes_trusted`: the worker's opt-in to trust the pool's process.

use crate::config::Config;
use crate::error::{DecodeError, Error, Result};
use crate::pool::config::{WORKER_ENV, WorkerSetup};
use crate::pool::envelope::{Envelope, ID_LEN};
use crate::receiver::Receiver;
use crate::value::Value;

/// In a worker started by a [`Pool`](crate::Pool): answers every item with `work(item)`, in the
/// order they come, until the pool closes the channel (then it returns `Ok(())`, and the worker
/// should exit). Uses the ring sizes and idle strategy the pool chose ([`WORKER_ENV`]; sp's
/// defaults when the variable is absent).
///
/// A worker is a few lines:
///
/// ```no_run
/// fn main() -> Result<(), sp::Error> {
///     // The pool is a `Pool<String, usize>`: it sends strings, gets their lengths back.
///     sp::pool::serve(|text: String| text.len())
/// }
/// ```
///
/// # Errors
/// As [`adopt`](crate::adopt) while connecting; afterwards [`Error::Decode`] or
/// [`Error::Protocol`] if the pool's records are not items of type `In` (the pool sees this worker
/// exit and reports its items), and the errors of the ring.
pub fn serve<In: Value, Out: Value>(work: impl FnMut(In) -> Out) -> Result<()> {
    let config = setup().map_or_else(Config::new, |setup| setup.config());
    serve_with(&config, work)
}

/// As [`serve`], with this side's channel settings (ring geometry, idle strategy) given rather
/// than read from [`WORKER_ENV`].
///
/// # Errors
/// As [`serve`].
pub fn serve_with<In: Value, Out: Value>(
    config: &Config,
    mut work: impl FnMut(In) -> Out,
) -> Result<()> {
    serve_loop::<In, Out>(config, false, |items| {
        let item = items.recv()?;
        Ok((item.id, work(item.value)))
    })
}

/// As [`serve`], for a pool whose items are byte buffers: `work` gets each item's bytes where
/// they were received, not a new buffer holding a copy of them. The pool's items may be
/// `serde_bytes::ByteBuf`, `Vec<u8>` or `String` (postcard encodes all three as a length and
/// the bytes); a value that came in the ring is lent from the receiver's own copy of the record
/// (taken as for any value from a peer), one that came as a blob from its sealed memory.
///
/// ```no_run
/// fn main() -> Result<(), sp::Error> {
///     // The pool is a `Pool<serde_bytes::ByteBuf, u64>`: it sends chunks, gets their sums back.
///     sp::pool::serve_bytes(|chunk| chunk.iter().map(|&b| u64::from(b)).sum::<u64>())
/// }
/// ```
///
/// # Errors
/// As [`serve`]; an item that is not a length and that many bytes is [`Error::Decode`].
pub fn serve_bytes<Out: Value>(work: impl FnMut(&[u8]) -> Out) -> Result<()> {
    let config = setup().map_or_else(Config::new, |setup| setup.config());
    serve_bytes_with(&config, work)
}

/// As [`serve_bytes`], with this side's channel settings given rather than read from
/// [`WORKER_ENV`].
///
/// # Errors
/// As [`serve_bytes`].
pub fn serve_bytes_with<Out: Value>(config: &Config, work: impl FnMut(&[u8]) -> Out) -> Result<()> {
    bytes_loop(config, false, work)
}

/// [`serve_bytes_with`], reading in the ring itself if `trusted` (the caller's promise, as
/// [`serve_bytes_trusted`] states it).
fn bytes_loop<Out: Value>(
    config: &Config,
    trusted: bool,
    mut work: impl FnMut(&[u8]) -> Out,
) -> Result<()> {
    // `Vec<u8>` names the encoding for the HELLO; no item is decoded as one.
    serve_loop::<Vec<u8>, Out>(config, trusted, |items| {
        // Descriptors never come with pool items; any that did are closed here.
        items.recv_encoded(|bytes, _fds| -> Result<(u64, Out)> {
            let (id, value) = split_bytes_item(bytes).map_err(Error::Decode)?;
            Ok((id, work(value)))
        })?
    })
}

/// As [`serve_bytes`], reading each item in the pool's ring itself instead of in the receiver's
/// copy of it: one copy of every item less, which is most of a worker's cost when its work is a
/// single pass over the bytes (`docs/benchmarks.md`, pools). The worker trusts the pool's
/// process, through [`Receiver::trust_peer`]; the pool still trusts no worker (it copies and
/// checks every answer as before).
///
/// ```no_run
/// fn main() -> Result<(), sp::Error> {
///     // SAFETY: this worker's pool is sp's, in the parent that started it, which never writes
///     // the ring space of an item the worker has not released.
///     unsafe { sp::pool::serve_bytes_trusted(|chunk| chunk.len() as u64) }
/// }
/// ```
///
/// # Safety
/// As [`Receiver::trust_peer`]: the pool's process must not write an item's bytes while this
/// worker reads them. An sp pool never does; a process that only claims to be one (the worker
/// was started by something else, or the parent is compromised) could make the read a data
/// race, which is undefined behaviour. Without that trust, use [`serve_bytes`].
///
/// # Errors
/// As [`serve_bytes`].
pub unsafe fn serve_bytes_trusted<Out: Value>(work: impl FnMut(&[u8]) -> Out) -> Result<()> {
    let config = setup().map_or_else(Config::new, |setup| setup.config());
    bytes_loop(&config, true, work)
}

/// An item's id and the bytes of its value (a postcard length, then exactly that many bytes).
fn split_bytes_item(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let Some((id, rest)) = bytes.split_first_chunk::<ID_LEN>() else {
        return Err(DecodeError::UnexpectedEnd);
    };
    let (value, rest) = postcard::take_from_bytes::<&[u8]>(rest)?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { n: rest.len() });
    }
    Ok((u64::from_le_bytes(*id), value))
}

/// Adopts the pool's channel and answers items until the pool closes it: `next` waits for the
/// next item and returns its id and its result. `trusted`: items are read in the ring itself
/// (only [`serve_bytes_trusted`] passes `true`, on its caller's promise).
fn serve_loop<In: Value, Out: Value>(
    config: &Config,
    trusted: bool,
    mut next: impl FnMut(&mut Receiver<Envelope<In>>) -> Result<(u64, Out)>,
) -> Result<()> {
    let (mut results, mut items) = crate::adopt::<Envelope<Out>, Envelope<In>>(config)?;
    if trusted {
        // SAFETY: the caller of `serve_bytes_trusted` promised that the pool's process does not
        // write an item's bytes while this worker reads them (`trust_peer`'s contract).
        unsafe { items.trust_peer() };
    }
    loop {
        let (id, value) = match next(&mut items) {
            Ok(answer) => answer,
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err),
        };
        match results.send(&Envelope { id, value }) {
            Ok(()) => {}
            Err(Error::PeerGone) => return Ok(()),
            Err(err) => return Err(err),
        }
    }
}

/// In a worker started by a [`Pool`](crate::Pool): its index in the pool (a respawned worker
/// gets the index of the one it replaces).
pub fn worker_index() -> Option<usize> {
    setup().map(|setup| setup.index)
}

fn setup() -> Option<WorkerSetup> {
    WorkerSetup::decode(&std::env::var(WORKER_ENV).ok()?)
}
