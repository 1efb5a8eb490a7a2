//! The two mappings of one ring as the ring code sees them: the control block, which holds
//! atomics only, and the data area, reached only through offsets that the ring's own checks made.
//!
//! Every access to the data area takes a [`WordAt`] (an 8-aligned word inside the area) or a
//! [`Payload`] (a record's payload whose whole slot lies inside the area). Only [`DataArea`]
//! makes them: [`DataArea::word_at`] from a byte position (masked, so it is in bounds whatever
//! the position), and [`DataArea::payload`] after checking that the slot fits, which is where
//! the consumer's validation of a header's length and the producer's claim meet. That is what
//! lets the accessors be safe functions. They still check their argument against this area
//! (a mask for a word, one comparison for a payload), so they stay in bounds even if a value
//! made for one ring were used with another.
//!
//! The area is typed by who may write it: the producer's mapping is [`ReadWrite`], the
//! consumer's [`ReadOnly`] (`PROT_READ`, and the memfd is sealed with `F_SEAL_FUTURE_WRITE`).
//! Stores and `&mut [u8]` views exist only on the producer's type; no `&`/`&mut` is ever formed
//! over bytes the peer can write.
//!
//! In a normal build the area is a raw pointer into a `memmap2::MmapRaw` mapping. In a loom build
//! (`--cfg sp_loom`) it is a vector of loom `AtomicU64` words, so that loom explores every value
//! a read that is not ordered after its write could return (a torn, stale or lost record fails
//! the models' byte checks). Payload words are Relaxed and header words Acquire/Release in both.

#![allow(unsafe_code)] // Dereferences the mapped control block and the mapped data area.

use std::marker::PhantomData;
use std::ptr::NonNull;

use crate::layout::{ControlBlock, HEADER_LEN};
use crate::sync::{AtomicU64, Ordering};

/// The consumer's view: the data area is mapped `PROT_READ`.
#[derive(Debug)]
pub(crate) enum ReadOnly {}

/// The producer's view: the data area is its own memfd, mapped read-write, which no other
/// process can map writable (`F_SEAL_FUTURE_WRITE`).
#[derive(Debug)]
pub(crate) enum ReadWrite {}

/// An 8-aligned offset of a word inside a data area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WordAt(usize);

/// The payload of a record: `len` bytes after the header at an 8-aligned offset, inside the data
/// area (`header + 8 + len <= capacity`; the whole words they touch are inside it too, the
/// capacity being a multiple of 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Payload {
    header: usize,
    len: usize,
}

impl WordAt {
    /// The offset in bytes.
    #[inline]
    pub(crate) fn offset(self) -> usize {
        self.0
    }
}

impl Payload {
    /// An empty record at offset 0: inside any data area (which is at least 8 bytes).
    pub(crate) const EMPTY: Self = Self { header: 0, len: 0 };

    /// Where the record's header is.
    #[inline]
    pub(crate) fn header(self) -> WordAt {
        WordAt(self.header)
    }

    /// The payload length in bytes.
    #[inline]
    pub(crate) fn len(self) -> usize {
        self.len
    }

    /// The same record with only its first `len` bytes (at most `self.len()`): a shorter
    /// payload from the same header, so it lies in the area too.
    #[inline]
    pub(crate) fn truncated(self, len: usize) -> Self {
        Self {
            header: self.header,
            len: len.min(self.len),
        }
    }

    /// Offset of the first payload byte.
    #[inline]
    fn start(self) -> usize {
        self.header + HEADER_LEN
    }
}

/// The mappings behind one side of a ring: the control block and the data area.
#[derive(Debug)]
pub(crate) struct Shared<A> {
    ctrl: NonNull<ControlBlock>,
    pub(crate) data: DataArea<A>,
    _keep: Keep,
}

#[cfg(not(sp_loom))]
type Keep = (memmap2::MmapRaw, memmap2::MmapRaw);
#[cfg(sp_loom)]
type Keep = std::sync::Arc<ControlBlock>;

// SAFETY: `Shared` owns (through `_keep`) the mappings its pointers refer to; moving it to
// another thread moves the ownership with it. The control block holds atomics only, and the data
// area is reached through `DataArea`, whose accesses are atomic or exclusive (`&mut`).
unsafe impl<A> Send for Shared<A> {}

impl<A> Shared<A> {
    /// # Safety
    /// `ctrl` points to a control block that `keep` keeps alive, aligned to 128 bytes.
    pub(crate) unsafe fn new(ctrl: NonNull<ControlBlock>, data: DataArea<A>, keep: Keep) -> Self {
        Self {
            ctrl,
            data,
            _keep: keep,
        }
    }

    /// Word `i` of the control block (the fields and the zero padding between them), as a
    /// hostile peer process could write it (for tests).
    #[cfg(all(test, not(sp_loom)))]
    pub(crate) fn ctrl_word(&self, i: usize) -> &AtomicU64 {
        assert!(i < size_of::<ControlBlock>() / 8);
        let base = self.ctrl.as_ptr().cast::<AtomicU64>();
        // SAFETY: the control block is 640 bytes at the start of a 4096-byte writable mapping
        // (or allocation) that `self` keeps alive; word `i < 80` lies inside it and is 8-aligned.
        // Its padding is never read through the block's own fields, so the tests' atomic stores
        // there race with nothing.
        unsafe { &*base.add(i) }
    }

    /// The control block.
    #[inline]
    pub(crate) fn ctrl(&self) -> &ControlBlock {
        // SAFETY: `ctrl` points into a live mapping (or allocation) owned by `self._keep`, of at
        // least `size_of::<ControlBlock>()` bytes and 128-byte aligned (a page start). The block
        // consists of atomics only, so a shared reference stays valid while the peer writes it.
        unsafe { self.ctrl.as_ref() }
    }
}

/// A ring's data area: `capacity` bytes (a power of two, at least 8) that the producer writes
/// and the consumer reads.
#[cfg(not(sp_loom))]
#[derive(Debug)]
pub(crate) struct DataArea<A> {
    base: NonNull<u8>,
    capacity: usize,
    /// `(capacity - 1) & !7`: a byte position masked with it is an 8-aligned word offset in the
    /// area.
    word_mask: usize,
    /// Whether the CPU has `prefetchw` (CPUID 0x8000_0001, ECX bit 8: `PRFCHW`); older Intel
    /// CPUs lack it.
    prefetchw: bool,
    _access: PhantomData<A>,
}

/// The loom build's data area: one loom atomic per 8-byte word, shared by both sides.
#[cfg(sp_loom)]
#[derive(Debug)]
pub(crate) struct DataArea<A> {
    words: std::sync::Arc<Vec<AtomicU64>>,
    capacity: usize,
    word_mask: usize,
    _access: PhantomData<A>,
}

impl<A> DataArea<A> {
    /// The word at byte position `pos` (a multiple of 8 in the ring protocol; rounded down if
    /// not), wrapped into the area.
    #[inline]
    pub(crate) fn word_at(&self, pos: u64) -> WordAt {
        WordAt((pos as usize) & self.word_mask)
    }

    /// The payload of a record of `len` bytes whose header is at `header`, if it fits before the
    /// end of the area. (The record's slot, rounded up to 8, then fits too.)
    #[inline]
    pub(crate) fn payload(&self, header: WordAt, len: usize) -> Option<Payload> {
        // `header.0 <= capacity - 8`: a word offset in the area.
        (len <= self.capacity - HEADER_LEN - header.0).then_some(Payload {
            header: header.0,
            len,
        })
    }

    /// Checks that `payload` lies in this area: always true for one this area made. (Its header
    /// is 8-aligned whichever area made it: `WordAt` is.)
    #[inline]
    fn check(&self, payload: Payload) {
        assert!(
            payload.header + HEADER_LEN + payload.len <= self.capacity,
            "a payload made for another data area"
        );
    }
}

#[cfg(not(sp_loom))]
impl<A> DataArea<A> {
    /// Wraps `capacity` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + capacity` stays mapped for as long as this value is used (readable, and
    /// writable for `DataArea<ReadWrite>`), `base` is 8-byte aligned, and `capacity` is a power
    /// of two of at least 8.
    pub(crate) unsafe fn new(base: NonNull<u8>, capacity: usize) -> Self {
        debug_assert!((base.as_ptr() as usize).is_multiple_of(8));
        debug_assert!(capacity.is_power_of_two() && capacity >= 8);
        #[cfg(target_arch = "x86_64")]
        let prefetchw = (std::arch::x86_64::__cpuid(0x8000_0001).ecx >> 8) & 1 == 1;
        #[cfg(not(target_arch = "x86_64"))]
        let prefetchw = false;
        Self {
            base,
            capacity,
            word_mask: (capacity - 1) & !7,
            prefetchw,
            _access: PhantomData,
        }
    }

    /// The 8-byte word at `at` as an atomic.
    #[inline]
    fn word(&self, at: WordAt) -> &AtomicU64 {
        let off = at.0 & self.word_mask;
        // An atomic access is defined while the peer writes the word, and a load is allowed on a
        // read-only mapping (`std::sync::atomic`, "Atomic accesses to read-only memory"); only
        // `DataArea<ReadWrite>` stores through it.
        // SAFETY: `off` is 8-aligned and `off + 8 <= capacity` (masked above; `capacity` is a
        // power of two of at least 8), inside a mapping that outlives `self` (`new`).
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(off).cast::<u64>()) }
    }

    /// Loads a header word with Acquire: the record it publishes is visible after it.
    #[inline]
    pub(crate) fn load_header(&self, at: WordAt) -> u64 {
        self.word(at).load(Ordering::Acquire)
    }

    /// Loads a word Relaxed (for tests that inspect the area).
    #[cfg(test)]
    pub(crate) fn load_word(&self, at: WordAt) -> u64 {
        self.word(at).load(Ordering::Relaxed)
    }

    /// Copies the first `dst.len()` bytes of `payload` (at most its length) with 8-byte atomic
    /// loads, which are defined even if the peer writes the bytes meanwhile; returns how many.
    #[inline]
    pub(crate) fn copy_out(&self, payload: Payload, dst: &mut [u8]) -> usize {
        self.check(payload);
        let n = dst.len().min(payload.len);
        let dst = &mut dst[..n];
        let mut chunks = dst.chunks_exact_mut(8);
        let mut at = WordAt(payload.start());
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.word(at).load(Ordering::Relaxed).to_ne_bytes());
            at.0 += 8;
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            // The slot is padded to 8 bytes, so the whole last word is inside it.
            let word = self.word(at).load(Ordering::Relaxed).to_ne_bytes();
            rest.copy_from_slice(&word[..rest.len()]);
        }
        n
    }

    /// A raw pointer to the first payload byte; `payload.len()` bytes are readable. Read them
    /// only with atomics or volatile loads unless the peer is trusted not to write them.
    #[inline]
    pub(crate) fn payload_ptr(&self, payload: Payload) -> *const u8 {
        self.check(payload);
        // In bounds: `check` above.
        self.base
            .as_ptr()
            .wrapping_add(payload.start())
            .cast_const()
    }
}

#[cfg(not(sp_loom))]
impl DataArea<ReadWrite> {
    /// Asks the cache for the first two lines of a record's slot with the intent to write them
    /// (`prefetchw`), so that their ownership requests start together, before the payload is
    /// written: a small record and its next slot mostly lie in those two lines, and a larger one
    /// streams anyway. A hint only: it never faults and changes no memory.
    #[inline]
    pub(crate) fn prefetch_for_write(&self, payload: Payload) {
        #[cfg(target_arch = "x86_64")]
        if self.prefetchw {
            let line = self.base.as_ptr().wrapping_add(payload.header & !63);
            for ptr in [line, line.wrapping_add(64)] {
                // SAFETY: `prefetchw` is a hint: it never faults and writes nothing, whatever the
                // address (the second line may lie just past the mapping when the record starts
                // in its last line); this CPU has it (`self.prefetchw`).
                unsafe {
                    std::arch::asm!(
                        "prefetchw [{ptr}]",
                        ptr = in(reg) ptr,
                        options(nostack, preserves_flags, readonly)
                    );
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = payload;
    }

    /// Stores a word Relaxed: the zeroed next slot, published by a later Release header store.
    #[inline]
    pub(crate) fn store_word(&self, at: WordAt, value: u64) {
        self.word(at).store(value, Ordering::Relaxed);
    }

    /// Stores a header word with Release: everything written before it is visible to a consumer
    /// that loads it with Acquire.
    #[inline]
    pub(crate) fn store_header(&self, at: WordAt, value: u64) {
        self.word(at).store(value, Ordering::Release);
    }

    /// Copies `src` (at most the payload's length) to the payload.
    #[inline]
    pub(crate) fn copy_in(&mut self, payload: Payload, src: &[u8]) {
        let n = src.len().min(payload.len);
        sp_core::copy_bytes(&mut self.payload_mut(payload)[..n], &src[..n]);
    }

    /// The payload as a slice of the producer's own mapping.
    #[inline]
    pub(crate) fn payload_ref(&self, payload: Payload) -> &[u8] {
        self.check(payload);
        // SAFETY: in bounds (`check`) of a mapping that outlives `self`. Only this producer can
        // write the data memfd (`F_SEAL_FUTURE_WRITE` forbids any other writable mapping), and
        // its writes go through `&mut self`, so nothing writes these bytes while the slice lives.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(payload.start()), payload.len) }
    }

    /// The payload as a mutable slice of the producer's own mapping.
    #[inline]
    pub(crate) fn payload_mut(&mut self, payload: Payload) -> &mut [u8] {
        self.check(payload);
        // SAFETY: in bounds (`check`) of a writable mapping that outlives `self`; the exclusive
        // borrow of the only writer of the memfd (`F_SEAL_FUTURE_WRITE`) means no other access to
        // these bytes exists in this process while the slice lives, and the consumer's process
        // reads them only after the header that publishes them, stored later with Release.
        unsafe {
            std::slice::from_raw_parts_mut(self.base.as_ptr().add(payload.start()), payload.len)
        }
    }
}

#[cfg(sp_loom)]
impl<A> DataArea<A> {
    /// `capacity` zeroed bytes (a multiple of 8), shared by the two views made from it.
    pub(crate) fn new_model(capacity: usize) -> (DataArea<ReadWrite>, DataArea<ReadOnly>) {
        let words = std::sync::Arc::new((0..capacity / 8).map(|_| AtomicU64::new(0)).collect());
        (
            DataArea {
                words: std::sync::Arc::clone(&words),
                capacity,
                word_mask: (capacity - 1) & !7,
                _access: PhantomData,
            },
            DataArea {
                words,
                capacity,
                word_mask: (capacity - 1) & !7,
                _access: PhantomData,
            },
        )
    }

    fn word(&self, at: WordAt) -> &AtomicU64 {
        &self.words[(at.0 & self.word_mask) / 8]
    }

    pub(crate) fn load_header(&self, at: WordAt) -> u64 {
        self.word(at).load(Ordering::Acquire)
    }

    pub(crate) fn copy_out(&self, payload: Payload, dst: &mut [u8]) -> usize {
        self.check(payload);
        let n = dst.len().min(payload.len);
        for (i, chunk) in dst[..n].chunks_mut(8).enumerate() {
            let word = self.words[payload.start() / 8 + i]
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
        n
    }
}

#[cfg(sp_loom)]
impl DataArea<ReadWrite> {
    pub(crate) fn prefetch_for_write(&self, _payload: Payload) {}

    pub(crate) fn store_word(&self, at: WordAt, value: u64) {
        self.word(at).store(value, Ordering::Relaxed);
    }

    pub(crate) fn store_header(&self, at: WordAt, value: u64) {
        self.word(at).store(value, Ordering::Release);
    }

    /// Whole-word Relaxed stores; a partial last word is merged (only the producer writes).
    pub(crate) fn copy_in(&mut self, payload: Payload, src: &[u8]) {
        self.check(payload);
        let n = src.len().min(payload.len);
        for (i, chunk) in src[..n].chunks(8).enumerate() {
            let cell = &self.words[payload.start() / 8 + i];
            let mut word = cell.load(Ordering::Relaxed).to_ne_bytes();
            word[..chunk.len()].copy_from_slice(chunk);
            cell.store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
    }
}
