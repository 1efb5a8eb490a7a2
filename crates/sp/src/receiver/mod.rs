//! The receiving half of a typed channel: a ring record, its ATTACH (descriptors, blob) from the
//! control socket when it announces one, then the value decoded from a copy of the record (or,
//! with a trusted peer or from a sealed blob, in place).
//!
//! # Receiving one value
//!
//! 1. Take the next ring record (waiting per the operation's limit).
//! 2. A plain value record ([`KIND_VALUE`](crate::wire::KIND_VALUE)) is copied out of shared
//!    memory into an aligned buffer of the receiver (the producer's process could change the
//!    bytes while they are read in place) and decoded from the copy; the record is released
//!    when the decode returns. With [`Receiver::trust_peer`] it is decoded in place instead.
//! 3. A record that announces an attachment is copied too; its sequence number must be the next
//!    one expected, and the ATTACH message on the control socket must match it (sequence number,
//!    descriptor count, blob length). An sp sender sends the ATTACH before the record, so it is
//!    already queued; a peer that never sends it costs at most the attachment timeout, counted
//!    from the moment the record was taken (`attach.rs`: the blocking calls wait for the ATTACH,
//!    the async receiver's keep the record and a later receive resumes it). A blob's memfd must
//!    pass sp-shm's checks (sealed, exact size) before it is mapped; its memory is immutable, so
//!    plain data in it is read in place with no trust needed.
//!
//! A decode error consumes the record (its descriptors are closed) and the next call goes on with
//! the next record. A protocol violation leaves no way to match later records to their
//! attachments, so the receiver answers that violation from then on. Every descriptor that
//! arrived is closed on every error path (they are `OwnedFd`s from the moment sp-core receives
//! them).

#![allow(unsafe_code)] // `trust_peer` lets decoding read ring records in place (sp-shm's `as_slice_trusted`).

mod attach;
mod deliver;
mod scratch;

pub(crate) use attach::AttachWait;

use std::marker::PhantomData;
use std::os::fd::OwnedFd;
use std::time::Duration;

use sp_shm::{Blob, Consumer, ReadGrant};

use crate::config::Config;
use crate::error::{Error, Fail, RecvTimeoutError, Result, TryRecvError, Violation};
use crate::limit::Limit;
use crate::value::{PlainData, Value};
use crate::wire::KIND_VALUE;
use attach::Awaiting;
use deliver::{Decode, DecodeInto, DecodeWithFds, Deliver, Failed, View};
use scratch::Scratch;

/// Receives values of type `T` from the peer.
///
/// `Send`: it can move to another thread than its [`Sender`](crate::Sender). After the peer's
/// process dies the receiver still delivers every value the peer sent, then reports
/// [`Error::PeerGone`].
#[derive(Debug)]
pub struct Receiver<T> {
    consumer: Consumer,
    control: sp_core::Receiver,
    /// Reused for every ATTACH.
    msg: sp_core::Message,
    /// The sequence number the next announcing record and its ATTACH must carry.
    seq: u64,
    scratch: Scratch,
    attachment_timeout: Duration,
    max_blob_len: u64,
    trusted: bool,
    /// A value (or an error) taken by [`Select`](crate::Select) and not yet handed out.
    pending: Option<Result<Fetched>>,
    /// A record taken off the ring (its copy in `scratch`) whose ATTACH has not been matched: a
    /// receive that could not wait for it left it here, and the next receive resumes it.
    awaiting: Option<Awaiting>,
    /// Set by the first protocol violation.
    broken: Option<Violation>,
    _type: PhantomData<fn() -> T>,
}

/// Where a received value's encoding is, and its descriptors.
#[derive(Debug)]
pub(crate) struct Fetched {
    body: Body,
    fds: Vec<OwnedFd>,
}

#[derive(Debug)]
enum Body {
    /// `scratch[start..start + len]`.
    Scratch {
        start: usize,
        len: usize,
    },
    Blob(Blob),
}

impl<T: Value> Receiver<T> {
    pub(crate) fn new(consumer: Consumer, control: sp_core::Receiver, config: &Config) -> Self {
        Self {
            consumer,
            control,
            msg: sp_core::Message::default(),
            seq: 0,
            scratch: Scratch::default(),
            attachment_timeout: config.attachment_timeout,
            max_blob_len: config.max_blob_len,
            trusted: false,
            pending: None,
            awaiting: None,
            broken: None,
            _type: PhantomData,
        }
    }

    /// The receiver of a channel whose sender is in this process ([`crate::channel`]): it reads
    /// records in place, as after [`trust_peer`](Self::trust_peer). Sound because the only
    /// writer of the ring is that `Sender`, sp's own code in this address space, which writes
    /// only ring space this receiver has released (a process forked with it holds a second
    /// producer, which breaks the ring's one-producer rule whether or not records are read in
    /// place).
    pub(crate) fn in_process(mut self) -> Self {
        self.trusted = true;
        self
    }

    /// Waits for the next value. Descriptors sent with it are closed (use
    /// [`recv_with_fds`](Self::recv_with_fds) to keep them).
    ///
    /// # Errors
    /// [`Error::PeerGone`] once the peer is gone and every value it sent has been delivered;
    /// [`Error::Decode`] for a record that is not a `T` (the next call goes on);
    /// [`Error::Protocol`] when the peer broke the protocol (every later call too).
    pub fn recv(&mut self) -> Result<T> {
        self.take(Limit::Forever, AttachWait::Block, Decode::new())
    }

    /// Takes the next value if there is one.
    ///
    /// Once a record is there, an attachment it announces is waited for (at most the attachment
    /// timeout; an sp sender has always queued it already).
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] when there is none; otherwise as [`recv`](Self::recv).
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        self.take(Limit::Now, AttachWait::Block, Decode::new())
    }

    /// Waits at most `timeout` for the next value.
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`]; otherwise as [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.take(Limit::after(timeout), AttachWait::Block, Decode::new())
    }

    /// As [`recv`](Self::recv), decoding into `value` rather than into a new one: a serde
    /// value's strings and vectors keep their allocations where its `Deserialize` decodes in
    /// place ([`Value::decode_into`]; derived impls do), so a loop that receives into one value
    /// reuses its buffers instead of allocating new ones per value. Descriptors sent with the
    /// value are closed.
    ///
    /// # Errors
    /// As [`recv`](Self::recv). After [`Error::Decode`], `value` holds some valid value, not
    /// necessarily the one it held before.
    pub fn recv_into(&mut self, value: &mut T) -> Result<()> {
        self.take(Limit::Forever, AttachWait::Block, DecodeInto(value))
    }

    /// As [`recv_into`](Self::recv_into), if a value is there; `value` is untouched when there
    /// is none.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_into(&mut self, value: &mut T) -> Result<(), TryRecvError> {
        self.take(Limit::Now, AttachWait::Block, DecodeInto(value))
    }

    /// As [`recv_into`](Self::recv_into), waiting at most `timeout`; `value` is untouched on a
    /// timeout.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_into_timeout(
        &mut self,
        value: &mut T,
        timeout: Duration,
    ) -> Result<(), RecvTimeoutError> {
        self.take(Limit::after(timeout), AttachWait::Block, DecodeInto(value))
    }

    /// Waits for the next value and the descriptors sent with it (none for a value sent without),
    /// each close-on-exec, in the order they were sent.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    #[doc(alias = "SCM_RIGHTS")]
    pub fn recv_with_fds(&mut self) -> Result<(T, Vec<OwnedFd>)> {
        self.take(Limit::Forever, AttachWait::Block, DecodeWithFds::new())
    }

    /// As [`recv_with_fds`](Self::recv_with_fds), if a value is there.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_with_fds(&mut self) -> Result<(T, Vec<OwnedFd>), TryRecvError> {
        self.take(Limit::Now, AttachWait::Block, DecodeWithFds::new())
    }

    /// As [`recv_with_fds`](Self::recv_with_fds), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_with_fds_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<(T, Vec<OwnedFd>), RecvTimeoutError> {
        self.take(
            Limit::after(timeout),
            AttachWait::Block,
            DecodeWithFds::new(),
        )
    }

    /// From now on, decodes ring records in place instead of from a copy (one copy less per
    /// value), through sp-shm's [`ReadGrant::as_slice_trusted`].
    ///
    /// # Safety
    /// The peer's process must not write a record's bytes while this receiver reads them. An sp
    /// sender never does: it writes only ring space the receiver has released. A buggy or hostile
    /// peer that does makes the read a data race, which is undefined behaviour. (Blobs need no
    /// trust: their memory is sealed.)
    pub unsafe fn trust_peer(&mut self) {
        self.trusted = true;
    }

    /// `poll(2)` with a zero timeout: whether the peer's process has gone (values it sent may still
    /// be waiting).
    ///
    /// # Errors
    /// Only if `poll` fails.
    pub fn peer_gone(&self) -> Result<bool> {
        Ok(self.consumer.peer_gone()?)
    }

    /// The ring's counters (records, bytes, wake-ups, parks).
    pub fn stats(&self) -> sp_shm::Stats {
        self.consumer.stats()
    }

    /// As [`try_recv`](Self::try_recv), but an ATTACH that is not there yet is not waited for:
    /// the record stays in the receiver ([`attach_limit`](Self::attach_limit) says until when)
    /// and the next receive resumes it. For the async receiver.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_recv_resumable(&mut self) -> Result<T, TryRecvError> {
        self.take(Limit::Now, AttachWait::Resume, Decode::new())
    }

    /// As [`try_recv_resumable`](Self::try_recv_resumable), decoding into `value`.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_recv_into_resumable(&mut self, value: &mut T) -> Result<(), TryRecvError> {
        self.take(Limit::Now, AttachWait::Resume, DecodeInto(value))
    }

    /// As [`try_recv_resumable`](Self::try_recv_resumable), with the descriptors.
    #[cfg(feature = "tokio")]
    pub(crate) fn try_recv_with_fds_resumable(
        &mut self,
    ) -> Result<(T, Vec<OwnedFd>), TryRecvError> {
        self.take(Limit::Now, AttachWait::Resume, DecodeWithFds::new())
    }

    /// The control socket, whose readability means an ATTACH (or the peer's hang-up) is there.
    #[cfg(feature = "tokio")]
    pub(crate) fn control_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.control.as_fd()
    }

    /// Takes the next value within `limit` (its ATTACH, if it announces one, per `attach`) and
    /// hands its encoding and descriptors to `deliver`, which makes the call's result.
    ///
    /// Inlined into every receive call, and kept small so that sp-shm's `read` inlines into it
    /// too: a plain value record goes from the ring to `deliver` here, and its result is the
    /// call's (no `Result` converted on the way out); a value held back (by `Select`, or
    /// awaiting its ATTACH), a broken receiver and an announcing record go out of line.
    #[inline(always)]
    pub(crate) fn take<O: Failed, D: Deliver<O>>(
        &mut self,
        limit: Limit,
        attach: AttachWait,
        deliver: D,
    ) -> O {
        if self.pending.is_some() || self.broken.is_some() || self.awaiting.is_some() {
            return match self.take_held(attach) {
                Ok(fetched) => self.apply(fetched, deliver),
                Err(fail) => O::fail(fail),
            };
        }
        let grant = match read(&mut self.consumer, limit) {
            Ok(grant) => grant,
            Err(fail) => {
                return O::fail(note(
                    &mut self.broken,
                    &mut self.awaiting,
                    &mut self.msg,
                    fail,
                ));
            }
        };
        let (kind, len) = (grant.kind(), grant.len());
        if kind != KIND_VALUE {
            grant.copy_to_slice(self.scratch.bytes_mut(len));
            drop(grant);
            return match self.take_announced(kind, len, attach) {
                Ok(fetched) => self.apply(fetched, deliver),
                Err(fail) => O::fail(fail),
            };
        }
        // The record is held until `deliver` returns: one call site, inlined here.
        let bytes = if self.trusted {
            // SAFETY: `trust_peer`'s contract (or `in_process`: the sender is sp's, in this
            // process): the peer does not write this record while it is read; the slice lives
            // only while `grant` holds the record.
            unsafe { grant.as_slice_trusted() }
        } else {
            let copy = self.scratch.bytes_mut(len);
            grant.copy_to_slice(copy);
            copy
        };
        deliver.deliver(bytes, Vec::new())
    }

    /// [`take`](Self::take) when the receiver holds something back: a value (or error) taken by
    /// `Select`, a protocol violation, or a record awaiting its ATTACH.
    #[inline(never)]
    fn take_held(&mut self, attach: AttachWait) -> Result<Fetched, Fail> {
        if let Some(pending) = self.pending.take() {
            return Ok(pending?);
        }
        if let Some(violation) = self.broken {
            return Err(Error::Protocol(violation).into());
        }
        let res = self.finish_awaiting(attach);
        res.map_err(|fail| self.note(fail))
    }

    /// [`take`](Self::take) for a record that announces an attachment, copied into
    /// `scratch[..len]` and released.
    #[inline(never)]
    fn take_announced(
        &mut self,
        kind: u32,
        len: usize,
        attach: AttachWait,
    ) -> Result<Fetched, Fail> {
        let res = self
            .start_awaiting(kind, len)
            .map_err(Fail::from)
            .and_then(|()| self.finish_awaiting(attach));
        res.map_err(|fail| self.note(fail))
    }

    /// Takes the next value, if any, into `pending` (for [`Select`](crate::Select)); whether
    /// something (a value or an error) is now waiting to be taken.
    pub(crate) fn fill_pending(&mut self) -> bool {
        if self.pending.is_some() || self.broken.is_some() {
            return true;
        }
        let res = self.fetch_now();
        match res.map_err(|fail| self.note(fail)) {
            Ok(fetched) => self.pending = Some(Ok(fetched)),
            Err(Fail::Wait) => return false,
            Err(Fail::Broken(err)) => self.pending = Some(Err(err)),
        }
        true
    }

    /// The next record, if there is one now (or the one awaiting its ATTACH), copied and
    /// completed (never in place).
    fn fetch_now(&mut self) -> Result<Fetched, Fail> {
        if self.awaiting.is_none() {
            let grant = read(&mut self.consumer, Limit::Now)?;
            let (kind, len) = (grant.kind(), grant.len());
            grant.copy_to_slice(self.scratch.bytes_mut(len));
            drop(grant);
            if kind == KIND_VALUE {
                return Ok(Fetched {
                    body: Body::Scratch { start: 0, len },
                    fds: Vec::new(),
                });
            }
            self.start_awaiting(kind, len)?;
        }
        self.finish_awaiting(AttachWait::Block)
    }

    /// Stashes an error met while [`Select`](crate::Select) waited on this receiver; the next
    /// receive reports it.
    pub(crate) fn stash_error(&mut self, err: Error) {
        let err = match self.note(err.into()) {
            Fail::Broken(err) => err,
            Fail::Wait => return,
        };
        if self.pending.is_none() {
            self.pending = Some(Err(err));
        }
    }

    /// The ring this receiver reads (for [`Select`](crate::Select)).
    pub(crate) fn consumer(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    pub(crate) fn consumer_ref(&self) -> &Consumer {
        &self.consumer
    }

    #[inline(always)]
    fn apply<O>(&self, fetched: Fetched, deliver: impl Deliver<O>) -> O {
        let bytes = match &fetched.body {
            Body::Scratch { start, len } => self.scratch.bytes(*start, *len),
            Body::Blob(blob) => blob.as_bytes(),
        };
        deliver.deliver(bytes, fetched.fds)
    }

    /// Records a protocol violation (the receiver is broken from now on); passes `fail` on.
    fn note(&mut self, fail: Fail) -> Fail {
        note(&mut self.broken, &mut self.awaiting, &mut self.msg, fail)
    }
}

impl<T: PlainData> Receiver<T> {
    /// Waits for the next value and lends it to `f` with its descriptors, without copying it into
    /// a `T`: from the receiver's copy of the ring record (validated in place), from the ring
    /// itself after [`trust_peer`](Self::trust_peer), or from a blob's sealed memory (zero-copy,
    /// no trust needed). The way to take plain values too large for the stack.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp::channel::<sp::Plain<[u64; 8]>>(&sp::Config::new())?;
    /// tx.send(&sp::Plain([1, 2, 3, 4, 5, 6, 7, 8]))?;
    /// let sum: u64 = rx.recv_in_place(|v, _fds| v.0.iter().sum())?;
    /// assert_eq!(sum, 36);
    /// # Ok::<(), sp::Error>(())
    /// ```
    pub fn recv_in_place<R>(&mut self, f: impl FnOnce(&T, Vec<OwnedFd>) -> R) -> Result<R> {
        self.take(Limit::Forever, AttachWait::Block, View::new(f))
    }

    /// As [`recv_in_place`](Self::recv_in_place), if a value is there.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv).
    pub fn try_recv_in_place<R>(
        &mut self,
        f: impl FnOnce(&T, Vec<OwnedFd>) -> R,
    ) -> Result<R, TryRecvError> {
        self.take(Limit::Now, AttachWait::Block, View::new(f))
    }

    /// As [`recv_in_place`](Self::recv_in_place), waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    pub fn recv_in_place_timeout<R>(
        &mut self,
        f: impl FnOnce(&T, Vec<OwnedFd>) -> R,
        timeout: Duration,
    ) -> Result<R, RecvTimeoutError> {
        self.take(Limit::after(timeout), AttachWait::Block, View::new(f))
    }
}

/// [`Receiver::note`] on the fields it changes (for `take`, which holds the ring's grant).
fn note(
    broken: &mut Option<Violation>,
    awaiting: &mut Option<Awaiting>,
    msg: &mut sp_core::Message,
    fail: Fail,
) -> Fail {
    if let Fail::Broken(Error::Protocol(violation)) = &fail {
        *broken = Some(*violation);
        *awaiting = None;
        // Whatever is left of an ATTACH is closed now rather than when the receiver goes.
        msg.fds.clear();
    }
    fail
}

/// Takes the next record within `limit`. Inlined into the receive calls, so that the grant stays
/// in registers (returned through memory from an out-of-line call it is reloaded with a load
/// wider than the stores that wrote it, which waits for them to drain; see sp-shm's
/// `Producer::wait_claim`).
#[inline(always)]
fn read(consumer: &mut Consumer, limit: Limit) -> Result<ReadGrant<'_>, Fail> {
    match limit.remaining() {
        None => consumer.read().map_err(Fail::from),
        Some(left) if left.is_zero() => consumer.try_read().map_err(Fail::from),
        Some(left) => consumer.read_timeout(left).map_err(Fail::from),
    }
}
