//! The writing side: claiming space, committing records by their header word, waking a parked
//! consumer.

use std::time::{Duration, Instant};

use super::area::{Payload, ReadWrite, Shared};
use super::wait::{ClaimWait, Limit, WaitError, wait_for, wake_if_waiting};
use super::{Stats, corrupt};
use crate::error::{Corruption, Error, Result, SendTimeoutError, TrySendError};
use crate::idle::IdleStrategy;
use crate::layout::{self, HEADER_LEN, PADDING};
use crate::sync::Ordering;
use crate::wake::{WakeSocket, deadline_after};

/// The writing side of a ring.
///
/// `Send`, not `Sync`: one thread at a time writes. All blocking calls return
/// [`Error::PeerGone`] promptly when the consumer's process dies.
#[derive(Debug)]
pub struct Producer {
    pub(super) shared: Shared<ReadWrite>,
    pub(super) capacity: u64,
    pub(super) max_payload: usize,
    /// Bytes committed (each record is visible once committed: its header publishes it).
    pub(super) tail: u64,
    /// `tail` at the last wake-up check (see `publish`).
    tail_announced: u64,
    /// Last head loaded from the control block; never ahead of the real head.
    pub(super) head_cache: u64,
    /// The space the last successful claim found at the tail: the record's payload (header
    /// offset and length reserved), which the next commit publishes. It lives here rather than in
    /// the grant so that the hot path stores and loads it with matching widths (a grant returned
    /// inside a `Result` was split into 32-bit stores and read back with 64-bit loads).
    claimed: Payload,
    /// Where a record claimed on the fast path may end at the latest: the end of the tail's lap
    /// (no padding needed) and 8 bytes short of the cached head's free space (the next slot).
    /// Recomputed on the slow path, whenever the tail enters a new lap or the head is reloaded.
    fast_end: u64,
    pub(super) wake: WakeSocket,
    pub(super) idle: IdleStrategy,
    pub(super) stats: Stats,
    /// A wait saw the consumer's process hang up.
    pub(super) peer_gone: bool,
}

/// Free space reserved by [`Producer::reserve`]; write the payload in place, then
/// [`commit`](Self::commit). Dropping the grant abandons it: nothing becomes visible.
///
/// The grant dereferences to `&mut [u8]` of the reserved length. That is sound because the data
/// area is the producer's own memfd: the consumer can only map it read-only.
#[derive(Debug)]
pub struct WriteGrant<'a> {
    producer: &'a mut Producer,
    kind: u32,
}

impl Producer {
    pub(crate) fn from_parts(
        shared: Shared<ReadWrite>,
        capacity: u64,
        max_payload: usize,
        wake: WakeSocket,
        idle: IdleStrategy,
    ) -> Self {
        crate::sync::register_asymmetric_fences();
        Self {
            shared,
            capacity,
            max_payload,
            tail: 0,
            tail_announced: 0,
            head_cache: 0,
            claimed: Payload::EMPTY,
            fast_end: 0,
            wake,
            idle,
            stats: Stats::default(),
            peer_gone: false,
        }
    }

    /// Reserves space for a record of up to `n_bytes` payload, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`max_payload`](Self::max_payload); [`Error::PeerGone`] if the
    /// consumer's process is gone while this waits; [`Error::Corrupt`] for a bad head.
    #[inline(always)]
    pub fn reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>> {
        self.wait_claim(n_bytes, Limit::Forever)
            .map_err(WaitError::forever)?;
        Ok(self.grant())
    }

    /// Reserves space if there is enough now.
    ///
    /// # Errors
    /// [`TrySendError::Full`](sp_core::TrySendError::Full) when there is not (or `Broken` with
    /// [`Error::PeerGone`] once a wait has seen the consumer go); otherwise `Broken` as
    /// [`reserve`](Self::reserve).
    #[inline(always)]
    pub fn try_reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>, TrySendError> {
        if self.try_claim(n_bytes)? {
            Ok(self.grant())
        } else {
            Err(self.full())
        }
    }

    /// Reserves space, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`](sp_core::SendTimeoutError::Timeout); otherwise `Broken` as
    /// [`reserve`](Self::reserve).
    #[inline(always)]
    pub fn reserve_timeout(
        &mut self,
        n_bytes: usize,
        timeout: Duration,
    ) -> Result<WriteGrant<'_>, SendTimeoutError> {
        self.wait_claim(n_bytes, Limit::After(timeout))
            .map_err(WaitError::into_send)?;
        Ok(self.grant())
    }

    /// Writes one record of `n_bytes` in place and publishes it, waiting for space: `fill` gets
    /// the reserved bytes (as [`reserve`](Self::reserve) gives them, not zeroed) and returns how
    /// many it used (at most `n_bytes`; more is clamped). The one-call form of `reserve`, fill,
    /// `commit`, with no grant in between.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve); `fill` is not called then.
    ///
    /// # Examples
    /// ```
    /// let (mut tx, mut rx) = sp_shm::channel(&sp_shm::Config::new())?;
    /// tx.send_with(5, |slot| {
    ///     slot.copy_from_slice(b"hello");
    ///     5
    /// })?;
    /// assert_eq!(rx.read()?.to_vec(), b"hello");
    /// # Ok::<(), sp_shm::Error>(())
    /// ```
    #[cfg(not(sp_loom))]
    #[inline]
    pub fn send_with(
        &mut self,
        n_bytes: usize,
        fill: impl FnOnce(&mut [u8]) -> usize,
    ) -> Result<()> {
        self.wait_claim(n_bytes, Limit::Forever)
            .map_err(WaitError::forever)?;
        let used = fill(self.shared.data.payload_mut(self.claimed));
        self.finish(used, 0);
        self.announce()
    }

    /// Copies `bytes` into one record (kind 0) and publishes it, waiting for space.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    #[inline]
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.wait_claim(bytes.len(), Limit::Forever)
            .map_err(WaitError::forever)?;
        self.write_claimed(bytes);
        self.announce()
    }

    /// Sends if there is space now.
    ///
    /// # Errors
    /// As [`try_reserve`](Self::try_reserve).
    #[inline]
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<(), TrySendError> {
        if self.try_claim(bytes.len())? {
            self.write_claimed(bytes);
            Ok(self.announce()?)
        } else {
            Err(self.full())
        }
    }

    /// Sends, waiting at most `timeout` for space.
    ///
    /// # Errors
    /// As [`reserve_timeout`](Self::reserve_timeout).
    #[inline]
    pub fn send_timeout(
        &mut self,
        bytes: &[u8],
        timeout: Duration,
    ) -> Result<(), SendTimeoutError> {
        self.wait_claim(bytes.len(), Limit::After(timeout))
            .map_err(WaitError::into_send)?;
        self.write_claimed(bytes);
        Ok(self.announce()?)
    }

    /// Sends as many of `records` as fit now, checking for a parked consumer once; returns how
    /// many.
    ///
    /// # Errors
    /// [`TrySendError::Full`](sp_core::TrySendError::Full) if not even the first fits; otherwise
    /// as [`try_reserve`](Self::try_reserve).
    pub fn try_send_batch<B: AsRef<[u8]>>(&mut self, records: &[B]) -> Result<usize, TrySendError> {
        let mut n_sent = 0;
        for record in records {
            let bytes = record.as_ref();
            match self.try_claim(bytes.len()) {
                Ok(true) => self.write_claimed(bytes),
                Ok(false) => break,
                Err(err) => {
                    self.publish()?;
                    return Err(err.into());
                }
            }
            n_sent += 1;
        }
        self.publish()?;
        if n_sent == 0 && !records.is_empty() {
            return Err(self.full());
        }
        Ok(n_sent)
    }

    /// Sends all of `records`, checking for a parked consumer once per run of records that fit
    /// (and before every wait).
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve); records before the failing one were sent.
    pub fn send_batch<B: AsRef<[u8]>>(&mut self, records: &[B]) -> Result<()> {
        self.send_batch_until(records, None)
            .map_err(WaitError::forever)
            .map(|_| ())
    }

    /// As [`send_batch`](Self::send_batch), but gives up once `timeout` has passed; returns how
    /// many records were sent (all of them, or an error).
    ///
    /// # Errors
    /// [`SendTimeoutError::Timeout`](sp_core::SendTimeoutError::Timeout) if space for the next
    /// record did not appear in time (the records before it were sent and published); otherwise
    /// as [`reserve`](Self::reserve).
    pub fn send_batch_timeout<B: AsRef<[u8]>>(
        &mut self,
        records: &[B],
        timeout: Duration,
    ) -> Result<usize, SendTimeoutError> {
        self.send_batch_until(records, deadline_after(timeout))
            .map_err(WaitError::into_send)
    }

    fn send_batch_until<B: AsRef<[u8]>>(
        &mut self,
        records: &[B],
        deadline: Option<Instant>,
    ) -> Result<usize, WaitError> {
        for record in records {
            let bytes = record.as_ref();
            let claimed = match self.try_claim(bytes.len()) {
                Ok(true) => Ok(()),
                Ok(false) => self.wait_claim_slow(bytes.len(), Limit::Until(deadline)),
                Err(err) => Err(err.into()),
            };
            if let Err(err) = claimed {
                self.publish()?;
                return Err(err);
            }
            self.write_claimed(bytes);
        }
        self.publish()?;
        Ok(records.len())
    }

    /// Wakes the consumer, if it is parked, for records committed with
    /// [`WriteGrant::commit_deferred`].
    ///
    /// # Errors
    /// [`Error::PeerGone`] if a wake-up could not be delivered because the peer is gone.
    pub fn flush(&mut self) -> Result<()> {
        self.publish()
    }

    /// `poll(2)` with a zero timeout: whether the consumer's process has gone.
    ///
    /// # Errors
    /// Only if `poll` fails.
    pub fn peer_gone(&self) -> Result<bool> {
        Ok(self.peer_gone || self.wake.hung_up()?)
    }

    /// The data area's size in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// The largest payload one record can carry.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// This side's counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// The idle strategy this side waits by (for the async waits of `crate::tokio`).
    #[cfg(feature = "tokio")]
    pub(crate) fn idle_strategy(&self) -> IdleStrategy {
        self.idle
    }

    #[inline]
    fn grant(&mut self) -> WriteGrant<'_> {
        WriteGrant {
            producer: self,
            kind: 0,
        }
    }

    /// What a non-blocking call reports when the ring has no room: `Full`, or `PeerGone` once a
    /// wait has seen the consumer's process hang up (nobody will make room).
    fn full(&self) -> TrySendError {
        if self.peer_gone {
            TrySendError::Broken(Error::PeerGone)
        } else {
            TrySendError::Full
        }
    }

    /// Finds space for `n_bytes` of payload at the tail, reloading the head only if the cache
    /// says full; on success `claimed` is that space.
    ///
    /// The claim is made here, inline, and never comes back from the out-of-line slow path,
    /// which only makes room: returned through memory it would be reloaded with loads wider
    /// than the stores that wrote it, and such a load waits for every earlier store to drain.
    #[inline]
    pub(super) fn try_claim(&mut self, n_bytes: usize) -> Result<bool> {
        if n_bytes > self.max_payload {
            return Err(Error::TooLarge {
                len: n_bytes,
                max: self.max_payload,
            });
        }
        let need = layout::record_size(n_bytes) as u64;
        if self.tail + need > self.fast_end && !self.make_room(need)? {
            return Ok(false);
        }
        // Ending by `fast_end`, the record needs no padding, and it and its next slot are free.
        let header = self.shared.data.word_at(self.tail);
        let Some(payload) = self.shared.data.payload(header, n_bytes) else {
            // Unreachable: the record ends by `fast_end`, inside the tail's lap.
            return Ok(false);
        };
        self.shared.data.prefetch_for_write(payload);
        self.claimed = payload;
        Ok(true)
    }

    /// Makes room for a record of `need` bytes (header included) at the tail: reloads the head
    /// if the cache says full, and if the record would straddle the end of the data area,
    /// commits a padding record to the end so that the tail moves to offset 0. Returns whether
    /// the record now ends by `fast_end`, which it recomputes.
    #[inline(never)]
    fn make_room(&mut self, need: u64) -> Result<bool> {
        let to_end = self.capacity - (self.tail & (self.capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        // The 8 bytes after the record must be free too: `finish` zeroes them (the next header).
        let total = pad + need + HEADER_LEN as u64;
        if self.capacity - (self.tail - self.head_cache) < total {
            self.reload_head()?;
            if self.capacity - (self.tail - self.head_cache) < total {
                return Ok(false);
            }
        }
        if pad > 0 {
            self.commit_padding(pad);
        }
        let lap_end = (self.tail | (self.capacity - 1)) + 1;
        self.fast_end = lap_end.min(self.head_cache + self.capacity - HEADER_LEN as u64);
        Ok(self.tail + need <= self.fast_end)
    }

    /// Fills the rest of the data area with a padding record: zeroes the word at offset 0 (the
    /// tail's next slot, where the next record will go), then stores the padding header with
    /// Release, then moves the tail to offset 0. The space is free (`make_room` checked it).
    fn commit_padding(&mut self, pad: u64) {
        let data = &self.shared.data;
        data.store_word(data.word_at(self.tail + pad), 0);
        let header = layout::encode_header((pad - HEADER_LEN as u64) as u32, PADDING);
        // SYNC: (A) Release pairs with the consumer's Acquire load of this header: the zeroed
        // word at offset 0 happens before it, so a consumer that skips the padding finds zero or
        // a header stored later there, never one from the previous lap.
        data.store_header(data.word_at(self.tail), header);
        self.tail += pad;
    }

    fn reload_head(&mut self) -> Result<()> {
        // SYNC: (D) Acquire pairs with the consumer's Release store of the head in
        // `Consumer::publish`: its reads of the released bytes happen before we overwrite them.
        let head = self.shared.ctrl().head.word.load(Ordering::Acquire);
        if head < self.head_cache {
            return Err(corrupt(Corruption::HeadBackwards, head));
        }
        if head > self.tail {
            return Err(corrupt(Corruption::HeadPastTail, head));
        }
        if !head.is_multiple_of(layout::ALIGN as u64) {
            return Err(corrupt(Corruption::HeadUnaligned, head));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Publishes the record: zeroes the next header slot, then stores the record's header with
    /// Release; advances the private tail.
    #[inline]
    fn finish(&mut self, used: usize, kind: u32) {
        let payload = self.claimed.truncated(used);
        let size = layout::record_size(payload.len()) as u64;
        let data = &self.shared.data;
        // The claim left the record and the slot after it inside free space (`try_claim`).
        debug_assert!(self.tail + size + HEADER_LEN as u64 <= self.head_cache + self.capacity);
        let header = payload.header();
        data.store_word(data.word_at(self.tail + size), 0);
        // SYNC: (A) Release pairs with the consumer's Acquire load of this header in
        // `Consumer::poll_record`: the payload and the zeroed next slot written above happen
        // before its reads of them.
        data.store_header(header, layout::encode_header(payload.len() as u32, kind));
        self.tail += size;
        self.stats.records += 1;
        self.stats.bytes += payload.len() as u64;
    }

    #[inline]
    fn write_claimed(&mut self, bytes: &[u8]) {
        self.shared.data.copy_in(self.claimed, bytes);
        self.finish(bytes.len(), 0);
    }

    /// After records were committed (each already visible through its header): wakes the
    /// consumer if it is parked.
    #[inline]
    pub(super) fn publish(&mut self) -> Result<()> {
        if self.tail == self.tail_announced {
            return Ok(());
        }
        self.announce()
    }

    /// The wake-up check for every record committed since the last one (the caller knows there
    /// is at least one).
    #[inline]
    fn announce(&mut self) -> Result<()> {
        self.tail_announced = self.tail;
        self.stats.publications += 1;
        let ctrl = self.shared.ctrl();
        wake_if_waiting(&ctrl.consumer_waiting.word, &self.wake, &mut self.stats)
    }

    /// Space now, or wait for it. The first attempt is inlined into the caller so that the claim
    /// stays in registers: returned through memory from an out-of-line call, it was read back
    /// with a load wider than the stores that wrote it, and that load waited for every earlier
    /// store (the record bytes, still waiting for their cache lines) to drain.
    #[inline]
    fn wait_claim(&mut self, n_bytes: usize, limit: Limit) -> Result<(), WaitError> {
        if self.try_claim(n_bytes)? {
            Ok(())
        } else {
            self.wait_claim_slow(n_bytes, limit)
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_claim_slow(&mut self, n_bytes: usize, limit: Limit) -> Result<(), WaitError> {
        wait_for(
            &mut ClaimWait {
                producer: self,
                n_bytes,
            },
            limit,
        )
    }

    /// The header slot at the tail, which the producer keeps zero (for tests).
    #[cfg(test)]
    pub(super) fn tail_slot(&self) -> super::area::WordAt {
        self.shared.data.word_at(self.tail)
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        // Deferred commits become visible; a gone peer cannot be told anyway.
        let _ = self.publish();
    }
}

impl WriteGrant<'_> {
    /// The reserved payload length.
    pub fn len(&self) -> usize {
        self.producer.claimed.len()
    }

    /// Whether zero bytes were reserved.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the record's kind (default 0), an application tag the consumer sees.
    ///
    /// # Errors
    /// [`Error::ReservedKind`] for `u32::MAX`, which marks padding.
    pub fn set_kind(&mut self, kind: u32) -> Result<()> {
        if kind == PADDING {
            return Err(Error::ReservedKind);
        }
        self.kind = kind;
        Ok(())
    }

    /// A raw pointer to the first payload byte; `len()` bytes are writable.
    #[cfg(not(sp_loom))]
    #[inline]
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.producer
            .shared
            .data
            .payload_mut(self.producer.claimed)
            .as_mut_ptr()
    }

    /// Commits the first `used` bytes (at most [`len`](Self::len); more is clamped) as one record
    /// and publishes it.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the consumer is parked and its process is gone (the record was
    /// committed, but nobody will read it).
    #[inline]
    pub fn commit(self, used: usize) -> Result<()> {
        let Self { producer, kind } = self;
        producer.finish(used, kind);
        producer.announce()
    }

    /// Commits like [`commit`](Self::commit) but skips the check for a parked consumer: a
    /// spinning consumer sees the record at once, a parked one is woken at the next publishing
    /// call ([`Producer::flush`], `commit`, `send`, or before any wait). Use it to commit a burst
    /// and wake once.
    #[inline]
    pub fn commit_deferred(self, used: usize) {
        let Self { producer, kind } = self;
        producer.finish(used, kind);
    }
}

#[cfg(not(sp_loom))]
impl std::ops::Deref for WriteGrant<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        let producer = &*self.producer;
        producer.shared.data.payload_ref(producer.claimed)
    }
}

#[cfg(not(sp_loom))]
impl std::ops::DerefMut for WriteGrant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        let producer = &mut *self.producer;
        producer.shared.data.payload_mut(producer.claimed)
    }
}
