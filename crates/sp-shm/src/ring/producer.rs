//! The writing side: claiming space, committing records by their header word, waking a parked
//! consumer.

use std::time::{Duration, Instant};

use super::area::{Payload, ReadWrite, Shared};
use super::wait::{ClaimWait, Limit, wait_for, wake_if_waiting};
use super::{Stats, corrupt};
use crate::error::{Error, Result};
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
    claim: Claim,
    kind: u32,
}

/// Space found for a record: padding to write first (0 or the bytes to the end), and the
/// record's payload (its header offset and the length reserved).
#[derive(Debug, Clone, Copy)]
pub(super) struct Claim {
    pad: u64,
    payload: Payload,
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
    #[inline]
    pub fn reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>> {
        let claim = self.wait_claim(n_bytes, Limit::Forever)?;
        Ok(self.grant(claim))
    }

    /// Reserves space if there is enough now.
    ///
    /// # Errors
    /// [`Error::Full`] when there is not; otherwise as [`reserve`](Self::reserve).
    #[inline]
    pub fn try_reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>> {
        match self.try_claim(n_bytes)? {
            Some(claim) => Ok(self.grant(claim)),
            None => Err(self.full()),
        }
    }

    /// Reserves space, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`reserve`](Self::reserve).
    #[inline]
    pub fn reserve_timeout(&mut self, n_bytes: usize, timeout: Duration) -> Result<WriteGrant<'_>> {
        let claim = self.wait_claim(n_bytes, Limit::After(timeout))?;
        Ok(self.grant(claim))
    }

    /// Copies `bytes` into one record (kind 0) and publishes it, waiting for space.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    #[inline]
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let claim = self.wait_claim(bytes.len(), Limit::Forever)?;
        self.write_claim(claim, bytes);
        self.publish()
    }

    /// Sends if there is space now.
    ///
    /// # Errors
    /// [`Error::Full`]; otherwise as [`reserve`](Self::reserve).
    #[inline]
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<()> {
        match self.try_claim(bytes.len())? {
            Some(claim) => {
                self.write_claim(claim, bytes);
                self.publish()
            }
            None => Err(self.full()),
        }
    }

    /// Sends, waiting at most `timeout` for space.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`reserve`](Self::reserve).
    #[inline]
    pub fn send_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let claim = self.wait_claim(bytes.len(), Limit::After(timeout))?;
        self.write_claim(claim, bytes);
        self.publish()
    }

    /// Sends as many of `records` as fit now, checking for a parked consumer once; returns how
    /// many.
    ///
    /// # Errors
    /// [`Error::Full`] if not even the first fits; otherwise as [`reserve`](Self::reserve).
    pub fn try_send_batch<B: AsRef<[u8]>>(&mut self, records: &[B]) -> Result<usize> {
        let mut n_sent = 0;
        for record in records {
            let bytes = record.as_ref();
            match self.try_claim(bytes.len()) {
                Ok(Some(claim)) => self.write_claim(claim, bytes),
                Ok(None) => break,
                Err(err) => {
                    self.publish()?;
                    return Err(err);
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
        self.send_batch_until(records, None).map(|_| ())
    }

    /// As [`send_batch`](Self::send_batch), but gives up once `timeout` has passed; returns how
    /// many records were sent (all of them, or an error).
    ///
    /// # Errors
    /// [`Error::TimedOut`] if space for the next record did not appear in time (the records
    /// before it were sent and published); otherwise as [`reserve`](Self::reserve).
    pub fn send_batch_timeout<B: AsRef<[u8]>>(
        &mut self,
        records: &[B],
        timeout: Duration,
    ) -> Result<usize> {
        self.send_batch_until(records, deadline_after(timeout))
    }

    fn send_batch_until<B: AsRef<[u8]>>(
        &mut self,
        records: &[B],
        deadline: Option<Instant>,
    ) -> Result<usize> {
        for record in records {
            let bytes = record.as_ref();
            let claim = match self.try_claim(bytes.len()) {
                Ok(Some(claim)) => claim,
                Ok(None) => match self.wait_claim_slow(bytes.len(), Limit::Until(deadline)) {
                    Ok(claim) => claim,
                    Err(err) => {
                        self.publish()?;
                        return Err(err);
                    }
                },
                Err(err) => {
                    self.publish()?;
                    return Err(err);
                }
            };
            self.write_claim(claim, bytes);
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

    #[inline]
    fn grant(&mut self, claim: Claim) -> WriteGrant<'_> {
        WriteGrant {
            producer: self,
            claim,
            kind: 0,
        }
    }

    /// What a non-blocking call reports when the ring has no room: `Full`, or `PeerGone` once a
    /// wait has seen the consumer's process hang up (nobody will make room).
    fn full(&self) -> Error {
        if self.peer_gone {
            Error::PeerGone
        } else {
            Error::Full
        }
    }

    /// Finds space for `n_bytes` of payload, reloading the head only if the cache says full.
    #[inline]
    pub(super) fn try_claim(&mut self, n_bytes: usize) -> Result<Option<Claim>> {
        if n_bytes > self.max_payload {
            return Err(Error::TooLarge {
                n_bytes,
                max: self.max_payload,
            });
        }
        let need = layout::record_size(n_bytes) as u64;
        let to_end = self.capacity - (self.tail & (self.capacity - 1));
        let pad = if need > to_end { to_end } else { 0 };
        // The 8 bytes after the record must be free too: `finish` zeroes them (the next header).
        let total = pad + need + HEADER_LEN as u64;
        if self.capacity - (self.tail - self.head_cache) < total {
            self.reload_head()?;
            if self.capacity - (self.tail - self.head_cache) < total {
                return Ok(None);
            }
        }
        // After padding the record starts at offset 0 (position `tail + pad`).
        let header = self.shared.data.word_at(self.tail + pad);
        // Always fits: a record of at most `max_payload <= capacity / 4` bytes fits whole before
        // the end (`need <= to_end`) or at offset 0 after padding.
        let Some(payload) = self.shared.data.payload(header, n_bytes) else {
            return Ok(None);
        };
        Ok(Some(Claim { pad, payload }))
    }

    fn reload_head(&mut self) -> Result<()> {
        // SYNC: (D) Acquire pairs with the consumer's Release store of the head in
        // `Consumer::publish`: its reads of the released bytes happen before we overwrite them.
        let head = self.shared.ctrl().head.word.load(Ordering::Acquire);
        if head < self.head_cache {
            return Err(corrupt("head moved backwards", head));
        }
        if head > self.tail || !head.is_multiple_of(layout::ALIGN as u64) {
            return Err(corrupt("head beyond the committed tail or unaligned", head));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Publishes the record: zeroes the next header slot, then stores the record's header, then
    /// the padding's (if any), each header with Release; advances the private tail.
    #[inline]
    fn finish(&mut self, claim: Claim, used: usize, kind: u32) {
        let payload = claim.payload.truncated(used);
        let size = layout::record_size(payload.len()) as u64;
        let data = &self.shared.data;
        // The claim left the record and the slot after it inside free space (`try_claim`).
        debug_assert!(
            self.tail + claim.pad + size + HEADER_LEN as u64 <= self.head_cache + self.capacity
        );
        let header = payload.header();
        let next = data.word_at((header.offset() as u64) + size);
        data.store_word(next, 0);
        // SYNC: (A) Release pairs with the consumer's Acquire load of this header in
        // `Consumer::poll_record`: the payload and the zeroed next slot written above happen
        // before its reads of them.
        data.store_header(header, layout::encode_header(payload.len() as u32, kind));
        if claim.pad > 0 {
            let pad_header = layout::encode_header((claim.pad - HEADER_LEN as u64) as u32, PADDING);
            // SYNC: (A) as above, for the padding: the consumer reaches the record at offset 0
            // only through it, so the record's header is stored first.
            data.store_header(data.word_at(self.tail), pad_header);
        }
        self.tail += claim.pad + size;
        self.stats.records += 1;
        self.stats.bytes += payload.len() as u64;
    }

    #[inline]
    fn write_claim(&mut self, claim: Claim, bytes: &[u8]) {
        self.shared.data.copy_in(claim.payload, bytes);
        self.finish(claim, bytes.len(), 0);
    }

    /// After records were committed (each already visible through its header): wakes the
    /// consumer if it is parked.
    #[inline]
    pub(super) fn publish(&mut self) -> Result<()> {
        if self.tail == self.tail_announced {
            return Ok(());
        }
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
    fn wait_claim(&mut self, n_bytes: usize, limit: Limit) -> Result<Claim> {
        match self.try_claim(n_bytes)? {
            Some(claim) => Ok(claim),
            None => self.wait_claim_slow(n_bytes, limit),
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_claim_slow(&mut self, n_bytes: usize, limit: Limit) -> Result<Claim> {
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
        self.claim.payload.len()
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
            .payload_mut(self.claim.payload)
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
        let Self {
            producer,
            claim,
            kind,
        } = self;
        producer.finish(claim, used, kind);
        producer.publish()
    }

    /// Commits like [`commit`](Self::commit) but skips the check for a parked consumer: a
    /// spinning consumer sees the record at once, a parked one is woken at the next publishing
    /// call ([`Producer::flush`], `commit`, `send`, or before any wait). Use it to commit a burst
    /// and wake once.
    #[inline]
    pub fn commit_deferred(self, used: usize) {
        let Self {
            producer,
            claim,
            kind,
        } = self;
        producer.finish(claim, used, kind);
    }
}

#[cfg(not(sp_loom))]
impl std::ops::Deref for WriteGrant<'_> {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.producer.shared.data.payload_ref(self.claim.payload)
    }
}

#[cfg(not(sp_loom))]
impl std::ops::DerefMut for WriteGrant<'_> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.producer.shared.data.payload_mut(self.claim.payload)
    }
}
