//! The synchronisation shim: every atomic, fence and data-area access of the ring protocol goes
//! through here, so a `--cfg sp_loom` build can swap in loom's model-checked versions.
//!
//! This is the pattern of tokio's `src/loom` and crossbeam's `primitive` module. In a normal build
//! the atomics are `std`'s and [`DataPtr`] is a raw pointer into a `memmap2::MmapRaw` mapping. In
//! a loom build the atomics are loom's and the data area is a vector of loom `UnsafeCell<u8>`, so
//! loom reports any read of a record that is not ordered after its write (a torn or lost record).
//!
//! Data-area reads use 8-byte atomic loads rather than `&[u8]`: the peer process may write those
//! bytes at any time (a hostile producer can), and a racing atomic load is defined behaviour
//! where a plain read through a reference is not. Records are 8-byte aligned and padded to a
//! multiple of 8 bytes, so whole-word loads never leave a record's slot.

#![allow(unsafe_code)] // Raw-pointer access to the mapped data area (see `DataPtr`).

#[cfg(sp_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering, fence};
#[cfg(not(sp_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering, fence};

/// Whether this process is registered for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, so that a peer's
/// [`heavy_fence`] orders this process's memory accesses and [`light_fence`] may be a compiler
/// barrier only.
#[cfg(not(sp_loom))]
static ASYMMETRIC: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`, once per process: from then on a
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` in any process runs a full memory barrier on
/// every CPU that is running one of this process's threads. Called before a ring side is used.
/// Where the kernel or a seccomp filter refuses it, [`light_fence`] stays a full fence.
#[cfg(not(sp_loom))]
pub(crate) fn register_asymmetric_fences() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let registered =
            rustix::thread::membarrier(rustix::thread::MembarrierCommand::RegisterGlobalExpedited)
                .is_ok();
        ASYMMETRIC.store(registered, std::sync::atomic::Ordering::Relaxed);
    });
}

#[cfg(sp_loom)]
pub(crate) fn register_asymmetric_fences() {}

/// The fast side of the asymmetric Dekker fence, issued by a side after it publishes its position
/// and before it loads the other side's waiting flag (once per publication, so at saturation).
///
/// With this process registered (see [`register_asymmetric_fences`]) it is a compiler barrier:
/// the parking side's [`heavy_fence`] interrupts this thread wherever it is and runs a full barrier
/// there, which orders our store before our load as a `fence(SeqCst)` would. This is the
/// `membarrier(2)` pattern of liburcu and the man page's example; it halves the cost of a
/// one-record publication on x86 (measured: ring_vs_socket, about 18 → 40 M records/s). Without
/// registration it is `fence(SeqCst)`.
#[cfg(not(sp_loom))]
#[inline]
pub(crate) fn light_fence() {
    if ASYMMETRIC.load(std::sync::atomic::Ordering::Relaxed) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The slow side of the asymmetric fence, issued by a side that is about to park, after it sets
/// its waiting flag and before its re-check: `fence(SeqCst)`, then
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`. Returns `false` if the `membarrier` call failed:
/// the peer may then have skipped its full fence, and the caller must not rely on being woken
/// (it re-checks on a short timeout instead).
#[cfg(not(sp_loom))]
pub(crate) fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok()
}

/// loom has no `membarrier`: the model checks the symmetric protocol, both fences `SeqCst`.
#[cfg(sp_loom)]
pub(crate) fn light_fence() {
    fence(Ordering::SeqCst);
}

/// loom has no `membarrier`: the model checks the symmetric protocol, both fences `SeqCst`.
#[cfg(sp_loom)]
pub(crate) fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    true
}

/// The ring's data area: `len` bytes that the producer writes and the consumer reads.
///
/// In a normal build this is a raw pointer into a mapping that something else (the ring's
/// `Shared`) keeps alive. No reference to the bytes is ever formed here.
#[cfg(not(sp_loom))]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataPtr {
    base: *mut u8,
    len: usize,
}

#[cfg(not(sp_loom))]
// SAFETY: `DataPtr` is a pointer into a shared mapping whose owner is moved along with it; all
// access goes through the unsafe methods below whose callers uphold the ring protocol, which
// does not depend on the thread it runs on.
unsafe impl Send for DataPtr {}
#[cfg(not(sp_loom))]
// SAFETY: as for `Send`; `&DataPtr` only allows the same raw accesses.
unsafe impl Sync for DataPtr {}

#[cfg(not(sp_loom))]
impl DataPtr {
    /// Wraps `len` bytes at `base`.
    ///
    /// # Safety
    /// `base..base + len` must stay mapped (readable; writable if any `store`/`copy_in` is
    /// called) for as long as this value or a copy is used, and `base` must be 8-byte aligned.
    pub(crate) unsafe fn new(base: *mut u8, len: usize) -> Self {
        debug_assert!((base as usize).is_multiple_of(8));
        Self { base, len }
    }

    /// Loads the 8-byte word at `off` (Relaxed; ordering comes from the index loads).
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + 8 <= len`.
    pub(crate) unsafe fn load_u64(&self, off: usize) -> u64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds and aligned (this function's contract); an atomic load is defined while
        // the peer writes the word, and a Relaxed load is allowed on a read-only mapping
        // (`std::sync::atomic`, "Atomic accesses to read-only memory"); nothing stores through it.
        let word = unsafe { AtomicU64::from_ptr(self.base.add(off).cast::<u64>()) };
        word.load(Ordering::Relaxed)
    }

    /// Stores the 8-byte word at `off` (Relaxed; published by the later tail store).
    ///
    /// # Safety
    /// `off` is a multiple of 8, `off + 8 <= len`, and the mapping is writable.
    pub(crate) unsafe fn store_u64(&self, off: usize, value: u64) {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // SAFETY: in bounds, aligned and writable by this function's contract.
        let word = unsafe { AtomicU64::from_ptr(self.base.add(off).cast::<u64>()) };
        word.store(value, Ordering::Relaxed);
    }

    /// Copies `dst.len()` bytes from `off` with 8-byte atomic loads.
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + dst.len()` rounded up to 8 is `<= len`.
    pub(crate) unsafe fn copy_out(&self, off: usize, dst: &mut [u8]) {
        debug_assert!(off.is_multiple_of(8) && off + dst.len().next_multiple_of(8) <= self.len);
        let mut chunks = dst.chunks_exact_mut(8);
        let mut word_off = off;
        for chunk in &mut chunks {
            // SAFETY: `word_off + 8 <= off + dst.len() <= len`, aligned.
            let word = unsafe { self.load_u64(word_off) };
            chunk.copy_from_slice(&word.to_ne_bytes());
            word_off += 8;
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            // SAFETY: the record slot is padded to 8 bytes, so the whole last word is in bounds
            // (this function's contract rounds up).
            let word = unsafe { self.load_u64(word_off) };
            rest.copy_from_slice(&word.to_ne_bytes()[..rest.len()]);
        }
    }

    /// Copies `src` to `off`.
    ///
    /// # Safety
    /// `off + src.len() <= len`, the mapping is writable, and the consumer does not read these
    /// bytes until they are published.
    pub(crate) unsafe fn copy_in(&self, off: usize, src: &[u8]) {
        debug_assert!(off + src.len() <= self.len);
        // SAFETY: in bounds and writable by this function's contract; `src` is private memory,
        // so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) };
    }

    /// A raw pointer to the byte at `off`.
    pub(crate) fn ptr_at(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.len);
        self.base.wrapping_add(off)
    }
}

/// The loom build's data area: one loom cell per byte, so loom checks every access.
#[cfg(sp_loom)]
#[derive(Debug, Clone)]
pub(crate) struct DataPtr {
    cells: std::sync::Arc<Cells>,
}

/// The model's bytes.
#[cfg(sp_loom)]
#[derive(Debug)]
pub(crate) struct Cells(Vec<loom::cell::UnsafeCell<u8>>);

// SAFETY: shared between the model's producer and consumer threads exactly like the mapped data
// area; loom's `UnsafeCell` checks every access for races, which is the point of the model.
#[cfg(sp_loom)]
unsafe impl Sync for Cells {}
// SAFETY: as for `Sync`.
#[cfg(sp_loom)]
unsafe impl Send for Cells {}

#[cfg(sp_loom)]
impl DataPtr {
    /// `len` zeroed cells.
    pub(crate) fn new_model(len: usize) -> Self {
        Self {
            cells: std::sync::Arc::new(Cells(
                (0..len).map(|_| loom::cell::UnsafeCell::new(0)).collect(),
            )),
        }
    }

    /// As the mapped version; loom checks the accesses.
    ///
    /// # Safety
    /// `off + 8 <= len`.
    pub(crate) unsafe fn load_u64(&self, off: usize) -> u64 {
        let mut bytes = [0u8; 8];
        // SAFETY: forwarded contract.
        unsafe { self.copy_out(off, &mut bytes) };
        u64::from_ne_bytes(bytes)
    }

    /// As the mapped version; loom checks the accesses.
    ///
    /// # Safety
    /// `off + 8 <= len`.
    pub(crate) unsafe fn store_u64(&self, off: usize, value: u64) {
        // SAFETY: forwarded contract.
        unsafe { self.copy_in(off, &value.to_ne_bytes()) };
    }

    /// As the mapped version; loom checks the accesses.
    ///
    /// # Safety
    /// `off + dst.len() <= len`.
    pub(crate) unsafe fn copy_out(&self, off: usize, dst: &mut [u8]) {
        for (i, byte) in dst.iter_mut().enumerate() {
            // SAFETY: loom checks that no write to this cell races with the read.
            *byte = self.cells.0[off + i].with(|p| unsafe { *p });
        }
    }

    /// As the mapped version; loom checks the accesses.
    ///
    /// # Safety
    /// `off + src.len() <= len`.
    pub(crate) unsafe fn copy_in(&self, off: usize, src: &[u8]) {
        for (i, byte) in src.iter().enumerate() {
            // SAFETY: loom checks that no access to this cell races with the write.
            self.cells.0[off + i].with_mut(|p| unsafe { *p = *byte });
        }
    }
}
