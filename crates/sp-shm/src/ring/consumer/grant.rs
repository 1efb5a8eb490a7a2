//! What a reader holds while it looks at a record: [`ReadGrant`] (the record at the head, released
//! on drop) and [`ReadGrantRef`] (a record lent by `for_each_available`).

use super::super::area::{DataArea, ReadOnly};
use super::{Consumer, Record};

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
    /// The record is the consumer's `current` one: kept there rather than in the grant so that
    /// the hot path stores and loads it with matching widths.
    pub(in crate::ring) consumer: &'a mut Consumer,
}

/// A record seen by [`Consumer::for_each_available`]: copy-out access only.
#[derive(Debug)]
pub struct ReadGrantRef<'a> {
    pub(super) data: &'a DataArea<ReadOnly>,
    pub(super) rec: Record,
}

impl ReadGrant<'_> {
    /// The payload length.
    pub fn len(&self) -> usize {
        self.consumer.current.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record's kind.
    pub fn kind(&self) -> u32 {
        self.consumer.current.kind
    }

    /// Copies the payload into `dst[..len]`; returns how many bytes were copied
    /// (`min(len, dst.len())`).
    #[inline]
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        self.consumer
            .shared
            .data
            .copy_out(self.consumer.current.payload, dst)
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        self.consumer.copy_current()
    }

    /// A raw pointer to the first payload byte; `len()` bytes are readable, never writable.
    /// Read them with `read_volatile` or atomics: the producer's process can write them.
    #[cfg(not(sp_loom))]
    #[inline]
    pub fn as_ptr(&self) -> *const u8 {
        self.consumer
            .shared
            .data
            .payload_ptr(self.consumer.current.payload)
    }

    /// The payload as a plain slice, in place.
    ///
    /// # Safety
    /// The caller trusts the producer's process not to write these bytes while the slice lives
    /// (a well-behaved sp-shm producer never does: it writes only space the consumer has
    /// released). A hostile producer that does would make this a data race. Bounds are always
    /// guaranteed: the slice lies inside the record and the mapping whatever the peer does.
    #[cfg(not(sp_loom))]
    #[allow(unsafe_code)] // The trusted-peer view; its contract is the caller's.
    #[inline]
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        // SAFETY: the range is inside the read-only data mapping (`Payload` lies in the area) and
        // kept mapped by the borrowed consumer; the caller promises no concurrent writes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    pub(super) fn copy_into_vec(self, buf: &mut Vec<u8>) -> u32 {
        buf.clear();
        buf.resize(self.len(), 0);
        self.consumer
            .shared
            .data
            .copy_out(self.consumer.current.payload, buf);
        self.consumer.current.kind
    }
}

impl Drop for ReadGrant<'_> {
    #[inline]
    fn drop(&mut self) {
        self.consumer.release();
    }
}

impl ReadGrantRef<'_> {
    /// The payload length.
    pub fn len(&self) -> usize {
        self.rec.payload.len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The record's kind.
    pub fn kind(&self) -> u32 {
        self.rec.kind
    }

    /// Copies the payload into `dst`; returns `min(len, dst.len())`.
    #[inline]
    pub fn copy_to_slice(&self, dst: &mut [u8]) -> usize {
        self.data.copy_out(self.rec.payload, dst)
    }

    /// The payload, copied.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.len()];
        self.data.copy_out(self.rec.payload, &mut bytes);
        bytes
    }

    /// The payload as a plain slice, in place; see [`ReadGrant::as_slice_trusted`].
    ///
    /// # Safety
    /// As [`ReadGrant::as_slice_trusted`]: the caller trusts the producer's process not to write
    /// these bytes while the slice lives.
    #[cfg(not(sp_loom))]
    #[allow(unsafe_code)] // The trusted-peer view; its contract is the caller's.
    #[inline]
    pub unsafe fn as_slice_trusted(&self) -> &[u8] {
        let ptr = self.data.payload_ptr(self.rec.payload);
        // SAFETY: the range is inside the read-only data mapping (`Payload` lies in the area),
        // kept mapped by the consumer this reference borrows; the caller promises no concurrent
        // writes.
        unsafe { std::slice::from_raw_parts(ptr, self.len()) }
    }
}
