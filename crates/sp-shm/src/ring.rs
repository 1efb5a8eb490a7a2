//! The single-producer single-consumer ring of variable-length records in shared memory.
//!
//! # Algorithm
//!
//! The data area is `capacity` bytes, a power of two. Both sides count in free-running `u64` byte
//! positions: the producer's *tail* (bytes ever committed) and the consumer's *head* (bytes ever
//! released); a byte position maps to offset `pos & (capacity - 1)`. The ring holds
//! `tail - head <= capacity - 8` bytes (the 8 bytes at the tail are the zeroed next slot) (Linux `io_uring` and `perf_event` rings; the positions never
//! wrap in practice: 2^64 bytes at 100 GB/s is 5 years).
//!
//! Records are framed as in aeron's `aeron_rb.h`: an 8-byte header `{len: u32, kind: u32}` then
//! the payload, padded to 8 bytes. A record never straddles the end of the data area: if it would,
//! the producer writes a padding record (kind `u32::MAX`) to the end and places the record at
//! offset 0. The largest payload is fixed at the handshake (at most capacity / 4).
//!
//! The header is also the record's publication, as in aeron's log buffers (the frame length
//! written last) and the FastForward queue (Giacomoni et al., PPoPP 2008: the consumer polls the
//! slot, not the producer's index). The producer keeps its tail private. The header word carries a
//! commit bit, so it is never zero, and the producer keeps one invariant: *the 8 bytes at the
//! tail are zero*. To commit a record it writes the payload, zeroes the 8 bytes after the record
//! (the next record's header slot), and only then stores the header with Release. The consumer
//! loads the header at its head with Acquire: zero means "nothing yet", a committed header means a
//! whole record. So at steady state a record costs the consumer the cache lines of the record
//! itself and nothing else: there is no index line bouncing between the cores on every record
//! (measured, `ring_vs_socket`, 64 B: 40 → 47.7 M records/s, and sp-bench's 64 B spinning round
//! trip 290 → 221 ns, against version 1 of the protocol, which published a tail index; the steps
//! are listed in docs/benchmarks.md).
//!
//! The consumer's head is still an index: it keeps it in private memory, *publishes* it to the
//! control block (every record by default, or in batches, `Config::publish_every`), and the
//! producer caches it, reloading it (Acquire) only when the cache says full (aeron's
//! `head_cache_position`, the disruptor's `cachedValue`), so the producer touches the consumer's
//! line about once per lap, not once per record. A record needs its slot plus the 8 bytes after it
//! free, because committing zeroes those.
//!
//! Writes are zero-copy in the style of bbqueue's framed grants and aeron's `try_claim`:
//! [`Producer::reserve`] returns a [`WriteGrant`] over free space in the producer's own mapping;
//! [`WriteGrant::commit`] stores the header (Release), so the consumer sees the record whole or
//! not at all; dropping the grant abandons it. Reads are zero-copy too: [`Consumer::read`]
//! returns a [`ReadGrant`] that borrows the consumer (one grant at a time, checked by the
//! compiler) and releases the record when dropped.
//!
//! # Ordering (each pair is tagged `SYNC:` in the code)
//!
//! (A) The producer writes the payload and zeroes the next slot, then stores the header with
//! Release (a padding record's header after the header of the record it precedes); (B) the
//! consumer loads the header with Acquire, then reads the record and, later, the next slot.
//! (C) The consumer reads the record, then stores its head with Release; (D) the producer loads
//! the head with Acquire before it writes over those bytes. This is the (A)-(D) scheme of Linux
//! `kernel/events/ring_buffer.c`, with the header in place of the data head.
//!
//! # Waiting
//!
//! A side that finds the ring empty (or full) first publishes its own position, then spins,
//! yields and finally parks ([`IdleStrategy`]). To park it sets its *waiting* flag, issues a full
//! fence, and re-checks (the header at its head, or the consumer's head); the other side, after
//! publishing (a header, or its head), issues a fence and sends a wake-up byte only if
//! `waiting.swap(false)` was set. The two fences make this a Dekker
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
//! The single-record `*_timeout` calls start their clock lazily, at the first park or periodic
//! check of the wait: at most [`CHECK_EVERY`](crate::idle::CHECK_EVERY) idle steps (spins or
//! yields, each with one attempt) after the call began, usually microseconds, up to about a
//! millisecond when every attempt misses the cache. A spinning wait that ends quickly never reads
//! the clock, which costs ~20 ns. The batch forms take one deadline for the whole batch, so their
//! clock starts at the call.
//!
//! # Fast path
//!
//! The calls made once per record (`reserve`, `commit`, `send`, `read`, dropping a grant) are
//! `#[inline]` down to the shared-memory accesses, and every wait is an out-of-line cold call.
//! This matters more than it looks: when `reserve` was an out-of-line call, its `Claim` came back
//! through the stack and was reloaded with a wider load than the stores that wrote it; such a load
//! cannot be forwarded from the store buffer and waits until every earlier store has reached the
//! cache, including the previous records' bytes, which are waiting for their cache lines to come
//! back from the consumer's core. Measured with `sp-bench`, 64 B, spinning: 22 → 56 M records/s,
//! round trip 221 → 170 ns.
//!
//! # Untrusted peer
//!
//! Every index and header read from shared memory is loaded once into a local, validated, and
//! only the local is used (io_uring's `READ_ONCE`): the head must not move backwards or pass the
//! committed tail, a header word must be zero or carry the commit bit, a length must not pass the
//! largest payload or the end of the data area, and a padding record must reach exactly to the
//! end and never start at offset 0 (so skipping padding terminates). A bad value returns
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
use crate::layout::{self, ControlBlock, HEADER_LEN, PADDING, Slot};
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
    /// Bytes committed (each record is visible once committed: its header publishes it).
    tail: u64,
    /// `tail` at the last wake-up check (see `publish`).
    tail_announced: u64,
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
    /// Publishing calls: the producer's wake-up checks (one per `send`, `commit`, batch or
    /// `flush` that committed something), the consumer's head publications.
    pub publications: u64,
    /// Wake-up bytes this side sent to the peer.
    pub wakes_sent: u64,
    /// Times this side parked in `poll`.
    pub parks: u64,
    /// Of those, parks without a working `membarrier` (refused by the kernel, or switched off
    /// with [`NO_MEMBARRIER_ENV`](crate::NO_MEMBARRIER_ENV)), which re-check every millisecond
    /// rather than trust the wake-up byte alone.
    pub rechecked_parks: u64,
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

    #[inline]
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
            tail_announced: 0,
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
            None => Err(Error::Full),
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
            None => Err(Error::Full),
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
            return Err(Error::Full);
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

    #[inline]
    fn grant(&mut self, claim: Claim) -> WriteGrant<'_> {
        WriteGrant {
            producer: self,
            claim,
            kind: 0,
        }
    }

    /// Finds space for `n_bytes` of payload, reloading the head only if the cache says full.
    #[inline]
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
        // The 8 bytes after the record must be free too: `finish` zeroes them (the next header).
        let total = pad + need + HEADER_LEN as u64;
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
        let used = used.min(claim.n_bytes);
        let size = layout::record_size(used);
        let data = &self.shared.data;
        // The claim left the record and the slot after it inside free space (`try_claim`).
        debug_assert!(
            self.tail + claim.pad + size as u64 + HEADER_LEN as u64
                <= self.head_cache + self.capacity
        );
        let next = (claim.offset + size) & (self.capacity as usize - 1);
        // SAFETY: `next` is 8-aligned (offsets and sizes are) and below `capacity`; its 8 bytes
        // are free space: `try_claim` found room for the slot plus 8 bytes after it.
        unsafe { data.store_u64(next, 0) };
        // SYNC: (A) Release pairs with the consumer's Acquire load of this header in
        // `Consumer::poll_record`: the payload and the zeroed next slot written above happen
        // before its reads of them.
        // SAFETY: `claim.offset` is 8-aligned with a free slot of `record_size(n_bytes)` bytes
        // before the end of the data area (`try_claim`).
        unsafe { data.store_u64_release(claim.offset, layout::encode_header(used as u32, kind)) };
        if claim.pad > 0 {
            let pad_at = (self.tail & (self.capacity - 1)) as usize;
            let header = layout::encode_header((claim.pad - HEADER_LEN as u64) as u32, PADDING);
            // SYNC: (A) as above, for the padding: the consumer reaches the record at offset 0
            // only through it, so the record's header is stored first.
            // SAFETY: `pad_at` is 8-aligned and `pad_at + 8 <= capacity` (a position is always
            // 8-aligned, so at least 8 bytes remain to the end); the space is free by `try_claim`.
            unsafe { data.store_u64_release(pad_at, header) };
        }
        self.tail += claim.pad + size as u64;
        self.stats.records += 1;
        self.stats.bytes += used as u64;
    }

    #[inline]
    fn write_claim(&mut self, claim: Claim, bytes: &[u8]) {
        // SAFETY: the payload starts 8 bytes after the header and `bytes.len() == n_bytes` fits
        // the claimed slot; the data area is this producer's writable mapping.
        unsafe { self.shared.data.copy_in(claim.offset + HEADER_LEN, bytes) };
        self.finish(claim, bytes.len(), 0);
    }

    /// After records were committed (each already visible through its header): wakes the
    /// consumer if it is parked.
    #[inline]
    fn publish(&mut self) -> Result<()> {
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
    /// store (the record bytes, still waiting for their cache lines) to drain: measured, the
    /// zero-copy `reserve` path ran at half the rate of `send` at 64 B.
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
    #[inline]
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
    #[inline]
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
    /// been delivered; [`Error::Corrupt`] for a bad record header.
    #[inline]
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
    #[inline]
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
    #[inline]
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

    /// The next committed record, validated; skips padding.
    #[inline]
    fn poll_record(&mut self) -> Result<Option<Record>> {
        loop {
            let offset = (self.head & (self.capacity - 1)) as usize;
            let to_end = self.capacity - offset as u64;
            // SYNC: (B) Acquire pairs with the producer's Release store of this header in
            // `Producer::finish`: the payload and the zeroed slot after it are visible below.
            // SAFETY: `head` is 8-aligned (it advances by 8-aligned amounts from 0), so `offset`
            // is 8-aligned and `offset + 8 <= capacity`.
            let word = unsafe { self.shared.data.load_u64_acquire(offset) };
            let (len, kind) = match layout::decode_header(word) {
                Slot::Empty => return Ok(None),
                Slot::Invalid => return Err(corrupt("not a record header", word)),
                Slot::Header(len, kind) => (len, kind),
            };
            // A producer writes only space it knows is free: its cached head is at most the head
            // we published, so nothing it commits ends past `head_published + capacity - 8`. This
            // bounds how far a peer can lead us: without it, a data area full of valid headers
            // would be an endless supply of records (and, with publication stopped once the peer
            // is gone, see `publish`, a dead peer's leftovers are at most one ring).
            let limit = self.head_published + self.capacity - HEADER_LEN as u64;
            if kind == PADDING {
                // Padding at offset 0 is never needed (every record fits a whole ring), so a
                // padding record is followed by a real one and this loop runs at most twice.
                if offset == 0 || u64::from(len) != to_end - HEADER_LEN as u64 {
                    return Err(corrupt("bad padding record", word));
                }
                if self.head + to_end > limit {
                    return Err(corrupt(
                        "padding beyond what the producer could write",
                        word,
                    ));
                }
                self.head += to_end;
                continue;
            }
            let len = len as usize;
            if len > self.max_payload {
                return Err(corrupt("record longer than the largest payload", word));
            }
            let size = layout::record_size(len) as u64;
            if size > to_end {
                return Err(corrupt("record past the end of the data area", word));
            }
            if self.head + size > limit {
                return Err(corrupt("record beyond what the producer could write", word));
            }
            if offset == 0 && !self.peer_gone && self.wake.hung_up()? {
                // Once a lap, look for a hang-up even if records keep coming: a dead peer's ring
                // may hold a cycle of valid headers that would otherwise never run out.
                self.peer_gone = true;
            }
            return Ok(Some(Record {
                offset,
                len,
                kind,
                size,
            }));
        }
    }

    /// Releases a record privately; publishes once `publish_every` bytes are pending.
    #[inline]
    fn advance(&mut self, rec: Record) {
        self.head += rec.size;
        self.stats.records += 1;
        self.stats.bytes += rec.len as u64;
    }

    #[inline]
    fn release(&mut self, rec: Record) {
        self.advance(rec);
        if self.head - self.head_published > self.publish_every {
            // A failure here means the producer is gone; the next wait reports it.
            let _ = self.publish();
        }
    }

    /// Publishes the head and wakes the producer if it is parked. Once the producer is gone
    /// nothing is published: nobody reads the head, and the frozen `head_published` caps what
    /// is left to drain at one ring (see `poll_record`).
    #[inline]
    fn publish(&mut self) -> Result<()> {
        if self.head == self.head_published || self.peer_gone {
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

    /// A record now, or wait for one; the first attempt is inlined (see `Producer::wait_claim`).
    #[inline]
    fn wait_record(&mut self, limit: Limit) -> Result<Record> {
        match self.poll_record()? {
            Some(rec) => Ok(rec),
            None => self.wait_record_slow(limit),
        }
    }

    #[cold]
    #[inline(never)]
    fn wait_record_slow(&mut self, limit: Limit) -> Result<Record> {
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
    #[inline]
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        self.as_ref_grant().copy_to_slice(dst)
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        self.consumer.copy_record(self.rec)
    }

    #[cfg(not(sp_loom))]
    #[inline]
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
    #[inline]
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        // SAFETY: the range is inside the read-only data mapping (validated in `poll_record`)
        // and kept mapped by the borrowed consumer; the caller promises no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.rec.len) }
    }

    #[inline]
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
    #[inline]
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
#[inline]
fn wake_if_waiting(waiting: &AtomicU64, wake: &WakeSocket, stats: &mut Stats) -> Result<()> {
    // SYNC: StoreLoad. Pairs with the heavy fence in `wait_for` that the parking side issues
    // between setting its waiting flag and re-checking our position (Dekker): either it sees our
    // publication, or we see its flag. Asymmetric: a compiler barrier here when `membarrier`
    // lets the parking side supply the full barrier (see `sync::light_fence`).
    light_fence();
    // The plain load keeps the flag's cache line shared while nobody parks.
    if waiting.load(Ordering::Relaxed) != 0 {
        return wake_peer(waiting, wake, stats);
    }
    Ok(())
}

#[cold]
fn wake_peer(waiting: &AtomicU64, wake: &WakeSocket, stats: &mut Stats) -> Result<()> {
    if waiting.swap(0, Ordering::Relaxed) != 0 {
        stats.wakes_sent += 1;
        wake.notify()?;
    }
    Ok(())
}

/// How long a wait may last.
#[derive(Debug, Clone, Copy)]
enum Limit {
    Forever,
    /// From the moment the wait first checks the clock: at its first park or periodic check, so
    /// at most [`CHECK_EVERY`](crate::idle::CHECK_EVERY) idle steps after it began (see the module
    /// docs, "Waiting"). A wait that ends while spinning never reads the clock.
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

/// A [`Limit`] turned into a deadline on first use: reading the clock costs about 20 ns, which a
/// spinning round trip would otherwise pay on every wait (measured: sp-bench, 64 B spin).
#[derive(Debug)]
struct LazyDeadline {
    limit: Limit,
    deadline: Option<Option<Instant>>,
}

impl LazyDeadline {
    fn new(limit: Limit) -> Self {
        Self {
            limit,
            deadline: None,
        }
    }

    fn get(&mut self) -> Option<Instant> {
        let limit = self.limit;
        *self.deadline.get_or_insert_with(|| limit.deadline())
    }
}

/// One side's view for the shared wait loop.
trait Side {
    type Ready;
    /// `spin_loop` hints per spin step between attempts.
    const SPIN_PAUSES: u32;
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
    /// A producer waiting for space re-reads the consumer's head line, which the consumer writes
    /// after every record: reading it less often leaves that line with the consumer, whose stores
    /// then need no cache-line transfer. Nobody waits on a producer's reaction time here.
    const SPIN_PAUSES: u32 = PRODUCER_SPIN_PAUSES;

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
    /// A consumer's reaction time is the round-trip latency: check after every pause.
    const SPIN_PAUSES: u32 = 1;

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

/// See [`Side::SPIN_PAUSES`] for the producer.
const PRODUCER_SPIN_PAUSES: u32 = 16;

/// Waits until `side.attempt()` succeeds: spin, yield, then park (see the module docs). The
/// caller has just made an attempt that failed (the inlined fast path).
fn wait_for<S: Side>(side: &mut S, limit: Limit) -> Result<S::Ready> {
    // The clock is read only once the wait checks it (see `Limit::After`).
    let mut deadline = LazyDeadline::new(limit);
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
            Step::Spin => (0..S::SPIN_PAUSES).for_each(|_| spin()),
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
                let deadline = deadline.get();
                let recheck = side.attempt();
                if !matches!(recheck, Ok(None)) {
                    // Not parking after all (ready, or an error): no wake-up wanted.
                    side.waiting_flag().store(0, Ordering::Relaxed);
                    if let Some(ready) = recheck? {
                        return Ok(ready);
                    }
                }
                side.stats().parks += 1;
                // Without a working `membarrier` the peer's light fence may not have ordered its
                // publication before its flag check: re-check every millisecond instead of
                // trusting the wake-up byte alone.
                let park_until = if fenced {
                    deadline
                } else {
                    side.stats().rechecked_parks += 1;
                    let recheck = Instant::now() + Duration::from_millis(1);
                    Some(deadline.map_or(recheck, |d| d.min(recheck)))
                };
                let woken = side.wake().wait(park_until);
                // Awake, whatever woke us: clear the flag so that the peer sends no stale byte. A
                // later park sets it again, with the fence and a re-check.
                side.waiting_flag().store(0, Ordering::Relaxed);
                match woken? {
                    Woken::Token => {}
                    Woken::TimedOut if deadline.is_none_or(|d| Instant::now() < d) => {}
                    Woken::TimedOut => {
                        return match side.attempt()? {
                            Some(ready) => Ok(ready),
                            None => Err(Error::TimedOut),
                        };
                    }
                    Woken::HangUp => return side.on_hang_up(),
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
            if deadline.get().is_some_and(|d| Instant::now() >= d) {
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
    // SAFETY: `ptr` points into the `Arc` each `Shared` keeps; `data` has `capacity` bytes (as
    // 8-byte words).
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
