//! The synchronisation shim: every atomic, fence and data-area access of the ring protocol goes
//! through here, so a `--cfg sp_loom` build can swap in loom's model-checked versions.
//!
//! This is the pattern of tokio's `src/loom` and crossbeam's `primitive` module. In a normal build
//! the atomics are `std`'s and [`DataPtr`] is a raw pointer into a `memmap2::MmapRaw` mapping. In
//! a loom build the atomics are loom's and the data area is a vector of loom `AtomicU64` words
//! (see the loom [`DataPtr`]), so loom explores every value a read that is not ordered after its
//! write could return (a torn, stale or lost record fails the model's byte checks).
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

/// Whether `membarrier` is switched off for this process by [`NO_MEMBARRIER_ENV`].
#[cfg(not(sp_loom))]
static NO_MEMBARRIER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// With this environment variable set to `1` when a process first sets up a ring side, that
/// process never calls `membarrier(2)`: its publications use `fence(SeqCst)`, and its parked
/// sides re-check every millisecond. This is the path taken where the kernel or a seccomp filter
/// refuses `membarrier`; the switch exists to test it and for programs that must not have their
/// CPUs interrupted by a peer's `MEMBARRIER_CMD_GLOBAL_EXPEDITED`.
pub const NO_MEMBARRIER_ENV: &str = "SP_SHM_NO_MEMBARRIER";

/// `membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED)`, once per process: from then on a
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` in any process runs a full memory barrier on
/// every CPU that is running one of this process's threads. Called before a ring side is used.
/// Where the kernel or a seccomp filter refuses it, [`light_fence`] stays a full fence.
#[cfg(not(sp_loom))]
pub(crate) fn register_asymmetric_fences() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let off = std::env::var_os(NO_MEMBARRIER_ENV).is_some_and(|v| v == "1");
        let registered = !off
            && rustix::thread::membarrier(
                rustix::thread::MembarrierCommand::RegisterGlobalExpedited,
            )
            .is_ok();
        NO_MEMBARRIER.store(off, std::sync::atomic::Ordering::Relaxed);
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
/// (it re-checks on a short timeout instead). Also `false`, without the call, when
/// [`NO_MEMBARRIER_ENV`] switched `membarrier` off.
#[cfg(not(sp_loom))]
pub(crate) fn heavy_fence() -> bool {
    fence(Ordering::SeqCst);
    !NO_MEMBARRIER.load(std::sync::atomic::Ordering::Relaxed)
        && rustix::thread::membarrier(rustix::thread::MembarrierCommand::GlobalExpedited).is_ok()
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

    /// The 8-byte word at `off` as an atomic.
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + 8 <= len`; the atomic is only stored to if the mapping
    /// is writable.
    #[inline]
    unsafe fn word(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off + 8 <= self.len);
        // An atomic access is defined while the peer writes the word, and a load is allowed on a
        // read-only mapping (`std::sync::atomic`, "Atomic accesses to read-only memory"); callers
        // store only through writable mappings.
        // SAFETY: in bounds and 8-aligned (this function's contract), in a mapping that outlives
        // `self`.
        unsafe { AtomicU64::from_ptr(self.base.add(off).cast::<u64>()) }
    }

    /// Loads the 8-byte word at `off` (Relaxed: payload words, ordered by the header load).
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + 8 <= len`.
    #[inline]
    pub(crate) unsafe fn load_u64(&self, off: usize) -> u64 {
        // SAFETY: forwarded contract.
        unsafe { self.word(off) }.load(Ordering::Relaxed)
    }

    /// Loads a header word with Acquire: the record it publishes is visible after it.
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + 8 <= len`.
    #[inline]
    pub(crate) unsafe fn load_u64_acquire(&self, off: usize) -> u64 {
        // SAFETY: forwarded contract.
        unsafe { self.word(off) }.load(Ordering::Acquire)
    }

    /// Stores the 8-byte word at `off` (Relaxed: published by a later Release header store).
    ///
    /// # Safety
    /// `off` is a multiple of 8, `off + 8 <= len`, and the mapping is writable.
    #[inline]
    pub(crate) unsafe fn store_u64(&self, off: usize, value: u64) {
        // SAFETY: forwarded contract; the mapping is writable.
        unsafe { self.word(off) }.store(value, Ordering::Relaxed);
    }

    /// Stores a header word with Release: everything written before it is visible to a consumer
    /// that loads it with Acquire.
    ///
    /// # Safety
    /// `off` is a multiple of 8, `off + 8 <= len`, and the mapping is writable.
    #[inline]
    pub(crate) unsafe fn store_u64_release(&self, off: usize, value: u64) {
        // SAFETY: forwarded contract; the mapping is writable.
        unsafe { self.word(off) }.store(value, Ordering::Release);
    }

    /// Copies `dst.len()` bytes from `off` with 8-byte atomic loads.
    ///
    /// # Safety
    /// `off` is a multiple of 8 and `off + dst.len()` rounded up to 8 is `<= len`.
    #[inline]
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
    #[inline]
    pub(crate) unsafe fn copy_in(&self, off: usize, src: &[u8]) {
        debug_assert!(off + src.len() <= self.len);
        // SAFETY: in bounds and writable by this function's contract; `src` is private memory,
        // so the ranges do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(off), src.len()) };
    }

    /// A raw pointer to the byte at `off`.
    #[inline]
    pub(crate) fn ptr_at(&self, off: usize) -> *mut u8 {
        debug_assert!(off <= self.len);
        self.base.wrapping_add(off)
    }
}

/// The loom build's data area: one loom atomic per 8-byte word.
///
/// Atomic words rather than `UnsafeCell<u8>`s because header slots are read while the producer
/// may be writing them (that is how a consumer polls), and because the same bytes are a header in
/// one lap and payload in another: the model has to let a stale payload word be read where a
/// header is expected, as the real mapping would. Payload words are Relaxed, so loom lets a read
/// that is not ordered after its write return an older value; the models check every byte.
#[cfg(sp_loom)]
#[derive(Debug, Clone)]
pub(crate) struct DataPtr {
    words: std::sync::Arc<Vec<AtomicU64>>,
}

#[cfg(sp_loom)]
impl DataPtr {
    /// `len` zeroed bytes (`len` a multiple of 8).
    pub(crate) fn new_model(len: usize) -> Self {
        Self {
            words: std::sync::Arc::new((0..len / 8).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// As the mapped version.
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn load_u64(&self, off: usize) -> u64 {
        self.words[off / 8].load(Ordering::Relaxed)
    }

    /// As the mapped version.
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn load_u64_acquire(&self, off: usize) -> u64 {
        self.words[off / 8].load(Ordering::Acquire)
    }

    /// As the mapped version.
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn store_u64(&self, off: usize, value: u64) {
        self.words[off / 8].store(value, Ordering::Relaxed);
    }

    /// As the mapped version.
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn store_u64_release(&self, off: usize, value: u64) {
        self.words[off / 8].store(value, Ordering::Release);
    }

    /// As the mapped version: whole-word Relaxed loads.
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn copy_out(&self, off: usize, dst: &mut [u8]) {
        for (i, chunk) in dst.chunks_mut(8).enumerate() {
            let word = self.words[off / 8 + i]
                .load(Ordering::Relaxed)
                .to_ne_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }

    /// As the mapped version: whole-word Relaxed stores (a partial last word is merged; only the
    /// producer writes the data area).
    ///
    /// # Safety
    /// None in the model; the signature matches the mapped version.
    pub(crate) unsafe fn copy_in(&self, off: usize, src: &[u8]) {
        for (i, chunk) in src.chunks(8).enumerate() {
            let cell = &self.words[off / 8 + i];
            let mut word = cell.load(Ordering::Relaxed).to_ne_bytes();
            word[..chunk.len()].copy_from_slice(chunk);
            cell.store(u64::from_ne_bytes(word), Ordering::Relaxed);
        }
    }
}
