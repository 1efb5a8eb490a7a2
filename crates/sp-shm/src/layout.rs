//! The byte layout shared by both processes: the control block and the record header.
//!
//! The control block follows aeron's `aeron_rb.h` trailer and crossbeam's `CachePadded`: every
//! word one side writes sits alone on its own 128-byte line (two 64-byte lines, because adjacent-
//! line prefetchers pull pairs), so the consumer's head and the two waiting flags never share a line.
//! Records follow aeron's framing: an 8-byte header `{len: u32, kind: u32}`, the record padded to
//! 8 bytes, and a padding record (aeron's `PADDING_MSG_TYPE_ID`) filling the end of the data area
//! when the next record would straddle it. As in aeron's log buffers, the header word is also the
//! record's publication: it is stored last, with Release, and carries a commit bit, so a header
//! word of zero means "nothing here yet". `docs/protocol.md` is the normative description.

use crate::error::InvalidConfig;
use crate::sync::AtomicU64;

/// `"SPSHMCTL"` as a little-endian u64: the first word of every control block.
pub(crate) const CTRL_MAGIC: u64 = u64::from_le_bytes(*b"SPSHMCTL");
/// Protocol version. Version 2: records are published by their header word, not by a tail index.
pub(crate) const VERSION: u32 = 2;
/// The layout word: line size (128) in the low 16 bits, control-block file size in 4 KiB units
/// (1) in the next 16 bits.
pub(crate) const LAYOUT: u32 = 128 | (1 << 16);
/// Size of the control memfd in bytes.
pub(crate) const CTRL_SIZE: usize = 4096;
/// Size of a record header.
pub(crate) const HEADER_LEN: usize = 8;
/// Record alignment.
pub(crate) const ALIGN: usize = 8;
/// The kind of a padding record.
pub(crate) const PADDING: u32 = u32::MAX;
/// Set in the `len` half of every header word: a word without it is not a header. Lengths stay
/// below 2^31 (a payload is at most capacity / 4 <= 1 GiB), so the bit is free.
pub(crate) const COMMITTED: u32 = 1 << 31;
/// Smallest capacity (one page).
pub(crate) const MIN_CAPACITY: usize = 4096;
/// Largest capacity (4 GiB: lengths stay far below `u32::MAX`).
pub(crate) const MAX_CAPACITY: usize = 1 << 32;

/// The shared control block, `#[repr(C)]`, 640 bytes at the start of the control memfd.
///
/// Offsets (bytes): 0 magic, 8 version | layout << 32, 16 capacity, 24 largest payload; 128
/// reserved (version 1's tail index; version 2 publishes records by their headers and leaves this
/// line zero and unread); 256 head (consumer writes); 384 consumer-waiting flag; 512
/// producer-waiting flag. Every field is atomic because the peer can write any of them at any
/// time.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ControlBlock {
    pub(crate) magic: AtomicU64,
    pub(crate) version_layout: AtomicU64,
    pub(crate) capacity: AtomicU64,
    pub(crate) max_payload: AtomicU64,
    _pad0: Pad<{ 128 - 32 }>,
    _reserved: Line,
    pub(crate) head: Line,
    pub(crate) consumer_waiting: Line,
    pub(crate) producer_waiting: Line,
}

/// One atomic word alone on a 128-byte line.
#[repr(C, align(128))]
#[derive(Debug)]
pub(crate) struct Line {
    pub(crate) word: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
struct Pad<const N: usize>([u8; N]);

#[cfg(not(sp_loom))]
const _: () = {
    assert!(std::mem::offset_of!(ControlBlock, _reserved) == 128);
    assert!(std::mem::offset_of!(ControlBlock, head) == 256);
    assert!(std::mem::offset_of!(ControlBlock, consumer_waiting) == 384);
    assert!(std::mem::offset_of!(ControlBlock, producer_waiting) == 512);
    assert!(std::mem::size_of::<ControlBlock>() == 640);
    assert!(std::mem::size_of::<ControlBlock>() <= CTRL_SIZE);
    assert!(cfg!(target_endian = "little"));
};

impl ControlBlock {
    /// A zeroed control block with its header filled in (for the loom model).
    #[cfg(sp_loom)]
    pub(crate) fn new_model(capacity: u64, max_payload: u64) -> Self {
        let line = || Line {
            word: AtomicU64::new(0),
        };
        Self {
            magic: AtomicU64::new(CTRL_MAGIC),
            version_layout: AtomicU64::new(version_layout()),
            capacity: AtomicU64::new(capacity),
            max_payload: AtomicU64::new(max_payload),
            _pad0: Pad([0; 96]),
            _reserved: line(),
            head: line(),
            consumer_waiting: line(),
            producer_waiting: line(),
        }
    }
}

/// The second header word: version in the low half, layout in the high half.
pub(crate) fn version_layout() -> u64 {
    u64::from(VERSION) | (u64::from(LAYOUT) << 32)
}

/// Bytes a record with `len` payload bytes occupies: header plus payload, rounded up to 8.
#[inline]
pub(crate) fn record_size(len: usize) -> usize {
    // `next_multiple_of` compiles to a branch or a select; the mask is two instructions, and
    // `len` (at most a quarter of a ring of at most 4 GiB) is far from overflowing.
    (HEADER_LEN + len + (ALIGN - 1)) & !(ALIGN - 1)
}

/// The header word of a record (little-endian: `len | COMMITTED` in bytes 0..4, `kind` in 4..8).
/// Never zero. `len` must be below 2^31.
#[inline]
pub(crate) fn encode_header(len: u32, kind: u32) -> u64 {
    debug_assert!(len & COMMITTED == 0);
    u64::from(len | COMMITTED) | (u64::from(kind) << 32)
}

/// What a header slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    /// Zero: no record published here yet.
    Empty,
    /// A committed header: `(len, kind)`.
    Header(u32, u32),
    /// Neither zero nor a committed header: only a broken or hostile producer writes this.
    Invalid,
}

/// Decodes a header slot.
#[inline]
pub(crate) fn decode_header(word: u64) -> Slot {
    let (len, kind) = (word as u32, (word >> 32) as u32);
    if word == 0 {
        Slot::Empty
    } else if len & COMMITTED == 0 {
        Slot::Invalid
    } else {
        Slot::Header(len & !COMMITTED, kind)
    }
}

/// Checks a capacity / largest-payload pair: capacity a power of two in
/// [`MIN_CAPACITY`]..=[`MAX_CAPACITY`], payload a multiple of 8 in `8..=capacity / 4`.
pub(crate) fn check_geometry(capacity: u64, max_payload: u64) -> Result<(), InvalidConfig> {
    if !capacity.is_power_of_two()
        || capacity < MIN_CAPACITY as u64
        || capacity > MAX_CAPACITY as u64
    {
        return Err(InvalidConfig::Capacity);
    }
    if max_payload < 8 || max_payload > capacity / 4 || !max_payload.is_multiple_of(8) {
        return Err(InvalidConfig::MaxPayload);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        assert_eq!(decode_header(encode_header(7, 42)), Slot::Header(7, 42));
        assert_eq!(decode_header(encode_header(0, 0)), Slot::Header(0, 0));
        assert_eq!(
            encode_header(1, 2).to_le_bytes(),
            [1, 0, 0, 0x80, 2, 0, 0, 0]
        );
        assert_eq!(decode_header(0), Slot::Empty);
        assert_eq!(decode_header(7 | (42 << 32)), Slot::Invalid);
    }

    #[test]
    fn record_sizes_are_aligned() {
        assert_eq!(record_size(0), 8);
        assert_eq!(record_size(1), 16);
        assert_eq!(record_size(8), 16);
        assert_eq!(record_size(9), 24);
    }

    #[test]
    fn geometry_checks() {
        assert!(check_geometry(4096, 1024).is_ok());
        assert!(check_geometry(4097, 1024).is_err());
        assert!(check_geometry(2048, 512).is_err());
        assert!(check_geometry(4096, 1025).is_err());
        assert!(check_geometry(4096, 2048).is_err());
        assert!(check_geometry(4096, 0).is_err());
    }
}
