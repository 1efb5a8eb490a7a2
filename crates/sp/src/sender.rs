//! The sending half of a typed channel: values encoded straight into a reserved ring slot, with
//! their descriptors (and, for large values, a sealed blob) sent on the control socket first.
//!
//! # Sending one value
//!
//! 1. Reserve a ring slot: for plain data its exact size; for postcard a guess (the size of
//!    earlier values, rounded up to a power of two). The wait for room is the only wait of a
//!    send, and `try_*`/`*_timeout` bound it.
//! 2. Encode into the slot. If the guess was too small, abandon the slot (nothing becomes visible),
//!    ask the value for its exact length and reserve again; a value longer than the blob threshold
//!    is encoded into a fresh memfd instead, which is then sealed (`sp_shm::Blob`). A postcard
//!    value is written to the memfd in pieces as it is encoded (`sp_shm::BlobWriter`); while
//!    values come that large, the next goes there at once, without the ring try and the length
//!    pass.
//! 3. If descriptors or a blob go with the value, send an ATTACH message carrying them on the
//!    control socket, **then** commit the record that announces them. A receiver that sees the
//!    record therefore finds the ATTACH already queued (the kernel queues it before `sendmsg`
//!    returns, and the record's Release store orders it after that).
//! 4. Commit: the record becomes visible through its header word.
//!
//! Nothing is sent if any step before the commit fails; an abandoned slot or an unsent blob costs
//! nothing but the work done.

use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::PollFlags;
use sp_shm::{Producer, WriteGrant};
use zerocopy::FromZeros;

use crate::config::Config;
use crate::error::{EncodeError, Error, Fail, Result, SendTimeoutError, TrySendError};
use crate::limit::{Limit, wait_for};
use crate::value::{Encoding, PlainData, Value};
use crate::wire::{self, Announce, FDS_PREFIX_LEN, MAX_FDS};

mod blob;

/// The smallest reservation made for a postcard value before its length is known.
const MIN_GUESS: usize = 256;

/// Sends values of type `T` to the peer.
///
/// `Send`: it can move to another thread than its [`Receiver`](crate::Receiver). One sender per
/// direction (the ring has a single producer). Every blocking call returns [`Error::PeerGone`]
/// promptly when the peer's process dies.
#[derive(Debug)]
pub struct Sender<T> {
    producer: Producer,
    control: Control,
    /// The sequence number of the next ATTACH.
    seq: u64,
    /// The longest record payload that is not a blob.
    threshold: usize,
    max_blob_len: u64,
    /// How much to reserve for a postcard value before its length is known.
    guess: usize,
    /// Whether the last postcard value went as a blob: the next is then encoded straight into
    /// one, without a try in the ring and a pass to compute its length first.
    last_was_blob: bool,
    /// The pieces of a blob's encoding on their way to its memfd (empty until the first blob).
    scratch: Vec<u8>,
    /// The ring space the last reservation asked for: what an async send that found the ring
    /// full waits for (`crate::tokio`).
    wanted: usize,
    _type: PhantomData<fn(&T)>,
}

/// The sending side of the control socket.
#[derive(Debug)]
pub(crate) struct Control {
    tx: sp_core::Sender,
    /// A duplicate of the socket for `poll(2)`: sp-core's `Sender` does not lend its descriptor.
    /// The socket is non-blocking, so that a full socket buffer is a wait that `try_*` and
    /// `*_timeout` can bound, not a blocked `sendmsg`.
    poll_fd: OwnedFd,
}

impl Control {
    pub(crate) fn new(tx: sp_core::Sender, poll_fd: OwnedFd) -> Self {
        Self { tx, poll_fd }
    }

    fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>], limit: Limit) -> Result<(), Fail> {
        loop {
            match self.tx.try_send(bytes, fds) {
                Ok(()) => return Ok(()),
                Err(sp_core::TrySendError::Full) => {
                    wait_for(self.poll_fd.as_fd(), PollFlags::OUT, limit)?;
                }
                Err(sp_core::TrySendError::Broken(err)) => return Err(Fail::Broken(err.into())),
            }
        }
    }
}

impl<T: Value> Sender<T> {
    pub(crate) fn new(producer: Producer, control: Control, config: &Config) -> Self {
        let threshold = config.threshold_for(producer.max_payload());
        Self {
            producer,
            control,
            seq: 0,
            threshold,
            max_blob_len: config.max_blob_len,
            guess: MIN_GUESS,
            last_was_blob: false,
            scratch: Vec::new(),
            wanted: 0,
            _type: PhantomData,
        }
    }

    /// Sends `value`, waiting for room in the ring as long as it takes.
    ///
    /// The value is encoded into the ring (or, above the blob threshold, into a sealed memfd), so
    /// the caller keeps it.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the peer is gone; [`Error::Encode`] if the value cannot be encoded;
    /// [`Error::TooLarge`] for a blob over [`Config::max_blob_len`]. Nothing was sent on error.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<(u32, String)>(&sp::Config::new())?;
    /// tx.send(&(1, "one".to_string()))?;
    /// assert_eq!(rx.recv()?, (1, "one".to_string()));
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn send(&mut self, value: &T) -> Result<()> {
        forever(self.send_inner(value, &[], Limit::Forever))
    }

    /// Sends `value` if the ring has room now.
    ///
    /// # Errors
    /// [`TrySendError::Full`] when it has not (nothing was sent); otherwise as [`send`](Self::send).
    pub fn try_send(&mut self, value: &T) -> Result<(), TrySendError> {
        self.send_inner(value, &[], Limit::Now).map_err(try_error)
    }

    /// Sends `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`] (nothing was sent); otherwise as [`send`](Self::send).
    pub fn send_timeout(&mut self, value: &T, timeout: Duration) -> Result<(), SendTimeoutError> {
        self.send_inner(value, &[], Limit::after(timeout))
            .map_err(timeout_error)
    }

    /// `sendmsg(2)` with `SCM_RIGHTS`, then the ring record: sends `value` with `fds`. The
    /// receiver gets exactly these descriptors (its own duplicates, close-on-exec) with this value
    /// and no other, in order with the values around it. The caller keeps its own descriptors.
    ///
    /// # Errors
    /// [`Error::TooManyFds`] for more than [`MAX_FDS`](crate::MAX_FDS); otherwise as
    /// [`send`](Self::send).
    ///
    /// # Examples
    /// ```
    /// use std::os::fd::AsFd;
    /// let (mut tx, mut rx) = sp::channel::<String>(&sp::Config::new())?;
    /// let file = std::fs::File::open("/dev/null")?;
    /// tx.send_with_fds(&"here is a file".to_string(), &[file.as_fd()])?;
    /// let (text, fds) = rx.recv_with_fds()?;
    /// assert_eq!((text.as_str(), fds.len()), ("here is a file", 1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "SCM_RIGHTS")]
    pub fn send_with_fds(&mut self, value: &T, fds: &[BorrowedFd<'_>]) -> Result<()> {
        forever(self.send_inner(value, fds, Limit::Forever))
    }

    /// As [`send_with_fds`](Self::send_with_fds), if the ring has room now.
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send) and [`send_with_fds`](Self::send_with_fds).
    pub fn try_send_with_fds(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), TrySendError> {
        self.send_inner(value, fds, Limit::Now).map_err(try_error)
    }

    /// As [`send_with_fds`](Self::send_with_fds), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout) and [`send_with_fds`](Self::send_with_fds).
    pub fn send_with_fds_timeout(
        &mut self,
        value: &T,
        fds: &[BorrowedFd<'_>],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_inner(value, fds, Limit::after(timeout))
            .map_err(timeout_error)
    }

    /// `poll(2)` with a zero timeout: whether the peer's process has gone.
    ///
    /// # Errors
    /// Only if `poll` fails.
    pub fn peer_gone(&self) -> Result<bool> {
        Ok(self.producer.peer_gone()?)
    }

    /// The longest encoding (with its record prefix) that travels in the ring rather than as a
    /// blob.
    pub fn blob_threshold(&self) -> usize {
        self.threshold
    }

    /// Changes the blob threshold (see [`Config::blob_threshold`]); at most the ring's largest
    /// payload.
    pub fn set_blob_threshold(&mut self, n_bytes: usize) {
        self.threshold = n_bytes.min(self.producer.max_payload());
    }

    /// The ring's counters (records, bytes, wake-ups, parks).
    pub fn stats(&self) -> sp_shm::Stats {
        self.producer.stats()
    }

    /// Sends a value of `len` encoded bytes that `fill` writes, inline or above the threshold as
    /// a blob, without descriptors (for [`send_encoded`](Self::send_encoded) in `raw.rs`).
    pub(crate) fn send_filled(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
        limit: Limit,
        wake: Wake,
    ) -> Result<(), Fail> {
        if len > self.threshold {
            let fill = |bytes: &mut [u8]| {
                fill(bytes);
                Ok(())
            };
            // A blob's record wakes the receiver for it and for every record held before it.
            return self.send_blob(len, fill, &[], limit);
        }
        let mut grant = match reserve(&mut self.producer, &mut self.wanted, len, limit) {
            Ok(grant) => grant,
            Err(fail) => {
                // Not sent: nothing held back may wait for a wake-up that this failure
                // postpones (`try_*` returns without the wait that would have given it).
                if wake == Wake::Held {
                    self.producer.flush().map_err(Fail::from)?;
                }
                return Err(fail);
            }
        };
        fill(&mut grant[..len]);
        match wake {
            Wake::Now => commit(grant, len, &[], &self.control, &mut self.seq, limit),
            Wake::Held => {
                grant.set_kind(wire::KIND_VALUE)?;
                grant.commit_deferred(len);
                Ok(())
            }
        }
    }

    /// Wakes the receiver, if it is parked, for the values sent with a held wake-up (see
    /// [`send_encoded_held_timeout`](Self::send_encoded_held_timeout)). Every other send, and
    /// every wait of this sender for room, does the same.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the receiver is parked and its process is gone.
    pub fn flush(&mut self) -> Result<()> {
        Ok(self.producer.flush()?)
    }

    /// The ring, the space the last reservation asked for, and the control socket's descriptor
    /// (for the async sender's wait, `crate::tokio`).
    #[cfg(feature = "tokio")]
    pub(crate) fn wait_parts(&mut self) -> (&mut Producer, usize, BorrowedFd<'_>) {
        (
            &mut self.producer,
            self.wanted,
            self.control.poll_fd.as_fd(),
        )
    }

    fn send_inner(&mut self, value: &T, fds: &[BorrowedFd<'_>], limit: Limit) -> Result<(), Fail> {
        if fds.len() > MAX_FDS {
            return Err(Error::TooManyFds {
                n_fds: fds.len(),
                max: MAX_FDS,
            }
            .into());
        }
        let prefix = if fds.is_empty() { 0 } else { FDS_PREFIX_LEN };
        // The longest encoding that still goes in the ring.
        let room = self.threshold.saturating_sub(prefix);
        if self.last_was_blob
            && T::ENCODING == Encoding::Postcard
            && self.send_blob_in_pieces(value, fds, limit, false)?
        {
            return Ok(());
        }
        let first_try = match T::ENCODING {
            Encoding::Plain { size } => (size <= room).then_some(size),
            _ => (room > 0).then_some(self.guess.min(room)),
        };
        if let Some(n_bytes) = first_try {
            let mut grant = reserve(
                &mut self.producer,
                &mut self.wanted,
                prefix + n_bytes,
                limit,
            )?;
            match value.encode(&mut grant[prefix..]) {
                Ok(used) => {
                    return commit(
                        grant,
                        prefix + used,
                        fds,
                        &self.control,
                        &mut self.seq,
                        limit,
                    );
                }
                // The grant goes out of scope uncommitted: nothing of it becomes visible.
                Err(EncodeError::BufferFull) => {}
                Err(err) => return Err(Error::Encode(err).into()),
            }
        }
        let len = value.encoded_len().map_err(Error::Encode)?;
        if len <= room {
            self.last_was_blob = false;
            self.guess = len.next_power_of_two().max(MIN_GUESS);
            let mut grant = reserve(&mut self.producer, &mut self.wanted, prefix + len, limit)?;
            let used = value.encode(&mut grant[prefix..]).map_err(Error::Encode)?;
            return commit(
                grant,
                prefix + used,
                fds,
                &self.control,
                &mut self.seq,
                limit,
            );
        }
        if T::ENCODING == Encoding::Postcard {
            // Refused before any of it is written (`send_blob` checks for the other encodings).
            self.check_blob_len(len)?;
            return self
                .send_blob_in_pieces(value, fds, limit, true)
                .map(|_| ());
        }
        self.send_blob(len, |bytes| value.encode(bytes).map(|_| ()), fds, limit)
    }
}
impl<T: PlainData + FromZeros> Sender<T> {
    /// Writes a value in place: `fill` gets a zeroed `T` inside the reserved ring slot (or, above
    /// the blob threshold, inside the blob's memory), then it is sent. No copy is made.
    ///
    /// # Errors
    /// As [`send`](Self::send).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<sp::Plain<[u64; 8]>>(&sp::Config::new())?;
    /// tx.send_with(|slot| slot.0[0] = 42)?;
    /// assert_eq!(rx.recv()?.0, [42, 0, 0, 0, 0, 0, 0, 0]);
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn send_with(&mut self, fill: impl FnOnce(&mut T)) -> Result<()> {
        forever(self.send_with_inner(fill, Limit::Forever))
    }

    /// As [`send_with`](Self::send_with), if the ring has room now (`fill` is not called
    /// otherwise).
    ///
    /// # Errors
    /// As [`try_send`](Self::try_send).
    pub fn try_send_with(&mut self, fill: impl FnOnce(&mut T)) -> Result<(), TrySendError> {
        self.send_with_inner(fill, Limit::Now).map_err(try_error)
    }

    /// As [`send_with`](Self::send_with), waiting at most `timeout` for room.
    ///
    /// # Errors
    /// As [`send_timeout`](Self::send_timeout).
    pub fn send_with_timeout(
        &mut self,
        fill: impl FnOnce(&mut T),
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.send_with_inner(fill, Limit::after(timeout))
            .map_err(timeout_error)
    }

    /// Inlined into the three calls, with the blob case out of line, so that sp-shm's `reserve`
    /// inlines into them and the grant stays in registers (see `reserve` below).
    #[inline(always)]
    fn send_with_inner(&mut self, fill: impl FnOnce(&mut T), limit: Limit) -> Result<(), Fail> {
        let size = size_of::<T>();
        if size > self.threshold {
            return self.send_with_blob(fill, limit);
        }
        let mut grant = reserve(&mut self.producer, &mut self.wanted, size, limit)?;
        fill_in_place(&mut grant[..size], fill);
        commit(grant, size, &[], &self.control, &mut self.seq, limit)
    }

    #[inline(never)]
    fn send_with_blob(&mut self, fill: impl FnOnce(&mut T), limit: Limit) -> Result<(), Fail> {
        let fill = |bytes: &mut [u8]| {
            fill_in_place(bytes, fill);
            Ok(())
        };
        self.send_blob(size_of::<T>(), fill, &[], limit)
    }
}

/// Zeroes `bytes` (exactly `size_of::<T>()` of them) and lets `fill` write a `T` over them: in
/// place when they are aligned for `T`, else through a zeroed copy on the stack.
fn fill_in_place<T: PlainData + FromZeros>(bytes: &mut [u8], fill: impl FnOnce(&mut T)) {
    bytes.fill(0);
    match T::try_mut_from_bytes(bytes) {
        Ok(slot) => fill(slot),
        Err(err) => {
            let bytes = err.into_src();
            let mut value = T::new_zeroed();
            fill(&mut value);
            bytes.copy_from_slice(value.as_bytes());
        }
    }
}

/// Whether a send checks for a parked receiver to wake at once, or leaves that to the next
/// publishing call (a relay's burst of records, woken once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wake {
    Now,
    Held,
}

/// Reserves `n_bytes` in the ring within `limit`. Inlined, like sp-shm's own `reserve`, so that
/// the grant stays in registers (see `read` in receiver/mod.rs).
#[inline(always)]
fn reserve<'a>(
    producer: &'a mut Producer,
    wanted: &mut usize,
    n_bytes: usize,
    limit: Limit,
) -> Result<WriteGrant<'a>, Fail> {
    *wanted = n_bytes;
    match limit.remaining() {
        None => producer.reserve(n_bytes).map_err(Fail::from),
        Some(left) if left.is_zero() => producer.try_reserve(n_bytes).map_err(Fail::from),
        Some(left) => producer.reserve_timeout(n_bytes, left).map_err(Fail::from),
    }
}

/// Commits an inline record of `used` bytes (the prefix included): kind [`wire::KIND_VALUE`], or
/// with descriptors, the prefix, the ATTACH and kind [`wire::KIND_VALUE_FDS`].
#[inline(always)]
fn commit(
    mut grant: WriteGrant<'_>,
    used: usize,
    fds: &[BorrowedFd<'_>],
    control: &Control,
    seq: &mut u64,
    limit: Limit,
) -> Result<(), Fail> {
    if fds.is_empty() {
        grant.set_kind(wire::KIND_VALUE)?;
        grant.commit(used)?;
        return Ok(());
    }
    let announce = Announce {
        seq: *seq,
        n_fds: fds.len() as u32,
        blob: None,
    };
    wire::encode_fds_prefix(announce.seq, announce.n_fds, &mut grant[..FDS_PREFIX_LEN]);
    grant.set_kind(wire::KIND_VALUE_FDS)?;
    control.send(&wire::encode_attach(announce), fds, limit)?;
    *seq += 1;
    grant.commit(used)?;
    Ok(())
}

/// A blocking operation cannot "would wait"; if a lower layer says so anyway, it is an error.
fn forever(res: Result<(), Fail>) -> Result<()> {
    match res {
        Ok(()) => Ok(()),
        Err(Fail::Broken(err)) => Err(err),
        Err(Fail::Wait) => Err(Error::Os(std::io::ErrorKind::WouldBlock.into())),
    }
}

fn try_error(fail: Fail) -> TrySendError {
    match fail {
        Fail::Wait => TrySendError::Full,
        Fail::Broken(err) => TrySendError::Broken(err),
    }
}

fn timeout_error(fail: Fail) -> SendTimeoutError {
    match fail {
        Fail::Wait => SendTimeoutError::Timeout,
        Fail::Broken(err) => SendTimeoutError::Broken(err),
    }
}
