//! A shared mapping the peer reads and writes one atomic 64-bit word at a time, as the protocol
//! requires of the control block and the header words.

#![allow(unsafe_code)] // Atomic words in a mapping the other process writes at the same time.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

/// A `MAP_SHARED` read-write mapping of a memfd, used only through atomic word accesses (never a
/// reference to its bytes: the other process may write any of them at any time).
#[derive(Debug)]
pub struct Words(MmapRaw);

impl Words {
    /// Maps the first `len` bytes of `fd`, shared and writable.
    ///
    /// # Errors
    /// `mmap`'s error (for example `EPERM` for a memfd sealed against writing).
    pub fn map(fd: impl AsFd, len: usize) -> std::io::Result<Self> {
        MmapOptions::new()
            .len(len)
            .map_raw(fd.as_fd().as_raw_fd())
            .map(Self)
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is mapped (never, for a mapping made by [`Self::map`] with `len > 0`).
    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// Stores `value` at byte `offset` with Release (the ordering a header word and a published
    /// head need; for other words it costs nothing on the targets sp supports).
    ///
    /// # Panics
    /// If `offset` is not a multiple of 8 or the word is not inside the mapping.
    pub fn store(&self, offset: usize, value: u64) {
        self.word(offset).store(value, Ordering::Release);
    }

    /// Loads the word at byte `offset` with Acquire.
    ///
    /// # Panics
    /// As [`Self::store`].
    pub fn load(&self, offset: usize) -> u64 {
        self.word(offset).load(Ordering::Acquire)
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        assert!(
            offset.is_multiple_of(8) && offset + 8 <= self.0.len(),
            "word at {offset} of a {}-byte mapping",
            self.0.len()
        );
        // SAFETY: the word is inside the live mapping and 8-aligned (checked above; mappings are
        // page-aligned); the mapping lives as long as `self`, which the returned reference
        // borrows; and an `AtomicU64` over memory another process writes concurrently is defined
        // as long as every access here is atomic, which it is.
        unsafe { AtomicU64::from_ptr(self.0.as_mut_ptr().add(offset).cast::<u64>()) }
    }
}
