//! The single-producer single-consumer ring of variable-length records in shared memory.
//!
//! # Algorithm
//!
//! The data area is `capacity` bytes, a power of two. Both sides count in free-running `u64` byte
//! positions: the producer's *tail* (bytes ever committed) and the consumer's *head* (bytes ever
//! released); a byte position maps to offset `pos & (capacity - 1)` (Linux `io_uring` and
//! `perf_event` rings; the positions never wrap in practice: 2^64 bytes at 100 GB/s is 5 years).
//! The ring holds `tail - head <= capacity - 8` bytes: the 8 bytes at the tail are the zeroed
//! next slot (below).
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
//! whole record. A record therefore costs the consumer the cache lines of the record itself and
//! no index line.
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
//! Release (for padding: the word at offset 0 zeroed, then the padding's header); (B) the
//! consumer loads the header with Acquire, then reads the record and, later, the next slot.
//! (C) The consumer reads the record, then stores its head with Release; (D) the producer loads
//! the head with Acquire before it writes over those bytes. This is the (A)-(D) scheme of Linux
//! `kernel/events/ring_buffer.c`, with the header in place of the data head.
//!
//! # Waiting
//!
//! A side that finds the ring empty (or full) first publishes its own position, then spins,
//! yields and finally parks ([`IdleStrategy`]); `wait.rs` has the one loop behind every blocking
//! and `*_timeout` call, and the park protocol for callers that sleep elsewhere
//! ([`Consumer::prepare_wait`]). The single-record `*_timeout` calls start their clock lazily,
//! at the first park or periodic check of the wait, at most
//! [`CHECK_EVERY`](crate::idle::CHECK_EVERY) idle steps after the call began; the batch forms
//! take one deadline for the whole batch, so their clock starts at the call.
//!
//! # Fast path
//!
//! The calls made once per record (`reserve`, `commit`, `send`, `read`, dropping a grant) are
//! `#[inline]` down to the shared-memory accesses, and every wait is an out-of-line cold call.
//! A claim returned through memory from an out-of-line call is read back with a load wider than
//! the stores that wrote it; such a load cannot be forwarded from the store buffer and waits for
//! every earlier store to reach the cache, including the previous records' bytes, whose cache
//! lines may still be on their way back from the consumer's core.
//!
//! # Untrusted peer
//!
//! Every index and header read from shared memory is loaded once into a local, validated, and
//! only the local is used (io_uring's `READ_ONCE`): the head must not move backwards or pass the
//! committed tail, a header word must be zero or carry the commit bit, a length must not pass the
//! largest payload or the end of the data area, and a padding record must reach exactly to the
//! end and never start at offset 0 (so skipping padding terminates). A bad value returns
//! [`Error::Corrupt`](crate::Error::Corrupt); no value makes this code panic or access memory
//! outside its mappings: the data area is reached only through offsets `area.rs` checked. The
//! consumer maps the data area read-only (the producer sealed it with `F_SEAL_FUTURE_WRITE`), so
//! the only memory both sides can write is the control block, and it holds atomics only.
//!
//! # Files
//!
//! `area.rs`: the mappings and the checked offsets into the data area; `producer.rs` and
//! `consumer.rs`: the two sides; `wait.rs`: waiting, waking, and the external park protocol.

mod area;
mod consumer;
mod producer;
mod wait;

#[cfg(all(test, not(sp_loom)))]
mod tests;

#[cfg_attr(sp_loom, allow(unused_imports))] // The loom model builds no read-only view by name.
pub(crate) use area::{DataArea, ReadOnly, ReadWrite, Shared};
pub use consumer::{Consumer, ReadGrant, ReadGrantRef};
pub use producer::{Producer, WriteGrant};
pub use wait::WaitPrep;

use crate::error::{Corruption, Error};

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
    /// Times this side parked (in `poll`, or armed for an outside sleep by `prepare_wait`).
    pub parks: u64,
    /// Of those, parks without a working `membarrier` (refused by the kernel, or switched off
    /// with [`NO_MEMBARRIER_ENV`](crate::NO_MEMBARRIER_ENV)), which re-check every millisecond
    /// rather than trust the wake-up byte alone.
    pub rechecked_parks: u64,
}

fn corrupt(cause: Corruption, value: u64) -> Error {
    Error::Corrupt { cause, value }
}

/// A producer and consumer over a heap-allocated model of the shared memory (loom only).
#[cfg(sp_loom)]
pub(crate) fn model_pair(capacity: u64, max_payload: usize) -> (Producer, Consumer) {
    use crate::idle::IdleStrategy;
    use crate::layout::ControlBlock;
    use crate::wake::WakeSocket;

    let ctrl = std::sync::Arc::new(ControlBlock::new_model(capacity, max_payload as u64));
    let (data_p, data_c) = DataArea::<ReadWrite>::new_model(capacity as usize);
    let ptr = std::ptr::NonNull::from(&*ctrl);
    let (wake_p, wake_c) = WakeSocket::pair();
    // SAFETY: `ptr` points into the `Arc` each `Shared` keeps alive.
    #[allow(unsafe_code)]
    let (shared_p, shared_c) = unsafe {
        (
            Shared::new(ptr, data_p, ctrl.clone()),
            Shared::new(ptr, data_c, ctrl),
        )
    };
    let idle = IdleStrategy::park();
    (
        Producer::from_parts(shared_p, capacity, max_payload, wake_p, idle),
        Consumer::from_parts(shared_c, capacity, max_payload, wake_c, idle, 0),
    )
}
