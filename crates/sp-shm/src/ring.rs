//! The single-producer single-consumer ring of variable-length records in shared memory.
//!
//! # Algorithm
//!
//! The data area is `capacity` bytes, a power of two. Both sides count in free-running `u64` byte
//! positions: the producer's *tail* (bytes ever committed) and the consumer's *head* (bytes ever
//! released); a byte position maps to offset `pos & (capacity - 1)`. The ring is empty when
//! `head == tail` and holds `tail - head <= capacity` bytes (Linux `io_uring` and `perf_event`
//! rings; the positions never wrap in practice: 2^64 bytes at 100 GB/s is 5 years).
//!
//! Each side keeps its own position in private memory and only *publishes* it to the control
//! block; it never reads it back from there (io_uring's `cached_sq_head`). Each side also caches
//! the other's position and reloads it (Acquire) only when the cache says full or empty (aeron's
//! `head_cache_position`, the disruptor's `cachedValue`), so at steady state a side touches the
//! other's cache line once per lap, not once per record.
//!
//! Records are framed as in aeron's `aeron_rb.h`: an 8-byte header `{len: u32, kind: u32}` then
//! the payload, padded to 8 bytes. A record never straddles the end of the data area: if it would,
//! the producer writes a padding record (kind `u32::MAX`) to the end and places the record at
//! offset 0. The largest payload is fixed at the handshake (at most capacity / 4).
//!
//! Writes are zero-copy in the style of bbqueue's framed grants and aeron's `try_claim`:
//! [`Producer::reserve`] returns a [`WriteGrant`] over free space in the producer's own mapping;
//! [`WriteGrant::commit`] writes the header and publishes the tail (Release), so the consumer sees
//! the record whole or not at all; dropping the grant abandons it. Reads are zero-copy too:
//! [`Consumer::read`] returns a [`ReadGrant`] that borrows the consumer (one grant at a time,
//! checked by the compiler) and releases the record when dropped.
//!
//! # Ordering (each pair is tagged `SYNC:` in the code)
//!
//! (A) The producer writes header and payload, then stores the tail with Release; (B) the consumer
//! loads the tail with Acquire, then reads the record. (C) The consumer reads the record, then
//! stores its head with Release; (D) the producer loads the head with Acquire before it writes
//! over those bytes. This is the (A)-(D) scheme of Linux `kernel/events/ring_buffer.c`.
//!
//! # Waiting
//!
//! A side that finds the ring empty (or full) first publishes its own position, then spins,
//! yields and finally parks ([`IdleStrategy`]). To park it sets its *waiting* flag, issues a full
//! fence, and re-checks the other position; the other side, after publishing, issues a fence and
//! sends a wake-up byte only if `waiting.swap(false)` was set. The two fences make this a Dekker
//! handshake: at least one side sees the other's store, so no wake-up is lost (io_uring's
//! `IORING_SQ_NEED_WAKEUP` comment; the disruptor's `LiteBlockingWaitStrategy`).
//! At saturation nobody parks, so no system call is made per record.
//!
//! The fences are asymmetric (`sync::light_fence`, `sync::heavy_fence`): the publishing side,
//! which runs once per record, issues only a compiler barrier, and the parking side, which is on
//! its way to a system call anyway, issues `fence(SeqCst)` plus
//! `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which runs a full barrier on every CPU running
//! the registered peer. Where `membarrier` is unavailable both fences are `fence(SeqCst)` (and a
//! parked side whose `membarrier` fails re-checks every millisecond). The loom models check the
//! symmetric form; the asymmetric one is the `membarrier(2)` pattern of liburcu.
//!
//! # Untrusted peer
//!
//! Every index and header read from shared memory is loaded once into a local, validated, and
//! only the local is used (io_uring's `READ_ONCE`): a position must not move backwards, the ring
//! must not hold more than `capacity` bytes, a length must not pass the end of the data area or
//! the published tail, and a padding record must reach exactly to the end. A bad value returns
//! [`Error::Corrupt`]; no value makes this code panic or access memory outside its mappings. The
//! consumer maps the data area read-only (the producer sealed it with `F_SEAL_FUTURE_WRITE`), so
//! the only memory both sides can write is the control block, and it holds atomics only.

#![allow(unsafe_code)] // Dereferences the mapped control block and indexes the mapped data area.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

#[cfg(all(test, not(sp_loom)))]
mod tests;

use crate::error::{Error, Result};
use crate::idle::{Backoff, IdleStrategy, Step};
use crate::layout::{self, ControlBlock, HEADER_LEN, PADDING};
use crate::sync::{AtomicU64, DataPtr, Ordering, heavy_fence, light_fence};
use crate::wake::{WakeSocket, Woken, deadline_after};

/// The writing side of a ring.
///
/// `Send`, not `Sync`: one thread at a time writes. All blocking calls return
/// [`Error::PeerGone`] promptly when the consumer's process dies.
#[derive(Debug)]
pub struct Producer {
    shared: Shared,
    capacity: u64,
    max_payload: usize,
    /// Authoritative tail: bytes committed, published or not.
    tail: u64,
    tail_published: u64,
    /// Last head loaded from the control block; never ahead of the real head.
    head_cache: u64,
    wake: WakeSocket,
    idle: IdleStrategy,
    stats: Stats,
}

/// The reading side of a ring.
///
/// `Send`, not `Sync`. After the producer's process dies the consumer still delivers every
/// record the producer committed, then reports [`Error::PeerGone`].
#[derive(Debug)]
pub struct Consumer {
    shared: Shared,
    capacity: u64,
    max_payload: usize,
    /// Authoritative head: bytes released, published or not.
    head: u64,
    head_published: u64,
    /// Last tail loaded from the control block and validated.
    tail_cache: u64,
    publish_every: u64,
    wake: WakeSocket,
    idle: IdleStrategy,
    stats: Stats,
    peer_gone: bool,
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

/// One committed record, borrowed from the ring until dropped (which releases it).
///
/// The bytes live in the producer's memory. A well-behaved producer never touches them while
/// this grant exists, but a hostile one can: copy-out methods ([`copy_to_slice`](Self::copy_to_slice),
/// [`to_vec`](Self::to_vec)) are always defined behaviour and stay inside the record, though the
/// copy may then be torn. A `&[u8]` view is available only through the `unsafe`
/// [`as_slice_trusted`](Self::as_slice_trusted), whose contract is that the peer is trusted.
/// See `docs/protocol.md`, "Trust model".
#[derive(Debug)]
pub struct ReadGrant<'a> {
    consumer: &'a mut Consumer,
    rec: Record,
}

/// Counters of one side, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Records committed (producer) or released (consumer).
    pub records: u64,
    /// Payload bytes in those records.
    pub bytes: u64,
    /// Times this side published its position.
    pub publications: u64,
    /// Wake-up bytes this side sent to the peer.
    pub wakes_sent: u64,
    /// Times this side parked in `poll`.
    pub parks: u64,
}

/// The mappings behind one ring: the control block and the data area.
#[derive(Debug)]
pub(crate) struct Shared {
    ctrl: NonNull<ControlBlock>,
    data: DataPtr,
    _keep: Keep,
}

#[cfg(not(sp_loom))]
type Keep = (memmap2::MmapRaw, memmap2::MmapRaw);
#[cfg(sp_loom)]
type Keep = std::sync::Arc<ControlBlock>;

/// Space found for a record: padding to write first (0 or the bytes to the end), the record's
/// offset, and the payload length reserved.
#[derive(Debug, Clone, Copy)]
struct Claim {
    pad: u64,
    offset: usize,
    n_bytes: usize,
}

/// A validated record: offset of its header, payload length, kind, and slot size.
#[derive(Debug, Clone, Copy)]
struct Record {
    offset: usize,
    len: usize,
    kind: u32,
    size: u64,
}

// SAFETY: `Shared` owns (through `_keep`) the mappings its pointers refer to; moving it to
// another thread moves the ownership with it. The control block holds atomics only.
unsafe impl Send for Shared {}

impl Shared {
    /// # Safety
    /// `ctrl` points to a control block that `keep` keeps alive, aligned to 128 bytes, and `data`
    /// to a data area of `capacity` bytes that `keep` keeps alive.
    pub(crate) unsafe fn new(ctrl: NonNull<ControlBlock>, data: DataPtr, keep: Keep) -> Self {
        Self {
            ctrl,
            data,
            _keep: keep,
        }
    }

    fn ctrl(&self) -> &ControlBlock {
        // SAFETY: `ctrl` points into a live mapping (or allocation) owned by `self._keep`, of at
        // least `size_of::<ControlBlock>()` bytes and 128-byte aligned (a page start). The block
        // consists of atomics only, so a shared reference stays valid while the peer writes it.
        unsafe { self.ctrl.as_ref() }
    }
}

impl Producer {
    pub(crate) fn from_parts(
        shared: Shared,
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
            tail_published: 0,
            head_cache: 0,
            wake,
            idle,
            stats: Stats::default(),
        }
    }

    /// Reserves space for a record of up to `n_bytes` payload, waiting as long as it takes.
    ///
    /// # Errors
    /// [`Error::TooLarge`] above [`max_payload`](Self::max_payload); [`Error::PeerGone`] if the
    /// consumer's process is gone while this waits; [`Error::Corrupt`] for a bad head.
    pub fn reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>> {
        let claim = self.wait_claim(n_bytes, Limit::Forever)?;
        Ok(self.grant(claim))
    }

    /// Reserves space if there is enough now.
    ///
    /// # Errors
    /// [`Error::Full`] when there is not; otherwise as [`reserve`](Self::reserve).
    pub fn try_reserve(&mut self, n_bytes: usize) -> Result<WriteGrant<'_>> {
        match self.try_claim(n_bytes)? {
            Some(claim) => Ok(self.grant(claim)),
            None => Err(Error::Full),
        }
    }

    /// Reserves space, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`reserve`](Self::reserve).
    pub fn reserve_timeout(&mut self, n_bytes: usize, timeout: Duration) -> Result<WriteGrant<'_>> {
        let claim = self.wait_claim(n_bytes, Limit::After(timeout))?;
        Ok(self.grant(claim))
    }

    /// Copies `bytes` into one record (kind 0) and publishes it, waiting for space.
    ///
    /// # Errors
    /// As [`reserve`](Self::reserve).
    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let claim = self.wait_claim(bytes.len(), Limit::Forever)?;
        self.write_claim(claim, bytes);
        self.publish()
    }

    /// Sends if there is space now.
    ///
    /// # Errors
    /// [`Error::Full`]; otherwise as [`reserve`](Self::reserve).
    pub fn try_send(&mut self, bytes: &[u8]) -> Result<()> {
        match self.try_claim(bytes.len())? {
            Some(claim) => {
                self.write_claim(claim, bytes);
                self.publish()
            }
            None => Err(Error::Full),
        }
    }

    /// Sends, waiting at most `timeout` for space.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`reserve`](Self::reserve).
    pub fn send_timeout(&mut self, bytes: &[u8], timeout: Duration) -> Result<()> {
        let claim = self.wait_claim(bytes.len(), Limit::After(timeout))?;
        self.write_claim(claim, bytes);
        self.publish()
    }

    /// Sends as many of `records` as fit now, publishing the tail once; returns how many.
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
            return Err(Error::Full);
        }
        Ok(n_sent)
    }

    /// Sends all of `records`, publishing the tail once per run of records that fit (and before
    /// every wait).
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
                Ok(None) => match self.wait_claim(bytes.len(), Limit::Until(deadline)) {
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

    /// Publishes records committed with [`WriteGrant::commit_deferred`].
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
        self.wake.hung_up()
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

    fn grant(&mut self, claim: Claim) -> WriteGrant<'_> {
        WriteGrant {
            producer: self,
            claim,
            kind: 0,
        }
    }

    /// Finds space for `n_bytes` of payload, reloading the head only if the cache says full.
    fn try_claim(&mut self, n_bytes: usize) -> Result<Option<Claim>> {
        if n_bytes > self.max_payload {
            return Err(Error::TooLarge {
                n_bytes,
                max: self.max_payload,
            });
        }
        let need = layout::record_size(n_bytes) as u64;
        let offset = self.tail & (self.capacity - 1);
        let to_end = self.capacity - offset;
        let pad = if need > to_end { to_end } else { 0 };
        let total = pad + need;
        if self.capacity - (self.tail - self.head_cache) < total {
            self.reload_head()?;
            if self.capacity - (self.tail - self.head_cache) < total {
                return Ok(None);
            }
        }
        let offset = if pad > 0 { 0 } else { offset as usize };
        Ok(Some(Claim {
            pad,
            offset,
            n_bytes,
        }))
    }

    fn reload_head(&mut self) -> Result<()> {
        // SYNC: (D) Acquire pairs with the consumer's Release store of the head in
        // `Consumer::publish`: its reads of the released bytes happen before we overwrite them.
        let head = self.shared.ctrl().head.word.load(Ordering::Acquire);
        if head < self.head_cache {
            return Err(corrupt("head moved backwards", head));
        }
        if head > self.tail_published || !head.is_multiple_of(layout::ALIGN as u64) {
            return Err(corrupt("head beyond the published tail or unaligned", head));
        }
        self.head_cache = head;
        Ok(())
    }

    /// Writes padding (if any) and the record header, and advances the private tail.
    fn finish(&mut self, claim: Claim, used: usize, kind: u32) {
        let used = used.min(claim.n_bytes);
        let data = &self.shared.data;
        if claim.pad > 0 {
            let pad_at = (self.tail & (self.capacity - 1)) as usize;
            let header = layout::encode_header((claim.pad - HEADER_LEN as u64) as u32, PADDING);
            // SAFETY: `pad_at` is 8-aligned and `pad_at + 8 <= capacity` (a position is always
            // 8-aligned, so at least 8 bytes remain to the end); the space is free by `try_claim`.
            unsafe { data.store_u64(pad_at, header) };
        }
        // SAFETY: `claim.offset` is 8-aligned with a free slot of `record_size(n_bytes)` bytes
        // before the end of the data area (`try_claim`).
        unsafe {
            data.store_u64(claim.offset, layout::encode_header(used as u32, kind));
        }
        self.tail += claim.pad + layout::record_size(used) as u64;
        self.stats.records += 1;
        self.stats.bytes += used as u64;
    }

    fn write_claim(&mut self, claim: Claim, bytes: &[u8]) {
        // SAFETY: the payload starts 8 bytes after the header and `bytes.len() == n_bytes` fits
        // the claimed slot; the data area is this producer's writable mapping.
        unsafe { self.shared.data.copy_in(claim.offset + HEADER_LEN, bytes) };
        self.finish(claim, bytes.len(), 0);
    }

    /// Publishes the tail and wakes the consumer if it is parked.
    fn publish(&mut self) -> Result<()> {
        if self.tail == self.tail_published {
            return Ok(());
        }
        let ctrl = self.shared.ctrl();
        // SYNC: (A) Release pairs with the consumer's Acquire load of the tail in
        // `Consumer::reload_tail`: the header and payload writes above happen before its reads.
        ctrl.tail.word.store(self.tail, Ordering::Release);
        self.tail_published = self.tail;
        self.stats.publications += 1;
        wake_if_waiting(&ctrl.consumer_waiting.word, &self.wake, &mut self.stats)
    }

    fn wait_claim(&mut self, n_bytes: usize, limit: Limit) -> Result<Claim> {
        wait_for(
            &mut ClaimWait {
                producer: self,
                n_bytes,
            },
            limit,
        )
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
        self.claim.n_bytes
    }

    /// Whether zero bytes were reserved.
    pub fn is_empty(&self) -> bool {
        self.claim.n_bytes == 0
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

    #[cfg(not(sp_loom))]
    /// A raw pointer to the first payload byte; `len()` bytes are writable.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.producer
            .shared
            .data
            .ptr_at(self.claim.offset + HEADER_LEN)
    }

    /// Commits the first `used` bytes (at most [`len`](Self::len); more is clamped) as one record
    /// and publishes it.
    ///
    /// # Errors
    /// [`Error::PeerGone`] if the consumer is parked and its process is gone (the record was
    /// committed, but nobody will read it).
    pub fn commit(self, used: usize) -> Result<()> {
        let Self {
            producer,
            claim,
            kind,
        } = self;
        producer.finish(claim, used, kind);
        producer.publish()
    }

    /// Commits like [`commit`](Self::commit) but does not publish: the record becomes visible at
    /// the next publishing call ([`Producer::flush`], `commit`, `send`, or before any wait).
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

    fn deref(&self) -> &[u8] {
        let ptr = self
            .producer
            .shared
            .data
            .ptr_at(self.claim.offset + HEADER_LEN);
        // SAFETY: the slot is inside the producer's mapping (`try_claim`); only this producer can
        // write the data memfd (`F_SEAL_FUTURE_WRITE`) and the grant borrows it mutably, so no
        // other access to the slot exists in this process while the reference lives.
        unsafe { std::slice::from_raw_parts(ptr, self.claim.n_bytes) }
    }
}

#[cfg(not(sp_loom))]
impl std::ops::DerefMut for WriteGrant<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        let ptr = self.as_mut_ptr();
        // SAFETY: as in `deref`; the mapping is writable and the grant is borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(ptr, self.claim.n_bytes) }
    }
}

impl Consumer {
    pub(crate) fn from_parts(
        shared: Shared,
        capacity: u64,
        max_payload: usize,
        wake: WakeSocket,
        idle: IdleStrategy,
        publish_every: usize,
    ) -> Self {
        crate::sync::register_asymmetric_fences();
        Self {
            shared,
            capacity,
            max_payload,
            head: 0,
            head_published: 0,
            tail_cache: 0,
            publish_every: publish_every as u64,
            wake,
            idle,
            stats: Stats::default(),
            peer_gone: false,
        }
    }

    /// Waits for the next record and borrows it in place.
    ///
    /// # Errors
    /// [`Error::PeerGone`] once the producer's process is gone and every record it committed has
    /// been delivered; [`Error::Corrupt`] for a bad tail or record header.
    pub fn read(&mut self) -> Result<ReadGrant<'_>> {
        let rec = self.wait_record(Limit::Forever)?;
        Ok(ReadGrant {
            consumer: self,
            rec,
        })
    }

    /// Borrows the next record if one is committed.
    ///
    /// # Errors
    /// [`Error::Empty`] when none is (or [`Error::PeerGone`] if a wait has already seen the
    /// producer go); otherwise as [`read`](Self::read).
    pub fn try_read(&mut self) -> Result<ReadGrant<'_>> {
        match self.poll_record()? {
            Some(rec) => Ok(ReadGrant {
                consumer: self,
                rec,
            }),
            None => {
                self.publish()?;
                Err(if self.peer_gone {
                    Error::PeerGone
                } else {
                    Error::Empty
                })
            }
        }
    }

    /// Waits at most `timeout` for the next record.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`read`](Self::read).
    pub fn read_timeout(&mut self, timeout: Duration) -> Result<ReadGrant<'_>> {
        let rec = self.wait_record(Limit::After(timeout))?;
        Ok(ReadGrant {
            consumer: self,
            rec,
        })
    }

    /// Waits for the next record and copies its payload into `buf` (replacing its contents);
    /// returns the record's kind.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u32> {
        let grant = self.read()?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies the next record into `buf` if one is committed; returns its kind.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read).
    pub fn try_recv_into(&mut self, buf: &mut Vec<u8>) -> Result<u32> {
        let grant = self.try_read()?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies the next record into `buf`, waiting at most `timeout`; returns its kind.
    ///
    /// # Errors
    /// As [`read_timeout`](Self::read_timeout).
    pub fn recv_into_timeout(&mut self, buf: &mut Vec<u8>, timeout: Duration) -> Result<u32> {
        let grant = self.read_timeout(timeout)?;
        Ok(grant.copy_into_vec(buf))
    }

    /// Copies up to `max` committed records into `out` (appending), publishing the head once;
    /// returns how many.
    ///
    /// # Errors
    /// [`Error::Empty`] if there was none; otherwise as [`read`](Self::read).
    pub fn try_recv_batch(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize> {
        let n = self.drain_into(out, max)?;
        if n == 0 && max > 0 {
            self.publish()?;
            return Err(if self.peer_gone {
                Error::PeerGone
            } else {
                Error::Empty
            });
        }
        Ok(n)
    }

    /// Waits for at least one record, then copies up to `max` into `out` (appending),
    /// publishing the head once; returns how many.
    ///
    /// # Errors
    /// As [`read`](Self::read).
    pub fn recv_batch(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize> {
        self.recv_batch_until(out, max, None)
    }

    /// As [`recv_batch`](Self::recv_batch), waiting at most `timeout` for the first record.
    ///
    /// # Errors
    /// [`Error::TimedOut`]; otherwise as [`read`](Self::read).
    pub fn recv_batch_timeout(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
        timeout: Duration,
    ) -> Result<usize> {
        self.recv_batch_until(out, max, deadline_after(timeout))
    }

    fn recv_batch_until(
        &mut self,
        out: &mut Vec<Vec<u8>>,
        max: usize,
        deadline: Option<Instant>,
    ) -> Result<usize> {
        if max == 0 {
            return Ok(0);
        }
        let first = self.wait_record(Limit::Until(deadline))?;
        out.push(self.copy_record(first));
        self.advance(first);
        let n = 1 + self.drain_into(out, max - 1)?;
        self.publish()?;
        Ok(n)
    }

    /// Calls `f` on up to `max` committed records in place, publishing the head once; returns
    /// how many. Does not wait.
    ///
    /// # Errors
    /// As [`try_read`](Self::try_read), except that finding none returns `Ok(0)`.
    pub fn for_each_available(
        &mut self,
        max: usize,
        mut f: impl FnMut(&ReadGrantRef<'_>),
    ) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(rec) = self.poll_record()? else {
                break;
            };
            f(&ReadGrantRef {
                data: &self.shared.data,
                rec,
            });
            self.advance(rec);
            n += 1;
        }
        self.publish()?;
        Ok(n)
    }

    /// Publishes the head now (records released but not yet published under
    /// [`Config::publish_every`](crate::Config::publish_every)).
    ///
    /// # Errors
    /// [`Error::PeerGone`] if a wake-up could not be delivered because the peer is gone.
    pub fn flush(&mut self) -> Result<()> {
        self.publish()
    }

    /// `poll(2)` with a zero timeout: whether the producer's process has gone (records it
    /// committed may still be waiting to be read).
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

    fn drain_into(&mut self, out: &mut Vec<Vec<u8>>, max: usize) -> Result<usize> {
        let mut n = 0;
        while n < max {
            let Some(rec) = self.poll_record()? else {
                break;
            };
            out.push(self.copy_record(rec));
            self.advance(rec);
            n += 1;
        }
        Ok(n)
    }

    fn copy_record(&self, rec: Record) -> Vec<u8> {
        let mut bytes = vec![0; rec.len];
        copy_payload(&self.shared.data, rec, &mut bytes);
        bytes
    }

    /// The next committed record, validated; skips padding. Reloads the tail only when the
    /// cache says empty.
    fn poll_record(&mut self) -> Result<Option<Record>> {
        loop {
            if self.head == self.tail_cache {
                self.reload_tail()?;
                if self.head == self.tail_cache {
                    return Ok(None);
                }
            }
            let offset = (self.head & (self.capacity - 1)) as usize;
            let to_end = self.capacity - offset as u64;
            // SAFETY: `head` is 8-aligned (it advances by 8-aligned amounts from 0), so `offset`
            // is 8-aligned and `offset + 8 <= capacity`.
            let word = unsafe { self.shared.data.load_u64(offset) };
            let (len, kind) = layout::decode_header(word);
            let in_ring = self.tail_cache - self.head;
            if kind == PADDING {
                if u64::from(len) != to_end - HEADER_LEN as u64 || to_end > in_ring {
                    return Err(corrupt("bad padding record", word));
                }
                self.head += to_end;
                continue;
            }
            let len = len as usize;
            if len > self.max_payload {
                return Err(corrupt("record longer than the largest payload", word));
            }
            let size = layout::record_size(len) as u64;
            if size > to_end || size > in_ring {
                return Err(corrupt("record past the end or the tail", word));
            }
            return Ok(Some(Record {
                offset,
                len,
                kind,
                size,
            }));
        }
    }

    fn reload_tail(&mut self) -> Result<()> {
        // SYNC: (B) Acquire pairs with the producer's Release store of the tail in
        // `Producer::publish`: the record bytes it wrote happen before our reads of them.
        let tail = self.shared.ctrl().tail.word.load(Ordering::Acquire);
        if tail < self.tail_cache {
            return Err(corrupt("tail moved backwards", tail));
        }
        if tail - self.head_published > self.capacity || !tail.is_multiple_of(layout::ALIGN as u64)
        {
            return Err(corrupt(
                "tail more than a capacity ahead or unaligned",
                tail,
            ));
        }
        self.tail_cache = tail;
        Ok(())
    }

    /// Releases a record privately; publishes once `publish_every` bytes are pending.
    fn advance(&mut self, rec: Record) {
        self.head += rec.size;
        self.stats.records += 1;
        self.stats.bytes += rec.len as u64;
    }

    fn release(&mut self, rec: Record) {
        self.advance(rec);
        if self.head - self.head_published > self.publish_every {
            // A failure here means the producer is gone; the next wait reports it.
            let _ = self.publish();
        }
    }

    /// Publishes the head and wakes the producer if it is parked.
    fn publish(&mut self) -> Result<()> {
        if self.head == self.head_published {
            return Ok(());
        }
        let ctrl = self.shared.ctrl();
        // SYNC: (C) Release pairs with the producer's Acquire load of the head in
        // `Producer::reload_head`: our reads of the released records happen before its writes.
        ctrl.head.word.store(self.head, Ordering::Release);
        self.head_published = self.head;
        self.stats.publications += 1;
        wake_if_waiting(&ctrl.producer_waiting.word, &self.wake, &mut self.stats)
    }

    fn wait_record(&mut self, limit: Limit) -> Result<Record> {
        wait_for(&mut RecordWait { consumer: self }, limit)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        let _ = self.publish();
    }
}

impl ReadGrant<'_> {
    /// The payload length.
    pub fn len(&self) -> usize {
        self.rec.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.rec.len == 0
    }

    /// The record's kind.
    pub fn kind(&self) -> u32 {
        self.rec.kind
    }

    /// Copies the payload into `dst[..len]`; returns how many bytes were copied
    /// (`min(len, dst.len())`).
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        self.as_ref_grant().copy_to_slice(dst)
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        self.consumer.copy_record(self.rec)
    }

    #[cfg(not(sp_loom))]
    /// A raw pointer to the first payload byte; `len()` bytes are readable, never writable.
    /// Read them with `read_volatile` or atomics: the producer's process can write them.
    pub fn as_ptr(&self) -> *const u8 {
        self.consumer
            .shared
            .data
            .ptr_at(self.rec.offset + HEADER_LEN)
            .cast_const()
    }

    #[cfg(not(sp_loom))]
    /// The payload as a plain slice, in place.
    ///
    /// # Safety
    /// The caller trusts the producer's process not to write these bytes while the slice lives
    /// (a well-behaved sp-shm producer never does: it writes only space the consumer has
    /// released). A hostile producer that does would make this a data race. Bounds are always
    /// guaranteed: the slice lies inside the record and the mapping whatever the peer does.
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        // SAFETY: the range is inside the read-only data mapping (validated in `poll_record`)
        // and kept mapped by the borrowed consumer; the caller promises no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.rec.len) }
    }

    fn as_ref_grant(&self) -> ReadGrantRef<'_> {
        ReadGrantRef {
            data: &self.consumer.shared.data,
            rec: self.rec,
        }
    }

    fn copy_into_vec(self, buf: &mut Vec<u8>) -> u32 {
        buf.clear();
        buf.resize(self.rec.len, 0);
        copy_payload(&self.consumer.shared.data, self.rec, buf);
        self.rec.kind
    }
}

impl Drop for ReadGrant<'_> {
    fn drop(&mut self) {
        self.consumer.release(self.rec);
    }
}

/// A record seen by [`Consumer::for_each_available`]: copy-out access only.
#[derive(Debug)]
pub struct ReadGrantRef<'a> {
    data: &'a DataPtr,
    rec: Record,
}

impl ReadGrantRef<'_> {
    /// The payload length.
    pub fn len(&self) -> usize {
        self.rec.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.rec.len == 0
    }

    /// The record's kind.
    pub fn kind(&self) -> u32 {
        self.rec.kind
    }

    /// Copies the payload into `dst`; returns `min(len, dst.len())`.
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        let n = self.rec.len.min(dst.len());
        copy_payload(self.data, Record { len: n, ..self.rec }, &mut dst[..n]);
        n
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.rec.len];
        copy_payload(self.data, self.rec, &mut bytes);
        bytes
    }
}

/// Copies a validated record's payload (`dst.len() <= rec.len`) out of the data area.
fn copy_payload(data: &DataPtr, rec: Record, dst: &mut [u8]) {
    debug_assert!(dst.len() <= rec.len);
    // SAFETY: `rec` was validated by `poll_record`: the slot `[offset, offset + size)` with
    // `size = record_size(len)` lies inside the data area, so the payload rounded up to 8 bytes
    // does too, and `offset + 8` is 8-aligned.
    unsafe { data.copy_out(rec.offset + HEADER_LEN, dst) };
}

fn corrupt(what: &'static str, value: u64) -> Error {
    Error::Corrupt { what, value }
}

/// After publishing: `fence(SeqCst)`, then wake the peer if its waiting flag was set.
fn wake_if_waiting(waiting: &AtomicU64, wake: &WakeSocket, stats: &mut Stats) -> Result<()> {
    // SYNC: StoreLoad. Pairs with the heavy fence in `wait_for` that the parking side issues
    // between setting its waiting flag and re-checking our position (Dekker): either it sees our
    // publication, or we see its flag. Asymmetric: a compiler barrier here when `membarrier`
    // lets the parking side supply the full barrier (see `sync::light_fence`).
    light_fence();
    // The plain load keeps the flag's cache line shared while nobody parks.
    if waiting.load(Ordering::Relaxed) != 0 && waiting.swap(0, Ordering::Relaxed) != 0 {
        stats.wakes_sent += 1;
        wake.notify()?;
    }
    Ok(())
}

/// How long a wait may last.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Forever,
    /// From the moment the wait begins (the clock is read only if it has to wait at all).
    After(Duration),
    /// Until a deadline already computed (`None`: forever).
    Until(Option<Instant>),
}

impl Limit {
    fn deadline(self) -> Option<Instant> {
        match self {
            Self::Forever => None,
            Self::After(timeout) => deadline_after(timeout),
            Self::Until(deadline) => deadline,
        }
    }
}

/// One side's view for the shared wait loop.
trait Side {
    type Ready;
    /// Tries once; `None` means "not yet".
    fn attempt(&mut self) -> Result<Option<Self::Ready>>;
    /// Publishes this side's own position before it waits.
    fn publish_own(&mut self) -> Result<()>;
    fn waiting_flag(&self) -> &AtomicU64;
    fn wake(&self) -> &WakeSocket;
    fn idle(&self) -> IdleStrategy;
    fn stats(&mut self) -> &mut Stats;
    /// The peer hung up: what to return.
    fn on_hang_up(&mut self) -> Result<Self::Ready>;
}

struct ClaimWait<'a> {
    producer: &'a mut Producer,
    n_bytes: usize,
}

struct RecordWait<'a> {
    consumer: &'a mut Consumer,
}

impl Side for ClaimWait<'_> {
    type Ready = Claim;

    fn attempt(&mut self) -> Result<Option<Claim>> {
        self.producer.try_claim(self.n_bytes)
    }

    fn publish_own(&mut self) -> Result<()> {
        self.producer.publish()
    }

    fn waiting_flag(&self) -> &AtomicU64 {
        &self.producer.shared.ctrl().producer_waiting.word
    }

    fn wake(&self) -> &WakeSocket {
        &self.producer.wake
    }

    fn idle(&self) -> IdleStrategy {
        self.producer.idle
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.producer.stats
    }

    fn on_hang_up(&mut self) -> Result<Claim> {
        Err(Error::PeerGone)
    }
}

impl Side for RecordWait<'_> {
    type Ready = Record;

    fn attempt(&mut self) -> Result<Option<Record>> {
        self.consumer.poll_record()
    }

    fn publish_own(&mut self) -> Result<()> {
        self.consumer.publish()
    }

    fn waiting_flag(&self) -> &AtomicU64 {
        &self.consumer.shared.ctrl().consumer_waiting.word
    }

    fn wake(&self) -> &WakeSocket {
        &self.consumer.wake
    }

    fn idle(&self) -> IdleStrategy {
        self.consumer.idle
    }

    fn stats(&mut self) -> &mut Stats {
        &mut self.consumer.stats
    }

    fn on_hang_up(&mut self) -> Result<Record> {
        // The producer's last publication happened before its process ended; drain it first.
        self.consumer.peer_gone = true;
        match self.consumer.poll_record()? {
            Some(rec) => Ok(rec),
            None => Err(Error::PeerGone),
        }
    }
}

/// Waits until `side.attempt()` succeeds: spin, yield, then park (see the module docs).
fn wait_for<S: Side>(side: &mut S, limit: Limit) -> Result<S::Ready> {
    if let Some(ready) = side.attempt()? {
        return Ok(ready);
    }
    // Read the clock only now that the first attempt failed: the fast path never does.
    let deadline = limit.deadline();
    if let Err(err) = side.publish_own() {
        // The peer is gone: nobody will free space or commit more; let `on_hang_up` decide.
        if matches!(err, Error::PeerGone) {
            return side.on_hang_up();
        }
        return Err(err);
    }
    let mut backoff = Backoff::new(side.idle());
    loop {
        match backoff.next_step() {
            Step::Spin => spin(),
            Step::Yield => yield_now(),
            Step::Park => {
                // A swap rather than a store: the same under the C++ model, and it keeps loom's
                // model of `fence(SeqCst)` exact. With a plain store here, loom (bound 4) admits an
                // outcome the C++ rules for SC fences forbid: the peer's last swap of this flag
                // read an older value, its later load sees neither our new flag nor our re-check
                // its position, and both sides park (a false deadlock).
                side.waiting_flag().swap(1, Ordering::Relaxed);
                // SYNC: StoreLoad. Pairs with the light fence in `wake_if_waiting` on the other
                // side: either our re-check below sees its new position, or it sees our flag and
                // sends a wake-up byte (which persists in the socket until we poll).
                let fenced = heavy_fence();
                if let Some(ready) = side.attempt()? {
                    side.waiting_flag().store(0, Ordering::Relaxed);
                    return Ok(ready);
                }
                side.stats().parks += 1;
                // Without a working `membarrier` the peer's light fence may not have ordered its
                // publication before its flag check: re-check every millisecond instead of
                // trusting the wake-up byte alone.
                let park_until = if fenced {
                    deadline
                } else {
                    let recheck = Instant::now() + Duration::from_millis(1);
                    Some(deadline.map_or(recheck, |d| d.min(recheck)))
                };
                match side.wake().wait(park_until)? {
                    Woken::Token => {}
                    Woken::TimedOut if deadline.is_none_or(|d| Instant::now() < d) => {}
                    Woken::TimedOut => {
                        side.waiting_flag().store(0, Ordering::Relaxed);
                        return match side.attempt()? {
                            Some(ready) => Ok(ready),
                            None => Err(Error::TimedOut),
                        };
                    }
                    Woken::HangUp => {
                        side.waiting_flag().store(0, Ordering::Relaxed);
                        return side.on_hang_up();
                    }
                }
            }
        }
        if let Some(ready) = side.attempt()? {
            return Ok(ready);
        }
        if backoff.check_due() {
            // Give the core away once in a while, so that an oversubscribed machine (more
            // spinning threads than cores) still makes progress.
            yield_now();
            if side.wake().hung_up()? {
                return side.on_hang_up();
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Error::TimedOut);
            }
        }
    }
}

#[cfg(not(sp_loom))]
fn spin() {
    std::hint::spin_loop();
}

#[cfg(not(sp_loom))]
fn yield_now() {
    std::thread::yield_now();
}

#[cfg(sp_loom)]
fn spin() {
    loom::thread::yield_now();
}

#[cfg(sp_loom)]
fn yield_now() {
    loom::thread::yield_now();
}

/// A producer and consumer over a heap-allocated model of the shared memory (loom only).
#[cfg(sp_loom)]
pub(crate) fn model_pair(capacity: u64, max_payload: usize) -> (Producer, Consumer) {
    let ctrl = std::sync::Arc::new(ControlBlock::new_model(capacity, max_payload as u64));
    let data = DataPtr::new_model(capacity as usize);
    let ptr = NonNull::from(&*ctrl);
    let (wake_p, wake_c) = WakeSocket::pair();
    // SAFETY: `ptr` points into the `Arc` each `Shared` keeps; `data` has `capacity` cells.
    let (shared_p, shared_c) = unsafe {
        (
            Shared::new(ptr, data.clone(), ctrl.clone()),
            Shared::new(ptr, data, ctrl),
        )
    };
    let idle = IdleStrategy::park();
    (
        Producer::from_parts(shared_p, capacity, max_payload, wake_p, idle),
        Consumer::from_parts(shared_c, capacity, max_payload, wake_c, idle, 0),
    )
}
