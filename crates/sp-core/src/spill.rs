//! Where a seqpacket receive puts the part of a record that does not fit the caller's
//! `Message`: anonymous memory of the channel's largest message, mapped on the first receive
//! that needs it and faulted in only where records are written.
//!
//! Why not a `Vec`: a seqpacket record must be received whole in one `recvmsg` (the kernel
//! discards what does not fit), so the spill has the largest message's length, 1 MiB by default.
//! glibc serves such an allocation with its own `mmap` (zero pages, untouched) only until the
//! first one is freed: that raises its mmap threshold past 1 MiB, and from then on every such
//! `vec![0; 1 MiB]` comes from the heap and is cleared by writing all of it. A process that sets
//! up channels one after another (sp-core's hand-over socket, then the channel it delivers) paid
//! that clearing, 256 page faults, on each. An anonymous mapping of our own is zero pages that
//! cost only where a record lands, and leaves the allocator's thresholds alone.

use memmap2::{MmapMut, MmapOptions};

use crate::error::Result;

/// The spill area of one receiver.
///
/// Invariant: when mapped, it is exactly `len` bytes of private anonymous memory, readable and
/// writable, owned by this value alone.
#[derive(Debug, Default)]
pub(crate) struct Spill {
    map: Option<MmapMut>,
}

impl Spill {
    /// The first `len` bytes of the spill, mapping (or growing to) `capacity` bytes if it holds
    /// fewer than `len`. `len` is at most `capacity`.
    ///
    /// # Errors
    /// [`Error::Os`](crate::Error::Os) when the mapping cannot be made (`ENOMEM`).
    pub(crate) fn get(&mut self, len: usize, capacity: usize) -> Result<&mut [u8]> {
        debug_assert!(len <= capacity);
        if len == 0 {
            return Ok(&mut []);
        }
        if self.map.as_ref().is_none_or(|map| map.len() < len) {
            // The old mapping (too small) goes before the new one is made.
            self.map = None;
            self.map = Some(MmapOptions::new().len(capacity).map_anon()?);
        }
        Ok(self
            .map
            .as_deref_mut()
            .map_or(&mut [][..], |map| &mut map[..len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_until_written_and_kept_between_uses() {
        let mut spill = Spill::default();
        assert!(spill.get(0, 1 << 20).unwrap().is_empty());
        let area = spill.get(1 << 20, 1 << 20).unwrap();
        assert!(area.iter().all(|&b| b == 0));
        area[4096] = 7;
        assert_eq!(spill.get(8192, 1 << 20).unwrap()[4096], 7);
    }

    #[test]
    fn grows_when_the_largest_message_grows() {
        let mut spill = Spill::default();
        spill.get(100, 4096).unwrap()[99] = 1;
        let area = spill.get(8192, 8192).unwrap();
        assert_eq!(area.len(), 8192);
    }
}
