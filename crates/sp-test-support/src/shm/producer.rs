//! A producer that commits records into a hand-made ring by the protocol document's "Producer"
//! steps, and otherwise leaves the ring to its user (who may also scribble on it).

use super::{HEAD, PADDING, Ring, Words, header};

/// Commits records into a [`Ring`]: the payload words, then zero in the next header slot, then
/// the header with Release; a record that would straddle the end goes to offset 0 behind a
/// padding record. It trusts the published head it reads (a hostile peer's producer has no
/// reason to check it) and never sends wake-ups; its user decides both.
#[derive(Debug)]
pub struct HandProducer<'a> {
    data: &'a Words,
    ctrl: &'a Words,
    capacity: u64,
    /// Bytes committed: the private tail. The slot at it is zero while the user keeps to the
    /// protocol; a hostile user may move it at will.
    pub tail: u64,
}

impl<'a> HandProducer<'a> {
    /// A producer for `ring`, starting at tail 0.
    pub fn new(ring: &'a Ring) -> Self {
        Self {
            data: ring.data(),
            ctrl: ring.ctrl(),
            capacity: ring.capacity(),
            tail: 0,
        }
    }

    /// Commits one record of `kind` if it fits (it needs its slot, any padding, and the 8 bytes
    /// after it, measured against the consumer's published head); whether it was written.
    pub fn commit(&mut self, payload: &[u8], kind: u32) -> bool {
        let capacity = self.capacity;
        let head = self.ctrl.load(HEAD);
        let size = (8 + payload.len() as u64).next_multiple_of(8);
        let off = self.tail % capacity;
        let pad = if off + size > capacity {
            capacity - off
        } else {
            0
        };
        if self.tail.wrapping_add(pad + size + 8).wrapping_sub(head) > capacity {
            return false;
        }
        if pad > 0 {
            // Padding is a commit of its own: zero the header slot at offset 0 first, then the
            // padding header (Release), so a consumer that skips the padding finds zero there.
            self.data.store(0, 0);
            self.data.store(off as usize, header(pad - 8, PADDING));
            self.tail += pad;
        }
        let at = (self.tail % capacity) as usize;
        for (k, chunk) in payload.chunks(8).enumerate() {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.data.store(at + 8 + 8 * k, u64::from_le_bytes(word));
        }
        self.data.store(((at as u64 + size) % capacity) as usize, 0);
        self.data.store(at, header(payload.len() as u64, kind));
        self.tail += size;
        true
    }

    /// The data-area offset of the tail.
    pub fn tail_offset(&self) -> usize {
        (self.tail % self.capacity) as usize
    }
}
