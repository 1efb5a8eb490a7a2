//! The receiver's copies of ring records: 8-aligned (plain data is validated in place in them),
//! and placed in the page so that decoders' `memcpy` out of them stays fast.

use zerocopy::IntoBytes;

/// An 8-aligned buffer for copies of records, which start [`COPY_PAGE_OFFSET`] bytes past a page
/// boundary.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    words: Vec<u64>,
    /// Where copies start in `words`, in bytes.
    pad: usize,
}

/// Where a copy of a record starts within a page.
///
/// Decoders `memcpy` out of it (a string, a byte buffer) into fresh allocations, which we cannot
/// route through [`sp_core::copy_bytes`]; that function says which distances between source and
/// destination are slow. An 8-aligned `Vec` on the heap, with the decoder's allocation placed
/// right after it, is at one for every record size; so is a large allocation (glibc maps those
/// 16 bytes past a page boundary) against a page-aligned source. Copies at this offset (plus the
/// encoding's own prefix) are level with or ahead of the second kind, and away from the first.
const COPY_PAGE_OFFSET: usize = 16;
const PAGE: usize = 4096;

impl Scratch {
    #[inline]
    pub(super) fn bytes_mut(&mut self, len: usize) -> &mut [u8] {
        if self.words.len() * 8 < self.pad + len {
            self.grow(len);
        }
        &mut self.words.as_mut_bytes()[self.pad..self.pad + len]
    }

    /// Room for `len` bytes at the page offset; what the old buffer held moves along (a record
    /// held back is kept here while another is copied).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, len: usize) {
        let mut words = vec![0u64; (len + PAGE).div_ceil(8)];
        let pad = (PAGE + COPY_PAGE_OFFSET - words.as_ptr() as usize % PAGE) % PAGE;
        let old = self.words.as_bytes().get(self.pad..).unwrap_or_default();
        sp_core::copy_bytes(&mut words.as_mut_bytes()[pad..pad + old.len()], old);
        self.words = words;
        self.pad = pad;
    }

    #[inline]
    pub(super) fn bytes(&self, start: usize, len: usize) -> &[u8] {
        &self.words.as_bytes()[self.pad + start..self.pad + start + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_start_at_the_page_offset_and_survive_growth() {
        let mut scratch = Scratch::default();
        let small = scratch.bytes_mut(100);
        assert_eq!(small.as_ptr() as usize % PAGE, COPY_PAGE_OFFSET);
        assert_eq!(small.as_ptr() as usize % 8, 0);
        small.copy_from_slice(&[5; 100]);
        // A larger record copied while the first is still held: the first moves along.
        let large = scratch.bytes_mut(100_000);
        assert_eq!(large.as_ptr() as usize % PAGE, COPY_PAGE_OFFSET);
        assert_eq!(scratch.bytes(0, 100), &[5; 100]);
        assert_eq!(scratch.bytes(0, 100_000).len(), 100_000);
    }
}
