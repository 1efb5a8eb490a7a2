//! `ref-ring`: a plain fixed-slot single-producer single-consumer ring between the two processes,
//! the yardstick for the sp-shm ring rows (their throughput `×limit` is taken against it).
//!
//! It is the textbook ring and nothing more, so that what it measures is the machine: one memfd
//! (close-on-exec, mapped `MAP_SHARED` by both processes, handed to the child by descriptor) holds
//! two rings, driver → child and child → driver. Each ring is
//!
//! - a header page: the producer's index (`tail`, messages published) alone on the first 128-byte
//!   line, the consumer's index (`head`, messages released) alone on the second;
//! - then `n_slots` slots of the message size rounded up to 8 bytes, `n_slots` a power of two
//!   chosen so that the ring has about as many bytes as the sp-shm ring gets for that size
//!   (`ring_capacity` in `shm.rs`). Message `i` lives in slot `i & (n_slots - 1)`.
//!
//! The indices are free-running `u64` message counts: the ring is empty when `head == tail` and
//! full when `tail - head == n_slots`. Each side keeps its own index privately and publishes it
//! with a Release store after every message; it caches the other side's index and reloads it
//! (Acquire) only when the cache says full (producer) or empty (consumer) — aeron's
//! `head_cache_position`, the disruptor's `cachedValue`. The producer writes the message in place
//! in its slot; the consumer copies the slot into a private buffer, releases the slot, and hands
//! the copy (in a page-aligned private buffer) to the check.
//!
//! Waiting spins (`std::hint::spin_loop`): this is a ceiling, and like `sp-shm-spin` it needs a
//! core per side. Every [`CHECK_EVERY`] spins a waiting side yields the core (as sp-shm's spin
//! strategy does) and polls its end of a socketpair whose other end the peer holds, so a dead
//! peer ends the wait; it gives up after [`WAIT_LIMIT`].
//!
//! The peer is the other half of this benchmark; the indices it publishes are still checked
//! (`head <= tail <= head + n_slots`) before use, so a wrong one is an error rather than an
//! access outside a slot.

// Raw pointers into the shared mapping: atomics for the two indices, the producer's slot while
// it owns it, and the consumer's copy out of a slot (see the SAFETY comments).
#![allow(unsafe_code)]

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions, MmapRaw};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::fs::MemfdFlags;
use sp_core::SocketKind;

use crate::error::{Error, Result};
use crate::transport::shm::ring_capacity;
use crate::transport::{Check, Fill, Link, Offer, take_fds};

/// Bytes per index line: two cache lines, so that the adjacent-line prefetcher does not pair the
/// two indices.
const LINE: usize = 128;

/// Bytes before the first slot: `tail` at 0, `head` at [`LINE`], slots page-aligned.
const HEADER: usize = 4096;

/// Spins between two looks at the hang-up socket and the clock.
const CHECK_EVERY: u32 = 1024;

/// How long a side waits for its peer before it reports it as stuck.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

/// The shape of both rings for one message size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geometry {
    /// Bytes per message.
    size: usize,
    /// Bytes per slot: `size` rounded up to 8.
    slot: usize,
    /// Slots per ring, a power of two, at least 2.
    n_slots: u64,
    /// Bytes per ring, header included, a multiple of the page size.
    ring_len: usize,
}

/// One direction inside the mapping. Only raw pointers: the peer writes these bytes.
#[derive(Debug, Clone, Copy)]
struct Ring {
    /// The ring's header page.
    base: *mut u8,
    geometry: Geometry,
}

/// One side of the duplex ref-ring: producer of one ring, consumer of the other.
#[derive(Debug)]
struct RefRingLink {
    /// Keeps both rings mapped; `out` and `inbound` point into it.
    _map: MmapRaw,
    out: Ring,
    inbound: Ring,
    /// Producer: messages written to `out` (published after each one).
    tail: u64,
    /// Producer: the consumer's `head` of `out` as last loaded.
    head_cache: u64,
    /// Consumer: messages released from `inbound` (published after each one).
    head: u64,
    /// Consumer: the producer's `tail` of `inbound` as last loaded.
    tail_cache: u64,
    /// The consumer's private copy of the message just read: page-aligned, like the slots of
    /// messages of whole pages. On this machine's CPU a `memcpy` (`rep movsb`) of 4 KiB to
    /// 256 KiB whose destination sits 16 bytes off the source's offset in the page (a heap
    /// `Vec` against a page-aligned slot) runs at ~1 GB/s instead of 15-90 GB/s.
    buf: MmapMut,
    /// This side's end of a socketpair; the peer's end closes when the peer dies.
    hang_up: OwnedFd,
}

impl Geometry {
    fn new(size: usize) -> Self {
        let slot = size.next_multiple_of(8).max(8);
        let fit = (ring_capacity(size) / slot).max(2);
        // The largest power of two not above `fit`.
        let n_slots = 1u64 << (usize::BITS - 1 - fit.leading_zeros());
        let ring_len = (HEADER + n_slots as usize * slot).next_multiple_of(4096);
        Self {
            size,
            slot,
            n_slots,
            ring_len,
        }
    }

    /// Bytes of the memfd: two rings.
    fn file_len(self) -> usize {
        2 * self.ring_len
    }
}

impl Ring {
    /// The ring at `offset` in `map`.
    fn at(map: &MmapRaw, offset: usize, geometry: Geometry) -> Self {
        debug_assert!(offset + geometry.ring_len <= map.len());
        // The pointer stays inside the mapping: `offset + ring_len <= len` by construction of
        // the file (two rings of `ring_len`).
        let base = map.as_mut_ptr().wrapping_add(offset);
        Self { base, geometry }
    }

    /// The producer's index, published by the producer after every message.
    fn tail(&self) -> &AtomicU64 {
        // SAFETY: `base` is page-aligned (a mapping offset that is a multiple of 4096) and the
        // first 8 bytes of the header lie inside the mapping, which outlives `self` (both live in
        // the same `RefRingLink`). Both processes access these bytes only through atomics.
        unsafe { AtomicU64::from_ptr(self.base.cast()) }
    }

    /// The consumer's index, published by the consumer after every message.
    fn head(&self) -> &AtomicU64 {
        // SAFETY: as for `tail`: 8 bytes at `base + LINE`, inside the header page, 8-aligned,
        // accessed only through atomics in both processes.
        unsafe { AtomicU64::from_ptr(self.base.add(LINE).cast()) }
    }

    /// The first byte of the slot of message `idx`.
    fn slot(&self, idx: u64) -> *mut u8 {
        let i = (idx & (self.geometry.n_slots - 1)) as usize;
        debug_assert!(HEADER + (i + 1) * self.geometry.slot <= self.geometry.ring_len);
        // In bounds: `i < n_slots` and `HEADER + n_slots * slot <= ring_len`.
        self.base.wrapping_add(HEADER + i * self.geometry.slot)
    }
}

/// Driver side: the memfd (mapped here before it is sent) and one end of the hang-up socketpair
/// go to the child, which derives the same geometry from the message size.
pub(super) fn offer(size: usize) -> Result<Offer> {
    let geometry = Geometry::new(size);
    let memfd = rustix::fs::memfd_create("sp-bench-ref-ring", MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&memfd, geometry.file_len() as u64)?;
    let map = map(&memfd, geometry)?;
    let (mine, theirs) = sp_core::pair(SocketKind::Stream)?;
    Ok(Offer {
        extra: String::new(),
        fds: vec![memfd, theirs.into()],
        finish: Box::new(move || {
            Ok(Box::new(RefRingLink::new(map, geometry, 0, mine.into())?) as _)
        }),
    })
}

/// Child side: maps the driver's memfd after checking its length; produces into the second ring.
pub(super) fn accept(size: usize, fds: Vec<OwnedFd>) -> Result<Box<dyn Link>> {
    let geometry = Geometry::new(size);
    let [memfd, hang_up] = take_fds(fds)?;
    let stat = rustix::fs::fstat(&memfd)?;
    if stat.st_size as u64 != geometry.file_len() as u64 {
        return Err(Error::Child(format!(
            "ref-ring: the memfd has {} bytes, expected {}",
            stat.st_size,
            geometry.file_len()
        )));
    }
    let map = map(&memfd, geometry)?;
    Ok(Box::new(RefRingLink::new(map, geometry, 1, hang_up)?))
}

/// Maps the whole file shared, read-write.
fn map(memfd: &OwnedFd, geometry: Geometry) -> Result<MmapRaw> {
    Ok(MmapOptions::new().len(geometry.file_len()).map_raw(memfd)?)
}

impl RefRingLink {
    /// `side` 0 (driver) produces into ring 0 and consumes ring 1; side 1 the other way round.
    fn new(map: MmapRaw, geometry: Geometry, side: usize, hang_up: OwnedFd) -> Result<Self> {
        let out = Ring::at(&map, side * geometry.ring_len, geometry);
        let inbound = Ring::at(&map, (1 - side) * geometry.ring_len, geometry);
        Ok(Self {
            _map: map,
            out,
            inbound,
            tail: 0,
            head_cache: 0,
            head: 0,
            tail_cache: 0,
            buf: MmapMut::map_anon(geometry.size)?,
            hang_up,
        })
    }
}

impl Link for RefRingLink {
    fn send(&mut self, fill: &mut Fill<'_>) -> Result<()> {
        let n_slots = self.out.geometry.n_slots;
        if self.tail - self.head_cache == n_slots {
            let (out, tail) = (self.out, self.tail);
            self.head_cache = wait_for(&self.hang_up, || {
                // SYNC POINT: Acquire pairs with the consumer's Release store of `head` after
                // it copied the slot out: its reads of that slot happen before our writes.
                let head = out.head().load(Ordering::Acquire);
                check_indices(head, tail, n_slots)?;
                Ok((tail - head < n_slots).then_some(head))
            })?;
        }
        let slot = self.out.slot(self.tail);
        // SAFETY: the slot of message `tail` is this producer's alone until it publishes
        // `tail + 1`: the consumer reads only slots of messages below the published tail, and
        // it has released the message that last used this slot (`tail - head < n_slots`, with
        // the Acquire above ordering its copy before our writes). `slot .. slot + size` lies
        // inside the mapping (`Ring::slot`), which outlives the borrow, and nothing else in
        // this process refers to it.
        let bytes = unsafe { std::slice::from_raw_parts_mut(slot, self.out.geometry.size) };
        fill(bytes);
        self.tail += 1;
        // SYNC POINT: Release pairs with the consumer's Acquire load of `tail`: the message's
        // bytes are visible before the index that says they are there.
        self.out.tail().store(self.tail, Ordering::Release);
        Ok(())
    }

    fn recv(&mut self, check: &mut Check<'_>) -> Result<()> {
        let n_slots = self.inbound.geometry.n_slots;
        if self.head == self.tail_cache {
            let (inbound, head) = (self.inbound, self.head);
            self.tail_cache = wait_for(&self.hang_up, || {
                // SYNC POINT: Acquire pairs with the producer's Release store of `tail` after it
                // wrote the message: its bytes are visible to the copy below.
                let tail = inbound.tail().load(Ordering::Acquire);
                check_indices(head, tail, n_slots)?;
                Ok((tail != head).then_some(tail))
            })?;
        }
        let slot = self.inbound.slot(self.head);
        // SAFETY: a plain copy out of memory the peer process maps is sound here because the
        // producer never writes a slot the consumer owns: the slot of message `head` was
        // published (`head < tail`, loaded with Acquire) and the producer writes it again only
        // after it has loaded a `head` past this message, which we store (Release) only after
        // the copy has finished. So no write races with this read. Source and destination are
        // `size` bytes each, in bounds (`Ring::slot`; `buf` has `size` bytes), and do not
        // overlap (two different mappings).
        unsafe {
            std::ptr::copy_nonoverlapping(slot, self.buf.as_mut_ptr(), self.buf.len());
        }
        self.head += 1;
        // SYNC POINT: Release pairs with the producer's Acquire load of `head`: our copy of the
        // slot happens before its next write there.
        self.inbound.head().store(self.head, Ordering::Release);
        check(&self.buf)
    }
}

/// The peer's index is in range: `head <= tail <= head + n_slots`.
fn check_indices(head: u64, tail: u64, n_slots: u64) -> Result<()> {
    if head <= tail && tail - head <= n_slots {
        Ok(())
    } else {
        Err(Error::Corrupt(format!(
            "ref-ring indices out of range: head {head}, tail {tail}, {n_slots} slots"
        )))
    }
}

/// Spins until `attempt` yields a value. Every [`CHECK_EVERY`] spins it yields the core, as
/// sp-shm's spin strategy does (on a machine with more runnable threads than cores a side that
/// never yields burns its share while it waits), looks at the hang-up socket (then tries once
/// more, so nothing published before the peer left is lost) and at the clock.
fn wait_for<T>(hang_up: &OwnedFd, mut attempt: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let mut spins = 0u32;
    let mut since: Option<Instant> = None;
    loop {
        if let Some(value) = attempt()? {
            return Ok(value);
        }
        std::hint::spin_loop();
        spins = spins.wrapping_add(1);
        if spins.is_multiple_of(CHECK_EVERY) {
            std::thread::yield_now();
            if hung_up(hang_up)? {
                return match attempt()? {
                    Some(value) => Ok(value),
                    None => Err(Error::Core(sp_core::Error::PeerGone)),
                };
            }
            if since.get_or_insert_with(Instant::now).elapsed() > WAIT_LIMIT {
                return Err(Error::TimedOut("ref-ring: the peer neither moved nor left"));
            }
        }
    }
}

/// `poll(2)` with a zero timeout: whether the peer's end of the socketpair is closed. The peer
/// never writes on it, so readable means end of file.
fn hung_up(fd: &OwnedFd) -> Result<bool> {
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    loop {
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(fds[0]
        .revents()
        .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_a_power_of_two_with_about_the_sp_shm_ring_bytes() {
        for size in [8, 64, 1000, 1 << 10, 64 << 10, 1 << 20, 16 << 20] {
            let g = Geometry::new(size);
            assert!(g.n_slots.is_power_of_two() && g.n_slots >= 2, "{g:?}");
            assert_eq!(g.slot % 8, 0);
            assert!(g.slot >= size);
            let bytes = g.n_slots as usize * g.slot;
            assert!(bytes <= ring_capacity(size), "{g:?}");
            assert!(2 * bytes > ring_capacity(size) / 2, "{g:?}");
            assert_eq!(g.ring_len % 4096, 0);
        }
        assert_eq!(Geometry::new(64).n_slots, 1 << 14);
        assert_eq!(Geometry::new(1 << 20).n_slots, 8);
        assert_eq!(Geometry::new(16 << 20).n_slots, 8);
    }

    #[test]
    fn indices_out_of_range_are_refused() {
        assert!(check_indices(3, 3, 4).is_ok());
        assert!(check_indices(3, 7, 4).is_ok());
        assert!(check_indices(4, 3, 4).is_err());
        assert!(check_indices(3, 8, 4).is_err());
    }
}
